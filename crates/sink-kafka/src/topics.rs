//! Topics must exist before the sink reads them back or writes to them.
//! Production brokers usually do not create topics on their own, so the
//! sink creates a missing one (with `topic_partitions` and
//! `topic_replication_factor`) when `create_topics` is on, and otherwise
//! stops with an error that names the topic and the fix, before anything
//! is read from the source.
//!
//! Whether a topic exists is asked through the sink's producer, which is
//! connected already and never asks brokers to create a topic
//! (`allow.auto.create.topics` is false): a client made for the question
//! cost about as much CPU as a few hundred changes, and a connection (a TLS
//! handshake on most production brokers) per topic at start. A client of
//! its own is made only to create a topic.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;

use crate::client_log::QuietClient;
use crate::{KafkaConfig, KafkaSinkError};

/// How long a metadata request or a creation may take before the broker
/// counts as unreachable (a transient error: the run pauses and retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Kafka's default `max.message.bytes` for a topic (1 MiB plus a batch's
/// overhead). A topic the sink creates is given a larger limit only when
/// its producer may send larger messages.
const BROKER_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// What a metadata answer says of a topic.
enum Lookup {
    /// It exists, with these partitions.
    Found(Vec<i32>),
    /// It does not exist (or has no partitions).
    Missing,
    /// The brokers answered an error for it that does not pass by itself.
    Refused(RDKafkaErrorCode),
}

/// Asks `client` about `topic`. An error that passes by itself (no leader
/// yet, as right after its creation) is a transient error.
fn look_up<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<Lookup, KafkaSinkError> {
    let metadata = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|source| KafkaSinkError::Client {
            what: "cannot reach the Kafka brokers (metadata request)",
            source,
        })?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Lookup::Missing);
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None if t.partitions().is_empty() => Ok(Lookup::Missing),
        None => Ok(Lookup::Found(
            t.partitions().iter().map(|p| p.id()).collect(),
        )),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(Lookup::Missing),
        Some(code) if passes(code) => Err(KafkaSinkError::Client {
            what: "the topic's partitions are not ready (no leader yet)",
            source: KafkaError::MetadataFetch(code),
        }),
        Some(code) => Ok(Lookup::Refused(code)),
    }
}

/// Whether a topic's error in a metadata answer passes by itself: a topic
/// just created, or whose leader is moving, answers so for a while.
fn passes(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::ReplicaNotAvailable
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::RequestTimedOut
    )
}

/// Makes sure `topic` exists, asking `client` (the producer's: it must
/// not create topics when asked about them), and returns its partitions.
///
/// # Errors
/// [`KafkaSinkError::Client`] when the brokers cannot be reached or the
/// topic is not ready yet (may pass); [`KafkaSinkError::Topic`] when the
/// topic is missing and may not or cannot be created (will not pass).
/// `known`: the checkpoint recorded offsets in the topic, so it existed; a
/// broker just restarted may answer without it for a while, and the run
/// waits for it instead of stopping. `max_message_bytes`: the largest
/// message the producer writing to it may send (its `message.max.bytes`),
/// which a topic created here accepts.
pub(crate) fn ensure<C: ClientContext>(
    config: &KafkaConfig,
    client: &Client<C>,
    topic: &str,
    known: bool,
    max_message_bytes: usize,
) -> Result<Vec<i32>, KafkaSinkError> {
    let undescribed = match settle(config.create_topics, topic, look_up(client, topic)?, known)? {
        Settled::Found(partitions) => return Ok(partitions),
        Settled::Create { refused } => refused,
    };
    let mut admin_config = ClientConfig::new();
    admin_config
        .set("bootstrap.servers", &config.brokers)
        .set("allow.auto.create.topics", "false");
    for (k, v) in &config.properties {
        if crate::resume::is_common_property(k) {
            admin_config.set(k, v);
        }
    }
    let admin: AdminClient<QuietClient> =
        admin_config
            .create_with_context(QuietClient)
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot create the Kafka admin client",
                source,
            })?;
    let limit = max_message_bytes.to_string();
    let new = new_topic(config, topic, &limit, max_message_bytes);
    let options = AdminOptions::new()
        .request_timeout(Some(Timeout::After(REQUEST_TIMEOUT)))
        .operation_timeout(Some(Timeout::After(REQUEST_TIMEOUT)));
    let results = block_on(admin.create_topics([&new], &options)).map_err(|source| {
        KafkaSinkError::Client {
            what: "cannot reach the Kafka brokers (create topics)",
            source,
        }
    })?;
    let mut existed = false;
    for result in results {
        match result {
            Ok(_) => tracing::info!(
                topic,
                partitions = config.topic_partitions,
                replication_factor = config.topic_replication_factor,
                max_message_bytes = max_message_bytes.max(BROKER_DEFAULT_MAX_MESSAGE_BYTES),
                "created the topic"
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => existed = true,
            // The controller is moving or slow: it may have been created.
            Err((
                _,
                code @ (RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::NotController),
            )) => {
                return Err(KafkaSinkError::Client {
                    what: "the brokers could not create the topic in time",
                    source: KafkaError::AdminOp(code),
                });
            }
            Err((_, code)) => {
                let message = match undescribed {
                    Some(refused) => format!(
                        "the brokers refused to describe it ({refused}) and to create it \
                         ({code}): allow the bridge's principal to describe the topic (and \
                         write to it)"
                    ),
                    None => format!(
                        "does not exist and the brokers refused to create it ({code}): create \
                         it on the brokers, or change `topic_partitions` / \
                         `topic_replication_factor` under [sinks.kafka]"
                    ),
                };
                return Err(KafkaSinkError::Topic {
                    topic: topic.to_owned(),
                    message,
                });
            }
        }
    }
    after_create(topic, look_up(client, topic)?, existed)
}

/// What a lookup before any creation leaves to do.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// The topic exists, with these partitions.
    Found(Vec<i32>),
    /// Create it (`create_topics` is on); `refused`: the brokers refused
    /// to describe it, so it may exist.
    Create { refused: Option<RDKafkaErrorCode> },
}

/// Decides from the first lookup of `topic` whether it is there, is to be
/// created, or stops or pauses the run; `known` as for [`ensure`].
fn settle(
    create_topics: bool,
    topic: &str,
    lookup: Lookup,
    known: bool,
) -> Result<Settled, KafkaSinkError> {
    match lookup {
        Lookup::Found(partitions) => Ok(Settled::Found(partitions)),
        // A topic the brokers refuse to describe may exist: creating it
        // names the brokers' reason, and without creation the refusal is
        // the reason.
        Lookup::Refused(code) if !create_topics => Err(KafkaSinkError::Topic {
            topic: topic.to_owned(),
            message: format!(
                "the brokers refused to describe it ({code}): allow the bridge's principal to \
                 describe the topic (and write to it)"
            ),
        }),
        Lookup::Missing if known && !create_topics => Err(KafkaSinkError::Client {
            what: "the topic is missing from the brokers' metadata, but the checkpoint recorded \
                   offsets in it: waiting for it to show (a broker restarting); if it was \
                   deleted, create it again",
            source: KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        }),
        Lookup::Missing if !create_topics => Err(KafkaSinkError::Topic {
            topic: topic.to_owned(),
            message: "does not exist and `create_topics` is false: create it on the brokers, \
                      or set `create_topics = true` under [sinks.kafka]"
                .into(),
        }),
        Lookup::Missing => Ok(Settled::Create { refused: None }),
        Lookup::Refused(code) => Ok(Settled::Create {
            refused: Some(code),
        }),
    }
}

/// The creation request for `topic`. A producer allowed messages larger
/// than a broker's default (`message.max.bytes` in `properties`, and the
/// dead-letter producer, whose messages carry a whole refused change) gets
/// a topic that stores them: with the default, every such message would be
/// refused by the broker, and on the dead-letter topic stop the run.
fn new_topic<'a>(
    config: &KafkaConfig,
    topic: &'a str,
    limit: &'a str,
    max_message_bytes: usize,
) -> NewTopic<'a> {
    let new = NewTopic::new(
        topic,
        config.topic_partitions,
        TopicReplication::Fixed(config.topic_replication_factor),
    );
    if max_message_bytes > BROKER_DEFAULT_MAX_MESSAGE_BYTES {
        new.set("max.message.bytes", limit)
    } else {
        new
    }
}

/// A topic's partitions as the lookup after creating it found them;
/// `existed`: the brokers answered that the topic was there already.
fn after_create(topic: &str, lookup: Lookup, existed: bool) -> Result<Vec<i32>, KafkaSinkError> {
    match lookup {
        Lookup::Found(partitions) => Ok(partitions),
        // Not visible yet: a topic this call created holds nothing.
        Lookup::Missing if !existed => Ok(Vec::new()),
        // The brokers say it exists, but their metadata does not show it
        // yet (it was made a moment ago elsewhere, or the answer was
        // stale). It may hold what an earlier run sent, so its read-back
        // must wait: taking it for empty would send those changes again.
        Lookup::Missing => Err(KafkaSinkError::Client {
            what: "the topic exists but the brokers' metadata does not show it yet",
            source: KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        }),
        Lookup::Refused(code) => Err(KafkaSinkError::Topic {
            topic: topic.to_owned(),
            message: code.to_string(),
        }),
    }
}

/// Runs a future to completion on this thread. The admin client's futures
/// complete from librdkafka's own thread, so no async runtime is needed.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_cdc_core::{ErrorKind, SinkError};

    #[test]
    fn a_topic_the_brokers_will_not_describe_is_not_reported_as_missing() {
        let denied = || Lookup::Refused(RDKafkaErrorCode::TopicAuthorizationFailed);
        let e = settle(false, "cdc.orders", denied(), false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cdc.orders")
                && text.contains("refused to describe")
                && !text.contains("does not exist"),
            "{text}"
        );
        assert_eq!(SinkError::from(e).kind(), ErrorKind::Fatal);
        // With `create_topics`, the creation's answer names the reason.
        assert_eq!(
            settle(true, "cdc.orders", denied(), false).unwrap(),
            Settled::Create {
                refused: Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            }
        );
        // A missing topic, as before: stop, wait (known), or create.
        let e = settle(false, "cdc.orders", Lookup::Missing, false).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = settle(false, "cdc.orders", Lookup::Missing, true).unwrap_err();
        assert_eq!(SinkError::from(e).kind(), ErrorKind::Transient);
        assert_eq!(
            settle(true, "cdc.orders", Lookup::Missing, true).unwrap(),
            Settled::Create { refused: None }
        );
        assert_eq!(
            settle(false, "cdc.orders", Lookup::Found(vec![0]), true).unwrap(),
            Settled::Found(vec![0])
        );
    }

    #[test]
    fn a_topic_is_created_to_hold_the_largest_message_its_producer_may_send() {
        let config = KafkaConfig {
            brokers: "localhost:9092".into(),
            topic: "cdc.{table}".into(),
            format: crate::Format::Json,
            envelope: crate::Envelope::Debezium,
            tombstones: true,
            registry: None,
            dead_letter_topic: Some("cdc.dead".into()),
            properties: Vec::new(),
            send_batch_messages: 1,
            create_topics: true,
            topic_partitions: 3,
            topic_replication_factor: -1,
        };
        // The producer's default (1,000,000 bytes) fits a broker's default.
        let plain = new_topic(&config, "cdc.orders", "1000000", 1_000_000);
        assert!(plain.config.is_empty(), "{:?}", plain.config);
        assert_eq!(plain.num_partitions, 3);
        // The dead-letter producer's 16 MiB (or a larger `message.max.bytes`
        // in `properties`) does not: the topic is made to take it.
        let limit = (16usize << 20).to_string();
        let dead = new_topic(&config, "cdc.dead", &limit, 16 << 20);
        assert_eq!(dead.config, vec![("max.message.bytes", "16777216")]);
    }

    #[test]
    fn a_topic_that_existed_but_is_not_visible_yet_is_waited_for_not_taken_for_empty() {
        // Created by this call: nothing of ours can be in it yet.
        assert_eq!(
            after_create("t", Lookup::Missing, false).unwrap(),
            Vec::<i32>::new()
        );
        // There already: it may hold an earlier run's changes, so reading
        // it back waits (a transient error) until the brokers show it.
        let e = after_create("t", Lookup::Missing, true).unwrap_err();
        assert!(e.to_string().contains("does not show it yet"), "{e}");
        assert_eq!(SinkError::from(e).kind(), ErrorKind::Transient);
        assert_eq!(
            after_create("t", Lookup::Found(vec![0, 1]), true).unwrap(),
            vec![0, 1]
        );
        let refused = after_create(
            "t",
            Lookup::Refused(RDKafkaErrorCode::TopicAuthorizationFailed),
            false,
        );
        assert_eq!(
            SinkError::from(refused.unwrap_err()).kind(),
            ErrorKind::Fatal
        );
    }
}
