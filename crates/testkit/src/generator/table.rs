//! One table's simulated items and the stream records their changes make.
//!
//! The state keeps the current image of every live item it still tracks, so
//! a MODIFY's old image is exactly the previous new image and a REMOVE's old
//! image is the last state. To keep memory constant for fixtures of any
//! size, at most `max_live` items are tracked; past that an item is simply
//! never touched again, which is still a consistent history.

use dynamo_cdc_core::{AttributeValue, Item, Number};
use rand::Rng;
use rand::rngs::StdRng;

use super::{KeyKind, OpCounts, Profile, TableSpec, profiles};
use crate::record::{EventName, RecordParts, stream_arn, write_record};

/// An item the table still tracks.
struct Live {
    keys: Item,
    image: Item,
    shard: usize,
}

/// The hash key currently receiving new range keys (an order getting more
/// lines, a device sending more events).
struct Group {
    hash: AttributeValue,
    shard: usize,
    next_range: u64,
}

/// What one generated record was.
#[derive(Debug, Clone, Copy)]
pub(super) struct Produced {
    pub(super) shard: usize,
    pub(super) event: EventName,
    pub(super) ttl_delete: bool,
}

pub(super) struct TableState {
    spec: TableSpec,
    arn: String,
    live: Vec<Live>,
    max_live: usize,
    next_hash: u64,
    group: Option<Group>,
    /// Sequence numbers are per table, so every shard file sees them rise.
    sequence: u128,
    pub(super) counts: OpCounts,
}

impl TableState {
    pub(super) fn new(spec: TableSpec, rng: &mut StdRng, max_live: usize) -> Self {
        // DynamoDB's sequence numbers are 21 digits and up; start somewhere
        // in that range so each table looks like its own stream.
        let sequence =
            rng.random_range(100_000_000_000_000_000_000u128..900_000_000_000_000_000_000);
        TableState {
            arn: stream_arn(&spec.name),
            spec,
            live: Vec::new(),
            max_live: max_live.max(1),
            // Starts at 1: id 0 would scramble to an all-zero key.
            next_hash: 1,
            group: None,
            sequence,
            counts: OpCounts::default(),
        }
    }

    pub(super) fn spec(&self) -> &TableSpec {
        &self.spec
    }

    pub(super) fn arn(&self) -> &str {
        &self.arn
    }

    /// Generates the next change, appends its record to `out` and says
    /// which shard it belongs to.
    pub(super) fn next_record(
        &mut self,
        rng: &mut StdRng,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Produced {
        self.sequence += rng.random_range(1..=50_000u128);
        let event_id: u128 = rng.random();
        let ttl = self.spec.ttl_attribute.clone();
        let profile = self.spec.profile;
        let event = self.choose_event(rng);
        let stamp = Stamp {
            event_id,
            created_ms: now_ms,
            sequence: self.sequence,
        };
        let produced = match event {
            EventName::Insert => {
                let (keys, shard) = self.new_keys(rng, now_ms);
                let mut image = profiles::new_item(profile, rng, now_ms, ttl.as_deref());
                // Keys win over any same-named profile attribute.
                image.extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
                stamp.write(out, &self.arn, event, false, &keys, None, Some(&image));
                if self.live.len() >= self.max_live {
                    let forget = rng.random_range(0..self.live.len());
                    self.live.swap_remove(forget);
                }
                self.live.push(Live { keys, image, shard });
                Produced {
                    shard,
                    event,
                    ttl_delete: false,
                }
            }
            EventName::Modify => {
                let at = rng.random_range(0..self.live.len());
                let live = &mut self.live[at];
                let old = live.image.clone();
                profiles::modify(profile, rng, &mut live.image, now_ms, ttl.as_deref());
                live.image
                    .extend(live.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
                stamp.write(
                    out,
                    &self.arn,
                    event,
                    false,
                    &live.keys,
                    Some(&old),
                    Some(&live.image),
                );
                Produced {
                    shard: live.shard,
                    event,
                    ttl_delete: false,
                }
            }
            EventName::Remove => {
                let (at, ttl_delete) = self.choose_removal(rng, now_ms);
                let gone = self.live.swap_remove(at);
                stamp.write(
                    out,
                    &self.arn,
                    event,
                    ttl_delete,
                    &gone.keys,
                    Some(&gone.image),
                    None,
                );
                Produced {
                    shard: gone.shard,
                    event,
                    ttl_delete,
                }
            }
        };
        self.counts.add(produced.event, produced.ttl_delete);
        produced
    }

    fn choose_event(&self, rng: &mut StdRng) -> EventName {
        if self.live.is_empty() {
            return EventName::Insert;
        }
        let mix = self.spec.mix;
        let total = (mix.insert + mix.modify + mix.remove).max(1);
        let roll = rng.random_range(0..total);
        if roll < mix.insert {
            EventName::Insert
        } else if roll < mix.insert + mix.modify {
            EventName::Modify
        } else {
            EventName::Remove
        }
    }

    /// Which tracked item a REMOVE deletes, and whether TTL deleted it.
    /// Expired items go first: the TTL process is what removes them.
    fn choose_removal(&self, rng: &mut StdRng, now_ms: u64) -> (usize, bool) {
        if let Some(attr) = &self.spec.ttl_attribute {
            let now_s = (now_ms / 1000) as i64;
            let expired = |live: &Live| match live.image.get(attr.as_str()) {
                Some(AttributeValue::N(at)) => at.to_i64().is_some_and(|at| at <= now_s),
                _ => false,
            };
            // A bounded sample keeps this O(1) however many items are live;
            // until the first TTL delete, look at every item so one shows up.
            let tries = if self.counts.ttl_remove == 0 {
                self.live.len()
            } else {
                16
            };
            for probe in 0..tries {
                let at = if self.counts.ttl_remove == 0 {
                    probe
                } else {
                    rng.random_range(0..self.live.len())
                };
                if expired(&self.live[at]) {
                    return (at, true);
                }
            }
        }
        (rng.random_range(0..self.live.len()), false)
    }

    /// Key attributes for a new item, and the shard its hash key lives on.
    fn new_keys(&mut self, rng: &mut StdRng, now_ms: u64) -> (Item, usize) {
        let shards = self.spec.shards.max(1);
        let mut keys = Item::new();
        let Some(range) = self.spec.range_key.clone() else {
            let id = self.take_hash_id();
            keys.insert(self.spec.hash_key.name.as_str().into(), self.hash_value(id));
            return (keys, (id % shards as u64) as usize);
        };
        // Half the time the next range key of the current hash key, so
        // orders get several lines and devices several events.
        let reuse = self.group.is_some() && rng.random_bool(0.5);
        if !reuse {
            let id = self.take_hash_id();
            self.group = Some(Group {
                hash: self.hash_value(id),
                shard: (id % shards as u64) as usize,
                next_range: 1,
            });
        }
        let Some(group) = self.group.as_mut() else {
            unreachable!("a group was just set")
        };
        let index = group.next_range;
        group.next_range += 1;
        keys.insert(self.spec.hash_key.name.as_str().into(), group.hash.clone());
        let value = match range.kind {
            KeyKind::N => AttributeValue::N(Number::from(index as i64)),
            KeyKind::S => AttributeValue::S(format!("{now_ms}#{index:04}").into()),
            KeyKind::B => AttributeValue::B(index.to_be_bytes().to_vec()),
        };
        keys.insert(range.name.into(), value);
        (keys, group.shard)
    }

    fn take_hash_id(&mut self) -> u64 {
        let id = self.next_hash;
        self.next_hash += 1;
        id
    }

    /// A unique hash key value that does not look sequential: the counter
    /// times an odd constant is a bijection modulo 2^40.
    fn hash_value(&self, id: u64) -> AttributeValue {
        let scrambled = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1 << 40) - 1);
        match self.spec.hash_key.kind {
            KeyKind::S => AttributeValue::S(
                format!("{}{scrambled:010X}", self.spec.profile.key_prefix()).into(),
            ),
            KeyKind::N => AttributeValue::N(Number::from(scrambled as i64)),
            KeyKind::B => AttributeValue::B(scrambled.to_be_bytes()[3..].to_vec()),
        }
    }
}

/// The parts of a record that do not depend on the item.
struct Stamp {
    event_id: u128,
    created_ms: u64,
    sequence: u128,
}

impl Stamp {
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        out: &mut Vec<u8>,
        stream_arn: &str,
        event: EventName,
        ttl_delete: bool,
        keys: &Item,
        old: Option<&Item>,
        new: Option<&Item>,
    ) {
        write_record(
            out,
            &RecordParts {
                stream_arn,
                event_id: self.event_id,
                event,
                ttl_delete,
                created_ms: self.created_ms,
                keys,
                old,
                new,
                sequence: self.sequence,
            },
        );
    }
}

impl Profile {
    fn key_prefix(self) -> &'static str {
        match self {
            Profile::Orders => "ORD-",
            Profile::Customers => "CUST-",
            Profile::Events => "device#",
            Profile::Pings => "host-",
            Profile::Documents => "doc-",
            Profile::Wide => "w-",
        }
    }
}
