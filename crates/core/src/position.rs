//! Stream positions: sequence numbers and the per-shard positions a sink has
//! made durable.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicU64};

/// A DynamoDB Streams sequence number: 1 to 40 decimal digits, compared
/// numerically (a 40-digit one does not fit `u128`).
///
/// Every change carries one and every sink copies it, so it is kept inline:
/// the usual 21 to 23 digits need no allocation to read, copy or drop.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(crate::Text);

/// The text is not a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a sequence number (1 to 40 decimal digits)")]
pub struct BadSequenceNumber(pub String);

impl SequenceNumber {
    /// Parses a sequence number, dropping leading zeros.
    ///
    /// # Errors
    /// [`BadSequenceNumber`] unless the text is 1 to 40 ASCII digits.
    pub fn parse(text: &str) -> Result<Self, BadSequenceNumber> {
        if text.is_empty() || text.len() > 40 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadSequenceNumber(text.chars().take(64).collect()));
        }
        let trimmed = text.trim_start_matches('0');
        Ok(SequenceNumber(crate::Text::new(if trimmed.is_empty() {
            "0"
        } else {
            trimmed
        })))
    }

    /// The decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // No leading zeros, so a longer number is larger.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.as_str().cmp(other.0.as_str()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

/// A shard of a table's stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    /// Table name.
    pub table: Arc<str>,
    /// Shard id.
    pub shard: Arc<str>,
}

impl ShardKey {
    /// A key from table and shard.
    pub fn new(table: impl Into<Arc<str>>, shard: impl Into<Arc<str>>) -> Self {
        ShardKey {
            table: table.into(),
            shard: shard.into(),
        }
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.table, self.shard)
    }
}

/// The last durable sequence number per shard.
#[derive(Clone, Default)]
pub struct Positions {
    /// Shared by copies until one of them changes: the pipeline copies
    /// every sink's positions for the checkpoint whenever one moved, and
    /// they hold every shard the streams ever had, while a batch moves a
    /// few.
    by_shard: Arc<BTreeMap<ShardKey, SequenceNumber>>,
    /// Which contents these are: see [`Positions::stamp`].
    stamp: u64,
}

/// The next stamp to give out; 0 is kept for positions never changed, which
/// are all empty.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

impl PartialEq for Positions {
    fn eq(&self, other: &Self) -> bool {
        self.stamp == other.stamp || self.by_shard == other.by_shard
    }
}

impl Eq for Positions {}

/// Shows the shards and their positions only: the stamp depends on what
/// ran before, so two equal positions would print differently with it.
impl fmt::Debug for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.by_shard.iter()).finish()
    }
}

impl Positions {
    /// No positions.
    pub fn new() -> Self {
        Self::default()
    }

    /// A number naming these contents. A copy keeps it, and every change
    /// gives a number no positions had before, so two positions with the
    /// same stamp hold the same shards at the same sequence numbers.
    /// (Different stamps may still hold the same.)
    ///
    /// Positions hold every shard a stream ever had, and the pipeline looks
    /// at every sink's after each batch: comparing stamps tells it whether
    /// anything moved without comparing, or copying, every shard.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Marks the contents as changed.
    fn restamp(&mut self) {
        self.stamp = NEXT_STAMP.fetch_add(1, atomic::Ordering::Relaxed);
    }

    /// The durable position of a shard.
    pub fn get(&self, key: &ShardKey) -> Option<&SequenceNumber> {
        self.by_shard.get(key)
    }

    /// Raises a shard's position to `seq`; a lower `seq` is ignored, because a
    /// position never moves back.
    pub fn advance(&mut self, key: ShardKey, seq: SequenceNumber) {
        if self.covers(&key, &seq) {
            return;
        }
        Arc::make_mut(&mut self.by_shard).insert(key, seq);
        self.restamp();
    }

    /// True when `seq` of `key` is already durable here.
    pub fn covers(&self, key: &ShardKey, seq: &SequenceNumber) -> bool {
        self.by_shard.get(key).is_some_and(|p| p >= seq)
    }

    /// Every shard and position, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShardKey, &SequenceNumber)> {
        self.by_shard.iter()
    }

    /// Number of shards with a position.
    pub fn len(&self) -> usize {
        self.by_shard.len()
    }

    /// True when no shard has a position.
    pub fn is_empty(&self) -> bool {
        self.by_shard.is_empty()
    }

    /// Merges `other` in, keeping the higher position of each shard.
    pub fn merge_max(&mut self, other: &Positions) {
        for (k, v) in other.iter() {
            self.advance(k.clone(), v.clone());
        }
    }

    /// Where to resume: per shard, the lowest position over all sinks; a shard
    /// that some sink has no position for has none here either (read it from
    /// the start), so no sink misses a change.
    pub fn resume_point(per_sink: &[&Positions]) -> Positions {
        let Some((first, rest)) = per_sink.split_first() else {
            return Positions::new();
        };
        let mut out = BTreeMap::new();
        'shards: for (key, seq) in first.iter() {
            let mut low = seq;
            for other in rest {
                match other.get(key) {
                    Some(s) if s < low => low = s,
                    Some(_) => {}
                    None => continue 'shards,
                }
            }
            out.insert(key.clone(), low.clone());
        }
        let mut positions = Positions::new();
        if !out.is_empty() {
            positions.by_shard = Arc::new(out);
            positions.restamp();
        }
        positions
    }
}

impl Positions {
    /// Every shard some sink holds a position of, at the lowest of those
    /// positions: unlike [`Positions::resume_point`], a shard one sink has
    /// no position for is kept.
    pub fn lowest_held(per_sink: &[&Positions]) -> Positions {
        let mut out: BTreeMap<ShardKey, SequenceNumber> = BTreeMap::new();
        for sink in per_sink {
            for (key, seq) in sink.iter() {
                match out.get_mut(key) {
                    Some(low) if seq < low => *low = seq.clone(),
                    Some(_) => {}
                    None => {
                        out.insert(key.clone(), seq.clone());
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

impl FromIterator<(ShardKey, SequenceNumber)> for Positions {
    fn from_iter<I: IntoIterator<Item = (ShardKey, SequenceNumber)>>(iter: I) -> Self {
        let mut p = Positions::new();
        for (k, v) in iter {
            p.advance(k, v);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(t: &str) -> SequenceNumber {
        SequenceNumber::parse(t).unwrap()
    }

    #[test]
    fn numeric_order_beyond_u128() {
        let forty = "9".repeat(40);
        assert!(seq(&forty) > seq(&"1".repeat(39)));
        assert!(seq("100") > seq("99"));
        assert_eq!(seq("007"), seq("7"));
        assert!(SequenceNumber::parse(&"1".repeat(41)).is_err());
        assert!(SequenceNumber::parse("12a").is_err());
        assert!(SequenceNumber::parse("").is_err());
    }

    #[test]
    fn resume_is_the_minimum_over_sinks() {
        let a = ShardKey::new("t", "s1");
        let b = ShardKey::new("t", "s2");
        let p1: Positions = [(a.clone(), seq("10")), (b.clone(), seq("5"))]
            .into_iter()
            .collect();
        let p2: Positions = [(a.clone(), seq("7"))].into_iter().collect();
        let r = Positions::resume_point(&[&p1, &p2]);
        assert_eq!(r.get(&a), Some(&seq("7")));
        assert_eq!(
            r.get(&b),
            None,
            "a sink without a position reads from the start"
        );
    }

    #[test]
    fn the_lowest_held_keeps_a_shard_some_sink_has_no_position_for() {
        let a = ShardKey::new("t", "s1");
        let b = ShardKey::new("t", "s2");
        let p1: Positions = [(a.clone(), seq("10")), (b.clone(), seq("5"))]
            .into_iter()
            .collect();
        let p2: Positions = [(a.clone(), seq("7"))].into_iter().collect();
        let low = Positions::lowest_held(&[&p1, &p2]);
        assert_eq!(low.get(&a), Some(&seq("7")));
        assert_eq!(low.get(&b), Some(&seq("5")));
    }

    #[test]
    fn positions_never_move_back() {
        let k = ShardKey::new("t", "s");
        let mut p = Positions::new();
        p.advance(k.clone(), seq("20"));
        p.advance(k.clone(), seq("3"));
        assert_eq!(p.get(&k), Some(&seq("20")));
        assert!(p.covers(&k, &seq("19")));
        assert!(!p.covers(&k, &seq("21")));
    }

    #[test]
    fn a_stamp_names_contents_and_moves_only_when_they_do() {
        let k = ShardKey::new("t", "s");
        let mut p = Positions::new();
        assert_eq!(p.stamp(), Positions::new().stamp(), "empty is empty");
        p.advance(k.clone(), seq("20"));
        let kept = p.clone();
        assert_eq!(kept.stamp(), p.stamp(), "a copy keeps the stamp");
        p.advance(k.clone(), seq("3"));
        p.advance(k.clone(), seq("20"));
        assert_eq!(p.stamp(), kept.stamp(), "nothing moved");
        p.advance(k.clone(), seq("21"));
        assert_ne!(p.stamp(), kept.stamp(), "a position moved");
        assert_eq!(kept.get(&k), Some(&seq("20")), "the copy did not");
        let other: Positions = [(k.clone(), seq("20"))].into_iter().collect();
        assert_ne!(other.stamp(), kept.stamp(), "stamps are never reused");
        assert_eq!(other, kept, "equality is by contents, not stamps");
        let resumed = Positions::resume_point(&[&p, &kept]);
        assert_ne!(resumed.stamp(), kept.stamp(), "a new resume point is new");
        assert_eq!(resumed, kept);
        assert_eq!(
            format!("{resumed:?}"),
            format!("{kept:?}"),
            "equal positions print alike, whatever their stamps"
        );
        assert_eq!(
            format!("{kept:?}"),
            r#"{ShardKey { table: "t", shard: "s" }: Seq(20)}"#
        );
    }
}
