//! A one-line progress display for replays on standard error:
//!
//! ```text
//! 1,234,567 changes | 512.0 MiB / 1.5 GiB (33%) | 123,457 changes/s | ETA 0:20
//! ```
//!
//! The line is redrawn in place (`\r`) at most every [`REDRAW_EVERY`] and
//! erased by [`Progress::finish`] (or on drop), so the summary printed after
//! it starts on a clean line. It is silent when disabled (`--quiet`) or
//! when standard error is not a terminal: log files and CI output never see
//! it. Log lines written while it is shown simply overwrite it until the
//! next redraw.
//!
//! The text comes from the pure [`progress_line`]; the ETA is estimated
//! from bytes of input, which track the remaining work better than changes
//! (whose total is unknown until the end).

use std::io::{IsTerminal as _, Write};

use dynamo_cdc_source::snapshot::SnapshotProgress;
use std::time::{Duration, Instant};

/// The shortest time between two redraws.
pub(crate) const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// The progress line on a terminal, or nothing.
pub(crate) struct Progress {
    /// `None` when silent: then `update` returns at once.
    out: Option<Box<dyn Write + Send>>,
    started: Instant,
    /// No redraw before this.
    next_draw: Instant,
    /// Characters of the line currently shown (0: nothing shown).
    shown: usize,
}

impl Progress {
    /// Draws on standard error if `enabled` and standard error is a
    /// terminal; otherwise a `Progress` that does nothing.
    pub(crate) fn stderr(enabled: bool) -> Progress {
        let stderr = std::io::stderr();
        let out: Option<Box<dyn Write + Send>> = if enabled && stderr.is_terminal() {
            Some(Box::new(stderr))
        } else {
            None
        };
        Progress::new(out)
    }

    /// Always draws, on `out` (tests, or a terminal chosen by the caller).
    pub(crate) fn to_writer(out: Box<dyn Write + Send>) -> Progress {
        Progress::new(Some(out))
    }

    fn new(out: Option<Box<dyn Write + Send>>) -> Progress {
        let started = Instant::now();
        Progress {
            out,
            started,
            // The first draw waits too, so a replay that ends quickly never
            // flashes a line.
            next_draw: started + REDRAW_EVERY,
            shown: 0,
        }
    }

    /// Reports the totals so far: changes read, bytes of input read and the
    /// input's size (0 if unknown). Call it as often as convenient: unless
    /// a redraw is due it costs one clock read (nothing when silent).
    pub(crate) fn update(&mut self, changes: u64, bytes_read: u64, total_bytes: u64) {
        if self.out.is_some() {
            self.update_at(Instant::now(), changes, bytes_read, total_bytes);
        }
    }

    fn update_at(&mut self, now: Instant, changes: u64, bytes_read: u64, total_bytes: u64) {
        self.draw_at(now, |elapsed| {
            progress_line(changes, bytes_read, total_bytes, elapsed)
        });
    }

    /// Shows the line `line` makes of the time since the start, when a
    /// redraw is due (nothing when silent).
    pub(crate) fn draw(&mut self, line: impl FnOnce(Duration) -> String) {
        if self.out.is_some() {
            self.draw_at(Instant::now(), line);
        }
    }

    fn draw_at(&mut self, now: Instant, line: impl FnOnce(Duration) -> String) {
        if now < self.next_draw {
            return;
        }
        self.next_draw = now + REDRAW_EVERY;
        let line = line(now.duration_since(self.started));
        let width = line.chars().count();
        // Pad over the rest of a longer previous line.
        let pad = self.shown.saturating_sub(width);
        self.write(&format!("\r{line}{:pad$}", ""));
        self.shown = width;
    }

    /// Erases the line, if one is shown.
    pub(crate) fn finish(&mut self) {
        if self.shown > 0 {
            let blank = self.shown;
            self.write(&format!("\r{:blank$}\r", ""));
            self.shown = 0;
        }
    }

    fn write(&mut self, text: &str) {
        if let Some(out) = &mut self.out
            && (out.write_all(text.as_bytes()).is_err() || out.flush().is_err())
        {
            // The terminal went away: stop trying.
            self.out = None;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The progress line for `changes` and `bytes_read` of `total_bytes` (0:
/// unknown) after `elapsed`.
pub(crate) fn progress_line(
    changes: u64,
    bytes_read: u64,
    total_bytes: u64,
    elapsed: Duration,
) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        // Rounded to whole changes per second; `as` saturates.
        grouped((changes as f64 / seconds).round() as u64)
    } else {
        "-".to_owned()
    };
    let changes = grouped(changes);
    if total_bytes == 0 {
        return format!(
            "{changes} changes | {} read | {rate} changes/s",
            bytes(bytes_read)
        );
    }
    let percent = (u128::from(bytes_read) * 100 / u128::from(total_bytes)).min(100);
    let eta = if bytes_read >= total_bytes {
        "0:00".to_owned()
    } else if bytes_read == 0 || seconds <= 0.0 {
        "-".to_owned()
    } else {
        let per_second = bytes_read as f64 / seconds;
        clock(((total_bytes - bytes_read) as f64 / per_second).ceil() as u64)
    };
    format!(
        "{changes} changes | {} / {} ({percent}%) | {rate} changes/s | ETA {eta}",
        bytes(bytes_read),
        bytes(total_bytes)
    )
}

/// The progress line of running snapshots, e.g.
/// `snapshot orders: 12,345 of ~20,000 items | 3.2 MiB | 5/8 segments | 1,234 items/s | ETA 0:06`;
/// `read_before` is what they had read before this run (the rate counts
/// this run only).
pub(crate) fn snapshot_line(
    snapshots: &[SnapshotProgress],
    read_before: u64,
    elapsed: Duration,
) -> String {
    let mut parts = Vec::new();
    for p in snapshots.iter().filter(|p| !p.finished) {
        let of = if p.estimated_items > p.items {
            format!(" of ~{}", grouped(p.estimated_items))
        } else {
            String::new()
        };
        parts.push(format!(
            "snapshot {}: {}{of} items | {} | {}/{} segments",
            p.table,
            grouped(p.items),
            bytes(p.bytes),
            p.segments_done,
            p.segments
        ));
    }
    if parts.is_empty() {
        return "snapshots done".to_owned();
    }
    let items: u64 = snapshots
        .iter()
        .filter(|p| !p.finished)
        .map(|p| p.items)
        .sum();
    let left: u64 = snapshots
        .iter()
        .filter(|p| !p.finished)
        .map(|p| p.estimated_items.saturating_sub(p.items))
        .sum();
    let seconds = elapsed.as_secs_f64();
    let per_second = items.saturating_sub(read_before) as f64 / seconds.max(0.001);
    let eta = if left == 0 {
        "-".to_owned()
    } else if per_second > 0.0 {
        clock((left as f64 / per_second).ceil() as u64)
    } else {
        "-".to_owned()
    };
    format!(
        "{} | {} items/s | ETA {eta}",
        parts.join(" | "),
        grouped(per_second.round() as u64)
    )
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `2.0 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds as `m:ss`, or `h:mm:ss` from an hour on.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_snapshot_line_shows_items_segments_rate_and_eta() {
        let p = SnapshotProgress {
            table: "orders".into(),
            id: "x".into(),
            items: 12_345,
            bytes: 3 * MIB,
            consumed: 1.0,
            segments_done: 5,
            segments: 8,
            estimated_items: 20_000,
            finished: false,
        };
        let line = snapshot_line(std::slice::from_ref(&p), 2_345, Duration::from_secs(10));
        assert_eq!(
            line,
            "snapshot orders: 12,345 of ~20,000 items | 3.0 MiB | 5/8 segments | 1,000 items/s | ETA 0:08"
        );
        let done = SnapshotProgress {
            finished: true,
            ..p
        };
        assert_eq!(
            snapshot_line(&[done], 0, Duration::from_secs(1)),
            "snapshots done"
        );
    }
    use crate::test_support::Buffer;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_line_shows_counts_percent_rate_and_eta() {
        assert_eq!(
            progress_line(1_234_567, 512 * MIB, 1536 * MIB, Duration::from_secs(10)),
            "1,234,567 changes | 512.0 MiB / 1.5 GiB (33%) | 123,457 changes/s | ETA 0:20"
        );
        assert_eq!(
            progress_line(10, 1, 7200, Duration::from_secs(1)),
            "10 changes | 1 B / 7.0 KiB (0%) | 10 changes/s | ETA 1:59:59"
        );
    }

    #[test]
    fn edges_have_no_division_by_zero() {
        assert_eq!(
            progress_line(0, 0, 100, Duration::ZERO),
            "0 changes | 0 B / 100 B (0%) | - changes/s | ETA -"
        );
        assert_eq!(
            progress_line(0, 0, 100, Duration::from_secs(3)),
            "0 changes | 0 B / 100 B (0%) | 0 changes/s | ETA -"
        );
        assert_eq!(
            progress_line(5, 100, 100, Duration::from_secs(2)),
            "5 changes | 100 B / 100 B (100%) | 3 changes/s | ETA 0:00"
        );
        // The input grew while being read: never more than 100%.
        assert_eq!(
            progress_line(5, 150, 100, Duration::from_secs(1)),
            "5 changes | 150 B / 100 B (100%) | 5 changes/s | ETA 0:00"
        );
        // Size unknown: no percent, no ETA.
        assert_eq!(
            progress_line(2_000, 3 * MIB, 0, Duration::from_secs(4)),
            "2,000 changes | 3.0 MiB read | 500 changes/s"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(61), "1:01");
        assert_eq!(clock(3600), "1:00:00");
    }

    #[test]
    fn redraws_are_spaced_padded_and_erased_at_the_end() {
        let buffer = Buffer::default();
        let mut progress = Progress::to_writer(Box::new(buffer.clone()));
        let t0 = progress.started;
        let at = |ms| t0 + Duration::from_millis(ms);

        // Not due yet: nothing at all.
        progress.update_at(at(100), 1, 10, 100);
        assert_eq!(buffer.take(), "");

        progress.update_at(at(500), 1_000, 10, 100);
        let first = "1,000 changes | 10 B / 100 B (10%) | 2,000 changes/s | ETA 0:05";
        assert_eq!(buffer.take(), format!("\r{first}"));

        // Within 250 ms of the last draw: skipped.
        progress.update_at(at(700), 2_000, 20, 100);
        assert_eq!(buffer.take(), "");

        // Shorter than the line shown: padded over it.
        progress.update_at(at(1000), 1, 50, 100);
        let second = "1 changes | 50 B / 100 B (50%) | 1 changes/s | ETA 0:01";
        let pad = first.len() - second.len();
        assert_eq!(buffer.take(), format!("\r{second}{:pad$}", ""));

        progress.finish();
        assert_eq!(buffer.take(), format!("\r{:w$}\r", "", w = second.len()));
        // Finishing twice (or dropping after finishing) writes nothing.
        progress.finish();
        drop(progress);
        assert_eq!(buffer.take(), "");
    }

    #[test]
    fn dropping_a_shown_line_erases_it() {
        let buffer = Buffer::default();
        let mut progress = Progress::to_writer(Box::new(buffer.clone()));
        let later = progress.started + Duration::from_secs(1);
        progress.update_at(later, 1, 0, 0);
        let line = buffer.take();
        drop(progress);
        assert_eq!(buffer.take(), format!("\r{:w$}\r", "", w = line.len() - 1));
    }

    #[test]
    fn a_disabled_progress_writes_nothing() {
        let mut progress = Progress::stderr(false);
        assert!(progress.out.is_none());
        progress.update(1, 2, 3);
        progress.finish();
    }
}
