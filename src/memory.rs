//! Hands freed heap memory back to the system. After the monitor's first load of millions of
//! rows, glibc's allocator keeps the load's transient allocations (pages of source rows,
//! columns outgrown while growing) resident: ~77 bytes a row held instead of ~48.
#![expect(
    unsafe_code,
    reason = "two calls into the C library's allocator (`malloc_trim`, `mallopt`) that take integers and touch only its own state"
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

/// One malloc arena for the whole process (glibc's default is up to eight per core). Each
/// thread that allocates under contention gets an arena of its own, and every arena keeps its
/// own free holes: after the monitor's first load of 10 M rows the process held ~6 % more
/// (523 MiB instead of 492; one arena per core: 527). For the standalone monitor — one
/// feed, light HTTP, queries that scan rather than allocate — one arena costs nothing
/// measurable; the gateway (`serve`) keeps glibc's default. A no-op off glibc.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: `mallopt` takes two integers and only sets the allocator's parameter; an
        // unknown or refused value is reported by its return value, not undefined behaviour.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
