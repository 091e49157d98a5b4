//! Per-CPU timers: one slot per vCPU, in a binary min-heap indexed by vCPU, as Xen keeps
//! its timers (`xen/common/timer.c`: each `struct timer` knows its `heap_offset`, so that
//! setting it again or stopping it moves or removes the one entry it has).
//!
//! A vCPU's one-shot timer (`set_timer`, Xen's `singleshot_timer`) is one slot: setting it
//! again replaces the deadline, so a guest that sets a million deadlines still has one
//! entry. The heap and the index are allocated once, for every vCPU the machine can have,
//! so setting a timer never allocates and never fails.

use alloc::vec;
use alloc::vec::Vec;

/// A timer due at `deadline_ns` for vCPU `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub deadline_ns: u64,
    pub id: u32,
}

/// The timers of one CPU.
pub struct TimerHeap {
    /// `heap[0]`, kept beside the heap: a CPU looks at its earliest timer on every switch
    /// (to arm the hardware timer), and under TCG the heap's first page is one TLB fill more
    /// after each CR3 load (`scripts/tlb-fills`), where this copy shares its owner's page.
    first: Option<Entry>,
    heap: Vec<Entry>,
    /// For each vCPU id, its index in `heap` plus one (0: no timer here).
    slot: Vec<u16>,
}

impl TimerHeap {
    /// A heap for vCPU ids below `ids` (at most 65535).
    pub fn new(ids: usize) -> TimerHeap {
        assert!(
            ids < usize::from(u16::MAX),
            "too many vCPU ids for a timer heap"
        );
        TimerHeap {
            first: None,
            heap: Vec::with_capacity(ids),
            slot: vec![0; ids],
        }
    }

    /// Timers set.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is set.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest timer.
    #[inline]
    pub fn peek(&self) -> Option<Entry> {
        self.first
    }

    /// Whether vCPU `id` has a timer here, and when.
    pub fn get(&self, id: u32) -> Option<u64> {
        let at = *self.slot.get(id as usize)?;
        (at != 0).then(|| self.heap[usize::from(at) - 1].deadline_ns)
    }

    /// Sets vCPU `id`'s timer to `deadline_ns`, replacing the one it had.
    pub fn set(&mut self, id: u32, deadline_ns: u64) {
        let at = self.slot[id as usize];
        let i = if at == 0 {
            debug_assert!(self.heap.len() < self.heap.capacity());
            self.heap.push(Entry { deadline_ns, id });
            self.heap.len() - 1
        } else {
            let i = usize::from(at) - 1;
            self.heap[i].deadline_ns = deadline_ns;
            i
        };
        self.slot[id as usize] = (i + 1) as u16;
        let i = self.sift_up(i);
        self.sift_down(i);
        self.first = self.heap.first().copied();
    }

    /// Removes vCPU `id`'s timer; returns its deadline if it had one.
    pub fn cancel(&mut self, id: u32) -> Option<u64> {
        let at = *self.slot.get(id as usize)?;
        if at == 0 {
            return None;
        }
        Some(self.remove_at(usize::from(at) - 1).deadline_ns)
    }

    /// Takes the earliest timer if it is due at `now_ns`.
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Entry> {
        match self.first {
            Some(e) if e.deadline_ns <= now_ns => Some(self.remove_at(0)),
            _ => None,
        }
    }

    fn remove_at(&mut self, i: usize) -> Entry {
        let last = self.heap.len() - 1;
        self.swap(i, last);
        let gone = self.heap.pop().expect("index in the heap");
        self.slot[gone.id as usize] = 0;
        if i < self.heap.len() {
            let i = self.sift_up(i);
            self.sift_down(i);
        }
        self.first = self.heap.first().copied();
        gone
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slot[self.heap[a].id as usize] = (a + 1) as u16;
        self.slot[self.heap[b].id as usize] = (b + 1) as u16;
    }

    fn earlier(&self, a: usize, b: usize) -> bool {
        let (x, y) = (self.heap[a], self.heap[b]);
        (x.deadline_ns, x.id) < (y.deadline_ns, y.id)
    }

    fn sift_up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.earlier(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i
    }

    fn sift_down(&mut self, mut i: usize) -> usize {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.earlier(l, least) {
                least = l;
            }
            if r < self.heap.len() && self.earlier(r, least) {
                least = r;
            }
            if least == i {
                return i;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Rng;

    #[test]
    fn setting_again_replaces_the_one_slot() {
        let mut h = TimerHeap::new(8);
        for d in (1..=100_000u64).rev() {
            h.set(3, 1_000_000 + d);
        }
        assert_eq!(h.len(), 1);
        assert_eq!(h.get(3), Some(1_000_001));
        h.set(3, 5);
        assert_eq!(h.pop_due(4), None);
        assert_eq!(
            h.pop_due(5),
            Some(Entry {
                deadline_ns: 5,
                id: 3
            })
        );
        assert!(h.is_empty());
        assert_eq!(h.get(3), None);
    }

    #[test]
    fn a_flood_on_one_vcpu_does_not_delay_another() {
        let mut h = TimerHeap::new(4);
        h.set(1, 500);
        for d in 0..10_000u64 {
            h.set(0, u64::MAX - d);
        }
        assert_eq!(h.pop_due(500).map(|e| e.id), Some(1));
    }

    #[test]
    fn cancel_removes_only_that_vcpu() {
        let mut h = TimerHeap::new(8);
        for id in 0..8 {
            h.set(id, 100 - u64::from(id));
        }
        assert_eq!(h.cancel(4), Some(96));
        assert_eq!(h.cancel(4), None);
        let order: Vec<u32> = core::iter::from_fn(|| h.pop_due(u64::MAX).map(|e| e.id)).collect();
        assert_eq!(order, [7, 6, 5, 3, 2, 1, 0]);
    }

    /// Random sets, cancels and pops against a plain model: the heap always yields the
    /// model's earliest timer, holds one entry per vCPU, and its index stays exact.
    #[test]
    fn matches_a_model_under_random_operations() {
        const IDS: u32 = 64;
        let mut h = TimerHeap::new(IDS as usize);
        let mut model: [Option<u64>; IDS as usize] = [None; IDS as usize];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let id = (rng.next() % u64::from(IDS)) as u32;
            match rng.next() % 4 {
                0 | 1 => {
                    let d = rng.next() % 1000;
                    h.set(id, d);
                    model[id as usize] = Some(d);
                }
                2 => assert_eq!(h.cancel(id), model[id as usize].take()),
                _ => {
                    let now = rng.next() % 1000;
                    let expect = model
                        .iter()
                        .enumerate()
                        .filter_map(|(i, d)| d.map(|d| (d, i as u32)))
                        .filter(|(d, _)| *d <= now)
                        .min();
                    let got = h.pop_due(now).map(|e| (e.deadline_ns, e.id));
                    assert_eq!(got, expect);
                    if let Some((_, i)) = got {
                        model[i as usize] = None;
                    }
                }
            }
            assert_eq!(h.len(), model.iter().flatten().count());
            let earliest = model
                .iter()
                .enumerate()
                .filter_map(|(i, d)| d.map(|d| (d, i as u32)))
                .min();
            assert_eq!(h.peek().map(|e| (e.deadline_ns, e.id)), earliest);
            for (i, d) in model.iter().enumerate() {
                assert_eq!(h.get(i as u32), *d);
            }
        }
    }
}
