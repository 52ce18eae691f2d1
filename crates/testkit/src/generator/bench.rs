//! The bench preset: one shard of the `events` table, streamed to any size.

use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::TableSpec;
use super::pages::Pager;
use super::table::TableState;

/// Table of the bench capture.
pub const BENCH_TABLE: &str = "events";

/// Records per page: about 650 KB, under GetRecords' 1 MB page limit.
const BENCH_PAGE_RECORDS: usize = 500;
/// Tracked items; with about 2.5 KB per image in memory this bounds the
/// generator at a few tens of MB however large the capture.
const BENCH_MAX_LIVE: usize = 4096;
/// 2024-11-19T07:06:40Z, in ms.
const BENCH_START_MS: u64 = 1_732_000_000_000;

/// Streams a capture of the `events` table to `w` until about
/// `target_bytes` are written (a record or so more), as one shard: JSON
/// Lines of GetRecords pages, the last with a null `NextShardIterator`.
/// Records average about 1.3 KB (60% INSERT, 30% MODIFY, 10% REMOVE) and
/// memory stays constant, so multi-GB fixtures are fine. Returns the number
/// of records written. The same seed and size give the same bytes.
///
/// # Errors
/// Any error from `w`.
pub fn write_bench_capture(w: impl Write, seed: u64, target_bytes: u64) -> io::Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut table = TableState::new(TableSpec::events(), &mut rng, BENCH_MAX_LIVE);
    let mut pager = Pager::new(
        w,
        table.arn().to_owned(),
        seed.rotate_left(17) ^ 0x5EED,
        BENCH_PAGE_RECORDS,
        0.0,
    );
    let mut now_ms = BENCH_START_MS;
    let mut scratch = Vec::with_capacity(4096);
    let mut records = 0u64;
    while pager.bytes_so_far() < target_bytes {
        // A busy table: a few hundred writes per second.
        now_ms += rng.random_range(0..=8);
        scratch.clear();
        table.next_record(&mut rng, now_ms, &mut scratch);
        pager.push(&scratch)?;
        records += 1;
    }
    pager.finish()?;
    Ok(records)
}
