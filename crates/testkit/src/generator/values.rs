//! Small builders for random but valid attribute values.
//!
//! Every number goes through [`Number::parse`], so a builder that strays
//! outside DynamoDB's limits fails loudly in the generator's own tests
//! instead of producing a fixture the bridge would reject.

use std::ops::RangeInclusive;

use dynamo_cdc_core::{AttributeValue, Item, Number};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

pub(super) fn s(text: impl Into<dynamo_cdc_core::Text>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub(super) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(Number::from(value))
}

/// A number from text the builders themselves produced.
pub(super) fn num(text: &str) -> Number {
    match Number::parse(text) {
        Ok(n) => n,
        Err(e) => panic!("generator built an invalid number: {e}"),
    }
}

/// `unscaled / 10^scale`, e.g. cents with scale 2.
pub(super) fn decimal(unscaled: i64, scale: u8) -> AttributeValue {
    match Number::from_decimal128(i128::from(unscaled), scale) {
        Ok(n) => AttributeValue::N(n),
        Err(e) => panic!("generator built an invalid decimal: {e}"),
    }
}

pub(super) fn map<const K: usize>(entries: [(&str, AttributeValue); K]) -> AttributeValue {
    AttributeValue::M(entries.into_iter().collect())
}

/// `{lat, lon}` with six decimals, either sign.
pub(super) fn geo(rng: &mut StdRng) -> AttributeValue {
    map([
        (
            "lat",
            decimal(rng.random_range(-90_000_000..=90_000_000), 6),
        ),
        (
            "lon",
            decimal(rng.random_range(-180_000_000..180_000_000), 6),
        ),
    ])
}

pub(super) fn pick<'a>(rng: &mut StdRng, from: &'a [&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or_default()
}

pub(super) fn bytes(rng: &mut StdRng, len: RangeInclusive<usize>) -> Vec<u8> {
    let len = rng.random_range(len);
    let mut b = vec![0u8; len];
    rng.fill(&mut b[..]);
    b
}

pub(super) fn hex(rng: &mut StdRng, len: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..len)
        .map(|_| char::from(DIGITS[rng.random_range(0..16)]))
        .collect()
}

/// An integer of `digits` digits: past i64 from 20 digits on, at most 38.
pub(super) fn big_integer(
    rng: &mut StdRng,
    digits: RangeInclusive<usize>,
    negative: bool,
) -> Number {
    let digits = rng.random_range(digits);
    let mut text = String::with_capacity(digits + 1);
    if negative {
        text.push('-');
    }
    text.push(char::from(b'1' + rng.random_range(0..9u8)));
    for _ in 1..digits {
        text.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    num(&text)
}

/// `d.ddd…E<exponent>` with `digits` significant digits.
pub(super) fn scientific(
    rng: &mut StdRng,
    digits: RangeInclusive<usize>,
    exponent: RangeInclusive<i32>,
    negative: bool,
) -> Number {
    let digits = rng.random_range(digits);
    let exponent = rng.random_range(exponent);
    let mut text = String::new();
    if negative {
        text.push('-');
    }
    text.push(char::from(b'1' + rng.random_range(0..9u8)));
    if digits > 1 {
        text.push('.');
        for _ in 1..digits {
            text.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
    }
    text.push_str(&format!("E{exponent}"));
    num(&text)
}

/// A string set of `count` distinct members of `pool` (at least one).
pub(super) fn string_set(
    rng: &mut StdRng,
    pool: &[&str],
    count: RangeInclusive<usize>,
) -> AttributeValue {
    let count = rng.random_range(count);
    let chosen: Vec<String> = pool
        .choose_multiple(rng, count.clamp(1, pool.len()))
        .map(|s| (*s).to_owned())
        .collect();
    set_or_panic(AttributeValue::string_set(chosen))
}

/// A number set of distinct numbers drawn by `draw`.
pub(super) fn number_set(
    rng: &mut StdRng,
    count: RangeInclusive<usize>,
    mut draw: impl FnMut(&mut StdRng) -> Number,
) -> AttributeValue {
    let count = rng.random_range(count);
    let mut values: Vec<Number> = Vec::with_capacity(count);
    // Draw until enough distinct values; bounded so a narrow `draw` cannot
    // spin forever.
    for _ in 0..count.max(1) * 8 {
        if values.len() >= count.max(1) {
            break;
        }
        let v = draw(rng);
        if !values.contains(&v) {
            values.push(v);
        }
    }
    set_or_panic(AttributeValue::number_set(values))
}

/// A binary set of `count` distinct non-empty blobs of `len` bytes.
pub(super) fn binary_set(
    rng: &mut StdRng,
    count: RangeInclusive<usize>,
    len: usize,
) -> AttributeValue {
    let count = rng.random_range(count);
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(count);
    while values.len() < count.max(1) {
        let b = bytes(rng, len.max(1)..=len.max(1));
        if !values.contains(&b) {
            values.push(b);
        }
    }
    set_or_panic(AttributeValue::binary_set(values))
}

fn set_or_panic(set: Result<AttributeValue, String>) -> AttributeValue {
    match set {
        Ok(v) => v,
        Err(e) => panic!("generator built an invalid set: {e}"),
    }
}

/// Adds `member` to the string set at `name`, creating the set if needed.
pub(super) fn add_to_string_set(item: &mut Item, name: &str, member: &str) {
    let mut members = match item.get(name) {
        Some(AttributeValue::Ss(v)) => v.clone(),
        _ => Vec::new(),
    };
    if !members.iter().any(|m| m == member) {
        members.push(member.to_owned());
    }
    item.insert(
        name.into(),
        set_or_panic(AttributeValue::string_set(members)),
    );
}

/// The integer value of the number attribute `name`, if there is one.
pub(super) fn int_of(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.to_i64(),
        _ => None,
    }
}

/// Adds `by` to the integer attribute `name` (missing counts as zero).
pub(super) fn bump(item: &mut Item, name: &str, by: i64) {
    let next = int_of(item, name).unwrap_or(0).saturating_add(by);
    item.insert(name.into(), n(next));
}
