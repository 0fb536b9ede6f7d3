//! prefetch: the hint the batch warm passes give (the conversation table's and the rules'
//! maps): bring a value's cache lines in ahead of its record, without waiting for them.

/// Cache lines of a value [`prefetch`] asks for at most: what a record reads of a profile
/// or a window lies within them.
pub const PREFETCHED_LINES: usize = 12;

/// Asks for the cache lines of `value` (up to [`PREFETCHED_LINES`]); nothing waits.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let lines = std::mem::size_of::<T>().div_ceil(64).min(PREFETCHED_LINES);
    for line in 0..lines {
        let address = start.wrapping_add(line * 64);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it reads nothing into the program and never faults,
        // whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = address;
    }
}
