//! Decoding the base64 text of binary values on the fast path.
//!
//! Binary attributes arrive as standard base64 with padding, and a document
//! can carry hundreds of kilobytes of it. [`decode_base64`] accepts exactly
//! what the `base64` crate's `STANDARD` engine accepts (the serde path's
//! decoder, which also words the errors; a property test holds the two
//! together) and decodes four characters with four table lookups, where
//! the crate's general engine spends about three times the instructions.

/// Marks a character outside the alphabet in every table below; bits 24-31
/// are never part of a decoded quantum.
const INVALID: u32 = 1 << 31;

/// The value of each character, shifted into its place in a 24-bit
/// quantum: `TABLES[k][c]` for the `k`-th character of four.
static TABLES: [[u32; 256]; 4] = [table(18), table(12), table(6), table(0)];

const fn table(shift: u32) -> [u32; 256] {
    let mut t = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        let value = match c as u8 {
            b @ b'A'..=b'Z' => Some(b - b'A'),
            b @ b'a'..=b'z' => Some(b - b'a' + 26),
            b @ b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        };
        if let Some(v) = value {
            t[c] = (v as u32) << shift;
        }
        c += 1;
    }
    t
}

fn quantum(quad: &[u8; 4]) -> u32 {
    TABLES[0][usize::from(quad[0])]
        | TABLES[1][usize::from(quad[1])]
        | TABLES[2][usize::from(quad[2])]
        | TABLES[3][usize::from(quad[3])]
}

/// Standard base64 (`+`, `/`, `=` padding required) decoded; `None` for
/// anything else: a length that is not a multiple of four, a character
/// outside the alphabet, padding anywhere but at the end, or padded bits
/// that are not zero.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let Some((body, last)) = text.split_last_chunk::<4>() else {
        return Some(Vec::new());
    };
    let pad = last.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = vec![0u8; body.len() / 4 * 3 + 3 - pad];
    let (head, tail) = out.split_at_mut(body.len() / 4 * 3);
    for (quad, dst) in body.chunks_exact(4).zip(head.chunks_exact_mut(3)) {
        let v = quantum(quad.try_into().ok()?);
        if v & INVALID != 0 {
            return None;
        }
        dst.copy_from_slice(&v.to_be_bytes()[1..]);
    }
    // The last four: one or two `=` stand for characters that are not
    // there (zero), and the bits they leave over must be zero too.
    let (v, spare_bits) = match pad {
        0 => (quantum(last), 0),
        1 => (quantum(&[last[0], last[1], last[2], b'A']), 0xff),
        _ => (quantum(&[last[0], last[1], b'A', b'A']), 0xffff),
    };
    if v & INVALID != 0 || v & spare_bits != 0 {
        return None;
    }
    tail.copy_from_slice(&v.to_be_bytes()[1..4 - pad]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decodes_and_rejects_like_the_standard_engine() {
        for (text, want) in [
            ("", Some(&b""[..])),
            ("AA==", Some(&[0][..])),
            ("AAE=", Some(&[0, 1][..])),
            ("AAEC", Some(&[0, 1, 2][..])),
            ("AAEC/w==", Some(&[0, 1, 2, 255][..])),
            ("+/+/", Some(&[0xfb, 0xff, 0xbf][..])),
            ("AQ=", None),  // length
            ("AQ", None),   // unpadded
            ("AR==", None), // bits left over in the padding
            ("AAF=", None), // the same with one `=`
            ("A===", None), // too much padding
            ("====", None),
            ("AA==AA==", None), // padding inside
            ("AA-_", None),     // the URL-safe alphabet
            ("AA A", None),
            ("AAé=", None),
        ] {
            assert_eq!(decode_base64(text.as_bytes()).as_deref(), want, "{text:?}");
            assert_eq!(STANDARD.decode(text).ok().as_deref(), want, "{text:?}");
        }
    }

    /// Text near the alphabet: base64 characters, padding and a few bytes
    /// outside it, mostly in whole quanta (other lengths are refused first).
    fn near_base64() -> impl Strategy<Value = Vec<u8>> {
        let character = prop_oneof![
            20 => proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()
            ),
            2 => Just(b'='),
            1 => proptest::sample::select(b"-_ \n.\0\x80\xff".to_vec()),
        ];
        let whole = (0usize..6).prop_flat_map({
            let character = character.clone();
            move |quanta| proptest::collection::vec(character.clone(), quanta * 4)
        });
        prop_oneof![
            3 => whole,
            1 => proptest::collection::vec(character, 0..24),
        ]
    }

    proptest! {
        /// Whatever the bytes, the result is the standard engine's.
        #[test]
        fn agrees_with_the_standard_engine(text in near_base64()) {
            prop_assert_eq!(decode_base64(&text), STANDARD.decode(&text).ok());
        }

        /// Every encoding decodes back, and one changed character is
        /// still judged as the standard engine judges it.
        #[test]
        fn round_trips_and_judges_damage_alike(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
            at in any::<proptest::sample::Index>(),
            with in any::<u8>(),
        ) {
            let mut text = STANDARD.encode(&bytes).into_bytes();
            prop_assert_eq!(decode_base64(&text), Some(bytes));
            if !text.is_empty() {
                let i = at.index(text.len());
                text[i] = with;
                prop_assert_eq!(decode_base64(&text), STANDARD.decode(&text).ok());
            }
        }
    }
}
