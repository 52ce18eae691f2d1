//! Primary keys of simulated table items: parsing key attributes out of
//! DynamoDB JSON, their order, the partition-key hash that places an item in
//! scan order, scan segments and stream shards, and item sizes as DynamoDB
//! counts them for paging and capacity.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dynamo_cdc_core::Number;
use serde_json::Value;

/// One key attribute's value. Key attributes can only be strings, numbers
/// or binaries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyValue {
    /// Ordered by UTF-8 bytes, as DynamoDB orders sort keys.
    S(String),
    /// Ordered numerically; `1` and `1.0` are the same key.
    N(Number),
    /// Ordered as unsigned bytes.
    B(Vec<u8>),
}

impl KeyValue {
    /// Reads an attribute value (`{"S": "a"}`) that is used as a key.
    pub(crate) fn parse(value: &Value) -> Result<Self, String> {
        let map = value
            .as_object()
            .filter(|m| m.len() == 1)
            .ok_or_else(|| format!("a key attribute value must be a one-type map, got {value}"))?;
        let (kind, inner) = map.iter().next().expect("one entry");
        let text = inner
            .as_str()
            .ok_or_else(|| format!("a key attribute's {kind} must be a string, got {inner}"))?;
        let key = match kind.as_str() {
            "S" => KeyValue::S(text.to_owned()),
            "N" => KeyValue::N(Number::parse(text).map_err(|e| e.to_string())?),
            "B" => KeyValue::B(
                BASE64
                    .decode(text)
                    .map_err(|e| format!("a key attribute's B is not base64: {e}"))?,
            ),
            other => return Err(format!("a key attribute cannot have type {other}")),
        };
        let empty = match &key {
            KeyValue::S(s) => s.is_empty(),
            KeyValue::B(b) => b.is_empty(),
            KeyValue::N(_) => false,
        };
        if empty {
            return Err(format!("a key attribute cannot be empty ({kind})"));
        }
        Ok(key)
    }

    /// `S`, `N` or `B`: the attribute type named in AttributeDefinitions.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            KeyValue::S(_) => "S",
            KeyValue::N(_) => "N",
            KeyValue::B(_) => "B",
        }
    }

    /// A hash that does not change between runs or platforms, so scan order,
    /// segments and shard choice are reproducible.
    pub(crate) fn stable_hash(&self) -> u64 {
        let (tag, bytes): (u8, &[u8]) = match self {
            KeyValue::S(s) => (b'S', s.as_bytes()),
            // The canonical text, so equal numbers hash alike.
            KeyValue::N(n) => (b'N', n.as_str().as_bytes()),
            KeyValue::B(b) => (b'B', b),
        };
        // FNV-1a, then a finalizer: FNV alone leaves the high bits (which pick
        // the segment) poorly mixed for short keys.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in std::iter::once(&tag).chain(bytes) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// An item's place in the table: the partition-key hash first, as DynamoDB
/// lays items out, then the partition key itself (for hash collisions),
/// then the sort key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ItemKey {
    pub hash: u64,
    pub partition: KeyValue,
    pub sort: Option<KeyValue>,
}

impl ItemKey {
    pub(crate) fn new(partition: KeyValue, sort: Option<KeyValue>) -> Self {
        ItemKey {
            hash: partition.stable_hash(),
            partition,
            sort,
        }
    }

    /// A bound at or before every key whose hash is at least `hash`: an empty
    /// string is the least key value, and never a real key.
    pub(crate) fn first_at(hash: u64) -> Self {
        ItemKey {
            hash,
            partition: KeyValue::S(String::new()),
            sort: None,
        }
    }
}

/// Which of `total` equal ranges of the hash space holds `hash`.
pub(crate) fn segment_of(hash: u64, total: u64) -> u64 {
    ((u128::from(hash) * u128::from(total)) >> 64) as u64
}

/// The least hash in segment `segment` of `total`.
pub(crate) fn segment_start(segment: u64, total: u64) -> u64 {
    (u128::from(segment) << 64).div_ceil(u128::from(total)) as u64
}

/// An item's size by DynamoDB's rules: attribute names plus values, where a
/// number takes about one byte per two significant digits plus one, a binary
/// its decoded length, and lists and maps three bytes plus one per element.
pub(crate) fn item_size(item: &Value) -> u64 {
    item.as_object().map_or(0, |map| {
        map.iter()
            .map(|(name, value)| name.len() as u64 + value_size(value))
            .sum()
    })
}

fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    let strings = || {
        inner
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, |s| s.len() as u64),
        "N" => inner.as_str().map_or(0, number_size),
        "B" => inner.as_str().map_or(0, binary_size),
        "BOOL" | "NULL" => 1,
        "SS" => strings().map(|s| s.len() as u64).sum(),
        "NS" => strings().map(number_size).sum(),
        "BS" => strings().map(binary_size).sum(),
        "L" => {
            let items = inner.as_array().map_or(&[][..], Vec::as_slice);
            3 + items.iter().map(|v| 1 + value_size(v)).sum::<u64>()
        }
        "M" => {
            let map = inner.as_object();
            3 + map
                .into_iter()
                .flatten()
                .map(|(k, v)| 1 + k.len() as u64 + value_size(v))
                .sum::<u64>()
        }
        _ => 0,
    }
}

fn number_size(text: &str) -> u64 {
    let digits = Number::parse(text).map_or(text.len(), |n| {
        let canonical = n.as_str().trim_start_matches('-').replace('.', "");
        canonical
            .trim_start_matches('0')
            .trim_end_matches('0')
            .len()
            .max(1)
    });
    (digits as u64).div_ceil(2) + 1
}

fn binary_size(text: &str) -> u64 {
    BASE64.decode(text).map_or(text.len(), |b| b.len()) as u64
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(v: Value) -> KeyValue {
        KeyValue::parse(&v).unwrap()
    }

    #[test]
    fn numbers_order_numerically_and_equal_texts_are_one_key() {
        assert!(key(json!({"N": "9"})) < key(json!({"N": "10"})));
        assert!(key(json!({"N": "-10"})) < key(json!({"N": "-9.5"})));
        assert_eq!(key(json!({"N": "1.0"})), key(json!({"N": "1"})));
        assert_eq!(
            key(json!({"N": "1.0"})).stable_hash(),
            key(json!({"N": "1e0"})).stable_hash()
        );
    }

    #[test]
    fn binaries_order_as_unsigned_bytes() {
        // 0x7f < 0x80: signed bytes would put them the other way round.
        assert!(key(json!({"B": "fw=="})) < key(json!({"B": "gA=="})));
    }

    #[test]
    fn bad_key_values_are_refused() {
        for bad in [
            json!({"S": ""}),
            json!({"N": "x"}),
            json!({"BOOL": true}),
            json!({"S": "a", "N": "1"}),
            json!("a"),
        ] {
            assert!(KeyValue::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_split_the_hash_space_into_contiguous_ranges() {
        for total in [1u64, 2, 3, 7, 1000] {
            for segment in 0..total.min(20) {
                let start = segment_start(segment, total);
                assert_eq!(segment_of(start, total), segment);
                if start > 0 {
                    assert_eq!(segment_of(start - 1, total), segment - 1);
                }
            }
            assert_eq!(segment_of(u64::MAX, total), total - 1);
        }
    }

    #[test]
    fn sizes_follow_the_documented_rules() {
        let item = json!({
            "pk": {"S": "abc"},
            "n": {"N": "12345"},
            "b": {"B": "AAEC"},
            "t": {"BOOL": true},
            "l": {"L": [{"S": "x"}, {"NULL": true}]},
        });
        // pk 2+3, n 1+(3+1), b 1+3, t 1+1, l 1+3+(1+1)+(1+1)
        assert_eq!(item_size(&item), 5 + 5 + 4 + 2 + 8);
    }
}
