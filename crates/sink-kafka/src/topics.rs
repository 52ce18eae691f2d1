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
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::client_log::QuietClient;
use crate::{KafkaConfig, KafkaSinkError};

/// How long a metadata request or a creation may take before the broker
/// counts as unreachable (a transient error: the run pauses and retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes sure `topic` exists, asking `client` (the producer's: it must
/// not create topics when asked about them).
///
/// # Errors
/// [`KafkaSinkError::Client`] when the brokers cannot be reached (may pass);
/// [`KafkaSinkError::Topic`] when the topic is missing and may not or
/// cannot be created (will not pass).
pub(crate) fn ensure<C: ClientContext>(
    config: &KafkaConfig,
    client: &Client<C>,
    topic: &str,
) -> Result<(), KafkaSinkError> {
    let metadata = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|source| KafkaSinkError::Client {
            what: "cannot reach the Kafka brokers (metadata request)",
            source,
        })?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    if let Some(code) = found.and_then(|t| t.error()).map(RDKafkaErrorCode::from)
        && crate::resume::passes(code)
    {
        // It exists, and is not ready yet: asked again after the pause.
        return Err(KafkaSinkError::Client {
            what: "the topic's partitions are not ready (no leader yet)",
            source: rdkafka::error::KafkaError::MetadataFetch(code),
        });
    }
    if found.is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()) {
        return Ok(());
    }
    if !config.create_topics {
        return Err(KafkaSinkError::Topic {
            topic: topic.to_owned(),
            message: "does not exist and `create_topics` is false: create it on the brokers, \
                      or set `create_topics = true` under [sinks.kafka]"
                .into(),
        });
    }
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("allow.auto.create.topics", "false");
    for (k, v) in &config.properties {
        if crate::resume::is_common_property(k) {
            client.set(k, v);
        }
    }
    let admin: AdminClient<QuietClient> =
        client
            .create_with_context(QuietClient)
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot create the Kafka admin client",
                source,
            })?;
    let new = NewTopic::new(
        topic,
        config.topic_partitions,
        TopicReplication::Fixed(config.topic_replication_factor),
    );
    let options = AdminOptions::new()
        .request_timeout(Some(Timeout::After(REQUEST_TIMEOUT)))
        .operation_timeout(Some(Timeout::After(REQUEST_TIMEOUT)));
    let results = block_on(admin.create_topics([&new], &options)).map_err(|source| {
        KafkaSinkError::Client {
            what: "cannot reach the Kafka brokers (create topics)",
            source,
        }
    })?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(
                topic,
                partitions = config.topic_partitions,
                replication_factor = config.topic_replication_factor,
                "created the topic"
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(KafkaSinkError::Topic {
                    topic: topic.to_owned(),
                    message: format!(
                        "does not exist and the brokers refused to create it ({code}): create \
                         it on the brokers, or change `topic_partitions` / \
                         `topic_replication_factor` under [sinks.kafka]"
                    ),
                });
            }
        }
    }
    Ok(())
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
