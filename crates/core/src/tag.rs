//! [`writer_tag`]: a tag that names one writer's own temporary file or
//! object, so that no two writers, on one host or many, ever share one.

use std::hash::{BuildHasher, Hasher};

/// A tag no other writer carries: the process id (unique among the live
/// processes of a host) and a random number (for hosts sharing a file
/// system or a bucket). Only digits, lowercase hex and `-`: no `.`, no `/`.
pub fn writer_tag() -> String {
    // Each `RandomState` is keyed from the OS's randomness, differently at
    // every call, so hashing nothing yields a fresh random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{random:016x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_at_every_call_and_hold_no_separator() {
        let (a, b) = (writer_tag(), writer_tag());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'), "{a}");
    }
}
