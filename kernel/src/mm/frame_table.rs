//! The frame table over real memory: one `kerncore::frame_table::FrameTable` (owners, page
//! types, reference counts; Xen's `mm.c` rules), its page-table entries read and written
//! through the direct map, and what domain creation and death do with it (adopt a built
//! address space, tear one down). The hypercalls that change it are in `pv/mmu.rs`.
//!
//! No lock guards the frame table as a whole: each frame's counts are updated by
//! compare-and-swap, and a page table's entries are rewritten under that table's own lock
//! bit (see "Concurrency" in `kerncore::frame_table`), so updates on different CPUs, to
//! different tables, go on at once. Those per-frame locks are taken and released inside one
//! frame-table call and never held while waiting for another CPU: a TLB shootdown waits for
//! every CPU running the domain to flush, and such a CPU may be spinning on a frame's lock
//! with interrupts off. So flushes happen between frame-table calls, never inside one.

use alloc::vec::Vec;

use abi::control::DomainId;
use abi::error::Errno;
use kerncore::frame_table::{FrameTable, MmError};
use spin::Once;

use crate::arch::addrspace::FrameSource;
use crate::arch::paging::DirectMap;
use crate::mm::frames;

static TABLE: Once<FrameTable> = Once::new();

// Every domain id the hypervisor hands out has its page tables counted.
const _: () = assert!(sched::limits::MAX_DOMAINS <= kerncore::frame_table::DOMAIN_IDS as usize);

/// Sets up the frame table for physical memory below `end`.
pub fn init(end: u64) {
    TABLE.call_once(|| FrameTable::new(0, (end >> 12) as usize));
}

/// The frame table, shared by every CPU.
pub fn table() -> &'static FrameTable {
    TABLE.get().expect("frame table set up at boot")
}

/// Frees frames the frame table says nobody holds any more. Callers flush TLBs first.
pub fn free_all(frames: impl IntoIterator<Item = u64>) {
    for mfn in frames {
        if let Err(e) = frames::free_frame(mfn << 12) {
            log::error!("frame {mfn:#x} could not be freed: {e:?}");
        }
    }
}

/// Real memory, as the frame source of guest address spaces: the frame allocator and this
/// frame table.
pub struct Machine;

/// The one instance domains build their address spaces from.
pub static MACHINE: Machine = Machine;

impl FrameSource for Machine {
    fn alloc(&self) -> Option<u64> {
        frames::alloc_frame()
    }

    fn free(&self, phys: u64) {
        if let Err(e) = frames::free_frame(phys) {
            log::error!("address space frame {phys:#x} could not be freed: {e:?}");
        }
    }

    /// Frames in `hv_readonly` are pages only the hypervisor writes (the guest may map them
    /// read-only); frames in `hv_held` are pages the hypervisor keeps writing through the
    /// direct map for the domain's whole life (shared info, counters): it holds a
    /// reference on each, so the guest can never give them back, even unmapped, nor make
    /// them page tables (its event words written there would become entries). On failure
    /// the frames are plain allocations again (the caller drops the space).
    fn adopt(
        &self,
        owner: DomainId,
        pml4: u64,
        frames: &[u64],
        hv_readonly: &[u64],
        hv_held: &[u64],
    ) -> Result<(), MmError> {
        let t = table();
        for (i, &f) in frames.iter().enumerate() {
            if let Err(e) = t.assign(f >> 12, owner, hv_readonly.contains(&f)) {
                for &g in &frames[..i] {
                    let _ = t.release(g >> 12, owner);
                }
                return Err(e);
            }
        }
        if let Err(e) = t.pin_root(owner, pml4 >> 12, &mut DirectMap) {
            for &g in frames {
                let _ = t.release(g >> 12, owner);
            }
            return Err(e);
        }
        for &f in hv_held {
            // Held for writing: never a page table from now on (its writes would forge
            // entries).
            t.hold(f >> 12, owner)
                .expect("a data frame of the address space just assigned");
        }
        Ok(())
    }

    /// Every reference the dead domain's tables held is dropped, and every frame nobody else
    /// holds is freed (its vCPUs run nowhere: no TLB can reach them). The hypervisor's own
    /// references on held frames go with their `HeldPage`s ([`FrameSource::put`]).
    fn teardown(&self, owner: DomainId, pml4: u64, frames: &[u64]) {
        let mfns: Vec<u64> = frames.iter().map(|f| f >> 12).collect();
        free_all(table().teardown(owner, pml4 >> 12, &mfns, &mut DirectMap));
    }

    fn put(&self, phys: u64) {
        if table().put_page(phys >> 12) {
            free_all([phys >> 12]);
        }
    }

    /// A writable access takes a general and a `Writable` type reference: the frame cannot
    /// become a page table of its owner while the hypervisor writes it (and is refused if it
    /// is one); a read takes a general reference.
    fn access(&self, phys: u64, owner: DomainId, write: bool) -> Result<(), MmError> {
        if write {
            table().get_page_writable(phys >> 12, owner)
        } else {
            table().get_page(phys >> 12, owner)
        }
    }

    fn release_shared(&self, frames: &[u64]) {
        crate::mm::shared_image::release(frames);
    }

    fn end_access(&self, phys: u64, write: bool) {
        let last = if write {
            table().put_page_writable(phys >> 12)
        } else {
            table().put_page(phys >> 12)
        };
        if last {
            free_all([phys >> 12]);
        }
    }
}

/// An error of the frame table as a hypercall's.
pub fn errno(e: MmError) -> Errno {
    match e {
        MmError::Busy => Errno::Busy,
        MmError::NotOwner => Errno::Perm,
        MmError::TooManyTables => Errno::NoMem,
        // Every other refusal is a bad argument, `BadOwner` included (the hypervisor's
        // domain ids are all below `DOMAIN_IDS`: checked at compile time above).
        _ => Errno::Inval,
    }
}
