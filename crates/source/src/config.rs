//! `[source]`: where changes come from, as the configuration file says it.
//!
//! Parsed strictly (unknown keys are errors), checked by a pure
//! [`SourceConfig::validate`] whose errors name keys relative to the section
//! (the pipeline places them with `.within("source")`), and turned into the
//! settings of the replay or the stream source. Every default is defined
//! once, in [`defaults`], and used both here and by
//! [`StreamsConfig::default`].

use std::path::PathBuf;
use std::time::Duration;

use dynamo_cdc_core::ConfigError;
use serde::Deserialize;

use crate::record::{ImageReading, is_valid_table_name, table_from_arn};
use crate::replay::ReplayConfig;
use crate::snapshot::{MARGIN_MS, SnapshotMethod, SnapshotMode, SnapshotSettings};
use crate::streams::sdk::Endpoint;
use crate::streams::{OnGap, StartAt, StreamsConfig};

/// `kind = ...`: which source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Captured records read from files.
    Replay,
    /// Live DynamoDB Streams.
    Dynamodb,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `replay` or `dynamodb`.
    pub kind: SourceKind,
    /// The keys the file gave, defaults aside (see [`SourceConfig::given`]).
    #[serde(skip)]
    given: Vec<String>,
    /// A capture file or a directory of them (replay).
    pub path: Option<PathBuf>,
    /// Table for records without `eventSourceARN` (replay).
    pub table: Option<String>,
    /// Changes handed to the sinks at a time (replay).
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Bytes of capture text handed to the sinks at a time (replay): a
    /// batch closes at whichever of `batch_size` and this comes first.
    #[serde(default = "defaults::batch_bytes")]
    pub batch_bytes: u64,
    /// Tables whose streams are read (dynamodb), found by DescribeTable.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Stream ARNs read directly (dynamodb), instead of `tables`.
    #[serde(default)]
    pub stream_arns: Vec<String>,
    /// AWS region; the standard AWS chain decides when absent.
    pub region: Option<String>,
    /// Another endpoint for both DynamoDB and DynamoDB Streams (DynamoDB
    /// Local, moto).
    pub endpoint_url: Option<String>,
    /// Where a stream with no recorded position is first read:
    /// `trim_horizon` or `latest`.
    #[serde(default)]
    pub start: StartAt,
    /// Records trimmed before delivery: `fail` or `skip`.
    #[serde(default)]
    pub on_gap: OnGap,
    /// Wait after a page with records before the next GetRecords of a shard.
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Wait after an empty page.
    #[serde(default = "defaults::idle_poll_interval_ms")]
    pub idle_poll_interval_ms: u64,
    /// How often the shard list is refreshed (DescribeStream).
    #[serde(default = "defaults::shard_refresh_interval_ms")]
    pub shard_refresh_interval_ms: u64,
    /// Most shards read at once.
    #[serde(default = "defaults::max_concurrent_shards")]
    pub max_concurrent_shards: usize,
    /// Records asked for per GetRecords call (1 to 1000).
    #[serde(default = "defaults::records_per_call")]
    pub records_per_call: u32,
    /// When a table's existing items are read: `never`, `initial` or
    /// `when_needed`.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// How: `scan` or `export`.
    #[serde(default)]
    pub snapshot_method: SnapshotMethod,
    /// Parallel Scan segments.
    #[serde(default = "defaults::snapshot_segments")]
    pub snapshot_segments: u32,
    /// Read capacity units per second a table's scan may consume.
    #[serde(default = "defaults::snapshot_max_rcu")]
    pub snapshot_max_rcu: f64,
    /// `s3://bucket/prefix` where DynamoDB writes an export.
    pub snapshot_export_bucket: Option<String>,
}

/// The defaults of `[source]`, and of [`StreamsConfig::default`].
pub mod defaults {
    /// `batch_size`. A batch is parsed on one thread and written on
    /// another; at about a hundred changes it is still in the CPU's cache
    /// when the writer gets it (1024 measured 15-20% slower), and per-batch
    /// costs (a Parquet write call, a checkpoint check) are still small.
    pub const BATCH_SIZE: usize = 128;
    /// `batch_bytes`. Memory follows bytes, not changes: 128 items near
    /// DynamoDB's 400 KB limit (with both images) are a hundred megabytes
    /// in flight, where 128 typical changes are a few hundred kilobytes.
    /// Two megabytes of records keep the typical batch at its 128 changes
    /// and cap the large ones at a few.
    pub const BATCH_BYTES: u64 = 2 << 20;
    /// `poll_interval_ms`.
    pub const POLL_INTERVAL_MS: u64 = 250;
    /// `idle_poll_interval_ms`.
    pub const IDLE_POLL_INTERVAL_MS: u64 = 1_000;
    /// `shard_refresh_interval_ms`.
    pub const SHARD_REFRESH_INTERVAL_MS: u64 = 10_000;
    /// `max_concurrent_shards`.
    pub const MAX_CONCURRENT_SHARDS: usize = 64;
    /// `records_per_call`: the most GetRecords returns.
    pub const RECORDS_PER_CALL: u32 = 1_000;
    /// `snapshot_segments`.
    pub const SNAPSHOT_SEGMENTS: u32 = 8;
    /// `snapshot_max_rcu`: a tenth of a small on-demand table's burst, so
    /// a snapshot does not starve the table's own readers.
    pub const SNAPSHOT_MAX_RCU: f64 = 500.0;

    // serde wants functions.
    pub(super) fn batch_size() -> usize {
        BATCH_SIZE
    }
    pub(super) fn batch_bytes() -> u64 {
        BATCH_BYTES
    }
    pub(super) fn poll_interval_ms() -> u64 {
        POLL_INTERVAL_MS
    }
    pub(super) fn idle_poll_interval_ms() -> u64 {
        IDLE_POLL_INTERVAL_MS
    }
    pub(super) fn shard_refresh_interval_ms() -> u64 {
        SHARD_REFRESH_INTERVAL_MS
    }
    pub(super) fn max_concurrent_shards() -> usize {
        MAX_CONCURRENT_SHARDS
    }
    pub(super) fn records_per_call() -> u32 {
        RECORDS_PER_CALL
    }
    pub(super) fn snapshot_segments() -> u32 {
        SNAPSHOT_SEGMENTS
    }
    pub(super) fn snapshot_max_rcu() -> f64 {
        SNAPSHOT_MAX_RCU
    }
}

/// `s3://bucket` or `s3://bucket/prefix`.
fn is_bucket_url(url: &str) -> bool {
    url.strip_prefix("s3://")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|bucket| (3..=63).contains(&bucket.len()))
}

/// What a DynamoDB table name may be, for error messages.
const TABLE_NAME_RULE: &str = "3 to 255 of a-z, A-Z, 0-9, `_`, `-`, `.`";

/// Keys only a `dynamodb` source reads (`tables`, `stream_arns`, `region`
/// and `endpoint_url` are refused by their values).
const STREAM_ONLY: &[&str] = &[
    "start",
    "on_gap",
    "poll_interval_ms",
    "idle_poll_interval_ms",
    "shard_refresh_interval_ms",
    "max_concurrent_shards",
    "records_per_call",
    "snapshot_method",
    "snapshot_segments",
    "snapshot_max_rcu",
];

/// Keys only a `replay` source reads (`path` and `table` are refused by
/// their values).
const REPLAY_ONLY: &[&str] = &["batch_size", "batch_bytes"];

impl SourceConfig {
    /// Tells the configuration which keys its file gave, so that
    /// [`SourceConfig::validate`] refuses one the other kind of source reads
    /// (a default cannot be told from a value otherwise). Without it, only
    /// keys that hold something are refused.
    pub fn given<S: Into<String>>(&mut self, keys: impl IntoIterator<Item = S>) {
        self.given = keys.into_iter().map(Into::into).collect();
    }

    fn refuse_given(&self, keys: &[&str], why: &str) -> Result<(), ConfigError> {
        match keys.iter().find(|k| self.given.iter().any(|g| g == *k)) {
            Some(key) => Err(ConfigError::new(*key, why)),
            None => Ok(()),
        }
    }

    /// Checks values and their combinations; touches nothing outside.
    ///
    /// # Errors
    /// The first problem found, its key relative to `[source]` (`path`,
    /// `tables[0]`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            SourceKind::Replay => self.validate_replay()?,
            SourceKind::Dynamodb => self.validate_dynamodb()?,
        }
        if let Some(table) = &self.table
            && !is_valid_table_name(table)
        {
            return Err(ConfigError::new(
                "table",
                format!("`{table}` is not a DynamoDB table name ({TABLE_NAME_RULE})"),
            ));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::new("batch_size", "must be at least 1"));
        }
        if self.batch_bytes == 0 {
            return Err(ConfigError::new("batch_bytes", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_replay(&self) -> Result<(), ConfigError> {
        if self.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
            return Err(ConfigError::new(
                "path",
                "a replay source needs the path of a capture file or directory",
            ));
        }
        let stream_keys = [
            ("tables", !self.tables.is_empty()),
            ("stream_arns", !self.stream_arns.is_empty()),
            ("region", self.region.is_some()),
            ("endpoint_url", self.endpoint_url.is_some()),
            ("snapshot", self.snapshot != SnapshotMode::Never),
            (
                "snapshot_export_bucket",
                self.snapshot_export_bucket.is_some(),
            ),
        ];
        if let Some((key, _)) = stream_keys.iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(
                *key,
                "only a `dynamodb` source reads streams; a `replay` source reads `path`",
            ));
        }
        self.refuse_given(
            STREAM_ONLY,
            "only a `dynamodb` source reads streams, and a `replay` source would ignore it: \
             remove it",
        )
    }

    fn validate_dynamodb(&self) -> Result<(), ConfigError> {
        self.refuse_given(
            REPLAY_ONLY,
            "sizes a `replay` source's batches; a `dynamodb` source hands over each page it \
             reads, and would ignore it: remove it",
        )?;
        if self.path.is_some() {
            return Err(ConfigError::new(
                "path",
                "a `dynamodb` source reads streams, not files (use `tables` or `stream_arns`)",
            ));
        }
        if self.table.is_some() {
            return Err(ConfigError::new(
                "table",
                "a `dynamodb` source takes the table from the stream (use `tables`)",
            ));
        }
        match (self.tables.is_empty(), self.stream_arns.is_empty()) {
            (true, true) => {
                return Err(ConfigError::new(
                    "tables",
                    "a `dynamodb` source needs `tables = [...]` or `stream_arns = [...]`",
                ));
            }
            (false, false) => {
                return Err(ConfigError::new(
                    "stream_arns",
                    "give `tables` or `stream_arns`, not both",
                ));
            }
            _ => {}
        }
        for (i, table) in self.tables.iter().enumerate() {
            if !is_valid_table_name(table) {
                return Err(ConfigError::new(
                    format!("tables[{i}]"),
                    format!("`{table}` is not a DynamoDB table name ({TABLE_NAME_RULE})"),
                ));
            }
        }
        for (i, arn) in self.stream_arns.iter().enumerate() {
            if table_from_arn(arn).is_none() || !arn.contains("/stream/") {
                return Err(ConfigError::new(
                    format!("stream_arns[{i}]"),
                    format!(
                        "`{arn}` is not a stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)"
                    ),
                ));
            }
        }
        // A table listed twice would be read by two readers per shard, and
        // snapshotted twice under one plan.
        let by_arn = self.stream_arns.iter().filter_map(|a| table_from_arn(a));
        let named: Vec<&str> = self
            .tables
            .iter()
            .map(String::as_str)
            .chain(by_arn)
            .collect();
        for (i, table) in named.iter().enumerate() {
            if named[..i].contains(table) {
                let key = if self.tables.is_empty() {
                    format!("stream_arns[{i}]")
                } else {
                    format!("tables[{i}]")
                };
                return Err(ConfigError::new(
                    key,
                    format!("table `{table}` is listed twice; each table is read once"),
                ));
            }
        }
        dynamo_cdc_core::check_aws_endpoint(self.endpoint_url.as_deref(), self.region.as_deref())?;
        for (key, value) in [
            ("poll_interval_ms", self.poll_interval_ms),
            ("idle_poll_interval_ms", self.idle_poll_interval_ms),
            ("shard_refresh_interval_ms", self.shard_refresh_interval_ms),
        ] {
            if value == 0 || value > 3_600_000 {
                return Err(ConfigError::new(
                    key,
                    "must be between 1 and 3600000 (one hour)",
                ));
            }
        }
        if !(1..=100_000).contains(&self.max_concurrent_shards) {
            return Err(ConfigError::new(
                "max_concurrent_shards",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=1000).contains(&self.records_per_call) {
            return Err(ConfigError::new(
                "records_per_call",
                "must be between 1 and 1000 (the GetRecords limit)",
            ));
        }
        self.validate_snapshot()
    }

    fn validate_snapshot(&self) -> Result<(), ConfigError> {
        // `when_needed` records a gap and repairs it with a snapshot; a
        // stop on a gap, asked for in so many words, would never happen.
        if self.snapshot == SnapshotMode::WhenNeeded
            && self.on_gap == OnGap::Fail
            && self.given.iter().any(|k| k == "on_gap")
        {
            return Err(ConfigError::new(
                "on_gap",
                "snapshot = \"when_needed\" records a gap and repairs it with a new snapshot, \
                 so the run never stops on one: remove on_gap = \"fail\", or set snapshot = \
                 \"initial\" to stop on gaps",
            ));
        }
        if !(1..=1_000_000).contains(&self.snapshot_segments) {
            return Err(ConfigError::new(
                "snapshot_segments",
                "must be between 1 and 1000000 (the Scan TotalSegments limit)",
            ));
        }
        if !(self.snapshot_max_rcu.is_finite() && self.snapshot_max_rcu > 0.0) {
            return Err(ConfigError::new(
                "snapshot_max_rcu",
                "must be a number of read capacity units per second above 0",
            ));
        }
        match (&self.snapshot_export_bucket, self.snapshot_method) {
            (Some(url), _) if !is_bucket_url(url) => Err(ConfigError::new(
                "snapshot_export_bucket",
                format!("`{url}` is not an s3://bucket/prefix URL"),
            )),
            (Some(_), SnapshotMethod::Scan) => Err(ConfigError::new(
                "snapshot_export_bucket",
                "is read only with snapshot_method = \"export\", and a scan would ignore it: \
                 remove it, or set snapshot_method = \"export\"",
            )),
            (None, SnapshotMethod::Export) if self.snapshot != SnapshotMode::Never => {
                Err(ConfigError::new(
                    "snapshot_export_bucket",
                    "snapshot_method = \"export\" needs the s3://bucket/prefix DynamoDB exports to",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The snapshot settings, with the journal in `journal`.
    pub fn snapshot_settings(
        &self,
        journal: std::sync::Arc<dyn crate::snapshot::journal::JournalFiles>,
    ) -> SnapshotSettings {
        SnapshotSettings {
            mode: self.snapshot,
            method: self.snapshot_method,
            segments: self.snapshot_segments,
            max_rcu: self.snapshot_max_rcu,
            journal,
            margin_ms: MARGIN_MS,
            export_bucket: self.snapshot_export_bucket.clone(),
            export_poll: Duration::from_secs(10),
        }
    }

    /// The replay source's settings.
    ///
    /// # Errors
    /// When `path` is missing (which [`SourceConfig::validate`] reports
    /// first for a replay source).
    pub fn replay_config(&self) -> Result<ReplayConfig, ConfigError> {
        let path = self.path.clone().ok_or_else(|| {
            ConfigError::new(
                "path",
                "a replay source needs the path of a capture file or directory",
            )
        })?;
        Ok(ReplayConfig {
            path,
            table: self.table.clone(),
            batch_size: self.batch_size,
            batch_bytes: self.batch_bytes,
            // Set by the pipeline from what its sinks read.
            reading: ImageReading::default(),
        })
    }

    /// The stream source's settings, reading `stream_arns`. The streams of
    /// `tables` are found with DescribeTable
    /// ([`SdkStreams::stream_of_table`](crate::streams::sdk::SdkStreams::stream_of_table))
    /// and added by the caller. `until_idle` and `heartbeat` come from the
    /// command line and the pipeline.
    pub fn streams_config(
        &self,
        until_idle: Option<Duration>,
        heartbeat: Duration,
    ) -> StreamsConfig {
        StreamsConfig {
            stream_arns: self.stream_arns.clone(),
            // With a snapshot, a table's first start is its snapshot's S0,
            // and a shard without records at S0 is read from its first
            // record: all of them came after S0. Reading it from its end
            // (`latest`) would lose what was written between the snapshot
            // and the stream's start (an export's whole run).
            start: if self.snapshot == SnapshotMode::Never {
                self.start
            } else {
                StartAt::TrimHorizon
            },
            // Recorded in the checkpoint: added by the caller.
            latest: std::collections::HashMap::new(),
            // From the sinks' positions: added by the caller.
            tables_read: std::collections::HashSet::new(),
            // Recorded in the checkpoint: added by the caller.
            ended: std::collections::HashMap::new(),
            // From the sinks' positions: added by the caller.
            held: dynamo_cdc_core::Positions::new(),
            on_gap: self.on_gap,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            idle_poll_interval: Duration::from_millis(self.idle_poll_interval_ms),
            shard_refresh_interval: Duration::from_millis(self.shard_refresh_interval_ms),
            max_concurrent_shards: self.max_concurrent_shards,
            records_per_call: self.records_per_call,
            // Set by the caller while a snapshot needs it.
            report_read_through: false,
            until_idle,
            heartbeat,
            // Set by the pipeline from what its sinks read.
            reading: ImageReading::default(),
        }
    }

    /// Where the SDK connects: `region` and `endpoint_url`.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLAY: &str = r#"
kind = "replay"
path = "examples/data"
table = "orders"
"#;

    const STREAMS: &str = r#"
kind = "dynamodb"
tables = ["orders", "customers"]
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:5000"
start = "latest"
on_gap = "skip"
"#;

    fn parse(text: &str) -> Result<SourceConfig, String> {
        let mut config: SourceConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        config.given(table.keys().cloned());
        Ok(config)
    }

    /// A key the other kind of source reads is refused, not ignored.
    #[test]
    fn keys_of_the_other_kind_of_source_are_refused() {
        for key in [
            "start = \"latest\"",
            "on_gap = \"skip\"",
            "poll_interval_ms = 0",
            "records_per_call = 5000",
            "snapshot_segments = 0",
        ] {
            let name = key.split(' ').next().unwrap();
            assert_eq!(
                bad_key(&format!("{REPLAY}{key}\n")),
                format!("source.{name}")
            );
        }
        assert_eq!(
            bad_key(&format!("{STREAMS}batch_size = 64\n")),
            "source.batch_size"
        );
        // A gap stops nothing under `when_needed`: saying it should is refused.
        let when_needed = STREAMS.replace("on_gap = \"skip\"", "snapshot = \"when_needed\"");
        parse(&when_needed).unwrap().validate().unwrap();
        assert_eq!(
            bad_key(&format!("{when_needed}on_gap = \"fail\"\n")),
            "source.on_gap"
        );
    }

    /// An export bucket is read only by an export: with a scan it is refused,
    /// not ignored; an export needs one.
    #[test]
    fn an_export_bucket_goes_with_the_export_method_only() {
        let bucket = "snapshot = \"initial\"\nsnapshot_export_bucket = \"s3://exports/orders\"\n";
        let scan = format!("{STREAMS}{bucket}");
        assert_eq!(bad_key(&scan), "source.snapshot_export_bucket");
        let message = parse(&scan).unwrap().validate().unwrap_err().to_string();
        assert!(
            message.contains("snapshot_method = \"export\""),
            "{message}"
        );
        let export = format!("{scan}snapshot_method = \"export\"\n");
        parse(&export).unwrap().validate().unwrap();
        assert_eq!(
            bad_key(&format!(
                "{STREAMS}snapshot = \"initial\"\nsnapshot_method = \"export\"\n"
            )),
            "source.snapshot_export_bucket"
        );
    }

    /// The key, as the pipeline reports it.
    fn bad_key(text: &str) -> String {
        let config = parse(text).unwrap();
        config.validate().unwrap_err().within("source").key
    }

    #[test]
    fn the_documented_replay_keys_parse_with_defaults() {
        let c = parse(REPLAY).unwrap();
        c.validate().unwrap();
        assert_eq!(c.kind, SourceKind::Replay);
        assert_eq!(c.batch_size, 128);
        let replay = c.replay_config().unwrap();
        assert_eq!(replay.path, PathBuf::from("examples/data"));
        assert_eq!(replay.table.as_deref(), Some("orders"));
        assert_eq!(replay.batch_size, 128);
    }

    /// A table is read once: listed twice, by name or by stream, the
    /// configuration is refused, naming the second entry.
    #[test]
    fn a_table_listed_twice_is_refused() {
        let twice = "kind = \"dynamodb\"\ntables = [\"orders\", \"customers\", \"orders\"]\n";
        assert_eq!(bad_key(twice), "source.tables[2]");
        let arn =
            |label: &str| format!("\"arn:aws:dynamodb:eu-west-1:1:table/orders/stream/{label}\"");
        let arns = format!(
            "kind = \"dynamodb\"\nstream_arns = [{}, {}]\n",
            arn("2024-01-01T00:00:00.000"),
            arn("2024-02-01T00:00:00.000")
        );
        assert_eq!(bad_key(&arns), "source.stream_arns[1]");
    }

    /// With a snapshot the stream starts at the snapshot's S0, whatever
    /// `start` says: `latest` would skip what was written after S0.
    #[test]
    fn a_snapshot_starts_the_stream_at_its_s0_not_at_the_end() {
        let streams = |text: &str| {
            let c = parse(text).unwrap();
            c.validate().unwrap();
            c.streams_config(None, Duration::from_secs(1)).start
        };
        assert_eq!(streams(STREAMS), StartAt::Latest);
        for mode in ["initial", "when_needed"] {
            let text = format!("{STREAMS}snapshot = \"{mode}\"\n");
            assert_eq!(streams(&text), StartAt::TrimHorizon, "{mode}");
        }
    }

    #[test]
    fn the_dynamodb_source_parses_with_defaults() {
        let c = parse(STREAMS).unwrap();
        c.validate().unwrap();
        assert_eq!(c.kind, SourceKind::Dynamodb);
        assert_eq!(c.start, StartAt::Latest);
        assert_eq!(c.on_gap, OnGap::Skip);
        assert_eq!(c.poll_interval_ms, 250);
        assert_eq!(c.idle_poll_interval_ms, 1_000);
        assert_eq!(c.shard_refresh_interval_ms, 10_000);
        assert_eq!(c.max_concurrent_shards, 64);
        assert_eq!(c.records_per_call, 1_000);
        let plain = parse("kind = \"dynamodb\"\ntables = [\"orders\"]").unwrap();
        assert_eq!(
            (plain.start, plain.on_gap),
            (StartAt::TrimHorizon, OnGap::Fail)
        );
    }

    #[test]
    fn the_streams_settings_follow_the_keys_and_share_their_defaults() {
        let c = parse("kind = \"dynamodb\"\nstream_arns = [\"arn:aws:dynamodb:eu-west-1:1:table/orders/stream/x\"]").unwrap();
        let s = c.streams_config(Some(Duration::from_secs(3)), Duration::from_millis(200));
        let d = StreamsConfig::default();
        assert_eq!(s.stream_arns, c.stream_arns);
        assert_eq!(
            (s.start, s.on_gap, s.poll_interval, s.idle_poll_interval),
            (d.start, d.on_gap, d.poll_interval, d.idle_poll_interval)
        );
        assert_eq!(
            (
                s.shard_refresh_interval,
                s.max_concurrent_shards,
                s.records_per_call
            ),
            (
                d.shard_refresh_interval,
                d.max_concurrent_shards,
                d.records_per_call
            )
        );
        assert_eq!(s.until_idle, Some(Duration::from_secs(3)));
        assert_eq!(s.heartbeat, Duration::from_millis(200));
        let c = parse(&format!("{STREAMS}\npoll_interval_ms = 40")).unwrap();
        let s = c.streams_config(None, Duration::from_millis(200));
        assert_eq!(
            (s.start, s.on_gap, s.poll_interval),
            (StartAt::Latest, OnGap::Skip, Duration::from_millis(40))
        );
        let e = c.endpoint();
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert_eq!(e.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn unknown_keys_and_values_are_refused_when_parsing() {
        let e = parse(&REPLAY.replace("path =", "pth =")).unwrap_err();
        assert!(e.contains("unknown field `pth`"), "{e}");
        let e = parse(&STREAMS.replace("on_gap = \"skip\"", "on_gap = \"ignore\"")).unwrap_err();
        assert!(e.contains("ignore"), "{e}");
        let e = parse(&REPLAY.replace("\"replay\"", "\"kinesis\"")).unwrap_err();
        assert!(e.contains("kinesis"), "{e}");
    }

    #[test]
    fn replay_mistakes_name_their_key() {
        assert_eq!(
            bad_key(&REPLAY.replace("path = \"examples/data\"", "")),
            "source.path"
        );
        assert_eq!(
            bad_key(&REPLAY.replace("table = \"orders\"", "region = \"x\"")),
            "source.region",
            "stream keys on a replay source"
        );
        assert_eq!(
            bad_key(&REPLAY.replace("\"orders\"", "\"x\"")),
            "source.table"
        );
        assert_eq!(
            bad_key(&format!("{REPLAY}\nbatch_size = 0")),
            "source.batch_size"
        );
    }

    #[test]
    fn dynamodb_mistakes_name_their_key() {
        let cases = [
            ("tables = [\"orders\", \"customers\"]", "", "source.tables"),
            (
                "tables = [\"orders\", \"customers\"]",
                "tables = [\"x\"]",
                "source.tables[0]",
            ),
            (
                "tables = [\"orders\", \"customers\"]",
                "stream_arns = [\"arn:aws:dynamodb:eu-west-1:1:table/orders\"]",
                "source.stream_arns[0]",
            ),
            (
                "region = \"eu-west-1\"",
                "region = \"eu-west-1\"\nstream_arns = [\"arn:aws:dynamodb:eu-west-1:1:table/orders/stream/x\"]",
                "source.stream_arns",
            ),
            (
                "region = \"eu-west-1\"",
                "region = \"eu-west-1\"\npath = \"x\"",
                "source.path",
            ),
            (
                "region = \"eu-west-1\"",
                "region = \"eu-west-1\"\ntable = \"orders\"",
                "source.table",
            ),
            ("region = \"eu-west-1\"", "region = \"\"", "source.region"),
            (
                "endpoint_url = \"http://127.0.0.1:5000\"",
                "endpoint_url = \"127.0.0.1:5000\"",
                "source.endpoint_url",
            ),
            (
                "on_gap = \"skip\"",
                "on_gap = \"skip\"\nrecords_per_call = 5000",
                "source.records_per_call",
            ),
            (
                "on_gap = \"skip\"",
                "on_gap = \"skip\"\npoll_interval_ms = 0",
                "source.poll_interval_ms",
            ),
            (
                "on_gap = \"skip\"",
                "on_gap = \"skip\"\nshard_refresh_interval_ms = 3600001",
                "source.shard_refresh_interval_ms",
            ),
            (
                "on_gap = \"skip\"",
                "on_gap = \"skip\"\nmax_concurrent_shards = 0",
                "source.max_concurrent_shards",
            ),
            (
                "on_gap = \"skip\"",
                "on_gap = \"skip\"\nmax_concurrent_shards = 9223372036854775807",
                "source.max_concurrent_shards",
            ),
        ];
        for (from, to, key) in cases {
            assert_eq!(bad_key(&STREAMS.replace(from, to)), key, "{to}");
        }
    }

    #[test]
    fn reasons_are_worded_as_before() {
        let reason = |text: &str| parse(text).unwrap().validate().unwrap_err().to_string();
        assert_eq!(
            reason(&STREAMS.replace("\"orders\", \"customers\"", "\"orders\", \"x\"")),
            "config key `tables[1]`: `x` is not a DynamoDB table name \
             (3 to 255 of a-z, A-Z, 0-9, `_`, `-`, `.`)"
        );
        assert_eq!(
            reason(&REPLAY.replace("path = \"examples/data\"", "")),
            "config key `path`: a replay source needs the path of a capture file or directory"
        );
        assert_eq!(
            reason(&STREAMS.replace("on_gap = \"skip\"", "records_per_call = 0")),
            "config key `records_per_call`: must be between 1 and 1000 (the GetRecords limit)"
        );
    }
}
