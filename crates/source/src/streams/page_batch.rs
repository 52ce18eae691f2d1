//! A GetRecords answer to the batch the pipeline gets, parsed off the async
//! runtime.
//!
//! A page of a thousand records takes milliseconds to parse: long enough to
//! hold up every other shard's polling if it ran on one of the runtime's two
//! workers. So the page goes to the source's parse thread ([`Parser`]), is
//! read there by the page parser the replay source uses (`crate::page`), and
//! comes back as a batch with what the reader and the shard board need to
//! know about it.
//!
//! One thread, like the replay source's reader: every batch is allocated
//! there, and the pipeline hands spent batches back to be freed there too.
//! Freeing memory on a thread other than the one that allocated it is the
//! allocator's slow path; on tokio's blocking pool (a thread per call, in
//! turn) it was a sizeable part of the live path's extra cost. Where pages
//! are parsed in place (one CPU), spent batches wait for the next page and
//! are freed by the task that reads it, on the runtime's one worker.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dynamo_cdc_core::{Origin, SequenceNumber, ShardKey, SourceBatch};

use crate::events::Request;
use crate::page::{PageOrigin, read_page};
use crate::record::{ImageReading, RecordContext};
use crate::streams::api::{ApiError, ApiErrorKind};
use crate::streams::board::PageReport;
use crate::streams::raw_records::give_back;

/// A page, read.
#[derive(Debug)]
pub(crate) struct PageBatch {
    /// Changes and dead letters not read before (see `read`).
    pub(crate) batch: SourceBatch,
    /// The iterator for the next call; `None` once the shard is read to its
    /// end.
    pub(crate) next_iterator: Option<String>,
    /// The newest sequence number read, this page included.
    pub(crate) last_read: Option<SequenceNumber>,
    /// What the shard board is told about the page.
    pub(crate) report: PageReport,
}

/// What the parse thread is asked to do.
enum Job {
    Parse {
        body: Vec<u8>,
        key: ShardKey,
        origin: Arc<str>,
        keep: Keep,
        reply: tokio::sync::oneshot::Sender<Result<PageBatch, ApiError>>,
    },
    Free(SourceBatch),
}

/// Which records of a page are new to the reader.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keep {
    /// Records at or before this were read already: an iterator acquired
    /// again after the last record read may repeat some.
    pub after: Option<SequenceNumber>,
    /// Changes created before this (epoch milliseconds) are left out: they
    /// precede a latest start (see `crate::streams::latest`).
    pub created_since: Option<i64>,
}

/// The source's parse thread. It ends when the source and its readers are
/// gone (every handle dropped).
#[derive(Debug)]
pub(crate) struct Parser {
    parsing: Parsing,
    reading: ImageReading,
}

/// Where pages are parsed and spent batches freed.
#[derive(Debug)]
enum Parsing {
    /// On the parse thread, through its queue.
    Thread(std::sync::mpsc::Sender<Job>),
    /// By the task that reads each page (on one CPU, see [`Parser::start`]),
    /// which first frees the batches handed back since its last page (see
    /// [`Parser::free`]).
    InPlace(Mutex<Vec<SourceBatch>>),
}

/// Spent batches kept for the reader to free, at most. Between two pages
/// the pipeline hands back about one; past this many (the readers stopped
/// while the pipeline drains) the rest are freed where they are handed back.
const SPENT_KEPT: usize = 16;

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Parse { .. } => "Parse",
            Job::Free(_) => "Free",
        })
    }
}

impl Parser {
    /// Starts the thread, which reads images as `reading` says. Where the process may use one CPU only
    /// there is no thread: a page is parsed by the task that read it, since
    /// a thread of its own could not run beside it, and each hand-over
    /// would only switch threads.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn start(reading: ImageReading) -> std::io::Result<Parser> {
        if crate::one_cpu() {
            tracing::debug!("one CPU: each page is parsed by the task that read it");
            return Ok(Parser::in_place(reading));
        }
        let (jobs, todo) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("page-parser".into())
            .spawn(move || {
                for job in todo {
                    match job {
                        Job::Parse {
                            body,
                            key,
                            origin,
                            keep,
                            reply,
                        } => {
                            let parsed = read_guarded(body, &key, &origin, &keep, reading);
                            // The reader may have stopped meanwhile.
                            let _ = reply.send(parsed);
                        }
                        Job::Free(batch) => drop(batch),
                    }
                }
            })?;
        Ok(Parser {
            parsing: Parsing::Thread(jobs),
            reading,
        })
    }

    /// A parser without a thread: pages are parsed by the task that reads
    /// them, and spent batches are freed by the task that reads the next.
    fn in_place(reading: ImageReading) -> Parser {
        Parser {
            parsing: Parsing::InPlace(Mutex::default()),
            reading,
        }
    }

    /// Reads a GetRecords body of `key`'s shard from the stream `origin` on
    /// the parse thread, keeping what `keep` says is new.
    ///
    /// # Errors
    /// A transient [`ApiError`] when the body is not a GetRecords page (the
    /// call is retried, as for a garbled answer); a fatal one if the parser
    /// panicked or is gone.
    pub(crate) async fn read(
        &self,
        body: Vec<u8>,
        key: &ShardKey,
        origin: &Arc<str>,
        keep: Keep,
    ) -> Result<PageBatch, ApiError> {
        let jobs = match &self.parsing {
            Parsing::Thread(jobs) => jobs,
            Parsing::InPlace(spent) => {
                // Freed here, on the thread that parsed them, once the lock
                // is released (at the end of the `let`).
                let spent = std::mem::take(&mut *lock(spent));
                drop(spent);
                return read_guarded(body, key, origin, &keep, self.reading);
            }
        };
        let gone = || ApiError {
            kind: ApiErrorKind::Fatal,
            operation: Request::GetRecords.name(),
            message: "the page parser stopped".to_owned(),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        jobs.send(Job::Parse {
            body,
            key: key.clone(),
            origin: origin.clone(),
            keep,
            reply,
        })
        .map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Frees a spent batch on the thread that made it: the parse thread,
    /// or without one the reader task that parses the next page.
    ///
    /// On one CPU the pipeline and the readers take turns on the core, and
    /// a block freed by a thread that did not allocate it goes the
    /// allocator's cross-thread way (queued, then collected by its owner).
    /// Freed by the reader instead, F1 on the live path took 0.92 of the
    /// CPU (two sets of fifteen alternating rounds).
    pub(crate) fn free(&self, batch: SourceBatch) {
        match &self.parsing {
            // When the thread is gone the batch is dropped here.
            Parsing::Thread(jobs) => drop(jobs.send(Job::Free(batch))),
            Parsing::InPlace(spent) => {
                let mut spent = lock(spent);
                if spent.len() < SPENT_KEPT {
                    spent.push(batch);
                }
                // else dropped here, after the lock
            }
        }
    }
}

/// The spent batches, whatever a panic elsewhere left of them.
fn lock(spent: &Mutex<Vec<SourceBatch>>) -> MutexGuard<'_, Vec<SourceBatch>> {
    spent.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`read_now`], with a panic in the parser made a fatal error (a bug: the
/// source stops with it rather than lose the shard), and the body given
/// back for the next call, since the page owns nothing of it.
fn read_guarded(
    body: Vec<u8>,
    key: &ShardKey,
    origin: &Arc<str>,
    keep: &Keep,
    reading: ImageReading,
) -> Result<PageBatch, ApiError> {
    let parsed = std::panic::catch_unwind(|| read_now(&body, key, origin, keep, reading))
        .unwrap_or_else(|_| {
            Err(ApiError {
                kind: ApiErrorKind::Fatal,
                operation: Request::GetRecords.name(),
                message: "the page parser panicked".to_owned(),
            })
        });
    give_back(body);
    parsed
}

/// [`read`], on the calling thread.
fn read_now(
    body: &[u8],
    key: &ShardKey,
    origin: &Arc<str>,
    keep: &Keep,
    reading: ImageReading,
) -> Result<PageBatch, ApiError> {
    let last_read = keep.after.clone();
    let not_a_page = |why: String| ApiError {
        kind: ApiErrorKind::Transient,
        operation: Request::GetRecords.name(),
        message: format!("GetRecords answered with a body that is not a page: {why}"),
    };
    let text = simdutf8::compat::from_utf8(body).map_err(|e| not_a_page(e.to_string()))?;
    let mut ctx = RecordContext::new(key.shard.clone(), Some(key.table.clone()));
    ctx.reading = reading;
    let at = PageOrigin { origin, line: None };
    let page = read_page(text, &mut ctx, at).map_err(not_a_page)?;

    let is_new = |seq: &SequenceNumber| last_read.as_ref().is_none_or(|last| seq > last);
    let mut newest: Option<SequenceNumber> = None;
    let mut batch = SourceBatch {
        changes: Vec::with_capacity(page.changes.len()),
        origins: Vec::with_capacity(page.changes.len()),
        ..SourceBatch::default()
    };
    for letter in page.dead_letters {
        // A letter whose sequence number cannot be read is kept: nothing is
        // dropped on a guess.
        let seq = letter
            .sequence_number
            .as_deref()
            .and_then(|s| SequenceNumber::parse(s).ok());
        if let Some(seq) = seq {
            if !is_new(&seq) {
                continue;
            }
            newest = newest.max(Some(seq));
        }
        batch.dead_letters.push(letter);
    }
    let mut newest_ms = None;
    for parsed in page.changes {
        let seq = &parsed.change.source.sequence_number;
        if !is_new(seq) {
            continue;
        }
        if newest.as_ref().is_none_or(|n| seq > n) {
            newest = Some(seq.clone());
        }
        newest_ms = newest_ms.max(parsed.change.source.approx_creation_ms);
        // A change without a creation time is kept: nothing is dropped on
        // a guess.
        let created = parsed.change.source.approx_creation_ms;
        if let (Some(since), Some(created)) = (keep.created_since, created)
            && created < since
        {
            continue;
        }
        batch.origins.push(Origin {
            origin: origin.clone(),
            line: None,
            record_index: parsed.index,
        });
        batch.changes.push(parsed.change);
    }
    let report = PageReport {
        records: page.records,
        last: batch
            .changes
            .last()
            .map(|c| c.source.sequence_number.clone()),
        newest_ms,
    };
    Ok(PageBatch {
        batch,
        next_iterator: page.next_iterator,
        last_read: last_read.max(newest),
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::api::RecordsPage;

    fn record(seq: u32, n: &str, created_s: u32) -> String {
        format!(
            r#"{{"eventID":"e{seq}","eventName":"INSERT","dynamodb":{{"ApproximateCreationDateTime":{created_s},"Keys":{{"id":{{"N":"{seq}"}}}},"NewImage":{{"id":{{"N":"{seq}"}},"n":{{"N":"{n}"}}}},"SequenceNumber":"{seq}"}}}}"#
        )
    }

    fn key() -> ShardKey {
        ShardKey::new("orders", "shardId-1")
    }

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn read(page: &RecordsPage, last_read: Option<u32>) -> Result<PageBatch, ApiError> {
        read_now(
            &page.body,
            &key(),
            &Arc::from("arn:stream"),
            &Keep {
                after: last_read.map(seq),
                created_since: None,
            },
            ImageReading::default(),
        )
    }

    fn seqs(b: &PageBatch) -> Vec<String> {
        b.batch
            .changes
            .iter()
            .map(|c| c.source.sequence_number.to_string())
            .collect()
    }

    #[test]
    fn a_page_becomes_a_batch_with_its_iterator_and_report() {
        let page = RecordsPage::from_records(
            &[record(5, "1", 1_700_000_002), record(6, "2", 1_700_000_001)],
            Some("next"),
        );
        let b = read(&page, None).unwrap();
        assert_eq!(seqs(&b), ["5", "6"]);
        assert_eq!(b.batch.origins[1].record_index, Some(1));
        assert_eq!(&*b.batch.origins[1].origin, "arn:stream");
        assert_eq!(b.next_iterator.as_deref(), Some("next"));
        assert_eq!(b.last_read, Some(seq(6)));
        assert_eq!(b.report.records, 2);
        assert_eq!(b.report.last, Some(seq(6)));
        assert_eq!(b.report.newest_ms, Some(1_700_000_002_000));
    }

    #[test]
    fn records_already_read_are_dropped_and_bad_ones_dead_lettered() {
        let too_precise = "123456789012345678901234567890123456789";
        let page = RecordsPage::from_records(
            &[
                record(4, "1", 1),
                record(5, too_precise, 1),
                record(6, "1", 1),
                record(7, too_precise, 1),
            ],
            None,
        );
        let b = read(&page, Some(5)).unwrap();
        assert_eq!(seqs(&b), ["6"]);
        let letters: Vec<_> = b
            .batch
            .dead_letters
            .iter()
            .map(|d| d.sequence_number.as_deref())
            .collect();
        assert_eq!(letters, [Some("7")], "5 was read before");
        assert_eq!(b.batch.dead_letters[0].origin, "arn:stream");
        assert_eq!(b.last_read, Some(seq(7)));
        assert_eq!(b.report.last, Some(seq(6)), "the last change");
        assert_eq!(b.report.records, 4);
        assert_eq!(b.next_iterator, None);
    }

    #[test]
    fn changes_created_before_a_latest_start_are_left_out_but_read() {
        let untimed = r#"{"eventID":"e9","eventName":"INSERT","dynamodb":{"Keys":{"id":{"N":"9"}},"SequenceNumber":"9"}}"#;
        let page = RecordsPage::from_records(
            &[
                record(6, "1", 1_700_000_000),
                record(7, "1", 1_700_000_001),
                record(8, "1", 1_700_000_002),
                untimed.to_owned(),
            ],
            Some("next"),
        );
        let keep = Keep {
            after: None,
            created_since: Some(1_700_000_001_000),
        };
        let b = read_now(
            &page.body,
            &key(),
            &Arc::from("arn:stream"),
            &keep,
            ImageReading::default(),
        )
        .unwrap();
        assert_eq!(seqs(&b), ["7", "8", "9"], "from the start on; untimed kept");
        assert_eq!(b.last_read, Some(seq(9)), "what was left out was read");
        assert_eq!(b.report.records, 4);
    }

    #[test]
    fn an_empty_page_keeps_the_last_read() {
        let b = read(&RecordsPage::from_records(&[], Some("it")), Some(9)).unwrap();
        assert!(b.batch.is_empty());
        assert_eq!(b.last_read, Some(seq(9)));
        assert_eq!((b.report.records, b.report.last), (0, None));
    }

    /// With a thread of its own (several CPUs) or in place (one), the
    /// parser reads pages alike and takes spent batches back.
    #[test]
    fn the_parser_reads_pages_and_frees_batches_with_or_without_a_thread() {
        let threaded = Parser::start(ImageReading::default()).unwrap();
        let in_place = Parser::in_place(ImageReading::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for parser in [threaded, in_place] {
            let page = RecordsPage::from_records(&[record(5, "1", 1)], None);
            let b = runtime
                .block_on(parser.read(page.body, &key(), &Arc::from("arn:stream"), Keep::default()))
                .unwrap();
            assert_eq!(seqs(&b), ["5"]);
            parser.free(b.batch);
            let bad = runtime
                .block_on(parser.read(b"nope".to_vec(), &key(), &Arc::from("a"), Keep::default()))
                .unwrap_err();
            assert_eq!(bad.kind, ApiErrorKind::Transient);
        }
    }

    /// In place, a spent batch waits for the next page and is freed by the
    /// reader that parses it; the queue is bounded.
    #[test]
    fn in_place_spent_batches_are_freed_by_the_next_read() {
        let parser = Parser::in_place(ImageReading::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let page = || RecordsPage::from_records(&[record(5, "1", 1)], None).body;
        let spent = |parser: &Parser| match &parser.parsing {
            Parsing::InPlace(spent) => lock(spent).len(),
            Parsing::Thread(_) => unreachable!("made in place"),
        };
        let b = runtime
            .block_on(parser.read(page(), &key(), &Arc::from("s"), Keep::default()))
            .unwrap();
        parser.free(b.batch);
        assert_eq!(spent(&parser), 1);
        let b = runtime
            .block_on(parser.read(page(), &key(), &Arc::from("s"), Keep::default()))
            .unwrap();
        assert_eq!(spent(&parser), 0, "freed before the page");
        parser.free(b.batch);
        for _ in 0..SPENT_KEPT + 2 {
            parser.free(SourceBatch::default());
        }
        assert_eq!(spent(&parser), SPENT_KEPT);
    }

    #[test]
    fn a_body_that_is_not_a_page_is_retried() {
        for body in [&b"<html>busy</html>"[..], b"{\"Records\":[\xff]}", b"{}"] {
            let page = RecordsPage {
                body: body.to_vec(),
            };
            let e = read(&page, None).unwrap_err();
            assert_eq!(e.kind, ApiErrorKind::Transient, "{e}");
            assert!(e.message.contains("not a page"), "{e}");
        }
    }
}
