//! What a topic already holds: read every partition from the offsets
//! recorded with the last checkpoint to the end, and collect the shard and
//! sequence number of every message from its headers.
//!
//! The set, not the highest sequence number per shard: a batch spreads over
//! partitions that are acknowledged independently, so a crash can leave a
//! later change of a shard in one partition while an earlier one, bound for
//! another, never arrived. Only what is there counts as held.
//!
//! A crash between a send and the next checkpoint leaves messages the
//! checkpoint does not know; this finds them, so they are not written again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use dynamo_cdc_core::{SequenceNumber, ShardKey};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};

use crate::KafkaSinkError;
use crate::client_log::QuietClient;
use crate::encode::{HEADER_SEQUENCE, HEADER_SHARD, HEADER_TABLE};

/// What a topic holds past `from`.
pub(crate) struct Scanned {
    /// Every change found, by shard and sequence number.
    pub found: HashSet<(ShardKey, SequenceNumber)>,
    /// Next offset per partition (the end of what was read).
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Reads `topic` from `from` (next offset per partition; partitions not in
/// it from their beginning) to the end.
pub(crate) fn scan(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> Result<Scanned, KafkaSinkError> {
    let client = |source| KafkaSinkError::Client {
        what: "cannot read the topic back",
        source,
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // assign() needs a group id; nothing is committed to it.
        .set("group.id", "dynamo-cdc-resume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (k, v) in properties {
        // Producer-only settings would make the consumer refuse to start.
        if !is_producer_property(k) {
            config.set(k, v);
        }
    }
    let consumer: BaseConsumer<QuietClient> =
        config.create_with_context(QuietClient).map_err(client)?;
    let partitions = partitions_of(&consumer, topic)?;
    let mut scanned = Scanned {
        found: HashSet::new(),
        next_offsets: BTreeMap::new(),
    };
    if partitions.is_empty() {
        return Ok(scanned);
    }
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        let offset = from
            .get(p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        list.add_partition_offset(topic, *p, offset)
            .map_err(client)?;
    }
    consumer.assign(&list).map_err(client)?;
    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    let started = Instant::now();
    let mut quiet_since = started;
    while !open.is_empty() {
        dynamo_cdc_core::alive::still_waiting();
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if quiet_since.elapsed() > Duration::from_secs(10) {
                    quiet_since = Instant::now();
                    tracing::warn!(
                        topic,
                        for_s = started.elapsed().as_secs(),
                        "still reading the topic back (broker down or slow?)"
                    );
                    close_past_the_end(&consumer, topic, from, &scanned, &mut open);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => crate::client_log::client_error(&e, "reading the topic back"),
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                scanned.next_offsets.insert(m.partition(), m.offset() + 1);
                if let Some(change) = position_of(&m) {
                    scanned.found.insert(change);
                }
            }
        }
    }
    Ok(scanned)
}

/// A partition whose recorded offset lies past its end never reports an end
/// of its own on some brokers: there is nothing to read back there. It means
/// the topic lost messages it had acknowledged (broker data loss, or the
/// topic was recreated): say so loudly.
fn close_past_the_end(
    consumer: &BaseConsumer<QuietClient>,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    scanned: &Scanned,
    open: &mut BTreeSet<i32>,
) {
    for p in open.clone() {
        let next = scanned
            .next_offsets
            .get(&p)
            .or_else(|| from.get(&p))
            .copied()
            .unwrap_or(0);
        if let Ok((_, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))
            && next >= high
        {
            if next > high {
                tracing::error!(
                    topic,
                    partition = p,
                    recorded = next,
                    end = high,
                    "the partition ends before the offset recorded with the checkpoint: the \
                     topic lost acknowledged messages (broker data loss, or the topic was recreated)"
                );
            }
            open.remove(&p);
        }
    }
}

/// The partitions of `topic`; none when it does not exist yet.
fn partitions_of(
    consumer: &BaseConsumer<QuietClient>,
    topic: &str,
) -> Result<Vec<i32>, KafkaSinkError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .map_err(|source| KafkaSinkError::Client {
            what: "cannot read the topic's metadata",
            source,
        })?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    match t.error() {
        None => Ok(t.partitions().iter().map(|p| p.id()).collect()),
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(Vec::new())
        }
        Some(e) => Err(KafkaSinkError::Topic {
            topic: topic.to_owned(),
            message: RDKafkaErrorCode::from(e).to_string(),
        }),
    }
}

fn position_of<M: Message>(m: &M) -> Option<(ShardKey, SequenceNumber)> {
    let headers = m.headers()?;
    let mut table = None;
    let mut shard = None;
    let mut seq = None;
    for h in headers.iter() {
        let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
        match h.key {
            HEADER_TABLE => table = text,
            HEADER_SHARD => shard = text,
            HEADER_SEQUENCE => seq = text,
            _ => {}
        }
    }
    Some((
        ShardKey::new(table?, shard?),
        SequenceNumber::parse(seq?).ok()?,
    ))
}

/// Settings any client takes (connection, security): not producer-only.
pub(crate) fn is_common_property(key: &str) -> bool {
    !is_producer_property(key)
}

/// Settings a consumer rejects.
fn is_producer_property(key: &str) -> bool {
    key.starts_with("linger")
        || key.starts_with("batch.")
        || key.starts_with("compression")
        || key.starts_with("queue.buffering")
        || key.starts_with("message.timeout")
        || key.starts_with("delivery.timeout")
        || key.starts_with("retr")
        || key == "message.send.max.retries"
        || key == "max.in.flight.requests.per.connection"
        || key == "max.in.flight"
}
