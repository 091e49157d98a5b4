//! The physical memory map: what the firmware says is RAM, minus what is already in use.
//!
//! Firmware maps come unsorted, with unaligned edges, and sometimes with usable and
//! reserved ranges that overlap; reserved wins. The result is a sorted list of page-aligned,
//! disjoint usable ranges from which the boot code carves what it needs (the frame bitmap,
//! the heap) before handing the rest to the frame allocator.

use arrayvec::ArrayVec;

/// The size of a physical frame and of a small page.
pub const PAGE_SIZE: u64 = 4096;

/// Most distinct usable ranges kept; real maps have a handful.
pub const MAX_RANGES: usize = 128;

/// What a firmware map entry says about a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
}

impl RegionKind {
    /// Interprets an E820 type, as PVH's memory map and multiboot2 use them.
    pub fn from_e820(kind: u32) -> RegionKind {
        match kind {
            1 => RegionKind::Usable,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Bad,
            _ => RegionKind::Reserved,
        }
    }
}

/// One firmware map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub kind: RegionKind,
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Sorted, disjoint, page-aligned usable ranges.
#[derive(Clone, Debug, Default)]
pub struct UsableMap {
    ranges: ArrayVec<Range, MAX_RANGES>,
}

fn align_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

fn align_down(x: u64, align: u64) -> u64 {
    x / align * align
}

impl UsableMap {
    /// Builds the map from firmware entries: usable ranges shrunk to whole pages, merged,
    /// then every non-usable entry punched out.
    pub fn from_regions(regions: impl Iterator<Item = Region> + Clone) -> UsableMap {
        let mut map = UsableMap::default();
        for r in regions.clone().filter(|r| r.kind == RegionKind::Usable) {
            let start = align_up(r.start, PAGE_SIZE);
            let end = align_down(r.start.saturating_add(r.len), PAGE_SIZE);
            if start < end {
                map.insert(Range { start, end });
            }
        }
        for r in regions.filter(|r| r.kind != RegionKind::Usable) {
            map.reserve(r.start, r.start.saturating_add(r.len));
        }
        map
    }

    /// Adds a range, merging it with neighbours it touches or overlaps.
    fn insert(&mut self, mut new: Range) {
        let mut merged = ArrayVec::<Range, MAX_RANGES>::new();
        for r in self.ranges.drain(..) {
            if r.end < new.start || new.end < r.start {
                merged.push(r);
            } else {
                new = Range {
                    start: new.start.min(r.start),
                    end: new.end.max(r.end),
                };
            }
        }
        if merged.try_push(new).is_err() {
            // Past MAX_RANGES the smallest ranges are dropped: losing a sliver of RAM is
            // better than failing the boot.
            merged.sort_unstable_by_key(|r| core::cmp::Reverse(r.len()));
            merged.pop();
            merged.push(new);
        }
        merged.sort_unstable_by_key(|r| r.start);
        self.ranges = merged;
    }

    /// Removes `[start, end)` (widened to whole pages) from the usable ranges.
    pub fn reserve(&mut self, start: u64, end: u64) {
        let start = align_down(start, PAGE_SIZE);
        let end = align_up(end, PAGE_SIZE);
        let mut kept = ArrayVec::<Range, MAX_RANGES>::new();
        for r in self.ranges.drain(..) {
            let below = Range {
                start: r.start,
                end: r.end.min(start),
            };
            let above = Range {
                start: r.start.max(end),
                end: r.end,
            };
            for piece in [below, above] {
                if !piece.is_empty() {
                    // Splitting one range adds at most one; drop a sliver if ever full.
                    let _ = kept.try_push(piece);
                }
            }
        }
        self.ranges = kept;
    }

    /// Carves `len` bytes aligned to `align` (a power of two, at least a page) out of the
    /// lowest range that can hold them at or above `min_start`, and returns the start.
    pub fn take(&mut self, len: u64, align: u64, min_start: u64) -> Option<u64> {
        let len = align_up(len, PAGE_SIZE);
        let start = self.ranges.iter().find_map(|r| {
            let start = align_up(r.start.max(min_start), align);
            (start.checked_add(len)? <= r.end).then_some(start)
        })?;
        self.reserve(start, start + len);
        Some(start)
    }

    /// The usable ranges, sorted.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Total usable bytes.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(Range::len).sum()
    }

    /// One past the highest usable byte (0 for an empty map).
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn usable(start: u64, len: u64) -> Region {
        Region {
            start,
            len,
            kind: RegionKind::Usable,
        }
    }

    fn reserved(start: u64, len: u64) -> Region {
        Region {
            start,
            len,
            kind: RegionKind::Reserved,
        }
    }

    fn ranges(map: &UsableMap) -> Vec<(u64, u64)> {
        map.ranges().iter().map(|r| (r.start, r.end)).collect()
    }

    /// QEMU's PVH map for `-m 512` on `pc`, as the hypervisor receives it.
    fn qemu_pc_512() -> [Region; 4] {
        [
            usable(0, 0x9fc00),
            reserved(0x9fc00, 0x400),
            reserved(0xf0000, 0x10000),
            usable(0x100000, 0x1fee0000),
        ]
    }

    #[test]
    fn qemu_map_gives_aligned_ranges() {
        let map = UsableMap::from_regions(qemu_pc_512().into_iter());
        assert_eq!(ranges(&map), [(0, 0x9f000), (0x100000, 0x1ffe0000)]);
        assert_eq!(map.end(), 0x1ffe0000);
    }

    #[test]
    fn unsorted_overlapping_usable_entries_merge() {
        let map = UsableMap::from_regions(
            [
                usable(0x200000, 0x100000),
                usable(0x100000, 0x180000),
                usable(0x10_0000_0000, 0x1000),
            ]
            .into_iter(),
        );
        assert_eq!(
            ranges(&map),
            [(0x100000, 0x300000), (0x10_0000_0000, 0x10_0000_1000)]
        );
    }

    #[test]
    fn reserved_wins_over_usable() {
        let map = UsableMap::from_regions(
            [usable(0x100000, 0x100000), reserved(0x150800, 0x10)].into_iter(),
        );
        assert_eq!(ranges(&map), [(0x100000, 0x150000), (0x151000, 0x200000)]);
    }

    #[test]
    fn take_carves_aligned_space_and_never_hands_it_out_twice() {
        let mut map = UsableMap::from_regions(qemu_pc_512().into_iter());
        let before = map.total();
        let a = map.take(0x5000, 0x200000, 0x100000).unwrap();
        assert_eq!(a, 0x200000);
        let b = map.take(0x5000, 0x1000, 0x100000).unwrap();
        assert_eq!(b, 0x100000);
        let c = map.take(0x1000, 0x1000, 0x100000).unwrap();
        assert_eq!(c, 0x105000);
        assert_eq!(map.total(), before - 0xb000);
        assert!(map.take(0x4000_0000, 0x1000, 0).is_none());
    }

    #[test]
    fn e820_types() {
        assert_eq!(RegionKind::from_e820(1), RegionKind::Usable);
        assert_eq!(RegionKind::from_e820(3), RegionKind::AcpiReclaimable);
        assert_eq!(RegionKind::from_e820(17), RegionKind::Reserved);
    }
}
