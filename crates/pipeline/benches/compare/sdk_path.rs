//! The live path's extra cost: the stream simulator serves F1's changes at
//! full speed to the `dynamodb` source, which reads them through the AWS
//! SDK (HTTP, SigV4, the SDK's call machinery, then the replay source's page
//! parser on the body as it came),
//! against replaying the same changes from a file. The simulator runs in
//! this process, so only the bridge's own work is charged.

use std::path::Path;

use dynamo_cdc_testkit::streams_sim::StreamSim;

use crate::sim_feed::{changes, local_credentials};
use crate::{Input, measure};

fn config(work: &Path, source: &str) -> std::path::PathBuf {
    let text = format!(
        "{source}\n[sinks.parquet]\npath = {:?}\n\n[checkpoint]\npath = {:?}\n",
        work.join("parquet"),
        work.join("checkpoint.json")
    );
    let path = work.join("bench.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// `rows_written` of a run's `--summary-json`.
fn rows_written(summary: &Path) -> u64 {
    let text = std::fs::read_to_string(summary).expect("summary");
    let value: serde_json::Value = serde_json::from_str(&text).expect("summary JSON");
    value["rows_written"].as_u64().expect("rows_written")
}

pub(crate) fn run(input: &Input, runs: usize) {
    println!("\n## The live path: AWS SDK and GetRecords vs replay (F1 -> Parquet, dynamo-cdc)\n");
    let sim = StreamSim::start();
    let arn = sim.create_stream("events");
    let shard = sim.open_shards(&arn).remove(0);
    let shards = [shard];
    let mut records = 0u64;
    for change in changes(input, usize::MAX) {
        change.put(&sim, &arn, &shards);
        records += 1;
    }
    let bin = crate::bridge();
    let live = |binary: &str| {
        let work = tempfile::tempdir().expect("work");
        let source = format!(
            "[source]\nkind = \"dynamodb\"\nregion = \"us-east-1\"\nendpoint_url = {:?}\nstream_arns = [{arn:?}]\n",
            sim.endpoint_url()
        );
        let mut cmd = measure::pinned(binary);
        let summary = work.path().join("summary.json");
        local_credentials(&mut cmd)
            .args(["run", "--quiet", "--until-idle", "1", "--config"])
            .arg(config(work.path(), &source))
            .arg("--summary-json")
            .arg(&summary);
        let cost = measure::run(&mut cmd, "dynamodb source -> parquet").0;
        // A run that went idle early would be cheap and wrong.
        assert_eq!(
            rows_written(&summary),
            records,
            "the live run did not deliver every change"
        );
        cost
    };

    // In turns, so that the machine's drift falls on both sides.
    let pair = measure::paired(
        runs,
        |_| {
            let work = tempfile::tempdir().expect("work");
            let source = format!("[source]\nkind = \"replay\"\npath = {:?}\n", input.dir);
            let mut cmd = measure::pinned(&bin);
            cmd.args(["run", "--quiet", "--config"])
                .arg(config(work.path(), &source));
            measure::run(&mut cmd, "replay -> parquet").0
        },
        |_| live(&bin),
    );
    println!("| source | records | records/s per core | CPU s per 1M changes | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (name, cost, n) in [
        ("replay (capture file)", pair.first, input.records),
        ("dynamodb (AWS SDK, simulator)", pair.second, records),
    ] {
        println!(
            "| {name} | {n} | {:.0} | {:.2} | {:.0} |",
            n as f64 / cost.cpu_s,
            cost.cpu_s * 1e6 / n as f64,
            cost.max_rss_kib as f64 / 1024.0
        );
    }
    let per_change = |c: measure::Cost, n: u64| c.cpu_s / n as f64;
    // The rounds' ratio is of whole runs; per change, the record counts
    // (the same changes on both sides) scale it.
    let ratio = pair.ratio * input.records as f64 / records as f64;
    println!(
        "\nThe live path costs {ratio:.2}× the replay path per change, the median of the rounds' ratios ({:.2}× between the medians above; target: at most 1.2×); the difference ({:.1} CPU µs a change) is GetRecords over HTTP (signing, the SDK's call machinery, the body read as it came, the runtime's wakeups); the page parse itself is the replay source's.",
        per_change(pair.second, records) / per_change(pair.first, input.records),
        (per_change(pair.second, records) - per_change(pair.first, input.records)) * 1e6
    );
    if let Ok(baseline) = std::env::var("BENCH_BASELINE") {
        // The live path of two builds, in turns, as the comparison does
        // for replays.
        let builds = measure::paired(runs, |_| live(&baseline), |_| live(&bin));
        println!(
            "\nAgainst the baseline (`BENCH_BASELINE`), in {runs} rounds of the live path: {:.3} of its CPU (the median of the rounds' ratios; {:.2} against {:.2} CPU s per 1M changes between the medians).",
            builds.ratio,
            per_change(builds.second, records) * 1e6,
            per_change(builds.first, records) * 1e6,
        );
    }
}
