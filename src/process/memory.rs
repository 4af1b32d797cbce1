//! The process's memory: handing freed pages back to the system.

/// Hands the pages of the replaced catalog and snapshot back to the system, and at start
/// those of the parsed config file (tens of times the file's size while it is read). glibc
/// keeps freed memory in its per-thread arenas, where a reload's worth (megabytes at
/// thousands of services) lands in a different arena each time and RSS climbs with every
/// reload.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
