//! The process's allocator and its memory. The gateway's many small allocations go to
//! mimalloc, large ones to glibc (`SplitAlloc`); after the monitor's first load of millions
//! of rows, freed memory is handed back to the system (glibc kept the load's transient
//! allocations — pages of source rows, columns outgrown while growing — resident: ~77 bytes
//! a row held instead of ~48).
#![expect(
    unsafe_code,
    reason = "the global allocator forwards to two allocators; calls into the C allocators' own tuning (`malloc_trim`, `mallopt`, `mi_collect`) that take plain values and touch only their own state"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    // SAFETY: `mi_collect` has no preconditions: it returns what this thread's heap no
    // longer uses (the small blocks of a load in `serve`'s own monitor).
    unsafe {
        libmimalloc_sys::mi_collect(true);
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

/// Requests up to this size go to mimalloc, larger ones to the C library's allocator
/// (`split_for_command` sets 0 for the standalone monitor: everything to glibc).
static SMALL_MAX: AtomicUsize = AtomicUsize::new(32 * 1024);
/// Whether anything has been allocated: the split may only change before the first block.
static ALLOCATED: AtomicBool = AtomicBool::new(false);

/// The process's allocator, split by size. A call's many small short-lived allocations
/// (headers, JSON pieces, futures, buffers) go to mimalloc: thread-local free lists, no
/// consolidation; a gateway call costs 8 % fewer instructions and the gateway does 23–29 %
/// more calls a second than with glibc alone (BENCHMARKS.md). Large ones — a long body's
/// buffer, big vectors — go to glibc, which returns them to the system when freed.
///
/// The standalone monitor keeps glibc for everything: it holds millions of rows in
/// columns of a few KiB each, and mimalloc's size classes and pages kept 15 % more after a
/// restart (its memory budget is per row, see `release_free_memory`).
///
/// Sound because Rust hands `dealloc` and `realloc` the layout the block was allocated with,
/// and the split never changes once a block exists: a block's size alone names its owner.
pub struct SplitAlloc;

/// Whether mimalloc takes small blocks in this process (not in the standalone monitor).
pub fn uses_mimalloc() -> bool {
    SMALL_MAX.load(Ordering::Relaxed) != 0
}

/// Which allocator takes what in this process, for the start-up log.
pub fn allocator() -> &'static str {
    if !uses_mimalloc() {
        "glibc"
    } else {
        "mimalloc up to 32 KiB, glibc above"
    }
}

fn mark_allocated() {
    if !ALLOCATED.load(Ordering::Relaxed) {
        ALLOCATED.store(true, Ordering::Relaxed);
    }
}

fn small(size: usize) -> bool {
    size <= SMALL_MAX.load(Ordering::Relaxed)
}

/// Decides the split from the command line, before `main` and before the first allocation
/// (glibc runs `.init_array` functions with the program's arguments): an argument
/// `monitor` means the standalone monitor. Any allocation before this (none is made by our
/// dependencies; none of them runs code before `main`) keeps the default, so no block
/// ever changes owner.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn split_for_command(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
    _env: *const *const std::ffi::c_char,
) {
    if ALLOCATED.load(Ordering::Relaxed) || argv.is_null() {
        return;
    }
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: glibc passes `argc` valid, NUL-terminated strings in `argv`.
        let arg = unsafe {
            let p = *argv.add(i);
            if p.is_null() {
                break;
            }
            std::ffi::CStr::from_ptr(p)
        };
        if arg.to_bytes() == b"monitor" {
            SMALL_MAX.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static SPLIT_FOR_COMMAND: extern "C" fn(
    std::ffi::c_int,
    *const *const std::ffi::c_char,
    *const *const std::ffi::c_char,
) = split_for_command;

// SAFETY: every method forwards to the allocator that owns the block by its size; a
// `realloc` across the boundary allocates from the new owner, copies the smaller of the two
// sizes and frees the old block with the layout it was allocated with.
unsafe impl std::alloc::GlobalAlloc for SplitAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        mark_allocated();
        // SAFETY: the caller's contract (non-zero size) is passed on unchanged.
        unsafe {
            if small(layout.size()) {
                mimalloc::MiMalloc.alloc(layout)
            } else {
                std::alloc::System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        mark_allocated();
        // SAFETY: as `alloc`.
        unsafe {
            if small(layout.size()) {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            } else {
                std::alloc::System.alloc_zeroed(layout)
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `layout` is the one `ptr` was allocated with, so its size names the owner.
        unsafe {
            if small(layout.size()) {
                mimalloc::MiMalloc.dealloc(ptr, layout);
            } else {
                std::alloc::System.dealloc(ptr, layout);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let (was, will) = (small(layout.size()), small(new_size));
        // SAFETY: same owner: its own `realloc` with the caller's arguments. Across: a new
        // block of `new_size` at the same alignment (valid: the caller guarantees the rounded
        // size does not overflow), the bytes both blocks hold copied, the old block freed by
        // its owner.
        unsafe {
            match (was, will) {
                (true, true) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
                (false, false) => std::alloc::System.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout =
                        std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::SplitAlloc;

    fn fill(p: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: `p` holds at least `len` bytes (the test's own block).
            unsafe { *p.add(i) = seed.wrapping_add(i as u8) };
        }
    }

    fn holds(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: as `fill`.
        (0..len).all(|i| unsafe { *p.add(i) } == seed.wrapping_add(i as u8))
    }

    /// A block keeps its bytes when it grows and shrinks across the split, at any alignment,
    /// and a zeroed block is zero on either side.
    #[test]
    fn blocks_keep_their_bytes_across_the_split() {
        // 0 when the test's own arguments name `monitor`: every block goes to glibc then.
        let max = match super::SMALL_MAX.load(std::sync::atomic::Ordering::Relaxed) {
            0 => 32 * 1024,
            m => m,
        };
        let sizes = [1, 24, 1000, max - 1, max, max + 1, 3 * max, 1 << 20];
        for align in [1, 8, 64, 4096] {
            for &from in &sizes {
                for &to in &sizes {
                    let layout = Layout::from_size_align(from, align).unwrap();
                    // SAFETY: non-zero sizes; every block freed with the layout it has.
                    unsafe {
                        let p = SplitAlloc.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0);
                        fill(p, from, from as u8);
                        let q = SplitAlloc.realloc(p, layout, to);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "{from} → {to} at {align}");
                        assert!(holds(q, from.min(to), from as u8), "{from} → {to}");
                        SplitAlloc.dealloc(q, Layout::from_size_align(to, align).unwrap());

                        let z = SplitAlloc.alloc_zeroed(layout);
                        assert!((0..from).all(|i| *z.add(i) == 0));
                        SplitAlloc.dealloc(z, layout);
                    }
                }
            }
        }
    }
}
