//! Guest memory management: the hypervisor's frame table (`kerncore::frame_table`, the rules) over real
//! memory, TLB shootdowns, and the hypercalls that change a guest's page tables
//! (`mmu_update`, `update_va_mapping`) and its reservation (`memory_op`).
//!
//! One lock guards the frame table. It is never held while waiting for another CPU: a TLB
//! shootdown waits for every CPU running the domain to flush, and such a CPU may be spinning
//! on that lock with interrupts off. So updates are applied under the lock, and flushes
//! happen between them, with no lock held.
//!
//! When a flush is needed (Xen's rule, `mm.c`): an update that removes or replaces a present
//! entry leaves stale translations in the TLBs of CPUs running the domain. Before any later
//! update could give the old target a new type (a data page becoming a page table, or a
//! page table becoming writable), those TLBs are flushed; and always before the hypercall
//! returns, so the guest never sees a stale translation after an update it made, and a
//! frame is never handed back to the allocator while a TLB may still reach it.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use abi::control::DomainId;
use abi::error::Errno;
use abi::hypercall::{MMU_BATCH, MemoryOp};
use abi::layout::USER_LIMIT;
use abi::mm::MmuUpdate;
use kerncore::frame_table::{FrameTable, MmError, TableMemory};
use spin::Mutex;

use crate::arch::paging::phys_to_virt;
use crate::domain::{self, Domain, NOT_RUNNING, Vcpu};
use crate::mm::frames;
use crate::pv::hypercall::{copy_from_guest, copy_to_guest};

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
fn free_all(frames: impl IntoIterator<Item = u64>) {
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

fn flush_this_cpu(_: usize) {
    x86_64::instructions::tlb::flush_all();
}

/// Flushes the TLB of every CPU that may hold translations of `domain`'s address space:
/// those running one of its vCPUs. (A CPU with its CR3 loaded always has one of its vCPUs
/// claimed in `running_on`: `switch_in` claims the next vCPU before releasing the previous
/// one, and loads the hypervisor's CR3 before releasing otherwise.) Waits until each has.
pub fn flush_domain(domain: &Domain) {
    let me = smp::percpu::cpu_index();
    let mut done = smp::startup::CpuSet::new();
    for v in &domain.vcpus {
        let cpu = v.running_on.load(Ordering::Acquire);
        if cpu == NOT_RUNNING || done.contains(cpu) {
            continue;
        }
        done.insert(cpu);
        if cpu == me {
            flush_this_cpu(0);
        } else {
            smp::ipi::call_on(cpu, flush_this_cpu, 0, true);
        }
    }
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

/// Applies one validated update. Returns whether it left stale translations (the old entry
/// was present).
fn apply(domain: &Domain, update: MmuUpdate) -> Result<bool, Errno> {
    let (stale, freed) = with(|t, mem| {
        let stale = t.update_entry(domain.id, update.ptr, update.val, mem);
        (stale, t.take_freed())
    });
    if !freed.is_empty() {
        flush_domain(domain);
        free_all(freed);
    }
    stale.map_err(|e| {
        log::debug!(
            "domain {}: mmu_update {:#x} <- {:#x} refused: {e}",
            domain.id,
            update.ptr,
            update.val
        );
        errno(e)
    })
}

/// `mmu_update(reqs, count)`.
#[inline(never)] // kept out of the hypercall fast path
pub fn mmu_update(vcpu: &Vcpu, reqs: u64, count: u64) -> Result<u64, Errno> {
    if count == 0 || count > MMU_BATCH {
        return Err(Errno::Inval);
    }
    let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    const CHUNK: usize = 32;
    let size = core::mem::size_of::<MmuUpdate>();
    let mut stale = false;
    let mut done = 0u64;
    let mut result = Ok(());
    'all: while done < count {
        let n = ((count - done) as usize).min(CHUNK);
        let mut buf = [0u8; CHUNK * 16];
        // A fault part-way must still leave through the flush below: updates of earlier
        // chunks may have removed translations (a `?` here once returned with them still
        // in the TLB, and the frame they mapped could then be freed and reused).
        if let Err(e) = copy_from_guest(&mut buf[..n * size], reqs + done * size as u64) {
            result = Err(e);
            break 'all;
        }
        for c in buf[..n * size].chunks_exact(size) {
            let word = |i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap());
            let update = MmuUpdate {
                ptr: word(0),
                val: word(1),
            };
            // A present entry may retype its target: translations an earlier update left
            // must be gone first.
            if stale && update.val & abi::mm::pte::PRESENT != 0 {
                flush_domain(&domain);
                stale = false;
            }
            match apply(&domain, update) {
                Ok(s) => stale |= s,
                Err(e) => {
                    result = Err(e);
                    break 'all;
                }
            }
            done += 1;
        }
    }
    if stale {
        flush_domain(&domain);
    }
    match result {
        Err(e) if done == 0 => Err(e),
        _ => Ok(done),
    }
}

/// `update_va_mapping(va, pte)`.
#[inline(never)] // kept out of the hypercall fast path
pub fn update_va_mapping(vcpu: &Vcpu, va: u64, pte: u64) -> Result<u64, Errno> {
    if va >= USER_LIMIT {
        return Err(Errno::Inval);
    }
    let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    let (l1, index) = domain
        .life
        .lock()
        .space
        .as_ref()
        .and_then(|s| s.l1_entry(va))
        .ok_or(Errno::Inval)?;
    let stale = apply(
        &domain,
        MmuUpdate {
            ptr: l1 + index as u64 * 8,
            val: pte,
        },
    )?;
    if stale {
        flush_domain(&domain);
    }
    Ok(0)
}

/// `memory_op(op, list, count)`.
#[inline(never)] // kept out of the hypercall fast path
pub fn memory_op(vcpu: &Vcpu, op: u64, list: u64, count: u64) -> Result<u64, Errno> {
    let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    const CHUNK: usize = 64;
    // Bounded work per call (zeroing 512 frames is the most): the caller asks again.
    let count = count.min(abi::hypercall::MMU_BATCH);
    match MemoryOp::from_raw(op).ok_or(Errno::NoSys)? {
        MemoryOp::CurrentReservation => {
            let life = domain.life.lock();
            Ok(life.space.as_ref().map_or(0, |s| s.frames() as u64))
        }
        MemoryOp::MaximumReservation => Ok(domain.frames_limit),
        MemoryOp::IncreaseReservation => {
            let mut done = 0u64;
            while done < count {
                let mut taken = [0u64; CHUNK];
                let mut n = 0;
                {
                    let mut life = domain.life.lock();
                    let space = life.space.as_mut().ok_or(Errno::Srch)?;
                    while n < CHUNK
                        && done + (n as u64) < count
                        && (space.frames() as u64) < domain.frames_limit
                    {
                        let Some(phys) = frames::alloc_frame() else {
                            break;
                        };
                        // SAFETY: a frame just taken from the allocator, direct-mapped,
                        // ours alone until assigned below.
                        unsafe { phys_to_virt(phys).as_mut_ptr::<u8>().write_bytes(0, 4096) };
                        if with(|t, _| t.assign(phys >> 12, domain.id, false)).is_err() {
                            let _ = frames::free_frame(phys);
                            break;
                        }
                        space.push_frame(phys);
                        taken[n] = phys >> 12;
                        n += 1;
                    }
                }
                if n == 0 {
                    break;
                }
                let bytes: Vec<u8> = taken[..n].iter().flat_map(|m| m.to_le_bytes()).collect();
                if let Err(e) = copy_to_guest(list + done * 8, &bytes) {
                    // The guest cannot learn these frames: give them back.
                    let _ = give_back(&domain, &taken[..n]);
                    return if done == 0 { Err(e) } else { Ok(done) };
                }
                done += n as u64;
                if n < CHUNK && done < count {
                    break; // the limit or the machine ran out
                }
            }
            Ok(done)
        }
        MemoryOp::DecreaseReservation => {
            let mut done = 0u64;
            while done < count {
                let n = ((count - done) as usize).min(CHUNK);
                let mut buf = [0u8; CHUNK * 8];
                if let Err(e) = copy_from_guest(&mut buf[..n * 8], list + done * 8) {
                    // What was given back stays given back: say how much.
                    return if done == 0 { Err(e) } else { Ok(done) };
                }
                for c in buf[..n * 8].chunks_exact(8) {
                    let mfn = u64::from_le_bytes(c.try_into().unwrap());
                    if let Err(e) = give_back(&domain, &[mfn]) {
                        return if done == 0 { Err(e) } else { Ok(done) };
                    }
                    done += 1;
                }
            }
            Ok(done)
        }
    }
}

/// Returns frames the domain holds and nothing maps to the allocator.
fn give_back(domain: &Domain, mfns: &[u64]) -> Result<(), Errno> {
    let mut life = domain.life.lock();
    let space = life.space.as_mut().ok_or(Errno::Srch)?;
    for &mfn in mfns {
        with(|t, _| t.release(mfn, domain.id)).map_err(errno)?;
        space.remove_frame(mfn << 12);
        free_all([mfn]);
    }
    Ok(())
}
