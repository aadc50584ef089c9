//! Hands freed heap memory back to the system. After the monitor's first load of millions of
//! rows, glibc's allocator keeps the load's transient allocations (pages of source rows,
//! columns outgrown while growing) resident: ~77 bytes a row held instead of ~48.
#![expect(
    unsafe_code,
    reason = "one call into the C library that takes a size and walks only the allocator's own free lists"
)]

/// Releases free pages of every malloc arena (`malloc_trim(0)`); a no-op off glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: `malloc_trim` has no preconditions; it returns whether memory was released.
        unsafe {
            malloc_trim(0);
        }
    }
}
