//! One stream record and one GetRecords page, rendered byte for byte the way
//! the DynamoDB Streams API (and the AWS CLI) prints them.
//!
//! Both the generator and [`crate::strategies::stream_record_json`] go
//! through here, so every fixture has exactly one shape.

use std::io::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dynamo_cdc_core::{AttributeValue, Item};

/// Region used in every ARN and record.
pub(crate) const REGION: &str = "us-east-1";
/// Account used in every ARN.
pub(crate) const ACCOUNT: &str = "123456789012";
/// Stream label (the stream's creation time) used in every ARN.
pub(crate) const STREAM_LABEL: &str = "2024-11-01T00:00:00.000";

/// `eventName` of a stream record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EventName {
    Insert,
    Modify,
    Remove,
}

impl EventName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventName::Insert => "INSERT",
            EventName::Modify => "MODIFY",
            EventName::Remove => "REMOVE",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "INSERT" => Some(EventName::Insert),
            "MODIFY" => Some(EventName::Modify),
            "REMOVE" => Some(EventName::Remove),
            _ => None,
        }
    }
}

/// `arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL`.
pub(crate) fn stream_arn(table: &str) -> String {
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/stream/{STREAM_LABEL}")
}

/// A shard iterator as the API hands them out: the stream ARN, a version and
/// an opaque base64 blob.
pub(crate) fn shard_iterator(stream_arn: &str, opaque: &[u8]) -> String {
    format!("{stream_arn}|1|{}", BASE64.encode(opaque))
}

/// Everything one stream record says.
#[derive(Debug)]
pub(crate) struct RecordParts<'a> {
    pub(crate) stream_arn: &'a str,
    /// Rendered as 32 lowercase hex digits, like real event ids.
    pub(crate) event_id: u128,
    pub(crate) event: EventName,
    /// A REMOVE made by the TTL process rather than by a caller.
    pub(crate) ttl_delete: bool,
    pub(crate) created_ms: u64,
    pub(crate) keys: &'a Item,
    pub(crate) old: Option<&'a Item>,
    pub(crate) new: Option<&'a Item>,
    pub(crate) sequence: u128,
}

/// Appends one record (no trailing separator) to `out`.
pub(crate) fn write_record(out: &mut Vec<u8>, r: &RecordParts<'_>) {
    let size = item_size(r.keys) + r.old.map_or(0, item_size) + r.new.map_or(0, item_size);
    // Writing into a Vec cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        r#"{{"eventID":"{:032x}","eventName":"{}","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"{REGION}","dynamodb":{{"ApproximateCreationDateTime":{},"Keys":"#,
        r.event_id,
        r.event.as_str(),
        epoch_seconds(r.created_ms),
    );
    write_item(out, r.keys);
    if let Some(new) = r.new {
        out.extend_from_slice(br#","NewImage":"#);
        write_item(out, new);
    }
    if let Some(old) = r.old {
        out.extend_from_slice(br#","OldImage":"#);
        write_item(out, old);
    }
    // Sequence numbers are at least 21 digits, as DynamoDB's are.
    let _ = write!(
        out,
        r#","SequenceNumber":"{:021}","SizeBytes":{size},"StreamViewType":"NEW_AND_OLD_IMAGES"}},"eventSourceARN":"{}""#,
        r.sequence, r.stream_arn,
    );
    if r.ttl_delete {
        out.extend_from_slice(
            br#","userIdentity":{"PrincipalId":"dynamodb.amazonaws.com","Type":"Service"}"#,
        );
    }
    out.push(b'}');
}

fn write_item(out: &mut Vec<u8>, item: &Item) {
    // An Item has string keys and values that always serialize, so this
    // cannot fail.
    let _ = serde_json::to_writer(&mut *out, item);
}

/// Epoch seconds as a JSON number with millisecond precision at most, e.g.
/// `1732000000.0` or `1732000000.25`, as the API prints them.
pub(crate) fn epoch_seconds(ms: u64) -> String {
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return format!("{secs}.0");
    }
    let digits = format!("{frac:03}");
    format!("{secs}.{}", digits.trim_end_matches('0'))
}

/// Writes one GetRecords response as a JSON line. `records` holds the
/// already rendered records separated by commas; `None` as the iterator marks
/// the shard's last page.
pub(crate) fn write_page(
    w: &mut impl Write,
    records: &[u8],
    next_iterator: Option<&str>,
) -> io::Result<u64> {
    let head = br#"{"Records":["#;
    let tail = match next_iterator {
        Some(it) => format!(r#"],"NextShardIterator":"{it}"}}"#),
        None => r#"],"NextShardIterator":null}"#.to_owned(),
    };
    w.write_all(head)?;
    w.write_all(records)?;
    w.write_all(tail.as_bytes())?;
    w.write_all(b"\n")?;
    Ok((head.len() + records.len() + tail.len() + 1) as u64)
}

/// The item size DynamoDB reports in `SizeBytes`: names plus values, with
/// numbers at about one byte per two significant digits and a small overhead
/// per list or map element.
pub(crate) fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number_size(n.as_str()),
        AttributeValue::B(b) => b.len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n.as_str())).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.len() as u64).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|x| 1 + value_size(x)).sum::<u64>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() as u64 + value_size(x))
                .sum::<u64>()
        }
        AttributeValue::Nested(text) => value_size(&text.tree()),
    }
}

fn number_size(text: &str) -> u64 {
    let significant = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count() as u64;
    significant.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_like_the_api() {
        assert_eq!(epoch_seconds(1_732_000_000_000), "1732000000.0");
        assert_eq!(epoch_seconds(1_732_000_000_250), "1732000000.25");
        assert_eq!(epoch_seconds(1_732_000_000_007), "1732000000.007");
    }

    #[test]
    fn record_shape() {
        let mut keys = Item::new();
        keys.insert("id".into(), AttributeValue::S("a".into()));
        let arn = stream_arn("t");
        let mut out = Vec::new();
        write_record(
            &mut out,
            &RecordParts {
                stream_arn: &arn,
                event_id: 0xabc,
                event: EventName::Remove,
                ttl_delete: true,
                created_ms: 1_732_000_000_000,
                keys: &keys,
                old: Some(&keys),
                new: None,
                sequence: 7,
            },
        );
        let text = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["eventID"], "00000000000000000000000000000abc");
        assert_eq!(v["dynamodb"]["SequenceNumber"], "000000000000000000007");
        assert_eq!(v["dynamodb"]["OldImage"]["id"]["S"], "a");
        assert!(v["dynamodb"].get("NewImage").is_none());
        assert_eq!(v["userIdentity"]["PrincipalId"], "dynamodb.amazonaws.com");
        assert_eq!(
            v["eventSourceARN"],
            "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-11-01T00:00:00.000"
        );
    }
}
