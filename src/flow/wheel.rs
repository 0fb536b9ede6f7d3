//! flow::wheel: when each conversation of the table is next due for a look, filed by
//! deadline in coarse slots of event time. Expiry visits only the slots it passes and
//! eviction starts from the oldest slot: neither scans the table.
//!
//! A handle is filed when its conversation starts and is not moved when the conversation
//! is extended (that would cost a list operation per record): a filed deadline is a lower
//! bound. Whoever takes a handle from a slot looks at the real deadline and files the
//! handle again if it moved on (lazy re-arm), so each handle is always in exactly one
//! slot's list, and the lists can be chained through one link per handle.

use super::slab::{Chunks, NIL};

#[derive(Debug)]
pub(super) struct Wheel {
    /// Each slot's first handle (`NIL`: empty); slot `s` is at `s & mask`.
    heads: Box<[u32]>,
    mask: u64,
    /// Each handle's successor in its slot's list, indexed by handle.
    next: Chunks<u32>,
    /// The oldest slot that may hold handles: every filed handle is in one of the slots
    /// `cursor..=cursor + mask`. A handle due before the cursor is filed in the cursor's
    /// slot, one due beyond the last slot in the last (and filed again as the wheel turns).
    cursor: u64,
    slot_ms: u64,
    /// Filed handles.
    len: usize,
}

impl Wheel {
    /// A wheel of 1 s slots (coarser for a horizon above 9 hours) reaching a quarter
    /// beyond `horizon_ms`, the usual distance from the present to a deadline: records
    /// stamped a little ahead of the present still get their own slot.
    pub(super) fn new(horizon_ms: u64) -> Wheel {
        let slot_ms = horizon_ms.div_ceil(1 << 15).max(1000);
        let span = horizon_ms / slot_ms;
        let slots = (span + span / 4 + 64).next_power_of_two();
        Wheel {
            heads: vec![NIL; slots as usize].into_boxed_slice(),
            mask: slots - 1,
            next: Chunks::new(),
            cursor: 0,
            slot_ms,
            len: 0,
        }
    }

    fn slot(&self, ms: u64) -> u64 {
        ms / self.slot_ms
    }

    /// Files `handle`, not in the wheel, to be due at `deadline_ms`.
    pub(super) fn insert(&mut self, handle: u32, deadline_ms: u64) {
        if self.len == 0 {
            // An empty wheel starts at the first deadline it is given, wherever the
            // previous ones were: no slots to walk on the way.
            self.cursor = self.slot(deadline_ms);
        }
        self.file(handle, deadline_ms);
        self.len += 1;
    }

    /// Puts `handle` at the head of the list of the slot of `deadline_ms`, or of the
    /// nearest slot the wheel has.
    fn file(&mut self, handle: u32, deadline_ms: u64) {
        let slot = self
            .slot(deadline_ms)
            .clamp(self.cursor, self.cursor + self.mask);
        let at = (slot & self.mask) as usize;
        while self.next.len() <= handle as usize {
            self.next.push(NIL);
        }
        *self.next.get_mut(handle as usize) = self.heads[at];
        self.heads[at] = handle;
    }

    /// Empties a slot, returning its list's first handle.
    fn take(&mut self, slot: u64) -> u32 {
        std::mem::replace(&mut self.heads[(slot & self.mask) as usize], NIL)
    }

    /// Moves the wheel to event time `now_ms`, taking every handle of the slots it passes
    /// and of the slot of `now_ms`, oldest slot first: `due(handle)` either removes the
    /// handle (`None`) or gives its current deadline, where it is filed again.
    pub(super) fn advance(&mut self, now_ms: u64, mut due: impl FnMut(u32) -> Option<u64>) {
        let target = self.slot(now_ms).max(self.cursor);
        if self.len == 0 {
            self.cursor = target;
            return;
        }
        if target - self.cursor > self.mask {
            // A whole turn or more at once: every slot is due. Take all the lists first,
            // so that what is filed again lands after the new cursor.
            let lists: Vec<u32> = (self.cursor..=self.cursor + self.mask)
                .map(|slot| self.take(slot))
                .collect();
            self.cursor = target;
            for head in lists {
                self.visit(head, &mut due);
            }
            return;
        }
        while self.cursor < target {
            let head = self.take(self.cursor);
            // Passed: what is filed again goes to a later slot.
            self.cursor += 1;
            self.visit(head, &mut due);
        }
        // The present slot: what is not due yet goes back.
        let head = self.take(target);
        self.visit(head, &mut due);
    }

    fn visit(&mut self, mut handle: u32, due: &mut impl FnMut(u32) -> Option<u64>) {
        while handle != NIL {
            let next = *self.next.get(handle as usize);
            match due(handle) {
                Some(deadline_ms) => self.file(handle, deadline_ms),
                None => self.len -= 1,
            }
            handle = next;
        }
    }

    /// Takes out the handles of the oldest slot that holds any (the cursor moves up to
    /// it) into `oldest`. Those whose `deadline(handle)` moved to a later slot since they
    /// were filed are filed there instead; the rest (due in that slot or before, or beyond
    /// the wheel's reach: stamped so far ahead that waiting for them would take turns) are
    /// out of the wheel: the caller removes them or files them again with [`Wheel::insert`].
    pub(super) fn take_oldest(&mut self, deadline: impl Fn(u32) -> u64, oldest: &mut Vec<u32>) {
        if self.len == 0 {
            return;
        }
        // Not endless: some slot of the wheel's turn holds a handle.
        while self.heads[(self.cursor & self.mask) as usize] == NIL {
            self.cursor += 1;
        }
        let mut handle = self.take(self.cursor);
        while handle != NIL {
            let next = *self.next.get(handle as usize);
            let deadline_ms = deadline(handle);
            let slot = self.slot(deadline_ms);
            if slot > self.cursor && slot <= self.cursor + self.mask {
                self.file(handle, deadline_ms);
            } else {
                oldest.push(handle);
                self.len -= 1;
            }
            handle = next;
        }
    }

    /// Forgets every handle and frees the links.
    pub(super) fn clear(&mut self) {
        self.heads.fill(NIL);
        self.next.clear();
        self.len = 0;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Advances `wheel` to `now_ms` with deadlines from `deadlines` (handle -> ms): ends
    /// those past, returns them in the order they were ended.
    fn expire(wheel: &mut Wheel, now_ms: u64, deadlines: &[u64]) -> Vec<u32> {
        let mut ended = Vec::new();
        wheel.advance(now_ms, |handle| {
            let deadline = deadlines[handle as usize];
            if deadline < now_ms {
                ended.push(handle);
                None
            } else {
                Some(deadline)
            }
        });
        ended
    }

    #[test]
    fn slots_are_visited_oldest_first_and_extended_handles_refiled() {
        let mut wheel = Wheel::new(60_000);
        let mut deadlines = [5_000, 3_500, 3_000, 70_000, 10_050_000];
        for (handle, &deadline) in deadlines.iter().enumerate() {
            wheel.insert(handle as u32, deadline);
        }
        // Handle 0 extended after it was filed: found at 5 s, filed again at 9 s.
        deadlines[0] = 9_000;
        assert_eq!(expire(&mut wheel, 3_200, &deadlines), vec![2]);
        assert_eq!(expire(&mut wheel, 8_000, &deadlines), vec![1]);
        assert_eq!(wheel.len(), 3);
        assert_eq!(expire(&mut wheel, 9_001, &deadlines), vec![0]);
        // Far beyond a turn of the wheel: every slot is visited once, and what is not due
        // yet is filed from the new present.
        assert_eq!(expire(&mut wheel, 10_000_000, &deadlines), vec![3]);
        assert_eq!((wheel.cursor, wheel.len()), (10_000, 1));
        assert_eq!(expire(&mut wheel, 10_050_001, &deadlines), vec![4]);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn deadlines_beyond_the_wheel_wait_in_its_last_slot() {
        let mut wheel = Wheel::new(0);
        assert_eq!(wheel.mask, 63);
        let deadlines = [1_000, 500_000];
        wheel.insert(0, deadlines[0]);
        wheel.insert(1, deadlines[1]);
        for now in (7_000..500_000).step_by(7_000) {
            let ended = expire(&mut wheel, now, &deadlines);
            assert!(ended.iter().all(|&h| h == 0), "{ended:?} at {now}");
        }
        assert_eq!(expire(&mut wheel, 500_001, &deadlines), vec![1]);
    }

    #[test]
    fn the_oldest_slot_is_taken_whole() {
        let mut wheel = Wheel::new(60_000);
        let mut deadlines = [2_000, 2_500, 1_000, 9_000];
        for (handle, &deadline) in deadlines.iter().enumerate() {
            wheel.insert(handle as u32, deadline);
        }
        deadlines[0] = 4_000;
        let mut oldest = Vec::new();
        // The wheel starts at the first deadline (2 s): handle 2, due before, is in that
        // slot too; handle 0 moved on to 4 s.
        wheel.take_oldest(|h| deadlines[h as usize], &mut oldest);
        assert_eq!(oldest, vec![2, 1]);
        oldest.clear();
        wheel.take_oldest(|h| deadlines[h as usize], &mut oldest);
        assert_eq!((oldest, wheel.len()), (vec![0], 1));
    }
}
