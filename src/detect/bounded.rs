//! detect::bounded: the bound every rule's exporter-controlled map keeps: when full, the
//! stalest tenth goes (each rule counts what it evicted).

use std::hash::Hash;

use foldhash::HashMap;

use super::slab_map::SlabMap;

/// A map [`evict_stalest`] bounds: a rule's `HashMap` or [`SlabMap`].
pub trait Evictable {
    type Key;
    type Value;
    fn len(&self) -> usize;
    fn values(&self) -> impl Iterator<Item = &Self::Value>;
    fn retain(&mut self, keep: impl FnMut(&Self::Key, &mut Self::Value) -> bool);
}

impl<K: Eq + Hash, V> Evictable for HashMap<K, V> {
    type Key = K;
    type Value = V;
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn values(&self) -> impl Iterator<Item = &V> {
        HashMap::values(self)
    }
    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        HashMap::retain(self, keep)
    }
}

impl<K: Eq + Hash + Copy, V> Evictable for SlabMap<K, V> {
    type Key = K;
    type Value = V;
    fn len(&self) -> usize {
        SlabMap::len(self)
    }
    fn values(&self) -> impl Iterator<Item = &V> {
        SlabMap::values(self)
    }
    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        SlabMap::retain(self, keep)
    }
}

/// Removes the stalest tenth (at least one) of a full map, by `last_ms`, calling `evicted`
/// for each: the bound every exporter-controlled map keeps. One pass finds the cut-off, one
/// removes; amortised over the inserts the freed room admits.
pub fn evict_stalest<M: Evictable>(
    map: &mut M,
    last_ms: impl Fn(&M::Value) -> u64,
    mut evicted: impl FnMut(&M::Key, &M::Value),
) -> usize {
    let target = (map.len() / 10).max(1);
    let mut seen: Vec<u64> = map.values().map(&last_ms).collect();
    if seen.is_empty() {
        return 0;
    }
    let index = target.min(seen.len()) - 1;
    let (below, &mut cut, _) = seen.select_nth_unstable(index);
    // Everything older than the cut-off goes, then as many at the cut-off as fit.
    let mut ties = target - below.iter().filter(|&&ms| ms < cut).count();
    let mut removed = 0;
    map.retain(|key, value| {
        let ms = last_ms(value);
        let evict = ms < cut || (ms == cut && ties > 0);
        if evict {
            ties -= usize::from(ms == cut);
            removed += 1;
            evicted(key, value);
        }
        !evict
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evict_stalest_takes_the_oldest_before_equally_old_ones() {
        // A tenth of 20 is 2: the oldest, then one of the 19 tied at the cut-off, whatever
        // the map's order.
        let mut map: HashMap<u16, u64> = (0..20).map(|k| (k, 5)).collect();
        map.insert(7, 1);
        let mut evicted = Vec::new();
        assert_eq!(
            evict_stalest(&mut map, |&v| v, |&k, &v| evicted.push((k, v))),
            2
        );
        assert!(evicted.contains(&(7, 1)), "{evicted:?}");
        assert_eq!(map.len(), 18);
    }
}
