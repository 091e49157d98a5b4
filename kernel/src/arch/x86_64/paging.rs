//! The hypervisor's view of physical memory.
//!
//! All physical memory is mapped at [`PHYS_OFFSET`] (the direct map, as Linux's physmap):
//! the boot code maps the first 4 GiB with 2 MiB pages, and [`extend_direct_map`] adds the
//! rest. Physical addresses are turned into pointers only through [`phys_to_virt`].

use kerncore::frame_table::TableMemory;
use x86_64::VirtAddr;

/// Where physical address 0 appears in every address space (the first upper-half slot).
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;

/// Bytes the boot page tables map in the direct map.
pub const BOOT_DIRECT_MAP_BYTES: u64 = 4 << 30;

/// The slot of the direct map's PDPT that the boot code points at the image's page
/// directory (`KERNEL_VMA`'s PDPT slot: the image's PML4 slot shares the PDPT, `boot.rs`).
const IMAGE_PDPT_SLOT: u64 = 510;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;

/// The direct-map address of physical address `phys`.
pub fn phys_to_virt(phys: u64) -> VirtAddr {
    VirtAddr::new(PHYS_OFFSET + phys)
}

/// Extends the direct map up to `end` bytes of physical memory with 2 MiB pages, taking the
/// page directories it needs from `take_frame` (every entry of each is written here).
///
/// Covers at most 510 GiB (one PML4 slot but its last two PDPT slots, the image's, see
/// `boot.rs`), far more than any QEMU configuration we run uses; anything beyond is left
/// unmapped and reported by the return value (the bytes mapped).
///
/// # Safety
/// Called once, at boot, before any other CPU runs; every frame `take_frame` returns is
/// free RAM below [`BOOT_DIRECT_MAP_BYTES`] that nothing else uses, now or later.
pub(super) unsafe fn extend_direct_map(
    end: u64,
    mut take_frame: impl FnMut() -> Option<u64>,
) -> u64 {
    let pml4 = crate::arch::boot::boot_pml4_phys();
    // SAFETY: the boot PML4 and the PDPT its direct-map slot points to are page tables the
    // boot code built in identity-mapped memory that nothing else uses; entries are only
    // added for memory not mapped before, so no live translation changes; the new page
    // directories are the caller's free frames, already direct-mapped.
    unsafe {
        let pml4 = phys_to_virt(pml4).as_mut_ptr::<u64>();
        let pdpt_phys = *pml4.add(256) & 0x000f_ffff_ffff_f000;
        let pdpt = phys_to_virt(pdpt_phys).as_mut_ptr::<u64>();
        let gib = end.div_ceil(1 << 30).min(IMAGE_PDPT_SLOT);
        for slot in (BOOT_DIRECT_MAP_BYTES >> 30)..gib {
            let Some(pd_phys) = take_frame() else {
                return slot << 30;
            };
            let pd = phys_to_virt(pd_phys).as_mut_ptr::<u64>();
            for i in 0..512u64 {
                *pd.add(i as usize) =
                    ((slot << 30) + (i << 21)) | PRESENT | WRITABLE | HUGE | GLOBAL;
            }
            *pdpt.add(slot as usize) = pd_phys | PRESENT | WRITABLE;
        }
        gib.max(BOOT_DIRECT_MAP_BYTES >> 30) << 30
    }
}

/// Page-table entries read and written through the direct map: the frame table's access to
/// the tables it validates (`kerncore::frame_table::TableMemory`).
///
/// Sound because of the frame table's contract: it names only frames it covers, which are
/// direct-mapped RAM, and writes only tables it has validated or is validating, which no
/// guest can write (a validated table is never mapped writable) and which only the CPU
/// holding the table's lock touches.
pub struct DirectMap;

impl TableMemory for DirectMap {
    fn read(&self, mfn: u64, index: usize) -> u64 {
        // SAFETY: a frame the frame table covers is direct-mapped RAM; `index % 512` keeps
        // the access inside the frame; an aligned 8-byte load is atomic, and the volatile
        // read makes no claim on what else may write the word.
        unsafe {
            phys_to_virt(mfn << 12)
                .as_ptr::<u64>()
                .add(index % 512)
                .read_volatile()
        }
    }

    fn write(&mut self, mfn: u64, index: usize, value: u64) {
        // SAFETY: as in `read`; the frame is a page table the frame table validated (or is
        // validating), which only the hypervisor writes, and only the CPU holding its lock
        // (or validating it) at that; an aligned 8-byte store is atomic for the page walker.
        unsafe {
            phys_to_virt(mfn << 12)
                .as_mut_ptr::<u64>()
                .add(index % 512)
                .write_volatile(value)
        }
    }
}
