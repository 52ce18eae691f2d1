//! The end-of-run summary: one screen for people, JSON for scripts.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What a run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunSummary {
    /// Changes read per table and op letter (`c`, `u`, `d`, `r`). A replay
    /// that failed is read again from its start by the next pass, which
    /// skips what it had committed as already delivered: its reads are not
    /// counted, so that `read`, `already_delivered` and
    /// `duplicates_in_capture` count each record once. A stream is read on
    /// from what was committed: what a failed pass read and did not commit
    /// is read, and counted, again.
    pub read: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records skipped because every sink already held them.
    pub already_delivered: u64,
    /// Records skipped because the capture repeated them.
    pub duplicates_in_capture: u64,
    /// Records dead-lettered by this run.
    pub dead_lettered: u64,
    /// Records in the dead-letter path from earlier runs or this one.
    pub dead_letters_total: u64,
    /// Where dead letters are.
    pub dead_letter_path: String,
    /// Rows in files committed by this run.
    pub rows_written: u64,
    /// Files committed by this run.
    pub files_written: u64,
    /// Bytes of those files.
    pub bytes_written: u64,
    /// Temp files of an earlier crash removed at start.
    pub temp_files_swept: u64,
    /// What the Kafka sink sent, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSummary>,
    /// What the Iceberg sink committed, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iceberg: Option<IcebergSummary>,
    /// Gaps (records trimmed before delivery) recorded by this run.
    pub gaps: u64,
    /// True when a signal ended the run.
    pub stopped_on_request: bool,
    /// Times a sink could not write (full disk, read-only) and the run
    /// started over from the last commit.
    pub sink_retries: u64,
    /// Wall time.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Whether a Parquet sink ran (its line is shown only then).
    #[serde(skip)]
    pub parquet: bool,
}

/// The Iceberg sink's counts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IcebergSummary {
    /// Rows committed.
    pub rows: u64,
    /// Data files committed.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// The Kafka sink's counts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct KafkaSummary {
    /// Messages acknowledged (tombstones included).
    pub messages: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Changes the topics already held.
    pub already_held: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl RunSummary {
    /// Counts one change read; allocates only for a new table or op.
    pub fn count_read(&mut self, table: &str, op: &str) {
        let ops = match self.read.get_mut(table) {
            Some(ops) => ops,
            None => self.read.entry(table.to_owned()).or_default(),
        };
        match ops.get_mut(op) {
            Some(n) => *n += 1,
            None => {
                ops.insert(op.to_owned(), 1);
            }
        }
    }

    /// Adds what each sink did in a pass, by sink id.
    pub(crate) fn add_sinks(&mut self, sinks: &[(String, dynamo_cdc_core::SinkStats)]) {
        self.add_committed(sinks);
        let mut already_held = 0;
        for (id, s) in sinks {
            if id == "kafka" {
                self.kafka.get_or_insert_default().already_held += s.already_held;
            }
            // A change every sink held was skipped once, not once per sink.
            already_held = already_held.max(s.already_held);
        }
        self.already_delivered += already_held;
    }

    /// Adds what the sinks of a pass made durable (files, rows, messages),
    /// and nothing of what they skipped: for a pass that failed, the next
    /// pass meets those again.
    pub(crate) fn add_committed(&mut self, sinks: &[(String, dynamo_cdc_core::SinkStats)]) {
        for (id, s) in sinks {
            if id == "iceberg" {
                let i = self.iceberg.get_or_insert_default();
                i.rows += s.delivered;
                i.files += s.files;
                i.bytes += s.bytes;
            } else if id == "kafka" {
                let k = self.kafka.get_or_insert_default();
                k.messages += s.delivered;
                k.tombstones += s.tombstones;
                k.dead_lettered += s.dead_lettered;
            } else {
                self.parquet = true;
                self.rows_written += s.delivered;
                self.files_written += s.files;
                self.bytes_written += s.bytes;
            }
            self.temp_files_swept += s.temp_files_swept;
        }
    }

    /// Changes read over all tables.
    pub fn changes_read(&self) -> u64 {
        self.read.values().flat_map(|ops| ops.values()).sum()
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(f, "dynamo-cdc run finished in {secs:.2} s")?;
        let width = self.read.keys().map(String::len).max().unwrap_or(5).max(5);
        writeln!(
            f,
            "  {:<width$}  {:>9} {:>9} {:>9} {:>9} {:>10}",
            "table", "insert", "modify", "remove", "snapshot", "total"
        )?;
        for (table, ops) in &self.read {
            let n = |op: &str| ops.get(op).copied().unwrap_or(0);
            writeln!(
                f,
                "  {table:<width$}  {:>9} {:>9} {:>9} {:>9} {:>10}",
                n("c"),
                n("u"),
                n("d"),
                n("r"),
                ops.values().sum::<u64>()
            )?;
        }
        if self.read.is_empty() {
            writeln!(f, "  (no new changes)")?;
        }
        if self.parquet {
            writeln!(
                f,
                "  parquet: {} rows in {} files ({})",
                self.rows_written,
                self.files_written,
                human_bytes(self.bytes_written)
            )?;
        }
        if let Some(i) = &self.iceberg {
            writeln!(
                f,
                "  iceberg: {} rows in {} data files ({})",
                i.rows,
                i.files,
                human_bytes(i.bytes)
            )?;
        }
        if let Some(k) = &self.kafka {
            writeln!(
                f,
                "  kafka: {} messages ({} tombstones), {} to the dead-letter topic",
                k.messages, k.tombstones, k.dead_lettered
            )?;
        }
        if self.already_delivered > 0 || self.duplicates_in_capture > 0 {
            writeln!(
                f,
                "  skipped: {} already delivered, {} repeated in the capture",
                self.already_delivered, self.duplicates_in_capture
            )?;
        }
        if self.temp_files_swept > 0 {
            writeln!(
                f,
                "  removed {} temp files left by an earlier run",
                self.temp_files_swept
            )?;
        }
        if self.gaps > 0 {
            writeln!(
                f,
                "  gaps: {} ranges of trimmed records recorded under _gaps/",
                self.gaps
            )?;
        }
        if self.sink_retries > 0 {
            writeln!(
                f,
                "  a sink could not write {} times; each time the run went on from its last commit",
                self.sink_retries
            )?;
        }
        if self.stopped_on_request {
            writeln!(f, "  stopped on request; positions recorded")?;
        }
        writeln!(
            f,
            "  dead-lettered: {} this run, {} in total under {}",
            self.dead_lettered, self.dead_letters_total, self.dead_letter_path
        )?;
        let rate = if secs > 0.0 {
            self.changes_read() as f64 / secs
        } else {
            0.0
        };
        write!(f, "  rate: {rate:.0} changes/s")
    }
}
