//! The Kafka sink: every change as a message on its table's topic.
//!
//! - Routing: topic from a template (`cdc.{table}`); key = the item's primary
//!   key, so every change of an item goes to one partition, in order.
//! - Values: the Debezium envelope (`before`, `after`, `op`, `ts_ms`,
//!   `source`) or the flat row, as Avro in the Confluent wire format (schemas
//!   registered under `<topic>-key` / `<topic>-value`) or as JSON. A delete
//!   is followed by a tombstone (null value) unless turned off.
//! - Headers: table, shard id, sequence number, event id.
//! - Delivery: an idempotent producer (`acks=all`); a batch counts for the
//!   position only when every message of it is acknowledged. Broker trouble
//!   pauses the pipeline; nothing expires.
//! - Effectively once: before its first write to a topic, the sink reads the
//!   topic from the offsets recorded with the last checkpoint to the end and
//!   skips every change already there (its shard and sequence number are in
//!   the headers).
//! - A message the broker refuses for what it is (too large, failing its
//!   record checks) goes to `dead_letter_topic` with the reason in a header,
//!   or stops the run when there is none; its batch-mates are sent again.

mod client_log;
mod config;
mod encode;
mod events;
mod json;
mod native;
mod producer;
mod refused;
mod registry;
mod resume;
mod sink;
mod topics;

pub use config::{KafkaSinkConfig, PRODUCE_TIMEOUTS, PropertyValue};
pub use encode::{
    HEADER_ERROR, HEADER_EVENT, HEADER_LEASE_EPOCH, HEADER_SEQUENCE, HEADER_SHARD, HEADER_SNAPSHOT,
    HEADER_SNAPSHOT_ID, HEADER_TABLE,
};
pub use events::{MESSAGES_ACKED, describe};
pub use producer::PROTECTED_PROPERTIES;
pub use registry::RegistryConfig;
pub use sink::KafkaSink;

/// How values and keys are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Avro with a schema registry (Confluent wire format).
    #[default]
    Avro,
    /// JSON objects.
    Json,
}

/// The value's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// `{before, after, op, ts_ms, source}`.
    #[default]
    Debezium,
    /// The row image's attributes plus the `__` position fields.
    Flat,
}

/// How the sink is set up (made from [`KafkaSinkConfig`] by the binary).
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic template; `{table}` is replaced by the table name.
    pub topic: String,
    /// Avro or JSON.
    pub format: Format,
    /// Envelope or flat.
    pub envelope: Envelope,
    /// A null-value message after each delete.
    pub tombstones: bool,
    /// The schema registry (required for Avro).
    pub registry: Option<RegistryConfig>,
    /// Where undeliverable messages and gap records go.
    pub dead_letter_topic: Option<String>,
    /// More librdkafka settings (TLS, SASL, tuning).
    pub properties: Vec<(String, String)>,
    /// Encoded messages held before they are sent together (and their
    /// acknowledgements awaited together), unless the oldest has waited
    /// [`SEND_AFTER`]. Sending each pipeline batch on its own costs a round
    /// of produce requests and acknowledgements per 128 changes. Held
    /// messages count as not delivered: positions move only with acks.
    pub send_batch_messages: usize,
    /// Create missing topics (else a missing topic stops the run).
    pub create_topics: bool,
    /// Partitions of a created topic.
    pub topic_partitions: i32,
    /// Replication factor of a created topic (-1: the broker's default).
    pub topic_replication_factor: i32,
}

impl std::fmt::Debug for KafkaConfig {
    // Properties may hold secrets (`sasl.password`): their values are shown
    // as `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if config::is_secret_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("format", &self.format)
            .field("envelope", &self.envelope)
            .field("tombstones", &self.tombstones)
            .field("registry", &self.registry)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("properties", &properties)
            .field("create_topics", &self.create_topics)
            .finish_non_exhaustive()
    }
}

/// The default of [`KafkaConfig::send_batch_messages`].
pub const SEND_BATCH_MESSAGES: usize = 1024;

/// Bytes of encoded messages held before they are sent together, whatever
/// their count ([`KafkaConfig::send_batch_messages`]). Half the bytes that
/// may be in flight, so that large messages too are encoded while the group
/// before them is acknowledged.
pub const SEND_BATCH_BYTES: usize = IN_FLIGHT_BYTES / 2;

/// Groups of messages sent and not yet acknowledged, at most: the sink
/// encodes the next group while the brokers acknowledge the last ones.
pub(crate) const IN_FLIGHT_GROUPS: usize = 2;

/// Bytes of messages sent and not yet acknowledged, at most (a group larger
/// than this goes out alone). Bounds memory: the sink keeps each message
/// until its answer, for the dead-letter topic, and librdkafka a copy.
pub(crate) const IN_FLIGHT_BYTES: usize = 4 << 20;

/// How long an encoded message may wait for others before it is sent.
pub const SEND_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// What can stop the Kafka sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSinkError {
    /// The Kafka client failed.
    #[error("{what}")]
    Client {
        /// what was being done
        what: &'static str,
        /// the client's error
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The schema registry refused or failed.
    #[error("schema registry, subject `{subject}`: {message}")]
    Registry {
        /// the subject
        subject: String,
        /// the registry's message
        message: String,
        /// true when it may pass (unreachable, 5xx, 429)
        transient: bool,
    },
    /// A topic is unusable.
    #[error("topic `{topic}`: {message}")]
    Topic {
        /// the topic
        topic: String,
        /// what is wrong
        message: String,
    },
    /// A message could not be delivered and there is no dead-letter topic.
    #[error(
        "change {sequence_number} of table {table} (shard {shard}) cannot be delivered to topic \
         `{topic}`: {reason}; set `dead_letter_topic` to keep such messages and go on"
    )]
    Undeliverable {
        /// the table
        table: String,
        /// the shard
        shard: String,
        /// the sequence number
        sequence_number: String,
        /// the topic
        topic: String,
        /// why
        reason: String,
    },
    /// A generated Avro schema was rejected (an internal error).
    #[error("avro: {0}")]
    Avro(String),
    /// The tables' lease ended before messages were handed to the producer:
    /// they were not sent, and the table's next owner sends them.
    #[error("not handed to Kafka: {0}")]
    Fenced(String),
    /// Messages were reported delivered without an offset (see
    /// `Sent::Unconfirmed`): the pass ends, and the next one reads the topic
    /// back to find whether the brokers stored them.
    #[error(
        "Kafka reported {messages} message(s) delivered without an offset (acknowledged only \
         because a later request succeeded, after one that failed); they are not counted as \
         delivered: the topic is read back to find whether the brokers stored them"
    )]
    Unconfirmed {
        /// messages reported so
        messages: usize,
    },
    /// A stop was asked for while the brokers did not acknowledge what is
    /// in flight: the pass ends without it, and the next run sends again
    /// whatever its read-back does not find stored.
    #[error(
        "stopping: Kafka has not acknowledged {waiting} messages for {waited_s} s; they are \
         not counted as delivered, and the next run sends again what the topics lack"
    )]
    Stopped {
        /// messages in flight without an answer
        waiting: usize,
        /// how long the oldest group waited
        waited_s: u64,
    },
}

/// Whether the brokers refused by their access rules (ACLs): not passing by
/// waiting, whichever request (produce, fetch, metadata) met it. A group
/// refusal is not one: the read-back's consumer names a group only because
/// librdkafka asks for one, commits nothing to it and reads without it,
/// so a principal with no group ACL reads back all the same.
pub(crate) fn denied(code: rdkafka::error::RDKafkaErrorCode) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        code,
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed
    )
}

impl From<KafkaSinkError> for dynamo_cdc_core::SinkError {
    /// A broker or registry that cannot be reached may come back; a refused
    /// topic, a message that can never be delivered, a bad property, a
    /// missing permission or a schema the registry rejects will not.
    fn from(e: KafkaSinkError) -> Self {
        use rdkafka::error::KafkaError;
        let transient = match &e {
            KafkaSinkError::Client { source, .. } => {
                !matches!(
                    source,
                    KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
                ) && !source.rdkafka_error_code().is_some_and(denied)
            }
            KafkaSinkError::Registry { transient, .. } => *transient,
            // The pass ends; the run loop finds the lease gone, or the
            // stop asked for.
            KafkaSinkError::Fenced(_) | KafkaSinkError::Stopped { .. } => true,
            // The next pass's read-back settles it.
            KafkaSinkError::Unconfirmed { .. } => true,
            _ => false,
        };
        if transient {
            dynamo_cdc_core::SinkError::transient(e)
        } else {
            dynamo_cdc_core::SinkError::fatal(e)
        }
    }
}
