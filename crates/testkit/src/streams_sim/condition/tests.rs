//! The condition parser and evaluator: every operator, precedence,
//! absent attributes and mismatched types, placeholders, and the errors for
//! what the subset leaves out.

use serde_json::{Map, Value, json};

use super::*;

/// Parses `text` with the given placeholder maps (`null` for none).
fn parse(text: &str, names: Value, values: Value) -> Result<Condition, String> {
    let mut body = json!({"ConditionExpression": text});
    if !names.is_null() {
        body["ExpressionAttributeNames"] = names;
    }
    if !values.is_null() {
        body["ExpressionAttributeValues"] = values;
    }
    from_request(&body).map(|c| c.expect("a condition"))
}

fn item(v: Value) -> Map<String, Value> {
    v.as_object().expect("an item").clone()
}

/// Whether `text` (values `:v`, `:w` as given) holds for `on`.
fn holds(text: &str, values: Value, on: Value) -> bool {
    parse(text, Value::Null, values)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .holds(&item(on))
}

fn error(text: &str, names: Value, values: Value) -> String {
    parse(text, names, values).expect_err(text)
}

#[test]
fn every_comparison_on_numbers_strings_and_booleans() {
    let on = json!({"n": {"N": "10"}, "s": {"S": "b"}, "t": {"BOOL": true}});
    let cases = [
        ("n = :v", json!({":v": {"N": "10.0"}}), true),
        ("n = :v", json!({":v": {"N": "9"}}), false),
        ("n <> :v", json!({":v": {"N": "9"}}), true),
        ("n <> :v", json!({":v": {"N": "1e1"}}), false),
        // Numerically, not as text: 10 > 9.
        ("n > :v", json!({":v": {"N": "9"}}), true),
        ("n < :v", json!({":v": {"N": "9"}}), false),
        ("n >= :v", json!({":v": {"N": "10"}}), true),
        ("n <= :v", json!({":v": {"N": "10"}}), true),
        ("n <= :v", json!({":v": {"N": "9.99"}}), false),
        ("n < :v", json!({":v": {"N": "10.000001"}}), true),
        (":v < n", json!({":v": {"N": "-3"}}), true),
        ("s = :v", json!({":v": {"S": "b"}}), true),
        ("s < :v", json!({":v": {"S": "ba"}}), true),
        ("s > :v", json!({":v": {"S": "B"}}), true),
        ("s >= :v", json!({":v": {"S": "c"}}), false),
        ("s <= :v", json!({":v": {"S": "b"}}), true),
        ("t = :v", json!({":v": {"BOOL": true}}), true),
        ("t = :v", json!({":v": {"BOOL": false}}), false),
        ("t <> :v", json!({":v": {"BOOL": false}}), true),
    ];
    for (text, values, expected) in cases {
        assert_eq!(
            holds(text, values.clone(), on.clone()),
            expected,
            "{text} {values}"
        );
    }
}

#[test]
fn two_attributes_compare_with_each_other() {
    let on = json!({"a": {"N": "2"}, "b": {"N": "3"}, "c": {"S": "2"}, "t": {"BOOL": true}});
    let yes = |text: &str| {
        parse(text, Value::Null, Value::Null)
            .unwrap()
            .holds(&item(on.clone()))
    };
    assert!(yes("a < b"));
    assert!(!yes("a = b"));
    assert!(yes("a = a"));
    // Different types: unequal and unordered.
    assert!(!yes("a = c"));
    assert!(yes("a <> c"));
    assert!(!yes("a < c") && !yes("a >= c"));
    // Booleans have no order, even between attributes.
    assert!(!yes("t <= t"));
}

#[test]
fn absent_attributes_and_absent_items() {
    let v = json!({":v": {"N": "1"}});
    let empty = json!({});
    assert!(!holds("x = :v", v.clone(), empty.clone()));
    // `<>` is the negation of `=`: true when a side is absent, as the
    // service has it.
    assert!(holds("x <> :v", v.clone(), empty.clone()));
    for op in ["<", "<=", ">", ">="] {
        assert!(
            !holds(&format!("x {op} :v"), v.clone(), empty.clone()),
            "{op}"
        );
    }
    let none = |text: &str| {
        parse(text, Value::Null, Value::Null)
            .unwrap()
            .holds(&Map::new())
    };
    assert!(!none("x = y"));
    assert!(none("x <> y"));
    assert!(none("attribute_not_exists(x)"));
    assert!(!none("attribute_exists(x)"));
    let some = item(json!({"x": {"NULL": true}}));
    // An attribute holding NULL exists.
    let c = parse("attribute_exists(x)", Value::Null, Value::Null).unwrap();
    assert!(c.holds(&some));
}

#[test]
fn mismatched_types_never_compare() {
    let on = json!({"n": {"N": "1"}});
    assert!(!holds("n = :v", json!({":v": {"S": "1"}}), on.clone()));
    assert!(holds("n <> :v", json!({":v": {"S": "1"}}), on.clone()));
    assert!(!holds("n < :v", json!({":v": {"S": "2"}}), on.clone()));
    assert!(!holds("n > :v", json!({":v": {"S": "0"}}), on));
}

#[test]
fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
    let t = || json!({":t": {"BOOL": true}});
    let on = json!({"a": {"BOOL": true}, "b": {"BOOL": false}, "c": {"BOOL": false}});
    // a OR (b AND c): true; (a OR b) AND c would be false.
    assert!(holds("a = :t OR b = :t AND c = :t", t(), on.clone()));
    assert!(!holds("(a = :t OR b = :t) AND c = :t", t(), on.clone()));
    // (NOT a) AND b: false; NOT (a AND b) would be true.
    assert!(!holds("NOT a = :t AND b <> :t", t(), on.clone()));
    assert!(holds("NOT (a = :t AND b = :t)", t(), on.clone()));
    // (NOT b) OR c.
    assert!(holds("NOT b = :t OR c = :t", t(), on.clone()));
    assert!(holds("NOT NOT a = :t", t(), on.clone()));
    // Keywords in any case.
    assert!(holds("not b = :t and a = :t Or c = :t", t(), on));

    let tree = parse("a = :t OR b = :t AND NOT c = :t", Value::Null, t()).unwrap();
    let cmp = |n: &str| {
        Box::new(Condition::Compare(
            Operand::Attribute(n.into()),
            Cmp::Eq,
            Operand::Value(json!({"BOOL": true})),
        ))
    };
    assert_eq!(
        tree,
        Condition::Or(
            cmp("a"),
            Box::new(Condition::And(cmp("b"), Box::new(Condition::Not(cmp("c")))))
        )
    );
}

#[test]
fn and_or_chains_associate_to_the_left() {
    let tree = parse("a = b AND b = c AND c = d", Value::Null, Value::Null).unwrap();
    let Condition::And(left, _) = tree else {
        panic!("{tree:?}");
    };
    assert!(matches!(*left, Condition::And(..)));
}

#[test]
fn names_are_resolved_through_placeholders() {
    let names = json!({"#k": "key", "#c": "counter"});
    let values = json!({":c": {"N": "3"}});
    let c = parse("attribute_exists(#k) AND #c = :c", names, values).unwrap();
    assert!(c.holds(&item(json!({"key": {"S": "x"}, "counter": {"N": "3"}}))));
    assert!(!c.holds(&item(json!({"key": {"S": "x"}, "counter": {"N": "4"}}))));
    assert!(!c.holds(&item(json!({"counter": {"N": "3"}}))));
    // A placeholder may name anything, a keyword included.
    let c = parse("#a = :v", json!({"#a": "AND"}), json!({":v": {"S": "x"}})).unwrap();
    assert!(c.holds(&item(json!({"AND": {"S": "x"}}))));
}

#[test]
fn undefined_and_unused_placeholders_are_errors() {
    let e = error("#c = :v", json!({"#x": "c"}), json!({":v": {"N": "1"}}));
    assert!(
        e.contains("attribute name used in the document path is not defined; attribute name: #c"),
        "{e}"
    );
    let e = error("c = :v", Value::Null, json!({":w": {"N": "1"}}));
    assert!(
        e.contains("attribute value used in expression is not defined; attribute value: :v"),
        "{e}"
    );
    // Undefined even in a branch that evaluation would skip.
    let e = error(
        "attribute_not_exists(a) OR b = :nope",
        Value::Null,
        Value::Null,
    );
    assert!(e.contains(":nope"), "{e}");
    let e = error("c = :v", json!({"#x": "c"}), json!({":v": {"N": "1"}}));
    assert_eq!(
        e,
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#x}"
    );
    let e = error(
        "c = :v",
        Value::Null,
        json!({":v": {"N": "1"}, ":w": {"N": "2"}}),
    );
    assert_eq!(
        e,
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"
    );
}

#[test]
fn placeholder_maps_are_checked() {
    let e = error("c = :v", Value::Null, json!({":v": {"N": "x"}}));
    assert!(
        e.contains("ExpressionAttributeValues contains invalid value") && e.contains(":v"),
        "{e}"
    );
    let e = error("#c = c", json!({"#c": 1}), Value::Null);
    assert!(
        e.contains("ExpressionAttributeNames contains invalid value"),
        "{e}"
    );
    let e = error("c = d", json!({}), Value::Null);
    assert_eq!(e, "ExpressionAttributeNames must not be empty");
    let e = error("c = :v", Value::Null, json!({"v": {"N": "1"}}));
    assert!(e.contains("invalid key: \"v\""), "{e}");
    let e = from_request(&json!({"ExpressionAttributeValues": {":v": {"N": "1"}}})).unwrap_err();
    assert_eq!(
        e,
        "ExpressionAttributeValues can only be specified when using expressions"
    );
    assert_eq!(from_request(&json!({})), Ok(None));
}

#[test]
fn syntax_errors_name_the_token() {
    for (text, token) in [
        ("a =", "<EOF>"),
        ("a = :v)", ")"),
        ("(a = :v", "<EOF>"),
        ("= :v", "="),
        ("a = :v AND", "<EOF>"),
        ("a :v", ":v"),
        ("a = :v b = :v", "b"),
        ("AND = :v", "AND"),
        ("attribute_exists(a", "<EOF>"),
        ("()", ")"),
    ] {
        let e = error(text, Value::Null, json!({":v": {"N": "1"}}));
        assert!(
            e.starts_with("Invalid ConditionExpression: Syntax error; token: "),
            "{text}: {e}"
        );
        assert!(e.contains(token), "{text}: {e}");
    }
    let e = error("a = :v ; b", Value::Null, json!({":v": {"N": "1"}}));
    assert!(
        e.contains("Invalid character encountered; character: \";\""),
        "{e}"
    );
    let e = error("a = #", Value::Null, Value::Null);
    assert!(e.contains("Syntax error; token: \"#\""), "{e}");
    let e = error("  ", Value::Null, Value::Null);
    assert_eq!(
        e,
        "Invalid ConditionExpression: The expression can not be empty;"
    );
}

#[test]
fn what_the_subset_leaves_out_is_named() {
    let v = json!({":v": {"N": "1"}, ":w": {"N": "2"}});
    for (text, says) in [
        ("a BETWEEN :v AND :w", "BETWEEN is not supported"),
        ("a in (:v, :w)", "IN is not supported"),
        (
            "begins_with(a, :v) AND b = :w",
            "begins_with is not supported",
        ),
        ("size(a) = :v AND b = :w", "size is not supported"),
        ("a.b = :v AND c = :w", "nested attribute paths (\".\")"),
        ("a[0] = :v AND c = :w", "nested attribute paths (\"[\")"),
        (
            "ATTRIBUTE_EXISTS(a) AND a = :v AND b = :w",
            "Invalid function name; function: ATTRIBUTE_EXISTS",
        ),
        (
            "frobnicate(a) AND a = :v AND b = :w",
            "Invalid function name; function: frobnicate",
        ),
    ] {
        let e = error(text, Value::Null, v.clone());
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn functions_take_one_path() {
    let e = error(
        "attribute_exists(:v)",
        Value::Null,
        json!({":v": {"S": "a"}}),
    );
    assert!(
        e.contains("operator or function: attribute_exists, operand type: S"),
        "{e}"
    );
    let e = error("attribute_exists(a, b)", Value::Null, Value::Null);
    assert!(e.contains("Incorrect number of operands"), "{e}");
}

#[test]
fn booleans_and_other_unordered_constants_refuse_orderings() {
    let e = error("a < :v", Value::Null, json!({":v": {"BOOL": true}}));
    assert!(
        e.contains("operator or function: <, operand type: BOOL"),
        "{e}"
    );
    let e = error(":v >= a", Value::Null, json!({":v": {"L": []}}));
    assert!(
        e.contains("operator or function: >=, operand type: L"),
        "{e}"
    );
    assert!(parse("a = :v", Value::Null, json!({":v": {"BOOL": true}})).is_ok());
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}a = b{}", "(".repeat(2000), ")".repeat(2000));
    let e = error(&deep, Value::Null, Value::Null);
    assert!(e.contains("nests deeper than"), "{e}");
    let nots = format!("{}a = b", "NOT ".repeat(1000));
    let e = error(&nots, Value::Null, Value::Null);
    assert!(e.contains("nests deeper than"), "{e}");
    // Within the limit, fine.
    let ok = format!("{}a = b{}", "(".repeat(30), ")".repeat(30));
    assert!(parse(&ok, Value::Null, Value::Null).is_ok());
    let long = format!("a = b{}", " ".repeat(5000));
    assert!(error(&long, Value::Null, Value::Null).contains("maximum allowed size"));
}
