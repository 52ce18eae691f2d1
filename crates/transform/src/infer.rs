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
        AttributeValue::L(_) | AttributeValue::M(_) => ColumnType::Json,
    }
}

fn number_type(n: &Number, mode: NumbersMode) -> ColumnType {
    match mode {
        NumbersMode::Auto if n.to_i64().is_some() => ColumnType::Int64,
        NumbersMode::Auto | NumbersMode::String => ColumnType::DecimalString,
        NumbersMode::Double => ColumnType::Float64,
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
