//! Recognizing a map or list whose DynamoDB JSON is already canonical.
//!
//! Where maps and lists are kept as text ([`NestedValues::Text`]), the text
//! must be exactly what the value's tree renders
//! ([`AttributeValue::write_ddb_json`]). Streams send values compact and
//! numbers as they were stored, so a map or list usually arrives in that
//! form already: recognizing it is one scan of its bytes, and its text is
//! then taken as it is, in one copy. Anything else (whitespace, an escape,
//! names out of order, a binary or a set, a number not in canonical form, a
//! value nested too deep) is not recognized, and the page parser writes the
//! value out instead, or gives up on what is invalid. Every text recognized
//! here reads back as a valid value whose rendering is that text; the tests
//! hold it to that.
//!
//! [`NestedValues::Text`]: crate::record::NestedValues::Text
//! [`AttributeValue::write_ddb_json`]: dynamo_cdc_core::AttributeValue::write_ddb_json

use dynamo_cdc_core::{MAX_NESTING, Number, json_special_position};

/// Where the typed value at `src[i..]` (`{"T":...}`, at `depth` as the
/// page parser counts it) ends, one past its closing brace, when its text
/// is canonical; `None` otherwise.
pub(crate) fn typed_end(src: &str, i: usize, depth: usize) -> Option<usize> {
    let b = src.as_bytes();
    let rest = b.get(i..)?;
    // Every form starts with `{"`, its tag and `":`; the tag's first byte
    // picks the candidates.
    let end = match rest.get(2)? {
        b'S' if rest.starts_with(b"{\"S\":\"") => plain_string_end(b, i + 5)?,
        b'N' if rest.starts_with(b"{\"N\":\"") => {
            let end = plain_string_end(b, i + 5)?;
            if !Number::is_canonical(src.get(i + 6..end - 1)?) {
                return None;
            }
            end
        }
        b'N' if rest.starts_with(b"{\"NULL\":true}") => return Some(i + 13),
        b'B' if rest.starts_with(b"{\"BOOL\":true}") => return Some(i + 13),
        b'B' if rest.starts_with(b"{\"BOOL\":false}") => return Some(i + 14),
        b'L' if depth <= MAX_NESTING && rest.starts_with(b"{\"L\":[") => {
            list_end(src, i + 6, depth + 1)?
        }
        b'M' if depth <= MAX_NESTING && rest.starts_with(b"{\"M\":{") => {
            map_end(src, i + 6, depth + 1)?
        }
        _ => return None,
    };
    (b.get(end) == Some(&b'}')).then_some(end + 1)
}

/// The end of the string whose opening quote is at `b[at]`, when nothing
/// in it is escaped (or a raw control character).
fn plain_string_end(b: &[u8], at: usize) -> Option<usize> {
    let start = at + 1;
    let n = json_special_position(b.get(start..)?)?;
    (b[start + n] == b'"').then_some(start + n + 1)
}

/// A list's elements (at `depth`) and its `]`, from just past its `[`.
fn list_end(src: &str, mut i: usize, depth: usize) -> Option<usize> {
    let b = src.as_bytes();
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        i = typed_end(src, i, depth)?;
        match b.get(i)? {
            b',' => i += 1,
            b']' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// A map's entries (values at `depth`), names in strictly ascending byte
/// order as an item keeps them, and its `}`, from just past its `{`.
fn map_end(src: &str, mut i: usize, depth: usize) -> Option<usize> {
    let b = src.as_bytes();
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    let mut last: Option<&[u8]> = None;
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let name_end = plain_string_end(b, i)?;
        let name = &b[i + 1..name_end - 1];
        if last.is_some_and(|last| last >= name) {
            return None;
        }
        last = Some(name);
        if b.get(name_end) != Some(&b':') {
            return None;
        }
        i = typed_end(src, name_end + 1, depth)?;
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::AttributeValue;
    use dynamo_cdc_testkit::strategies::arb_attribute_value;
    use proptest::prelude::*;

    use super::typed_end;

    /// The whole of `text`, recognized as canonical from the start.
    fn recognized(text: &str) -> bool {
        typed_end(text, 0, 1) == Some(text.len())
    }

    #[test]
    fn canonical_maps_and_lists_are_recognized() {
        for text in [
            r#"{"M":{}}"#,
            r#"{"L":[]}"#,
            r#"{"M":{"a":{"N":"-1.5"},"b":{"BOOL":false},"c":{"NULL":true},"d":{"S":"é x"}}}"#,
            r#"{"L":[{"M":{"q":{"L":[{"BOOL":true}]}}},{"N":"0"},{"S":""}]}"#,
        ] {
            assert!(recognized(text), "{text}");
            let value = AttributeValue::from_ddb_json(text).unwrap();
            assert_eq!(value.to_ddb_json(), text);
        }
    }

    #[test]
    fn anything_else_is_left_to_the_parser() {
        for text in [
            // Whitespace, names out of order or twice, an escape.
            r#"{"M":{"a":{"N":"1"}, "b":{"N":"2"}}}"#,
            r#"{"M": {"a":{"N":"1"}}}"#,
            r#"{"M":{"b":{"N":"1"},"a":{"N":"2"}}}"#,
            r#"{"M":{"a":{"N":"1"},"a":{"N":"2"}}}"#,
            r#"{"M":{"a":{"S":"x\ny"}}}"#,
            r#"{"M":{"a\u0041":{"S":"x"}}}"#,
            // Numbers not in canonical form, or not numbers.
            r#"{"L":[{"N":"1.50"}]}"#,
            r#"{"L":[{"N":"1e3"}]}"#,
            r#"{"L":[{"N":"-0"}]}"#,
            r#"{"L":[{"N":"x"}]}"#,
            // Binaries and sets: checked and sorted on the parser's path.
            r#"{"L":[{"B":"AA=="}]}"#,
            r#"{"L":[{"SS":["a"]}]}"#,
            r#"{"L":[{"NS":["1"]}]}"#,
            // Not closed, or not a value.
            r#"{"L":[{"N":"1"}"#,
            r#"{"L":[{"N":"1"}],"x":1}"#,
            r#"{"NULL":false}"#,
            r#"{"X":[]}"#,
        ] {
            assert!(!recognized(text), "{text}");
        }
    }

    #[test]
    fn nesting_is_bounded_as_the_parser_bounds_it() {
        let nested = |levels: usize| {
            format!(
                "{}{{\"L\":[]}}{}",
                r#"{"L":["#.repeat(levels - 1),
                "]}".repeat(levels - 1)
            )
        };
        let deepest = nested(dynamo_cdc_core::MAX_NESTING);
        assert!(recognized(&deepest));
        assert!(AttributeValue::from_ddb_json(&deepest).is_ok());
        let too_deep = nested(dynamo_cdc_core::MAX_NESTING + 1);
        assert!(!recognized(&too_deep));
        assert!(AttributeValue::from_ddb_json(&too_deep).is_err());
    }

    proptest! {
        /// A value's own rendering is recognized unless it holds what this
        /// leaves to the parser, and whatever is recognized reads back as a
        /// value that renders as that very text.
        #[test]
        fn recognized_exactly_where_the_text_is_the_rendering(value in arb_attribute_value(3)) {
            let text = value.to_ddb_json();
            let left_out = ["\"B\":", "\"SS\":", "\"NS\":", "\"BS\":", "\\"];
            if matches!(value, AttributeValue::M(_) | AttributeValue::L(_))
                && !left_out.iter().any(|s| text.contains(s))
            {
                prop_assert!(recognized(&text), "{}", text);
            }
            if let Some(end) = typed_end(&text, 0, 1) {
                let read = AttributeValue::from_ddb_json(&text[..end]).unwrap();
                prop_assert_eq!(read.to_ddb_json(), &text[..end]);
            }
        }

        /// Damaged, a text is either not recognized or still a value whose
        /// rendering it is.
        #[test]
        fn damaged_text_is_never_taken_for_canonical(
            value in arb_attribute_value(3),
            cut in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = value.to_ddb_json().into_bytes();
            let at = cut.index(bytes.len());
            bytes[at] = byte;
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            if let Some(end) = typed_end(&text, 0, 1) {
                let read = AttributeValue::from_ddb_json(&text[..end]);
                prop_assert!(read.is_ok(), "{}", text);
                prop_assert_eq!(read.unwrap().to_ddb_json(), &text[..end]);
            }
        }
    }
}
