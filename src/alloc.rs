//! alloc: the process's allocator, the system's with transparent huge pages asked for on
//! every large block (the conversation table, the rules' maps). Those tables are read at
//! random, one entry per record, in tens of megabytes: with 4 KiB pages nearly every
//! lookup also misses the TLB, and the page walk costs as much as the entry's own miss.
//! The kernel gives huge pages to a region only when asked (`madvise(MADV_HUGEPAGE)`) in
//! its default `madvise` mode; in `never` mode the advice is ignored and nothing changes.

use std::alloc::{GlobalAlloc, Layout, System};

/// A huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// [`System`], advising huge pages for the whole 2 MiB pages inside every block of at
/// least [`HUGE_PAGE`] bytes (smaller blocks cannot hold one).
pub struct HugePages;

/// Asks for huge pages over the 2 MiB-aligned part of `[start, start + size)`. Advice
/// only: a refusal changes nothing but the speed, so its result is not looked at.
fn advise(start: *mut u8, size: usize) {
    if size < HUGE_PAGE || start.is_null() {
        return;
    }
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize + size) & !(HUGE_PAGE - 1);
    if end > first {
        // SAFETY: the range lies inside a block the allocator just handed out; advice
        // does not change its contents or its mapping.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments; `advise` only
// gives the kernel a hint about memory the block owns.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let block = unsafe { System.alloc(layout) };
        advise(block, layout.size());
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let block = unsafe { System.alloc_zeroed(layout) };
        advise(block, layout.size());
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as given.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if new_size > layout.size() {
            advise(moved, new_size);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_large_and_small_come_back_whole() {
        for size in [16, HUGE_PAGE - 1, HUGE_PAGE, 3 * HUGE_PAGE + 5] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero layout; the block is written within it and freed once.
            unsafe {
                let block = HugePages.alloc_zeroed(layout);
                assert!(!block.is_null());
                assert_eq!(*block.add(size - 1), 0);
                *block.add(size - 1) = 7;
                let grown = HugePages.realloc(block, layout, size * 2);
                assert_eq!(*grown.add(size - 1), 7);
                HugePages.dealloc(grown, Layout::from_size_align(size * 2, 8).unwrap());
            }
        }
    }
}
