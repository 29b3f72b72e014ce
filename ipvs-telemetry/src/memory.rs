//! The allocator's share of the daemon's memory.
//!
//! A large table's collection, planning and encodings allocate tens of megabytes for a moment,
//! from whichever threads run them. glibc gives each thread that contends for the heap an arena
//! of its own (up to 8 per CPU) and returns memory to the system only from the top of each, so
//! the resident size would keep the peak of every arena. The daemon keeps two arenas and trims
//! the heap after each collection.

/// Caps glibc's malloc arenas at 2 (call once, before threads start).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
