//! Where files go and what their names say.
//!
//! `<root>/<table>/date=YYYY-MM-DD/<shard>-<firstSeq>-<lastSeq>.parquet`: the
//! committed files are the sink's position, so their names must parse back.
//! Files being written are hidden (`.<shard>-<firstSeq>.parquet.inprogress`),
//! which dataset readers (pyarrow, Spark, DuckDB globs on `*.parquet`) skip.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use dynamo_cdc_core::{SequenceNumber, ShardKey};

/// Suffix of files not yet committed.
pub(crate) const IN_PROGRESS: &str = ".parquet.inprogress";
pub(crate) use dynamo_cdc_dead_letter::create_dir_durably;
use dynamo_cdc_dead_letter::{DEAD_LETTER_DIR, GAPS_DIR};

/// `YYYY-MM-DD` (UTC) of a change's creation time; 1970-01-01 when unknown.
pub(crate) fn date_of(ms: Option<i64>) -> String {
    let t = ms
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default();
    t.format("%Y-%m-%d").to_string()
}

pub(crate) fn partition_dir(root: &Path, table: &str, date: &str) -> PathBuf {
    root.join(table).join(format!("date={date}"))
}

pub(crate) fn temp_name(shard: &str, first: &SequenceNumber) -> String {
    format!(".{shard}-{first}{IN_PROGRESS}")
}

pub(crate) fn final_name(shard: &str, first: &SequenceNumber, last: &SequenceNumber) -> String {
    format!("{shard}-{first}-{last}.parquet")
}

/// A committed file found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) key: ShardKey,
    pub(crate) last: SequenceNumber,
    pub(crate) path: PathBuf,
}

/// Parses `<shard>-<first>-<last>.parquet`; shard ids may hold `-` themselves.
pub(crate) fn parse_final_name(name: &str) -> Option<(String, SequenceNumber, SequenceNumber)> {
    let stem = name.strip_suffix(".parquet")?;
    let mut parts = stem.rsplitn(3, '-');
    let last = SequenceNumber::parse(parts.next()?).ok()?;
    let first = SequenceNumber::parse(parts.next()?).ok()?;
    let shard = parts.next().filter(|s| !s.is_empty())?;
    Some((shard.to_owned(), first, last))
}

/// Every committed file and every leftover temp file under `root`.
pub(crate) fn scan(root: &Path) -> std::io::Result<(Vec<Committed>, Vec<PathBuf>)> {
    let mut committed = Vec::new();
    let mut leftovers = Vec::new();
    let Ok(tables) = std::fs::read_dir(root) else {
        return Ok((committed, leftovers));
    };
    for table in tables {
        let table = table?;
        let table_name = table.file_name().to_string_lossy().into_owned();
        if [DEAD_LETTER_DIR, GAPS_DIR].contains(&table_name.as_str())
            || !table.file_type()?.is_dir()
        {
            continue;
        }
        for part in std::fs::read_dir(table.path())? {
            let part = part?;
            if !part.file_type()?.is_dir()
                || !part.file_name().to_string_lossy().starts_with("date=")
            {
                continue;
            }
            for file in std::fs::read_dir(part.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(IN_PROGRESS) {
                    leftovers.push(file.path());
                } else if let Some((shard, _, last)) = parse_final_name(&name) {
                    committed.push(Committed {
                        key: ShardKey::new(table_name.as_str(), shard),
                        last,
                        path: file.path(),
                    });
                }
            }
        }
    }
    Ok((committed, leftovers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_dashes_in_shard_ids() {
        let first = SequenceNumber::parse("100000000000000000001").unwrap();
        let last = SequenceNumber::parse("100000000000000000900").unwrap();
        let name = final_name("shardId-00000001-abc", &first, &last);
        let (shard, f, l) = parse_final_name(&name).unwrap();
        assert_eq!(
            (shard.as_str(), f, l),
            ("shardId-00000001-abc", first, last)
        );
        assert!(parse_final_name("x-1.parquet").is_none());
        assert!(parse_final_name("notes.txt").is_none());
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(date_of(Some(1_700_000_000_000)), "2023-11-14");
        assert_eq!(date_of(None), "1970-01-01");
    }
}
