//! [`KafkaSink`]: encode in `write`, send and wait for acknowledgements in
//! `poll`.
//!
//! The split matters: the pipeline makes a batch's rejected records durable
//! in the dead-letter path between `write` and `poll`, so by the time a
//! message of a later change is visible in Kafka (which would move the
//! position past the rejected one on a restart), the reject is on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_cdc_core::{
    Change, Gap, Op, Positions, Rejected, SequenceNumber, ShardKey, Sink, SinkError, SinkStats,
    TABLE_STATES,
};
use dynamo_cdc_transform::{DeclaredSchema, NumbersMode};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::encode::{Encoder, HEADER_ERROR, HEADER_SEQUENCE, HEADER_SHARD, HEADER_TABLE};
use crate::events::MessagesAcked;
use crate::producer::{HeaderValue, KafkaProducer, Landed, Outgoing, Sent, Until};
use crate::refused;
use crate::resume::scan;
use crate::{KafkaConfig, KafkaSinkError};

/// The dead-letter producer's `message.max.bytes`: a dead-letter message
/// carries a whole change (both images, as DynamoDB-JSON), often a message
/// refused for its size elsewhere. The dead-letter topic, when the sink
/// creates it, is made to accept as much.
const DEAD_LETTER_MAX_BYTES: usize = 16 << 20;

/// Counts kept by the sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KafkaStats {
    /// Messages acknowledged (tombstones included).
    pub messages: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Changes dropped because the topic already held them.
    pub already_held: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Gap records sent to the dead-letter topic.
    pub gaps: u64,
}

/// The Kafka sink.
pub struct KafkaSink {
    config: KafkaConfig,
    encoder: Encoder,
    producer: KafkaProducer<Group>,
    durable: Positions,
    /// What the topics hold for sure: the checkpoint's positions.
    held: Positions,
    /// Changes found by reading each topic back (before the first write to
    /// it) past the checkpoint's offsets.
    found: HashSet<(ShardKey, SequenceNumber)>,
    /// Changes whose value the read-back found last of its key: followed
    /// neither by its tombstone nor by a later change of the item.
    found_last: HashSet<(ShardKey, SequenceNumber)>,
    scanned: HashSet<String>,
    /// Next offset per topic and partition recorded with the checkpoint.
    recorded: BTreeMap<String, BTreeMap<i32, i64>>,
    /// The tables whose topics' offsets the resume state records, each
    /// with its own table (see [`KafkaSink::resume_state`]): those the
    /// checkpoint had and those written since.
    tables: BTreeSet<String>,
    /// The brokers answered an end below a recorded offset in this sink's
    /// life: every later read-back reads all partitions (see `resume`).
    ends_suspect: bool,
    /// Encoded, not yet sent.
    outgoing: Vec<Outgoing>,
    /// Bytes of `outgoing` (keys, values, headers).
    outgoing_bytes: usize,
    /// Dead-letter messages not yet sent.
    dead_outgoing: Vec<Outgoing>,
    /// A producer for the dead-letter topic that takes messages up to
    /// 16 MiB (a change too large for the data topic still fits), made
    /// on first use.
    dead_producer: Option<KafkaProducer>,
    /// Changes of the encoded batch, in order, for the position.
    pending_changes: Vec<(ShardKey, SequenceNumber)>,
    /// The tables of those of `pending_changes` that will not reach their
    /// topic (see [`Group`]'s `undelivered`).
    pending_undelivered: Vec<Arc<str>>,
    /// Changes of the batch the read-back found in the topic: nothing to
    /// send, but they move the position with the group they arrived in.
    pending_found: Vec<(ShardKey, SequenceNumber)>,
    /// When the oldest message not yet sent was encoded.
    held_since: Option<Instant>,
    /// The producer's `message.max.bytes`: larger messages are refused
    /// before anything of their batch is sent.
    max_message_bytes: usize,
    /// Under leases: asked before every hand-over, by both producers.
    guard: Option<dynamo_cdc_core::WriteGuard>,
    /// The run's stop flag, watched by both producers' waits.
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    stats: KafkaStats,
}

impl KafkaSink {
    /// Connects the producer. Topics are read back lazily, before the first
    /// write to each.
    ///
    /// # Errors
    /// When the producer cannot be created (a bad property).
    pub fn open(
        config: KafkaConfig,
        mode: NumbersMode,
        declared: HashMap<String, DeclaredSchema>,
    ) -> Result<Self, KafkaSinkError> {
        let producer = KafkaProducer::new(&config.brokers, &config.properties)?;
        let encoder = Encoder::new(
            &config.topic,
            config.format,
            config.envelope,
            config.tombstones,
            config.registry.as_ref(),
            mode,
            declared,
        );
        let max_message_bytes = config
            .properties
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1_000_000);
        Ok(KafkaSink {
            max_message_bytes,
            config,
            encoder,
            producer,
            durable: Positions::new(),
            held: Positions::new(),
            found: HashSet::new(),
            found_last: HashSet::new(),
            scanned: HashSet::new(),
            recorded: BTreeMap::new(),
            tables: BTreeSet::new(),
            ends_suspect: false,
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            dead_outgoing: Vec::new(),
            dead_producer: None,
            pending_changes: Vec::new(),
            pending_undelivered: Vec::new(),
            pending_found: Vec::new(),
            held_since: None,
            guard: None,
            stop: None,
            stats: KafkaStats::default(),
        })
    }

    /// Takes the positions and offsets recorded with the last checkpoint.
    pub fn adopt_checkpoint(
        &mut self,
        positions: &Positions,
        offsets: BTreeMap<String, BTreeMap<i32, i64>>,
    ) {
        self.durable.merge_max(positions);
        self.held.merge_max(positions);
        for (topic, partitions) in &offsets {
            for (p, o) in partitions {
                let next = self
                    .producer
                    .next_offsets
                    .entry((topic.clone(), *p))
                    .or_insert(0);
                *next = (*next).max(*o);
            }
        }
        self.recorded = offsets;
    }

    /// Where the next start reads each topic back from, recorded with the
    /// positions: past everything acknowledged, except in a topic that holds
    /// changes this run read back which the positions do not cover yet
    /// (the source has not brought them again). Those must stay findable,
    /// so that topic keeps the offsets its read-back started from; reading
    /// more than needed is harmless, reading too little sends them twice.
    ///
    /// Under leases, only the tables this process holds pin their topic: a
    /// table another process writes into a shared topic is never covered
    /// here, and would pin the topic for good; its owner records its own
    /// offsets, and the lowest of the tables' is read from after a
    /// hand-over (see [`offsets_of_tables`]).
    pub fn offsets(&self) -> BTreeMap<String, BTreeMap<i32, i64>> {
        let held = &self.encoder.lease_epochs;
        let tables: HashSet<&str> = self
            .found
            .iter()
            .filter(|(key, seq)| {
                (held.is_empty() || held.contains_key(&*key.table))
                    && !self.durable.covers(key, seq)
            })
            .map(|(key, _)| &*key.table)
            .collect();
        let pinned: HashSet<String> = tables.into_iter().map(|t| self.encoder.topic(t)).collect();
        let mut out = self.recorded.clone();
        for ((topic, p), o) in &self.producer.next_offsets {
            if pinned.contains(topic) {
                continue;
            }
            let slot = out.entry(topic.clone()).or_default().entry(*p).or_insert(0);
            *slot = (*slot).max(*o);
        }
        out
    }

    /// Reads `topic` back, once, before the first write to it.
    fn read_back(&mut self, topic: &str) -> Result<(), KafkaSinkError> {
        if !self.scanned.insert(topic.to_owned()) {
            return Ok(());
        }
        let known = self.recorded.contains_key(topic);
        let partitions = match crate::topics::ensure(
            &self.config,
            self.producer.client(),
            topic,
            known,
            self.max_message_bytes,
        ) {
            Ok(partitions) => partitions,
            Err(e) => {
                // Asked again on the next write (after the pause it causes).
                self.scanned.remove(topic);
                return Err(e);
            }
        };
        let from = self.recorded.get(topic).cloned().unwrap_or_default();
        let found = scan(
            self.producer.client(),
            &partitions,
            &self.config.brokers,
            &self.config.properties,
            topic,
            &from,
            self.ends_suspect,
        )
        .inspect_err(|_| {
            self.scanned.remove(topic);
        })?;
        self.ends_suspect |= found.suspect;
        tracing::info!(
            topic,
            changes = found.found.len(),
            "read the topic back from the checkpoint's offsets"
        );
        self.found.extend(found.found);
        self.found_last.extend(found.last_values);
        // A partition that ended before its recorded offset was read from
        // its first offset: that is where the next start reads from until
        // the positions cover what was found, and the producer's next offset
        // starts again from its end (the old, larger one would be recorded
        // forever, and once the partition grew past it a start would read
        // back too little).
        for (p, (low, high)) in found.past_the_end {
            self.recorded
                .entry(topic.to_owned())
                .or_default()
                .insert(p, low);
            self.producer
                .next_offsets
                .insert((topic.to_owned(), p), high);
        }
        for (p, o) in found.next_offsets {
            let next = self
                .producer
                .next_offsets
                .entry((topic.to_owned(), p))
                .or_insert(0);
            *next = (*next).max(o);
        }
        Ok(())
    }

    /// Sends what is held as one group, without waiting for its answers
    /// unless too much is in flight already.
    fn send_pending(&mut self) -> Result<(), KafkaSinkError> {
        if self.outgoing.is_empty()
            && self.pending_changes.is_empty()
            && self.pending_found.is_empty()
        {
            return Ok(());
        }
        self.held_since = None;
        let bytes = std::mem::take(&mut self.outgoing_bytes);
        let landed = self.producer.landed(Until::Room { bytes })?;
        self.land(landed)?;
        let group = Group {
            changes: std::mem::take(&mut self.pending_changes),
            found: std::mem::take(&mut self.pending_found),
            dead: std::mem::take(&mut self.dead_outgoing),
            gap: false,
            undelivered: std::mem::take(&mut self.pending_undelivered),
        };
        self.producer
            .submit(std::mem::take(&mut self.outgoing), group)
    }

    /// Takes in the groups that landed, in order: their dead letters are
    /// sent (and acknowledged), then their changes count as durable.
    fn land(&mut self, landed: Vec<Landed<Group>>) -> Result<(), KafkaSinkError> {
        let mut landed: VecDeque<Landed<Group>> = landed.into();
        while let Some(mut group) = landed.pop_front() {
            if group.results.iter().any(|r| matches!(r, Sent::Collateral)) {
                // What was sent after the group lands first (held back here,
                // in order), so that what can no longer be sent in order is
                // known.
                landed.extend(self.producer.landed(Until::Empty)?);
                // A message that failed otherwise ends the pass with its own
                // error (which decides whether the run waits or stops); the
                // next pass sends what was not found stored again, these
                // with it, rather than some alone now.
                let results =
                    || (group.results.iter()).chain(landed.iter().flat_map(|l| &l.results));
                let failed = results().find_map(|r| match r {
                    Sent::Failed(source) => Some(source.clone()),
                    _ => None,
                });
                if let Some(source) = failed {
                    return Err(self.producer.failure("a message was not delivered", source));
                }
                let unconfirmed = results().filter(|r| matches!(r, Sent::Unconfirmed)).count();
                if unconfirmed > 0 {
                    return Err(KafkaSinkError::Unconfirmed {
                        messages: unconfirmed,
                    });
                }
                self.send_collateral_again(&mut group, &landed)?;
            }
            let mut acked = MessagesAcked::default();
            let Group {
                changes,
                found,
                mut dead,
                gap,
                mut undelivered,
            } = group.tag;
            let unconfirmed = (group.results.iter())
                .filter(|r| matches!(r, Sent::Unconfirmed))
                .count();
            for (message, sent) in group.messages.into_iter().zip(group.results) {
                match sent {
                    Sent::Stored { .. } if gap => self.stats.gaps += 1,
                    Sent::Stored { .. } => {
                        self.stats.messages += 1;
                        acked.messages += 1;
                        if message.value.is_none() {
                            self.stats.tombstones += 1;
                        }
                    }
                    Sent::Refused(reason) if !gap => {
                        if message.value.is_some() {
                            undelivered.push(table_of(&message));
                        }
                        dead.push(self.dead_letter(message, &reason)?);
                    }
                    Sent::Refused(reason) => {
                        return Err(KafkaSinkError::Topic {
                            topic: message.topic.to_string(),
                            message: format!("a gap record was refused: {reason}"),
                        });
                    }
                    // Sent again alone and refused again for its batch:
                    // the pass starts over.
                    Sent::Collateral => {
                        return Err(KafkaSinkError::Client {
                            what: "a message was not stored, as another record of its batch was \
                                   refused",
                            source: KafkaError::MessageProduction(
                                RDKafkaErrorCode::InvalidDifferentRecord,
                            ),
                        });
                    }
                    Sent::Unconfirmed => {
                        return Err(KafkaSinkError::Unconfirmed {
                            messages: unconfirmed,
                        });
                    }
                    Sent::Failed(source) => {
                        let what = if gap {
                            "a gap record was not delivered"
                        } else {
                            "a message was not delivered"
                        };
                        return Err(self.producer.failure(what, source));
                    }
                }
            }
            self.send_dead_letters(dead)?;
            for (key, seq) in changes {
                acked.count_change(&key.table);
                self.durable.advance(key, seq);
            }
            for table in undelivered {
                acked.uncount_change(&table);
            }
            // Delivered by an earlier run: durable, not delivered again.
            for (key, seq) in found {
                self.durable.advance(key, seq);
            }
            acked.emit();
        }
        Ok(())
    }

    /// Sends again, and waits for, the messages of `group` that were not
    /// stored only because another record of their batch was refused;
    /// their new results replace the old. Everything sent after the group
    /// has landed (`later`): a message a later one with its key overtook is
    /// dead-lettered instead (see [`crate::refused`]).
    fn send_collateral_again(
        &mut self,
        group: &mut Landed<Group>,
        later: &VecDeque<Landed<Group>>,
    ) -> Result<(), KafkaSinkError> {
        let decided = refused::decide(
            &group.messages,
            &group.results,
            later.iter().flat_map(|l| l.messages.iter().zip(&l.results)),
        );
        let mut again = Vec::new();
        let mut at = Vec::new();
        for (i, decision) in decided {
            match decision {
                refused::Collateral::Again => {
                    again.push(group.messages[i].clone());
                    at.push(i);
                }
                refused::Collateral::Kept(why) => group.results[i] = Sent::Refused(why),
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            messages = again.len(),
            "the broker refused a record, and with it its batch: sending the others again"
        );
        let tag = Group {
            gap: group.tag.gap,
            ..Group::default()
        };
        // Nothing else is in flight: the one group that lands is this one.
        for landed in self.producer.send_all(again, tag)? {
            for (i, sent) in at.iter().zip(landed.results) {
                group.results[*i] = sent;
            }
        }
        Ok(())
    }

    /// Sends dead-letter messages and waits for them.
    fn send_dead_letters(&mut self, dead: Vec<Outgoing>) -> Result<(), KafkaSinkError> {
        if dead.is_empty() {
            return Ok(());
        }
        if self.dead_producer.is_none() {
            let mut properties = self.config.properties.clone();
            properties.push((
                "message.max.bytes".into(),
                DEAD_LETTER_MAX_BYTES.to_string(),
            ));
            let mut producer = KafkaProducer::new(&self.config.brokers, &properties)?;
            producer.guard(self.guard.clone());
            if let Some(stop) = &self.stop {
                producer.stop_flag(stop.clone());
            }
            self.dead_producer = Some(producer);
        }
        let Some(producer) = self.dead_producer.as_mut() else {
            unreachable!("made above")
        };
        for landed in producer.send_all(dead, ())? {
            for (message, sent) in landed.messages.iter().zip(landed.results) {
                match sent {
                    Sent::Stored { .. } => {
                        self.stats.dead_lettered += 1;
                        crate::events::DeadLetterSent {
                            table: &table_of(message),
                        }
                        .emit();
                    }
                    Sent::Refused(reason) => {
                        return Err(KafkaSinkError::Topic {
                            topic: self.config.dead_letter_topic.clone().unwrap_or_default(),
                            message: format!(
                                "the dead-letter topic refused a message too: {reason} (a \
                                 dead-letter message carries a whole change, up to \
                                 {DEAD_LETTER_MAX_BYTES} bytes: the topic's max.message.bytes \
                                 must allow that, as it does on a topic the sink creates)"
                            ),
                        });
                    }
                    Sent::Failed(source) => {
                        return Err(
                            producer.failure("a dead-letter message was not delivered", source)
                        );
                    }
                    // Sent again by the next pass, which meets the change
                    // again: a dead letter kept twice rather than lost.
                    Sent::Unconfirmed => {
                        return Err(KafkaSinkError::Unconfirmed { messages: 1 });
                    }
                    Sent::Collateral => {
                        return Err(KafkaSinkError::Client {
                            what: "a dead-letter message was not stored, as another record of \
                                   its batch was refused",
                            source: KafkaError::MessageProduction(
                                RDKafkaErrorCode::InvalidDifferentRecord,
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The dead-letter message for an undeliverable one, or the error that
    /// stops the run when there is no dead-letter topic.
    fn dead_letter(&self, message: Outgoing, reason: &str) -> Result<Outgoing, KafkaSinkError> {
        let header = |name: &str| {
            message
                .headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let Some(topic) = &self.config.dead_letter_topic else {
            return Err(KafkaSinkError::Undeliverable {
                table: header(HEADER_TABLE),
                shard: header(HEADER_SHARD),
                sequence_number: header(HEADER_SEQUENCE),
                topic: message.topic.to_string(),
                reason: reason.to_owned(),
            });
        };
        tracing::warn!(
            topic = %message.topic,
            table = %header(HEADER_TABLE),
            sequence_number = %header(HEADER_SEQUENCE),
            reason,
            "message sent to the dead-letter topic"
        );
        let mut headers = message.headers;
        headers.push((HEADER_ERROR, reason.as_bytes().to_vec().into()));
        headers.push((
            "dynamo-cdc.topic",
            HeaderValue::Shared(message.topic.clone()),
        ));
        Ok(Outgoing {
            topic: topic.as_str().into(),
            key: message.key,
            value: message.value,
            headers,
        })
    }
}

impl KafkaSink {
    fn write_changes(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, KafkaSinkError> {
        // A batch holds a table or a few: their topics, each once.
        let mut tables: Vec<&str> = Vec::new();
        for change in changes {
            if !tables.contains(&&*change.source.table) {
                tables.push(&change.source.table);
            }
        }
        for table in tables {
            let topic = self.encoder.topic(table);
            self.read_back(&topic)?;
            if !self.tables.contains(table) {
                self.tables.insert(table.to_owned());
            }
        }
        let mut rejected = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            let key = ShardKey {
                table: change.source.table.clone(),
                shard: change.source.shard_id.clone(),
            };
            if self.held.covers(&key, &change.source.sequence_number) {
                self.stats.already_held += 1;
                continue;
            }
            if !self.found.is_empty()
                && self
                    .found
                    .contains(&(key.clone(), change.source.sequence_number.clone()))
            {
                // In the topic already. Its position still moves, with the
                // changes before it: otherwise a shard whose last changes
                // were found (it closed, or went quiet) would keep its old
                // position for good, and its topic's offsets would stay
                // pinned for the read-back.
                self.stats.already_held += 1;
                self.tombstone_if_missing(change)?;
                self.pending_found
                    .push((key, change.source.sequence_number.clone()));
                continue;
            }
            let mut delivered = true;
            match self.encoder.encode(change)? {
                Ok(messages) => {
                    for message in messages {
                        // Refused here, before anything of the batch is sent:
                        // a later change of the shard never becomes visible
                        // ahead of one that could not be delivered.
                        let size = message.size();
                        if size > self.max_message_bytes {
                            let reason = format!(
                                "{size} bytes exceed message.max.bytes ({})",
                                self.max_message_bytes
                            );
                            if message.value.is_some() {
                                delivered = false;
                            }
                            let dead = self.dead_letter(message, &reason).inspect_err(|_| {
                                self.outgoing.clear();
                                self.outgoing_bytes = 0;
                                self.pending_changes.clear();
                                self.pending_found.clear();
                                self.pending_undelivered.clear();
                            })?;
                            self.dead_outgoing.push(dead);
                        } else {
                            self.outgoing_bytes += size;
                            self.outgoing.push(message);
                        }
                    }
                }
                Err(e) => {
                    delivered = false;
                    rejected.push(Rejected {
                        index,
                        error: e.reason,
                    });
                    // A delete that cannot be written still ends its key's
                    // life in a compacted topic.
                    if let Some(tombstone) = e.tombstone {
                        self.outgoing_bytes += tombstone.size();
                        self.outgoing.push(tombstone);
                    }
                }
            }
            if !delivered {
                self.pending_undelivered.push(key.table.clone());
            }
            self.pending_changes
                .push((key, change.source.sequence_number.clone()));
        }
        if self.held_since.is_none()
            && !(self.pending_changes.is_empty() && self.pending_found.is_empty())
        {
            self.held_since = Some(Instant::now());
        }
        Ok(rejected)
    }

    /// Sends a delete's tombstone alone when the read-back found its value
    /// but not the tombstone (the run stopped between the two): compaction
    /// keeps the deleted item's last value for good otherwise. Not when a
    /// later message with its key follows the value (a later change of the
    /// item landed): a tombstone after it would delete the item. The group
    /// that carries it moves the change's position when it lands.
    fn tombstone_if_missing(&mut self, change: &Change) -> Result<(), KafkaSinkError> {
        if !self.config.tombstones || change.op != Op::Remove {
            return Ok(());
        }
        let id = (
            ShardKey {
                table: change.source.table.clone(),
                shard: change.source.shard_id.clone(),
            },
            change.source.sequence_number.clone(),
        );
        if !self.found_last.contains(&id) {
            return Ok(());
        }
        // Encoded as a whole, as the first run did (which wrote its value),
        // for the key and headers its tombstone had.
        match self.encoder.encode(change)? {
            Ok(messages) => {
                for tombstone in messages.into_iter().filter(|m| m.value.is_none()) {
                    self.outgoing_bytes += tombstone.size();
                    self.outgoing.push(tombstone);
                }
            }
            // Its value cannot be written again (a schema that changed
            // since, a declaration): the tombstone, which does not depend on
            // it, is sent all the same.
            Err(e) => match e.tombstone {
                Some(tombstone) => {
                    self.outgoing_bytes += tombstone.size();
                    self.outgoing.push(tombstone);
                }
                None => tracing::warn!(
                    table = %change.source.table,
                    sequence_number = %change.source.sequence_number,
                    error = %e.reason,
                    "a delete found in the topic without its tombstone cannot be encoded again; \
                     its tombstone is not sent, and a compacted topic keeps the item"
                ),
            },
        }
        Ok(())
    }

    fn send_gap(&mut self, gap: &Gap) -> Result<(), KafkaSinkError> {
        let Some(topic) = self.config.dead_letter_topic.clone() else {
            tracing::error!(
                table = %gap.table,
                shard = %gap.shard,
                after = gap.after.as_deref().unwrap_or("the start"),
                "gap not recorded in Kafka: no dead_letter_topic is configured"
            );
            return Ok(());
        };
        let value = serde_json::to_vec(gap).unwrap_or_default();
        let message = Outgoing {
            topic: topic.into(),
            key: gap.identity().into_bytes(),
            value: Some(value),
            headers: vec![
                ("dynamo-cdc.kind", b"gap".to_vec().into()),
                (HEADER_TABLE, gap.table.as_bytes().to_vec().into()),
                (HEADER_SHARD, gap.shard.as_bytes().to_vec().into()),
            ],
        };
        // Recorded before any change after it is written: this waits for
        // it, and for the groups sent before it.
        let group = Group {
            gap: true,
            ..Group::default()
        };
        let landed = self.producer.send_all(vec![message], group)?;
        self.land(landed)
    }

    fn send_due(&mut self) -> Result<(), KafkaSinkError> {
        let held = Held {
            messages: self.outgoing.len(),
            bytes: self.outgoing_bytes,
            age: self.held_since.map(|since| since.elapsed()),
        };
        if held.due(self.config.send_batch_messages) {
            self.send_pending()?;
        }
        let landed = self.producer.landed(Until::Now)?;
        self.land(landed)
    }

    fn send_all_pending(&mut self) -> Result<(), KafkaSinkError> {
        self.send_pending()?;
        let landed = self.producer.landed(Until::Empty)?;
        self.land(landed)?;
        self.producer.flush()
    }
}

/// What the sink gets back when a group of messages lands.
#[derive(Default)]
struct Group {
    /// The changes the group holds, in order: durable once it lands.
    changes: Vec<(ShardKey, SequenceNumber)>,
    /// Changes of the same batches found in the topic already: durable
    /// once the group lands too (it holds the changes before them).
    found: Vec<(ShardKey, SequenceNumber)>,
    /// Messages refused before sending (too large), for the dead-letter
    /// topic, sent before the changes count as durable.
    dead: Vec<Outgoing>,
    /// The group is a gap record for the dead-letter topic.
    gap: bool,
    /// The table of each change of `changes` that did not reach its topic
    /// (refused by the encoder, or its value dead-lettered as too large):
    /// its position moves when the group lands, but it was not delivered.
    undelivered: Vec<Arc<str>>,
}

/// What the sink holds encoded and not yet sent.
#[derive(Clone, Copy, Debug)]
struct Held {
    messages: usize,
    bytes: usize,
    /// How long the oldest has waited (`None`: nothing is held).
    age: Option<Duration>,
}

impl Held {
    /// Whether it goes out now: enough messages, enough bytes (a thousand
    /// items near 400 KB would be hundreds of megabytes), or the oldest has
    /// waited long enough. Sending nothing held is harmless.
    fn due(self, batch_messages: usize) -> bool {
        let few = self.messages < batch_messages && self.bytes < crate::SEND_BATCH_BYTES;
        let young = self.age.is_some_and(|age| age < crate::SEND_AFTER);
        !(few && young)
    }
}

/// The table a message was made for (its `dynamodb.table` header).
fn table_of(message: &Outgoing) -> Arc<str> {
    match message.headers.iter().find(|(k, _)| *k == HEADER_TABLE) {
        Some((_, HeaderValue::Shared(table))) => table.clone(),
        Some((_, other)) => String::from_utf8_lossy(other.as_bytes()).into(),
        None => Arc::from(""),
    }
}

/// The offsets to read each topic back from, given each table's part of
/// the resume state (`{"offsets": {its topic: {partition: offset}}}`, or
/// `null` when none was recorded for it) and the topic a table writes.
/// Under leases the parts come from different owners, recorded at
/// different times. A topic's offsets are the lowest over the tables
/// writing it, and a topic any of them has none for (or a partition not
/// all have) is left out, to be read from its beginning: a table that
/// shares a topic and whose owner recorded nothing may have messages
/// anywhere in it. Tables of other topics do not matter to it.
pub(crate) fn offsets_of_tables(
    parts: &serde_json::Map<String, serde_json::Value>,
    topic_of: impl Fn(&str) -> String,
) -> BTreeMap<String, BTreeMap<i32, i64>> {
    let mut by_topic: BTreeMap<String, Option<BTreeMap<i32, i64>>> = BTreeMap::new();
    for (table, part) in parts {
        let topic = topic_of(table);
        let offsets: Option<BTreeMap<i32, i64>> = part
            .get("offsets")
            .and_then(|o| o.get(&topic))
            .and_then(|o| serde_json::from_value(o.clone()).ok());
        let merged = match (by_topic.remove(&topic), offsets) {
            // First of its topic.
            (None, offsets) => offsets,
            (Some(Some(a)), Some(b)) => Some(
                a.into_iter()
                    .filter_map(|(p, o)| b.get(&p).map(|other| (p, o.min(*other))))
                    .collect(),
            ),
            _ => None,
        };
        by_topic.insert(topic, merged);
    }
    by_topic
        .into_iter()
        .filter_map(|(topic, offsets)| offsets.map(|o| (topic, o)))
        .collect()
}

impl Sink for KafkaSink {
    fn id(&self) -> &str {
        "kafka"
    }

    fn reads_nested_trees(&self) -> bool {
        self.encoder.reads_nested_trees()
    }

    /// The state is `{"offsets": {topic: {partition: next offset}},
    /// "tables": {table: {"offsets": {its topic: ...}}}}`. The parts by
    /// table are what counts (under leases, each comes from its own
    /// table's owner: see [`offsets_of_tables`]); states of earlier
    /// versions have only `offsets`. A state that does not read as such is
    /// ignored, which only makes the read-back start earlier (from the
    /// beginning of each partition).
    fn adopt(&mut self, positions: &Positions, state: &serde_json::Value) {
        let unreadable = |e: &dyn std::fmt::Display| {
            tracing::warn!(
                error = %e,
                "the checkpoint's Kafka offsets are unreadable; topics are read back from their beginning"
            );
        };
        let offsets = if let Some(parts) = state.get(TABLE_STATES) {
            match parts.as_object() {
                Some(parts) => {
                    self.tables.extend(parts.keys().cloned());
                    offsets_of_tables(parts, |t| self.encoder.topic(t))
                }
                None => {
                    unreadable(&"`tables` is not an object");
                    BTreeMap::new()
                }
            }
        } else {
            match state.get("offsets") {
                None => BTreeMap::new(),
                Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|e| {
                    unreadable(&e);
                    BTreeMap::new()
                }),
            }
        };
        self.adopt_checkpoint(positions, offsets);
    }

    /// Makes sure the tables' topics (and the dead-letter topic) exist, and
    /// reads them back, before anything is read from the source.
    fn prepare(&mut self, tables: &[String]) -> Result<(), SinkError> {
        if let Some(dead) = self.config.dead_letter_topic.clone() {
            crate::topics::ensure(
                &self.config,
                self.producer.client(),
                &dead,
                false,
                DEAD_LETTER_MAX_BYTES,
            )?;
        }
        for table in tables {
            let topic = self.encoder.topic(table);
            self.read_back(&topic)?;
            self.tables.insert(table.clone());
        }
        Ok(())
    }

    fn durable_positions(&self) -> &Positions {
        &self.durable
    }

    fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkError> {
        Ok(self.write_changes(changes)?)
    }

    fn record_gap(&mut self, gap: &Gap) -> Result<(), SinkError> {
        Ok(self.send_gap(gap)?)
    }

    fn poll(&mut self) -> Result<(), SinkError> {
        Ok(self.send_due()?)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.send_all_pending()?)
    }

    /// The offsets to read back from, and the same by table: each table
    /// with its topic's (a table's topic without offsets yet is left out,
    /// which reads it back from its beginning).
    fn resume_state(&self) -> serde_json::Value {
        let offsets = self.offsets();
        let mut parts = serde_json::Map::new();
        for table in &self.tables {
            let topic = self.encoder.topic(table);
            if let Some(of_topic) = offsets.get(&topic) {
                parts.insert(
                    table.clone(),
                    serde_json::json!({ "offsets": { topic: of_topic } }),
                );
            }
        }
        serde_json::json!({ "offsets": offsets, TABLE_STATES: parts })
    }

    fn lease_epochs(&mut self, epochs: &std::collections::BTreeMap<String, u64>) {
        self.encoder.lease_epochs.clone_from(epochs);
    }

    fn stop_flag(&mut self, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.producer.stop_flag(stop.clone());
        if let Some(dead) = self.dead_producer.as_mut() {
            dead.stop_flag(stop.clone());
        }
        self.stop = Some(stop.clone());
    }

    fn write_guard(&mut self, guard: dynamo_cdc_core::WriteGuard) {
        self.producer.guard(Some(guard.clone()));
        if let Some(dead) = self.dead_producer.as_mut() {
            dead.guard(Some(guard.clone()));
        }
        self.guard = Some(guard);
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            delivered: self.stats.messages,
            tombstones: self.stats.tombstones,
            dead_lettered: self.stats.dead_lettered,
            already_held: self.stats.already_held,
            ..SinkStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::ErrorKind;

    use rdkafka::mocking::MockCluster;

    use super::*;

    /// Each table's part counts for its own topic: recorded by different
    /// owners, all are kept; a topic shared by tables takes the lowest, and
    /// none when a table writing it has no part (its messages may be
    /// anywhere in the topic).
    #[test]
    fn read_back_offsets_come_from_each_tables_own_part() {
        let parts = |v: serde_json::Value| v.as_object().unwrap().clone();
        let topic_of = |t: &str| match t {
            "a1" | "a2" => "shared".to_owned(),
            t => format!("cdc.{t}"),
        };
        let got = offsets_of_tables(
            &parts(serde_json::json!({
                "orders": {"offsets": {"cdc.orders": {"0": 500, "1": 7}, "cdc.gone": {"0": 1}}},
                "items": {"offsets": {"cdc.items": {"0": 700}}},
                "a1": {"offsets": {"shared": {"0": 40, "1": 9}}},
                "a2": {"offsets": {"shared": {"0": 30}}},
                "new": null,
            })),
            topic_of,
        );
        let expected: BTreeMap<String, BTreeMap<i32, i64>> = [
            ("cdc.orders".to_owned(), BTreeMap::from([(0, 500), (1, 7)])),
            ("cdc.items".to_owned(), BTreeMap::from([(0, 700)])),
            ("shared".to_owned(), BTreeMap::from([(0, 30)])),
        ]
        .into();
        assert_eq!(got, expected, "`new`'s topic is read from its start");
        // A table sharing a topic without a part: the topic is left out,
        // whichever comes first.
        for (first, second) in [("a1", "a2"), ("a2", "a1")] {
            let got = offsets_of_tables(
                &parts(serde_json::json!({
                    first: {"offsets": {"shared": {"0": 40}}},
                    second: null,
                })),
                topic_of,
            );
            assert!(got.is_empty(), "{got:?}");
        }
    }

    /// Keys and error headers of what a topic's one partition holds.
    fn stored(brokers: &str, topic: &str) -> Vec<(String, Option<String>)> {
        crate::producer::tests::read_back(brokers, topic)
            .into_iter()
            .map(|(key, _, headers)| {
                let error = headers
                    .into_iter()
                    .find(|(k, _)| k == HEADER_ERROR)
                    .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
                (String::from_utf8_lossy(&key).into_owned(), error)
            })
            .collect()
    }

    /// A sink writing to topic `t`, with dead letters on `dead`.
    fn on_topic_t(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    ) -> (KafkaSink, String) {
        cluster.create_topic("t", 1, 1).unwrap();
        cluster.create_topic("dead", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let config = KafkaConfig {
            brokers: brokers.clone(),
            topic: "t".into(),
            format: crate::Format::Json,
            envelope: crate::Envelope::Debezium,
            tombstones: true,
            registry: None,
            dead_letter_topic: Some("dead".into()),
            properties: Vec::new(),
            send_batch_messages: 1,
            create_topics: false,
            topic_partitions: 1,
            topic_replication_factor: -1,
        };
        let sink = KafkaSink::open(config, NumbersMode::Auto, HashMap::new()).unwrap();
        (sink, brokers)
    }

    /// A topic shared by tables (the template `t` has no `{table}`): a
    /// change read back that this sink's positions do not cover keeps the
    /// topic's offsets where its read-back started, unless, under leases,
    /// its table is another process's, which records its own.
    #[test]
    fn only_the_tables_held_pin_a_shared_topics_offsets() {
        let cluster = MockCluster::new(1).unwrap();
        let (mut sink, _) = on_topic_t(&cluster);
        sink.recorded.insert("t".into(), BTreeMap::from([(0, 10)]));
        sink.producer.next_offsets.insert(("t".into(), 0), 50);
        let theirs = (
            ShardKey::new("other", "s1"),
            SequenceNumber::parse("7").unwrap(),
        );
        sink.found.insert(theirs);
        // Alone, every table of the topic is this process's: pinned.
        assert_eq!(sink.offsets()["t"][&0], 10);
        // Under leases, holding `orders` only: `other`'s change is its
        // owner's to find again.
        sink.encoder.lease_epochs = BTreeMap::from([("orders".into(), 3)]);
        assert_eq!(sink.offsets()["t"][&0], 50);
        sink.encoder.lease_epochs = BTreeMap::from([("other".into(), 3)]);
        assert_eq!(sink.offsets()["t"][&0], 10);
    }

    fn message(key: &str) -> Outgoing {
        Outgoing {
            topic: "t".into(),
            key: key.as_bytes().to_vec(),
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
        }
    }

    /// When another message failed otherwise, the batch-mates of a refused
    /// record are not sent alone, and the pass ends with that message's
    /// error: it decides whether the run waits or stops.
    #[test]
    fn batch_mates_wait_for_the_pass_when_another_message_failed() {
        let cluster = MockCluster::new(1).unwrap();
        let (mut sink, brokers) = on_topic_t(&cluster);
        for (code, kind) in [
            (RDKafkaErrorCode::NotEnoughReplicas, ErrorKind::Transient),
            (RDKafkaErrorCode::TopicAuthorizationFailed, ErrorKind::Fatal),
        ] {
            let group = Landed {
                messages: vec![message("bad"), message("b")],
                results: vec![Sent::Refused("INVALID_RECORD".into()), Sent::Collateral],
                tag: Group::default(),
            };
            let later = Landed {
                messages: vec![message("c")],
                results: vec![Sent::Failed(KafkaError::MessageProduction(code))],
                tag: Group::default(),
            };
            let e = SinkError::from(sink.land(vec![group, later]).unwrap_err());
            assert_eq!(e.kind(), kind, "{code:?}: {e}");
        }
        assert!(stored(&brokers, "t").is_empty(), "nothing sent alone");
    }

    /// A message acknowledged only by a later request's success (see
    /// `Sent::Unconfirmed`) is not taken for delivered: the pass ends with a
    /// transient error, its group's changes stay where they were, and the
    /// next pass's read-back decides whether to send it again. In a group
    /// with a refused record's batch-mates too, before any is sent alone.
    #[test]
    fn a_message_acknowledged_without_an_offset_ends_the_pass() {
        let cluster = MockCluster::new(1).unwrap();
        let (mut sink, brokers) = on_topic_t(&cluster);
        let shard = ShardKey::new("orders", "shard-1");
        let seq = SequenceNumber::parse("1004").unwrap();
        let group = |results: Vec<Sent>| Landed {
            messages: (0..results.len())
                .map(|i| message(&i.to_string()))
                .collect(),
            results,
            tag: Group {
                changes: vec![(shard.clone(), seq.clone())],
                ..Group::default()
            },
        };
        let at_zero = || Sent::Stored {
            partition: 0,
            offset: 0,
        };
        for results in [
            vec![at_zero(), Sent::Unconfirmed, at_zero()],
            vec![
                Sent::Refused("INVALID_RECORD".into()),
                Sent::Collateral,
                Sent::Unconfirmed,
            ],
        ] {
            let e = sink.land(vec![group(results)]).unwrap_err();
            assert!(
                matches!(e, KafkaSinkError::Unconfirmed { messages: 1 }),
                "{e}"
            );
            assert_eq!(SinkError::from(e).kind(), ErrorKind::Transient);
            assert!(!sink.durable.covers(&shard, &seq));
        }
        assert!(stored(&brokers, "t").is_empty(), "nothing sent alone");
    }

    /// Batch-mates of a refused record are sent again, after everything sent
    /// after them landed, unless a later message with their key was stored:
    /// those are dead-lettered rather than written out of order. The
    /// group's changes are durable once all of that is done.
    #[test]
    fn batch_mates_of_a_refused_record_are_sent_again_in_order_or_kept() {
        let cluster = MockCluster::new(1).unwrap();
        let (mut sink, brokers) = on_topic_t(&cluster);
        // A later group, with a message of `c`, still in flight when the
        // first lands: it is waited for, and found stored.
        cluster
            .broker_round_trip_time(1, Duration::from_millis(50))
            .unwrap();
        sink.producer
            .submit(vec![message("c")], Group::default())
            .unwrap();
        let shard = ShardKey::new("orders", "shard-1");
        let seq = SequenceNumber::parse("1004").unwrap();
        let group = Landed {
            messages: vec![message("bad"), message("b"), message("c")],
            results: vec![
                Sent::Refused("INVALID_RECORD".into()),
                Sent::Collateral,
                Sent::Collateral,
            ],
            tag: Group {
                changes: vec![(shard.clone(), seq.clone())],
                ..Group::default()
            },
        };
        sink.land(vec![group]).unwrap();
        let keys = |got: Vec<(String, Option<String>)>| -> Vec<String> {
            got.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(stored(&brokers, "t")), ["c", "b"]);
        let dead = stored(&brokers, "dead");
        assert_eq!(
            dead.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["bad", "c"]
        );
        assert!(dead[1].1.as_deref().unwrap().contains("out of order"));
        assert!(sink.durable.covers(&shard, &seq));
        assert_eq!(sink.stats.dead_lettered, 2);
    }

    const YOUNG: Option<Duration> = Some(Duration::from_millis(1));

    fn held(messages: usize, bytes: usize, age: Option<Duration>) -> Held {
        Held {
            messages,
            bytes,
            age,
        }
    }

    #[test]
    fn a_few_small_young_messages_wait_for_more() {
        assert!(!held(10, 10_000, YOUNG).due(1024));
    }

    #[test]
    fn enough_messages_go_out() {
        assert!(held(1024, 10_000, YOUNG).due(1024));
    }

    #[test]
    fn enough_bytes_go_out_whatever_their_count() {
        assert!(held(3, crate::SEND_BATCH_BYTES, YOUNG).due(1024));
        assert!(!held(3, crate::SEND_BATCH_BYTES - 1, YOUNG).due(1024));
    }

    #[test]
    fn the_oldest_waits_no_longer_than_send_after() {
        assert!(held(1, 100, Some(crate::SEND_AFTER)).due(1024));
    }

    #[test]
    fn nothing_held_is_never_kept_waiting() {
        assert!(held(0, 0, None).due(1024));
    }
}
