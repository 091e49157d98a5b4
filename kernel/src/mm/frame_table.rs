//! The frame table over real memory: one `kerncore::frame_table::FrameTable` (owners, page
//! types, reference counts; Xen's `mm.c` rules), its page-table entries read and written
//! through the direct map, and what domain creation and death do with it (adopt a built
//! address space, tear one down). The hypercalls that change it are in `pv/mmu.rs`.
//!
//! One lock guards the frame table. It is never held while waiting for another CPU: a TLB
//! shootdown waits for every CPU running the domain to flush, and such a CPU may be spinning
//! on that lock with interrupts off. So updates are applied under the lock, and flushes
//! happen between them, with no lock held.

use alloc::vec::Vec;

use abi::control::DomainId;
use abi::error::Errno;
use kerncore::frame_table::{FrameTable, MmError, TableMemory};
use spin::Mutex;

use crate::arch::paging::phys_to_virt;
use crate::mm::frames;

static TABLE: Mutex<Option<FrameTable>> = Mutex::new(None);

/// Page-table entries through the direct map.
pub struct DirectMap;

impl TableMemory for DirectMap {
    fn read(&self, mfn: u64, index: usize) -> u64 {
        // SAFETY: the frame table only names frames it covers, which are direct-mapped RAM;
        // `index` < 512 keeps the access inside the frame; aligned 8-byte loads are atomic.
        unsafe {
            phys_to_virt(mfn << 12)
                .as_ptr::<u64>()
                .add(index % 512)
                .read_volatile()
        }
    }

    fn write(&mut self, mfn: u64, index: usize, value: u64) {
        // SAFETY: as in `read`; the frame is a page table the frame table validated (or is
        // validating), which only the hypervisor writes, under the frame-table lock; an
        // aligned 8-byte store is atomic for the page walker.
        unsafe {
            phys_to_virt(mfn << 12)
                .as_mut_ptr::<u64>()
                .add(index % 512)
                .write_volatile(value)
        }
    }
}

/// Sets up the frame table for physical memory below `end`.
pub fn init(end: u64) {
    *TABLE.lock() = Some(FrameTable::new(0, (end >> 12) as usize));
}

/// Runs `f` on the frame table, under its lock.
pub fn with<R>(f: impl FnOnce(&mut FrameTable, &mut DirectMap) -> R) -> R {
    let mut table = TABLE.lock();
    f(
        table.as_mut().expect("frame table set up at boot"),
        &mut DirectMap,
    )
}

/// Frees frames the frame table says nobody holds any more. Callers flush TLBs first.
pub fn free_all(frames: impl IntoIterator<Item = u64>) {
    for mfn in frames {
        if let Err(e) = frames::free_frame(mfn << 12) {
            log::error!("frame {mfn:#x} could not be freed: {e:?}");
        }
    }
}

/// Records a freshly built address space's frames as `owner`'s and validates and pins its
/// tables. Frames in `hv_readonly` are pages only the hypervisor writes (the guest may map
/// them read-only); frames in `hv_held` are pages the hypervisor keeps writing through the
/// direct map for the domain's whole life (shared info, counters): it holds a reference on
/// each, so the guest can never give them back, even unmapped. On failure the frames are
/// plain allocations again (the caller drops the space).
pub fn adopt(
    owner: DomainId,
    pml4: u64,
    frames: &[u64],
    hv_readonly: &[u64],
    hv_held: &[u64],
) -> Result<(), MmError> {
    with(|t, mem| {
        for (i, &f) in frames.iter().enumerate() {
            if let Err(e) = t.assign(f >> 12, owner, hv_readonly.contains(&f)) {
                for &g in &frames[..i] {
                    let _ = t.release(g >> 12, owner);
                }
                return Err(e);
            }
        }
        if let Err(e) = t.pin_root(owner, pml4 >> 12, mem) {
            for &g in frames {
                let _ = t.release(g >> 12, owner);
            }
            return Err(e);
        }
        for &f in hv_held {
            t.get_page(f >> 12, owner)
                .expect("a frame of the address space just assigned");
        }
        Ok(())
    })
}

/// A dead domain's address space: the hypervisor's own references go, every reference its
/// tables held is dropped, and every frame nobody else holds is freed (its vCPUs run
/// nowhere: no TLB can reach them).
pub fn teardown(owner: DomainId, pml4: u64, frames: &[u64], hv_held: &[u64]) {
    let mfns: Vec<u64> = frames.iter().map(|f| f >> 12).collect();
    let freed = with(|t, mem| {
        for &f in hv_held {
            // Never the last reference: the allocation reference is dropped below.
            let _ = t.put_page(f >> 12);
        }
        t.teardown(owner, pml4 >> 12, &mfns, mem)
    });
    free_all(freed);
}

/// An error of the frame table as a hypercall's.
pub fn errno(e: MmError) -> Errno {
    match e {
        MmError::Busy => Errno::Busy,
        MmError::NotOwner => Errno::Perm,
        MmError::TooManyTables => Errno::NoMem,
        _ => Errno::Inval,
    }
}
