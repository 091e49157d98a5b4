//! The physical frame allocator: one bit per 4 KiB frame.
//!
//! A bitmap rather than a free list so that every frame's state can be checked: freeing a
//! frame twice, or one that was never handed out, is reported instead of corrupting the
//! pool, and the free count lets tests prove that destroying a domain returned everything.

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
    /// The ranges handed to the allocator: only these frames may ever be freed.
    managed: ArrayVec<Range, MAX_RANGES>,
    free: usize,
    /// Word to start the next search at: allocation is first-fit from here, wrapping.
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Words of bitmap needed for memory up to `end` (exclusive) bytes.
    pub fn bitmap_words(end: u64) -> usize {
        end.div_ceil(PAGE_SIZE).div_ceil(64) as usize
    }

    /// An allocator over `bitmap` with no free frame yet.
    pub fn new(bitmap: &'a mut [u64]) -> FrameAllocator<'a> {
        bitmap.fill(0);
        FrameAllocator {
            bitmap,
            free: 0,
            managed: ArrayVec::new(),
            hint: 0,
        }
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
            self.bitmap[frame as usize / 64] |= 1 << (frame % 64);
            self.free += 1;
        }
    }

    /// Takes one free frame and returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        let words = self.bitmap.len();
        for i in 0..words {
            let word = (self.hint + i) % words;
            let bits = self.bitmap[word];
            if bits != 0 {
                let bit = bits.trailing_zeros() as u64;
                self.bitmap[word] &= !(1 << bit);
                self.free -= 1;
                self.hint = word;
                return Some((word as u64 * 64 + bit) * PAGE_SIZE);
            }
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
        let bit = frame % 64;
        let bits = &mut self.bitmap[frame as usize / 64];
        if *bits & (1 << bit) != 0 {
            return Err(FreeError::AlreadyFree(phys));
        }
        *bits |= 1 << bit;
        self.free += 1;
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
        let mut frames = FrameAllocator::new(&mut bitmap);
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
        let mut frames = FrameAllocator::new(&mut bitmap);
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
        let mut frames = FrameAllocator::new(&mut bitmap);
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
}
