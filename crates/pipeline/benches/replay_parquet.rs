//! Replay -> Parquet throughput and memory, measured on the real binary.
//!
//! ```text
//! cargo bench -p dynamo-cdc --bench replay_parquet            # 100 MB and 1 GB
//! BENCH_SIZES=50M cargo bench -p dynamo-cdc --bench replay_parquet
//! ```
//!
//! For each input size it generates (once, cached under `target/bench-data`)
//! a capture of about 1.3 KB mixed records, runs `dynamo-cdc run` pinned to
//! one CPU with `taskset` when available (`BENCH_RUNS` times, 3 by default,
//! reporting the median run and the median peak RSS), and reports records per CPU second
//! (user + system time of the child, so other load on the machine does not
//! count), MB/s, and the child's peak RSS. The last line compares the peak
//! RSS of the largest input with the smallest: memory must not grow with the
//! input. Figures are printed, never asserted: machines are shared and noisy.
#![allow(clippy::print_stdout)]

// The comparison's measuring code; this bench takes its own median (with
// the RSS range), so part of the module goes unused here.
#[allow(dead_code)]
#[path = "compare/measure.rs"]
mod measure;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Measured {
    records: u64,
    input_bytes: u64,
    wall_s: f64,
    cpu_s: f64,
    max_rss_kib: i64,
}

fn fixture(dir: &Path, bytes: u64) -> (PathBuf, u64) {
    let capture = dir.join(format!("capture-{bytes}"));
    let file = capture.join("events-shard-0001.jsonl");
    let count = capture.join("records.txt");
    if let Ok(n) = std::fs::read_to_string(&count) {
        return (capture, n.trim().parse().expect("record count"));
    }
    std::fs::create_dir_all(&capture).expect("fixture dir");
    eprintln!(
        "generating {} MB fixture in {}",
        bytes >> 20,
        capture.display()
    );
    let w = BufWriter::with_capacity(1 << 20, File::create(&file).expect("fixture file"));
    let records =
        dynamo_cdc_testkit::generator::write_bench_capture(w, 42, bytes).expect("write fixture");
    std::fs::write(&count, records.to_string()).expect("count file");
    (capture, records)
}

fn run_once(capture: &Path, work: &Path, records: u64) -> Measured {
    let out = work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let config = work.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"replay\"\npath = {:?}\n[transform]\nnumbers = \"auto\"\n[sinks.parquet]\npath = {:?}\n[checkpoint]\npath = {:?}\n",
            capture,
            out.join("parquet"),
            out.join("checkpoint.json")
        ),
    )
    .expect("config");
    let mut cmd = measure::pinned(env!("CARGO_BIN_EXE_dynamo-cdc"));
    cmd.args(["run", "--quiet", "--config"]).arg(&config);
    let started = Instant::now();
    let (cost, _) = measure::run(&mut cmd, "dynamo-cdc");
    let wall_s = started.elapsed().as_secs_f64();
    let input_bytes = std::fs::read_dir(capture)
        .expect("capture")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    Measured {
        records,
        input_bytes,
        wall_s,
        cpu_s: cost.cpu_s,
        max_rss_kib: cost.max_rss_kib,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not and only
    // wants to know the target builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100M,1G".into())
        .split(',')
        .map(measure::parse_size)
        .collect();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    let work = tempfile::tempdir().expect("work dir");
    println!("replay -> parquet (zstd), one core, release build");
    println!(
        "{:>10} {:>10} {:>12} {:>14} {:>10} {:>12}",
        "input MB", "records", "wall s", "records/cpu-s", "MB/cpu-s", "peak RSS MiB"
    );
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut results = Vec::new();
    for bytes in sizes {
        let (capture, records) = fixture(&target, bytes);
        // Shared machines are noisy: report the median of several runs.
        let mut all: Vec<Measured> = (0..runs.max(1))
            .map(|_| run_once(&capture, work.path(), records))
            .collect();
        all.sort_by(|a, b| a.cpu_s.total_cmp(&b.cpu_s));
        let mut rss: Vec<i64> = all.iter().map(|m| m.max_rss_kib).collect();
        rss.sort_unstable();
        let mut m = all.swap_remove(all.len() / 2);
        m.max_rss_kib = rss[rss.len() / 2];
        println!(
            "{:>10.0} {:>10} {:>12.2} {:>14.0} {:>10.1} {:>12.1}   (RSS {:.0}-{:.0} over {} runs)",
            m.input_bytes as f64 / 1e6,
            m.records,
            m.wall_s,
            m.records as f64 / m.cpu_s,
            m.input_bytes as f64 / 1e6 / m.cpu_s,
            m.max_rss_kib as f64 / 1024.0,
            rss[0] as f64 / 1024.0,
            rss[rss.len() - 1] as f64 / 1024.0,
            rss.len(),
        );
        results.push(m);
    }
    if let (Some(small), Some(large)) = (results.first(), results.last())
        && results.len() > 1
    {
        println!(
            "peak RSS ratio, largest / smallest input: {:.2} (input ratio {:.1})",
            large.max_rss_kib as f64 / small.max_rss_kib as f64,
            large.input_bytes as f64 / small.input_bytes as f64
        );
    }
}
