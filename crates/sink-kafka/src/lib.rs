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
//! - A message larger than the broker takes goes to `dead_letter_topic` with
//!   the reason in a header, or stops the run when there is none.

mod encode;
mod json;
mod producer;
mod registry;
mod resume;
mod sink;

pub use encode::{HEADER_ERROR, HEADER_EVENT, HEADER_SEQUENCE, HEADER_SHARD, HEADER_TABLE};
pub use producer::PROTECTED_PROPERTIES;
pub use registry::RegistryConfig;
pub use sink::{KafkaSink, KafkaStats};

/// How values and keys are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Avro with a schema registry (Confluent wire format).
    #[default]
    Avro,
    /// JSON objects.
    Json,
}

/// The value's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Envelope {
    /// `{before, after, op, ts_ms, source}`.
    #[default]
    Debezium,
    /// The row image's attributes plus the `__` position fields.
    Flat,
}

/// How the sink is set up.
#[derive(Clone, Debug)]
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
}

/// The default of [`KafkaConfig::send_batch_messages`].
pub const SEND_BATCH_MESSAGES: usize = 1024;

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
}

impl KafkaSinkError {
    /// True when retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KafkaSinkError::Client { .. })
    }
}
