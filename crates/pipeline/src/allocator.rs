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
/// back to the system.
const PURGE_DELAY_MS: c_long = 50;

/// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` already does.
///
/// mimalloc 3 keeps freed pages a second (1000 ms) before it returns them
/// (mimalloc 2 kept them 10 ms). A replay of items near 400 KB frees one
/// batch while it allocates the next ones, so with the long delay the peak
/// held several: with both sinks on F3, 88 to 106 MiB peak RSS, against 76
/// to 77 MiB at 50 ms. Shorter delays return memory that is about to be
/// used again: at 10 ms, 71 MiB but two thirds more page faults (memory
/// taken back, zeroed and handed out again); at 50 ms a sixth more, below
/// what CPU time can show. The live source, which waits on HTTP between
/// pages, has twice the page faults at 50 ms (an estimated 2-4% of its
/// CPU): the price of the bound on memory.
pub(crate) fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option, which mimalloc reads atomically;
        // `PURGE_DELAY` is a valid option index (see the test below).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
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
        tune();
        assert_eq!(get(PURGE_DELAY), PURGE_DELAY_MS);
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
