//! Machine memory: the heap and the frame allocator over the usable map (`frames`) and the
//! frame table over real memory (`frame_table`).
//!
//! See this folder's README for what it may use.

pub mod frame_table;
pub mod frames;

use abi::control::DomainId;
use kerncore::frame_table::MmError;

use crate::arch::addrspace::FrameSource;

/// Real memory, as the frame source of guest address spaces: the frame allocator and the
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

    fn adopt(
        &self,
        owner: DomainId,
        pml4: u64,
        frames: &[u64],
        hv_readonly: &[u64],
        hv_held: &[u64],
    ) -> Result<(), MmError> {
        frame_table::adopt(owner, pml4, frames, hv_readonly, hv_held)
    }

    fn teardown(&self, owner: DomainId, pml4: u64, frames: &[u64]) {
        // The held frames' own references go with their `HeldPage`s (`put`), not here.
        frame_table::teardown(owner, pml4, frames, &[]);
    }

    fn put(&self, phys: u64) {
        if frame_table::table().put_page(phys >> 12) {
            frame_table::free_all([phys >> 12]);
        }
    }
}
