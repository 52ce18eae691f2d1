//! [`NestedText`]: a map or list attribute kept as its DynamoDB-JSON text.
//!
//! Parquet and Iceberg columns hold a map or list as its DynamoDB JSON
//! ([`AttributeValue::write_ddb_json`]), and so does an Avro field whose
//! schema was inferred. For those sinks a tree of [`AttributeValue`]s is
//! built only to be written back as text and freed: allocations for every
//! entry, element and long string, and a walk to render it. Where no sink
//! reads inside them, the source writes a map or list straight into the text
//! the tree would have rendered, and keeps that ([`AttributeValue::Nested`]).
//!
//! The text is canonical: exactly what [`AttributeValue::write_ddb_json`]
//! writes for the value (map entries sorted by name, numbers in canonical
//! form, sets sorted, strings escaped as `serde_json` escapes them, no
//! whitespace). Two values are therefore equal exactly when their texts
//! are, and a nested text equals the tree it stands for. Whoever still
//! needs the tree (a declared struct or list column, a JSON message) gets it
//! from [`NestedText::tree`].

use std::fmt;

use crate::attribute::AttributeValue;
use crate::text::Text;

/// A map (`M`) or list (`L`) value as its canonical DynamoDB-JSON text,
/// e.g. `{"M":{"a":{"N":"1"}}}`.
#[derive(Clone, PartialEq, Eq)]
pub struct NestedText {
    json: Text,
}

impl NestedText {
    /// Wraps `json`, which must be the canonical DynamoDB JSON of a valid
    /// `M` or `L` value: what [`AttributeValue::write_ddb_json`] writes for
    /// it. Anything else breaks what the type promises (equality, and
    /// [`NestedText::tree`]); debug builds check it.
    pub fn from_canonical(json: Text) -> NestedText {
        debug_assert!(
            is_canonical(&json),
            "not the canonical DynamoDB JSON of a map or list: {json}"
        );
        NestedText { json }
    }

    /// The value's tree, read from the text.
    pub fn tree(&self) -> AttributeValue {
        AttributeValue::from_ddb_json(&self.json)
            .unwrap_or_else(|e| unreachable!("a nested text is valid DynamoDB JSON: {e}"))
    }

    /// `"M"` or `"L"`.
    pub fn tag(&self) -> &'static str {
        // The text starts `{"M":` or `{"L":` (see `from_canonical`).
        if self.json.as_bytes().get(2) == Some(&b'M') {
            "M"
        } else {
            "L"
        }
    }

    /// The canonical DynamoDB JSON.
    pub fn as_str(&self) -> &str {
        &self.json
    }
}

impl fmt::Debug for NestedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nested({})", self.json.as_str())
    }
}

/// Whether `json` reads as a map or list whose own rendering is `json`.
fn is_canonical(json: &str) -> bool {
    AttributeValue::from_ddb_json(json).is_ok_and(|v| {
        matches!(v, AttributeValue::M(_) | AttributeValue::L(_)) && v.to_ddb_json() == json
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Item;

    fn nested(json: &str) -> NestedText {
        NestedText::from_canonical(Text::from(json))
    }

    #[test]
    fn a_nested_text_is_its_tree() {
        let text = nested(r#"{"M":{"a":{"N":"1.5"},"b":{"L":[{"S":"x"},{"NULL":true}]}}}"#);
        let tree = AttributeValue::M(Item::from_iter([
            ("a", AttributeValue::N(crate::Number::parse("1.5").unwrap())),
            (
                "b",
                AttributeValue::L(vec![AttributeValue::S("x".into()), AttributeValue::Null]),
            ),
        ]));
        assert_eq!(text.tree(), tree);
        assert_eq!(text.tag(), "M");
        assert_eq!(nested(r#"{"L":[]}"#).tag(), "L");
        let value = AttributeValue::Nested(text);
        assert_eq!(value, tree);
        assert_eq!(tree, value);
        assert_eq!(value.tag(), "M");
        assert_eq!(value.to_ddb_json(), tree.to_ddb_json());
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string(&tree).unwrap()
        );
        assert_ne!(value, AttributeValue::M(Item::new()));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not the canonical")]
    fn a_text_that_is_not_canonical_is_refused_in_debug_builds() {
        // Entries out of order: the tree would render them sorted.
        nested(r#"{"M":{"b":{"N":"1"},"a":{"N":"2"}}}"#);
    }
}
