//! The process's allocators: mimalloc for Rust, and the options it is
//! given; the C library's `malloc` (librdkafka's) and the two it is given.

use std::ffi::c_long;

// The pipeline allocates many small strings and maps per record; mimalloc
// serves that pattern far faster than the system allocator. It is built
// without transparent huge pages (see the workspace manifest).
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
    tune_c_malloc();
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option, which mimalloc reads atomically;
        // `PURGE_DELAY` is a valid option index (see the test below).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// Requests at least this large are mapped on their own by glibc's `malloc`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const C_MMAP_THRESHOLD: std::ffi::c_int = 4 << 20;

/// Free memory at the top of a glibc heap beyond which it is returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const C_TRIM_THRESHOLD: std::ffi::c_int = 64 << 20;

/// Keeps librdkafka's message copies off fresh pages, unless the
/// environment tunes glibc's `malloc` itself (`GLIBC_TUNABLES`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`).
///
/// librdkafka copies every message it is given and compresses message sets
/// into buffers of its own, all from the C library's `malloc`. glibc maps a
/// request above 128 KiB on its own and unmaps it when freed, and it hands
/// free memory at the top of a heap back once there is more than twice
/// that. A Kafka message near 400 KB was therefore written to pages the
/// kernel had to fault in and zero, three times over (the copy, the
/// compressed set, the next message). With the thresholds raised, that
/// memory is reused: on F3 into Kafka (tansu), 34,000 page faults became 19,000 and
/// system time fell by a third; on F1, 28,000 became 13,000. Peak RSS
/// rose by 2-4 MiB at most: what glibc keeps is what was in use at the
/// peak, which the producer's in-flight bound keeps bounded.
fn tune_c_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned_outside = std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
        // A refusal leaves glibc's defaults: slower, not wrong (the test
        // below holds the values to what glibc accepts).
        if !tuned_outside {
            set_c_malloc_thresholds();
        }
    }
}

/// Sets both thresholds; whether glibc took them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_c_malloc_thresholds() -> bool {
    // SAFETY: `mallopt` sets one of glibc's malloc parameters; it may be
    // called at any time, from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, C_MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, C_TRIM_THRESHOLD) == 1
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

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_malloc_thresholds() {
        // glibc refuses a mapping threshold above half its heap size (32
        // MiB on 64-bit): a value it would ignore fails here.
        assert!(set_c_malloc_thresholds());
    }
}
