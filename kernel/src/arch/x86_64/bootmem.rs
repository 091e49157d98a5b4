//! Physical memory at boot: the usable map, from which the heap and the frame bitmap are
//! carved as Rust slices and whose rest goes to the frame allocator, and the boot module.
//!
//! What the image, the boot information, the boot module and the real-mode area (AP
//! trampoline) occupy is taken out of the firmware's map first, and the direct map is
//! extended over all of the rest. The map is then the one owner of free RAM: each piece
//! [`BootMemory`] hands out is removed from it, so no two owners ever share a byte, and
//! what remains at the end ([`BootMemory::into_ranges`]) goes to the frame allocator as
//! physical addresses, never as references.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use arrayvec::ArrayVec;
use kerncore::memmap::{MAX_RANGES, PAGE_SIZE, Range, UsableMap};

use super::bootinfo::BootInfo;
use super::paging::{BOOT_DIRECT_MAP_BYTES, extend_direct_map, phys_to_virt};

unsafe extern "C" {
    static __image_phys_start: u8;
    static __image_phys_end: u8;
}

/// The real-mode area below 1 MiB is never handed out: the AP trampoline lives there.
pub const LOW_MEMORY_END: u64 = 0x10_0000;

/// Set once the map is claimed.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Whether [`BootMemory::claim`] ran (so the real-mode area is kept from every allocator).
pub(super) fn claimed() -> bool {
    CLAIMED.load(Ordering::Acquire)
}

/// The machine's free RAM at boot.
pub struct BootMemory {
    map: UsableMap,
    usable_bytes: u64,
    module: Option<&'static [u8]>,
}

/// The physical range the hypervisor image occupies.
fn image() -> Range {
    Range {
        start: &raw const __image_phys_start as u64,
        end: &raw const __image_phys_end as u64,
    }
}

fn overlaps(a: Range, b: Range) -> bool {
    a.start < b.end && b.start < a.end
}

impl BootMemory {
    /// Takes the usable RAM the boot information describes, less the real-mode area, the
    /// image, the boot information and the boot module, and extends the direct map over it.
    ///
    /// # Panics
    /// On a second call: there is one owner of free RAM.
    pub fn claim(info: &BootInfo) -> BootMemory {
        assert!(
            !CLAIMED.swap(true, Ordering::AcqRel),
            "boot memory is claimed once"
        );
        let mut map = UsableMap::from_regions(info.regions.iter().copied());
        let usable_bytes = map.total();
        map.reserve(0, LOW_MEMORY_END);
        map.reserve(image().start, image().end);
        map.reserve(info.info.start, info.info.end);
        if let Some(module) = info.module {
            map.reserve(module.start, module.end);
        }

        let end = map.end();
        // SAFETY: each frame is taken out of the usable map, so it is free RAM that nothing
        // else uses now or later, and lies in the boot direct map (checked; `take` is
        // lowest-first, so one above it means there is no room below); this runs once
        // (`CLAIMED`), on the bootstrap CPU before any other runs.
        let mapped = unsafe {
            extend_direct_map(end, || {
                map.take(PAGE_SIZE, PAGE_SIZE, LOW_MEMORY_END)
                    .filter(|&pd| pd + PAGE_SIZE <= BOOT_DIRECT_MAP_BYTES)
            })
        };
        if mapped < end {
            log::warn!(
                "only the first {} GiB of memory are mapped; {} MiB are unused",
                mapped >> 30,
                (end - mapped) >> 20
            );
            map.reserve(mapped, end);
        }

        let module = info.module.and_then(|m| {
            let low = Range {
                start: 0,
                end: LOW_MEMORY_END,
            };
            let sane = m.start <= m.end
                && m.end <= mapped
                && !overlaps(m, low)
                && !overlaps(m, image())
                && !overlaps(m, info.info);
            if !sane {
                log::error!(
                    "the boot module at {:#x}..{:#x} overlaps the hypervisor or is not mapped: ignored",
                    m.start,
                    m.end
                );
                return None;
            }
            // SAFETY: the loader placed the module at `m`; it was reserved above, so the map
            // never hands it out and nothing of the hypervisor (image, low memory, boot
            // information: checked) lies in it; it is direct-mapped (below `mapped`). Nothing
            // writes it for the rest of the run, so a shared `'static` slice is sound.
            Some(unsafe {
                core::slice::from_raw_parts(phys_to_virt(m.start).as_ptr::<u8>(), m.len() as usize)
            })
        });
        BootMemory {
            map,
            usable_bytes,
            module,
        }
    }

    /// Usable bytes the firmware reported, before anything was taken.
    pub fn usable_bytes(&self) -> u64 {
        self.usable_bytes
    }

    /// One past the highest usable byte left.
    pub fn end(&self) -> u64 {
        self.map.end()
    }

    /// The boot module's bytes (the loader's first module), if there is one.
    pub fn module(&self) -> Option<&'static [u8]> {
        self.module
    }

    /// Takes `bytes` (rounded up to whole pages) aligned to `align` (a power of two, at
    /// least a page) for the rest of the run, uninitialised.
    pub fn take_bytes(&mut self, bytes: u64, align: u64) -> Option<&'static mut [MaybeUninit<u8>]> {
        let len = usize::try_from(bytes).ok()?;
        let phys = self.map.take(bytes, align.max(PAGE_SIZE), LOW_MEMORY_END)?;
        // SAFETY: the range was just taken out of the usable map, the one owner of free RAM
        // (see the module doc): nothing else refers to it, now or later. It is direct-mapped
        // (unmapped memory was reserved in `claim`). `MaybeUninit` needs no initial value.
        Some(unsafe {
            core::slice::from_raw_parts_mut(phys_to_virt(phys).as_mut_ptr::<MaybeUninit<u8>>(), len)
        })
    }

    /// Takes `words` zeroed 8-byte words, page-aligned, for the rest of the run.
    pub fn take_words(&mut self, words: usize) -> Option<&'static mut [u64]> {
        let bytes = words.checked_mul(8)?;
        let phys = self.map.take(bytes as u64, PAGE_SIZE, LOW_MEMORY_END)?;
        let at = phys_to_virt(phys).as_mut_ptr::<u64>();
        // SAFETY: as in `take_bytes`; the range is page-aligned, so 8-byte aligned, and is
        // zeroed before the slice is made, so every word is initialised.
        Some(unsafe {
            at.write_bytes(0, words);
            core::slice::from_raw_parts_mut(at, words)
        })
    }

    /// What is left, for the frame allocator: physical ranges, sorted and disjoint.
    pub fn into_ranges(self) -> ArrayVec<Range, MAX_RANGES> {
        self.map.ranges().iter().copied().collect()
    }
}
