//! Proptest strategies over DynamoDB's whole value space, and renderers for
//! hand-built stream records.
//!
//! The strategies aim at the edges the bridge must carry without loss:
//! numbers with 38 digits or exponents near 1E-130 and 9.99…E+125, every set
//! type, empty strings, lists and maps, nesting up to DynamoDB's 32 levels,
//! and attribute names that are not identifiers.

use dynamo_cdc_core::{AttributeValue, Item, MAX_NESTING, Number, Text};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::select;

use crate::record::{EventName, RecordParts, stream_arn, write_page, write_record};

/// Attribute names that are legal in DynamoDB but trip up naive mappings to
/// columns, JSON paths or Avro names.
const AWKWARD_NAMES: &[&str] = &[
    "with space",
    "dotted.name",
    "a.b.c",
    "kebab-case",
    "1st_place",
    "123",
    "ünïcødé",
    "日本語",
    "emoji 🎉",
    "$dollar",
    "#hash",
    "UPPER",
    "MixedCase",
    "_",
    "quote\"inside",
    "back\\slash",
    "tab\tname",
];

fn number(text: &str) -> Number {
    match Number::parse(text) {
        Ok(n) => n,
        Err(e) => panic!("strategy built an invalid number `{text}`: {e}"),
    }
}

/// Largest magnitude DynamoDB stores: 38 nines at exponent 125.
fn max_magnitude_text() -> String {
    format!("9.{}E+125", "9".repeat(37))
}

/// Valid DynamoDB numbers across the full range: i64 values, integers of up
/// to 38 digits, decimals, tiny and huge exponents, negatives, and the exact
/// edges (1E-130, 9.99…E+125).
pub fn arb_number() -> impl Strategy<Value = Number> + Clone {
    let edges: Vec<Number> = [
        "0".to_owned(),
        "1E-130".to_owned(),
        "-1E-130".to_owned(),
        max_magnitude_text(),
        format!("-{}", max_magnitude_text()),
        "9".repeat(38),
        format!("-{}", "9".repeat(38)),
        "9223372036854775807".to_owned(),
        "9223372036854775808".to_owned(),
        "-9223372036854775808".to_owned(),
        "-9223372036854775809".to_owned(),
        "0.1".to_owned(),
        format!("0.{}1", "0".repeat(37)),
    ]
    .iter()
    .map(|t| number(t))
    .collect();
    prop_oneof![
        3 => any::<i64>().prop_map(Number::from),
        2 => "-?[1-9][0-9]{18,37}".prop_map(|t| number(&t)),
        3 => "-?[0-9]{1,12}\\.[0-9]{1,12}".prop_map(|t| number(&t)),
        2 => (any::<bool>(), "[1-9][0-9]{0,37}", -130i32..=125)
            .prop_map(|(neg, digits, exp)| number(&scientific(neg, &digits, exp))),
        1 => select(edges),
    ]
}

/// `d.ddd…E<exp>`: the leading digit's exponent is `exp`, so any 1..=38
/// digits with `exp` in -130..=125 is in range.
fn scientific(negative: bool, digits: &str, exp: i32) -> String {
    let sign = if negative { "-" } else { "" };
    let (first, rest) = digits.split_at(1);
    if rest.is_empty() {
        format!("{sign}{first}E{exp}")
    } else {
        format!("{sign}{first}.{rest}E{exp}")
    }
}

/// Valid number text in the spellings DynamoDB accepts but does not
/// produce: exponents (`e`/`E`, signed), leading and trailing zeros, a
/// leading `+`, a bare trailing point.
pub fn arb_number_text() -> impl Strategy<Value = String> {
    arb_number_spelling().prop_map(|(_, text)| text)
}

/// A number and one of its spellings (see [`arb_number_text`]); parsing the
/// text gives back exactly the number.
pub fn arb_number_spelling() -> impl Strategy<Value = (Number, String)> {
    (arb_number(), 0u8..6, 0usize..4).prop_map(|(n, style, pad)| {
        let canonical = n.as_str().to_owned();
        let (sign, abs) = match canonical.strip_prefix('-') {
            Some(abs) => ("-", abs.to_owned()),
            None => ("", canonical.clone()),
        };
        let zeros = "0".repeat(pad);
        let text = match style {
            0 => canonical,
            1 => format!("{sign}{zeros}{abs}"),
            2 if abs.contains('.') => format!("{sign}{abs}{zeros}"),
            2 => format!("{sign}{abs}.{zeros}"),
            3 => format!("{}{abs}", if sign.is_empty() { "+" } else { sign }),
            // The same value with a larger mantissa and a negative exponent.
            4 => format!("{sign}{}", shift_text(&abs, pad)),
            _ => format!("{sign}{abs}e+0"),
        };
        (n, text)
    })
}

/// `abs` (a canonical non-negative decimal) rewritten as `abs * 10^pad`
/// followed by `E-pad`: the same value in another spelling.
fn shift_text(abs: &str, pad: usize) -> String {
    // Multiplying the mantissa by 10^pad is appending zeros to an integer or
    // moving the point in a decimal; the exponent takes it back.
    let mantissa = match abs.split_once('.') {
        None => format!("{abs}{}", "0".repeat(pad)),
        Some((int, frac)) => {
            let mut frac = frac.to_owned();
            while frac.len() < pad {
                frac.push('0');
            }
            let (moved, rest) = frac.split_at(pad);
            if rest.is_empty() {
                format!("{int}{moved}")
            } else {
                format!("{int}{moved}.{rest}")
            }
        }
    };
    format!("{mantissa}E-{pad}")
}

/// Attribute names: identifiers, and names with spaces, dots, dashes,
/// unicode, quotes or leading digits.
pub fn arb_attribute_name() -> impl Strategy<Value = Text> + Clone {
    prop_oneof![
        4 => "[a-z][a-z0-9_]{0,11}",
        2 => select(AWKWARD_NAMES).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9 ._:#é日-]{1,16}",
    ]
    .prop_map(Text::from)
}

/// Strings for `S` values and set members: mostly short, any unicode
/// (control characters included), sometimes empty, sometimes long runs
/// with characters JSON escapes among them (parsers work through long
/// strings in blocks).
fn arb_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => "[a-zA-Z0-9 ]{0,12}",
        2 => "\\PC{0,12}",
        1 => ".{0,8}",
        1 => "([a-z0-9 é日]{0,24}[\"\\\\\n\t\u{1}/]){1,4}[a-z]{0,20}",
        1 => Just(String::new()),
    ]
}

/// One of the eight non-container types: S, N, B, BOOL, NULL, SS, NS, BS.
pub fn arb_scalar() -> impl Strategy<Value = AttributeValue> + Clone {
    prop_oneof![
        3 => arb_text().prop_map(|s| AttributeValue::S(s.into())),
        3 => arb_number().prop_map(AttributeValue::N),
        1 => vec(any::<u8>(), 0..16).prop_map(AttributeValue::B),
        1 => any::<bool>().prop_map(AttributeValue::Bool),
        1 => Just(AttributeValue::Null),
        1 => btree_set(arb_text().prop_filter("set members are not empty", |s| !s.is_empty()), 1..5)
            .prop_map(|s| AttributeValue::Ss(s.into_iter().collect())),
        1 => btree_set(arb_number(), 1..5)
            .prop_map(|s| AttributeValue::Ns(s.into_iter().collect())),
        1 => btree_set(vec(any::<u8>(), 1..8), 1..4)
            .prop_map(|s| AttributeValue::Bs(s.into_iter().collect())),
    ]
}

/// Any attribute value whose lists and maps nest at most `depth` levels (the
/// value itself counts as level 1; `depth` is capped at 32). Mostly scalars
/// and small shallow containers; sometimes a narrow chain of single-entry
/// lists and maps reaching all the way to `depth`, which is cheap to build
/// and still probes the nesting limit.
pub fn arb_attribute_value(depth: usize) -> BoxedStrategy<AttributeValue> {
    let depth = depth.min(MAX_NESTING);
    let leaf = arb_scalar().boxed();
    if depth == 0 {
        return leaf;
    }
    let bushy = leaf
        .clone()
        .prop_recursive(depth.min(3) as u32, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                btree_map(arb_attribute_name(), inner, 0..4)
                    .prop_map(|m| AttributeValue::M(m.into_iter().collect())),
            ]
        })
        .boxed();
    let chain = (1..=depth)
        .prop_flat_map(move |levels| {
            (
                vec((any::<bool>(), arb_attribute_name()), levels),
                arb_scalar(),
            )
        })
        .prop_map(|(shape, leaf)| {
            shape.into_iter().fold(leaf, |inner, (is_list, name)| {
                if is_list {
                    AttributeValue::L(vec![inner])
                } else {
                    AttributeValue::M(Item::from([(name, inner)]))
                }
            })
        })
        .boxed();
    prop_oneof![6 => leaf, 3 => bushy, 1 => chain].boxed()
}

/// An item of 1 to 8 attributes with any names and values, nesting up to
/// DynamoDB's limit.
pub fn arb_item() -> impl Strategy<Value = Item> {
    btree_map(arb_attribute_name(), arb_attribute_value(MAX_NESTING), 1..8)
        .prop_map(|m| m.into_iter().collect())
}

/// One stream record of `table`, exactly as GetRecords returns it (see
/// [`crate::generator`]). `op` is `INSERT`, `MODIFY` or `REMOVE`; `ttl`
/// marks a REMOVE made by the TTL process. The event id and the
/// `ApproximateCreationDateTime` (2024-11-19 plus `seq` mod 10^9 ms) are
/// derived from `table` and `seq`, so the same arguments give the same text.
///
/// # Panics
/// When `op` is not one of the three event names.
pub fn stream_record_json(
    table: &str,
    seq: u128,
    op: &str,
    keys: &Item,
    old: Option<&Item>,
    new: Option<&Item>,
    ttl: bool,
) -> String {
    let Some(event) = EventName::parse(op) else {
        panic!("unknown eventName `{op}`; expected INSERT, MODIFY or REMOVE")
    };
    let arn = stream_arn(table);
    let mut out = Vec::new();
    write_record(
        &mut out,
        &RecordParts {
            stream_arn: &arn,
            event_id: event_id(table, seq),
            event,
            ttl_delete: ttl,
            created_ms: 1_732_000_000_000 + (seq % 1_000_000_000) as u64,
            keys,
            old,
            new,
            sequence: seq,
        },
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// One GetRecords response line (no trailing newline) holding `records`;
/// `next_iterator` `None` gives the closed shard's `null`.
pub fn get_records_json(records: &[String], next_iterator: Option<&str>) -> String {
    let joined = records.join(",");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_page(&mut out, joined.as_bytes(), next_iterator);
    out.pop();
    String::from_utf8_lossy(&out).into_owned()
}

/// FNV-1a over the table name, mixed with the sequence number.
fn event_id(table: &str, seq: u128) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h: u128 = 0x6C62_272E_07BB_0142_62B8_2175_6295_C58D;
    for b in table.bytes().chain(seq.to_le_bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_cdc_core::parse_item;

    /// Deepest list/map nesting of a value; a scalar is 0.
    fn nesting(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::L(l) => 1 + l.iter().map(nesting).max().unwrap_or(0),
            AttributeValue::M(m) => 1 + m.values().map(nesting).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        #[test]
        fn numbers_are_canonical_and_valid(n in arb_number()) {
            prop_assert_eq!(Number::parse(n.as_str()).unwrap(), n);
        }

        #[test]
        fn spellings_parse_to_their_number((n, text) in arb_number_spelling()) {
            prop_assert_eq!(Number::parse(&text).unwrap(), n, "{}", text);
        }

        #[test]
        fn items_round_trip_through_ddb_json(item in arb_item()) {
            let text = serde_json::to_string(&item).unwrap();
            let back = parse_item(&text, "Item").unwrap();
            prop_assert_eq!(back, item);
        }

        #[test]
        fn nesting_stays_within_depth(
            (depth, v) in (0usize..=6).prop_flat_map(|d| (Just(d), arb_attribute_value(d)))
        ) {
            prop_assert!(nesting(&v) <= depth, "{} > {}", nesting(&v), depth);
        }

        #[test]
        fn records_parse(keys in arb_item(), new in arb_item(), seq in 0u128..u128::MAX) {
            let text = stream_record_json("t", seq, "INSERT", &keys, None, Some(&new), false);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let image = serde_json::to_string(&v["dynamodb"]["NewImage"]).unwrap();
            prop_assert_eq!(parse_item(&image, "NewImage").unwrap(), new);
            prop_assert!(v["dynamodb"]["SequenceNumber"].as_str().unwrap().len() >= 21);
        }
    }

    #[test]
    fn chains_reach_but_never_pass_the_limit() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = arb_attribute_value(MAX_NESTING);
        let mut deepest = 0;
        for _ in 0..3000 {
            let v = strategy.new_tree(&mut runner).unwrap().current();
            let d = nesting(&v);
            assert!(d <= MAX_NESTING);
            deepest = deepest.max(d);
            let item = Item::from([("top", v)]);
            parse_item(&serde_json::to_string(&item).unwrap(), "Item").unwrap();
        }
        assert!(deepest >= 25, "deepest chain only {deepest}");
    }

    #[test]
    fn every_type_is_generated() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = arb_attribute_value(4);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            seen.insert(strategy.new_tree(&mut runner).unwrap().current().tag());
        }
        assert_eq!(seen.len(), 10, "{seen:?}");
    }

    #[test]
    fn page_shape() {
        let keys = Item::from([("id", AttributeValue::S("a".into()))]);
        let r = stream_record_json("t", 5, "REMOVE", &keys, Some(&keys), None, true);
        let page = get_records_json(&[r.clone(), r], None);
        let v: serde_json::Value = serde_json::from_str(&page).unwrap();
        assert_eq!(v["Records"].as_array().unwrap().len(), 2);
        assert!(v["NextShardIterator"].is_null());
        assert_eq!(v["Records"][0]["userIdentity"]["Type"], "Service");
    }
}
