//! The Iceberg sink against the Parquet sink: the same F1 replay committed
//! to a sqlite-catalog Iceberg table on the local disk and written to a
//! local Parquet dataset.

use std::path::Path;

use crate::{Input, measure, replay_config};

pub(crate) fn run(input: &Input, runs: usize) {
    println!("\n## Iceberg: replay -> Iceberg (sqlite catalog) vs replay -> Parquet (F1)\n");
    let bin = env!("CARGO_BIN_EXE_dynamo-cdc");
    let measure_one = |sink: &dyn Fn(&Path) -> String, what: &str| {
        let work = tempfile::tempdir().expect("work");
        let mut cmd = measure::pinned(bin);
        cmd.args(["run", "--quiet", "--config"]).arg(replay_config(
            work.path(),
            input,
            &sink(work.path()),
        ));
        measure::run(&mut cmd, what).0
    };
    let (parquet, iceberg) = measure::paired(
        runs,
        |_| {
            measure_one(
                &|work| format!("[sinks.parquet]\npath = {:?}", work.join("parquet")),
                "replay -> parquet",
            )
        },
        |_| {
            measure_one(
                &|work| {
                    format!(
                        "[sinks.iceberg]\ncatalog_uri = \"sqlite://{}\"\nwarehouse = {:?}",
                        work.join("catalog.db").display(),
                        work.join("warehouse")
                    )
                },
                "replay -> iceberg",
            )
        },
    );
    crate::report::print_sink_pair(
        input.records,
        [("Parquet sink", &parquet), ("Iceberg", &iceberg)],
        "Iceberg",
        1.2,
    );
}
