//! The replay source: captured DynamoDB Streams records read back from files.
//!
//! A capture is a file, or a directory of files, holding any of:
//! - JSON Lines, one GetRecords response per line (`{"Records": [...],
//!   "NextShardIterator": ...}`), one Lambda DynamoDB event per line, or one
//!   bare stream record per line;
//! - one such document spread over many lines (as the AWS CLI prints it), or
//!   several such documents one after another;
//! - either of those gzip-compressed (detected by content, not only `.gz`).
//!
//! Each file is one shard, named after the file without its extensions, so a
//! capture made one file per shard keeps its order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dynamo_cdc_core::{
    Change, DeadLetter, Origin, Positions, SequenceNumber, ShardKey, Source, SourceBatch,
};
use flate2::read::MultiGzDecoder;
use serde_json::value::RawValue;

/// UTF-8's byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

use crate::lines::LineReader;
use crate::page::{PageOrigin, read_page};
use crate::record::{ImageReading, RecordContext, render_record};

/// What the replay source reads.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// A capture file or a directory of them.
    pub path: PathBuf,
    /// Table for records without `eventSourceARN`.
    pub table: Option<String>,
    /// Changes per batch handed to the pipeline (whole pages, so a batch
    /// may be a page larger).
    pub batch_size: usize,
    /// Bytes of capture text per batch, whichever limit comes first (again
    /// whole pages: a batch holds at least one).
    pub batch_bytes: u64,
    /// What is read of each image; set by the pipeline from what its
    /// sinks read, never configured.
    pub reading: ImageReading,
}

/// Reading the capture failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A file or directory could not be read.
    #[error("cannot read capture {path}")]
    Io {
        /// what was being read
        path: PathBuf,
        /// the I/O error
        #[source]
        source: std::io::Error,
    },
    /// The path holds no capture files.
    #[error("no capture files (*.json, *.jsonl, *.ndjson, optionally .gz) under {0}")]
    NoFiles(PathBuf),
}

/// Counts kept while replaying.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    /// Files opened.
    pub files: u64,
    /// Records skipped because every sink already holds them.
    pub already_delivered: u64,
    /// Records skipped because the capture repeats a sequence number.
    pub duplicates: u64,
}

/// How far a replay has read, for showing progress: cheap to clone, read
/// from any thread while the source reads on its own.
///
/// Bytes are counted as stored on disk (compressed bytes for gzip captures)
/// as they are read into the reader's buffer, which runs up to a megabyte
/// ahead of the records handed over.
#[derive(Clone, Debug, Default)]
pub struct ReplayProgress(Arc<ProgressCounts>);

#[derive(Debug, Default)]
struct ProgressCounts {
    read: AtomicU64,
    total: AtomicU64,
}

impl ReplayProgress {
    /// Bytes of capture files read so far.
    pub fn bytes_read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }

    /// The size of all capture files, summed when the source was opened.
    pub fn bytes_total(&self) -> u64 {
        self.0.total.load(Ordering::Relaxed)
    }
}

/// A reader that counts what it reads into a [`ReplayProgress`].
struct Counted<R> {
    inner: R,
    progress: ReplayProgress,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.0.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads captured stream records; see the module docs for the formats.
pub struct ReplaySource {
    files: VecDeque<PathBuf>,
    current: Option<FileReader>,
    default_table: Option<Arc<str>>,
    reading: ImageReading,
    batch_size: usize,
    batch_bytes: u64,
    resume: Positions,
    seen: foldhash::HashMap<ShardKey, SeenWindow>,
    stats: ReplayStats,
    progress: ReplayProgress,
}

impl ReplaySource {
    /// Lists the capture files; records at or before `resume` are skipped.
    ///
    /// # Errors
    /// When the path cannot be read or holds no capture files.
    pub fn open(config: &ReplayConfig, resume: Positions) -> Result<Self, ReplayError> {
        let files = capture_files(&config.path)?;
        if files.is_empty() {
            return Err(ReplayError::NoFiles(config.path.clone()));
        }
        let progress = ReplayProgress::default();
        for path in &files {
            let meta = std::fs::metadata(path).map_err(|source| ReplayError::Io {
                path: path.clone(),
                source,
            })?;
            progress.0.total.fetch_add(meta.len(), Ordering::Relaxed);
        }
        Ok(ReplaySource {
            files: files.into(),
            current: None,
            default_table: config.table.as_deref().map(Arc::from),
            reading: config.reading,
            batch_size: config.batch_size.max(1),
            batch_bytes: config.batch_bytes.max(1),
            resume,
            seen: foldhash::HashMap::default(),
            stats: ReplayStats::default(),
            progress,
        })
    }

    /// Counts so far.
    pub fn stats(&self) -> &ReplayStats {
        &self.stats
    }

    /// A handle on how far the replay has read; take it before moving the
    /// source to its reading thread.
    pub fn progress(&self) -> ReplayProgress {
        self.progress.clone()
    }

    /// Reads one JSON document (a page, an event or a record) at `line`.
    fn take_document(&mut self, text: &str, line: u64, out: &mut SourceBatch) {
        let Some(reader) = self.current.as_mut() else {
            return;
        };
        let at = PageOrigin {
            origin: &reader.display,
            line: Some(line),
        };
        let page = match read_page(text, &mut reader.ctx, at) {
            Ok(page) => page,
            Err(error) => {
                out.dead_letters.push(DeadLetter {
                    origin: reader.display.clone(),
                    line: Some(line),
                    record_index: None,
                    table: reader.ctx.default_table.as_deref().map(str::to_owned),
                    shard: Some(reader.ctx.shard.to_string()),
                    sequence_number: None,
                    error,
                    raw: text.to_owned(),
                });
                return;
            }
        };
        let origin = reader.origin.clone();
        out.dead_letters.extend(page.dead_letters);
        // A page is taken whole, often more changes than `batch_size`.
        out.changes.reserve(page.changes.len());
        out.origins.reserve(page.changes.len());
        for parsed in page.changes {
            let at = Origin {
                origin: origin.clone(),
                line: Some(line),
                record_index: parsed.index,
            };
            self.accept(parsed.change, at, parsed.raw, out);
        }
    }

    /// Orders, deduplicates and resume-filters one parsed change. `raw` is the
    /// record's text when the caller has it at hand (else it is rendered for
    /// a dead letter).
    fn accept(&mut self, change: Change, at: Origin, raw: Option<&str>, out: &mut SourceBatch) {
        let key = ShardKey {
            table: change.source.table.clone(),
            shard: change.source.shard_id.clone(),
        };
        let seq = &change.source.sequence_number;
        let window = self.seen.entry(key.clone()).or_default();
        // A capture that repeats pages (a capture tool restarted) repeats
        // sequence numbers already read: skip those. Anything else out of
        // order cannot be placed in the stream.
        if let Some(last) = window.last()
            && seq <= last
        {
            if window.contains(seq) {
                self.stats.duplicates += 1;
                return;
            }
            out.dead_letters.push(DeadLetter {
                origin: at.origin.to_string(),
                line: at.line,
                record_index: at.record_index,
                table: Some(key.table.to_string()),
                shard: Some(key.shard.to_string()),
                sequence_number: Some(seq.to_string()),
                error: format!(
                    "sequence number {seq} comes after {last} in shard {}; \
                         records of a shard must be in stream order",
                    key.shard
                ),
                raw: raw.map_or_else(|| render_record(&change), str::to_owned),
            });
            return;
        }
        window.push(seq.clone());
        if self.resume.covers(&key, seq) {
            self.stats.already_delivered += 1;
            return;
        }
        out.changes.push(change);
        out.origins.push(at);
    }
}

/// The sequence numbers recently read from one shard, to tell a repeated
/// record (skipped) from one out of order (dead-lettered). Bounded: a repeat
/// further back than this many records counts as out of order.
///
/// Only a number above the last one is pushed, so the window is sorted and
/// a lookup is a binary search: no hash set to keep up for every record,
/// when lookups happen only for the rare record that is not in order.
#[derive(Default)]
struct SeenWindow {
    order: VecDeque<SequenceNumber>,
}

impl SeenWindow {
    // A GetRecords page holds at most 1,000 records: this covers a few
    // repeated pages and keeps memory small.
    const CAPACITY: usize = 4_096;

    fn last(&self) -> Option<&SequenceNumber> {
        self.order.back()
    }

    fn contains(&self, seq: &SequenceNumber) -> bool {
        self.order.binary_search(seq).is_ok()
    }

    /// Adds `seq`, which must come after [`SeenWindow::last`].
    fn push(&mut self, seq: SequenceNumber) {
        debug_assert!(self.last().is_none_or(|last| *last < seq));
        if self.order.len() == Self::CAPACITY {
            self.order.pop_front();
        }
        self.order.push_back(seq);
    }
}

impl Source for ReplaySource {
    type Error = ReplayError;

    fn next_batch(&mut self) -> Result<Option<SourceBatch>, ReplayError> {
        let mut batch = SourceBatch {
            changes: Vec::with_capacity(self.batch_size),
            origins: Vec::with_capacity(self.batch_size),
            ..SourceBatch::default()
        };
        let mut bytes = 0u64;
        while batch.changes.len() + batch.dead_letters.len() < self.batch_size
            && bytes < self.batch_bytes
        {
            if self.current.is_none() {
                let Some(path) = self.files.pop_front() else {
                    break;
                };
                self.stats.files += 1;
                let shard = shard_name(&path);
                let mut ctx = RecordContext::new(shard.into(), self.default_table.clone());
                ctx.reading = self.reading;
                self.current = Some(FileReader::open(path, ctx, self.progress.clone())?);
            }
            let Some(reader) = self.current.as_mut() else {
                break;
            };
            match reader.next_document()? {
                Some(Piece::Document { text, line }) => {
                    bytes += text.len() as u64;
                    self.take_document(&text, line, &mut batch);
                }
                Some(Piece::Buffered { line, range }) => {
                    let lent = reader.read.lend();
                    let line_bytes = &lent[range];
                    bytes += line_bytes.len() as u64;
                    // Checked once, here: a line of items near 400 KB is
                    // megabytes, and std's check runs at a tenth of the
                    // SIMD one's speed on text that is not ASCII.
                    match simdutf8::basic::from_utf8(line_bytes) {
                        Ok(text) => self.take_document(text.trim(), line, &mut batch),
                        Err(_) => {
                            let bad = BadLine::not_utf8(line_bytes, line);
                            batch.dead_letters.push(reader.dead_letter(bad));
                        }
                    }
                    if let Some(reader) = self.current.as_mut() {
                        reader.read.restore(lent);
                    }
                }
                Some(Piece::Bad(bad)) => {
                    bytes += bad.raw.len() as u64;
                    batch.dead_letters.push(reader.dead_letter(bad));
                }
                None => self.current = None,
            }
        }
        if batch.changes.is_empty()
            && batch.dead_letters.is_empty()
            && self.current.is_none()
            && self.files.is_empty()
        {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

/// One unit read from a file.
enum Piece {
    Document {
        text: String,
        line: u64,
    },
    /// A document that is the reader's current line, in its buffer (not
    /// copied).
    Buffered {
        line: u64,
        range: Range<usize>,
    },
    Bad(BadLine),
}

/// Input that is not a document, kept whole for its dead letter.
struct BadLine {
    raw: String,
    line: u64,
    error: String,
}

impl BadLine {
    /// A line whose bytes are not UTF-8 (the message names the first bad byte).
    fn not_utf8(bytes: &[u8], line: u64) -> Self {
        let error = match std::str::from_utf8(bytes) {
            Err(e) => format!("line is not UTF-8: {e}"),
            Ok(_) => "line is not UTF-8".to_owned(),
        };
        BadLine {
            raw: String::from_utf8_lossy(bytes).trim().to_owned(),
            line,
            error,
        }
    }
}

enum Mode {
    /// Not decided yet: the first non-blank line decides.
    Undecided,
    /// One document per line.
    Lines,
    /// Documents spanning lines: the rest of the file, split by the parser.
    Whole(VecDeque<Piece>),
}

struct FileReader {
    display: String,
    origin: Arc<str>,
    ctx: RecordContext,
    /// The file's lines, read in place: a [`Piece::Buffered`] document is
    /// a range of its buffer, not yet checked to be UTF-8.
    read: LineReader<Box<dyn Read + Send>>,
    mode: Mode,
    line: u64,
    path: PathBuf,
}

impl FileReader {
    /// The dead letter for `bad`, read from this file.
    fn dead_letter(&self, bad: BadLine) -> DeadLetter {
        DeadLetter {
            origin: self.display.clone(),
            line: Some(bad.line),
            record_index: None,
            table: self.ctx.default_table.as_deref().map(str::to_owned),
            shard: Some(self.ctx.shard.to_string()),
            sequence_number: None,
            error: bad.error,
            raw: bad.raw,
        }
    }

    fn open(
        path: PathBuf,
        ctx: RecordContext,
        progress: ReplayProgress,
    ) -> Result<Self, ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.clone(),
            source,
        };
        let file = Counted {
            inner: File::open(&path).map_err(io)?,
            progress,
        };
        // Two bytes tell gzip; past them, the line reader's reads are
        // large enough to bypass this buffer (no copy through it).
        let mut peek = BufReader::with_capacity(2, file);
        let gzip = peek.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn Read + Send> = if gzip {
            Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, peek)))
        } else {
            Box::new(peek)
        };
        let lines_by_name = {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let name = name.strip_suffix(".gz").unwrap_or(name);
            name.ends_with(".jsonl") || name.ends_with(".ndjson")
        };
        Ok(FileReader {
            display: path.display().to_string(),
            origin: path.display().to_string().into(),
            ctx,
            read: LineReader::new(input),
            mode: if lines_by_name {
                Mode::Lines
            } else {
                Mode::Undecided
            },
            line: 0,
            path,
        })
    }

    fn next_document(&mut self) -> Result<Option<Piece>, ReplayError> {
        loop {
            if let Mode::Whole(pieces) = &mut self.mode {
                return Ok(pieces.pop_front());
            }
            let range = self.read.next_line().map_err(|source| ReplayError::Io {
                path: self.path.clone(),
                source,
            })?;
            let Some(mut range) = range else {
                return Ok(None);
            };
            self.line += 1;
            let line = self.line;
            // A byte-order mark, which some Windows tools write first in a
            // UTF-8 file, is neither JSON nor data.
            if line == 1 && self.read.bytes()[range.clone()].starts_with(BOM) {
                range.start += BOM.len();
            }
            // JSON's whitespace is ASCII.
            let text = self.read.bytes()[range.clone()].trim_ascii();
            if text.is_empty() {
                continue;
            }
            if matches!(self.mode, Mode::Undecided) {
                // A line that is not text decides nothing.
                let Ok(first) = std::str::from_utf8(text) else {
                    return Ok(Some(Piece::Bad(BadLine::not_utf8(text, line))));
                };
                // A first line that is a whole JSON value means JSON Lines; one
                // that ends mid-value means a document spread over lines.
                match serde_json::from_str::<serde::de::IgnoredAny>(first) {
                    Err(e) if e.is_eof() => {
                        let first = first.to_owned();
                        self.mode = Mode::Whole(self.read_whole(first, line)?);
                        continue;
                    }
                    _ => self.mode = Mode::Lines,
                }
            }
            return Ok(Some(Piece::Buffered { line, range }));
        }
    }

    /// Reads the rest of the file and splits it into documents.
    fn read_whole(
        &mut self,
        first: String,
        first_line: u64,
    ) -> Result<VecDeque<Piece>, ReplayError> {
        let mut bytes = first.into_bytes();
        bytes.push(b'\n');
        self.read
            .read_rest(&mut bytes)
            .map_err(|source| ReplayError::Io {
                path: self.path.clone(),
                source,
            })?;
        // Bytes that are not UTF-8 are never replaced: documents before them
        // are read, and everything from the broken document on is one dead
        // letter that names the byte.
        let (all, bad_utf8) = match std::str::from_utf8(&bytes) {
            Ok(text) => (text, None),
            Err(e) => {
                let valid = e.valid_up_to();
                (
                    std::str::from_utf8(&bytes[..valid]).unwrap_or_default(),
                    Some(valid),
                )
            }
        };
        let line_at = |offset: usize| {
            first_line + bytes[..offset].iter().filter(|&&b| b == b'\n').count() as u64
        };
        let rest_from = |start: usize| {
            let skip = bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            start + skip
        };
        let mut pieces = VecDeque::new();
        let mut stream = serde_json::Deserializer::from_str(all).into_iter::<&RawValue>();
        let mut start = 0;
        loop {
            match stream.next() {
                Some(Ok(doc)) => {
                    pieces.push_back(Piece::Document {
                        text: doc.get().to_owned(),
                        line: line_at(rest_from(start)),
                    });
                    start = stream.byte_offset();
                }
                end => {
                    let offset = rest_from(start);
                    let error = match (end, bad_utf8) {
                        (Some(Err(e)), None) => format!("not valid JSON: {e}"),
                        (_, Some(at)) => format!("line {} is not UTF-8", line_at(at)),
                        (_, None) => break,
                    };
                    if offset < bytes.len() {
                        // The parser cannot find the next document after an
                        // error: the rest of the file is one dead letter.
                        pieces.push_back(Piece::Bad(BadLine {
                            raw: String::from_utf8_lossy(&bytes[offset..])
                                .trim_end()
                                .to_owned(),
                            line: line_at(offset),
                            error,
                        }));
                    }
                    break;
                }
            }
        }
        Ok(pieces)
    }
}

/// The capture files under `path`, in name order.
fn capture_files(path: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| ReplayError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ReplayError::Io {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let ty = entry.file_type().map_err(|source| ReplayError::Io {
                path: p.clone(),
                source,
            })?;
            if ty.is_dir() {
                dirs.push(p);
            } else if is_capture_name(&name) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_capture_name(name: &str) -> bool {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The shard a capture file stands for: its name without extensions.
pub fn shard_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let stem = [".jsonl", ".ndjson", ".json"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    stem.to_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A page of one insert whose key is `k<seq>`, on one line.
    fn page(seq: u64) -> String {
        format!(
            r#"{{"Records":[{{"eventID":"{seq}","eventName":"INSERT","dynamodb":{{"Keys":{{"id":{{"S":"k{seq}"}}}},"SequenceNumber":"{seq}"}}}}]}}"#
        )
    }

    /// Replays the files under `dir` as table `orders`.
    fn config(dir: &Path, batch_size: usize, batch_bytes: u64) -> ReplayConfig {
        ReplayConfig {
            path: dir.to_owned(),
            table: Some("orders".into()),
            batch_size,
            batch_bytes,
            reading: ImageReading::default(),
        }
    }

    /// Every batch read: the sequence numbers of the changes, and the dead
    /// letters.
    fn read_all(source: &mut ReplaySource) -> (Vec<String>, Vec<DeadLetter>) {
        let (mut changes, mut letters) = (Vec::new(), Vec::new());
        while let Some(batch) = source.next_batch().unwrap() {
            changes.extend(
                batch
                    .changes
                    .iter()
                    .map(|c| c.source.sequence_number.to_string()),
            );
            letters.extend(batch.dead_letters);
        }
        (changes, letters)
    }

    const PAGE: &str = r#"{"Records":[{"eventID":"1","eventName":"INSERT","dynamodb":{"Keys":{"id":{"N":"1"}},"SequenceNumber":"1"}}]}"#;

    #[test]
    fn progress_counts_bytes_as_stored_up_to_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.jsonl");
        std::fs::write(&plain, format!("{PAGE}\n").repeat(200)).unwrap();
        let gz = dir.path().join("b.jsonl.gz");
        let mut encoder =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        encoder
            .write_all(format!("{PAGE}\n").repeat(200).as_bytes())
            .unwrap();
        encoder.finish().unwrap();
        let sizes = [&plain, &gz].map(|p| std::fs::metadata(p).unwrap().len());

        let config = config(dir.path(), 64, 1 << 20);
        let mut source = ReplaySource::open(&config, Positions::new()).unwrap();
        let progress = source.progress();
        assert_eq!(progress.bytes_total(), sizes[0] + sizes[1]);
        assert_eq!(progress.bytes_read(), 0);
        let mut changes = 0;
        while let Some(batch) = source.next_batch().unwrap() {
            changes += batch.changes.len();
            assert!(progress.bytes_read() <= progress.bytes_total());
        }
        assert_eq!(changes, 2, "one change per file; the rest repeat it");
        assert_eq!(
            progress.bytes_read(),
            progress.bytes_total(),
            "compressed bytes for the gzip file"
        );
    }

    #[test]
    fn a_batch_closes_at_its_byte_budget_with_whole_pages() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (1..=10).map(|s| page(s) + "\n").collect();
        std::fs::write(dir.path().join("s.jsonl"), text).unwrap();
        let one = page(1).len() as u64;
        // Two and a half pages: the third page is taken whole.
        let config = config(dir.path(), 1000, one * 5 / 2);
        let mut source = ReplaySource::open(&config, Positions::new()).unwrap();
        let mut sizes = Vec::new();
        while let Some(batch) = source.next_batch().unwrap() {
            sizes.push(batch.changes.len());
        }
        assert_eq!(sizes, [3, 3, 3, 1]);

        // The change count still closes a batch first when it is smaller.
        let config = ReplayConfig {
            batch_size: 2,
            batch_bytes: 1 << 20,
            ..config
        };
        let mut source = ReplaySource::open(&config, Positions::new()).unwrap();
        let first = source.next_batch().unwrap().unwrap();
        assert_eq!(first.changes.len(), 2);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_dead_letter_and_the_rest_flows() {
        let dir = tempfile::tempdir().unwrap();
        // Bad bytes inside a string, on the first line (before the reader
        // knows the file is JSON Lines) and on a later one.
        let bad = |seq: u64| {
            let mut line = page(seq).replace(&format!("k{seq}"), "k#").into_bytes();
            let at = line.iter().position(|&b| b == b'#').unwrap();
            line[at] = 0xff;
            line
        };
        let mut text = bad(1);
        for seq in 2..=3 {
            text.push(b'\n');
            text.extend(page(seq).bytes());
        }
        text.push(b'\n');
        text.extend(bad(4));
        text.extend(format!("\n{}\n", page(5)).bytes());
        std::fs::write(dir.path().join("s.jsonl"), text).unwrap();
        let config = config(dir.path(), 1000, 1 << 20);
        let mut source = ReplaySource::open(&config, Positions::new()).unwrap();
        let (changes, letters) = read_all(&mut source);
        assert_eq!(changes, ["2", "3", "5"]);
        let lines: Vec<_> = letters.iter().map(|l| l.line).collect();
        assert_eq!(lines, [Some(1), Some(4)]);
        for letter in &letters {
            assert!(
                letter
                    .error
                    .starts_with("line is not UTF-8: invalid utf-8 sequence"),
                "{}",
                letter.error
            );
            assert!(letter.raw.contains("k\u{fffd}"), "{}", letter.raw);
            assert_eq!(letter.table.as_deref(), Some("orders"));
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_first_line_is_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = [1, 2].map(page).into();
        std::fs::write(
            dir.path().join("a.jsonl"),
            format!("\u{FEFF}{}", lines.join("\n")),
        )
        .unwrap();
        // A document spread over lines: its first line ends mid-value.
        let spread = page(3).replacen('{', "{\n", 1);
        std::fs::write(dir.path().join("b.json"), format!("\u{FEFF}{spread}")).unwrap();
        let config = config(dir.path(), 1000, 1 << 20);
        let mut source = ReplaySource::open(&config, Positions::new()).unwrap();
        let (changes, letters) = read_all(&mut source);
        assert_eq!(changes, ["1", "2", "3"]);
        assert!(letters.is_empty(), "{letters:?}");
    }

    #[test]
    fn a_repeated_record_is_skipped_and_one_out_of_order_is_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        // A capture tool restarted and wrote 2 and 3 again; 4 then came late.
        let lines: Vec<String> = [1, 2, 3, 2, 3, 5, 4, 6].map(page).into();
        std::fs::write(dir.path().join("s.jsonl"), lines.join("\n")).unwrap();
        let config = config(dir.path(), 1000, 1 << 20);
        let mut source = ReplaySource::open(&config, Positions::new()).unwrap();
        let (changes, letters) = read_all(&mut source);
        assert_eq!(changes, ["1", "2", "3", "5", "6"]);
        assert_eq!(source.stats().duplicates, 2);
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].line, Some(7));
        assert_eq!(letters[0].sequence_number.as_deref(), Some("4"));
        assert!(
            letters[0].error.contains("sequence number 4 comes after 5"),
            "{}",
            letters[0].error
        );
    }

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn the_window_knows_what_it_has_seen_and_nothing_else() {
        let mut window = SeenWindow::default();
        assert_eq!(window.last(), None);
        for n in [3, 7, 10, 25] {
            window.push(seq(n));
        }
        assert_eq!(window.last(), Some(&seq(25)));
        for n in [3, 7, 10, 25] {
            assert!(window.contains(&seq(n)), "{n}");
        }
        for n in [1, 4, 9, 11, 26] {
            assert!(!window.contains(&seq(n)), "{n}");
        }
    }

    #[test]
    fn the_window_forgets_the_oldest_beyond_its_capacity() {
        let mut window = SeenWindow::default();
        let total = SeenWindow::CAPACITY as u64 + 10;
        for n in 1..=total {
            window.push(seq(n));
        }
        assert_eq!(window.order.len(), SeenWindow::CAPACITY);
        assert!(!window.contains(&seq(10)), "pushed out");
        assert!(window.contains(&seq(11)), "the oldest kept");
        assert!(window.contains(&seq(total)));
    }
}
