//! DynamoDB attribute values and their DynamoDB-JSON form.
//!
//! Parsing goes straight from JSON text to [`AttributeValue`] (no intermediate
//! `serde_json::Value`), checks everything DynamoDB itself would reject, and
//! names the attribute path of the first problem, e.g.
//! `NewImage.address.lines[2]: unknown type tag "X"`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserializer, Serialize, Serializer};

use crate::item::Item;
use crate::json_scan::json_special_position;
use crate::nested::NestedText;
use crate::number::Number;
use crate::text::Text;

/// Deepest nesting of lists and maps DynamoDB stores: a top-level map or list
/// is level 1.
pub const MAX_NESTING: usize = 32;

/// One DynamoDB attribute value. Sets are kept sorted (strings and binaries
/// bytewise, numbers numerically) and free of duplicates.
///
/// A map or list is either a tree ([`AttributeValue::M`], [`AttributeValue::L`])
/// or its text ([`AttributeValue::Nested`]); the two forms of one value are
/// equal.
#[derive(Clone, Debug)]
pub enum AttributeValue {
    /// `S`: a UTF-8 string.
    S(Text),
    /// `N`: an exact decimal.
    N(Number),
    /// `B`: bytes (base64 in JSON).
    B(Vec<u8>),
    /// `BOOL`.
    Bool(bool),
    /// `NULL`.
    Null,
    /// `SS`: a string set.
    Ss(Vec<String>),
    /// `NS`: a number set.
    Ns(Vec<Number>),
    /// `BS`: a binary set.
    Bs(Vec<Vec<u8>>),
    /// `L`: a list of any values.
    L(Vec<AttributeValue>),
    /// `M`: a map of any values.
    M(Item),
    /// `M` or `L` as its canonical DynamoDB JSON, read where no sink looks
    /// inside it (see [`NestedText`]).
    Nested(NestedText),
}

impl PartialEq for AttributeValue {
    fn eq(&self, other: &AttributeValue) -> bool {
        use AttributeValue as V;
        match (self, other) {
            (V::S(a), V::S(b)) => a == b,
            (V::N(a), V::N(b)) => a == b,
            (V::B(a), V::B(b)) => a == b,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Null, V::Null) => true,
            (V::Ss(a), V::Ss(b)) => a == b,
            (V::Ns(a), V::Ns(b)) => a == b,
            (V::Bs(a), V::Bs(b)) => a == b,
            (V::L(a), V::L(b)) => a == b,
            (V::M(a), V::M(b)) => a == b,
            (V::Nested(a), V::Nested(b)) => a == b,
            // Canonical texts are equal exactly when the values are.
            (V::Nested(text), tree @ (V::M(_) | V::L(_)))
            | (tree @ (V::M(_) | V::L(_)), V::Nested(text)) => text.as_str() == tree.to_ddb_json(),
            _ => false,
        }
    }
}

impl Eq for AttributeValue {}

impl AttributeValue {
    /// The DynamoDB type tag (`S`, `N`, `M`, …).
    pub fn tag(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null => "NULL",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
            AttributeValue::L(_) => "L",
            AttributeValue::M(_) => "M",
            AttributeValue::Nested(text) => text.tag(),
        }
    }

    /// This value with a map or list as a tree: a [`AttributeValue::Nested`]
    /// text is read into one, every other value is borrowed as it is. For
    /// whoever looks inside maps and lists (a declared struct or list).
    pub fn as_tree(&self) -> Cow<'_, AttributeValue> {
        match self {
            AttributeValue::Nested(text) => Cow::Owned(text.tree()),
            other => Cow::Borrowed(other),
        }
    }

    /// This value as one DynamoDB-JSON object, e.g. `{"N":"1.5"}`: the same
    /// text `serde_json` makes of it, written directly (this runs for every
    /// list and map column of every row).
    pub fn to_ddb_json(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_ddb_json(&mut out);
        out
    }

    /// Appends [`AttributeValue::to_ddb_json`]'s text to `out`, so callers
    /// that write many values can reuse one buffer.
    pub fn write_ddb_json(&self, out: &mut String) {
        if let AttributeValue::Nested(text) = self {
            out.push_str(text.as_str());
            return;
        }
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
        out.push_str("{\"");
        out.push_str(self.tag());
        out.push_str("\":");
        match self {
            AttributeValue::S(v) => write_json_string(out, v),
            AttributeValue::N(v) => number_string(out, v),
            AttributeValue::B(v) => base64_string(out, v),
            AttributeValue::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
            AttributeValue::Null => out.push_str("true"),
            AttributeValue::Ss(v) => list(out, v, |o, s| write_json_string(o, s)),
            AttributeValue::Ns(v) => list(out, v, number_string),
            AttributeValue::Bs(v) => list(out, v, |o, b| base64_string(o, b)),
            AttributeValue::L(v) => list(out, v, |o, x| x.write_ddb_json(o)),
            AttributeValue::M(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, k);
                    out.push(':');
                    x.write_ddb_json(out);
                }
                out.push('}');
            }
            AttributeValue::Nested(_) => unreachable!("written whole above"),
        }
        out.push('}');
    }

    /// Parses one DynamoDB-JSON attribute value, e.g. `{"M":{"a":{"S":"x"}}}`.
    ///
    /// # Errors
    /// A [`serde_json::Error`] naming the path and the problem.
    pub fn from_ddb_json(text: &str) -> Result<Self, serde_json::Error> {
        let path = PathStack::default();
        let mut de = serde_json::Deserializer::from_str(text);
        let value = ValueSeed {
            depth: 1,
            path: &path,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// Builds a string set, sorting it.
    ///
    /// # Errors
    /// When the set is empty or holds a duplicate.
    pub fn string_set(mut values: Vec<String>) -> Result<Self, String> {
        values.sort_unstable();
        check_set(&values, "SS")?;
        Ok(AttributeValue::Ss(values))
    }

    /// Builds a number set, sorting it numerically.
    ///
    /// # Errors
    /// When the set is empty or holds a duplicate.
    pub fn number_set(mut values: Vec<Number>) -> Result<Self, String> {
        values.sort_unstable();
        check_set(&values, "NS")?;
        Ok(AttributeValue::Ns(values))
    }

    /// Builds a binary set, sorting it.
    ///
    /// # Errors
    /// When the set is empty or holds a duplicate.
    pub fn binary_set(mut values: Vec<Vec<u8>>) -> Result<Self, String> {
        values.sort_unstable();
        check_set(&values, "BS")?;
        Ok(AttributeValue::Bs(values))
    }
}

/// Appends a number as a JSON string: its canonical text (digits, `-`, `.`,
/// `E`, `+`) needs no escaping, so it is not scanned for any.
fn number_string(out: &mut String, n: &Number) {
    out.push('"');
    out.push_str(n.as_str());
    out.push('"');
}

/// Appends bytes as a base64 JSON string (base64 needs no escaping).
fn base64_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    BASE64.encode_string(bytes, out);
    out.push('"');
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run = 0;
    while let Some(n) = json_special_position(&bytes[run..]) {
        let at = run + n;
        out.push_str(&s[run..at]);
        match bytes[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        run = at + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

fn check_set<T: PartialEq>(sorted: &[T], tag: &str) -> Result<(), String> {
    if sorted.is_empty() {
        return Err(format!(
            "empty {tag} set; DynamoDB sets hold at least one element"
        ));
    }
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("duplicate element in {tag} set"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Serialization: DynamoDB JSON.

struct B64<'a>(&'a [u8]);

impl Serialize for B64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(self.0))
    }
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for AttributeValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let AttributeValue::Nested(text) = self {
            // Rare (a record rendered for a dead letter): the tree renders
            // the same text.
            return text.tree().serialize(s);
        }
        let mut map = s.serialize_map(Some(1))?;
        match self {
            AttributeValue::S(v) => map.serialize_entry("S", v)?,
            AttributeValue::N(v) => map.serialize_entry("N", v)?,
            AttributeValue::B(v) => map.serialize_entry("B", &B64(v))?,
            AttributeValue::Bool(v) => map.serialize_entry("BOOL", v)?,
            AttributeValue::Null => map.serialize_entry("NULL", &true)?,
            AttributeValue::Ss(v) => map.serialize_entry("SS", v)?,
            AttributeValue::Ns(v) => map.serialize_entry("NS", v)?,
            AttributeValue::Bs(v) => map.serialize_entry("BS", &BinarySet(v))?,
            AttributeValue::L(v) => map.serialize_entry("L", v)?,
            AttributeValue::M(v) => map.serialize_entry("M", v)?,
            AttributeValue::Nested(_) => unreachable!("serialized as its tree above"),
        }
        map.end()
    }
}

struct BinarySet<'a>(&'a [Vec<u8>]);

impl Serialize for BinarySet<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            seq.serialize_element(&B64(b))?;
        }
        seq.end()
    }
}

// ---------------------------------------------------------------------------
// Deserialization with attribute paths and DynamoDB's own limits.

/// An attribute or map entry name as an error's path shows it: bare when it
/// is made only of ASCII letters, digits, `_` and `-`, else quoted as a
/// JSON string (`prices."eu.de"`, `"two words"`, `""`), so that a name
/// holding a dot, a bracket or a space cannot read as more steps of the
/// path than it is.
pub struct PathName<'a>(pub &'a str);

impl fmt::Display for PathName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0;
        let bare = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if bare {
            f.write_str(name)
        } else {
            let mut quoted = String::with_capacity(name.len() + 2);
            write_json_string(&mut quoted, name);
            f.write_str(&quoted)
        }
    }
}

/// One step of an attribute path.
#[derive(Debug)]
enum Segment {
    Name(Text),
    Index(usize),
}

/// The attribute path being parsed, used only to word errors.
#[derive(Debug, Default)]
pub struct PathStack {
    segments: RefCell<Vec<Segment>>,
}

impl PathStack {
    /// A path that starts at `root` (e.g. `NewImage`).
    pub fn with_root(root: &str) -> Self {
        PathStack {
            segments: RefCell::new(vec![Segment::Name(root.into())]),
        }
    }

    fn push(&self, segment: Segment) {
        self.segments.borrow_mut().push(segment);
    }

    fn pop(&self) -> Option<Segment> {
        self.segments.borrow_mut().pop()
    }

    fn error<E: de::Error>(&self, message: impl fmt::Display) -> E {
        let segments = self.segments.borrow();
        if segments.is_empty() {
            return E::custom(message);
        }
        let mut path = String::new();
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                // The root is ours (`NewImage`, `Items[3]`), never quoted.
                Segment::Name(n) if i == 0 => path.push_str(n),
                Segment::Name(n) => {
                    let _ = write!(path, ".{}", PathName(n));
                }
                Segment::Index(ix) => {
                    let _ = write!(path, "[{ix}]");
                }
            }
        }
        E::custom(format_args!("at `{path}`: {message}"))
    }
}

/// A parser's message without its position (` at line 1 column 87`): the
/// error made of it gets the position again, and the path says more.
fn without_position(message: &str) -> &str {
    let Some(at) = message.rfind(" at line ") else {
        return message;
    };
    let mut words = message[at + " at line ".len()..].split(' ');
    let is_number = |w: Option<&str>| w.is_some_and(|w| w.parse::<u64>().is_ok());
    let positioned = is_number(words.next())
        && words.next() == Some("column")
        && is_number(words.next())
        && words.next().is_none();
    if positioned { &message[..at] } else { message }
}

/// Parses an item (`{"name": {"S": "..."}, ...}`), e.g. a `NewImage`.
pub struct ItemSeed<'p> {
    path: &'p PathStack,
}

impl<'p> ItemSeed<'p> {
    /// A seed that reports errors under `path`.
    pub fn new(path: &'p PathStack) -> Self {
        ItemSeed { path }
    }
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_map(MapVisitor {
            depth: 1,
            path: self.path,
        })
    }
}

/// Parses an item from text.
///
/// # Errors
/// A [`serde_json::Error`] naming the path and the problem.
pub fn parse_item(text: &str, root: &str) -> Result<Item, serde_json::Error> {
    let path = PathStack::with_root(root);
    let mut de = serde_json::Deserializer::from_str(text);
    let item = ItemSeed::new(&path).deserialize(&mut de)?;
    de.end()?;
    Ok(item)
}

struct MapVisitor<'p> {
    /// depth of the values inside this map
    depth: usize,
    path: &'p PathStack,
}

impl<'de> Visitor<'de> for MapVisitor<'_> {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attribute names to DynamoDB-JSON values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        // Collect, sort once and bulk-build: cheaper than a tree descent per
        // insert, and duplicates show up as neighbours.
        let mut entries: Vec<(Text, AttributeValue)> =
            Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(name) = map.next_key::<Text>()? {
            self.path.push(Segment::Name(name));
            let value = map.next_value_seed(ValueSeed {
                depth: self.depth,
                path: self.path,
            })?;
            let Some(Segment::Name(name)) = self.path.pop() else {
                unreachable!("path stack is balanced")
            };
            entries.push((name, value));
        }
        Item::from_entries(entries).map_err(|name| {
            self.path
                .error(format_args!("duplicate attribute `{name}`"))
        })
    }
}

struct ValueSeed<'p> {
    depth: usize,
    path: &'p PathStack,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = AttributeValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AttributeValue, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = AttributeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DynamoDB-JSON value such as {\"S\": \"text\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttributeValue, A::Error> {
        let path = self.path;
        let Some(tag) = map.next_key::<std::borrow::Cow<'de, str>>()? else {
            return Err(path.error("empty value object; expected one type tag such as \"S\""));
        };
        // The parser's own words for a value of the wrong JSON type or a
        // bad string, with the attribute's path.
        let at = |e: A::Error| path.error::<A::Error>(without_position(&e.to_string()));
        let value = match tag.as_ref() {
            "S" => AttributeValue::S(map.next_value().map_err(at)?),
            "N" => {
                let text: std::borrow::Cow<'de, str> = map.next_value().map_err(at)?;
                AttributeValue::N(Number::parse(&text).map_err(|e| path.error(e))?)
            }
            "B" => {
                let text: std::borrow::Cow<'de, str> = map.next_value().map_err(at)?;
                AttributeValue::B(decode_b64(&text).map_err(|e| path.error(e))?)
            }
            "BOOL" => AttributeValue::Bool(map.next_value().map_err(at)?),
            "NULL" => {
                if !map.next_value::<bool>().map_err(at)? {
                    return Err(path.error("NULL must be true"));
                }
                AttributeValue::Null
            }
            "SS" => {
                let v: Vec<String> = map.next_value().map_err(at)?;
                AttributeValue::string_set(v).map_err(|e| path.error(e))?
            }
            "NS" => {
                let texts: Vec<std::borrow::Cow<'de, str>> = map.next_value().map_err(at)?;
                let numbers = texts
                    .iter()
                    .map(|t| Number::parse(t))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| path.error(e))?;
                AttributeValue::number_set(numbers).map_err(|e| path.error(e))?
            }
            "BS" => {
                let texts: Vec<std::borrow::Cow<'de, str>> = map.next_value().map_err(at)?;
                let bytes = texts
                    .iter()
                    .map(|t| decode_b64(t))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| path.error(e))?;
                AttributeValue::binary_set(bytes).map_err(|e| path.error(e))?
            }
            "L" | "M" if self.depth > MAX_NESTING => {
                return Err(path.error(format_args!(
                    "nesting deeper than {MAX_NESTING} levels of lists and maps"
                )));
            }
            "L" => AttributeValue::L(map.next_value_seed(ListSeed {
                depth: self.depth + 1,
                path,
            })?),
            "M" => AttributeValue::M(map.next_value_seed(MapSeed {
                depth: self.depth + 1,
                path,
            })?),
            other => {
                return Err(path.error(format_args!(
                    "unknown type tag \"{other}\"; expected one of S, N, B, BOOL, NULL, SS, NS, BS, L, M"
                )));
            }
        };
        if let Some(extra) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            return Err(path.error(format_args!(
                "value has a second type tag \"{extra}\"; exactly one is allowed"
            )));
        }
        Ok(value)
    }
}

fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(text)
        .map_err(|e| format!("invalid base64 in binary value: {e}"))
}

struct ListSeed<'p> {
    depth: usize,
    path: &'p PathStack,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<AttributeValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<AttributeValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of DynamoDB-JSON values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            self.path.push(Segment::Index(out.len()));
            let next = seq.next_element_seed(ValueSeed {
                depth: self.depth,
                path: self.path,
            });
            self.path.pop();
            match next? {
                Some(v) => out.push(v),
                None => return Ok(out),
            }
        }
    }
}

struct MapSeed<'p> {
    depth: usize,
    path: &'p PathStack,
}

impl<'de> DeserializeSeed<'de> for MapSeed<'_> {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_map(MapVisitor {
            depth: self.depth,
            path: self.path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let text = r#"{"M":{"b":{"B":"AAEC/w=="},"bool":{"BOOL":false},"bs":{"BS":["Ag==","AQ=="]},"l":{"L":[{"NULL":true},{"S":"x"}]},"n":{"N":"1.5"},"ns":{"NS":["10","-2","3"]},"s":{"S":"é\n\"q\""},"ss":{"SS":["b","a"]}}}"#;
        let v = AttributeValue::from_ddb_json(text).unwrap();
        let AttributeValue::M(m) = &v else { panic!() };
        assert_eq!(
            m["ns"],
            AttributeValue::Ns(
                ["-2", "3", "10"]
                    .map(|t| Number::parse(t).unwrap())
                    .to_vec()
            )
        );
        assert_eq!(m["ss"], AttributeValue::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(m["bs"], AttributeValue::Bs(vec![vec![1], vec![2]]));
        assert_eq!(m["b"], AttributeValue::B(vec![0, 1, 2, 255]));
        let again = AttributeValue::from_ddb_json(&v.to_ddb_json()).unwrap();
        assert_eq!(again, v);
        assert_eq!(v.to_ddb_json(), serde_json::to_string(&v).unwrap());
        let controls = AttributeValue::S("\u{0}\u{1f}\u{7f}\u{8}\u{c}/".into());
        assert_eq!(
            controls.to_ddb_json(),
            serde_json::to_string(&controls).unwrap()
        );
    }

    fn err(text: &str) -> String {
        parse_item(text, "NewImage").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_path() {
        let e = err(r#"{"a":{"M":{"b":{"L":[{"S":"x"},{"X":"y"}]}}}}"#);
        assert!(
            e.contains("at `NewImage.a.b[1]`: unknown type tag \"X\""),
            "{e}"
        );
        let e = err(&format!(r#"{{"p":{{"N":"{}"}}}}"#, "9".repeat(39)));
        assert!(
            e.contains("at `NewImage.p`") && e.contains("39 significant digits"),
            "{e}"
        );
        let e = err(r#"{"p":{"N":"1E200"}}"#);
        assert!(e.contains("out of range"), "{e}");
        let e = err(r#"{"p":{"S":"a","N":"1"}}"#);
        assert!(e.contains("second type tag"), "{e}");
        let e = err(r#"{"p":{"SS":["a","a"]}}"#);
        assert!(e.contains("duplicate element"), "{e}");
        let e = err(r#"{"p":{"SS":[]}}"#);
        assert!(e.contains("empty SS set"), "{e}");
        let e = err(r#"{"p":{"B":"***"}}"#);
        assert!(e.contains("invalid base64"), "{e}");
        let e = err(r#"{"p":{"NULL":false}}"#);
        assert!(e.contains("NULL must be true"), "{e}");
        // The parser's own errors inside a value name the path too, once
        // with a position.
        for (text, words) in [
            (r#"{"p":{"N":5}}"#, "invalid type: integer `5`"),
            (r#"{"p":{"S":"\ud800"}}"#, "hex escape"),
            (r#"{"p":{"BOOL":"yes"}}"#, "invalid type: string"),
            (r#"{"p":{"SS":[1]}}"#, "invalid type: integer `1`"),
        ] {
            let e = err(text);
            assert!(e.starts_with("at `NewImage.p`: "), "{e}");
            assert!(e.contains(words), "{e}");
            assert_eq!(e.matches(" at line ").count(), 1, "{e}");
        }
        let e = err(r#"{"p":{}}"#);
        assert!(e.contains("empty value object"), "{e}");
        let e = err(r#"{"p":{"S":"a"},"p":{"S":"b"}}"#);
        assert!(e.contains("duplicate attribute `p`"), "{e}");
    }

    #[test]
    fn names_that_could_read_as_more_steps_are_quoted() {
        let e = err(r#"{"a.b":{"M":{"c d":{"L":[{"M":{"":{"X":"y"}}}]}}}}"#);
        assert!(
            e.contains(r#"at `NewImage."a.b"."c d"[0].""`: unknown type tag"#),
            "{e}"
        );
        let e = err(r#"{"x[1]":{"M":{"say \"hi\"":{"X":"y"}}}}"#);
        assert!(e.contains(r#"at `NewImage."x[1]"."say \"hi\""`"#), "{e}");
        let e = parse_item(r#"{"a.b":{"X":"y"}}"#, "Items[3]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"at `Items[3]."a.b"`"#),
            "the root is never quoted: {e}"
        );
        for bare in ["plain", "snake_case", "kebab-case", "Ünï"] {
            let shown = PathName(bare).to_string();
            assert_eq!(shown == bare, bare.is_ascii(), "{bare} -> {shown}");
        }
    }

    fn nested(levels: usize) -> String {
        let mut s = String::from(r#"{"S":"leaf"}"#);
        for _ in 0..levels {
            s = format!(r#"{{"M":{{"k":{s}}}}}"#);
        }
        format!(r#"{{"top":{s}}}"#)
    }

    #[test]
    fn nesting_limit() {
        assert!(parse_item(&nested(MAX_NESTING), "Item").is_ok());
        let e = parse_item(&nested(MAX_NESTING + 1), "Item")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nesting deeper than 32"), "{e}");
    }
}
