//! The `grant_op` hypercall: grants, their mapping and copying, and what a domain's death
//! does to them. The bookkeeping rules are in `kerncore::grant`; the page-table side in
//! `kerncore::frame_table` (through `crate::mm::frame_table`).
//!
//! Frame lifetimes: a grant holds a general reference on its frame, and a mapping holds one
//! through the page-table entry, so a frame is freed only when no grant and no mapping
//! remains, whichever domain dies first. Locks are taken in one order: the caller's `life`,
//! then the granter's `grants`, then the caller's `maptrack`. The frame table has no lock
//! of its own to order: its per-frame locks are taken and released inside each of its calls
//! (`kerncore::frame_table`, "Concurrency").
//!
//! TLBs: a mapping's entry is cleared first, then every CPU running the mapper flushes, and
//! only then are the entry's frame references dropped (its `Writable` one kept the granter
//! from making the frame a page table meanwhile) and does the granter's grant table stop
//! counting the mapping: until that count is
//! zero the granter cannot end the grant, so the frame cannot be given back and reused while
//! a TLB may still reach it. No flush happens with a lock held (a CPU being asked to flush
//! may be spinning on that lock with interrupts off).

use alloc::vec::Vec;

use abi::error::Errno;
use abi::hypercall::GrantOp;
use abi::layout::{MAP_AREA, MAP_AREA_BYTES};
use abi::mm::{GrantCopy, pte};
use kerncore::frame_table::{PageType, TableMemory};
use kerncore::grant::{GrantError, Mapping};

use crate::arch::addrspace::FrameAccess;
use crate::arch::guest::copy_from_guest;
use crate::arch::paging::DirectMap;
use crate::domain::{self, Domain, Vcpu};
use crate::mm::frame_table::{self as mmu, MACHINE, free_all, table};

fn errno(e: GrantError) -> Errno {
    match e {
        GrantError::Busy => Errno::Busy,
        GrantError::Full => Errno::NoMem,
        GrantError::NotGrantee | GrantError::ReadOnly => Errno::Perm,
        GrantError::NoSuchRef => Errno::Inval,
    }
}

/// A live domain other than `me`, from a hypercall argument.
fn other_domain(me: &Domain, raw: u64) -> Result<alloc::sync::Arc<Domain>, Errno> {
    let d = u32::try_from(raw)
        .ok()
        .and_then(domain::domain)
        .filter(|d| d.life.lock().state != abi::control::DomainState::Dead)
        .ok_or(Errno::Srch)?;
    if d.id == me.id {
        return Err(Errno::Inval);
    }
    Ok(d)
}

/// `grant_op(op, a1, a2, a3, a4)`.
#[inline(never)] // kept out of the hypercall fast path
pub fn grant_op(vcpu: &Vcpu, op: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> Result<u64, Errno> {
    let me = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    match GrantOp::from_raw(op).ok_or(Errno::NoSys)? {
        GrantOp::Grant => grant(&me, a1, a2, a3 != 0),
        GrantOp::End => {
            let gref = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            let frame = me.grants.lock().end(gref).map_err(errno)?;
            // The granter still holds the frame (its allocation reference), so this never
            // frees it.
            let _ = table().put_page(frame >> 12);
            Ok(0)
        }
        GrantOp::Map => {
            let gref = u32::try_from(a2).map_err(|_| Errno::Inval)?;
            map(&me, a1, gref, a3, a4 != 0)
        }
        GrantOp::Unmap => {
            let handle = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            unmap(&me, handle)
        }
        GrantOp::Copy => copy(&me, a1),
    }
}

/// Grants `grantee` the caller's page at `va`.
fn grant(me: &Domain, va: u64, grantee: u64, readonly: bool) -> Result<u64, Errno> {
    let grantee = other_domain(me, grantee)?;
    let life = me.life.lock();
    let (l1, index) = life
        .space
        .as_ref()
        .and_then(|s| s.l1_entry(va & !0xfff))
        .ok_or(Errno::Inval)?;
    // Read without a lock: another vCPU may change the entry, but whatever frame it names
    // is checked below, with a reference held.
    let entry = DirectMap.read(l1 >> 12, index);
    if entry & pte::PRESENT == 0 || entry & pte::GRANT_MAPPED != 0 {
        return Err(Errno::Inval);
    }
    let frame = entry & pte::ADDRESS;
    let t = table();
    t.get_page(frame >> 12, me.id).map_err(mmu::errno)?;
    // Only a data page of its own: not a page table, not a page the hypervisor writes. (It
    // may still become a page table later: mapping it writable, or copying into it, takes a
    // `Writable` type reference then, which that would refuse.)
    let info = t.info(frame >> 12).ok_or(Errno::Inval)?;
    if info.hv_readonly || !matches!(info.ty, PageType::None | PageType::Writable) {
        let _ = t.put_page(frame >> 12);
        return Err(Errno::Inval);
    }
    let made = me.grants.lock().grant(frame, grantee.id, readonly);
    drop(life);
    match made {
        // The grantee died since it was looked up: its destroy may have orphaned its grants
        // before this one was made (`control::destroy`), and its id would then pass this one
        // to the next domain given it. Taken back.
        Ok(gref) if grantee.life.lock().state == abi::control::DomainState::Dead => {
            if let Ok(frame) = me.grants.lock().end(gref) {
                let _ = t.put_page(frame >> 12);
            }
            Err(Errno::Srch)
        }
        Ok(gref) => Ok(u64::from(gref)),
        Err(e) => {
            let _ = t.put_page(frame >> 12);
            Err(errno(e))
        }
    }
}

/// Maps grant `gref` of `granter` at the caller's `va`.
fn map(me: &Domain, granter: u64, gref: u32, va: u64, readonly: bool) -> Result<u64, Errno> {
    if va & 0xfff != 0 || !(MAP_AREA..MAP_AREA + MAP_AREA_BYTES).contains(&va) {
        return Err(Errno::Inval);
    }
    let granter = other_domain(me, granter)?;
    let life = me.life.lock();
    let (l1, index) = life
        .space
        .as_ref()
        .and_then(|s| s.l1_entry(va))
        .ok_or(Errno::Inval)?;
    let mut grants = granter.grants.lock();
    let frame = grants.map(gref, me.id, !readonly).map_err(errno)?;
    // Frames freed on the way: only if another vCPU unlinked this L1 as it was written.
    let mut freed = Vec::new();
    let (l1_mfn, mfn) = (l1 >> 12, frame >> 12);
    let mapped = table().map_grant(
        me.id,
        l1_mfn,
        index,
        mfn,
        !readonly,
        &mut DirectMap,
        &mut freed,
    );
    let result = match mapped {
        Err(e) => {
            grants.unmap(gref, frame);
            Err(mmu::errno(e))
        }
        Ok(()) => {
            let mapping = Mapping {
                granter: granter.id,
                gref,
                frame,
                l1,
                index,
                writable: !readonly,
            };
            let added = me.maptrack.lock().add(mapping);
            match added {
                Ok(handle) => Ok(u64::from(handle)),
                Err(e) => {
                    // Taken back; another vCPU may have reached the entry meanwhile, so the
                    // entry's references and the grant's count stay until the flush below.
                    let mut removed = Vec::new();
                    let _ = table().unmap_grant_deferred(
                        me.id,
                        l1_mfn,
                        index,
                        mfn,
                        &mut DirectMap,
                        &mut freed,
                        &mut removed,
                    );
                    drop((grants, life));
                    me.flush_tlbs();
                    table().put_removed(&mut removed, &mut DirectMap, &mut freed);
                    granter.grants.lock().unmap(gref, frame);
                    free_all(freed);
                    return Err(errno(e));
                }
            }
        }
    };
    drop((grants, life));
    if !freed.is_empty() {
        me.flush_tlbs();
        free_all(freed);
    }
    result
}

/// Undoes mapping `handle`.
fn unmap(me: &Domain, handle: u32) -> Result<u64, Errno> {
    let m = me.maptrack.lock().take(handle).ok_or(Errno::Inval)?;
    // `NotMapped`: the guest unlinked the level-1 table, which dropped the mapping's
    // references already; only the granter's count is left to undo. (The frame table checks
    // the table is still ours: one the guest unlinked may since have been given back and
    // become another domain's.) `freed`: the granter died meanwhile, and the mapping was the
    // frame's last holder.
    // The entry's references are dropped only after the flush: its `Writable` reference is
    // what keeps the granter from linking the frame as a page table, which a grant alone
    // does not (it holds only a general reference), so dropped first it let the granter do
    // so while this domain's other vCPUs could still write the frame through stale
    // translations (`kerncore::frame_table`, `unmap_grant_deferred`).
    let mut freed = Vec::new();
    let mut removed = Vec::new();
    let _ = table().unmap_grant_deferred(
        me.id,
        m.l1 >> 12,
        m.index,
        m.frame >> 12,
        &mut DirectMap,
        &mut freed,
        &mut removed,
    );
    me.flush_tlbs();
    table().put_removed(&mut removed, &mut DirectMap, &mut freed);
    if let Some(granter) = domain::domain(m.granter) {
        granter.grants.lock().unmap(m.gref, m.frame);
    }
    free_all(freed);
    Ok(0)
}

/// `grant_op Copy`.
fn copy(me: &Domain, at: u64) -> Result<u64, Errno> {
    let mut raw = [0u8; core::mem::size_of::<GrantCopy>()];
    copy_from_guest(&mut raw, at)?;
    let word = |i: usize| u32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap());
    let c = GrantCopy {
        granter: word(0),
        gref: word(1),
        offset: word(2),
        len: word(3),
        local: u64::from_le_bytes(raw[16..24].try_into().unwrap()),
        to_grant: word(6),
        pad: 0,
    };
    if u64::from(c.offset) + u64::from(c.len) > 4096 {
        return Err(Errno::Inval);
    }
    let granter = other_domain(me, u64::from(c.granter))?;
    let write = c.to_grant != 0;
    // The granter's grant lock is held across the copy, so the grant cannot end under it;
    // the access holds the frame besides. A writable access also keeps the frame from
    // becoming one of the granter's page tables meanwhile (writing through the direct map
    // bypasses page types), and is refused if it already is one.
    let grants = granter.grants.lock();
    let frame = grants.check(c.gref, me.id, write).map_err(errno)?;
    let access = FrameAccess::new(&MACHINE, frame, granter.id, write).map_err(|_| Errno::Inval)?;
    let (offset, len) = (c.offset as usize, c.len as usize);
    if write {
        access.copy_from_guest(offset, len, c.local)?;
    } else {
        access.copy_to_guest(offset, len, c.local)?;
    }
    Ok(u64::from(c.len))
}

/// A domain is being destroyed: its grants end (their references dropped; frames still
/// mapped by a grantee stay until it unmaps), and the grants it mapped are uncounted at
/// their granters (its page tables, torn down next, drop the mappings' references).
pub fn release_all(d: &Domain) {
    let frames = d.grants.lock().drain();
    let t = table();
    // A grant's reference is its frame's last only if nothing maps the frame any more.
    free_all(
        frames
            .into_iter()
            .map(|f| f >> 12)
            .filter(|&mfn| t.put_page(mfn)),
    );
    for m in d.maptrack.lock().drain() {
        if let Some(granter) = domain::domain(m.granter) {
            granter.grants.lock().unmap(m.gref, m.frame);
        }
    }
}
