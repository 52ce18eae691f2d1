//! `[sinks.parquet]`: where the dataset is and how files roll.

use dynamo_cdc_core::ConfigError;
use dynamo_cdc_object_store::{Location, MAX_FENCED_BYTES, Scheme, StoreOptions};
use serde::Deserialize;

/// How the sink writes and rolls files. Every default is defined here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Root of the dataset: a local directory, or an `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix` URL.
    pub path: String,
    /// S3 region (else the AWS environment, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// S3-compatible endpoint (MinIO, moto, LocalStack); `http://` allows
    /// plain HTTP and path-style addressing.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Commit a file once it holds this many rows.
    #[serde(default = "defaults::max_rows_per_file")]
    pub max_rows_per_file: usize,
    /// Commit a file once it is about this large (compressed bytes).
    #[serde(default = "defaults::max_file_bytes")]
    pub max_file_bytes: u64,
    /// Commit a file once it has been open this long.
    #[serde(default = "defaults::max_file_age_ms")]
    pub max_file_age_ms: u64,
    /// Rows per row group.
    #[serde(default = "defaults::row_group_rows")]
    pub row_group_rows: usize,
    /// Encoded bytes per row group: a row group closes at this size or at
    /// `row_group_rows`, whichever comes first. An open row group is held in
    /// memory, so this bounds a file's memory by bytes whatever the items'
    /// size (with `row_group_rows` alone, items near 400 KB held a whole
    /// file).
    #[serde(default = "defaults::row_group_bytes")]
    pub row_group_bytes: usize,
    /// zstd level, 1 to 22.
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
    /// Whether this process alone writes the dataset (the default). Not a
    /// configuration key: whoever opens the sink knows, and sets it to
    /// `false` when live processes share the dataset (tables shared through
    /// leases). At open, an exclusive sink removes every temp file it finds
    /// (a crash's leftovers); a shared one only those a committed file
    /// already covers, which can never be committed: the others may be a
    /// live writer's.
    #[serde(skip_deserializing, default = "defaults::exclusive")]
    pub exclusive: bool,
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
    pub(super) fn row_group_bytes() -> usize {
        8 << 20
    }
    pub(super) fn zstd_level() -> i32 {
        1
    }
    pub(super) fn exclusive() -> bool {
        true
    }
}

impl ParquetConfig {
    /// The defaults, suited to analytics: files of up to a million rows or
    /// 128 MiB, committed at least every five minutes.
    pub fn new(path: impl Into<String>) -> Self {
        ParquetConfig {
            path: path.into(),
            region: None,
            endpoint_url: None,
            max_rows_per_file: defaults::max_rows_per_file(),
            max_file_bytes: defaults::max_file_bytes(),
            max_file_age_ms: defaults::max_file_age_ms(),
            row_group_rows: defaults::row_group_rows(),
            row_group_bytes: defaults::row_group_bytes(),
            zstd_level: defaults::zstd_level(),
            exclusive: defaults::exclusive(),
        }
    }

    /// Checks the values; touches nothing. Keys are relative to the section.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.location()?;
        for (key, value) in [
            ("max_rows_per_file", self.max_rows_per_file as u64),
            ("max_file_age_ms", self.max_file_age_ms),
            ("row_group_rows", self.row_group_rows as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        for (key, value) in [
            ("max_file_bytes", self.max_file_bytes),
            ("row_group_bytes", self.row_group_bytes as u64),
        ] {
            if value < 1024 {
                return Err(ConfigError::new(key, "must be at least 1024"));
            }
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::new("zstd_level", "must be between 1 and 22"));
        }
        Ok(())
    }

    /// Where the dataset is: `path` with `region` and `endpoint_url`.
    ///
    /// # Errors
    /// A malformed `path`, or store keys that do not apply to it, named
    /// relative to the section.
    pub fn location(&self) -> Result<Location, ConfigError> {
        let options = StoreOptions {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        };
        Location::parse(&self.path, options).map_err(|(key, reason)| ConfigError::new(key, reason))
    }

    /// The further limits of a dataset several processes write: on S3 a
    /// file is then committed by a create-if-absent copy of at most
    /// [`MAX_FENCED_BYTES`], so files (`max_file_bytes` plus the row group
    /// that crosses it) should fit. One that does not, grown past the limit
    /// by a large last batch, is committed after a look-up instead.
    ///
    /// # Errors
    /// The key to lower, and why.
    pub fn validate_shared(&self) -> Result<(), ConfigError> {
        let on_s3 =
            matches!(self.location()?, Location::Remote { url, .. } if url.scheme == Scheme::S3);
        let largest = self
            .max_file_bytes
            .saturating_add(self.row_group_bytes as u64);
        if on_s3 && largest > MAX_FENCED_BYTES {
            return Err(ConfigError::new(
                "max_file_bytes",
                format!(
                    "with row_group_bytes, allows files of {largest} bytes; when processes share \
                     an S3 dataset each file is committed by a conditional copy of at most \
                     {MAX_FENCED_BYTES} bytes"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_of_new() {
        let parsed: ParquetConfig = toml::from_str("path = \"out\"").unwrap();
        let made = ParquetConfig::new("out");
        assert_eq!(parsed.max_rows_per_file, made.max_rows_per_file);
        assert_eq!(parsed.max_file_bytes, made.max_file_bytes);
        assert_eq!(parsed.max_file_age_ms, made.max_file_age_ms);
        assert_eq!(parsed.row_group_bytes, made.row_group_bytes);
        assert_eq!(parsed.row_group_bytes, 8 << 20);
        assert_eq!(parsed.zstd_level, 1);
        assert!(parsed.exclusive && made.exclusive);
        parsed.validate().unwrap();
    }

    #[test]
    fn a_shared_s3_dataset_keeps_files_within_one_conditional_copy() {
        let config = |path: &str, max: u64| ParquetConfig {
            max_file_bytes: max,
            ..ParquetConfig::new(path)
        };
        config("s3://lake/cdc", 512 << 20)
            .validate_shared()
            .unwrap();
        config("/data/out", 8 << 30).validate_shared().unwrap();
        config("gs://lake/cdc", 8 << 30).validate_shared().unwrap();
        let e = config("s3://lake/cdc", 5 << 30)
            .validate_shared()
            .unwrap_err();
        assert_eq!(e.key, "max_file_bytes");
        assert!(e.reason.contains("conditional copy"), "{}", e.reason);
    }

    #[test]
    fn exclusive_is_not_a_configuration_key() {
        let e = toml::from_str::<ParquetConfig>("path = \"out\"\nexclusive = false").unwrap_err();
        assert!(e.to_string().contains("unknown field `exclusive`"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("zstd_level = 40", "zstd_level"),
            ("max_file_bytes = 10", "max_file_bytes"),
            ("max_rows_per_file = 0", "max_rows_per_file"),
            ("row_group_rows = 0", "row_group_rows"),
            ("row_group_bytes = 100", "row_group_bytes"),
            ("max_file_age_ms = 0", "max_file_age_ms"),
        ];
        for (line, key) in cases {
            let c: ParquetConfig = toml::from_str(&format!("path = \"out\"\n{line}")).unwrap();
            assert_eq!(c.validate().unwrap_err().key, key, "{line}");
        }
        let c: ParquetConfig = toml::from_str("path = \"\"").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "path");
    }

    #[test]
    fn object_store_paths_take_region_and_endpoint() {
        let c: ParquetConfig = toml::from_str(
            "path = \"s3://lake/dynamodb\"\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:9000\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.location().unwrap().describe(), "s3://lake/dynamodb");
        let cases = [
            ("path = \"out\"\nregion = \"eu-west-1\"", "region"),
            (
                "path = \"s3://lake\"\nendpoint_url = \"ftp://x\"",
                "endpoint_url",
            ),
            (
                "path = \"gs://lake\"\nendpoint_url = \"http://x\"",
                "endpoint_url",
            ),
            ("path = \"s3://\"", "path"),
            ("path = \"hdfs://lake/x\"", "path"),
        ];
        for (text, key) in cases {
            let c: ParquetConfig = toml::from_str(text).unwrap();
            assert_eq!(c.validate().unwrap_err().key, key, "{text}");
        }
    }
}
