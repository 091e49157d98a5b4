//! The physical frame allocator: one bit per 4 KiB frame.
//!
//! A bitmap rather than a free list so that every frame's state can be checked: freeing a
//! frame twice, or one that was never handed out, is reported instead of corrupting the
//! pool, and the free count lets tests prove that destroying a domain returned everything.
//!
//! A second level keeps the search short: one summary bit per bitmap word, set when that
//! word has a free frame, so an allocation looks at one summary word per 4096 frames and
//! then at one bitmap word. With the bitmap alone, an allocation after the cursor reached
//! the end of memory searched every word from the start (4096 words a GiB), one at a time:
//! 5-7 ms under TCG with interrupts off, inside a guest's `memory_op` (hostile-pt
//! `mem-batch`), which no preemption of the hypercall could cut short.

use arrayvec::ArrayVec;

use crate::memmap::{MAX_RANGES, PAGE_SIZE, Range};

/// Why a frame could not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// Not a multiple of the frame size.
    Unaligned(u64),
    /// Not memory the allocator manages.
    OutOfRange(u64),
    /// Already free: a double free, or a frame that was never allocated.
    AlreadyFree(u64),
}

/// Hands out and takes back physical frames.
pub struct FrameAllocator<'a> {
    /// Bit `i` set: frame `i` (physical address `i * PAGE_SIZE`) is free.
    bitmap: &'a mut [u64],
    /// Bit `j` of word `i` set: bitmap word `i * 64 + j` has a free frame.
    summary: &'a mut [u64],
    /// The ranges handed to the allocator: only these frames may ever be freed.
    managed: ArrayVec<Range, MAX_RANGES>,
    free: usize,
    /// Bitmap word to start the next search at: allocation takes the first free frame in
    /// the summary word that covers it or after, wrapping.
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Words of storage needed for memory up to `end` (exclusive) bytes: the bitmap and its
    /// summary.
    pub fn bitmap_words(end: u64) -> usize {
        let words = Self::words(end);
        words + words.div_ceil(64)
    }

    fn words(end: u64) -> usize {
        end.div_ceil(PAGE_SIZE).div_ceil(64) as usize
    }

    /// An allocator with no free frame yet for memory up to `end` bytes, over `storage` of
    /// at least [`Self::bitmap_words`]`(end)` words.
    pub fn new(storage: &'a mut [u64], end: u64) -> FrameAllocator<'a> {
        storage.fill(0);
        let words = Self::words(end);
        let (bitmap, summary) = storage.split_at_mut(words);
        let summary = &mut summary[..words.div_ceil(64)];
        FrameAllocator {
            bitmap,
            summary,
            free: 0,
            managed: ArrayVec::new(),
            hint: 0,
        }
    }

    /// Frame `frame` becomes free in both levels.
    fn set_free(&mut self, frame: u64) {
        let word = frame as usize / 64;
        self.bitmap[word] |= 1 << (frame % 64);
        self.summary[word / 64] |= 1 << (word % 64);
        self.free += 1;
    }

    /// Hands the frames of `[start, end)` (page-aligned, disjoint from earlier ranges) to
    /// the allocator. Frames past the bitmap's reach, or past [`MAX_RANGES`] ranges, are
    /// left out.
    pub fn add_range(&mut self, start: u64, end: u64) {
        let end = end.min(self.bitmap.len() as u64 * 64 * PAGE_SIZE);
        let overlaps = self.managed.iter().any(|r| start < r.end && r.start < end);
        if start >= end || overlaps || self.managed.try_push(Range { start, end }).is_err() {
            return;
        }
        for frame in (start / PAGE_SIZE)..(end / PAGE_SIZE) {
            self.set_free(frame);
        }
    }

    /// Takes one free frame and returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        let groups = self.summary.len();
        for k in 0..groups {
            let group = (self.hint / 64 + k) % groups;
            let has = self.summary[group];
            if has == 0 {
                continue;
            }
            let word = group * 64 + has.trailing_zeros() as usize;
            let bits = self.bitmap[word];
            debug_assert!(bits != 0, "summary bit of a full word");
            let bit = bits.trailing_zeros() as u64;
            self.bitmap[word] &= !(1 << bit);
            if self.bitmap[word] == 0 {
                self.summary[group] &= !(1 << (word % 64));
            }
            self.free -= 1;
            self.hint = word;
            return Some((word as u64 * 64 + bit) * PAGE_SIZE);
        }
        None
    }

    /// Returns a frame to the pool.
    pub fn free(&mut self, phys: u64) -> Result<(), FreeError> {
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(FreeError::Unaligned(phys));
        }
        if !self
            .managed
            .iter()
            .any(|r| (r.start..r.end).contains(&phys))
        {
            return Err(FreeError::OutOfRange(phys));
        }
        let frame = phys / PAGE_SIZE;
        if self.bitmap[frame as usize / 64] & (1 << (frame % 64)) != 0 {
            return Err(FreeError::AlreadyFree(phys));
        }
        self.set_free(frame);
        Ok(())
    }

    /// Frames free now.
    pub fn free_frames(&self) -> usize {
        self.free
    }

    /// Frames ever handed to the allocator.
    pub fn managed_frames(&self) -> usize {
        self.managed
            .iter()
            .map(|r| (r.len() / PAGE_SIZE) as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::collections::HashSet;
    use std::vec;

    #[test]
    fn hands_out_each_frame_once_then_runs_dry() {
        let mut bitmap = vec![0u64; FrameAllocator::bitmap_words(0x200000)];
        let mut frames = FrameAllocator::new(&mut bitmap, 0x200000);
        frames.add_range(0x100000, 0x140000);
        assert_eq!(frames.free_frames(), 64);
        let mut seen = HashSet::new();
        while let Some(f) = frames.alloc() {
            assert!((0x100000..0x140000).contains(&f) && f % PAGE_SIZE == 0);
            assert!(seen.insert(f), "frame {f:#x} handed out twice");
        }
        assert_eq!(seen.len(), 64);
        assert_eq!(frames.free_frames(), 0);
    }

    #[test]
    fn free_returns_frames_and_catches_mistakes() {
        let mut bitmap = vec![0u64; FrameAllocator::bitmap_words(0x10000)];
        let mut frames = FrameAllocator::new(&mut bitmap, 0x10000);
        frames.add_range(0, 0x10000);
        let a = frames.alloc().unwrap();
        let b = frames.alloc().unwrap();
        assert_eq!(frames.free_frames(), 14);
        assert_eq!(frames.free(a), Ok(()));
        assert_eq!(frames.free(a), Err(FreeError::AlreadyFree(a)));
        assert_eq!(frames.free(b + 1), Err(FreeError::Unaligned(b + 1)));
        assert_eq!(
            frames.free(0x100_0000),
            Err(FreeError::OutOfRange(0x100_0000))
        );
        assert_eq!(frames.free(b), Ok(()));
        assert_eq!(frames.free_frames(), frames.managed_frames());
    }

    #[test]
    fn frames_outside_added_ranges_are_never_handed_out() {
        let mut bitmap = vec![0u64; FrameAllocator::bitmap_words(0x100000)];
        let mut frames = FrameAllocator::new(&mut bitmap, 0x100000);
        frames.add_range(0x3000, 0x5000);
        frames.add_range(0x3000, 0x5000);
        assert_eq!(frames.managed_frames(), 2);
        let got = [frames.alloc().unwrap(), frames.alloc().unwrap()];
        assert!(got.contains(&0x3000) && got.contains(&0x4000));
        assert_eq!(frames.alloc(), None);
        assert_eq!(frames.free(0x8000), Err(FreeError::OutOfRange(0x8000)));
        assert_eq!(frames.free(0x3000), Ok(()));
        assert_eq!(frames.free(0x3000), Err(FreeError::AlreadyFree(0x3000)));
    }

    #[test]
    fn frees_and_allocations_in_any_order_keep_both_levels_true() {
        // 1 GiB with a hole, frames taken and given back in a pseudo-random pattern (the
        // summary must name exactly the words with a free frame, or a free frame is lost
        // or a taken one handed out again).
        let end = 1u64 << 30;
        let mut bitmap = vec![0u64; FrameAllocator::bitmap_words(end)];
        let mut frames = FrameAllocator::new(&mut bitmap, end);
        frames.add_range(0x10_0000, 0x2000_0000);
        frames.add_range(0x2100_0000, end);
        let total = frames.free_frames();
        let mut held = std::vec::Vec::new();
        let mut seen = HashSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || held.is_empty() {
                let f = frames.alloc().expect("frames left");
                assert!(
                    seen.insert(f),
                    "frame {f:#x} handed out twice (round {round})"
                );
                assert!(!(0x2000_0000..0x2100_0000).contains(&f));
                held.push(f);
            } else {
                let f = held.swap_remove((x >> 8) as usize % held.len());
                assert_eq!(frames.free(f), Ok(()));
                seen.remove(&f);
            }
        }
        assert_eq!(frames.free_frames() + held.len(), total);
        while let Some(f) = frames.alloc() {
            assert!(seen.insert(f), "frame {f:#x} handed out twice");
        }
        assert_eq!(seen.len(), total);
    }
}
