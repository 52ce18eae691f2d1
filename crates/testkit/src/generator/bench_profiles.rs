//! Item shapes of the side-by-side benchmark's inputs beyond the mixed
//! `events` table: small items (per-record overhead dominates), items near
//! DynamoDB's 400 KB limit (bulk bytes dominate), and wide, deep items full
//! of number edge cases (type mapping dominates).

use dynamo_cdc_core::{AttributeValue, Item};
use rand::Rng;
use rand::rngs::StdRng;

use super::values::{
    big_integer, bytes, decimal, hex, map, n, num, number_set, pick, s, scientific, string_set,
};

/// `pings`: a handful of short attributes, about 100 bytes an image.
pub(super) mod pings {
    use super::*;

    const STATES: &[&str] = &["up", "down", "degraded"];

    pub(in super::super) fn new(rng: &mut StdRng, now_ms: u64) -> Item {
        let mut item = Item::new();
        item.insert("state".into(), s(pick(rng, STATES)));
        item.insert("rtt_ms".into(), n(rng.random_range(1..2_000)));
        item.insert("ok".into(), AttributeValue::Bool(rng.random_bool(0.9)));
        item.insert("at".into(), n(now_ms as i64));
        item.insert("version".into(), n(1));
        item
    }

    pub(in super::super) fn modify(rng: &mut StdRng, item: &mut Item, now_ms: u64) {
        item.insert("state".into(), s(pick(rng, STATES)));
        item.insert("rtt_ms".into(), n(rng.random_range(1..2_000)));
        item.insert("at".into(), n(now_ms as i64));
    }
}

/// `documents`: a text body and an attachment that together bring the item
/// close to DynamoDB's 400 KB item limit.
pub(super) mod documents {
    use super::*;

    /// Body plus attachment stay under 400 KB with room for the rest.
    const BODY_BYTES: std::ops::RangeInclusive<usize> = 250_000..=300_000;
    const ATTACHMENT_BYTES: std::ops::RangeInclusive<usize> = 40_000..=70_000;
    const WORDS: &[&str] = &[
        "the",
        "stream",
        "record",
        "Zürich",
        "naïve",
        "\"quoted\"",
        "tab\there",
        "line\nbreak",
        "日本語",
        "back\\slash",
        "emoji 🚀",
        "lorem",
        "ipsum",
    ];

    fn body(rng: &mut StdRng) -> String {
        let target = rng.random_range(BODY_BYTES);
        let mut text = String::with_capacity(target + 32);
        while text.len() < target {
            text.push_str(pick(rng, WORDS));
            text.push(' ');
        }
        text
    }

    pub(in super::super) fn new(rng: &mut StdRng, now_ms: u64) -> Item {
        let mut item = Item::new();
        item.insert("title".into(), s(format!("doc {}", hex(rng, 12))));
        item.insert("body".into(), s(body(rng)));
        item.insert(
            "attachment".into(),
            AttributeValue::B(bytes(rng, ATTACHMENT_BYTES)),
        );
        item.insert(
            "meta".into(),
            map([
                ("lang", s(pick(rng, &["en", "de", "ja"]))),
                ("pages", n(rng.random_range(1..400))),
            ]),
        );
        item.insert("created_at".into(), n(now_ms as i64));
        item.insert("version".into(), n(1));
        item
    }

    pub(in super::super) fn modify(rng: &mut StdRng, item: &mut Item, _now_ms: u64) {
        item.insert("body".into(), s(body(rng)));
    }
}

/// `wide`: 200 attributes of every type, one value nested 31 levels deep,
/// and numbers at DynamoDB's edges (38 digits, 1E-130, 9.99…E+125, just
/// past i64).
pub(super) mod wide {
    use super::*;

    /// Attributes per item, the nested one included.
    pub(in super::super) const ATTRIBUTES: usize = 200;
    /// Levels of the nested attribute: DynamoDB allows 32.
    pub(in super::super) const DEPTH: usize = 31;
    const WORDS: &[&str] = &["alpha", "beta", "gamma", "Ωmega", "with \"quotes\"", ""];

    /// Number edge cases, as DynamoDB accepts them.
    fn edge_number(rng: &mut StdRng) -> AttributeValue {
        let negative = rng.random_bool(0.5);
        let n = match rng.random_range(0..8) {
            0 => big_integer(rng, 38..=38, negative),
            1 => num("1E-130"),
            2 => num("-9.9999999999999999999999999999999999999E+125"),
            3 => num("9223372036854775808"),
            4 => num("-9223372036854775808"),
            5 => scientific(rng, 1..=38, -120..=120, negative),
            6 => num("0.0000000001"),
            _ => num("12345678901234567890123456789.012345678"),
        };
        AttributeValue::N(n)
    }

    /// The value of attribute `index`: its type depends only on the index,
    /// so columns keep their type from item to item.
    fn value(rng: &mut StdRng, index: usize) -> AttributeValue {
        match index % 10 {
            0 => s(pick(rng, WORDS)),
            1 => n(rng.random_range(i64::MIN / 2..i64::MAX / 2)),
            2 => decimal(rng.random_range(-1_000_000..1_000_000), 4),
            3 => edge_number(rng),
            4 => AttributeValue::Bool(rng.random_bool(0.5)),
            5 => string_set(rng, &["a", "b", "c", "d", "e"], 1..=3),
            6 => number_set(rng, 1..=3, |r| {
                let AttributeValue::N(n) = edge_number(r) else {
                    unreachable!("edge_number returns numbers")
                };
                n
            }),
            7 => AttributeValue::B(bytes(rng, 1..=24)),
            8 => AttributeValue::L(vec![
                s(hex(rng, 6)),
                n(rng.random_range(0..100)),
                edge_number(rng),
            ]),
            _ => map([("k", s(hex(rng, 4))), ("v", edge_number(rng))]),
        }
    }

    /// Maps and lists alternating, `DEPTH` levels in all, with a number
    /// edge case at the bottom.
    fn deep(rng: &mut StdRng) -> AttributeValue {
        let mut value = edge_number(rng);
        for level in 1..DEPTH {
            value = if level % 2 == 0 {
                AttributeValue::L(vec![value])
            } else {
                map([("down", value)])
            };
        }
        value
    }

    pub(in super::super) fn new(rng: &mut StdRng, _now_ms: u64) -> Item {
        let mut item = Item::new();
        for index in 0..ATTRIBUTES - 1 {
            item.insert(format!("a{index:03}").as_str().into(), value(rng, index));
        }
        item.insert("deep".into(), deep(rng));
        item
    }

    pub(in super::super) fn modify(rng: &mut StdRng, item: &mut Item, _now_ms: u64) {
        // A tenth of the attributes change, the rest stay.
        for _ in 0..ATTRIBUTES / 10 {
            let index = rng.random_range(0..ATTRIBUTES - 1);
            item.insert(format!("a{index:03}").as_str().into(), value(rng, index));
        }
        item.insert("deep".into(), deep(rng));
    }
}
