//! Inferring a column's layout from values, and widening it when values of
//! another kind arrive. Widening never loses data: integers widen to exact
//! decimal strings, and any other conflict to typed DynamoDB JSON.

use dynamo_cdc_core::{AttributeValue, Number};

use crate::column::{ColumnType, NumbersMode};

/// The layout that holds `value` on its own.
pub(crate) fn infer(value: &AttributeValue, mode: NumbersMode) -> ColumnType {
    match value {
        AttributeValue::S(_) => ColumnType::Utf8,
        AttributeValue::N(n) => number_type(n, mode),
        AttributeValue::B(_) => ColumnType::Binary,
        AttributeValue::Bool(_) => ColumnType::Boolean,
        AttributeValue::Null => ColumnType::Null,
        AttributeValue::Ss(_) => ColumnType::Set(Box::new(ColumnType::Utf8)),
        AttributeValue::Ns(ns) => {
            let inner = ns
                .iter()
                .map(|n| number_type(n, mode))
                .reduce(|a, b| widen(&a, &b))
                .unwrap_or(ColumnType::Int64);
            ColumnType::Set(Box::new(inner))
        }
        AttributeValue::Bs(_) => ColumnType::Set(Box::new(ColumnType::Binary)),
        AttributeValue::L(_) | AttributeValue::M(_) | AttributeValue::Nested(_) => ColumnType::Json,
    }
}

fn number_type(n: &Number, mode: NumbersMode) -> ColumnType {
    match mode {
        NumbersMode::Auto if n.to_i64().is_some() => ColumnType::Int64,
        NumbersMode::Auto | NumbersMode::String => ColumnType::DecimalString,
        NumbersMode::Double => ColumnType::Float64,
    }
}

/// True when `existing` already holds `value` (so widening would not change
/// it). Allocation-free: this runs for every attribute of every row.
pub(crate) fn holds(existing: &ColumnType, value: &AttributeValue, mode: NumbersMode) -> bool {
    match (existing, value) {
        (_, AttributeValue::Null) | (ColumnType::Json, _) => true,
        (ColumnType::Utf8, AttributeValue::S(_))
        | (ColumnType::Binary, AttributeValue::B(_))
        | (ColumnType::Boolean, AttributeValue::Bool(_)) => true,
        (_, AttributeValue::N(n)) => number_holds(existing, n, mode),
        (ColumnType::Set(inner), AttributeValue::Ss(_)) => **inner == ColumnType::Utf8,
        (ColumnType::Set(inner), AttributeValue::Bs(_)) => **inner == ColumnType::Binary,
        (ColumnType::Set(inner), AttributeValue::Ns(ns)) => {
            ns.iter().all(|n| number_holds(inner, n, mode))
        }
        _ => false,
    }
}

fn number_holds(existing: &ColumnType, n: &Number, mode: NumbersMode) -> bool {
    match existing {
        ColumnType::Int64 => mode == NumbersMode::Auto && n.to_i64().is_some(),
        ColumnType::DecimalString => mode != NumbersMode::Double,
        ColumnType::Float64 => mode == NumbersMode::Double,
        _ => false,
    }
}

fn is_number(t: &ColumnType) -> bool {
    matches!(
        t,
        ColumnType::Int64 | ColumnType::DecimalString | ColumnType::Float64
    )
}

/// The narrowest inferred layout that holds everything `a` and `b` hold.
pub(crate) fn widen(a: &ColumnType, b: &ColumnType) -> ColumnType {
    match (a, b) {
        _ if a == b => a.clone(),
        (ColumnType::Null, other) | (other, ColumnType::Null) => other.clone(),
        (ColumnType::Int64, ColumnType::DecimalString)
        | (ColumnType::DecimalString, ColumnType::Int64) => ColumnType::DecimalString,
        (ColumnType::Set(x), ColumnType::Set(y)) if is_number(x) && is_number(y) => {
            match widen(x, y) {
                ColumnType::Json => ColumnType::Json,
                inner => ColumnType::Set(Box::new(inner)),
            }
        }
        _ => ColumnType::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(t: &str) -> AttributeValue {
        AttributeValue::N(Number::parse(t).unwrap())
    }

    #[test]
    fn numbers_by_mode() {
        assert_eq!(infer(&n("5"), NumbersMode::Auto), ColumnType::Int64);
        assert_eq!(
            infer(&n("5.5"), NumbersMode::Auto),
            ColumnType::DecimalString
        );
        assert_eq!(
            infer(&n("99999999999999999999"), NumbersMode::Auto),
            ColumnType::DecimalString
        );
        assert_eq!(
            infer(&n("5"), NumbersMode::String),
            ColumnType::DecimalString
        );
        assert_eq!(infer(&n("5"), NumbersMode::Double), ColumnType::Float64);
    }

    #[test]
    fn holds_agrees_with_widen() {
        use ColumnType::*;
        let values = [
            n("5"),
            n("5.5"),
            AttributeValue::S("x".into()),
            AttributeValue::Null,
            AttributeValue::Ns(vec![
                Number::parse("1").unwrap(),
                Number::parse("2.5").unwrap(),
            ]),
            AttributeValue::Ss(vec!["a".into()]),
            AttributeValue::L(vec![]),
        ];
        let types = [
            Null,
            Utf8,
            Int64,
            DecimalString,
            Float64,
            Binary,
            Json,
            Set(Box::new(Int64)),
            Set(Box::new(DecimalString)),
            Set(Box::new(Utf8)),
        ];
        for mode in [NumbersMode::Auto, NumbersMode::String, NumbersMode::Double] {
            for t in &types {
                for v in &values {
                    let widened = widen(t, &infer(v, mode));
                    assert_eq!(holds(t, v, mode), widened == *t, "{t:?} {v:?} {mode:?}");
                }
            }
        }
    }

    #[test]
    fn widening_is_lossless() {
        use ColumnType::*;
        assert_eq!(widen(&Int64, &DecimalString), DecimalString);
        assert_eq!(widen(&Null, &Binary), Binary);
        assert_eq!(widen(&Utf8, &Int64), Json);
        assert_eq!(
            widen(&Set(Box::new(Int64)), &Set(Box::new(DecimalString))),
            Set(Box::new(DecimalString))
        );
        assert_eq!(widen(&Set(Box::new(Utf8)), &Set(Box::new(Int64))), Json);
        assert_eq!(widen(&Json, &Utf8), Json);
    }
}
