//! DynamoDB numbers as exact decimals.
//!
//! DynamoDB numbers carry up to 38 significant digits with a magnitude between
//! 1E-130 and 9.99…E+125. No binary type holds all of them, so a [`Number`] keeps
//! the canonical decimal text: no exponent, no leading zeros, no trailing
//! fractional zeros, no `-0`. Two numbers are equal exactly when their
//! canonical texts are.

use std::fmt;

use crate::text::Text;

/// Most significant digits a DynamoDB number may have.
pub const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// Smallest allowed exponent of the leading digit (1E-130).
pub(crate) const MIN_EXPONENT: i64 = -130;
/// Largest allowed exponent of the leading digit (9.9…E+125).
pub(crate) const MAX_EXPONENT: i64 = 125;

/// An exact DynamoDB number in canonical decimal form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Number {
    // Inline up to 22 bytes, which nearly every number fits: no allocation.
    canonical: Text,
}

/// Why a text is not a DynamoDB number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// The text is not a decimal number (`NaN`, `0x1F`, empty, stray characters).
    #[error("`{0}` is not a decimal number")]
    Syntax(String),
    /// More than 38 significant digits.
    #[error("`{text}` has {digits} significant digits; DynamoDB allows at most 38")]
    TooManyDigits {
        /// the offending text, possibly shortened
        text: String,
        /// how many significant digits it has
        digits: usize,
    },
    /// Magnitude outside 1E-130 ..= 9.99…E+125.
    #[error("`{text}` is out of range: its magnitude must lie between 1E-130 and 9.99E+125")]
    OutOfRange {
        /// the offending text, possibly shortened
        text: String,
    },
}

fn shorten(text: &str) -> String {
    const LIMIT: usize = 64;
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut cut = LIMIT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

impl Number {
    /// Parses DynamoDB's number text (`-12.50`, `1e3`, `0.001E-2`) and
    /// canonicalizes it.
    ///
    /// # Errors
    /// [`NumberError`] when the text is not a decimal, has more than 38
    /// significant digits, or is out of DynamoDB's range.
    pub fn parse(text: &str) -> Result<Self, NumberError> {
        if let Some(n) = Self::already_canonical(text) {
            return Ok(n);
        }
        let syntax = || NumberError::Syntax(shorten(text));
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = take_sign(bytes, &mut i);
        // Collect the mantissa digits without the point; remember where it was.
        let mant_start = i;
        let mut int_digits = 0usize;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
            int_digits += 1;
        }
        let mut frac_digits = 0usize;
        let mut frac_start = i;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
                frac_digits += 1;
            }
        }
        if int_digits + frac_digits == 0 {
            return Err(syntax());
        }
        let mut exp: i64 = 0;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            let exp_negative = take_sign(bytes, &mut i);
            let exp_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                // Saturate: anything this large is out of range anyway.
                exp = (exp * 10 + i64::from(bytes[i] - b'0')).min(1_000_000_000);
                i += 1;
            }
            if i == exp_start {
                return Err(syntax());
            }
            if exp_negative {
                exp = -exp;
            }
        }
        if i != bytes.len() {
            return Err(syntax());
        }
        let int_part = &text[mant_start..mant_start + int_digits];
        let frac_part = &text[frac_start..frac_start + frac_digits];
        // All digits in order; value = 0.DIGITS * 10^(int_digits + exp) before trimming.
        let all = int_part.bytes().chain(frac_part.bytes());
        let leading_zeros = all.clone().take_while(|&b| b == b'0').count();
        let total = int_digits + frac_digits;
        if leading_zeros == total {
            return Ok(Number {
                canonical: "0".into(),
            });
        }
        let trailing_zeros = all.clone().rev().take_while(|&b| b == b'0').count();
        let digits: Vec<u8> = all
            .skip(leading_zeros)
            .take(total - leading_zeros - trailing_zeros)
            .collect();
        if digits.len() > MAX_SIGNIFICANT_DIGITS {
            return Err(NumberError::TooManyDigits {
                text: shorten(text),
                digits: digits.len(),
            });
        }
        // Exponent of the leading significant digit in scientific notation.
        let adjusted = int_digits as i64 - leading_zeros as i64 - 1 + exp;
        if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&adjusted) {
            return Err(NumberError::OutOfRange {
                text: shorten(text),
            });
        }
        Ok(Number {
            canonical: render(negative, &digits, adjusted).into(),
        })
    }

    /// The common case, text that is already canonical and in range, checked
    /// in one pass without building anything. `None` leaves the text to the
    /// full parser, which also words any error.
    fn already_canonical(text: &str) -> Option<Self> {
        Self::is_canonical(text).then(|| Number {
            canonical: text.into(),
        })
    }

    /// Whether `text` is a number's canonical text, in range: what
    /// [`Number::parse`] would make of it is `text` itself.
    #[inline]
    pub fn is_canonical(text: &str) -> bool {
        let bytes = text.as_bytes();
        let (negative, body) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let (int, frac) = match body.iter().position(|&b| b == b'.') {
            Some(dot) => (&body[..dot], Some(&body[dot + 1..])),
            None => (body, None),
        };
        let all_digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
        if int.is_empty() || !all_digits(int) || (int.len() > 1 && int[0] == b'0') {
            return false;
        }
        let frac = match frac {
            Some(f) if f.is_empty() || !all_digits(f) || f.ends_with(b"0") => return false,
            Some(f) => f,
            None => &[],
        };
        let (significant, adjusted) = if int != b"0" {
            let trailing = if frac.is_empty() {
                int.iter().rev().take_while(|&&b| b == b'0').count()
            } else {
                0
            };
            (int.len() + frac.len() - trailing, int.len() as i64 - 1)
        } else if frac.is_empty() {
            // "0" is canonical; "-0" is not.
            return !negative;
        } else {
            let zeros = frac.iter().take_while(|&&b| b == b'0').count();
            (frac.len() - zeros, -(zeros as i64) - 1)
        };
        significant <= MAX_SIGNIFICANT_DIGITS && (MIN_EXPONENT..=MAX_EXPONENT).contains(&adjusted)
    }

    /// The canonical decimal text.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// True when the number has no fractional part.
    pub fn is_integer(&self) -> bool {
        !self.canonical.contains('.')
    }

    /// The value as `i64`, when it is an integer that fits.
    ///
    /// Read in one pass over the canonical text (an optional `-`, digits and
    /// at most one `.`): this runs for every number of every row, once to
    /// infer the column and once to fill it.
    pub fn to_i64(&self) -> Option<i64> {
        let text = self.canonical.as_bytes();
        let (negative, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        // 19 digits hold every i64 and cannot overflow a u64.
        if digits.len() > 19 {
            return None;
        }
        let mut magnitude: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None; // a fraction
            }
            magnitude = magnitude * 10 + u64::from(d - b'0');
        }
        if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
    }

    /// The nearest `f64` (lossy: only for the opt-in `double` mode).
    pub fn to_f64(&self) -> f64 {
        // The canonical text is always valid float syntax.
        self.canonical.parse().unwrap_or(f64::NAN)
    }

    /// The nearest `f64`, when that double reads back as this very number;
    /// `None` when it would show another one.
    ///
    /// A double reads back as the number when its shortest decimal (the
    /// form readers print: `10.99`, `0.1`) is the number, or when its exact
    /// value is (integers such as 2^60, which print shorter). `9007199254740993`
    /// has neither: its nearest double is `9007199254740992`. A declared
    /// `double` refuses such a number instead of rounding it silently.
    pub fn to_f64_exact(&self) -> Option<f64> {
        let x = self.to_f64();
        let reads_back = |text: String| Number::parse(&text).is_ok_and(|n| n == *self);
        // A double's exact value has at most 767 significant digits.
        (reads_back(format!("{x:e}")) || reads_back(format!("{x:.766e}"))).then_some(x)
    }

    /// The nearest `f64`, when this number is that double's shortest
    /// decimal (the form readers print): then no other number so accepted
    /// has the same double, which is what a key needs. `2^60`
    /// (`1152921504606846976`) has none, although its double is exact:
    /// `1152921504606847000` would be the same double.
    pub fn to_f64_distinct(&self) -> Option<f64> {
        // Integers of up to 53 bits print as themselves.
        if let Some(i) = self.to_i64()
            && i.unsigned_abs() <= 1 << 53
        {
            return Some(i as f64);
        }
        let x = self.to_f64();
        Number::parse(&format!("{x:e}"))
            .is_ok_and(|n| n == *self)
            .then_some(x)
    }

    /// Digits after the decimal point.
    pub fn scale(&self) -> usize {
        self.canonical
            .find('.')
            .map_or(0, |p| self.canonical.len() - p - 1)
    }

    /// The unscaled value at `scale` fractional digits, when it is exact and
    /// fits in 38 digits of precision (Decimal128(38, scale)).
    pub fn to_decimal128(&self, scale: u8) -> Option<i128> {
        let own = self.scale();
        if own > usize::from(scale) {
            return None;
        }
        let text: String = self.canonical.chars().filter(|&c| c != '.').collect();
        let mut value: i128 = text.parse().ok()?;
        for _ in own..usize::from(scale) {
            value = value.checked_mul(10)?;
        }
        (value.unsigned_abs() < 10u128.pow(38)).then_some(value)
    }

    /// Builds a number from an unscaled Decimal128 value and its scale.
    pub fn from_decimal128(value: i128, scale: u8) -> Result<Self, NumberError> {
        let text = value.unsigned_abs().to_string();
        let scale = usize::from(scale);
        let sign = if value < 0 { "-" } else { "" };
        let literal = if scale == 0 {
            format!("{sign}{text}")
        } else if text.len() > scale {
            let (i, f) = text.split_at(text.len() - scale);
            format!("{sign}{i}.{f}")
        } else {
            format!("{sign}0.{}{text}", "0".repeat(scale - text.len()))
        };
        Number::parse(&literal)
    }
}

/// Consumes an optional `+` or `-` at `i`; true for `-`.
fn take_sign(bytes: &[u8], i: &mut usize) -> bool {
    match bytes.get(*i) {
        Some(&sign @ (b'-' | b'+')) => {
            *i += 1;
            sign == b'-'
        }
        _ => false,
    }
}

impl From<i64> for Number {
    fn from(value: i64) -> Self {
        Number {
            canonical: value.to_string().into(),
        }
    }
}

/// Plain decimal notation of `0.DIGITS`-style significant digits whose first
/// digit has exponent `adjusted`.
fn render(negative: bool, digits: &[u8], adjusted: i64) -> String {
    let mut out = String::with_capacity(digits.len() + 4);
    if negative {
        out.push('-');
    }
    let n = digits.len() as i64;
    let ascii = |d: &[u8]| std::str::from_utf8(d).unwrap_or_default().to_owned();
    if adjusted < 0 {
        out.push_str("0.");
        for _ in 0..(-adjusted - 1) {
            out.push('0');
        }
        out.push_str(&ascii(digits));
    } else if adjusted >= n - 1 {
        out.push_str(&ascii(digits));
        for _ in 0..(adjusted - (n - 1)) {
            out.push('0');
        }
    } else {
        let split = (adjusted + 1) as usize;
        out.push_str(&ascii(&digits[..split]));
        out.push('.');
        out.push_str(&ascii(&digits[split..]));
    }
    out
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N({})", self.canonical)
    }
}

impl Ord for Number {
    /// Numeric order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        numeric_cmp(&self.canonical, &other.canonical)
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn numeric_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a_neg, a_abs) = a.strip_prefix('-').map_or((false, a), |r| (true, r));
    let (b_neg, b_abs) = b.strip_prefix('-').map_or((false, b), |r| (true, r));
    match (a_neg, b_neg) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => abs_cmp(a_abs, b_abs),
        (true, true) => abs_cmp(b_abs, a_abs),
    }
}

/// Compares two canonical non-negative decimals.
fn abs_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    // A plain byte search: `split_once` goes through the `char` pattern
    // machinery for every comparison of every number-set sort.
    let (ai, af) = split_at_point(a.as_bytes());
    let (bi, bf) = split_at_point(b.as_bytes());
    // Canonical integer parts have no leading zeros (except a lone "0").
    ai.len()
        .cmp(&bi.len())
        .then_with(|| ai.cmp(bi))
        .then_with(|| af.cmp(bf))
}

/// The integer and fraction digits of a canonical decimal.
fn split_at_point(digits: &[u8]) -> (&[u8], &[u8]) {
    match digits.iter().position(|&c| c == b'.') {
        Some(at) => (&digits[..at], &digits[at + 1..]),
        None => (digits, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        Number::parse(text).unwrap().to_string()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canon("1.50"), "1.5");
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("000123"), "123");
        assert_eq!(canon("1e3"), "1000");
        assert_eq!(canon("1.5E-3"), "0.0015");
        assert_eq!(canon("+.5"), "0.5");
        assert_eq!(canon("5."), "5");
        assert_eq!(canon("-12.3400e1"), "-123.4");
        assert_eq!(canon("1E+125"), format!("1{}", "0".repeat(125)));
        assert_eq!(canon("1E-130"), format!("0.{}1", "0".repeat(129)));
    }

    /// A double holds a number when reading it back gives the number:
    /// the decimals people write do, and so do integers of 2^53 and more
    /// that are exact; a digit the double cannot keep does not.
    #[test]
    fn a_double_holds_a_number_that_reads_back_the_same() {
        let exact = |text: &str| Number::parse(text).unwrap().to_f64_exact();
        for (text, value) in [
            ("0", 0.0),
            ("10.99", 10.99),
            ("-0.1", -0.1),
            ("9007199254740992", 9_007_199_254_740_992.0),
            ("1152921504606846976", 1_152_921_504_606_846_976.0), // 2^60
            ("1E+125", 1e125),
            ("1E-130", 1e-130),
            ("9.31322574615478515625E-10", 9.313_225_746_154_785e-10), // 2^-30
            ("0.30000000000000004", 0.1 + 0.2),
        ] {
            assert_eq!(exact(text), Some(value), "{text}");
        }
        for text in [
            "9007199254740993",
            "1152921504606846977",
            "0.1000000000000000001",
            "12345678901234567890123456789012345678",
            "3.14159265358979323846",
            // Within 38 digits of a double, but not its value: 0.1's double
            // is 0.1000000000000000055511151231257827021181583404541015625,
            // and 2^200 has 61 digits.
            "0.10000000000000000555111512312578270212",
            "1.6069380442589902755419620923411626025E+60",
        ] {
            assert_eq!(exact(text), None, "{text}");
        }
    }

    /// As a key, a number must be the one number its double stands for:
    /// an exact double that prints shorter is not.
    #[test]
    fn a_key_double_stands_for_one_number_only() {
        let distinct = |text: &str| Number::parse(text).unwrap().to_f64_distinct();
        assert_eq!(distinct("9007199254740992"), Some(9_007_199_254_740_992.0));
        assert_eq!(
            distinct("-9007199254740992"),
            Some(-9_007_199_254_740_992.0)
        );
        assert_eq!(distinct("10.99"), Some(10.99));
        assert_eq!(
            distinct("1152921504606847000"),
            Some(1_152_921_504_606_846_976.0)
        );
        for text in ["1152921504606846976", "9007199254740993"] {
            assert_eq!(distinct(text), None, "{text}");
        }
    }

    #[test]
    fn rejects_what_dynamodb_rejects() {
        for bad in [
            "", "-", "NaN", "Infinity", "0x10", "1e", "1.2.3", " 1", "1 ", "e5",
        ] {
            assert!(
                matches!(Number::parse(bad), Err(NumberError::Syntax(_))),
                "{bad}"
            );
        }
        let digits39 = "1".repeat(39);
        assert!(matches!(
            Number::parse(&digits39),
            Err(NumberError::TooManyDigits { digits: 39, .. })
        ));
        assert!(Number::parse(&"1".repeat(38)).is_ok());
        // Trailing zeros of an integer are not significant.
        assert!(Number::parse(&format!("1{}", "0".repeat(100))).is_ok());
        assert!(matches!(
            Number::parse("1E126"),
            Err(NumberError::OutOfRange { .. })
        ));
        assert!(matches!(
            Number::parse("1E-131"),
            Err(NumberError::OutOfRange { .. })
        ));
        assert!(matches!(
            Number::parse("1E999999999999999999"),
            Err(NumberError::OutOfRange { .. })
        ));
    }

    #[test]
    fn conversions() {
        assert_eq!(
            Number::parse("9223372036854775807").unwrap().to_i64(),
            Some(i64::MAX)
        );
        assert_eq!(Number::parse("9223372036854775808").unwrap().to_i64(), None);
        assert_eq!(
            Number::parse("-9223372036854775808").unwrap().to_i64(),
            Some(i64::MIN)
        );
        assert_eq!(Number::parse("1.5").unwrap().to_i64(), None);
        let n = Number::parse("-12.345").unwrap();
        assert_eq!(n.to_decimal128(4), Some(-123_450));
        assert_eq!(n.to_decimal128(2), None);
        assert_eq!(Number::from_decimal128(-123_450, 4).unwrap(), n);
        assert_eq!(Number::from_decimal128(5, 3).unwrap().as_str(), "0.005");
    }

    #[test]
    fn numeric_order() {
        let mut v: Vec<Number> = [
            "10", "-1.5", "2", "0.001", "-20", "0", "2.25", "2.5", "-1.25", "0.01", "100.5",
        ]
        .iter()
        .map(|t| Number::parse(t).unwrap())
        .collect();
        v.sort();
        let s: Vec<&str> = v.iter().map(Number::as_str).collect();
        assert_eq!(
            s,
            [
                "-20", "-1.5", "-1.25", "0", "0.001", "0.01", "2", "2.25", "2.5", "10", "100.5"
            ]
        );
    }

    #[test]
    fn fast_path_agrees_with_the_full_parser() {
        for text in [
            "0",
            "-0",
            "5",
            "-5",
            "10",
            "100",
            "0.5",
            "-0.05",
            "1.50",
            "01",
            "1.",
            ".5",
            "1e2",
            "12345678901234567890123456789012345678",
            "123456789012345678901234567890123456789",
            "1000000000000000000000000000000000000000000",
            "0.0000001",
        ] {
            let fast = Number::already_canonical(text);
            if let Some(f) = &fast {
                assert_eq!(f.as_str(), text);
                assert_eq!(
                    Some(f),
                    Number::parse_slow_for_test(text).as_ref().ok(),
                    "{text}"
                );
            }
        }
        let edge_high = format!("9{}", "0".repeat(125));
        assert!(Number::already_canonical(&edge_high).is_some());
        assert!(Number::already_canonical(&format!("{edge_high}0")).is_none());
        let edge_low = format!("0.{}1", "0".repeat(129));
        assert!(Number::already_canonical(&edge_low).is_some());
        assert!(Number::already_canonical(&format!("0.{}1", "0".repeat(130))).is_none());
    }

    impl Number {
        /// The full parser alone, bypassing the fast path.
        fn parse_slow_for_test(text: &str) -> Result<Number, NumberError> {
            // Exponent notation always takes the full path and means the same.
            Number::parse(&format!("{text}e0"))
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_and_full_paths_agree(int in "-?[0-9]{1,40}", frac in "[0-9]{0,40}") {
            let text = if frac.is_empty() { int.clone() } else { format!("{int}.{frac}") };
            let fast = Number::parse(&text);
            let full = Number::parse_slow_for_test(&text);
            match (fast, full) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => proptest::prop_assert!(false, "{text}: {a:?} vs {b:?}"),
            }
        }

        #[test]
        fn to_i64_agrees_with_the_standard_parser(
            int in "-?[0-9]{1,22}",
            frac in "[0-9]{0,3}",
            exp in -3i64..25,
        ) {
            let text = format!("{int}.{frac}e{exp}");
            if let Ok(n) = Number::parse(&text) {
                let expected = if n.is_integer() { n.as_str().parse::<i64>().ok() } else { None };
                proptest::prop_assert_eq!(n.to_i64(), expected, "{}", n.as_str());
            }
        }

        #[test]
        fn canonical_is_a_fixed_point(int in "-?[0-9]{1,20}", frac in "[0-9]{0,17}", exp in -100i64..100) {
            let text = format!("{int}.{frac}e{exp}");
            if let Ok(n) = Number::parse(&text) {
                let again = Number::parse(n.as_str()).unwrap();
                proptest::prop_assert_eq!(&again, &n);
            }
        }
    }
}
