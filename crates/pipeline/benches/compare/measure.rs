//! Running a child process and measuring what it cost: CPU time (user +
//! system, so other load on a shared machine does not count) from
//! `wait4(2)`, and peak resident memory from the child's own `VmHWM`.
//!
//! Not `ru_maxrss`: a child started with `vfork` (as `std::process` does)
//! runs in the parent's memory until it execs, and Linux carries that
//! memory's high-water mark into the child's `ru_maxrss`. A benchmark
//! process holding a mock broker's messages or a simulator's records would
//! be charged to every contender.
#![allow(unsafe_code)] // wait4(2) for the child's CPU time and peak RSS

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What one run of a child cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    pub(crate) cpu_s: f64,
    pub(crate) max_rss_kib: i64,
}

/// Whether `taskset` is available to pin children to one CPU.
pub(crate) fn can_pin() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command for `program`, pinned to CPU 0 when `taskset` exists, so every
/// contender gets the same single core.
pub(crate) fn pinned(program: &str) -> Command {
    if can_pin() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `cmd` to completion and returns its cost and standard output.
/// Panics, with the child's standard error, when it fails: a benchmark of
/// a failed run would measure nothing.
pub(crate) fn run(cmd: &mut Command, what: &str) -> (Cost, String) {
    let stderr_file = tempfile::NamedTempFile::new().expect("stderr file");
    let stdout_file = tempfile::NamedTempFile::new().expect("stdout file");
    cmd.stdout(stdout_file.reopen().expect("stdout"))
        .stderr(stderr_file.reopen().expect("stderr"));
    // Reaped by wait4 below, which also reports the child's resource usage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0i64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(vm_hwm_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    done.store(true, Ordering::Relaxed);
    let peak = watcher.join().expect("memory watcher");
    assert!(pid > 0, "{what}: wait4 failed");
    let stdout = std::fs::read_to_string(stdout_file.path()).unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = std::fs::read_to_string(stderr_file.path()).unwrap_or_default();
        panic!("{what} failed (status {status}):\n{stdout}\n{stderr}");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        Cost {
            cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
            max_rss_kib: if peak > 0 { peak } else { usage.ru_maxrss },
        },
        stdout,
    )
}

/// The run with the median CPU time, with the median peak RSS of all runs.
pub(crate) fn median(mut runs: Vec<Cost>) -> Cost {
    assert!(!runs.is_empty(), "no runs");
    let mut rss: Vec<i64> = runs.iter().map(|c| c.max_rss_kib).collect();
    rss.sort_unstable();
    runs.sort_by(|a, b| a.cpu_s.total_cmp(&b.cpu_s));
    let mut m = runs[runs.len() / 2];
    m.max_rss_kib = rss[rss.len() / 2];
    m
}

/// Two contenders measured in turns: each one's median run, and the
/// median over the rounds of the second's CPU over the first's.
pub(crate) struct Paired {
    pub(crate) first: Cost,
    pub(crate) second: Cost,
    /// A slow phase of the machine moves both runs of a round, so the
    /// rounds' own ratios scatter less than the runs do, and their median
    /// less than a ratio of two medians.
    pub(crate) ratio: f64,
    /// Every round's ratio, in order of size.
    pub(crate) ratios: Vec<f64>,
}

/// Two contenders measured in turns, `runs` times each: a slow phase of the
/// machine then falls on both sides of the ratio instead of on whichever
/// side ran through it. The order flips every round (`a b`, `b a`, `a b`,
/// ...), so that what one run leaves behind (warm caches, a server's state)
/// does not always favour the same side. Each call gets the run's index.
pub(crate) fn paired(
    runs: usize,
    mut a: impl FnMut(usize) -> Cost,
    mut b: impl FnMut(usize) -> Cost,
) -> Paired {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (x, y) = in_turns(i, || a(i), || b(i));
        first.push(x);
        second.push(y);
    }
    pair(first, second)
}

/// Round `round` of two contenders measured in turns: `a` then `b` in even
/// rounds, `b` then `a` in odd ones (see [`paired`]). Returns `a`'s cost,
/// then `b`'s.
pub(crate) fn in_turns(
    round: usize,
    a: impl FnOnce() -> Cost,
    b: impl FnOnce() -> Cost,
) -> (Cost, Cost) {
    if round.is_multiple_of(2) {
        let x = a();
        (x, b())
    } else {
        let y = b();
        (a(), y)
    }
}

/// The runs of two contenders made in turns, round by round: each one's
/// median run and the median of the rounds' own ratios (second over first).
pub(crate) fn pair(first: Vec<Cost>, second: Vec<Cost>) -> Paired {
    let mut ratios: Vec<f64> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| b.cpu_s / a.cpu_s)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let ratio = if ratios.len().is_multiple_of(2) {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    } else {
        ratios[mid]
    };
    Paired {
        first: median(first),
        second: median(second),
        ratio,
        ratios,
    }
}

/// The high-water mark of a running process's resident memory, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `123`, `64K`, `512M`, `2G` (binary multiples), as the benchmarks'
/// size settings take them.
pub(crate) fn parse_size(text: &str) -> u64 {
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("bad size {text:?}"))
        * mult
}
