//! The guest's memory hypercalls (Xen's `do_mmu_update`, `do_update_va_mapping` in
//! `arch/x86/mm.c` and `memory_op` in `common/memory.c`): page-table updates validated by
//! the frame table (`crate::mm::frame_table`, rules in `kerncore::frame_table`), and giving
//! frames back to or taking them from the hypervisor.
//!
//! When a flush is needed (Xen's rule, `mm.c`): an update that removes or replaces a present
//! entry leaves stale translations in the TLBs of CPUs running the domain. Before any later
//! update could give the old target a new type (a data page becoming a page table, or a
//! page table becoming writable), those TLBs are flushed; and always before the hypercall
//! returns, so the guest never sees a stale translation after an update it made, and a
//! frame is never handed back to the allocator while a TLB may still reach it.
//!
//! Across vCPUs of one domain, updating at once on two CPUs: a level-1 entry an update
//! removes keeps its references on the frame it mapped until the flush that follows
//! ([`flush_and_put`]; `kerncore::frame_table`'s `update_entry_deferred`), so another vCPU
//! can neither give that frame back nor give it a new type while a TLB may still reach it.
//! That was open until session 11: one vCPU removing the last writable mapping of a frame
//! while another, before the first flushed, linked that frame as an L1 and wrote entries
//! into it through its stale writable translation, none of them validated (`xtf-mem`'s
//! `tlb-retype-race`: a page table of its own read through such an entry). Xen closes it
//! with a TLB-flush timestamp per page, checked when a type is taken from count zero
//! (`get_page_type`), flushing the CPUs that may hold it first. Since session 11 links
//! (levels 2 to 4) are held over the flush too: a table whose last link an update removed
//! stays a validated table of its level until the flush, since a CPU's paging-structure
//! cache may still walk it through the removed link (dropping its type at once let the guest
//! map it writable and write, say, an L1 entry of any machine frame into what that stale
//! walk still used as its L1).

use alloc::vec::Vec;

use abi::error::Errno;
use abi::hypercall::{
    HYPERCALL_SLICE_NS, MEMORY_OP_PREEMPTED, MMU_BATCH, MMU_UPDATE_PREEMPTED, MemoryOp,
};
use abi::layout::USER_LIMIT;
use abi::mm::MmuUpdate;

use crate::arch::addrspace::alloc_zeroed;
use crate::arch::guest::{copy_from_guest, copy_to_guest};
use crate::arch::paging::DirectMap;
use crate::domain::{self, Domain, Vcpu};
use crate::mm::frame_table::{MACHINE, errno, free_all, table};
use crate::mm::frames;
use crate::pv::hypercall::Outcome;
use crate::time;

/// Applies one validated update. Returns whether it left stale translations (the old entry
/// was present). The entry it removed (of any level) keeps its references, pushed on `removed`, until
/// [`flush_and_put`] (`kerncore::frame_table`'s `update_entry_deferred`).
fn apply(domain: &Domain, update: MmuUpdate, removed: &mut Vec<(u8, u64)>) -> Result<bool, Errno> {
    // Frames whose last reference the update dropped (an unlinked L1 held the last mapping
    // of a dead granter's frame): freed once no TLB can reach them.
    let mut freed = Vec::new();
    let stale = table().update_entry_deferred(
        domain.id,
        update.ptr,
        update.val,
        &mut DirectMap,
        &mut freed,
        removed,
    );
    if !freed.is_empty() {
        flush_and_put(domain, removed);
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

/// Flushes every TLB that may hold the domain's translations, then drops the references of
/// the entries removed before it (`removed`, emptied; links included, whose last put
/// devalidates the table). In this order, the frames those entries mapped or linked can take
/// a new type (a data page becoming a page table, an unlinked table becoming data) or be
/// given back only once no TLB or paging-structure cache reaches them any more: releasing
/// them first let another vCPU link a page it
/// still had writable in its TLB as an L1, and write entries into it that nothing validated
/// (`xtf-mem`'s `tlb-retype-race`). Xen gets the same order from its per-page TLB-flush
/// timestamps (`get_page_type`).
fn flush_and_put(domain: &Domain, removed: &mut Vec<(u8, u64)>) {
    domain.flush_tlbs();
    if !removed.is_empty() {
        let mut freed = Vec::new();
        table().put_removed(removed, &mut DirectMap, &mut freed);
        free_all(freed);
    }
}

/// `mmu_update(reqs, count)`, preempted and continued once it has run for
/// [`HYPERCALL_SLICE_NS`] (`abi::hypercall::MMU_UPDATE`: `count` then carries the updates
/// done so far beside those left, as Xen's `MMU_UPDATE_PREEMPTED` does).
#[inline(never)] // kept out of the hypercall fast path
pub fn mmu_update(vcpu: &Vcpu, reqs: u64, count: u64) -> Outcome {
    let continued = count & MMU_UPDATE_PREEMPTED != 0;
    let (before, count) = if continued {
        ((count >> 32) & 0xffff, count & 0xffff_ffff)
    } else {
        (0, count)
    };
    let size = core::mem::size_of::<MmuUpdate>();
    // How a continued call ends: with the arguments its guest first passed.
    let finish = |result| match continued {
        true => Outcome::Finish {
            result,
            a0: reqs.wrapping_sub(before * size as u64),
            a1: before + count,
        },
        false => Outcome::Return(result),
    };
    if count == 0 || count > MMU_BATCH || before + count > MMU_BATCH {
        return Outcome::Return(Err(Errno::Inval));
    }
    let Some(domain) = domain::domain(vcpu.domain) else {
        return finish(Err(Errno::Srch));
    };
    let started = time::now_ns();
    const CHUNK: usize = 32;
    let mut stale = false;
    let mut removed = Vec::new();
    let mut done = 0u64;
    let mut result = Ok(());
    let mut preempted = false;
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
                flush_and_put(&domain, &mut removed);
                stale = false;
            }
            match apply(&domain, update, &mut removed) {
                Ok(s) => stale |= s,
                Err(e) => {
                    result = Err(e);
                    break 'all;
                }
            }
            done += 1;
            // Each update validates at most one table (`kerncore::frame_table`, "Bounded
            // work"), so this check comes often enough; XSA-45's class of guest holds its
            // CPU for one slice at a time, with interrupts taken in between.
            if done < count && time::now_ns().saturating_sub(started) >= HYPERCALL_SLICE_NS {
                preempted = true;
                break 'all;
            }
        }
    }
    // Before the guest runs again, continued or not.
    if stale {
        flush_and_put(&domain, &mut removed);
    }
    let total = before + done;
    if preempted {
        return Outcome::Continue {
            a0: reqs + done * size as u64,
            a1: MMU_UPDATE_PREEMPTED | total << 32 | (count - done),
        };
    }
    finish(match result {
        Err(e) if total == 0 => Err(e),
        _ => Ok(total),
    })
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
    let mut removed = Vec::new();
    let stale = apply(
        &domain,
        MmuUpdate {
            ptr: l1 + index as u64 * 8,
            val: pte,
        },
        &mut removed,
    )?;
    if stale {
        flush_and_put(&domain, &mut removed);
    }
    Ok(0)
}

/// `memory_op(op, list, count)`. A reservation is preempted and continued once it has run
/// for [`HYPERCALL_SLICE_NS`] (`abi::hypercall::MEMORY_OP`: `op` then carries the entries
/// done so far, as Xen's `do_memory_op` keeps them above `MEMOP_EXTENT_SHIFT`): zeroing 512
/// frames held a CPU 5-39 ms under TCG with interrupts off, every neighbour's timer on it
/// with it.
#[inline(never)] // kept out of the hypercall fast path
pub fn memory_op(vcpu: &Vcpu, op: u64, list: u64, count: u64) -> Outcome {
    let continued = op & MEMORY_OP_PREEMPTED != 0;
    let (before, op) = if continued {
        ((op >> 32) & 0x7fff_ffff, op & 0xffff_ffff)
    } else {
        (0, op)
    };
    // Bounded work per call (zeroing 512 frames is the most): the caller asks again.
    let count = count.min(abi::hypercall::MMU_BATCH);
    let Some(which) = MemoryOp::from_raw(op) else {
        return Outcome::Return(Err(Errno::NoSys));
    };
    let reservation = matches!(
        which,
        MemoryOp::IncreaseReservation | MemoryOp::DecreaseReservation
    );
    // A continuation names a reservation part-way: at least one entry done, one left.
    if continued && (!reservation || before == 0 || before >= count) {
        return Outcome::Return(Err(Errno::NoSys));
    }
    // How a continued call ends: with the `op` its guest first passed (`list` never changes).
    let finish = |result| match continued {
        true => Outcome::Finish {
            result,
            a0: op,
            a1: list,
        },
        false => Outcome::Return(result),
    };
    let Some(domain) = domain::domain(vcpu.domain) else {
        return finish(Err(Errno::Srch));
    };
    let started = time::now_ns();
    let over = || time::now_ns().saturating_sub(started) >= HYPERCALL_SLICE_NS;
    // Entries done, those of the calls before this continuation included.
    let mut done = before;
    let mut preempted = false;
    let result: Result<(), Errno> = match which {
        MemoryOp::CurrentReservation => {
            let life = domain.life.lock();
            return finish(Ok(life.space.as_ref().map_or(0, |s| s.frames() as u64)));
        }
        MemoryOp::MaximumReservation => return finish(Ok(domain.frames_limit)),
        MemoryOp::IncreaseReservation => 'inc: {
            const CHUNK: usize = 64;
            while done < count {
                let mut taken = [0u64; CHUNK];
                let mut n = 0;
                {
                    let mut life = domain.life.lock();
                    let Some(space) = life.space.as_mut() else {
                        break 'inc Err(Errno::Srch);
                    };
                    while n < CHUNK
                        && done + (n as u64) < count
                        && (space.frames() as u64) < domain.frames_limit
                    {
                        // Each frame is zeroed here: the check comes once a frame.
                        if done + n as u64 > before && over() {
                            preempted = true;
                            break;
                        }
                        let Some(phys) = alloc_zeroed(&MACHINE) else {
                            break;
                        };
                        if table().assign(phys >> 12, domain.id, false).is_err() {
                            let _ = frames::free_frame(phys);
                            break;
                        }
                        space.push_frame(phys);
                        taken[n] = phys >> 12;
                        n += 1;
                    }
                }
                if n > 0 {
                    let bytes: Vec<u8> = taken[..n].iter().flat_map(|m| m.to_le_bytes()).collect();
                    if let Err(e) = copy_to_guest(list + done * 8, &bytes) {
                        // The guest cannot learn these frames: give them back.
                        let _ = give_back(&domain, &taken[..n], &|| false);
                        preempted = false;
                        break 'inc Err(e);
                    }
                    done += n as u64;
                }
                if preempted || n < CHUNK {
                    break; // preempted, or the limit or the machine ran out
                }
            }
            Ok(())
        }
        MemoryOp::DecreaseReservation => 'dec: {
            // Each chunk releases, flushes and frees its frames: small enough to check
            // the slice between chunks.
            const CHUNK: usize = 16;
            while done < count {
                if done > before && over() {
                    preempted = true;
                    break;
                }
                let n = ((count - done) as usize).min(CHUNK);
                let mut buf = [0u8; CHUNK * 8];
                // What was given back stays given back: the result says how much.
                if let Err(e) = copy_from_guest(&mut buf[..n * 8], list + done * 8) {
                    break 'dec Err(e);
                }
                let mut mfns = [0u64; CHUNK];
                for (m, c) in mfns.iter_mut().zip(buf[..n * 8].chunks_exact(8)) {
                    *m = u64::from_le_bytes(c.try_into().unwrap());
                }
                // The slice is checked after each frame too: forgetting one was a search of
                // the frames the domain holds, and 16 of a domain holding 32,768 frames took
                // 22 ms of `-icount shift=3` time (now a lookup: `AddressSpace::remove_frame`).
                let (given, result) = give_back(&domain, &mfns[..n], &|| over());
                done += given as u64;
                if let Err(e) = result {
                    break 'dec Err(e);
                }
                if given < n {
                    preempted = true;
                    break;
                }
            }
            Ok(())
        }
    };
    if preempted && done < count {
        return Outcome::Continue {
            a0: MEMORY_OP_PREEMPTED | done << 32 | op,
            a1: list,
        };
    }
    finish(match result {
        Err(e) if done == 0 => Err(e),
        _ => Ok(done),
    })
}

/// Returns frames the domain holds and nothing maps to the allocator, in order until the
/// first refused one, or until `enough` says so once at least one went: how many went, and
/// the refusal if any.
///
/// Nothing maps them now, but another vCPU of the domain may have removed the last mapping
/// of one a moment ago and not yet flushed (it flushes before its hypercall returns): the
/// TLBs of the CPUs running the domain are flushed after the release (which could not
/// succeed before that removal) and before the frames can be handed to anyone else.
fn give_back(
    domain: &Domain,
    mfns: &[u64],
    enough: &dyn Fn() -> bool,
) -> (usize, Result<(), Errno>) {
    let mut given = 0;
    let result = {
        let mut life = domain.life.lock();
        match life.space.as_mut() {
            None => Err(Errno::Srch),
            Some(space) => {
                let mut result = Ok(());
                for &mfn in mfns {
                    if given > 0 && enough() {
                        break;
                    }
                    if let Err(e) = table().release(mfn, domain.id) {
                        result = Err(errno(e));
                        break;
                    }
                    space.remove_frame(mfn << 12);
                    given += 1;
                }
                result
            }
        }
    };
    if given > 0 {
        domain.flush_tlbs();
        free_all(mfns[..given].iter().copied());
    }
    (given, result)
}
