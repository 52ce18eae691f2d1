//! The TOML configuration: parsed strictly (unknown keys are errors), then
//! checked by a pure [`Config::validate`] before anything is opened.
//!
//! Relative paths are taken from the directory the command runs in.

use std::path::PathBuf;

use dynamo_cdc_transform::NumbersMode;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where changes come from.
    pub source: SourceConfig,
    /// How changes become rows.
    #[serde(default)]
    pub transform: TransformConfig,
    /// Where rows go.
    pub sinks: SinksConfig,
    /// Where positions are recorded.
    pub checkpoint: CheckpointConfig,
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Captured records read from files.
    Replay,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `replay`.
    pub kind: SourceKind,
    /// A capture file or a directory of them.
    pub path: Option<PathBuf>,
    /// Table for records without `eventSourceARN`.
    pub table: Option<String>,
    /// Changes handed to the sinks at a time.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    // A batch is parsed on one thread and written on another; at about a
    // hundred changes it is still in the CPU's cache when the writer gets
    // it (1024 measured 15-20% slower), and per-batch costs (a Parquet
    // write call, a checkpoint check) are still small.
    128
}

/// `numbers = ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumbersConfig {
    /// Int64 while integers fit, else exact decimal strings.
    #[default]
    Auto,
    /// Exact decimal strings always.
    String,
    /// Float64 (lossy).
    Double,
}

impl From<NumbersConfig> for NumbersMode {
    fn from(n: NumbersConfig) -> Self {
        match n {
            NumbersConfig::Auto => NumbersMode::Auto,
            NumbersConfig::String => NumbersMode::String,
            NumbersConfig::Double => NumbersMode::Double,
        }
    }
}

/// `[transform]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// How `N` values are laid out in inferred columns.
    #[serde(default)]
    pub numbers: NumbersConfig,
    /// Directory of `<table>.avsc` declarations.
    pub schemas_dir: Option<PathBuf>,
}

/// `[sinks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// `[sinks.parquet]`.
    pub parquet: Option<ParquetSinkConfig>,
}

/// `[sinks.parquet]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Dataset root.
    pub path: PathBuf,
    /// Commit a file at this many rows.
    #[serde(default = "defaults::max_rows_per_file")]
    pub max_rows_per_file: usize,
    /// Commit a file at about this many bytes.
    #[serde(default = "defaults::max_file_bytes")]
    pub max_file_bytes: u64,
    /// Commit a file after it has been open this long.
    #[serde(default = "defaults::max_file_age_ms")]
    pub max_file_age_ms: u64,
    /// Rows per row group.
    #[serde(default = "defaults::row_group_rows")]
    pub row_group_rows: usize,
    /// zstd level, 1 to 22.
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
}

mod defaults {
    pub(super) fn max_rows_per_file() -> usize {
        1_000_000
    }
    pub(super) fn max_file_bytes() -> u64 {
        128 << 20
    }
    pub(super) fn max_file_age_ms() -> u64 {
        300_000
    }
    pub(super) fn row_group_rows() -> usize {
        65_536
    }
    pub(super) fn zstd_level() -> i32 {
        1
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The local checkpoint file.
    pub path: PathBuf,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted path of the key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl Config {
    /// Parses TOML text strictly.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path and the reason.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| bad("(file)", e.to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.into_inner().to_string();
            ConfigError {
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                reason: reason.trim().replace('\n', " "),
            }
        })
    }

    /// Checks values and their combinations; touches nothing outside.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.source.kind {
            SourceKind::Replay => {
                if self
                    .source
                    .path
                    .as_ref()
                    .is_none_or(|p| p.as_os_str().is_empty())
                {
                    return Err(bad(
                        "source.path",
                        "a replay source needs the path of a capture file or directory",
                    ));
                }
            }
        }
        if let Some(table) = &self.source.table
            && !dynamo_cdc_source::record::is_valid_table_name(table)
        {
            return Err(bad(
                "source.table",
                format!(
                    "`{table}` is not a DynamoDB table name (3 to 255 of a-z, A-Z, 0-9, `_`, `-`, `.`)"
                ),
            ));
        }
        if self.source.batch_size == 0 {
            return Err(bad("source.batch_size", "must be at least 1"));
        }
        let Some(p) = &self.sinks.parquet else {
            return Err(bad(
                "sinks",
                "configure at least one sink, e.g. [sinks.parquet] with path",
            ));
        };
        if p.path.as_os_str().is_empty() {
            return Err(bad("sinks.parquet.path", "must not be empty"));
        }
        if p.max_rows_per_file == 0 {
            return Err(bad("sinks.parquet.max_rows_per_file", "must be at least 1"));
        }
        if p.max_file_bytes < 1024 {
            return Err(bad("sinks.parquet.max_file_bytes", "must be at least 1024"));
        }
        if p.max_file_age_ms == 0 {
            return Err(bad("sinks.parquet.max_file_age_ms", "must be at least 1"));
        }
        if p.row_group_rows == 0 {
            return Err(bad("sinks.parquet.row_group_rows", "must be at least 1"));
        }
        if !(1..=22).contains(&p.zstd_level) {
            return Err(bad("sinks.parquet.zstd_level", "must be between 1 and 22"));
        }
        if self.checkpoint.path.as_os_str().is_empty() {
            return Err(bad("checkpoint.path", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[source]
kind = "replay"
path = "examples/data"
table = "orders"
[transform]
numbers = "auto"
schemas_dir = "schemas"
[sinks.parquet]
path = "out/parquet"
[checkpoint]
path = "out/checkpoint.json"
"#;

    #[test]
    fn the_documented_keys_parse() {
        let c = Config::parse(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.transform.numbers, NumbersConfig::Auto);
        assert_eq!(c.sinks.parquet.unwrap().max_rows_per_file, 1_000_000);
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = Config::parse(&GOOD.replace("path = \"out/parquet\"", "pth = \"x\"")).unwrap_err();
        assert_eq!(e.key, "sinks.parquet.pth");
        assert!(e.reason.contains("unknown field `pth`"), "{e}");
        let e =
            Config::parse(&GOOD.replace("numbers = \"auto\"", "numbers = \"float\"")).unwrap_err();
        assert_eq!(e.key, "transform.numbers");
        assert!(e.reason.contains("float"), "{e}");
        let e =
            Config::parse(&GOOD.replace("kind = \"replay\"", "kind = \"kinesis\"")).unwrap_err();
        assert_eq!(e.key, "source.kind");
    }

    #[test]
    fn bad_values_are_rejected_by_validate() {
        let c =
            Config::parse(&GOOD.replace("[checkpoint]", "zstd_level = 40\n[checkpoint]")).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "sinks.parquet.zstd_level");
        let e = Config::parse(&GOOD.replace("path = \"examples/data\"", ""))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "source.path");
    }
}
