//! Planned writes as SDK request parts: attribute values, and the
//! UpdateItem expression that turns an item's old image into its new one.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use dynamo_cdc_core::{AttributeValue, Item};

use super::items::{HASH_KEY, RANGE_KEY};

/// One value in the SDK's form.
pub(crate) fn to_sdk(value: &AttributeValue) -> Av {
    match value {
        AttributeValue::S(s) => Av::S(s.to_string()),
        AttributeValue::N(n) => Av::N(n.as_str().to_owned()),
        AttributeValue::B(b) => Av::B(Blob::new(b.clone())),
        AttributeValue::Bool(b) => Av::Bool(*b),
        AttributeValue::Null => Av::Null(true),
        AttributeValue::Ss(v) => Av::Ss(v.clone()),
        AttributeValue::Ns(v) => Av::Ns(v.iter().map(|n| n.as_str().to_owned()).collect()),
        AttributeValue::Bs(v) => Av::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
        AttributeValue::L(v) => Av::L(v.iter().map(to_sdk).collect()),
        AttributeValue::M(m) => Av::M(item_to_sdk(m)),
        AttributeValue::Nested(text) => to_sdk(&text.tree()),
    }
}

/// An item (or map) in the SDK's form.
pub(crate) fn item_to_sdk(item: &Item) -> HashMap<String, Av> {
    item.iter()
        .map(|(k, v)| (k.to_string(), to_sdk(v)))
        .collect()
}

/// The parts of an UpdateItem request.
#[derive(Debug, Default)]
pub(crate) struct Update {
    /// `SET … REMOVE …`
    pub(crate) expression: String,
    /// Only an existing item, at the version this lane last wrote.
    pub(crate) condition: String,
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, Av>,
}

/// The attribute an application bumps on every change.
const VERSION: &str = "version";

/// The UpdateItem that turns `old` into `new`: changed and new attributes
/// are SET, vanished ones REMOVEd. Names always go through placeholders,
/// since attribute names may be reserved words (`status`, `name`) or hold
/// characters an expression cannot.
///
/// A version that rises by one is written as `#v = #v + :one` under the
/// condition `#v = :expected`, the optimistic locking most applications
/// use: a retried update that had in fact been applied fails its condition
/// instead of being applied twice.
pub(crate) fn update(old: &Item, new: &Item) -> Update {
    let mut u = Update::default();
    let mut set = Vec::new();
    let mut remove = Vec::new();
    u.names.insert("#k".to_owned(), HASH_KEY.to_owned());
    u.condition = "attribute_exists(#k)".to_owned();

    let int = |item: &Item| match item.get(VERSION) {
        Some(AttributeValue::N(n)) => n.to_i64(),
        _ => None,
    };
    let counter = match (int(old), int(new)) {
        (Some(before), Some(after)) if before.checked_add(1) == Some(after) => Some(before),
        _ => None,
    };
    if let Some(before) = counter {
        u.names.insert("#v".to_owned(), VERSION.to_owned());
        u.values.insert(":one".to_owned(), Av::N("1".to_owned()));
        u.values
            .insert(":expected".to_owned(), Av::N(before.to_string()));
        set.push("#v = #v + :one".to_owned());
        u.condition.push_str(" AND #v = :expected");
    }

    let mut n = 0;
    for (name, value) in new.iter() {
        let skip = name == HASH_KEY
            || name == RANGE_KEY
            || (counter.is_some() && name == VERSION)
            || old.get(name) == Some(value);
        if skip {
            continue;
        }
        u.names.insert(format!("#a{n}"), name.to_string());
        u.values.insert(format!(":a{n}"), to_sdk(value));
        set.push(format!("#a{n} = :a{n}"));
        n += 1;
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            u.names.insert(format!("#a{n}"), name.to_string());
            remove.push(format!("#a{n}"));
            n += 1;
        }
    }
    if !set.is_empty() {
        u.expression = format!("SET {}", set.join(", "));
    }
    if !remove.is_empty() {
        if !u.expression.is_empty() {
            u.expression.push(' ');
        }
        u.expression
            .push_str(&format!("REMOVE {}", remove.join(", ")));
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_cdc_core::Number;

    fn item(entries: &[(&str, AttributeValue)]) -> Item {
        entries.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn n(v: i64) -> AttributeValue {
        AttributeValue::N(Number::from(v))
    }

    #[test]
    fn sets_changes_removes_vanished_and_bumps_the_version() {
        let s = |t: &str| AttributeValue::S(t.into());
        let old = item(&[
            ("pk", s("p")),
            ("sk", s("s")),
            ("status", s("cart")),
            ("expires_at", n(10)),
            ("version", n(4)),
            ("same", s("x")),
        ]);
        let new = item(&[
            ("pk", s("p")),
            ("sk", s("s")),
            ("status", s("placed")),
            ("version", n(5)),
            ("same", s("x")),
            ("tags", AttributeValue::Ss(vec!["a".into()])),
        ]);
        let u = update(&old, &new);
        assert_eq!(
            u.expression,
            "SET #v = #v + :one, #a0 = :a0, #a1 = :a1 REMOVE #a2"
        );
        assert_eq!(u.condition, "attribute_exists(#k) AND #v = :expected");
        assert_eq!(u.names["#a0"], "status");
        assert_eq!(u.names["#a1"], "tags");
        assert_eq!(u.names["#a2"], "expires_at");
        assert_eq!(u.values[":expected"], Av::N("4".into()));
        assert_eq!(u.values[":a1"], Av::Ss(vec!["a".into()]));
    }

    #[test]
    fn values_keep_their_types() {
        let v = AttributeValue::M(item(&[
            ("n", AttributeValue::N(Number::parse("1E-130").unwrap())),
            ("null", AttributeValue::Null),
            ("l", AttributeValue::L(vec![AttributeValue::Bool(true)])),
            ("bs", AttributeValue::Bs(vec![vec![1], vec![2]])),
        ]));
        let Av::M(m) = to_sdk(&v) else {
            panic!("a map")
        };
        assert_eq!(m["null"], Av::Null(true));
        assert_eq!(m["l"], Av::L(vec![Av::Bool(true)]));
        assert_eq!(
            m["bs"],
            Av::Bs(vec![Blob::new(vec![1]), Blob::new(vec![2])])
        );
        let Av::N(text) = &m["n"] else {
            panic!("a number")
        };
        assert_eq!(Number::parse(text).unwrap().as_str(), text);
    }
}
