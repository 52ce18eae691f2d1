//! Shards some sink holds a position of that the stream no longer lists.
//!
//! A closed shard is listed until its records expire (24 hours after they
//! were written); after that no call answers for it. One that was read to
//! its end (recorded as ended, see `dynamo_cdc_core::Recorded::ended`) lost
//! nothing. Any other lost whatever it held after the position: a gap,
//! which reading its child from its first record would hide. A table whose
//! ended shards are not tracked yet (a checkpoint of an earlier version)
//! cannot tell the two apart: its missing shards are taken for read whole,
//! as before the tracking, and the table is tracked from then on.
//!
//! Pure: the coordinator gives the positions, the listing and the record.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use dynamo_cdc_core::SequenceNumber;

/// What the first listing says about the shards it no longer has.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expired<'a> {
    /// Not tracked: these are taken for ended, and the table is tracked.
    Assumed(Vec<&'a str>),
    /// Tracked: these lost what they held after their position.
    Lost(Vec<(&'a str, &'a SequenceNumber)>),
}

/// Of `positioned` (shard -> the lowest position a sink holds of it), the
/// shards `listed` lacks, as `ended` (the table's record, `None` when not
/// tracked) says. Snapshot segments, which are no shards of the stream,
/// are left out.
pub(crate) fn expired<'a>(
    positioned: &BTreeMap<&'a str, &'a SequenceNumber>,
    listed: &HashSet<&str>,
    ended: Option<&BTreeSet<String>>,
) -> Expired<'a> {
    let gone = positioned.iter().filter(|(id, _)| {
        !listed.contains(**id) && !crate::snapshot::journal::is_snapshot_shard(id)
    });
    match ended {
        None => Expired::Assumed(gone.map(|(id, _)| *id).collect()),
        Some(ended) => Expired::Lost(
            gone.filter(|(id, _)| !ended.contains(**id))
                .map(|(id, seq)| (*id, *seq))
                .collect(),
        ),
    }
}

/// Per shard, the lower of the two positions: `held` (every shard some
/// sink holds, at the lowest) and `resume` (only the shards every sink
/// holds, at the lowest over them).
pub(crate) fn lowest<'a>(
    held: impl Iterator<Item = (&'a str, &'a SequenceNumber)>,
    resume: impl Iterator<Item = (&'a str, &'a SequenceNumber)>,
) -> BTreeMap<&'a str, &'a SequenceNumber> {
    let mut out: BTreeMap<&str, &SequenceNumber> = BTreeMap::new();
    for (id, seq) in held.chain(resume) {
        let low = out.entry(id).or_insert(seq);
        if seq < *low {
            *low = seq;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn a_tracked_table_lost_what_its_unended_missing_shards_held() {
        let (s10, s20, s30) = (seq(10), seq(20), seq(30));
        let positioned = BTreeMap::from([
            ("read-whole", &s10),
            ("expired-unread", &s20),
            ("listed", &s30),
            ("snapshot-s1-0", &s30),
        ]);
        let listed = HashSet::from(["listed"]);
        let ended = BTreeSet::from(["read-whole".to_owned()]);
        assert_eq!(
            expired(&positioned, &listed, Some(&ended)),
            Expired::Lost(vec![("expired-unread", &s20)])
        );
    }

    #[test]
    fn an_untracked_table_takes_its_missing_shards_for_read_whole() {
        let s10 = seq(10);
        let positioned = BTreeMap::from([("a", &s10), ("b", &s10), ("listed", &s10)]);
        let listed = HashSet::from(["listed"]);
        assert_eq!(
            expired(&positioned, &listed, None),
            Expired::Assumed(vec!["a", "b"])
        );
    }

    #[test]
    fn every_shard_some_sink_holds_is_checked_at_its_lowest_position() {
        let (s5, s10, s20) = (seq(5), seq(10), seq(20));
        // `only-one-sink` is in no resume point: another sink has no
        // position of it (added later).
        let held = [("both", &s10), ("only-one-sink", &s20)];
        let resume = [("both", &s5)];
        assert_eq!(
            lowest(held.into_iter(), resume.into_iter()),
            BTreeMap::from([("both", &s5), ("only-one-sink", &s20)])
        );
    }
}
