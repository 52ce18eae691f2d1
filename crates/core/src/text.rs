//! [`Text`]: attribute names and string values, short ones kept inline.
//!
//! Most attribute names and many string values are a few bytes long; a
//! heap allocation for each would cost more than the bytes themselves. A
//! `Text` of up to 22 bytes is held in the value itself (24 bytes,
//! like a `String`), a longer one in a shared `Arc<str>`, so clones are
//! cheap either way.
//!
//! Why not a string crate: the parser makes a `Text` for every name and
//! most values of every record, so its constructor is on the hottest path
//! there is. Building an inline value byte by byte in memory and then
//! moving it whole makes the processor wait: a wide load of bytes that
//! several narrower stores have just written cannot be forwarded from those
//! stores and stalls until they retire. [`Text::new`] instead reads the
//! bytes into registers with a few overlapping fixed-size loads and writes
//! the value once.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// Longest text kept inline.
pub(crate) const INLINE: usize = 22;

/// An immutable UTF-8 string; compares, orders and hashes as its `str`.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is the text; the rest is zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Arc<str>),
}

impl Text {
    /// A text with `text`'s contents.
    #[inline]
    pub fn new(text: impl AsRef<str>) -> Text {
        let text = text.as_ref();
        if text.len() <= INLINE {
            Text(Repr::Inline {
                len: text.len() as u8,
                bytes: inline_bytes(text.as_bytes()),
            })
        } else {
            Text(Repr::Heap(Arc::from(text)))
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len)];
                // SAFETY: `bytes` is a copy of a whole `&str` (see `new`),
                // so it is valid UTF-8.
                #[allow(unsafe_code)]
                unsafe {
                    std::str::from_utf8_unchecked(bytes)
                }
            }
            Repr::Heap(text) => text,
        }
    }
}

/// `b` (at most [`INLINE`] bytes) zero-padded to [`INLINE`] bytes, read with
/// overlapping fixed-size loads into two registers: the bytes `0..16` and
/// `16..22`. The loads that overlap are shifted so that every byte lands
/// once.
#[inline(always)]
fn inline_bytes(b: &[u8]) -> [u8; INLINE] {
    let n = b.len();
    debug_assert!(n <= INLINE);
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u64::from(u32::from_le_bytes(b[i..i + 4].try_into().expect("4")));
    // `x` with its low `k` bytes dropped (`k` = 8 drops them all).
    let drop_low = |x: u64, k: usize| x.checked_shr(8 * k as u32).unwrap_or(0);
    let (low, high): (u128, u64) = if n >= 16 {
        // The last 8 bytes end at `n`; those below 16 are in `low` already.
        let low = u128::from(u64_at(0)) | u128::from(u64_at(8)) << 64;
        (low, drop_low(u64_at(n - 8), 24 - n))
    } else if n >= 8 {
        let tail = drop_low(u64_at(n - 8), 16 - n);
        (u128::from(u64_at(0)) | u128::from(tail) << 64, 0)
    } else if n >= 4 {
        let tail = drop_low(u32_at(n - 4), 8 - n);
        (u128::from(u32_at(0) | tail << 32), 0)
    } else if n > 0 {
        // 1 to 3 bytes: the first, the middle and the last cover them.
        let word = u64::from(b[0])
            | u64::from(b[n / 2]) << (8 * (n / 2))
            | u64::from(b[n - 1]) << (8 * (n - 1));
        (u128::from(word), 0)
    } else {
        (0, 0)
    };
    let mut bytes = [0u8; INLINE];
    bytes[..16].copy_from_slice(&low.to_le_bytes());
    bytes[16..].copy_from_slice(&high.to_le_bytes()[..INLINE - 16]);
    bytes
}

impl Deref for Text {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Two inline texts compare by their fixed-size bytes, a few word compares
// in registers: comparing their `str`s called `memcmp`, once per attribute
// name when a page's items are sorted and again when a batch's rows are
// matched to their columns (3% of a replay into Parquet).

impl PartialEq for Text {
    #[inline]
    fn eq(&self, other: &Text) -> bool {
        match (&self.0, &other.0) {
            // The bytes past `len` are zero in both (see `inline_bytes`).
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => {
                a == b && x == y
            }
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    #[inline]
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    #[inline]
    fn cmp(&self, other: &Text) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => {
                // Zero-padded bytes in big-endian words order as the
                // strings do up to the shorter one's end; past it the
                // padding is at most the longer one's bytes (equal only
                // where those are NULs), and then the shorter comes first.
                // The last word overlaps the second (bytes 14 and 15 are
                // equal by then): every load is a whole word, in place.
                let word = |bytes: &[u8; INLINE], at: usize| {
                    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
                };
                word(x, 0)
                    .cmp(&word(y, 0))
                    .then_with(|| word(x, 8).cmp(&word(y, 8)))
                    .then_with(|| word(x, INLINE - 8).cmp(&word(y, INLINE - 8)))
                    .then_with(|| a.cmp(b))
            }
            _ => self.as_str().cmp(other.as_str()),
        }
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Text {
    #[inline]
    fn from(text: &str) -> Text {
        Text::new(text)
    }
}

impl From<&String> for Text {
    #[inline]
    fn from(text: &String) -> Text {
        Text::new(text)
    }
}

impl From<String> for Text {
    #[inline]
    fn from(text: String) -> Text {
        Text::new(text)
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;

        impl serde::de::Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text, E> {
                Ok(Text::new(text))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn is_as_small_as_a_string_and_so_is_an_optional_one() {
        assert_eq!(size_of::<Text>(), 24);
        assert_eq!(size_of::<Option<Text>>(), 24);
    }

    #[test]
    fn every_length_up_to_the_inline_limit_reads_back_inline_and_zero_padded() {
        let source: String = ('a'..='z').chain('A'..='Z').collect();
        for n in 0..=INLINE + 2 {
            let text = Text::new(&source[..n]);
            assert_eq!(text.as_str(), &source[..n], "length {n}");
            assert_eq!(matches!(text.0, Repr::Heap(_)), n > INLINE, "length {n}");
            if let Repr::Inline { bytes, .. } = &text.0 {
                assert!(bytes[n..].iter().all(|&b| b == 0), "length {n}: padding");
            }
        }
    }

    #[test]
    fn multibyte_characters_are_kept_whole() {
        for s in [
            "é",
            "日本",
            "naïve café ☕",
            "𝄞𝄞𝄞𝄞𝄞",
            "ünïcödé ünïcödé ünïcödé",
        ] {
            assert_eq!(Text::new(s).as_str(), s);
        }
    }

    #[test]
    fn serializes_as_a_string_and_reads_back() {
        let text = Text::new("a \"quoted\" name");
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#""a \"quoted\" name""#);
        assert_eq!(serde_json::from_str::<Text>(&json).unwrap(), text);
        assert!(serde_json::from_str::<Text>("1").is_err());
    }

    #[test]
    fn is_found_in_sets_by_its_str() {
        let set: HashSet<Text> = ["pk", "a name longer than the inline limit"]
            .into_iter()
            .map(Text::from)
            .collect();
        assert!(set.contains("pk"));
        assert!(set.contains("a name longer than the inline limit"));
        assert!(!set.contains("sk"));
    }

    proptest! {
        /// Whatever its length and characters, a `Text` is its `str`: the
        /// same contents, order, equality and hash.
        #[test]
        fn behaves_as_its_str(a in ".{0,40}", b in ".{0,40}") {
            let (ta, tb) = (Text::new(&a), Text::new(&b));
            prop_assert_eq!(ta.as_str(), a.as_str());
            prop_assert_eq!(ta.cmp(&tb), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(ta == tb, a == b);
            let hash = |x: &dyn Fn(&mut std::hash::DefaultHasher)| {
                let mut h = std::hash::DefaultHasher::new();
                x(&mut h);
                h.finish()
            };
            prop_assert_eq!(hash(&|h| ta.hash(h)), hash(&|h| a.as_str().hash(h)));
            prop_assert_eq!(ta.clone(), ta);
        }

        /// Order and equality hold where strings share prefixes, hold
        /// NULs (which the inline padding is made of), or straddle the
        /// inline limit.
        #[test]
        fn orders_as_its_str_across_prefixes_and_nuls(
            a in "[\\x00ab\\x7f\\u{e9}]{0,26}",
            b in "[\\x00ab\\x7f\\u{e9}]{0,26}",
        ) {
            let (ta, tb) = (Text::new(&a), Text::new(&b));
            prop_assert_eq!(ta.cmp(&tb), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(ta == tb, a == b);
            let (pa, pb) = (Text::new(format!("{a}{b}")), Text::new(&a));
            prop_assert_eq!(pa.cmp(&pb), format!("{a}{b}").as_str().cmp(a.as_str()));
        }
    }
}
