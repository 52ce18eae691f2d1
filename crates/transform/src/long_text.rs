//! Long text: a text column whose values average a kilobyte or more (bodies,
//! descriptions, documents), told apart by its values in a batch.
//!
//! The Parquet writers keep no min/max statistics for such columns. The
//! Parquet library keeps each page's min and max as whole copies of values
//! (cut to 64 bytes only when the footer is written): a page's first value is
//! copied twice, and every later value smaller or larger than all before it
//! once more. For text of a few dozen bytes that is noise; once a value fills
//! a page (a document body of hundreds of KB), it is two more copies of every
//! value, about a twentieth of a replay of such items into Parquet. And
//! 64-byte prefixes of prose or markup separate no row groups.

use arrow_array::{Array, StringArray};

/// Mean bytes per non-null value from which a text column is long text.
pub const LONG_TEXT_BYTES: usize = 1024;

/// Whether `values` is text (Utf8) whose non-null values average
/// [`LONG_TEXT_BYTES`] or more; false for other types and for no values.
pub fn is_long_text(values: &dyn Array) -> bool {
    let Some(text) = values.as_any().downcast_ref::<StringArray>() else {
        return false;
    };
    let present = text.len() - text.null_count();
    // The bytes of the values this array covers: a slice of a larger array
    // shares its offsets. A null takes no bytes in the arrays this crate
    // builds (Arrow would allow bytes under a null slot).
    let offsets = text.value_offsets();
    let bytes = (offsets[offsets.len() - 1] - offsets[0]) as usize;
    present > 0 && bytes >= LONG_TEXT_BYTES * present
}

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn the_mean_of_the_values_present_decides() {
        let long = "x".repeat(LONG_TEXT_BYTES);
        let short = "x".repeat(LONG_TEXT_BYTES - 1);
        assert!(is_long_text(&StringArray::from(vec![
            Some(long.as_str()),
            None
        ])));
        assert!(!is_long_text(&StringArray::from(vec![
            Some(short.as_str()),
            None
        ])));
        // One long value among short ones does not make long text.
        let mixed = vec![long.as_str(), "a", "b", "c"];
        assert!(!is_long_text(&StringArray::from(mixed)));
    }

    #[test]
    fn no_values_and_other_types_are_not_long_text() {
        assert!(!is_long_text(&StringArray::from(
            Vec::<Option<&str>>::from([None, None])
        )));
        assert!(!is_long_text(&StringArray::from(Vec::<&str>::new())));
        assert!(!is_long_text(&Int64Array::from(vec![i64::MAX; 4])));
    }

    #[test]
    fn a_slice_counts_only_its_own_values() {
        let long = "x".repeat(LONG_TEXT_BYTES * 4);
        let text = StringArray::from(vec![long.as_str(), "a", "b"]);
        assert!(is_long_text(&text));
        assert!(!is_long_text(&text.slice(1, 2)));
    }
}
