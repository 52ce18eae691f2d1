//! One DynamoDB Streams record (as GetRecords and Lambda deliver it) to a
//! [`Change`].

use std::borrow::Cow;
use std::sync::Arc;

use chrono::DateTime;
use dynamo_cdc_core::{Change, Item, ItemSeed, Op, PathStack, SequenceNumber, SourceInfo};
use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The JSON shape of a stream record. Unknown fields are ignored: AWS adds
/// fields over time and captures carry extra ones. Images are parsed in the
/// same pass, straight into items.
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    #[serde(rename = "eventName", borrow)]
    event_name: Option<Cow<'a, str>>,
    #[serde(rename = "eventSourceARN", borrow)]
    event_source_arn: Option<Cow<'a, str>>,
    #[serde(rename = "userIdentity", borrow)]
    user_identity: Option<UserIdentity<'a>>,
    #[serde(borrow)]
    dynamodb: Option<RawBody<'a>>,
}

#[derive(Deserialize)]
struct UserIdentity<'a> {
    // GetRecords says `Type`/`PrincipalId`, Lambda events `type`/`principalId`.
    #[serde(rename = "type", alias = "Type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "principalId", alias = "PrincipalId", borrow)]
    principal_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(rename = "ApproximateCreationDateTime", borrow)]
    approx_creation: Option<&'a RawValue>,
    #[serde(rename = "Keys", default, deserialize_with = "keys_image")]
    keys: Option<Item>,
    #[serde(rename = "NewImage", default, deserialize_with = "new_image")]
    new_image: Option<Item>,
    /// Checked only as JSON here: [`convert`] reads it when it is wanted.
    #[serde(rename = "OldImage", borrow)]
    old_image: Option<&'a RawValue>,
    #[serde(rename = "SequenceNumber", borrow)]
    sequence_number: Option<Cow<'a, str>>,
}

/// Only what a dead letter needs, read leniently when the full parse failed.
#[derive(Deserialize)]
struct HintRecord<'a> {
    #[serde(rename = "eventSourceARN", borrow)]
    event_source_arn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dynamodb: Option<HintBody<'a>>,
}

#[derive(Deserialize)]
struct HintBody<'a> {
    #[serde(rename = "SequenceNumber", borrow)]
    sequence_number: Option<Cow<'a, str>>,
}

fn image<'de, D: Deserializer<'de>>(d: D, root: &'static str) -> Result<Option<Item>, D::Error> {
    struct OptionalItem(&'static str);
    impl<'de> Visitor<'de> for OptionalItem {
        type Value = Option<Item>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} as a map of DynamoDB-JSON attributes", self.0)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            let path = PathStack::with_root(self.0);
            ItemSeed::new(&path).deserialize(d).map(Some)
        }
    }
    d.deserialize_option(OptionalItem(root))
}

fn keys_image<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Item>, D::Error> {
    image(d, "Keys")
}

fn new_image<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Item>, D::Error> {
    image(d, "NewImage")
}

/// Reads an old image's text, as the fast parser does when it can, with
/// serde's words for what is wrong when it cannot.
fn read_old_image(text: &str, ctx: &mut RecordContext) -> Result<Item, String> {
    if let Some(item) = crate::fast::parse_item(text, &mut ctx.unescaped) {
        return Ok(item);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match image(&mut de, "OldImage").and_then(|item| de.end().map(|()| item)) {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err("dynamodb.OldImage is not a map of DynamoDB-JSON attributes".into()),
        Err(e) => {
            // serde places the error within the image's own text, which
            // would mislead; the message names the attribute's path.
            let message = e.to_string();
            let at = format!(" at line {} column {}", e.line(), e.column());
            Err(message.strip_suffix(&at).unwrap_or(&message).to_owned())
        }
    }
}

/// Why a record could not be turned into a change. The text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Whether the old image of a MODIFY is read into an item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModifyOldImages {
    /// Read like every other image: some sink writes it (a message's
    /// `before`).
    #[default]
    Read,
    /// Checked as JSON and kept as its text ([`Change::unread_old_image`]):
    /// no sink reads it. A REMOVE's old image is read either way, since it
    /// is the row a delete shows.
    KeepUnread,
}

/// How a map or list attribute is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NestedValues {
    /// Into a tree ([`AttributeValue::M`](dynamo_cdc_core::AttributeValue::M),
    /// [`AttributeValue::L`](dynamo_cdc_core::AttributeValue::L)): some
    /// sink looks inside maps and lists.
    #[default]
    Trees,
    /// Written straight into its DynamoDB-JSON text, as
    /// [`AttributeValue::Nested`](dynamo_cdc_core::AttributeValue::Nested):
    /// every sink writes maps and lists as that text, so a tree would only
    /// be built to be rendered and freed.
    Text,
}

/// What the source reads of each image: what the sinks need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageReading {
    /// Whether a MODIFY's old image is read.
    pub modify_old_images: ModifyOldImages,
    /// How maps and lists are read.
    pub nested_values: NestedValues,
}

/// What the parser needs to know beyond the record itself.
#[derive(Debug, Clone)]
pub struct RecordContext {
    /// Table for records without `eventSourceARN`.
    pub default_table: Option<Arc<str>>,
    /// The shard the record belongs to.
    pub shard: Arc<str>,
    /// What is read of each image (everything, as trees, unless set).
    pub reading: ImageReading,
    /// Interned table names and stream ARNs, so that a page allocates them once.
    interned: Vec<Arc<str>>,
    /// The last `eventSourceARN` read, with its table: a shard's records
    /// all name the same stream, and reading the table out of an ARN costs
    /// more than comparing it with the last one.
    last_arn: Option<(Arc<str>, Arc<str>)>,
    /// Records in the last page read: the next page's vector is made this
    /// big, since a capture's pages are alike and growing it from empty
    /// copies every change a few times.
    pub(crate) last_page_records: usize,
    /// The page parser's buffer for unescaping strings, kept between pages.
    pub(crate) unescaped: Vec<u8>,
}

impl RecordContext {
    /// A context for records of `shard`.
    pub fn new(shard: Arc<str>, default_table: Option<Arc<str>>) -> Self {
        RecordContext {
            default_table,
            shard,
            reading: ImageReading::default(),
            interned: Vec::new(),
            last_arn: None,
            last_page_records: 0,
            unescaped: Vec::new(),
        }
    }

    /// The stream ARN and table of a record's `eventSourceARN`, or `None`
    /// when it names no valid table.
    fn source(&mut self, arn: &str) -> Option<(Arc<str>, Arc<str>)> {
        if let Some((last, table)) = &self.last_arn
            && **last == *arn
        {
            return Some((last.clone(), table.clone()));
        }
        let table = self.intern(table_from_arn(arn)?);
        let stream = self.intern(arn);
        self.last_arn = Some((stream.clone(), table.clone()));
        Some((stream, table))
    }

    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(found) = self.interned.iter().find(|s| &***s == text) {
            return found.clone();
        }
        let new: Arc<str> = text.into();
        if self.interned.len() < 64 {
            self.interned.push(new.clone());
        }
        new
    }
}

/// A record's sequence number and table, read cheaply for dead letters.
#[derive(Debug, Default, Clone)]
pub struct RecordHints {
    /// Sequence number, when the record has a readable one.
    pub sequence_number: Option<String>,
    /// Table, when the ARN or the context tells it.
    pub table: Option<String>,
}

/// Parses a stream record.
///
/// # Errors
/// [`RecordError`] naming the field that is missing or wrong, with the
/// attribute path for bad values, plus whatever could still be read.
pub fn parse_record(
    raw: &str,
    ctx: &mut RecordContext,
) -> Result<Change, (RecordError, RecordHints)> {
    let mut hints = RecordHints {
        table: ctx.default_table.as_deref().map(str::to_owned),
        ..RecordHints::default()
    };

    let record: RawRecord<'_> = match serde_json::from_str(raw) {
        Ok(r) => r,
        Err(e) => {
            // Say where the record stands even though it is broken.
            if let Ok(h) = serde_json::from_str::<HintRecord<'_>>(raw) {
                if let Some(name) = h.event_source_arn.as_deref().and_then(table_from_arn) {
                    hints.table = Some(name.to_owned());
                }
                hints.sequence_number = h
                    .dynamodb
                    .and_then(|b| b.sequence_number)
                    .map(Cow::into_owned);
            }
            let message = e.to_string();
            let message = if message.starts_with("at `") {
                message
            } else {
                format!("not a stream record: {message}")
            };
            return Err((RecordError(message), hints));
        }
    };
    convert(record.into(), ctx, hints)
}

/// A GetRecords response or Lambda event, every record typed in one pass.
#[cfg(test)]
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RawRecord<'a>>,
    #[serde(rename = "NextShardIterator")]
    next_iterator: Option<String>,
}

/// A whole page read with serde alone, `None` unless the page and every
/// record in it are valid: the reference the fast parser must agree with.
#[cfg(test)]
pub(crate) fn parse_page_serde(
    text: &str,
    ctx: &mut RecordContext,
) -> Option<crate::fast::FastPage> {
    let page: Page<'_> = serde_json::from_str(text).ok()?;
    let changes = page
        .records
        .into_iter()
        .map(|r| convert(r.into(), ctx, RecordHints::default()).ok())
        .collect::<Option<_>>()?;
    Some(crate::fast::FastPage {
        changes,
        next_iterator: page.next_iterator,
    })
}

/// A record's fields as either parser found them.
pub(crate) struct Parts<'a> {
    pub(crate) event_id: Option<String>,
    pub(crate) event_name: Option<Cow<'a, str>>,
    pub(crate) event_source_arn: Option<Cow<'a, str>>,
    pub(crate) ttl_delete: bool,
    pub(crate) body: Option<BodyParts<'a>>,
}

/// The `dynamodb` object's fields.
pub(crate) struct BodyParts<'a> {
    /// `ApproximateCreationDateTime` as its JSON text (a number or a string).
    pub(crate) approx_creation: Option<&'a str>,
    pub(crate) keys: Option<Item>,
    pub(crate) new_image: Option<Item>,
    pub(crate) old_image: Option<OldImage<'a>>,
    pub(crate) sequence_number: Option<Cow<'a, str>>,
}

/// An old image as a parser left it: read, or only checked as JSON.
pub(crate) enum OldImage<'a> {
    Read(Item),
    Text(&'a str),
}

impl<'a> From<RawRecord<'a>> for Parts<'a> {
    fn from(r: RawRecord<'a>) -> Self {
        Parts {
            event_id: r.event_id,
            event_name: r.event_name,
            event_source_arn: r.event_source_arn,
            ttl_delete: r
                .user_identity
                .is_some_and(|u| is_ttl_identity(u.kind.as_deref(), u.principal_id.as_deref())),
            body: r.dynamodb.map(|b| BodyParts {
                approx_creation: b.approx_creation.map(RawValue::get),
                keys: b.keys,
                new_image: b.new_image,
                old_image: b.old_image.map(|raw| OldImage::Text(raw.get())),
                sequence_number: b.sequence_number,
            }),
        }
    }
}

/// True for the identity DynamoDB gives a delete made by Time To Live.
///
/// The type is `Service` either way. The principal is
/// `dynamodb.amazonaws.com` as the service sends it, but the GetRecords
/// reference page gives it as an empty string; both are TTL deletes, so
/// captures written after the documentation read the same as live pages.
pub(crate) fn is_ttl_identity(kind: Option<&str>, principal: Option<&str>) -> bool {
    kind == Some("Service") && matches!(principal, Some("dynamodb.amazonaws.com" | ""))
}

/// Checks a parsed record and builds the change.
pub(crate) fn convert(
    record: Parts<'_>,
    ctx: &mut RecordContext,
    hints: RecordHints,
) -> Result<Change, (RecordError, RecordHints)> {
    let (stream_arn, table) = match record.event_source_arn.as_deref() {
        Some(arn) => match ctx.source(arn) {
            Some((stream, table)) => (Some(stream), Some(table)),
            None => {
                let msg = format!(
                    "eventSourceARN `{arn}` names no valid table (3 to 255 of a-z, A-Z, 0-9, `_`, `-`, `.`)"
                );
                return Err((RecordError(msg), hints));
            }
        },
        None => (None, ctx.default_table.clone()),
    };
    // What a dead letter tells of the record: the table, and the sequence
    // number once read. Built only on failure, since this runs per change.
    let fail = |msg: String, seq: Option<&str>| {
        let hints = RecordHints {
            table: table.as_deref().map(str::to_owned),
            sequence_number: seq
                .map(str::to_owned)
                .or_else(|| hints.sequence_number.clone()),
        };
        (RecordError(msg), hints)
    };
    let body = record
        .body
        .ok_or_else(|| fail("record has no `dynamodb` object".into(), None))?;
    let seq_text = body
        .sequence_number
        .ok_or_else(|| fail("record has no dynamodb.SequenceNumber".into(), None))?;
    let seq = Some(&*seq_text);
    let sequence_number = SequenceNumber::parse(&seq_text)
        .map_err(|e| fail(format!("dynamodb.SequenceNumber: {e}"), seq))?;
    let Some(table) = table.as_ref() else {
        return Err(fail(
            "record has no eventSourceARN and no table is configured ([source] table)".into(),
            seq,
        ));
    };
    let op = match record.event_name.as_deref() {
        Some(name) => Op::from_event_name(name).ok_or_else(|| {
            fail(
                format!("eventName `{name}` is not INSERT, MODIFY or REMOVE"),
                seq,
            )
        })?,
        None => return Err(fail("record has no eventName".into(), seq)),
    };
    let keys = body.keys.unwrap_or_default();
    if keys.is_empty() {
        return Err(fail(
            "record without keys (dynamodb.Keys is missing or empty)".into(),
            seq,
        ));
    }
    let new_image = body.new_image;
    let (old_image, unread_old_image) = match body.old_image {
        None => (None, None),
        Some(OldImage::Read(item)) => (Some(item), None),
        Some(OldImage::Text(text))
            if op != Op::Remove && ctx.reading.modify_old_images == ModifyOldImages::KeepUnread =>
        {
            (None, Some(text.into()))
        }
        Some(OldImage::Text(text)) => (
            Some(read_old_image(text, ctx).map_err(|e| fail(e, seq))?),
            None,
        ),
    };
    let approx_creation_ms = body
        .approx_creation
        .map(creation_ms)
        .transpose()
        .map_err(|e| fail(e, seq))?;
    let ttl_delete = record.ttl_delete;
    Ok(Change {
        op,
        keys,
        old_image,
        unread_old_image,
        new_image,
        source: SourceInfo {
            table: table.clone(),
            stream_arn,
            shard_id: ctx.shard.clone(),
            sequence_number,
            event_id: record.event_id.unwrap_or_default(),
            approx_creation_ms,
            ttl_delete,
            snapshot: None,
        },
    })
}

/// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` -> `NAME`, when
/// `NAME` is a valid table name.
pub fn table_from_arn(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let rest = resource.strip_prefix("table/")?;
    let name = rest.split('/').next()?;
    is_valid_table_name(name).then_some(name)
}

/// DynamoDB's rule for table names: 3 to 255 of `a-z A-Z 0-9 _ - .`. Table
/// names become directory names, so anything else (`..`, `/`) is refused.
pub fn is_valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// `ApproximateCreationDateTime` as epoch seconds (GetRecords JSON, Lambda),
/// epoch milliseconds (values above 10^11), or an ISO-8601 string (AWS CLI v2).
pub(crate) fn creation_ms(raw: &str) -> Result<i64, String> {
    let bad = || format!("dynamodb.ApproximateCreationDateTime `{raw}` is not a time");
    if let Some(text) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let t = DateTime::parse_from_rfc3339(text).map_err(|_| bad())?;
        return Ok(t.timestamp_millis());
    }
    let value: f64 = raw.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let ms = if value > 1e11 { value } else { value * 1000.0 };
    if ms > 253_402_300_799_000.0 {
        return Err(bad()); // after 9999-12-31
    }
    Ok(ms.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RecordContext {
        RecordContext::new("shard-1".into(), None)
    }

    /// An old image is read after the record's fields, by itself; what is
    /// wrong in it is still named by its path, without a place in the
    /// image's text that would read as one in the record.
    #[test]
    fn a_bad_old_image_is_named_by_its_path() {
        let record = |event: &str| {
            format!(
                r#"{{"eventName":"{event}","eventSourceARN":"arn:aws:dynamodb:r:1:table/tbl/stream/x","dynamodb":{{"Keys":{{"id":{{"S":"a"}}}},"OldImage":{{"id":{{"S":"a"}},"m":{{"M":{{"n":{{"N":"1.5.0"}}}}}}}},"SequenceNumber":"7"}}}}"#
            )
        };
        let mut unread = ctx();
        unread.reading.modify_old_images = ModifyOldImages::KeepUnread;
        for (event, ctx) in [
            ("MODIFY", ctx()),
            ("REMOVE", ctx()),
            ("REMOVE", unread.clone()),
        ] {
            let (e, hints) = parse_record(&record(event), &mut ctx.clone()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("at `OldImage.m.n`:"), "{msg}");
            assert!(!msg.contains(" at line "), "{msg}");
            assert_eq!(hints.sequence_number.as_deref(), Some("7"));
            assert_eq!(hints.table.as_deref(), Some("tbl"));
        }
        let change = parse_record(&record("MODIFY"), &mut unread).unwrap();
        assert_eq!(change.old_image, None);
        assert!(change.unread_old_image.unwrap().contains(r#""1.5.0""#));
    }

    const INSERT: &str = r#"{"eventID":"e1","eventName":"INSERT","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-east-1","dynamodb":{"ApproximateCreationDateTime":1700000000.5,"Keys":{"id":{"S":"a"}},"NewImage":{"id":{"S":"a"},"n":{"N":"1.50"}},"SequenceNumber":"000000000000000000001","SizeBytes":20,"StreamViewType":"NEW_AND_OLD_IMAGES"},"eventSourceARN":"arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"}"#;

    #[test]
    fn parses_a_getrecords_record() {
        let c = parse_record(INSERT, &mut ctx()).unwrap();
        assert_eq!(c.op, Op::Insert);
        assert_eq!(&*c.source.table, "orders");
        assert_eq!(c.source.sequence_number.as_str(), "1");
        assert_eq!(c.source.approx_creation_ms, Some(1_700_000_000_500));
        assert_eq!(c.new_image.unwrap()["n"].to_ddb_json(), r#"{"N":"1.5"}"#);
        assert!(!c.source.ttl_delete);
    }

    #[test]
    fn a_value_of_the_wrong_json_type_is_named_by_its_path_in_either_image() {
        let raw = INSERT.replace(r#""n":{"N":"1.50"}"#, r#""n":{"N":5}"#);
        let (e, _) = parse_record(&raw, &mut ctx()).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("at `NewImage.n`: invalid type"), "{e}");
        let raw = r#"{"eventName":"REMOVE","eventSourceARN":"arn:aws:dynamodb:r:1:table/tbl/stream/x","dynamodb":{"Keys":{"id":{"S":"a"}},"OldImage":{"id":{"S":"a"},"x":{"BOOL":"yes"}},"SequenceNumber":"7"}}"#;
        let (e, _) = parse_record(raw, &mut ctx()).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("at `OldImage.x`: invalid type"), "{e}");
    }

    #[test]
    fn ttl_deletes_and_iso_times() {
        let raw = r#"{"eventID":"e2","eventName":"REMOVE","userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"},"dynamodb":{"ApproximateCreationDateTime":"2024-03-01T10:00:00+01:00","Keys":{"id":{"N":"1"}},"OldImage":{"id":{"N":"1"}},"SequenceNumber":"5"}}"#;
        let mut c = RecordContext::new("s".into(), Some("t".into()));
        let change = parse_record(raw, &mut c).unwrap();
        assert!(change.source.ttl_delete);
        assert_eq!(change.op, Op::Remove);
        assert_eq!(change.source.approx_creation_ms, Some(1_709_283_600_000));
    }

    #[test]
    fn ttl_identity_in_both_spellings() {
        for identity in [
            r#"{"Type":"Service","PrincipalId":"dynamodb.amazonaws.com"}"#,
            r#"{"type":"Service","principalId":"dynamodb.amazonaws.com"}"#,
            // As the GetRecords reference page shows it.
            r#"{"Type":"Service","PrincipalId":""}"#,
            r#"{"type":"Service","principalId":""}"#,
        ] {
            let raw = format!(
                r#"{{"eventID":"e","eventName":"REMOVE","userIdentity":{identity},"dynamodb":{{"Keys":{{"id":{{"N":"1"}}}},"SequenceNumber":"5"}}}}"#
            );
            let mut c = RecordContext::new("s".into(), Some("tbl".into()));
            assert!(
                parse_record(&raw, &mut c).unwrap().source.ttl_delete,
                "{identity}"
            );
            let page = format!(r#"{{"Records":[{raw}]}}"#);
            let fast = crate::fast::parse_page(&page, &mut c).unwrap();
            assert!(fast.changes[0].source.ttl_delete, "fast parser, {identity}");
        }
    }

    #[test]
    fn other_identities_are_not_ttl_deletes() {
        for identity in [
            r#"{"Type":"User","PrincipalId":"dynamodb.amazonaws.com"}"#,
            r#"{"Type":"Service","PrincipalId":"lambda.amazonaws.com"}"#,
            r#"{"Type":"Service"}"#,
            r#"{"Type":"Service","PrincipalId":null}"#,
            r#"{"PrincipalId":""}"#,
            "null",
        ] {
            let raw = format!(
                r#"{{"eventID":"e","eventName":"REMOVE","userIdentity":{identity},"dynamodb":{{"Keys":{{"id":{{"N":"1"}}}},"SequenceNumber":"5"}}}}"#
            );
            let mut c = RecordContext::new("s".into(), Some("tbl".into()));
            assert!(
                !parse_record(&raw, &mut c).unwrap().source.ttl_delete,
                "{identity}"
            );
            let page = format!(r#"{{"Records":[{raw}]}}"#);
            let fast = crate::fast::parse_page(&page, &mut c).unwrap();
            assert!(
                !fast.changes[0].source.ttl_delete,
                "fast parser, {identity}"
            );
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = |raw: &str| parse_record(raw, &mut ctx()).unwrap_err().0.to_string();
        assert!(
            e(r#"{"eventName":"INSERT","dynamodb":{"SequenceNumber":"1","Keys":{}}}"#)
                .contains("no eventSourceARN")
        );
        let no_keys = INSERT.replace(r#""Keys":{"id":{"S":"a"}},"#, "");
        assert!(e(&no_keys).contains("record without keys"));
        let bad_op = INSERT.replace("INSERT", "UPSERT");
        assert!(e(&bad_op).contains("eventName `UPSERT`"));
        let bad_n = INSERT.replace("1.50", "abc");
        let msg = e(&bad_n);
        assert!(
            msg.contains("at `NewImage.n`") && msg.contains("not a decimal"),
            "{msg}"
        );
        let (_, hints) = parse_record(&bad_n, &mut ctx()).unwrap_err();
        assert_eq!(
            hints.sequence_number.as_deref(),
            Some("000000000000000000001")
        );
        assert_eq!(hints.table.as_deref(), Some("orders"));
        // A record refused after its table and sequence number were read
        // names both; one refused before names what was known.
        for bad in [&no_keys, &bad_op] {
            let (_, hints) = parse_record(bad, &mut ctx()).unwrap_err();
            assert_eq!(
                hints.sequence_number.as_deref(),
                Some("000000000000000000001")
            );
            assert_eq!(hints.table.as_deref(), Some("orders"));
        }
        let no_seq = INSERT.replace(r#""SequenceNumber":"000000000000000000001","#, "");
        let (e, hints) = parse_record(&no_seq, &mut ctx()).unwrap_err();
        assert!(e.to_string().contains("no dynamodb.SequenceNumber"), "{e}");
        assert_eq!(hints.sequence_number, None);
        assert_eq!(hints.table.as_deref(), Some("orders"));
    }

    #[test]
    fn each_record_gets_the_table_of_its_own_arn() {
        let mut ctx = ctx();
        let other = INSERT.replace("table/orders/", "table/users/");
        let bad = INSERT.replace("table/orders/", "table/a/");
        for (raw, table) in [(INSERT, "orders"), (&other, "users"), (INSERT, "orders")] {
            let c = parse_record(raw, &mut ctx).unwrap();
            assert_eq!(&*c.source.table, table);
            let arn = c.source.stream_arn.unwrap();
            assert!(arn.contains(&format!("table/{table}/")), "{arn}");
        }
        let e = parse_record(&bad, &mut ctx).unwrap_err().0.to_string();
        assert!(e.contains("names no valid table"), "{e}");
        assert_eq!(
            &*parse_record(INSERT, &mut ctx).unwrap().source.table,
            "orders"
        );
    }

    #[test]
    fn arn_parsing() {
        assert_eq!(
            table_from_arn("arn:aws:dynamodb:eu-west-1:1:table/a.b-c_d/stream/x"),
            Some("a.b-c_d")
        );
        assert_eq!(
            table_from_arn("arn:aws:dynamodb:eu-west-1:1:table/tbl"),
            Some("tbl")
        );
        assert_eq!(table_from_arn("nonsense"), None);
        assert_eq!(
            table_from_arn("arn:aws:dynamodb:r:1:table/../stream/x"),
            None
        );
        assert_eq!(
            table_from_arn("arn:aws:dynamodb:r:1:table/ab/stream/x"),
            None
        );
    }
}

/// Renders a change back as a stream record (the GetRecords JSON shape), for
/// dead letters of changes a sink rejected after parsing.
///
/// A snapshot row was never a stream record: it is rendered as the item the
/// snapshot read (`{"Item": ...}`, the shape of a DynamoDB export's lines)
/// with the snapshot's id and read time, not as an `INSERT` that no stream
/// carried.
pub fn render_record(change: &Change) -> String {
    let s = &change.source;
    if let (Op::Read, Some(read)) = (change.op, &s.snapshot) {
        return serde_json::json!({
            "Item": change.new_image.as_ref().unwrap_or(&change.keys),
            "Snapshot": {"Id": &*read.id, "ReadTimeMs": read.read_ms},
        })
        .to_string();
    }
    let mut body = serde_json::json!({
        "Keys": change.keys,
        "SequenceNumber": s.sequence_number.as_str(),
    });
    if let Some(i) = &change.new_image {
        body["NewImage"] = serde_json::json!(i);
    }
    if let Some(i) = &change.old_image {
        body["OldImage"] = serde_json::json!(i);
    } else if let Some(text) = &change.unread_old_image {
        // Valid JSON (the parser checked it); DynamoDB JSON holds numbers
        // as strings, so nothing is rounded on the way through a value.
        body["OldImage"] = serde_json::from_str(text).unwrap_or_else(|_| text.as_ref().into());
    }
    if let Some(ms) = s.approx_creation_ms {
        body["ApproximateCreationDateTime"] = serde_json::json!(ms as f64 / 1000.0);
    }
    let event_name = match change.op {
        Op::Insert | Op::Read => "INSERT",
        Op::Modify => "MODIFY",
        Op::Remove => "REMOVE",
    };
    let mut record = serde_json::json!({
        "eventID": s.event_id,
        "eventName": event_name,
        "dynamodb": body,
    });
    if let Some(arn) = &s.stream_arn {
        record["eventSourceARN"] = serde_json::json!(&**arn);
    }
    if s.ttl_delete {
        record["userIdentity"] =
            serde_json::json!({"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"});
    }
    record.to_string()
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn render_then_parse_is_identity() {
        let raw = r#"{"eventID":"e9","eventName":"REMOVE","userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"},"eventSourceARN":"arn:aws:dynamodb:us-east-1:1:table/tbl/stream/x","dynamodb":{"ApproximateCreationDateTime":1700000000.25,"Keys":{"id":{"N":"1"}},"OldImage":{"id":{"N":"1"},"m":{"M":{"b":{"BS":["AQ=="]}}}},"SequenceNumber":"42"}}"#;
        let mut ctx = RecordContext::new("s".into(), None);
        let change = parse_record(raw, &mut ctx).unwrap();
        let again = parse_record(&render_record(&change), &mut ctx).unwrap();
        assert_eq!(again, change);
    }

    /// A dead letter of a change whose old image was left unread still
    /// carries that image, as it came.
    #[test]
    fn an_unread_old_image_is_rendered_as_it_came() {
        let raw = r#"{"eventID":"e1","eventName":"MODIFY","eventSourceARN":"arn:aws:dynamodb:us-east-1:1:table/tbl/stream/x","dynamodb":{"Keys":{"id":{"N":"1"}},"OldImage":{"id":{"N":"1"},"n":{"N":"not a number"}},"NewImage":{"id":{"N":"1"}},"SequenceNumber":"42"}}"#;
        let mut unread = RecordContext::new("s".into(), None);
        unread.reading.modify_old_images = ModifyOldImages::KeepUnread;
        let change = parse_record(raw, &mut unread).unwrap();
        let rendered = render_record(&change);
        let value: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(
            value["dynamodb"]["OldImage"],
            serde_json::json!({"id": {"N": "1"}, "n": {"N": "not a number"}})
        );
        assert_eq!(parse_record(&rendered, &mut unread).unwrap(), change);
    }

    /// A snapshot row that a sink refused is kept as the item the snapshot
    /// read, with the snapshot it belongs to, never as a stream `INSERT`.
    #[test]
    fn a_snapshot_row_is_rendered_as_the_item_read() {
        let mut ctx = RecordContext::new("s".into(), None);
        let raw = r#"{"eventID":"e1","eventName":"INSERT","eventSourceARN":"arn:aws:dynamodb:us-east-1:1:table/tbl/stream/x","dynamodb":{"Keys":{"id":{"N":"1"}},"NewImage":{"id":{"N":"1"},"x":{"S":"y"}},"SequenceNumber":"42"}}"#;
        let mut change = parse_record(raw, &mut ctx).unwrap();
        change.op = Op::Read;
        change.source.snapshot = Some(dynamo_cdc_core::SnapshotRead {
            id: "snap-7".into(),
            read_ms: 1_700_000_000_000,
            marker: dynamo_cdc_core::SnapshotMarker::Row,
        });
        let value: serde_json::Value = serde_json::from_str(&render_record(&change)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "Item": {"id": {"N": "1"}, "x": {"S": "y"}},
                "Snapshot": {"Id": "snap-7", "ReadTimeMs": 1_700_000_000_000_i64},
            })
        );
    }
}
