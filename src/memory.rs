//! Handing freed memory back to the system between the phases of a large sweep.
//!
//! glibc's allocator keeps what a program frees for reuse, in every thread's arena, up to a
//! limit that grows with the largest block freed (64 MiB by default). A million-row sweep frees
//! its ETL frame, then each fold's matrices, vectors of a few MB each and many from worker
//! threads: left to the allocator they stayed resident (a 1M x 20 logistic regression peaked at
//! 730 MB instead of 565 MB). Each phase that freed that much ends by returning it.

/// Returns the free memory of every allocator arena to the system (glibc's `malloc_trim`);
/// nothing elsewhere.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases pages the allocator holds free; it takes its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
