//! detect::slab_map: where a rule keeps large per-key state (a host's profile, a window):
//! a small index from key to position beside the entries in one dense vector. A batch
//! can then bring a record's entry into the cache from the index alone, before it runs
//! ([`SlabMap::prefetch`]): the index is a few bytes a key and mostly cached, the entries
//! are hundreds of bytes and mostly not, and their misses overlap instead of stalling one
//! after another. A plain map holds its entries in its table: finding one there is the
//! miss itself.

use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::prefetch::prefetch;

/// Entries by key, in a dense vector behind an index of their positions (4 bytes and a
/// control byte a key, hashed on the entry's key and compared through the vector); a
/// removal moves the last entry into the hole. Iteration is in the vector's order, which
/// depends only on the calls made.
#[derive(Debug)]
pub struct SlabMap<K, V> {
    index: HashTable<u32>,
    entries: Vec<(K, V)>,
    hasher: RandomState,
}

impl<K, V> Default for SlabMap<K, V> {
    fn default() -> Self {
        SlabMap {
            index: HashTable::new(),
            entries: Vec::new(),
            hasher: RandomState::default(),
        }
    }
}

impl<K: Eq + Hash + Copy, V> SlabMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &K) -> Option<usize> {
        let entries = &self.entries;
        let hash = self.hasher.hash_one(key);
        let &at = self
            .index
            .find(hash, |&at| entries[at as usize].0 == *key)?;
        Some(at as usize)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_some()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        Some(&self.entries[self.position(key)?].1)
    }

    /// `key`'s entry, made by `make` when it has none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let at = match self.position(&key) {
            Some(at) => at,
            None => {
                let at = self.entries.len();
                let position =
                    u32::try_from(at).expect("fewer than 2^32 entries: rules bound their maps");
                self.entries.push((key, make()));
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.index
                    .insert_unique(hasher.hash_one(key), position, |&other| {
                        hasher.hash_one(entries[other as usize].0)
                    });
                at
            }
        };
        &mut self.entries[at].1
    }

    /// Sets `key`'s entry to `value`.
    pub fn insert(&mut self, key: K, value: V) {
        match self.position(&key) {
            Some(at) => self.entries[at].1 = value,
            None => {
                self.get_or_insert_with(key, || value);
            }
        }
    }

    pub fn reserve(&mut self, additional: usize) {
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.reserve(additional, |&other| {
            hasher.hash_one(entries[other as usize].0)
        });
        self.entries.reserve(additional);
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, value)| value)
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut at = 0;
        while at < self.entries.len() {
            let (key, value) = &mut self.entries[at];
            if keep(key, value) {
                at += 1;
                continue;
            }
            // The last entry takes the hole and is looked at next.
            self.repoint(at, None);
            let last = self.entries.len() - 1;
            if last != at {
                self.repoint(last, Some(at));
            }
            self.entries.swap_remove(at);
        }
    }

    /// Points the index's entry for position `from` at `to`, or removes it (`None`).
    fn repoint(&mut self, from: usize, to: Option<usize>) {
        let hash = self.hasher.hash_one(self.entries[from].0);
        let entry = self
            .index
            .find_entry(hash, |&at| at as usize == from)
            .expect("every entry is indexed");
        match to {
            Some(to) => *entry.into_mut() = to as u32,
            None => {
                entry.remove();
            }
        }
    }

    /// Starts bringing `key`'s entry (see [`prefetch`]) into the cache, if it
    /// has one, from the index alone: the entries whose positions the index holds under
    /// the key's hash (one but for a collision of seven bits); nothing waits for them.
    #[inline]
    pub fn prefetch(&self, key: &K) {
        for &at in self.index.iter_hash(self.hasher.hash_one(key)) {
            if let Some(entry) = self.entries.get(at as usize) {
                prefetch(entry);
            }
        }
    }
}

impl<K: Eq + Hash + Copy, V> std::ops::Index<&K> for SlabMap<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_found_through_inserts_and_removals() {
        let mut map: SlabMap<u32, u64> = SlabMap::new();
        for key in 0..100 {
            *map.get_or_insert_with(key, || 0) += u64::from(key);
            *map.get_or_insert_with(key, || 1000) += 1;
        }
        assert_eq!(map.len(), 100);
        map.retain(|&key, _| key % 3 != 0);
        assert_eq!(map.len(), 66);
        for key in 0..100 {
            assert_eq!(
                map.get(&key).copied(),
                (key % 3 != 0).then_some(u64::from(key) + 1),
                "{key}"
            );
            map.prefetch(&key);
        }
        map.insert(7, 70);
        map.insert(300, 3);
        assert_eq!((map[&7], map[&300], map.len()), (70, 3, 67));
        map.retain(|_, _| false);
        assert!(map.is_empty() && !map.contains_key(&7));
    }
}
