//! One page of stream records to changes and dead letters, the same way for
//! the live and the replay source.
//!
//! A page is a GetRecords answer (`{"Records": [...], "NextShardIterator":
//! ...}`), a Lambda event (`{"Records": [...]}`), or, in captures, a single
//! stream record. The fast parser reads a valid page in one pass; when it
//! gives up, the page is split into records and each is parsed alone, so one
//! bad record becomes a dead letter naming what is wrong and costs no other.

use std::borrow::Cow;

use dynamo_cdc_core::{Change, DeadLetter};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::record::{RecordContext, parse_record};

/// A page, read.
#[derive(Debug, Default)]
pub(crate) struct Page<'t> {
    /// The records that became changes, in page order.
    pub(crate) changes: Vec<Parsed<'t>>,
    /// The records that could not be read, each saying why.
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// GetRecords' `NextShardIterator`, when the page has one.
    pub(crate) next_iterator: Option<String>,
    /// Records in the page: changes and dead letters.
    pub(crate) records: usize,
}

/// One record that became a change.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    pub(crate) change: Change,
    /// Its index in `Records`; `None` for a document that is one record.
    pub(crate) index: Option<usize>,
    /// Its text, when the record-by-record path had it at hand (for a dead
    /// letter the caller may still write, e.g. a record out of order).
    pub(crate) raw: Option<&'t str>,
}

/// Where the page was read, for dead letters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageOrigin<'a> {
    /// The capture file or the stream ARN.
    pub(crate) origin: &'a str,
    /// The page's 1-based line in a capture file.
    pub(crate) line: Option<u64>,
}

/// The top level of a page, records unread.
#[derive(Deserialize)]
struct Document<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    dynamodb: Option<&'a RawValue>,
    #[serde(rename = "NextShardIterator", borrow, default)]
    next_iterator: Option<Cow<'a, str>>,
}

/// Reads a page.
///
/// # Errors
/// Why the text as a whole is not a page (not JSON, or neither records nor
/// a record). Bad records are not errors: they are the page's dead letters.
pub(crate) fn read_page<'t>(
    text: &'t str,
    ctx: &mut RecordContext,
    at: PageOrigin<'_>,
) -> Result<Page<'t>, String> {
    if let Some(page) = crate::fast::parse_page(text, ctx) {
        return Ok(Page {
            records: page.changes.len(),
            changes: page
                .changes
                .into_iter()
                .enumerate()
                .map(|(index, change)| Parsed {
                    change,
                    index: Some(index),
                    raw: None,
                })
                .collect(),
            dead_letters: Vec::new(),
            next_iterator: page.next_iterator,
        });
    }
    let doc: Document<'t> =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let next_iterator = doc.next_iterator.map(Cow::into_owned);
    let (records, paged): (Vec<&'t RawValue>, bool) = match (doc.records, doc.dynamodb) {
        (Some(records), _) => (records, true),
        (None, Some(_)) => {
            let single: &'t RawValue =
                serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
            (vec![single], false)
        }
        (None, None) => {
            return Err(
                "neither a GetRecords response, a Lambda event nor a stream record \
                        (no `Records` array and no `dynamodb` object)"
                    .into(),
            );
        }
    };
    let mut page = Page {
        records: records.len(),
        next_iterator,
        ..Page::default()
    };
    for (index, raw) in records.into_iter().enumerate() {
        let raw = raw.get();
        let index = paged.then_some(index);
        match parse_record(raw, ctx) {
            Ok(change) => page.changes.push(Parsed {
                change,
                index,
                raw: Some(raw),
            }),
            Err((error, hints)) => page.dead_letters.push(DeadLetter {
                origin: at.origin.to_owned(),
                line: at.line,
                record_index: index,
                table: hints.table,
                shard: Some(ctx.shard.to_string()),
                sequence_number: hints.sequence_number,
                error: error.to_string(),
                raw: raw.to_owned(),
            }),
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: PageOrigin<'static> = PageOrigin {
        origin: "capture.jsonl",
        line: Some(3),
    };

    fn ctx() -> RecordContext {
        RecordContext::new("shard-1".into(), Some("orders".into()))
    }

    fn record(seq: u32, n: &str) -> String {
        format!(
            r#"{{"eventID":"e{seq}","eventName":"INSERT","dynamodb":{{"Keys":{{"id":{{"N":"{seq}"}}}},"NewImage":{{"id":{{"N":"{seq}"}},"n":{{"N":"{n}"}}}},"SequenceNumber":"{seq}"}}}}"#
        )
    }

    fn seqs(page: &Page<'_>) -> Vec<String> {
        page.changes
            .iter()
            .map(|p| p.change.source.sequence_number.to_string())
            .collect()
    }

    #[test]
    fn a_valid_page_is_read_whole_with_its_iterator() {
        let text = format!(
            r#"{{"Records":[{},{}],"NextShardIterator":"it-2"}}"#,
            record(1, "1"),
            record(2, "2")
        );
        let page = read_page(&text, &mut ctx(), AT).unwrap();
        assert_eq!(seqs(&page), ["1", "2"]);
        assert_eq!(page.records, 2);
        assert_eq!(page.next_iterator.as_deref(), Some("it-2"));
        assert!(page.dead_letters.is_empty());
        assert_eq!(page.changes[1].index, Some(1));
    }

    #[test]
    fn a_bad_record_costs_only_itself() {
        let too_precise = "123456789012345678901234567890123456789";
        let text = format!(
            r#"{{"Records":[{},{},{}],"NextShardIterator":"it-2"}}"#,
            record(1, "1"),
            record(2, too_precise),
            record(3, "3")
        );
        let page = read_page(&text, &mut ctx(), AT).unwrap();
        assert_eq!(seqs(&page), ["1", "3"]);
        assert_eq!(page.records, 3);
        assert_eq!(page.next_iterator.as_deref(), Some("it-2"));
        assert_eq!(page.changes[1].index, Some(2));
        assert_eq!(page.changes[1].raw, Some(record(3, "3").as_str()));
        let [letter] = page.dead_letters.as_slice() else {
            panic!("one dead letter: {:?}", page.dead_letters);
        };
        assert_eq!(
            (letter.origin.as_str(), letter.line, letter.record_index),
            ("capture.jsonl", Some(3), Some(1))
        );
        assert_eq!(letter.sequence_number.as_deref(), Some("2"));
        assert_eq!(letter.table.as_deref(), Some("orders"));
        assert_eq!(letter.shard.as_deref(), Some("shard-1"));
        assert!(letter.error.contains("NewImage.n"), "{}", letter.error);
        assert_eq!(letter.raw, record(2, too_precise));
    }

    #[test]
    fn a_document_that_is_one_record_is_read_as_one() {
        let text = record(7, "7");
        let page = read_page(&text, &mut ctx(), AT).unwrap();
        assert_eq!(seqs(&page), ["7"]);
        assert_eq!(page.changes[0].index, None);
        assert_eq!(page.next_iterator, None);
    }

    #[test]
    fn what_is_not_a_page_says_why() {
        let e = read_page(r#"{"Records": [1,"#, &mut ctx(), AT).unwrap_err();
        assert!(e.starts_with("not valid JSON: "), "{e}");
        let e = read_page(r#"{"Items": []}"#, &mut ctx(), AT).unwrap_err();
        assert!(e.starts_with("neither a GetRecords response"), "{e}");
    }
}
