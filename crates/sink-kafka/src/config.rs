//! `[sinks.kafka]` as written in the configuration file, its checks, and
//! the [`KafkaConfig`] the sink runs with. Every default is defined here.

use std::collections::BTreeMap;

use dynamo_cdc_core::{ConfigError, Secret};
use serde::Deserialize;

use crate::producer::PROTECTED_PROPERTIES;
use crate::{Envelope, Format, KafkaConfig, RegistryConfig, SEND_BATCH_MESSAGES};

/// `[sinks.kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`, e.g. `"broker-1:9092,broker-2:9092"`.
    pub brokers: String,
    /// Topic template; `{table}` becomes the table name.
    #[serde(default = "defaults::topic")]
    pub topic: String,
    /// `avro` or `json`; when not set, `avro` with a schema registry and
    /// `json` without (see [`KafkaSinkConfig::format`]).
    #[serde(default, rename = "format")]
    pub format_set: Option<Format>,
    /// `debezium` or `flat`.
    #[serde(default)]
    pub envelope: Envelope,
    /// A null-value message after each delete.
    #[serde(default = "defaults::tombstones")]
    pub tombstones: bool,
    /// Confluent Schema Registry base URL (required for `avro`).
    pub schema_registry_url: Option<String>,
    /// Registry basic-auth user.
    pub schema_registry_username: Option<String>,
    /// Registry basic-auth password (never logged).
    pub schema_registry_password: Option<Secret>,
    /// Topic for undeliverable messages and gap records.
    pub dead_letter_topic: Option<String>,
    /// Create missing topics at start (production brokers usually do not
    /// create topics on their own).
    #[serde(default = "defaults::create_topics")]
    pub create_topics: bool,
    /// Partitions of a topic created by the sink.
    #[serde(default = "defaults::topic_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of a topic created by the sink; -1 takes the
    /// broker's default (`default.replication.factor`).
    #[serde(default = "defaults::topic_replication_factor")]
    pub topic_replication_factor: i32,
    /// More librdkafka settings, e.g. `"security.protocol" = "SASL_SSL"`.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

mod defaults {
    pub(super) fn topic() -> String {
        "cdc.{table}".to_owned()
    }
    pub(super) fn tombstones() -> bool {
        true
    }
    pub(super) fn create_topics() -> bool {
        true
    }
    pub(super) fn topic_partitions() -> i32 {
        1
    }
    pub(super) fn topic_replication_factor() -> i32 {
        -1
    }
}

/// A librdkafka property value: TOML strings, numbers and booleans.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// `"..."`
    Text(String),
    /// `123`
    Integer(i64),
    /// `true`
    Flag(bool),
}

impl PropertyValue {
    fn text(&self) -> String {
        match self {
            PropertyValue::Text(t) => t.clone(),
            PropertyValue::Integer(i) => i.to_string(),
            PropertyValue::Flag(b) => b.to_string(),
        }
    }
}

impl std::fmt::Debug for PropertyValue {
    // Values may be secrets (`sasl.password`, `ssl.key.password`): the
    // configuration's Debug output must never show them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// True when a librdkafka property holds a secret (never logged).
pub(crate) fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".pem")
}

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The librdkafka properties that bound how long a message may wait for its
/// acknowledgement before the producer gives up on it: two names of one
/// setting.
pub const PRODUCE_TIMEOUTS: [&str; 2] = ["message.timeout.ms", "delivery.timeout.ms"];

/// The librdkafka properties that bound how often a message is sent again
/// before the producer gives up on it: two names of one setting.
const RETRY_LIMITS: [&str; 2] = ["retries", "message.send.max.retries"];

/// librdkafka's default retry limit, which never runs out before the
/// produce timeout does.
const RETRIES_UNLIMITED: &str = "2147483647";

impl KafkaSinkConfig {
    /// The produce timeouts set in `properties` ([`PRODUCE_TIMEOUTS`], also
    /// with librdkafka's `topic.` prefix, which it strips), by the key as
    /// written, in milliseconds; a value that is not a number counts as 0
    /// (never).
    pub fn produce_timeouts(&self) -> Vec<(&str, u64)> {
        self.properties
            .iter()
            .filter(|(k, _)| PRODUCE_TIMEOUTS.contains(&k.strip_prefix("topic.").unwrap_or(k)))
            .map(|(k, v)| {
                let ms = match v {
                    PropertyValue::Integer(i) => u64::try_from(*i).ok(),
                    PropertyValue::Text(t) => t.trim().parse().ok(),
                    PropertyValue::Flag(_) => None,
                };
                (k.as_str(), ms.unwrap_or(0))
            })
            .collect()
    }

    /// Checks the settings that let the producer give up on a message:
    /// the produce timeouts ([`PRODUCE_TIMEOUTS`]) and the retry limits
    /// (`retries`, `message.send.max.retries`). Keys are relative to the
    /// section.
    ///
    /// Alone (`shared` false) the producer must never give up: a message
    /// given up on may still be stored later, after the next pass has read
    /// the topic back and written it again, or after a later change of its
    /// item. Under leases the timeout is finite on purpose: a worker taking
    /// over a table waits it out before it reads back, so it must not be 0,
    /// and its two names must not disagree.
    ///
    /// # Errors
    /// The first setting that breaks these rules, naming its key.
    pub fn validate_giving_up(&self, shared: bool) -> Result<(), ConfigError> {
        let timeouts = self.produce_timeouts();
        if !shared {
            if let Some((key, ms)) = timeouts.iter().find(|(_, ms)| *ms != 0) {
                return Err(ConfigError::new(
                    format!("properties.{key}"),
                    format!(
                        "{ms} ms would let the producer give up on messages while the brokers \
                         are slow or down, and one given up on could be written after a later \
                         change of its item; remove it (the bridge pauses instead, and loses \
                         nothing), or set 0"
                    ),
                ));
            }
            if let Some((key, value)) = self.properties.iter().find(|(k, v)| {
                RETRY_LIMITS.contains(&k.as_str()) && v.text().trim() != RETRIES_UNLIMITED
            }) {
                return Err(ConfigError::new(
                    format!("properties.{key}"),
                    format!(
                        "`{}` would let the producer give up on a message after that many \
                         retries, and one given up on could be written after a later change of \
                         its item; remove it (librdkafka then retries until the message is \
                         stored, and the bridge pauses while the brokers are down)",
                        value.text()
                    ),
                ));
            }
            return Ok(());
        }
        if let Some((key, _)) = timeouts.iter().find(|(_, ms)| *ms == 0) {
            return Err(ConfigError::new(
                format!("properties.{key}"),
                "must be a positive number of milliseconds with [coordination]: a worker \
                 taking over a table waits it out, so that the previous owner's last messages \
                 have landed or failed before it reads the topic back",
            ));
        }
        // The two are one setting to librdkafka, and which wins when both
        // are given depends on the order it meets them: the wait could be
        // shorter than what the producer applies.
        if let Some((a, a_ms)) = timeouts.first()
            && let Some((b, b_ms)) = timeouts.iter().find(|(_, ms)| ms != a_ms)
        {
            return Err(ConfigError::new(
                format!("properties.{b}"),
                format!(
                    "{b_ms} ms, while `properties.{a}` is {a_ms} ms: the two are names of one \
                     librdkafka setting; set one of them (or both to the same value)"
                ),
            ));
        }
        Ok(())
    }

    /// The properties as librdkafka takes them.
    pub fn property_pairs(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.clone(), v.text()))
            .collect()
    }

    /// The encoding: as set, else Avro when a schema registry is
    /// configured and JSON when none is.
    pub fn format(&self) -> Format {
        self.format_set
            .unwrap_or(if self.schema_registry_url.is_some() {
                Format::Avro
            } else {
                Format::Json
            })
    }

    /// What the sink runs with.
    pub fn runtime(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            format: self.format(),
            envelope: self.envelope,
            tombstones: self.tombstones,
            registry: self.schema_registry_url.as_ref().map(|url| RegistryConfig {
                url: url.clone(),
                username: self.schema_registry_username.clone(),
                password: self.schema_registry_password.clone(),
            }),
            dead_letter_topic: self.dead_letter_topic.clone(),
            properties: self.property_pairs(),
            send_batch_messages: SEND_BATCH_MESSAGES,
            create_topics: self.create_topics,
            topic_partitions: self.topic_partitions,
            topic_replication_factor: self.topic_replication_factor,
        }
    }

    /// Checks the values; touches nothing. Keys are relative to the section.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::new(
                "brokers",
                "must name at least one broker (host:port)",
            ));
        }
        let sample = self.topic.replace("{table}", "orders");
        if sample.contains(['{', '}']) {
            return Err(ConfigError::new(
                "topic",
                format!("`{}`: the only placeholder is {{table}}", self.topic),
            ));
        }
        if !is_topic_name(&sample) {
            return Err(ConfigError::new(
                "topic",
                format!(
                    "`{}` does not make a Kafka topic name (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`)",
                    self.topic
                ),
            ));
        }
        if self.format_set == Some(Format::Avro) && self.schema_registry_url.is_none() {
            return Err(ConfigError::new(
                "schema_registry_url",
                "format = \"avro\" needs a schema registry (or set format = \"json\")",
            ));
        }
        if let Some(url) = &self.schema_registry_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "schema_registry_url",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        if self.schema_registry_password.is_some() && self.schema_registry_username.is_none() {
            return Err(ConfigError::new(
                "schema_registry_username",
                "a registry password needs a user name",
            ));
        }
        if let Some(t) = &self.dead_letter_topic
            && !is_topic_name(t)
        {
            return Err(ConfigError::new(
                "dead_letter_topic",
                format!("`{t}` is not a Kafka topic name"),
            ));
        }
        if self.topic_partitions < 1 {
            return Err(ConfigError::new("topic_partitions", "must be at least 1"));
        }
        if self.topic_replication_factor == 0 || self.topic_replication_factor < -1 {
            return Err(ConfigError::new(
                "topic_replication_factor",
                "must be at least 1, or -1 for the broker's default",
            ));
        }
        for key in self.properties.keys() {
            if PROTECTED_PROPERTIES.contains(&key.as_str()) {
                let why = if key == "allow.auto.create.topics" {
                    "is set by dynamo-cdc (the producer never asks brokers to create a topic; \
                     the bridge creates missing ones itself: see `create_topics`)"
                } else {
                    "is set by dynamo-cdc (brokers come from `brokers`; the producer is always \
                     idempotent with acks=all)"
                };
                return Err(ConfigError::new(format!("properties.{key}"), why));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAFKA: &str = r#"
brokers = "127.0.0.1:9092"
format = "json"
dead_letter_topic = "cdc.dead"
[properties]
"linger.ms" = 20
"enable.ssl.certificate.verification" = false
"#;

    fn parse(text: &str) -> KafkaSinkConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_properties() {
        let k = parse(KAFKA);
        k.validate().unwrap();
        assert_eq!(k.topic, "cdc.{table}");
        assert_eq!(k.envelope, Envelope::Debezium);
        assert!(k.tombstones && k.create_topics);
        assert_eq!((k.topic_partitions, k.topic_replication_factor), (1, -1));
        assert!(
            k.property_pairs()
                .contains(&("linger.ms".to_owned(), "20".to_owned()))
        );
    }

    /// Unset, the format follows the registry: Avro with one, JSON without.
    #[test]
    fn the_format_follows_the_registry_unless_set() {
        let unset = KAFKA.replace("format = \"json\"\n", "");
        let k = parse(&unset);
        k.validate().unwrap();
        assert_eq!(k.format(), Format::Json);
        let k = parse(&format!(
            "schema_registry_url = \"http://registry:8081\"\n{unset}"
        ));
        k.validate().unwrap();
        assert_eq!(k.format(), Format::Avro);
        assert_eq!(k.runtime().format, Format::Avro);
        let k = parse(&format!(
            "schema_registry_url = \"http://registry:8081\"\n{KAFKA}"
        ));
        assert_eq!(k.format(), Format::Json, "as set");
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (
                "format = \"json\"",
                "format = \"avro\"",
                "schema_registry_url",
            ),
            (
                "format = \"json\"",
                "format = \"json\"\ntopic = \"cdc/{table}\"",
                "topic",
            ),
            (
                "format = \"json\"",
                "format = \"json\"\ntopic = \"cdc.{tabel}\"",
                "topic",
            ),
            ("brokers = \"127.0.0.1:9092\"", "brokers = \" \"", "brokers"),
            (
                "\"linger.ms\" = 20",
                "\"enable.idempotence\" = false",
                "properties.enable.idempotence",
            ),
            ("\"linger.ms\" = 20", "acks = 1", "properties.acks"),
            (
                "\"linger.ms\" = 20",
                "\"allow.auto.create.topics\" = true",
                "properties.allow.auto.create.topics",
            ),
            (
                "format = \"json\"",
                "format = \"json\"\ntopic_partitions = 0",
                "topic_partitions",
            ),
            (
                "format = \"json\"",
                "format = \"json\"\ntopic_replication_factor = 0",
                "topic_replication_factor",
            ),
        ];
        for (from, to, key) in cases {
            let e = parse(&KAFKA.replace(from, to)).validate().unwrap_err();
            assert_eq!(e.key, key, "{to}: {e}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let k = parse(&format!("{KAFKA}\"sasl.password\" = \"hunter2\"\n",));
        let k = KafkaSinkConfig {
            schema_registry_password: Some(Secret::new("s3cret")),
            schema_registry_username: Some("u".into()),
            ..k
        };
        let shown = format!("{k:?} {:?}", k.runtime());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
