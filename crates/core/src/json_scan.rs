//! Finding the bytes a JSON string cannot hold as they are.
//!
//! Every string of every record passes through [`json_special_position`]:
//! the parsers stop at what it finds, the writers escape it. Most strings
//! hold none of these bytes, so the scan is built to skip plain bytes
//! quickly: sixteen at a time with SSE2 (part of every x86-64 CPU, so no
//! run-time detection is needed), eight at a time with word arithmetic
//! elsewhere and for what is left over.

/// Where the first byte that is special inside a JSON string sits: `"`, `\\`
/// or a control character (below 0x20, which must be escaped). Writers
/// escape these; scanners stop at them.
#[inline]
pub fn json_special_position(bytes: &[u8]) -> Option<usize> {
    match blocks::scan(bytes) {
        Err(found) => Some(found),
        Ok(plain) => by_words(&bytes[plain..]).map(|n| plain + n),
    }
}

/// Appends the bytes of `src` before its first special byte (as
/// [`json_special_position`] finds it) to `out`, and says how many that was:
/// `src.len()` when `src` holds none.
///
/// An unescaper's inner loop: text escaped every few dozen bytes would
/// otherwise pay a scan and a separate copy, a `memcpy` call, per run. Here
/// each block of sixteen bytes is copied whole as it is tested, and the copy
/// is cut back to the special byte when the block holds one.
#[inline]
pub fn copy_plain(src: &[u8], out: &mut Vec<u8>) -> usize {
    match blocks::copy(src, out) {
        Err(found) => found,
        Ok(plain) => {
            let n = by_words(&src[plain..]).unwrap_or(src.len() - plain);
            out.extend_from_slice(&src[plain..plain + n]);
            plain + n
        }
    }
}

/// One bit per special byte of a 64-byte window (`"`, `\\` or a control
/// character), bit `k` for byte `k`.
///
/// For text escaped every few dozen bytes, where a scan that stops at each
/// special byte mispredicts its exit at each one: an unescaper walks the
/// window's bits instead, one branch per window rather than one per escape.
#[inline]
pub fn special_mask(window: &[u8; 64]) -> u64 {
    let mut mask = 0;
    for (k, block) in window.chunks_exact(16).enumerate() {
        let block = block.first_chunk::<16>().expect("16-byte chunks");
        mask |= u64::from(blocks::lanes(block)) << (16 * k);
    }
    mask
}

/// The same scan, eight bytes at a time in a `u64`.
fn by_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTE: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASH: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACE: u64 = u64::from_ne_bytes([0x20; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A byte's high bit is set when it is below 0x20, or when it is zero
        // after XOR with `"` or `\\`. Borrows can flag bytes above a true
        // hit, never below one, so the lowest flag is exact.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        let hits =
            (zero(word ^ QUOTE) | zero(word ^ BACKSLASH) | (word.wrapping_sub(SPACE) & !word))
                & HIGH;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|n| at + n)
}

/// Whole 16-byte blocks: `Ok(n)` when the first `n` bytes (a multiple of
/// sixteen) hold no special byte and fewer than sixteen are left, `Err(at)`
/// when a block holds one at `at`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod blocks {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    #[inline]
    pub(super) fn scan(bytes: &[u8]) -> Result<usize, usize> {
        let mut at = 0;
        while let Some(block) = bytes[at..].first_chunk::<16>() {
            let hits = lanes(block);
            if hits != 0 {
                return Err(at + hits.trailing_zeros() as usize);
            }
            at += 16;
        }
        Ok(at)
    }

    /// [`scan`], appending each plain block (and the plain part of the
    /// block that ends the run) to `out`.
    #[inline]
    pub(super) fn copy(src: &[u8], out: &mut Vec<u8>) -> Result<usize, usize> {
        let mut at = 0;
        while let Some(block) = src[at..].first_chunk::<16>() {
            let start = out.len();
            out.extend_from_slice(block);
            let hits = lanes(block);
            if hits != 0 {
                let n = hits.trailing_zeros() as usize;
                out.truncate(start + n);
                return Err(at + n);
            }
            at += 16;
        }
        Ok(at)
    }

    /// One bit per special byte of the block, lowest bit first.
    #[inline]
    pub(super) fn lanes(block: &[u8; 16]) -> u32 {
        // SAFETY: the module is built only where SSE2 is enabled for the
        // target (every x86-64 CPU has it); the load reads the block's 16
        // bytes, and `loadu` needs no alignment.
        #[allow(unsafe_code)]
        let mask = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned `v <= 0x1f` is `min(v, 0x1f) == v`.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        // Only the low 16 bits can be set.
        mask as u32
    }
}

/// Elsewhere the word scan does the scanning, and [`special_mask`] tests a
/// byte at a time.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod blocks {
    pub(super) fn scan(_: &[u8]) -> Result<usize, usize> {
        Ok(0)
    }

    pub(super) fn copy(_: &[u8], _: &mut Vec<u8>) -> Result<usize, usize> {
        Ok(0)
    }

    pub(super) fn lanes(block: &[u8; 16]) -> u32 {
        super::lanes_by_bytes(block)
    }
}

/// [`blocks`]' lanes a byte at a time: the mask where SSE2 is missing, and
/// what the tests hold the SSE2 one to.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn lanes_by_bytes(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b < 0x20 || b == b'"' || b == b'\\')
        .fold(0, |mask, (k, _)| mask | 1 << k)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn naive(bytes: &[u8]) -> Option<usize> {
        bytes
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    }

    #[test]
    fn finds_each_kind_of_special_byte_in_every_lane() {
        for len in 1..70 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(
                        json_special_position(&bytes),
                        Some(at),
                        "{len} {at} {special}"
                    );
                }
            }
            assert_eq!(json_special_position(&vec![b' '; len]), None);
            // Bytes just above a special one, and UTF-8 continuation bytes.
            assert_eq!(json_special_position(&vec![0x20; len]), None);
            assert_eq!(json_special_position(&vec![0x80; len]), None);
            assert_eq!(json_special_position(&vec![0xff; len]), None);
            assert_eq!(json_special_position(&vec![b'#'; len]), None);
            assert_eq!(json_special_position(&vec![b']'; len]), None);
        }
    }

    proptest! {
        /// A window's mask has a bit exactly where a byte loop finds a
        /// special byte, and each of its blocks' lanes are the byte loop's.
        #[test]
        fn window_mask_marks_every_special_byte(
            bytes in proptest::collection::vec(
                prop_oneof![8 => 0x20u8..=0xff, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20],
                64,
            ),
        ) {
            let window: &[u8; 64] = bytes.first_chunk().expect("64 bytes");
            for (k, &b) in bytes.iter().enumerate() {
                let special = b < 0x20 || b == b'"' || b == b'\\';
                prop_assert_eq!(special_mask(window) >> k & 1 == 1, special, "byte {}", k);
            }
            for block in window.chunks_exact(16) {
                let block = block.first_chunk::<16>().expect("16 bytes");
                prop_assert_eq!(blocks::lanes(block), lanes_by_bytes(block));
            }
        }
    }

    proptest! {
        /// The block and word scans find exactly what a byte loop finds, at
        /// every alignment, with hits in any lane and any number of them.
        #[test]
        fn matches_a_byte_loop(
            bytes in proptest::collection::vec(
                prop_oneof![
                    8 => 0x20u8..=0xff,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    1 => Just(0x21u8),
                    1 => Just(0x5du8),
                ],
                0..80,
            ),
            skip in 0usize..16,
        ) {
            let bytes = &bytes[skip.min(bytes.len())..];
            prop_assert_eq!(json_special_position(bytes), naive(bytes));
            prop_assert_eq!(by_words(bytes), naive(bytes));
        }

        /// `copy_plain` appends exactly the bytes before the first special
        /// one, after whatever `out` held, and counts them.
        #[test]
        fn copy_plain_copies_up_to_the_special_byte(
            bytes in proptest::collection::vec(
                prop_oneof![8 => 0x20u8..=0xff, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20],
                0..80,
            ),
            held in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let want = naive(&bytes).unwrap_or(bytes.len());
            let mut out = held.clone();
            prop_assert_eq!(copy_plain(&bytes, &mut out), want);
            prop_assert_eq!(&out[..held.len()], &held[..]);
            prop_assert_eq!(&out[held.len()..], &bytes[..want]);
        }
    }
}
