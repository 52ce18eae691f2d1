//! DynamoDB-JSON attribute values (`{"S": "a"}`, `{"N": "12"}`, ...) as
//! plain tables see them: checking the values a request carries, and
//! comparing two values the way condition expressions do (numbers as exact
//! decimals, strings and binaries by their bytes, sets regardless of order).

use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dynamo_cdc_core::Number;
use serde_json::Value;

/// The type tag and the payload of an attribute value, when it has the
/// one-entry shape every attribute value has.
pub(crate) fn parts(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// Checks an attribute value as the service does before it stores or
/// compares one; the error names what is wrong.
pub(crate) fn check(value: &Value) -> Result<(), String> {
    let (kind, inner) = parts(value).ok_or_else(|| {
        format!("an attribute value must be a map with exactly one type, got {value}")
    })?;
    let string = |v: &Value| -> Result<(), String> {
        v.as_str()
            .map(|_| ())
            .ok_or_else(|| format!("the {kind} of an attribute value must be a string, got {v}"))
    };
    match kind {
        "S" => string(inner),
        "N" => number(inner).map(|_| ()),
        "B" => binary(inner).map(|_| ()),
        "BOOL" => inner
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| format!("BOOL must be true or false, got {inner}")),
        "NULL" => match inner {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("NULL must be true, got {inner}")),
        },
        "SS" | "NS" | "BS" => {
            let members = inner
                .as_array()
                .ok_or_else(|| format!("{kind} must be a list, got {inner}"))?;
            if members.is_empty() {
                return Err(format!("an empty set is not allowed ({kind})"));
            }
            let mut keys = members
                .iter()
                .map(|m| set_member(kind, m))
                .collect::<Result<Vec<_>, _>>()?;
            keys.sort();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("Input collection {inner} contains duplicates"));
            }
            Ok(())
        }
        "L" => inner
            .as_array()
            .ok_or_else(|| format!("L must be a list, got {inner}"))?
            .iter()
            .try_for_each(check),
        "M" => inner
            .as_object()
            .ok_or_else(|| format!("M must be a map, got {inner}"))?
            .values()
            .try_for_each(check),
        other => Err(format!("unknown attribute value type {other}")),
    }
}

/// A set member in a form where equal members are equal values: numbers
/// canonical, binaries decoded.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Member {
    Text(String),
    Number(Number),
    Bytes(Vec<u8>),
}

fn set_member(kind: &str, member: &Value) -> Result<Member, String> {
    match kind {
        "SS" => member
            .as_str()
            .map(|s| Member::Text(s.to_owned()))
            .ok_or_else(|| format!("SS members must be strings, got {member}")),
        "NS" => number(member).map(Member::Number),
        _ => binary(member).map(Member::Bytes),
    }
}

fn number(inner: &Value) -> Result<Number, String> {
    let text = inner
        .as_str()
        .ok_or_else(|| format!("a number must be sent as a string, got {inner}"))?;
    Number::parse(text).map_err(|e| e.to_string())
}

fn binary(inner: &Value) -> Result<Vec<u8>, String> {
    let text = inner
        .as_str()
        .ok_or_else(|| format!("a binary must be sent as a base64 string, got {inner}"))?;
    BASE64
        .decode(text)
        .map_err(|e| format!("a binary is not valid base64: {e}"))
}

/// Whether two values are equal as `=` sees them: the same type and the
/// same value (`1` equals `1.0`; sets compare as sets). Values are expected
/// to have passed [`check`]; anything unreadable is simply unequal.
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    let (Some((ka, va)), Some((kb, vb))) = (parts(a), parts(b)) else {
        return false;
    };
    if ka != kb {
        return false;
    }
    match ka {
        "N" => matches!((number(va), number(vb)), (Ok(x), Ok(y)) if x == y),
        "B" => matches!((binary(va), binary(vb)), (Ok(x), Ok(y)) if x == y),
        "SS" | "NS" | "BS" => match (members(ka, va), members(ka, vb)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        "L" => match (va.as_array(), vb.as_array()) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q)),
            _ => false,
        },
        "M" => match (va.as_object(), vb.as_object()) {
            (Some(x), Some(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(name, p)| y.get(name).is_some_and(|q| equal(p, q)))
            }
            _ => false,
        },
        // S, BOOL, NULL: the JSON payloads say it all.
        _ => va == vb,
    }
}

fn members(kind: &str, inner: &Value) -> Option<Vec<Member>> {
    let mut all = inner
        .as_array()?
        .iter()
        .map(|m| set_member(kind, m).ok())
        .collect::<Option<Vec<_>>>()?;
    all.sort();
    Some(all)
}

/// The order of two values for `<`, `<=`, `>`, `>=`: only between two
/// strings (by UTF-8 bytes), two numbers (numerically) or two binaries (as
/// unsigned bytes). `None` for any other pair, which makes the comparison
/// false, as in the service.
pub(crate) fn order(a: &Value, b: &Value) -> Option<Ordering> {
    let ((ka, va), (kb, vb)) = (parts(a)?, parts(b)?);
    if ka != kb {
        return None;
    }
    match ka {
        "S" => Some(va.as_str()?.cmp(vb.as_str()?)),
        "N" => Some(number(va).ok()?.cmp(&number(vb).ok()?)),
        "B" => Some(binary(va).ok()?.cmp(&binary(vb).ok()?)),
        _ => None,
    }
}

/// Whether a value's type can be ordered at all (`S`, `N`, `B`).
pub(crate) fn orderable(value: &Value) -> bool {
    matches!(parts(value), Some(("S" | "N" | "B", _)))
}

/// The type tag of a value, for messages (`?` when it has none).
pub(crate) fn type_name(value: &Value) -> &str {
    parts(value).map_or("?", |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checks_values_of_every_type() {
        for ok in [
            json!({"S": ""}),
            json!({"N": "-1.50e3"}),
            json!({"B": "AAE="}),
            json!({"BOOL": false}),
            json!({"NULL": true}),
            json!({"SS": ["a", "b"]}),
            json!({"NS": ["1", "2.5"]}),
            json!({"BS": ["AA=="]}),
            json!({"L": [{"S": "a"}, {"L": []}]}),
            json!({"M": {"x": {"N": "1"}}}),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            (json!("a"), "exactly one type"),
            (json!({"S": "a", "N": "1"}), "exactly one type"),
            (json!({"N": 12}), "as a string"),
            (json!({"N": "12x"}), "not a decimal"),
            (json!({"B": "!!"}), "base64"),
            (json!({"BOOL": "true"}), "true or false"),
            (json!({"NULL": false}), "NULL must be true"),
            (json!({"SS": []}), "empty set"),
            (json!({"NS": ["1", "1.0"]}), "duplicates"),
            (json!({"L": [{"X": "1"}]}), "unknown attribute value type X"),
            (json!({"M": {"x": {"N": "z"}}}), "not a decimal"),
        ] {
            let err = check(&bad).expect_err(&bad.to_string());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn equality_follows_the_values_not_their_text() {
        assert!(equal(&json!({"N": "1"}), &json!({"N": "1.00"})));
        assert!(equal(&json!({"N": "1e2"}), &json!({"N": "100"})));
        assert!(!equal(&json!({"N": "1"}), &json!({"S": "1"})));
        assert!(equal(
            &json!({"SS": ["a", "b"]}),
            &json!({"SS": ["b", "a"]})
        ));
        assert!(equal(
            &json!({"M": {"a": {"N": "1"}, "b": {"BOOL": true}}}),
            &json!({"M": {"b": {"BOOL": true}, "a": {"N": "1.0"}}})
        ));
        assert!(!equal(
            &json!({"L": [{"N": "1"}]}),
            &json!({"L": [{"N": "1"}, {"N": "1"}]})
        ));
        assert!(!equal(&json!({"BOOL": true}), &json!({"BOOL": false})));
    }

    #[test]
    fn only_strings_numbers_and_binaries_have_an_order() {
        use Ordering::*;
        assert_eq!(order(&json!({"N": "9"}), &json!({"N": "10"})), Some(Less));
        assert_eq!(
            order(&json!({"N": "-0.5"}), &json!({"N": "-1"})),
            Some(Greater)
        );
        // Beyond any machine integer, still exact.
        assert_eq!(
            order(
                &json!({"N": "123456789012345678901234567890123457"}),
                &json!({"N": "123456789012345678901234567890123456"})
            ),
            Some(Greater)
        );
        assert_eq!(
            order(&json!({"S": "9"}), &json!({"S": "10"})),
            Some(Greater)
        );
        assert_eq!(
            order(&json!({"B": "AP8="}), &json!({"B": "AQ=="})),
            Some(Less)
        );
        assert_eq!(order(&json!({"S": "1"}), &json!({"N": "1"})), None);
        assert_eq!(order(&json!({"BOOL": true}), &json!({"BOOL": true})), None);
    }
}
