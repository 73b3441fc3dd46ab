//! How the node lets the C allocator give memory back to the system.
//!
//! glibc's `malloc` serves a block of 128 KiB or more with an `mmap` of its own, which goes
//! back to the system when the block is freed — until the first such block is freed: then it
//! raises that threshold to the freed block's size (up to 32 MiB), and later blocks of that
//! size come from its per-thread heaps, which keep what is freed. A node handles blocks of
//! megabytes now and then (a peer's frame, a sync message, a document snapshot), so its resident
//! memory rose with such bursts, heap by heap, and never came down: after four rounds of refused
//! 6 MiB frames and four large accepted messages, 68 → 362 MiB, and it stayed there after every
//! node had stopped (BENCHMARKS.md, "memory after attack runs"). Setting the threshold
//! explicitly turns the adjustment off: the same runs end at 109 MiB, the documents' own growth.

/// Keeps blocks of 128 KiB and more in mappings of their own, returned to the system when freed
/// (glibc on Linux; elsewhere nothing to do). Called first thing at start-up.
pub fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD_BYTES: libc::c_int = 128 * 1024;
        // The one unsafe call of the project: a C function with no pointer arguments.
        // SAFETY: `mallopt` only sets a parameter of glibc's allocator, under the allocator's
        // own lock; glibc documents it as callable at any time, from any thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES);
        }
    }
}
