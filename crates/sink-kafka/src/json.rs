//! Changes as plain JSON: the item's natural JSON shape, as consumers that
//! do not speak DynamoDB JSON expect it.
//!
//! `S` is a string, `N` a JSON number written with its exact canonical
//! decimal text (never rounded here: a reader that wants exact values reads
//! the text), `B` base64 text, `BOOL` a boolean, `NULL` null, sets and `L`
//! arrays (sets sorted), `M` an object. Strings are escaped as `serde_json`
//! escapes them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dynamo_cdc_core::{AttributeValue, Change, Item, Op, write_json_string};
use dynamo_cdc_transform::META_COLUMNS;

/// Appends `s` as a JSON string.
pub(crate) fn string(out: &mut String, s: &str) {
    write_json_string(out, s);
}

/// Appends a value.
pub(crate) fn value(out: &mut String, v: &AttributeValue) {
    fn list<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            each(out, item);
        }
        out.push(']');
    }
    match v {
        AttributeValue::S(s) => string(out, s),
        AttributeValue::N(n) => out.push_str(n.as_str()),
        AttributeValue::B(b) => string(out, &BASE64.encode(b)),
        AttributeValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        AttributeValue::Null => out.push_str("null"),
        AttributeValue::Ss(v) => list(out, v, |out, s| string(out, s)),
        AttributeValue::Ns(v) => list(out, v, |out, n| out.push_str(n.as_str())),
        AttributeValue::Bs(v) => list(out, v, |out, b| string(out, &BASE64.encode(b))),
        AttributeValue::L(v) => list(out, v, value),
        AttributeValue::M(m) => item(out, m),
        AttributeValue::Nested(text) => value(out, &text.tree()),
    }
}

/// Appends an item as an object.
pub(crate) fn item(out: &mut String, item: &Item) {
    out.push('{');
    for (i, (k, v)) in item.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, k);
        out.push(':');
        value(out, v);
    }
    out.push('}');
}

/// The key as a JSON object.
pub(crate) fn key(change: &Change) -> Vec<u8> {
    let mut out = String::with_capacity(64);
    item(&mut out, &change.keys);
    out.into_bytes()
}

fn field(out: &mut String, name: &str) {
    out.push(',');
    string(out, name);
    out.push(':');
}

/// The value in the flat shape, appended to `out`: the row image's
/// attributes plus the `__` position fields. An attribute named like one
/// of those is written under [`free_name`], as its Parquet and Avro
/// columns are named.
pub(crate) fn flat(out: &mut String, change: &Change) {
    out.push('{');
    let mut first = true;
    let image = change.row_image();
    for (k, v) in image {
        if !first {
            out.push(',');
        }
        first = false;
        if k.starts_with("__") && META_COLUMNS.contains(&k.as_str()) {
            string(out, &free_name(k, image));
        } else {
            string(out, k);
        }
        out.push(':');
        value(out, v);
    }
    if first {
        // No attributes: start the object with the first position field.
        out.push_str("\"__op\":");
    } else {
        field(out, "__op");
    }
    string(out, change.op.code());
    meta(out, change);
    out.push('}');
}

/// The name an attribute called like a position field is written under:
/// `_` put in front until it names neither a position field nor another
/// attribute of `image` (`__op` becomes `___op`).
fn free_name(attribute: &str, image: &Item) -> String {
    let mut name = attribute.to_owned();
    while META_COLUMNS.contains(&name.as_str()) || image.get(&name).is_some() {
        name.insert(0, '_');
    }
    name
}

fn meta(out: &mut String, change: &Change) {
    let s = &change.source;
    field(out, "__table");
    string(out, &s.table);
    field(out, "__shard_id");
    string(out, &s.shard_id);
    field(out, "__sequence_number");
    string(out, s.sequence_number.as_str());
    field(out, "__event_id");
    string(out, &s.event_id);
    field(out, "__source_ts_ms");
    match s.approx_creation_ms {
        Some(ms) => out.push_str(&ms.to_string()),
        None => out.push_str("null"),
    }
    field(out, "__deleted");
    out.push_str(if change.op == Op::Remove {
        "true"
    } else {
        "false"
    });
    field(out, "__ttl_delete");
    out.push_str(if s.ttl_delete { "true" } else { "false" });
}

/// The value as a Debezium envelope, appended to `out`: `before`, `after`,
/// `op`, `ts_ms`, `source`.
pub(crate) fn envelope(out: &mut String, change: &Change) {
    let image = |out: &mut String, i: Option<&Item>| match i {
        Some(i) => item(out, i),
        None => out.push_str("null"),
    };
    // A stream without images still shows the keys of what changed.
    let (before, after) = match change.op {
        Op::Remove => (change.old_image.as_ref().or(Some(&change.keys)), None),
        _ => (
            change.old_image.as_ref(),
            change.new_image.as_ref().or(Some(&change.keys)),
        ),
    };
    out.push_str("{\"before\":");
    image(out, before);
    out.push_str(",\"after\":");
    image(out, after);
    field(out, "op");
    string(out, change.op.code());
    let s = &change.source;
    field(out, "ts_ms");
    match s.approx_creation_ms {
        Some(ms) => out.push_str(&ms.to_string()),
        None => out.push_str("null"),
    }
    out.push_str(",\"source\":{\"connector\":\"dynamodb\"");
    field(out, "table");
    string(out, &s.table);
    field(out, "stream_arn");
    match &s.stream_arn {
        Some(arn) => string(out, arn),
        None => out.push_str("null"),
    }
    field(out, "shard_id");
    string(out, &s.shard_id);
    field(out, "sequence_number");
    string(out, s.sequence_number.as_str());
    field(out, "event_id");
    string(out, &s.event_id);
    field(out, "ttl_delete");
    out.push_str(if s.ttl_delete { "true" } else { "false" });
    // Debezium's marker: `first`, `true`, `last` for snapshot rows.
    field(out, "snapshot");
    string(
        out,
        s.snapshot.as_ref().map_or("false", |s| s.marker.code()),
    );
    out.push_str("}}");
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::{Number, SequenceNumber, SourceInfo};

    use super::*;

    fn change(op: Op) -> Change {
        let keys: Item = [("id", AttributeValue::S("a\"1".into()))].into();
        let image: Item = [
            ("id", AttributeValue::S("a\"1".into())),
            (
                "n",
                AttributeValue::N(Number::parse("12345678901234567890.5").unwrap()),
            ),
            ("b", AttributeValue::B(vec![0, 1, 255])),
            ("m", AttributeValue::M([("x", AttributeValue::Null)].into())),
        ]
        .into();
        Change {
            op,
            keys,
            old_image: (op != Op::Insert).then(|| image.clone()),
            unread_old_image: None,
            new_image: (op != Op::Remove).then_some(image),
            source: SourceInfo {
                table: "orders".into(),
                stream_arn: None,
                shard_id: "s1".into(),
                sequence_number: SequenceNumber::parse("100").unwrap(),
                event_id: "e1".into(),
                approx_creation_ms: Some(1_700_000_000_000),
                ttl_delete: false,
                snapshot: None,
            },
        }
    }

    /// What a value writer appends to an empty string.
    fn written(write: fn(&mut String, &Change), c: &Change) -> String {
        let mut out = String::new();
        write(&mut out, c);
        out
    }

    #[test]
    fn shapes_are_valid_json_with_exact_numbers() {
        let c = change(Op::Modify);
        let key: serde_json::Value = serde_json::from_slice(&key(&c)).unwrap();
        assert_eq!(key, serde_json::json!({"id": "a\"1"}));
        let flat = written(flat, &c);
        assert!(flat.contains("\"n\":12345678901234567890.5"), "{flat}");
        let v: serde_json::Value = serde_json::from_str(&flat).unwrap();
        assert_eq!(v["b"], "AAH/");
        assert_eq!(v["__op"], "u");
        assert_eq!(v["__sequence_number"], "100");
        let env: serde_json::Value =
            serde_json::from_str(&written(envelope, &change(Op::Remove))).unwrap();
        assert_eq!(env["op"], "d");
        assert!(env["after"].is_null());
        assert_eq!(env["before"]["m"], serde_json::json!({"x": null}));
        assert_eq!(env["source"]["shard_id"], "s1");
    }

    #[test]
    fn attributes_named_like_position_fields_are_kept_under_another_name() {
        let mut c = change(Op::Insert);
        let image = c.new_image.as_mut().unwrap();
        image.insert("__deleted".into(), AttributeValue::S("soft".into()));
        image.insert("___op".into(), AttributeValue::S("taken".into()));
        image.insert("__op".into(), AttributeValue::S("mine".into()));
        let v: serde_json::Value = serde_json::from_str(&written(flat, &c)).unwrap();
        assert_eq!(v["__deleted"], false, "the position field");
        assert_eq!(v["___deleted"], "soft", "the attribute, renamed");
        assert_eq!(v["__op"], "c");
        assert_eq!(v["___op"], "taken", "an attribute's own name is kept");
        assert_eq!(v["____op"], "mine", "renamed past a name in use");
    }
}
