//! The allocator's share of the daemon's memory.
//!
//! A large table's collection, planning and encodings allocate tens of megabytes for a moment,
//! from whichever threads run them. glibc gives each thread that contends for the heap an arena
//! of its own (up to 8 per CPU) and returns memory to the system only from the top of each, so
//! the resident size would keep the peak of every arena. It also raises its threshold for
//! mapping a large block separately each time such a block is freed (up to 32 MB), so that the
//! label text, value arrays and gzip buffers of a large table end up inside the heaps, where
//! freeing them leaves holes rather than returning the pages. The daemon keeps two arenas, maps
//! every block of [`MMAP_THRESHOLD`] or more on its own (given back to the system when freed),
//! and trims the heap after each collection.

/// Blocks of this size or more are mapped on their own (glibc's initial default, kept fixed).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Caps glibc's malloc arenas at 2 and fixes the mmap threshold at [`MMAP_THRESHOLD`] (call
/// once, before threads start).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Gives the free memory at the top of the heaps back to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
