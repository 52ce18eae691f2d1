//! The TOML configuration: parsed strictly (unknown keys are errors), then
//! checked by a pure [`Config::validate`] before anything is opened.
//!
//! Each component owns its section's type, defaults and checks (the sinks'
//! in their crates); this file only puts them together and places their
//! errors' keys in the file (`sinks.kafka.topic`).
//!
//! Relative paths are taken from the directory the command runs in.

use std::path::PathBuf;

pub use dynamo_cdc_core::ConfigError;
use dynamo_cdc_lease::CoordinationConfig;
use dynamo_cdc_object_store::{Location, StoreOptions};
use dynamo_cdc_sink_iceberg::IcebergConfig;
use dynamo_cdc_sink_kafka::KafkaSinkConfig;
use dynamo_cdc_sink_parquet::ParquetConfig;
pub use dynamo_cdc_source::config::{SourceConfig, SourceKind};
use dynamo_cdc_transform::TransformConfig;
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
    /// Where dead letters and gap records are kept.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// The metrics and health endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Sharing the tables with other processes through a lease table;
    /// without it the process runs alone.
    pub coordination: Option<CoordinationConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address, e.g.
    /// `"127.0.0.1:9464"`; off when absent.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[sinks]`: any of the sinks, alone or together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// `[sinks.parquet]`.
    pub parquet: Option<ParquetConfig>,
    /// `[sinks.kafka]`.
    pub kafka: Option<KafkaSinkConfig>,
    /// `[sinks.iceberg]`.
    pub iceberg: Option<IcebergConfig>,
}

/// `[dead_letter]`: where dead letters and gap records go. Without a
/// `path`: beside the Parquet dataset (on its disk or bucket) when there is
/// one, else beside the checkpoint file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// A local directory or an `s3://`, `gs://`, `az://` URL.
    pub path: Option<String>,
    /// S3 region (with an `s3://` path).
    pub region: Option<String>,
    /// S3-compatible endpoint (with an `s3://` path).
    pub endpoint_url: Option<String>,
}

impl DeadLetterConfig {
    /// The configured location, if a `path` is given; pure. Keys are
    /// relative to the section.
    ///
    /// # Errors
    /// A malformed path, or store keys without a path they apply to.
    pub fn location(&self) -> Result<Option<Location>, ConfigError> {
        let options = StoreOptions {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        };
        match &self.path {
            Some(path) => Location::parse(path, options)
                .map(Some)
                .map_err(|(key, reason)| bad(key, reason)),
            None if options != StoreOptions::default() => Err(bad(
                if options.region.is_some() {
                    "region"
                } else {
                    "endpoint_url"
                },
                "applies only with an s3:// path",
            )),
            None => Ok(None),
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The local checkpoint file.
    pub path: PathBuf,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(key, reason)
}

impl Config {
    /// Parses TOML text strictly.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path and the reason.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, &|name| std::env::var(name).ok())
    }

    /// Parses TOML text strictly, taking `${VAR}` references in values from
    /// `env` (see [`crate::interpolate`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path and the reason.
    pub fn parse_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| bad("(file)", e.to_string().trim().replace('\n', " ")))?;
        let mut value = toml::Value::Table(table);
        crate::interpolate::interpolate(&mut value, env).map_err(|e| bad(&e.key, e.reason))?;
        let source_keys: Vec<String> = match value.get("source") {
            Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
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
        })?;
        config.source.given(source_keys);
        Ok(config)
    }

    /// Checks values and their combinations; touches nothing outside.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.source.validate().map_err(|e| e.within("source"))?;
        if self.sinks.parquet.is_none()
            && self.sinks.kafka.is_none()
            && self.sinks.iceberg.is_none()
        {
            return Err(bad(
                "sinks",
                "configure at least one sink: [sinks.parquet] with path, [sinks.kafka] with brokers, [sinks.iceberg] with catalog_uri and warehouse",
            ));
        }
        if let Some(k) = &self.sinks.kafka {
            k.validate().map_err(|e| e.within("sinks.kafka"))?;
            self.one_topic_per_table_with_avro(k)?;
        }
        if let Some(p) = &self.sinks.parquet {
            p.validate().map_err(|e| e.within("sinks.parquet"))?;
        }
        if let Some(i) = &self.sinks.iceberg {
            i.validate().map_err(|e| e.within("sinks.iceberg"))?;
        }
        self.dead_letter
            .location()
            .map_err(|e| e.within("dead_letter"))?;
        if self.checkpoint.path.as_os_str().is_empty() {
            return Err(bad("checkpoint.path", "must not be empty"));
        }
        if let Some(k) = &self.sinks.kafka {
            k.validate_giving_up(self.coordination.is_some())
                .map_err(|e| e.within("sinks.kafka"))?;
        }
        if let Some(c) = &self.coordination {
            c.validate().map_err(|e| e.within("coordination"))?;
            if self.source.kind != SourceKind::Dynamodb {
                return Err(bad(
                    "coordination",
                    "shares the tables of a `kind = \"dynamodb\"` source between processes; \
                     a replay source has no tables to share: remove [coordination]",
                ));
            }
            if let Some(p) = &self.sinks.parquet {
                p.validate_shared().map_err(|e| e.within("sinks.parquet"))?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// With Avro, a topic's key and value schemas are registered under its
    /// subjects (`<topic>-key`, `<topic>-value`): tables sharing a topic
    /// (a template without `{table}`) would register each other's schemas
    /// there, and a registry checking compatibility refuses the second
    /// table's, stopping the run when its first change comes. Refused here
    /// when the source names more than one table.
    fn one_topic_per_table_with_avro(&self, k: &KafkaSinkConfig) -> Result<(), ConfigError> {
        if k.format() != dynamo_cdc_sink_kafka::Format::Avro || k.topic.contains("{table}") {
            return Ok(());
        }
        let tables = crate::run::known_tables(self);
        if tables.len() < 2 {
            return Ok(());
        }
        Err(bad(
            "sinks.kafka.topic",
            format!(
                "`{}` has no `{{table}}`, so the {} tables would share one topic: with Avro each \
                 table needs a topic of its own, as a topic's key and value schemas are \
                 registered under its subjects and another table's would be refused; use a \
                 template such as `cdc.{{table}}`, or format = \"json\"",
                k.topic,
                tables.len()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_sharing_a_topic_are_refused_with_avro_only() {
        let config = |tables: &str, kafka: &str| {
            Config::parse(&format!(
                "[source]\nkind = \"dynamodb\"\ntables = [{tables}]\n\
                 [sinks.kafka]\nbrokers = \"b:9092\"\n{kafka}\n\
                 [checkpoint]\npath = \"out/c.json\"\n"
            ))
            .unwrap()
        };
        let avro = "schema_registry_url = \"http://r:8081\"\ntopic = \"cdc.all\"";
        let e = config("\"orders\", \"items\"", avro)
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "sinks.kafka.topic");
        assert!(
            e.reason.contains("cdc.all") && e.reason.contains("{table}"),
            "{e}"
        );
        config("\"orders\"", avro).validate().unwrap();
        config("\"orders\", \"items\"", "topic = \"cdc.all\"")
            .validate()
            .unwrap();
        config(
            "\"orders\", \"items\"",
            "schema_registry_url = \"http://r:8081\"\ntopic = \"cdc.{table}\"",
        )
        .validate()
        .unwrap();
    }

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
        assert_eq!(c.transform.numbers, dynamo_cdc_transform::NumbersMode::Auto);
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

    #[test]
    fn values_come_from_the_environment() {
        let env = |name: &str| match name {
            "OUT" => Some("/data/out".to_owned()),
            "REGISTRY_PASSWORD" => Some("hunter2".to_owned()),
            _ => None,
        };
        let text = GOOD.replace("out/parquet", "${OUT}/parquet");
        let c = Config::parse_with_env(&text, &env).unwrap();
        assert_eq!(c.sinks.parquet.unwrap().path, "/data/out/parquet");
        let text = GOOD.replace("out/parquet", "${LAKE:?set LAKE to the dataset root}");
        let e = Config::parse_with_env(&text, &env).unwrap_err();
        assert_eq!(e.key, "sinks.parquet.path");
        assert!(e.reason.contains("set LAKE to the dataset root"), "{e}");
        let text = KAFKA.replace(
            "format = \"json\"",
            "format = \"json\"\nschema_registry_username = \"u\"\nschema_registry_password = \"${REGISTRY_PASSWORD}\"",
        );
        let c = Config::parse_with_env(&text, &env).unwrap();
        let k = c.sinks.kafka.clone().unwrap();
        assert_eq!(k.schema_registry_password.unwrap().expose(), "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"), "secrets never show");
    }

    const STREAMS: &str = r#"
[source]
kind = "dynamodb"
tables = ["orders", "customers"]
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:5000"
start = "latest"
on_gap = "skip"
[sinks.parquet]
path = "out/parquet"
[checkpoint]
path = "out/checkpoint.json"
"#;

    #[test]
    fn the_dynamodb_source_parses_with_defaults() {
        let c = Config::parse(STREAMS).unwrap();
        c.validate().unwrap();
        assert_eq!(c.source.kind, SourceKind::Dynamodb);
        assert_eq!(c.source.start, dynamo_cdc_source::StartAt::Latest);
        assert_eq!(c.source.on_gap, dynamo_cdc_source::OnGap::Skip);
        assert_eq!(c.source.poll_interval_ms, 250);
        assert_eq!(c.source.idle_poll_interval_ms, 1_000);
        assert_eq!(c.source.records_per_call, 1_000);
    }

    /// Each section is checked by its owner (the source and sink crates
    /// test their rules); here, that their keys are placed in the file.
    #[test]
    fn section_errors_name_the_full_key() {
        let cases = [
            (
                STREAMS,
                "tables = [\"orders\", \"customers\"]",
                "tables = [\"x\"]",
                "source.tables[0]",
            ),
            (
                STREAMS,
                "on_gap = \"skip\"",
                "on_gap = \"skip\"\nrecords_per_call = 5000",
                "source.records_per_call",
            ),
            (
                KAFKA,
                "format = \"json\"",
                "format = \"avro\"",
                "sinks.kafka.schema_registry_url",
            ),
            (
                KAFKA,
                "\"linger.ms\" = 20",
                "acks = 1",
                "sinks.kafka.properties.acks",
            ),
            (
                GOOD,
                "[checkpoint]",
                "zstd_level = 40\n[checkpoint]",
                "sinks.parquet.zstd_level",
            ),
        ];
        for (base, from, to, key) in cases {
            let e = Config::parse(&base.replace(from, to))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.key, key, "{to}: {e}");
        }
        let e = Config::parse(&STREAMS.replace("on_gap = \"skip\"", "on_gap = \"ignore\""))
            .unwrap_err();
        assert_eq!(e.key, "source.on_gap");
    }

    /// Shared S3 datasets commit each file by a conditional copy of at most
    /// 1 GiB; alone, any size goes.
    #[test]
    fn a_shared_s3_dataset_bounds_the_file_size() {
        let big = STREAMS.replace("out/parquet", "s3://lake/cdc").replace(
            "[checkpoint]",
            "max_file_bytes = 2_000_000_000\n[checkpoint]",
        );
        Config::parse(&big).unwrap().validate().unwrap();
        let e = Config::parse(&format!("{big}[coordination]\n"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "sinks.parquet.max_file_bytes", "{e}");
    }

    /// Alone, the producer never gives up on a message; under leases the
    /// timeout is finite on purpose (the coordinated module's tests).
    #[test]
    fn a_kafka_produce_timeout_or_retry_limit_is_refused_without_coordination() {
        let kafka = |props: &str| {
            STREAMS.replace(
                "[checkpoint]",
                &format!(
                    "[sinks.kafka]\nbrokers = \"b:9092\"\nformat = \"json\"\n{props}[checkpoint]"
                ),
            )
        };
        Config::parse(&kafka("")).unwrap().validate().unwrap();
        let never = kafka("[sinks.kafka.properties]\n\"message.timeout.ms\" = 0\n");
        Config::parse(&never).unwrap().validate().unwrap();
        let e = Config::parse(&kafka(
            "[sinks.kafka.properties]\n\"delivery.timeout.ms\" = \"120000\"\n",
        ))
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "sinks.kafka.properties.delivery.timeout.ms", "{e}");
        assert!(e.to_string().contains("120000 ms"), "{e}");
        // librdkafka strips a `topic.` prefix from a setting it does not
        // know as a global one.
        let e = Config::parse(&kafka(
            "[sinks.kafka.properties]\n\"topic.message.timeout.ms\" = 30000\n",
        ))
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(
            e.key, "sinks.kafka.properties.topic.message.timeout.ms",
            "{e}"
        );
        // A retry limit gives up on a message just the same; librdkafka's
        // own default, which never runs out, may be written out.
        for key in ["retries", "message.send.max.retries"] {
            let e = Config::parse(&kafka(&format!(
                "[sinks.kafka.properties]\n\"{key}\" = 10\n"
            )))
            .unwrap()
            .validate()
            .unwrap_err();
            assert_eq!(e.key, format!("sinks.kafka.properties.{key}"), "{e}");
            assert!(
                e.reason.contains("`10` would let the producer give up"),
                "{e}"
            );
        }
        let unlimited = kafka("[sinks.kafka.properties]\nretries = \"2147483647\"\n");
        Config::parse(&unlimited).unwrap().validate().unwrap();
    }

    #[test]
    fn the_dead_letter_section_is_optional_and_its_keys_are_placed() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dead_letter.location().unwrap(), None);
        let text = format!(
            "{GOOD}[dead_letter]\npath = \"s3://lake/dlq\"\nendpoint_url = \"http://127.0.0.1:5000\"\n"
        );
        let c = Config::parse(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.dead_letter.location().unwrap().unwrap().describe(),
            "s3://lake/dlq"
        );
        for (section, key) in [
            ("[dead_letter]\npath = \"s3://\"\n", "dead_letter.path"),
            (
                "[dead_letter]\nregion = \"eu-west-1\"\n",
                "dead_letter.region",
            ),
            (
                "[dead_letter]\npath = \"dlq\"\nendpoint_url = \"http://x\"\n",
                "dead_letter.endpoint_url",
            ),
        ] {
            let e = Config::parse(&format!("{GOOD}{section}"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.key, key, "{section}");
        }
        let e = Config::parse(&GOOD.replace("path = \"out/parquet\"", "path = \"s3://\""))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "sinks.parquet.path");
    }

    const KAFKA: &str = r#"
[source]
kind = "replay"
path = "examples/data"
[sinks.kafka]
brokers = "127.0.0.1:9092"
format = "json"
dead_letter_topic = "cdc.dead"
[sinks.kafka.properties]
"linger.ms" = 20
"enable.ssl.certificate.verification" = false
[checkpoint]
path = "out/checkpoint.json"
"#;

    #[test]
    fn a_kafka_sink_alone_parses_with_defaults() {
        let c = Config::parse(KAFKA).unwrap();
        c.validate().unwrap();
        let k = c.sinks.kafka.unwrap();
        assert_eq!(k.topic, "cdc.{table}");
        assert_eq!(k.envelope, dynamo_cdc_sink_kafka::Envelope::Debezium);
        assert!(k.tombstones);
        assert!(
            k.property_pairs()
                .contains(&("linger.ms".to_owned(), "20".to_owned()))
        );
    }
}
