//! The guest's view of its own page tables: it reads them (mapped read-only at
//! `abi::layout::PT_WINDOW`, listed in the shared-info page's `MemoryInfo`) and changes them
//! only through the hypervisor, by naming the machine address of the entry to write, as a Xen
//! PV guest does.

use core::ptr::addr_of;

use abi::layout;
use abi::mm::pte;
use abi::shared::MemoryInfo;

fn memory_info() -> &'static MemoryInfo {
    // SAFETY: the shared-info page is mapped read-only for the domain's whole life and the
    // hypervisor writes `memory` once, before the domain starts.
    unsafe { &*addr_of!((*crate::shared::info()).memory) }
}

/// Machine address of the level-4 table.
pub fn root() -> u64 {
    memory_info().pt_root
}

/// The most frames this domain may hold.
pub fn frames_limit() -> u64 {
    memory_info().frames_limit
}

/// Where the page table at machine address `table` can be read, if it is in the window.
fn window_of(table: u64) -> Option<*const u64> {
    let info = memory_info();
    let count = (info.pt_count as usize).min(info.pt_window.len());
    info.pt_window[..count]
        .iter()
        .position(|&t| t == table)
        .map(|i| (layout::PT_WINDOW + i as u64 * 4096) as *const u64)
}

/// Entry `index` of the page table at machine address `table` (one of those the hypervisor
/// built, which the window shows).
pub fn read_entry(table: u64, index: usize) -> Option<u64> {
    let at = window_of(table)?;
    // SAFETY: the window page is mapped read-only for the domain's life and holds one page
    // table (512 entries); the hypervisor changes entries with atomic 8-byte stores.
    Some(unsafe { at.add(index % 512).read_volatile() })
}

/// The index of `va`'s entry at `level` (4 = the root .. 1).
pub fn index_at(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Machine address of the table at `level` (3..1) on the way to `va`, walking from the root
/// through the window.
pub fn table_for(va: u64, level: u32) -> Option<u64> {
    let mut table = root();
    for l in ((level + 1)..=4).rev() {
        let e = read_entry(table, index_at(va, l))?;
        if e & pte::PRESENT == 0 {
            return None;
        }
        table = e & pte::ADDRESS;
    }
    Some(table)
}

/// Machine address of the level-`level` entry on the way to `va` (what `mmu_update` takes).
pub fn entry_address(va: u64, level: u32) -> Option<u64> {
    let table = if level == 4 {
        root()
    } else {
        table_for(va, level)?
    };
    Some(table + index_at(va, level) as u64 * 8)
}

/// A level-1 entry mapping frame `mfn` for the guest: present, user, no-execute, and
/// writable if asked.
pub fn leaf(mfn: u64, writable: bool) -> u64 {
    (mfn << 12)
        | pte::PRESENT
        | pte::USER
        | pte::NO_EXECUTE
        | if writable { pte::WRITABLE } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_split_an_address() {
        let va = layout::MAP_AREA + 5 * 4096;
        assert_eq!(index_at(va, 1), 5);
        assert_eq!(index_at(va, 2), 0x180);
        assert_eq!(index_at(va, 3), 0);
        assert_eq!(index_at(va, 4), 0);
        assert_eq!(index_at(0x7fff_ffff_f000, 4), 255);
    }

    #[test]
    fn leaves_carry_the_frame_and_flags() {
        let e = leaf(0x1234, true);
        assert_eq!(e & pte::ADDRESS, 0x1234 << 12);
        assert_ne!(e & pte::WRITABLE, 0);
        assert_eq!(leaf(1, false) & pte::WRITABLE, 0);
        assert_eq!(e & !pte::GUEST_ALLOWED, 0);
    }
}
