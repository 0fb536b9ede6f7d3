//! flow::slab: where the conversation table's entries live: chunks of fixed size addressed
//! by `u32` handles, vacant entries chained into a free list. The table grows one chunk at
//! a time, never copies or moves an entry, and holds little more than its entries.

/// Items per chunk (a power of two: a handle splits into chunk and offset with a shift).
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// No handle: the end of a list.
pub(super) const NIL: u32 = u32::MAX;

/// The most handles a [`Slab`] hands out (`NIL` is not one).
pub(super) const MAX_HANDLES: usize = NIL as usize;

/// Append-only storage in chunks of `CHUNK` items, each allocated at its full size once.
#[derive(Debug)]
pub(super) struct Chunks<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Chunks<T> {
    pub(super) const fn new() -> Self {
        Chunks {
            chunks: Vec::new(),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends `item` and returns its index.
    pub(super) fn push(&mut self, item: T) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let last = self.chunks.len() - 1;
        self.chunks[last].push(item);
        self.len += 1;
        self.len - 1
    }

    pub(super) fn get(&self, index: usize) -> &T {
        &self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]
    }

    pub(super) fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Drops every item and frees the chunks.
    pub(super) fn clear(&mut self) {
        self.chunks = Vec::new();
        self.len = 0;
    }
}

/// An entry of a [`Slab`]. A vacant one costs no byte more than `T` when `T` has a niche
/// (the conversation's key does: `IpAddr`'s tag).
#[derive(Debug)]
enum Slot<T> {
    Occupied(T),
    /// Free, followed by the next free handle (`NIL`: the last).
    Vacant(u32),
}

/// Values addressed by `u32` handles. A removed value's handle is handed out again by a
/// later insert (the last freed first), so the storage stays as dense as the peak count.
#[derive(Debug)]
pub(super) struct Slab<T> {
    slots: Chunks<Slot<T>>,
    /// The first vacant handle (`NIL`: none).
    free: u32,
    len: usize,
}

impl<T> Slab<T> {
    pub(super) const fn new() -> Self {
        Slab {
            slots: Chunks::new(),
            free: NIL,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value` and returns its handle.
    ///
    /// # Panics
    /// When [`MAX_HANDLES`] values are already stored.
    pub(super) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if self.free != NIL {
            let handle = self.free;
            let slot = self.slots.get_mut(handle as usize);
            match *slot {
                Slot::Vacant(next) => self.free = next,
                Slot::Occupied(_) => unreachable!("free list through an occupied slot"),
            }
            *slot = Slot::Occupied(value);
            return handle;
        }
        assert!(self.slots.len() < MAX_HANDLES, "slab full");
        self.slots.push(Slot::Occupied(value)) as u32
    }

    /// Takes the value out; its handle is vacant until handed out again.
    ///
    /// # Panics
    /// When `handle` is vacant.
    pub(super) fn remove(&mut self, handle: u32) -> T {
        let slot = self.slots.get_mut(handle as usize);
        assert!(
            matches!(slot, Slot::Occupied(_)),
            "removing vacant handle {handle}"
        );
        let Slot::Occupied(value) = std::mem::replace(slot, Slot::Vacant(self.free)) else {
            unreachable!()
        };
        self.free = handle;
        self.len -= 1;
        value
    }

    /// Starts bringing `handle`'s entry into the cache without reading it (see
    /// [`crate::prefetch`]); a handle out of range is ignored.
    #[inline]
    pub(super) fn prefetch(&self, handle: u32) {
        if (handle as usize) < self.slots.len() {
            crate::prefetch::prefetch(self.slots.get(handle as usize));
        }
    }

    /// # Panics
    /// When `handle` is vacant (or was never handed out).
    #[inline]
    pub(super) fn get(&self, handle: u32) -> &T {
        match self.slots.get(handle as usize) {
            Slot::Occupied(value) => value,
            Slot::Vacant(_) => panic!("vacant handle {handle}"),
        }
    }

    /// # Panics
    /// When `handle` is vacant (or was never handed out).
    #[inline]
    pub(super) fn get_mut(&mut self, handle: u32) -> &mut T {
        match self.slots.get_mut(handle as usize) {
            Slot::Occupied(value) => value,
            Slot::Vacant(_) => panic!("vacant handle {handle}"),
        }
    }

    /// `handle`'s value, `None` when it is vacant or was never handed out.
    #[inline]
    pub(super) fn try_get(&self, handle: u32) -> Option<&T> {
        if handle as usize >= self.slots.len() {
            return None;
        }
        match self.slots.get(handle as usize) {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    /// Every value with its handle, in handle order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        (0u32..)
            .zip(self.slots.iter())
            .filter_map(|(handle, slot)| match slot {
                Slot::Occupied(value) => Some((handle, value)),
                Slot::Vacant(_) => None,
            })
    }

    /// Drops every value and frees the memory.
    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.free = NIL;
        self.len = 0;
    }

    /// The bytes one entry takes.
    #[cfg(test)]
    pub(super) const fn slot_size() -> usize {
        std::mem::size_of::<Slot<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_reused_last_freed_first() {
        let mut slab = Slab::new();
        let handles: Vec<u32> = (0..10_000u32).map(|v| slab.insert(v)).collect();
        assert_eq!(handles, (0..10_000).collect::<Vec<_>>());
        assert_eq!(slab.remove(4097), 4097);
        assert_eq!(slab.remove(3), 3);
        assert_eq!(slab.len(), 9_998);
        assert_eq!(slab.insert(7), 3);
        assert_eq!(slab.insert(8), 4097);
        assert_eq!(slab.insert(9), 10_000);
        assert_eq!(
            (*slab.get(3), *slab.get(4097), *slab.get(10_000)),
            (7, 8, 9)
        );
        assert_eq!(slab.iter().count(), 10_001);
        slab.clear();
        assert_eq!((slab.len(), slab.insert(1)), (0, 0));
    }

    #[test]
    #[should_panic(expected = "vacant handle")]
    fn a_vacant_handle_is_not_read() {
        let mut slab = Slab::new();
        let handle = slab.insert(1u64);
        slab.remove(handle);
        slab.get(handle);
    }
}
