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
//!
//! Most starts find nothing to read: a new topic, or one the last run left
//! where its checkpoint says. The producer's client, connected already,
//! asks each partition's watermarks first; a consumer (a client of its own,
//! with its threads and connections) is made only for partitions that hold
//! messages past the recorded offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use dynamo_cdc_core::{SequenceNumber, ShardKey};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};

use crate::KafkaSinkError;
use crate::client_log::QuietClient;
use crate::encode::{HEADER_SEQUENCE, HEADER_SHARD, HEADER_TABLE};

/// A change, by shard and sequence number.
type Change = (ShardKey, SequenceNumber);

/// What a topic holds past `from`.
pub(crate) struct Scanned {
    /// Every change whose value was found, by shard and sequence number.
    pub found: HashSet<(ShardKey, SequenceNumber)>,
    /// The changes whose value is the last message of its key (in its
    /// partition) found: not followed by its tombstone, nor by a later
    /// change of the item. A delete's tombstone missing from the topic is
    /// sent again only then.
    pub last_values: HashSet<(ShardKey, SequenceNumber)>,
    /// Next offset per partition (the end of what was read).
    pub next_offsets: BTreeMap<i32, i64>,
    /// Partitions that end before the offset recorded for them, with their
    /// first offset and their end: the recorded offset means nothing there
    /// any more, and is replaced.
    pub past_the_end: BTreeMap<i32, (i64, i64)>,
    /// The brokers' ends were suspect (see `plan`): the sink's next
    /// read-backs, of other topics, read every partition too.
    pub suspect: bool,
}

/// How long a metadata or watermark request may take before the brokers
/// count as unreachable (a transient error: the run pauses and retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the read-back may go without a message or a partition's end
/// before it gives up (a transient error: the run pauses, and the next
/// pass asks the partitions' ends again).
const READ_BACK_STALL: Duration = Duration::from_secs(60);

/// What a partition holds past the offset recorded for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unread {
    /// Nothing: it ends where the recorded offset points (or is empty).
    Nothing,
    /// Messages: read it back.
    Some,
    /// It ends before the recorded offset: it lost acknowledged messages
    /// (or the topic was made anew). What it holds is read from its
    /// beginning, so that none of it is written again.
    PastTheEnd,
}

/// What a partition whose watermarks are `low` (its first offset still
/// held) and `high` (the next offset it will give) holds past `recorded`
/// (the next offset recorded with the checkpoint; none: read it from its
/// beginning).
fn unread(recorded: Option<i64>, low: i64, high: i64) -> Unread {
    match recorded {
        Some(next) if next > high => Unread::PastTheEnd,
        // Offsets below `low` were deleted by retention: reading starts at
        // `low` (see `scan`).
        _ if high > recorded.unwrap_or(low).max(low) => Unread::Some,
        _ => Unread::Nothing,
    }
}

/// What to read back of a topic.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// Each partition to read, and the offset to start at (given, not left
    /// to `auto.offset.reset`).
    starts: BTreeMap<i32, i64>,
    /// The partitions that end before their recorded offset, with their
    /// watermarks.
    past: BTreeMap<i32, (i64, i64)>,
    /// Whether the brokers' ends were suspect.
    suspect: bool,
}

/// What to read back, from `from` (the offsets recorded) and each
/// partition's watermarks `(partition, low, high)`.
///
/// A partition that ends before its recorded offset makes every end the
/// brokers give suspect (`suspect` says the brokers already did so for
/// another topic): a broker just restarted has been seen to answer ends
/// below messages it had acknowledged, and served them all the same. Then
/// every partition is read to the end its fetches report, since skipping
/// one whose (stale) end is its recorded offset would send its last
/// messages again.
fn plan(from: &BTreeMap<i32, i64>, marks: &[(i32, i64, i64)], suspect: bool) -> Plan {
    let mut past = BTreeMap::new();
    for &(p, low, high) in marks {
        if unread(from.get(&p).copied(), low, high) == Unread::PastTheEnd {
            past.insert(p, (low, high));
        }
    }
    let suspect = suspect || !past.is_empty();
    let mut starts = BTreeMap::new();
    for &(p, low, high) in marks {
        let recorded = from.get(&p).copied();
        match unread(recorded, low, high) {
            Unread::Nothing if !suspect => {}
            Unread::Nothing | Unread::Some => {
                starts.insert(p, recorded.unwrap_or(low).max(low));
            }
            Unread::PastTheEnd => {
                if high > low || suspect {
                    starts.insert(p, low);
                }
            }
        }
    }
    Plan {
        starts,
        past,
        suspect,
    }
}

/// Reads `partitions` of `topic` from `from` (next offset per partition;
/// partitions not in it from their beginning) to the end. `client` (the
/// producer's) tells which partitions hold anything past `from`.
pub(crate) fn scan<C: ClientContext>(
    client: &Client<C>,
    partitions: &[i32],
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    from: &BTreeMap<i32, i64>,
    suspect: bool,
) -> Result<Scanned, KafkaSinkError> {
    let mut marks = Vec::with_capacity(partitions.len());
    for &p in partitions {
        // Two requests per partition, each up to the timeout.
        dynamo_cdc_core::alive::still_waiting();
        let (low, high) = client
            .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot read the topic's offsets",
                source,
            })?;
        marks.push((p, low, high));
    }
    let Plan {
        starts,
        past,
        suspect,
    } = plan(from, &marks, suspect);
    for (&p, &(_, high)) in &past {
        past_the_end(topic, p, from.get(&p).copied(), high);
    }
    let mut scanned = Scanned {
        found: HashSet::new(),
        last_values: HashSet::new(),
        next_offsets: BTreeMap::new(),
        past_the_end: past,
        suspect,
    };
    let partitions: Vec<(i32, Offset)> = starts
        .iter()
        .map(|(p, start)| (*p, Offset::Offset(*start)))
        .collect();
    if partitions.is_empty() {
        return Ok(scanned);
    }
    let client = |source| KafkaSinkError::Client {
        what: "cannot read the topic back",
        source,
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        // Producer-only settings would make the consumer refuse to start.
        if !is_producer_property(k) {
            config.set(k, v);
        }
    }
    // Set last, over `properties`: the read-back is only right with these.
    config
        // assign() needs a group id; nothing is committed to it.
        .set("group.id", "dynamo-cdc-resume")
        .set("enable.auto.commit", "false")
        // The end of each partition is how the read-back knows it is done.
        .set("enable.partition.eof", "true")
        // An offset out of range (a partition shorter than recorded, or
        // trimmed by retention meanwhile) is read from the first message
        // held, never from the end, which would find nothing.
        .set("auto.offset.reset", "earliest")
        // Every message stored counts, committed by a transaction or not:
        // a consumer reading committed ones stops at the last stable offset.
        .set("isolation.level", "read_uncommitted");
    let consumer: BaseConsumer<QuietClient> =
        config.create_with_context(QuietClient).map_err(client)?;
    let mut list = TopicPartitionList::new();
    for (p, offset) in &partitions {
        list.add_partition_offset(topic, *p, *offset)
            .map_err(client)?;
    }
    consumer.assign(&list).map_err(client)?;
    let mut open: BTreeSet<i32> = partitions.iter().map(|(p, _)| *p).collect();
    // The last message read of each key, per partition (offsets grow
    // within one): the change, when it is a change's value.
    let mut last_of_key: HashMap<(i32, Vec<u8>), Option<Change>> = HashMap::new();
    let started = Instant::now();
    let mut quiet_since = started;
    let mut heard = started;
    while !open.is_empty() {
        dynamo_cdc_core::alive::still_waiting();
        if heard.elapsed() > READ_BACK_STALL {
            return Err(KafkaSinkError::Client {
                what: "no message nor partition end while reading the topic back for 60 s",
                source: KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if quiet_since.elapsed() > Duration::from_secs(10) {
                    quiet_since = Instant::now();
                    tracing::warn!(
                        topic,
                        for_s = started.elapsed().as_secs(),
                        "still reading the topic back (broker down or slow?)"
                    );
                    // Suspect ends do not close a partition: its end of
                    // fetches does, or the stall bound ends the pass.
                    if !suspect {
                        close_past_the_end(&consumer, topic, &starts, &scanned, &mut open);
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                heard = Instant::now();
                open.remove(&p);
            }
            Some(Err(e)) if e.rdkafka_error_code().is_some_and(crate::denied) => {
                return Err(KafkaSinkError::Client {
                    what: "cannot read the topic back: the sink needs READ on its topics",
                    source: e,
                });
            }
            Some(Err(e)) => crate::client_log::client_error(&e, "reading the topic back"),
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                heard = quiet_since;
                scanned.next_offsets.insert(m.partition(), m.offset() + 1);
                // A tombstone does not count for its change: it follows
                // the change's value, which may not be in the topic (refused
                // as too large and sent to the dead-letter topic, when the
                // run stopped before that send), and taking the change for
                // delivered would skip it for good.
                let value = position_of(&m).filter(|_| m.payload().is_some());
                if let Some(change) = &value {
                    scanned.found.insert(change.clone());
                }
                let key = m.key().unwrap_or_default().to_vec();
                last_of_key.insert((m.partition(), key), value);
            }
        }
    }
    scanned.last_values = last_of_key.into_values().flatten().collect();
    Ok(scanned)
}

/// A partition read up to its end (the end may have moved back since it
/// was asked: a broker lost messages) that never reports an end of its own,
/// as some brokers do not when the start lies past the end: there is
/// nothing more to read there.
fn close_past_the_end(
    consumer: &BaseConsumer<QuietClient>,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
    scanned: &Scanned,
    open: &mut BTreeSet<i32>,
) {
    for p in open.clone() {
        // A request per partition, each up to 5 s.
        dynamo_cdc_core::alive::still_waiting();
        let next = scanned
            .next_offsets
            .get(&p)
            .or_else(|| starts.get(&p))
            .copied()
            .unwrap_or(0);
        if let Ok((_, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))
            && next >= high
        {
            if next > high {
                past_the_end(topic, p, Some(next), high);
            }
            open.remove(&p);
        }
    }
}

/// Says loudly that a partition ends before the offset recorded for it.
fn past_the_end(topic: &str, partition: i32, recorded: Option<i64>, end: i64) {
    tracing::error!(
        topic,
        partition,
        recorded,
        end,
        "the partition ends before the offset recorded with the checkpoint: the topic lost \
         acknowledged messages (broker data loss, or the topic was recreated)"
    );
}

/// The change a message of ours carries (its value or its tombstone).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_empty_partition_has_nothing_to_read() {
        assert_eq!(unread(None, 0, 0), Unread::Nothing);
        // Every message deleted by retention.
        assert_eq!(unread(None, 40, 40), Unread::Nothing);
    }

    #[test]
    fn a_partition_that_ends_at_the_recorded_offset_has_nothing_to_read() {
        assert_eq!(unread(Some(17), 0, 17), Unread::Nothing);
        assert_eq!(unread(Some(17), 17, 17), Unread::Nothing);
    }

    #[test]
    fn messages_past_the_recorded_offset_are_read() {
        assert_eq!(unread(Some(17), 0, 18), Unread::Some);
        // Nothing recorded: from the beginning.
        assert_eq!(unread(None, 0, 1), Unread::Some);
        assert_eq!(unread(None, 5, 9), Unread::Some);
        // Recorded below what retention kept: read from the first kept.
        assert_eq!(unread(Some(3), 10, 12), Unread::Some);
        assert_eq!(unread(Some(3), 10, 10), Unread::Nothing);
    }

    #[test]
    fn only_partitions_past_their_recorded_offset_are_read() {
        let from = BTreeMap::from([(0, 10), (1, 20)]);
        let marks = [(0, 0, 10), (1, 5, 25), (2, 0, 0), (3, 3, 7)];
        let want = |starts: &[(i32, i64)], suspect| Plan {
            starts: starts.iter().copied().collect(),
            past: BTreeMap::new(),
            suspect,
        };
        assert_eq!(plan(&from, &marks, false), want(&[(1, 20), (3, 3)], false));
        // Another topic's ends were suspect: these are read whole too.
        assert_eq!(
            plan(&from, &marks, true),
            want(&[(0, 10), (1, 20), (2, 0), (3, 3)], true)
        );
    }

    #[test]
    fn a_partition_past_its_end_makes_every_end_of_the_topic_suspect() {
        // Partition 1 answers the end recorded for it, partition 0 one
        // below: a broker just restarted, perhaps answering stale ends. 1
        // is read too, from its recorded offset, as are the others.
        let from = BTreeMap::from([(0, 102), (1, 68)]);
        let marks = [(0, 0, 90), (1, 0, 68), (2, 4, 4), (3, 0, 0)];
        assert_eq!(
            plan(&from, &marks, false),
            Plan {
                starts: BTreeMap::from([(0, 0), (1, 68), (2, 4), (3, 0)]),
                past: BTreeMap::from([(0, (0, 90))]),
                suspect: true,
            }
        );
    }

    #[test]
    fn a_partition_shorter_than_the_recorded_offset_lost_messages() {
        assert_eq!(unread(Some(18), 0, 17), Unread::PastTheEnd);
        assert_eq!(unread(Some(1), 0, 0), Unread::PastTheEnd);
    }
}
