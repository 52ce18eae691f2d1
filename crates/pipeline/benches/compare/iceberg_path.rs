//! The Iceberg sink against the Parquet sink: the same F1 replay committed
//! to a sqlite-catalog Iceberg table on the local disk and written to a
//! local Parquet dataset.

use std::path::Path;

use crate::{Input, measure, replay_cost};

pub(crate) fn run(input: &Input, runs: usize) {
    println!("\n## Iceberg: replay -> Iceberg (sqlite catalog) vs replay -> Parquet (F1)\n");
    let pair = measure::paired(
        runs,
        |_| {
            let sinks = |work: &Path| format!("[sinks.parquet]\npath = {:?}", work.join("parquet"));
            replay_cost(input, &sinks, &[], "replay -> parquet")
        },
        |_| {
            let sinks = |work: &Path| {
                format!(
                    "[sinks.iceberg]\ncatalog_uri = \"sqlite://{}\"\nwarehouse = {:?}",
                    work.join("catalog.db").display(),
                    work.join("warehouse")
                )
            };
            replay_cost(input, &sinks, &[], "replay -> iceberg")
        },
    );
    crate::report::print_sink_pair(
        input.records,
        ["Parquet sink", "Iceberg"],
        &pair,
        "Iceberg",
        1.2,
    );
}
