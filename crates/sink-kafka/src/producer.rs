//! The idempotent producer and its acknowledgements.
//!
//! Every message carries its index in the batch as the delivery opaque; a
//! batch counts as sent only when every index has an acknowledgement. The
//! producer never gives up on a message by itself (`message.timeout.ms = 0`):
//! while the broker is down or slow, `send_all` waits, so the pipeline
//! pauses and the source stops reading instead of anything being dropped or
//! re-sent out of order.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::KafkaSinkError;

/// One message to send.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// How one message ended.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Stored at this partition and offset.
    Stored { partition: i32, offset: i64 },
    /// Larger than the broker or client accepts.
    TooLarge(String),
    /// Any other permanent failure.
    Failed(KafkaError),
}

#[derive(Default)]
pub(crate) struct Acks {
    results: Mutex<Vec<(usize, Sent)>>,
}

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client_log::client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::client_log::client_error(&error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let sent = match result {
            Ok(m) => Sent::Stored {
                partition: m.partition(),
                offset: m.offset(),
            },
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                Sent::TooLarge("the broker rejected the message as too large".into())
            }
            Err((e, _)) => Sent::Failed(e.clone()),
        };
        if let Ok(mut r) = self.results.lock() {
            r.push((index, sent));
        }
    }
}

/// How long acknowledgements may take before the brokers count as down.
const SLOW_ACKS: Duration = Duration::from_secs(10);

/// The producer.
pub(crate) struct KafkaProducer {
    producer: BaseProducer<Acks>,
    /// Next offset per topic and partition after everything acknowledged.
    pub(crate) next_offsets: BTreeMap<(String, i32), i64>,
}

/// librdkafka settings this sink relies on; `properties` may not change them.
pub const PROTECTED_PROPERTIES: [&str; 5] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
];

impl KafkaProducer {
    /// A producer for `brokers`, with `properties` passed through.
    pub(crate) fn new(
        brokers: &str,
        properties: &[(String, String)],
    ) -> Result<Self, KafkaSinkError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            // zstd's fastest level, as for Parquet: librdkafka's default
            // (3) spent a fifth of the Kafka path's CPU for a few percent
            // of size. `properties` may set another.
            .set("compression.level", "1")
            .set("linger.ms", "5")
            // Never expire a message: wait out broker trouble instead.
            .set("message.timeout.ms", "0");
        for (k, v) in properties {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(Acks::default())
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot create the Kafka producer",
                source,
            })?;
        Ok(KafkaProducer {
            producer,
            next_offsets: BTreeMap::new(),
        })
    }

    /// Sends every message and waits until each is acknowledged or has
    /// failed for good; results are in message order.
    pub(crate) fn send_all(&mut self, messages: &[Outgoing]) -> Result<Vec<Sent>, KafkaSinkError> {
        let mut early: Vec<Option<Sent>> = (0..messages.len()).map(|_| None).collect();
        let mut pending = 0;
        for (index, m) in messages.iter().enumerate() {
            let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
            for (k, v) in &m.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            let mut record: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&m.topic, index)
                    .key(m.key.as_slice())
                    .headers(headers);
            if let Some(value) = &m.value {
                record = record.payload(value.as_slice());
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => {
                        pending += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: let acknowledgements drain it.
                        self.producer.poll(Duration::from_millis(20));
                        record = back;
                    }
                    Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                        _,
                    )) => {
                        early[index] = Some(Sent::TooLarge(format!(
                            "{} bytes exceed the producer's message.max.bytes",
                            m.key.len() + m.value.as_ref().map_or(0, Vec::len)
                        )));
                        break;
                    }
                    Err((e, _)) => {
                        return Err(KafkaSinkError::Client {
                            what: "cannot hand a message to the producer",
                            source: e,
                        });
                    }
                }
            }
        }
        self.wait_for(pending);
        let acks = self.take_acks();
        let mut out = early;
        for (index, sent) in acks {
            if let (Sent::Stored { partition, offset }, Some(m)) = (&sent, messages.get(index)) {
                let next = self
                    .next_offsets
                    .entry((m.topic.clone(), *partition))
                    .or_insert(0);
                *next = (*next).max(offset + 1);
            }
            if let Some(slot) = out.get_mut(index) {
                *slot = Some(sent);
            }
        }
        Ok(out
            .into_iter()
            .map(|s| s.unwrap_or(Sent::Failed(KafkaError::Canceled)))
            .collect())
    }

    /// Waits until `pending` messages have an answer. The producer never
    /// gives up on a message, so while the brokers are down this waits: the
    /// pipeline pauses. Said once after [`SLOW_ACKS`], every 30 s while it
    /// lasts, and once when the acknowledgements come.
    fn wait_for(&self, pending: usize) {
        let started = Instant::now();
        let mut outage = dynamo_cdc_core::Outage::new();
        loop {
            let done = self
                .producer
                .context()
                .results
                .lock()
                .map_or(0, |r| r.len());
            if done >= pending {
                if let Some(dynamo_cdc_core::OutageLine::Back(after)) =
                    outage.succeeded(Instant::now())
                {
                    tracing::warn!(
                        after_s = after.as_secs() + SLOW_ACKS.as_secs(),
                        "Kafka acknowledges messages again; reading goes on"
                    );
                }
                return;
            }
            self.producer.poll(Duration::from_millis(10));
            dynamo_cdc_core::alive::still_waiting();
            if started.elapsed() >= SLOW_ACKS {
                match outage.failed(Instant::now()) {
                    Some(dynamo_cdc_core::OutageLine::Down) => tracing::error!(
                        waiting = pending - done,
                        for_s = started.elapsed().as_secs(),
                        "Kafka does not acknowledge messages (brokers down or unreachable?); \
                         reading is paused and nothing is lost: the messages are sent when \
                         the brokers answer"
                    ),
                    Some(dynamo_cdc_core::OutageLine::StillDown(_)) => tracing::warn!(
                        waiting = pending - done,
                        for_s = started.elapsed().as_secs(),
                        "still waiting for Kafka to acknowledge messages; reading is paused"
                    ),
                    _ => {}
                }
            }
        }
    }

    fn take_acks(&self) -> Vec<(usize, Sent)> {
        self.producer
            .context()
            .results
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Waits for everything in flight.
    pub(crate) fn flush(&self) -> Result<(), KafkaSinkError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot flush the producer",
                source,
            })
    }
}
