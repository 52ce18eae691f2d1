//! `start = "latest"` recorded before it is acted on.
//!
//! A table's first start with `latest` reads its open shards at their end,
//! which leaves no position until a change is committed. So the start is
//! taken (the shards closed, then the time) and written to the checkpoint
//! before the stream source starts; every later pass hands it to the
//! source, which reads a shard still without a position from its first
//! record and leaves out what came before (see
//! `dynamo_cdc_source::streams::latest`).

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use dynamo_cdc_core::{LatestStart, Positions};
use dynamo_cdc_source::StartAt;
use dynamo_cdc_source::record::table_from_arn;
use dynamo_cdc_source::snapshot::SnapshotMode;
use dynamo_cdc_source::streams::latest::{LatestFrom, take};
use dynamo_cdc_source::streams::sdk::SdkStreams;

use crate::config::{Config, SourceKind};

/// Whether the configuration reads streams from their end on a first
/// start. A snapshot takes its own start (S0) instead.
fn applies(config: &Config) -> bool {
    let s = &config.source;
    s.kind == SourceKind::Dynamodb
        && s.start == StartAt::Latest
        && s.snapshot == SnapshotMode::Never
}

/// Takes a latest start for every table of `config` that has neither a
/// position in `delivered` (the highest over the sinks: a table any sink
/// has read is not new, even to a sink added since) nor a recorded start,
/// by listing its stream. Empty unless `start = "latest"`.
///
/// # Errors
/// When a table's stream cannot be found or listed.
pub(crate) fn take_missing(
    config: &Config,
    recorded: &BTreeMap<String, LatestStart>,
    delivered: &Positions,
) -> anyhow::Result<BTreeMap<String, LatestStart>> {
    if !applies(config) {
        return Ok(BTreeMap::new());
    }
    let s = &config.source;
    let needs = |table: &str| {
        !recorded.contains_key(table) && !delivered.iter().any(|(k, _)| &*k.table == table)
    };
    let by_name: Vec<&String> = s.tables.iter().filter(|t| needs(t)).collect();
    let by_arn: Vec<(&str, &String)> = s
        .stream_arns
        .iter()
        .filter_map(|arn| table_from_arn(arn).map(|t| (t, arn)))
        .filter(|(t, _)| needs(t))
        .collect();
    if by_name.is_empty() && by_arn.is_empty() {
        return Ok(BTreeMap::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime to list the streams")?;
    runtime.block_on(async {
        let api = SdkStreams::connect(&s.endpoint()).await;
        let mut taken = BTreeMap::new();
        for table in by_name {
            let arn = api
                .stream_of_table(table)
                .await
                .with_context(|| format!("config key `source.tables`: table `{table}`"))?;
            taken.insert(table.clone(), take_one(&api, table, &arn).await?);
        }
        for (table, arn) in by_arn {
            taken.insert(table.to_owned(), take_one(&api, table, arn).await?);
        }
        Ok(taken)
    })
}

async fn take_one(api: &SdkStreams, table: &str, arn: &str) -> anyhow::Result<LatestStart> {
    let start = take(api, arn)
        .await
        .with_context(|| format!("cannot list the shards of table `{table}`'s stream {arn}"))?;
    tracing::info!(
        table = %table,
        at_ms = start.at_ms,
        closed_shards = start.closed.len(),
        "first start with start = \"latest\": recorded before the stream is read at its end"
    );
    Ok(start)
}

/// The recorded starts as the source is told them; `fresh` are this pass's
/// own, taken just now.
pub(crate) fn for_source(
    config: &Config,
    recorded: &BTreeMap<String, LatestStart>,
    fresh: &BTreeMap<String, LatestStart>,
) -> HashMap<String, LatestFrom> {
    if !applies(config) {
        return HashMap::new();
    }
    recorded
        .iter()
        .map(|(table, start)| {
            let from = LatestFrom {
                start: start.clone(),
                fresh: fresh.contains_key(table),
            };
            (table.clone(), from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::{SequenceNumber, ShardKey};

    use super::*;

    #[test]
    fn a_table_some_sink_has_read_is_not_started_at_its_end_again() {
        // A sink added to a running pipeline has no position: the lowest
        // over the sinks is none, but the table is not new. Nothing is
        // taken, so nothing is listed (the endpoint here answers nothing).
        let config = Config::parse(
            r#"
[source]
kind = "dynamodb"
tables = ["orders"]
start = "latest"
endpoint_url = "http://127.0.0.1:9"
[sinks.parquet]
path = "out/parquet"
[checkpoint]
path = "out/checkpoint.json"
"#,
        )
        .unwrap();
        let delivered: Positions = [(
            ShardKey::new("orders", "shard-1"),
            SequenceNumber::parse("100").unwrap(),
        )]
        .into_iter()
        .collect();
        let taken = take_missing(&config, &BTreeMap::new(), &delivered).unwrap();
        assert!(taken.is_empty(), "{taken:?}");
    }
}
