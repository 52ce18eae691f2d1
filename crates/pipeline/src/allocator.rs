//! The process's allocator, mimalloc, and the option it is given.
//!
//! mimalloc serves Rust's allocations (the global allocator below) and,
//! built with its `override` feature, the C libraries' too: `malloc` and
//! `free` in this binary are mimalloc's, so librdkafka's message copies and
//! message sets and zstd's buffers come from the same heaps.

use std::ffi::c_long;

// The pipeline allocates many small strings and maps per record, and
// librdkafka several blocks per message; mimalloc serves that pattern far
// faster than glibc's allocator. It is built without transparent huge pages
// (see the workspace manifest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`'s place in mimalloc's `mi_option_t` (the crate
/// names only some options); a test checks it against the option's default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds that freed memory stays with the allocator before it goes
/// back to the system, when reading capture files.
const FILES_PURGE_DELAY_MS: c_long = 50;

/// ... when reading live streams: mimalloc's own default.
const LIVE_PURGE_DELAY_MS: c_long = 1000;

/// What the process reads, which decides how long freed memory is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Capture files (the `replay` source), as fast as they can be read.
    Files,
    /// DynamoDB Streams (the `dynamodb` source), a page per GetRecords call.
    Live,
}

/// Sets the purge delay for what the process reads, unless
/// `MIMALLOC_PURGE_DELAY` already does. Before any reading starts; later
/// calls take effect from then on.
///
/// mimalloc 3 keeps freed pages a second (1000 ms) before it returns them
/// (mimalloc 2 kept them 10 ms). A replay of items near 400 KB frees one
/// batch while it allocates the next ones, so with the long delay the peak
/// held several: with both sinks on F3, 82 to 106 MiB peak RSS, against 71
/// to 77 MiB at 50 ms. Shorter delays return memory that is about to be
/// used again: at 10 ms, 71 MiB but two thirds more page faults (memory
/// taken back, zeroed and handed out again); at 50 ms a sixth more, below
/// what CPU time can show.
///
/// The live source waits on HTTP between pages, long enough for freed
/// memory to go back to the system and be faulted in again for the next
/// page: at 50 ms an F1 stream took 33,000-38,000 page faults against
/// 17,000-19,000 at 1000 ms and 11,000-12,000 never purging, and about 10%
/// more CPU (a median 747 ms against 673 and 669 ms, four runs each). Its
/// pages are at most a megabyte each, so a second of freed memory is a
/// bounded amount: it keeps the default. (A snapshot by table export reads
/// files at start under the live source; even F3's items peaked at 82-86
/// MiB with the default.)
pub(crate) fn tune(reading: Reading) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let ms = match reading {
        Reading::Files => FILES_PURGE_DELAY_MS,
        Reading::Live => LIVE_PURGE_DELAY_MS,
    };
    // SAFETY: sets one integer option, which mimalloc reads atomically;
    // `PURGE_DELAY` is a valid option index (see the test below).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn get(option: libmimalloc_sys::mi_option_t) -> c_long {
        // SAFETY: reads one option by a valid index.
        unsafe { libmimalloc_sys::mi_option_get(option) }
    }

    #[test]
    fn the_purge_delay_is_the_option_it_names() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment chose a value: nothing to tell apart
        }
        // Only `purge_delay` defaults to 1000 in mimalloc 3; a version that
        // moved it fails here instead of changing another option.
        assert_eq!(get(PURGE_DELAY), 1000);
        tune(Reading::Files);
        assert_eq!(get(PURGE_DELAY), FILES_PURGE_DELAY_MS);
        tune(Reading::Live);
        assert_eq!(get(PURGE_DELAY), LIVE_PURGE_DELAY_MS);
    }

    /// The C libraries' `malloc` is mimalloc's: a block from it lies in
    /// mimalloc's heap, both when this binary calls `malloc` and when a
    /// shared library does (glibc's `strdup`, whose copy librdkafka frees
    /// with `free`). Without the `override` feature both would be glibc's.
    #[test]
    #[allow(unsafe_code)]
    fn c_malloc_is_mimalloc() {
        // SAFETY: each block is taken from the C library, asked about, and
        // freed once by `free`, the matching call; `strdup` copies a
        // NUL-terminated literal.
        unsafe {
            let block = libc::malloc(4096);
            assert!(!block.is_null());
            let ours = libmimalloc_sys::mi_is_in_heap_region(block);
            libc::free(block);
            assert!(
                ours,
                "malloc is not mimalloc's: is the `override` feature on?"
            );

            let copy = libc::strdup(c"librdkafka".as_ptr());
            assert!(!copy.is_null());
            let ours = libmimalloc_sys::mi_is_in_heap_region(copy.cast());
            libc::free(copy.cast());
            assert!(ours, "glibc's own allocations are not mimalloc's");
        }
    }
}
