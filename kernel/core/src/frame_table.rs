//! The frame table and validated page-table updates (Xen's `arch/x86/mm.c`), as pure logic
//! tested on the host. The hypervisor keeps one [`FrameTable`] behind a lock and reaches
//! table memory through its direct map ([`TableMemory`]).
//!
//! Guests read their own page tables but change them only through `mmu_update`, so the
//! hypervisor must be sure that no guest can ever write a live page table directly: that
//! would let it map any machine frame, the hypervisor's included. Xen's answer, followed
//! here, is a per-frame record ([`FrameInfo`]):
//!
//! - an **owner**, the domain the frame was allocated to; a guest's entries may only point
//!   at its own frames (grant mappings, installed by the hypervisor, are the one exception);
//! - a **general reference count** (`refs`): one for the allocation itself (Xen's
//!   `PGC_allocated`), one per present entry in a validated table pointing at the frame,
//!   one per pin. A frame is returned to the allocator only when it reaches zero, so a
//!   frame still mapped anywhere is never reused;
//! - a **type** and a **type count**: a frame is at any time at most one of writable data,
//!   an L1, L2, L3 or L4 table, and the count says how many references hold it in that type.
//!   A writable L1 entry takes a `Writable` type reference, an L2 entry takes an `L1`
//!   reference on its target, and so on up. Since a type can only change once its count
//!   is back to zero, a frame mapped writable anywhere can never become a page table and a
//!   live page table can never be mapped writable: that is the whole safety argument.
//!
//! Taking the first type reference of a table type validates every entry of the frame at
//! that level (recursively typing what they point at); dropping the last one devalidates it.
//! The type is set *before* the entries are validated, so an entry that points back at the
//! table being validated, or at any live table of another level, finds a typed frame and is
//! refused: no self-maps or linear page tables (the trick Xen allows and that cost it
//! XSA-182 and XSA-286), and an L3 or L2 can never be read as a table of another level.
//! Superpages (bit 7 in an L2/L3 entry) are refused outright, since a 2 MiB mapping would
//! bypass the per-frame types of the 512 frames it covers (XSA-148). The hypervisor's half
//! of every L4 (entries 256..512) is never looked at here.
//!
//! Grant mappings carry the `GRANT_MAPPED` bit, which guests can neither write nor
//! overwrite; only [`FrameTable::unmap_grant`] removes them, or the devalidation of the L1
//! that holds them (at domain teardown), which clears them.
//!
//! **Bounded work.** The hypervisor is not preemptible, so no single guest update may do
//! more than a table's worth of work (XSA-45's class: a guest that links a prepared tree
//! of L2s, each full of L1s, made one `mmu_update` validate millions of entries and held
//! its CPU for seconds). Xen makes validation preemptible with continuations; Domino bounds
//! it instead: a guest update may validate the one table it links (512 entries), whose own
//! entries must then name data frames or tables already in use ([`Depth::One`]), and the
//! last link to a table may go only once the table is empty ([`MmError::TooDeep`]
//! otherwise). Guests build trees top-down (link an empty table, then fill it) and tear
//! them down bottom-up. And a domain has at most [`MAX_TABLES`] frames in use as tables
//! (`NoMem` past that), so tearing down a whole domain at destruction, which the
//! hypervisor does in one go on Domain0's time, devalidates at most that many tables.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use abi::control::DomainId;
use abi::mm::pte;

/// Entries in one table of any level.
const ENTRIES: usize = 512;
/// L4 entries below this are the guest's; the rest map the hypervisor.
const GUEST_L4_ENTRIES: usize = 256;

/// Access to table memory, which the hypervisor implements through its direct map.
pub trait TableMemory {
    /// Entry `index` (0..512) of the table in frame `mfn`.
    fn read(&self, mfn: u64, index: usize) -> u64;
    /// Writes entry `index` of the table in frame `mfn`.
    fn write(&mut self, mfn: u64, index: usize, value: u64);
}

/// What a frame is currently used as (Xen's `PGT_*` types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageType {
    #[default]
    None,
    /// Mapped writable by at least one L1 entry.
    Writable,
    L1,
    L2,
    L3,
    L4,
}

impl PageType {
    /// The table level (1..=4), or `None` for a non-table type.
    fn level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            PageType::None | PageType::Writable => None,
        }
    }

    fn table(level: u8) -> PageType {
        match level {
            1 => PageType::L1,
            2 => PageType::L2,
            3 => PageType::L3,
            _ => PageType::L4,
        }
    }
}

/// One machine frame's record (Xen's `struct page_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    pub owner: Option<DomainId>,
    pub ty: PageType,
    /// References holding the frame in type `ty`; `ty` is `None` when this is zero.
    pub type_count: u32,
    /// General references: allocation + present entries pointing here + pins.
    pub refs: u32,
    /// Written by the hypervisor (shared info, plan): the guest may map it read-only only.
    pub hv_readonly: bool,
}

/// Why a memory operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    BadFrame,
    NotOwner,
    NotPageTable,
    WrongType,
    Reserved,
    NotUser,
    Superpage,
    HypervisorHalf,
    GrantEntry,
    Busy,
    Misaligned,
    NotMapped,
    /// A guest update would validate a table whose own entries name tables not yet in use
    /// (more than one table's worth of work in one update), or drop the last link to a
    /// table that still has entries: see "Bounded work" above.
    TooDeep,
    /// The domain has [`MAX_TABLES`] page tables already.
    TooManyTables,
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MmError::BadFrame => "no such machine frame",
            MmError::NotOwner => "frame belongs to another domain",
            MmError::NotPageTable => "not a validated page table",
            MmError::WrongType => "frame is in use with another type",
            MmError::Reserved => "reserved or forbidden entry bits",
            MmError::NotUser => "entry lacks the user bit",
            MmError::Superpage => "superpages are not allowed",
            MmError::HypervisorHalf => "entry in the hypervisor's half",
            MmError::GrantEntry => "entry maps a grant",
            MmError::Busy => "frame or entry is in use",
            MmError::Misaligned => "entry address not 8-byte aligned",
            MmError::NotMapped => "grant is not mapped there",
            MmError::TooManyTables => "the domain has as many page tables as it may",
            MmError::TooDeep => {
                "more than one table to validate or devalidate: link empty tables, then \
                 fill them; empty a table before its last link goes"
            }
        })
    }
}

/// How many levels of not-yet-validated tables one operation may validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    /// The hypervisor's own trees (a domain's initial tables, pinned at creation).
    Unbounded,
    /// A guest's update: the table it links may be validated (512 entries), and that
    /// table's entries must name tables already in use (`One` becomes `None` below it).
    One,
    /// Nothing more may be validated.
    None,
}

impl Depth {
    /// The depth left for the entries of a table validated at this depth; `None` when no
    /// table may be validated here.
    fn below(self) -> Option<Depth> {
        match self {
            Depth::Unbounded => Some(Depth::Unbounded),
            Depth::One => Some(Depth::None),
            Depth::None => None,
        }
    }
}

fn is_present(entry: u64) -> bool {
    entry & pte::PRESENT != 0
}

fn is_grant(entry: u64) -> bool {
    is_present(entry) && entry & pte::GRANT_MAPPED != 0
}

fn target_of(entry: u64) -> u64 {
    (entry & pte::ADDRESS) >> 12
}

/// The entries of a table of `level` that this module manages.
fn guest_entries(level: u8) -> usize {
    if level == 4 {
        GUEST_L4_ENTRIES
    } else {
        ENTRIES
    }
}

/// The frame table: one [`FrameInfo`] per machine frame of a contiguous range.
#[derive(Clone, Debug)]
pub struct FrameTable {
    first_mfn: u64,
    frames: Vec<FrameInfo>,
    /// Roots pinned by `pin_root`, each holding one general and one type reference.
    pinned: BTreeSet<u64>,
    /// Frames freed as a side effect of devalidation, not yet handed to the caller.
    freed: Vec<u64>,
    /// Frames each domain has in use as page tables (at most [`MAX_TABLES`]).
    tables: BTreeMap<DomainId, u32>,
}

/// Frames a domain may have in use as page tables at once: 512 tables map 1 GiB in 4 KiB
/// pages, far more than any guest here needs, and bound what one update or a teardown can
/// devalidate to 512 tables' entries (see "Bounded work").
pub const MAX_TABLES: u32 = 512;

impl FrameTable {
    /// A table for frames `first_mfn .. first_mfn + count`, all free.
    pub fn new(first_mfn: u64, count: usize) -> FrameTable {
        FrameTable {
            first_mfn,
            frames: alloc::vec![FrameInfo::default(); count],
            pinned: BTreeSet::new(),
            freed: Vec::new(),
            tables: BTreeMap::new(),
        }
    }

    /// Frames `dom` has in use as page tables.
    pub fn tables_of(&self, dom: DomainId) -> u32 {
        self.tables.get(&dom).copied().unwrap_or(0)
    }

    fn slot(&self, mfn: u64) -> Option<usize> {
        let i = usize::try_from(mfn.checked_sub(self.first_mfn)?).ok()?;
        (i < self.frames.len()).then_some(i)
    }

    fn frame(&mut self, mfn: u64) -> &mut FrameInfo {
        let i = self.slot(mfn).expect("frame checked by the caller");
        &mut self.frames[i]
    }

    /// A frame's record, `None` if out of range.
    pub fn info(&self, mfn: u64) -> Option<FrameInfo> {
        self.slot(mfn).map(|i| self.frames[i])
    }

    /// A frame just taken from the allocator for `owner`: the allocation reference only.
    /// `hv_readonly` marks a page the hypervisor writes, which the guest may map read-only.
    pub fn assign(&mut self, mfn: u64, owner: DomainId, hv_readonly: bool) -> Result<(), MmError> {
        let info = self.info(mfn).ok_or(MmError::BadFrame)?;
        if info.owner.is_some() || info.refs != 0 {
            return Err(MmError::Busy);
        }
        *self.frame(mfn) = FrameInfo {
            owner: Some(owner),
            refs: 1,
            hv_readonly,
            ..FrameInfo::default()
        };
        Ok(())
    }

    /// The owner gives back a frame that nothing maps (memory reservation decrease); the
    /// caller then returns it to its allocator.
    pub fn release(&mut self, mfn: u64, owner: DomainId) -> Result<(), MmError> {
        let info = self.info(mfn).ok_or(MmError::BadFrame)?;
        if info.owner != Some(owner) {
            return Err(MmError::NotOwner);
        }
        if info.refs != 1 || info.type_count != 0 {
            return Err(MmError::Busy);
        }
        *self.frame(mfn) = FrameInfo::default();
        Ok(())
    }

    /// Takes a general reference on a frame `dom` owns (a grant holds one for its life, so
    /// that the granter cannot give the frame back while another domain may still use it).
    pub fn get_page(&mut self, mfn: u64, dom: DomainId) -> Result<(), MmError> {
        let info = self.info(mfn).ok_or(MmError::BadFrame)?;
        if info.owner != Some(dom) || info.refs == 0 {
            return Err(MmError::NotOwner);
        }
        self.frame(mfn).refs += 1;
        Ok(())
    }

    /// Drops a general reference; true when it was the last one: the record is cleared and
    /// the caller must free the frame.
    pub fn put_page(&mut self, mfn: u64) -> bool {
        let Some(i) = self.slot(mfn) else {
            return false;
        };
        let info = &mut self.frames[i];
        debug_assert!(info.refs > 0, "put_page of a free frame {mfn:#x}");
        if info.refs == 0 {
            return false;
        }
        info.refs -= 1;
        if info.refs == 0 {
            debug_assert_eq!(info.type_count, 0, "frame {mfn:#x} freed while typed");
            *info = FrameInfo::default();
            return true;
        }
        false
    }

    /// Frames freed as a side effect of an `update_entry`: a guest unlinking an L1 that
    /// still held a grant mapping whose granter has died. The caller frees them.
    pub fn take_freed(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.freed)
    }

    fn put_page_collect(&mut self, mfn: u64) {
        if self.put_page(mfn) {
            self.freed.push(mfn);
        }
    }

    /// Types `root` as L4 (validating the whole tree under it) and pins it with one general
    /// and one type reference, which `teardown` drops (Xen's `MMUEXT_PIN_L4_TABLE`).
    pub fn pin_root(
        &mut self,
        dom: DomainId,
        root: u64,
        mem: &mut impl TableMemory,
    ) -> Result<(), MmError> {
        let info = self.info(root).ok_or(MmError::BadFrame)?;
        if info.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        if self.pinned.contains(&root) {
            return Err(MmError::Busy);
        }
        self.get_type(root, PageType::L4, mem, Depth::Unbounded)?;
        self.frame(root).refs += 1;
        self.pinned.insert(root);
        Ok(())
    }

    /// The `mmu_update` core (Xen's `mod_l1_entry` .. `mod_l4_entry`): writes `val` to the
    /// entry at machine address `ptr` of one of `dom`'s validated tables. Ok(true) when the
    /// old entry was present, so the caller must flush TLBs.
    pub fn update_entry(
        &mut self,
        dom: DomainId,
        ptr: u64,
        val: u64,
        mem: &mut impl TableMemory,
    ) -> Result<bool, MmError> {
        if ptr & 7 != 0 {
            return Err(MmError::Misaligned);
        }
        let (table, index) = (ptr >> 12, (ptr & 0xfff) as usize / 8);
        let level = self.validated_table(dom, table)?;
        if level == 4 && index >= GUEST_L4_ENTRIES {
            return Err(MmError::HypervisorHalf);
        }
        let old = mem.read(table, index);
        if is_grant(old) {
            return Err(MmError::GrantEntry);
        }
        if val & pte::GRANT_MAPPED != 0 {
            return Err(MmError::Reserved);
        }
        // New references first, so rewriting an entry with the same target never lets the
        // target's counts touch zero (and never devalidates or frees it).
        // Bounded work: the last link to a table goes only once the table is empty, so that
        // dropping it devalidates one table's worth of entries at most.
        if is_present(old) && level > 1 {
            let target = target_of(old);
            // The new value keeps the link only if it is present and names the same table
            // (a cleared present bit with the old address is an unlink too).
            let keeps_link = is_present(val) && target_of(val) == target;
            let last_link = self.info(target).is_some_and(|i| i.type_count == 1) && !keeps_link;
            if last_link && (0..guest_entries(level - 1)).any(|i| is_present(mem.read(target, i))) {
                return Err(MmError::TooDeep);
            }
        }
        if is_present(val) {
            self.get_entry(level, val, dom, mem, Depth::One)?;
        }
        mem.write(table, index, val);
        if is_present(old) {
            self.put_entry(level, old, mem);
        }
        Ok(is_present(old))
    }

    /// The level of `table` if it is a validated page table owned by `dom`.
    fn validated_table(&self, dom: DomainId, table: u64) -> Result<u8, MmError> {
        let info = self.info(table).ok_or(MmError::BadFrame)?;
        if info.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        match info.ty.level() {
            Some(level) if info.type_count > 0 => Ok(level),
            _ => Err(MmError::NotPageTable),
        }
    }

    /// Installs a grant mapping of `target` at entry `index` of `dom`'s L1 table `l1`. The
    /// caller has checked the grant; this takes the general (and, if `writable`, the
    /// `Writable` type) reference that the entry holds. An `index` >= 512 is NotPageTable.
    pub fn map_grant(
        &mut self,
        dom: DomainId,
        l1: u64,
        index: usize,
        target: u64,
        writable: bool,
        mem: &mut impl TableMemory,
    ) -> Result<(), MmError> {
        if self.validated_table(dom, l1)? != 1 || index >= ENTRIES {
            return Err(MmError::NotPageTable);
        }
        if is_present(mem.read(l1, index)) {
            return Err(MmError::Busy);
        }
        let info = self.info(target).ok_or(MmError::BadFrame)?;
        if info.owner.is_none() {
            return Err(MmError::BadFrame);
        }
        let mut val = target << 12 | pte::PRESENT | pte::USER | pte::NO_EXECUTE | pte::GRANT_MAPPED;
        if writable {
            if info.hv_readonly {
                return Err(MmError::Reserved);
            }
            self.get_type(target, PageType::Writable, mem, Depth::One)?;
            val |= pte::WRITABLE;
        }
        self.frame(target).refs += 1;
        mem.write(l1, index, val);
        Ok(())
    }

    /// Removes a grant mapping installed by `map_grant`. True if `target` became free.
    pub fn unmap_grant(
        &mut self,
        l1: u64,
        index: usize,
        target: u64,
        mem: &mut impl TableMemory,
    ) -> Result<bool, MmError> {
        // A devalidated L1 has already dropped (and cleared) its grant entries.
        let info = self.info(l1).ok_or(MmError::NotMapped)?;
        if info.ty != PageType::L1 || info.type_count == 0 || index >= ENTRIES {
            return Err(MmError::NotMapped);
        }
        let old = mem.read(l1, index);
        if !is_grant(old) || target_of(old) != target {
            return Err(MmError::NotMapped);
        }
        mem.write(l1, index, 0);
        let before = self.freed.len();
        self.put_entry(1, old, mem);
        let freed = self.freed.len() > before;
        self.freed.truncate(before);
        Ok(freed)
    }

    /// At a domain's death: unpins its root (devalidating the whole tree, grant mappings
    /// included) and drops the allocation reference of every frame in `owned`. Returns every
    /// frame that became free, other domains' granted frames included.
    pub fn teardown(
        &mut self,
        dom: DomainId,
        root: u64,
        owned: &[u64],
        mem: &mut impl TableMemory,
    ) -> Vec<u64> {
        if self.pinned.remove(&root) {
            self.put_type(root, mem);
            self.put_page_collect(root);
        }
        // A duplicate in `owned` must not drop the allocation reference twice.
        let mut owned = owned.to_vec();
        owned.sort_unstable();
        owned.dedup();
        for mfn in owned {
            if self
                .info(mfn)
                .is_some_and(|i| i.owner == Some(dom) && i.refs > 0)
            {
                self.put_page_collect(mfn);
            }
        }
        self.take_freed()
    }

    /// Takes a type reference (Xen's `get_page_type`); the first reference of a table type
    /// validates the table, if `depth` allows validating one more level.
    fn get_type(
        &mut self,
        mfn: u64,
        ty: PageType,
        mem: &mut impl TableMemory,
        depth: Depth,
    ) -> Result<(), MmError> {
        let info = self.frame(mfn);
        if info.type_count > 0 {
            if info.ty != ty {
                return Err(MmError::WrongType);
            }
            info.type_count += 1;
            return Ok(());
        }
        let Some(below) = depth.below() else {
            if ty.level().is_some() {
                return Err(MmError::TooDeep);
            }
            info.ty = ty;
            info.type_count = 1;
            return Ok(());
        };
        let owner = info.owner;
        if let (Some(_), Some(owner)) = (ty.level(), owner) {
            let count = self.tables.entry(owner).or_insert(0);
            if *count >= MAX_TABLES {
                return Err(MmError::TooManyTables);
            }
            *count += 1;
        }
        let info = self.frame(mfn);
        // Typed before validation: an entry reaching back here sees a live frame.
        info.ty = ty;
        info.type_count = 1;
        let (Some(level), Some(owner)) = (ty.level(), owner) else {
            return Ok(());
        };
        // Xen's alloc_lN_table: validate every entry, undoing on the first failure.
        for i in 0..guest_entries(level) {
            let entry = mem.read(mfn, i);
            if !is_present(entry) {
                continue;
            }
            if let Err(e) = self.get_entry(level, entry, owner, mem, below) {
                for j in 0..i {
                    let entry = mem.read(mfn, j);
                    if is_present(entry) {
                        self.put_entry(level, entry, mem);
                    }
                }
                let info = self.frame(mfn);
                info.ty = PageType::None;
                info.type_count = 0;
                self.untable(owner);
                return Err(e);
            }
        }
        Ok(())
    }

    /// One page table of `owner` fewer.
    fn untable(&mut self, owner: DomainId) {
        if let Some(count) = self.tables.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.tables.remove(&owner);
            }
        }
    }

    /// Drops a type reference (Xen's `put_page_type`); the last one of a table type
    /// devalidates it (Xen's `free_lN_table`).
    fn put_type(&mut self, mfn: u64, mem: &mut impl TableMemory) {
        let info = self.frame(mfn);
        debug_assert!(info.type_count > 0, "put_type of an untyped frame {mfn:#x}");
        info.type_count -= 1;
        if info.type_count > 0 {
            return;
        }
        let ty = core::mem::take(&mut info.ty);
        let owner = info.owner;
        let Some(level) = ty.level() else { return };
        if let Some(owner) = owner {
            self.untable(owner);
        }
        for i in 0..guest_entries(level) {
            let entry = mem.read(mfn, i);
            if is_present(entry) {
                if is_grant(entry) {
                    // The mapping dies with the table; keep the entry from claiming it.
                    mem.write(mfn, i, 0);
                }
                self.put_entry(level, entry, mem);
            }
        }
    }

    /// Validates a present, guest-written entry of a table of `level` owned by `dom` and
    /// takes the references it holds (Xen's `get_page_from_lNe`). Takes nothing on error.
    fn get_entry(
        &mut self,
        level: u8,
        entry: u64,
        dom: DomainId,
        mem: &mut impl TableMemory,
        depth: Depth,
    ) -> Result<(), MmError> {
        if (level == 2 || level == 3) && entry & pte::HUGE_OR_PAT != 0 {
            return Err(MmError::Superpage);
        }
        if entry & !pte::GUEST_ALLOWED != 0 {
            return Err(MmError::Reserved);
        }
        if entry & pte::USER == 0 {
            return Err(MmError::NotUser);
        }
        let target = target_of(entry);
        let info = self.info(target).ok_or(MmError::BadFrame)?;
        if info.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        if level == 1 {
            if entry & pte::WRITABLE != 0 {
                if info.hv_readonly {
                    return Err(MmError::Reserved);
                }
                self.get_type(target, PageType::Writable, mem, depth)?;
            }
        } else {
            self.get_type(target, PageType::table(level - 1), mem, depth)?;
        }
        self.frame(target).refs += 1;
        Ok(())
    }

    /// Drops the references a present entry of a table of `level` holds (Xen's
    /// `put_page_from_lNe`): type first, then general.
    fn put_entry(&mut self, level: u8, entry: u64, mem: &mut impl TableMemory) {
        let target = target_of(entry);
        if level > 1 || entry & pte::WRITABLE != 0 {
            self.put_type(target, mem);
        }
        self.put_page_collect(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MmError::*;
    use pte::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    const FIRST: u64 = 0x100;
    const COUNT: usize = 96;
    const D1: DomainId = 1;
    const D2: DomainId = 2;

    /// Table memory: frames never written read as zeroes. Counts writes, so that a refused
    /// operation can be seen to have written nothing.
    #[derive(Clone, Debug, Default)]
    struct FakeMemory(HashMap<u64, Vec<u64>>, u64);

    impl TableMemory for FakeMemory {
        fn read(&self, mfn: u64, index: usize) -> u64 {
            self.0.get(&mfn).map_or(0, |f| f[index])
        }
        fn write(&mut self, mfn: u64, index: usize, value: u64) {
            self.0.entry(mfn).or_insert_with(|| vec![0; ENTRIES])[index] = value;
            self.1 += 1;
        }
    }

    /// A read-only, a writable data mapping, and an intermediate entry as the x86_64
    /// crate writes it (hardware may add ACCESSED).
    fn ro(mfn: u64) -> u64 {
        mfn << 12 | PRESENT | USER | NO_EXECUTE
    }
    fn rw(mfn: u64) -> u64 {
        ro(mfn) | WRITABLE | DIRTY
    }
    fn link(mfn: u64) -> u64 {
        mfn << 12 | PRESENT | WRITABLE | USER | ACCESSED
    }
    fn at(table: u64, index: usize) -> u64 {
        table << 12 | (index as u64 * 8)
    }

    /// A domain's initial tree: L4[0] -> L3[0] -> L2[0] -> L1, whose entries map data[0..3]
    /// writable, data[3] read-only and (like PT_WINDOW) the L1 itself read-only.
    #[derive(Clone, Copy, Debug)]
    struct Tree {
        l4: u64,
        l3: u64,
        l2: u64,
        l1: u64,
        data: [u64; 4],
    }

    /// The frame table, its memory, and an independent model of who holds what.
    #[derive(Clone)]
    struct World {
        ft: FrameTable,
        mem: FakeMemory,
        /// Frames holding their allocation reference, and their owner.
        allocated: BTreeMap<u64, DomainId>,
        /// Pinned roots.
        roots: BTreeMap<DomainId, u64>,
    }

    impl World {
        fn new() -> World {
            World {
                ft: FrameTable::new(FIRST, COUNT),
                mem: FakeMemory::default(),
                allocated: BTreeMap::new(),
                roots: BTreeMap::new(),
            }
        }

        /// A world with `count` frames instead of `COUNT`.
        fn with_frames(count: usize) -> World {
            World {
                ft: FrameTable::new(FIRST, count),
                ..World::new()
            }
        }

        fn alloc(&mut self, dom: DomainId) -> Option<u64> {
            let count = self.ft.frames.len() as u64;
            let mfn = (FIRST..FIRST + count).find(|&m| self.ft.info(m).unwrap().refs == 0)?;
            self.ft.assign(mfn, dom, false).unwrap();
            self.mem.0.remove(&mfn); // a freshly allocated frame holds junk; zeroes will do
            self.allocated.insert(mfn, dom);
            Some(mfn)
        }

        fn build(&mut self, dom: DomainId) -> Tree {
            let mut f = || self.alloc(dom).unwrap();
            let t = Tree {
                l4: f(),
                l3: f(),
                l2: f(),
                l1: f(),
                data: [f(), f(), f(), f()],
            };
            self.mem.write(t.l4, 0, link(t.l3));
            // The hypervisor's half is never looked at, whatever it holds.
            self.mem
                .write(t.l4, 300, 0xdead_0000 | PRESENT | GLOBAL | HUGE_OR_PAT);
            self.mem.write(t.l3, 0, link(t.l2));
            self.mem.write(t.l2, 0, link(t.l1));
            for (i, &d) in t.data[..3].iter().enumerate() {
                self.mem.write(t.l1, i, rw(d));
            }
            self.mem.write(t.l1, 3, ro(t.data[3]));
            self.mem.write(t.l1, 4, ro(t.l1));
            self.ft.pin_root(dom, t.l4, &mut self.mem).unwrap();
            self.roots.insert(dom, t.l4);
            self.check();
            t
        }

        /// Runs one operation; an error must leave frame table and memory untouched.
        fn op<T>(
            &mut self,
            f: impl FnOnce(&mut FrameTable, &mut FakeMemory) -> Result<T, MmError>,
        ) -> Result<T, MmError> {
            let (frames, writes) = (self.ft.frames.clone(), self.mem.1);
            let r = f(&mut self.ft, &mut self.mem);
            if r.is_err() {
                assert_eq!(
                    self.ft.frames, frames,
                    "a failed operation changed the frame table"
                );
                assert_eq!(self.mem.1, writes, "a failed operation wrote memory");
            }
            self.check();
            r
        }

        /// `release`, keeping the model in step before the invariant is checked.
        fn release(&mut self, mfn: u64, dom: DomainId) -> Result<(), MmError> {
            let (frames, owner) = (self.ft.frames.clone(), self.allocated.remove(&mfn));
            let r = self.ft.release(mfn, dom);
            if r.is_err() {
                assert_eq!(self.ft.frames, frames);
                owner.map(|d| self.allocated.insert(mfn, d));
            }
            self.check();
            r
        }

        fn grant(
            &mut self,
            dom: DomainId,
            l1: u64,
            i: usize,
            g: u64,
            rw: bool,
        ) -> Result<(), MmError> {
            self.op(|ft, mem| ft.map_grant(dom, l1, i, g, rw, mem))
        }

        fn unmap(&mut self, l1: u64, i: usize, g: u64) -> Result<bool, MmError> {
            self.op(|ft, mem| ft.unmap_grant(l1, i, g, mem))
        }

        fn owned(&self, dom: DomainId) -> BTreeSet<u64> {
            self.allocated
                .iter()
                .filter(|e| *e.1 == dom)
                .map(|e| *e.0)
                .collect()
        }

        fn update(
            &mut self,
            dom: DomainId,
            table: u64,
            index: usize,
            val: u64,
        ) -> Result<bool, MmError> {
            self.op(|ft, mem| ft.update_entry(dom, at(table, index), val, mem))
        }

        fn teardown(&mut self, dom: DomainId) -> BTreeSet<u64> {
            let owned: Vec<u64> = self.owned(dom).into_iter().collect();
            let root = self.roots.remove(&dom).unwrap();
            self.allocated.retain(|_, d| *d != dom);
            let freed: BTreeSet<u64> = self
                .ft
                .teardown(dom, root, &owned, &mut self.mem)
                .into_iter()
                .collect();
            self.check();
            for &m in &freed {
                assert_eq!(self.ft.info(m), Some(FrameInfo::default()));
            }
            // Only frames still mapped elsewhere may name the dead domain.
            for m in FIRST..FIRST + COUNT as u64 {
                let info = self.ft.info(m).unwrap();
                if info.owner == Some(dom) {
                    assert!(
                        info.refs > 0 && self.mapped_by_grant(m),
                        "{m:#x} kept by {dom}: {info:?}"
                    );
                }
            }
            freed
        }

        fn mapped_by_grant(&self, mfn: u64) -> bool {
            self.validated_entries()
                .any(|(_, _, e)| is_grant(e) && target_of(e) == mfn)
        }

        /// Every present entry of every validated table: (table, level, entry).
        fn validated_entries(&self) -> impl Iterator<Item = (u64, u8, u64)> + '_ {
            (FIRST..FIRST + COUNT as u64).flat_map(move |t| {
                let info = self.ft.info(t).unwrap();
                let level = info.ty.level().filter(|_| info.type_count > 0).unwrap_or(0);
                let n = if level == 0 { 0 } else { guest_entries(level) };
                let entries = self.mem.0.get(&t).map_or(&[][..], |f| &f[..n]);
                entries
                    .iter()
                    .filter(|&&e| is_present(e))
                    .map(move |&e| (t, level, e))
            })
        }

        /// The invariant: every count equals the references that exist.
        fn check(&self) {
            let mut refs: HashMap<u64, u32> = HashMap::new();
            let mut types: HashMap<u64, Vec<PageType>> = HashMap::new();
            for &m in self.allocated.keys() {
                *refs.entry(m).or_default() += 1;
            }
            for &root in self.roots.values() {
                *refs.entry(root).or_default() += 1;
                types.entry(root).or_default().push(PageType::L4);
            }
            assert_eq!(self.ft.pinned, self.roots.values().copied().collect());
            for (table, level, e) in self.validated_entries() {
                let t = target_of(e);
                *refs.entry(t).or_default() += 1;
                if level > 1 {
                    types.entry(t).or_default().push(PageType::table(level - 1));
                } else if e & WRITABLE != 0 {
                    types.entry(t).or_default().push(PageType::Writable);
                }
                if !is_grant(e) {
                    assert_eq!(
                        self.ft.info(t).unwrap().owner,
                        self.ft.info(table).unwrap().owner
                    );
                }
            }
            for m in FIRST..FIRST + COUNT as u64 {
                let info = self.ft.info(m).unwrap();
                let ty = types.remove(&m).unwrap_or_default();
                assert_eq!(
                    info.refs,
                    refs.get(&m).copied().unwrap_or(0),
                    "refs of {m:#x}: {info:?}"
                );
                assert_eq!(
                    info.type_count as usize,
                    ty.len(),
                    "type_count of {m:#x}: {info:?}"
                );
                assert!(
                    ty.iter().all(|&t| t == info.ty),
                    "{m:#x} is {:?}, referenced as {ty:?}",
                    info.ty
                );
                if info.type_count == 0 {
                    assert_eq!(info.ty, PageType::None);
                }
                if info.refs == 0 {
                    assert_eq!(info, FrameInfo::default());
                }
                if let Some(&d) = self.allocated.get(&m) {
                    assert_eq!(info.owner, Some(d));
                }
            }
        }
    }

    /// An untyped frame of `owner` with `refs` references.
    fn idle(owner: DomainId, refs: u32) -> FrameInfo {
        FrameInfo {
            owner: Some(owner),
            refs,
            ..FrameInfo::default()
        }
    }

    fn world() -> (World, Tree, Tree) {
        let mut w = World::new();
        let (a, b) = (w.build(D1), w.build(D2));
        (w, a, b)
    }

    #[test]
    fn pinning_takes_the_references_of_the_whole_tree() {
        let (w, t, _) = world();
        let info = |m| w.ft.info(m).unwrap();
        assert_eq!(
            (info(t.l4).ty, info(t.l4).type_count, info(t.l4).refs),
            (PageType::L4, 1, 2)
        );
        assert_eq!((info(t.l3).ty, info(t.l3).refs), (PageType::L3, 2));
        assert_eq!(
            (info(t.l1).ty, info(t.l1).refs),
            (PageType::L1, 3),
            "linked and mapped read-only"
        );
        assert_eq!(
            (info(t.data[0]).ty, info(t.data[0]).refs),
            (PageType::Writable, 2)
        );
        assert_eq!(
            (info(t.data[3]).ty, info(t.data[3]).refs),
            (PageType::None, 2)
        );
        let mut w2 = w.clone();
        assert_eq!(w2.op(|ft, mem| ft.pin_root(D1, t.l4, mem)), Err(Busy));
    }

    #[test]
    fn a_grant_reference_keeps_a_frame_from_being_released() {
        let (mut w, t, u) = world();
        // data[3] is mapped read-only: unmap it, so only its allocation reference is left.
        let idx = (0..512)
            .find(|&i| w.mem.read(t.l1, i) & ADDRESS == t.data[3] << 12)
            .unwrap();
        assert_eq!(w.update(D1, t.l1, idx, 0), Ok(true));
        assert_eq!(w.ft.get_page(u.data[0], D1), Err(NotOwner));
        assert_eq!(w.ft.get_page(t.data[3], D1), Ok(()));
        assert_eq!(w.ft.release(t.data[3], D1), Err(Busy));
        assert!(!w.ft.put_page(t.data[3]));
        assert_eq!(w.ft.release(t.data[3], D1), Ok(()));
        assert_eq!(w.ft.get_page(t.data[3], D1), Err(NotOwner), "freed");
    }

    #[test]
    fn no_table_of_any_level_can_be_mapped_writable() {
        let (mut w, t, _) = world();
        for (i, table) in [t.l4, t.l3, t.l2, t.l1].into_iter().enumerate() {
            assert_eq!(w.update(D1, t.l1, 10 + i, rw(table)), Err(WrongType));
            assert_eq!(
                w.update(D1, t.l1, 10 + i, ro(table)),
                Ok(false),
                "read-only is fine"
            );
        }
    }

    #[test]
    fn only_own_frames_and_own_tables() {
        let (mut w, t, u) = world();
        assert_eq!(w.update(D1, t.l1, 10, ro(u.data[0])), Err(NotOwner));
        assert_eq!(w.update(D1, t.l2, 1, link(u.l1)), Err(NotOwner));
        assert_eq!(w.update(D2, t.l1, 10, ro(u.data[0])), Err(NotOwner));
        assert_eq!(
            w.update(D1, t.l1, 10, ro(FIRST + COUNT as u64)),
            Err(BadFrame)
        );
    }

    #[test]
    fn update_needs_an_aligned_entry_of_a_validated_table() {
        let (mut w, t, _) = world();
        assert_eq!(w.update(D1, t.data[0], 0, 0), Err(NotPageTable));
        assert_eq!(
            w.op(|ft, mem| ft.update_entry(D1, at(t.l1, 1) + 4, 0, mem)),
            Err(Misaligned)
        );
        assert_eq!(w.update(D1, FIRST + COUNT as u64, 0, 0), Err(BadFrame));
        assert_eq!(w.update(D1, t.l4, 256, 0), Err(HypervisorHalf));
        assert_eq!(w.update(D1, t.l4, 511, link(t.l3)), Err(HypervisorHalf));
    }

    #[test]
    fn reserved_global_pat_superpage_and_supervisor_entries_are_refused() {
        let (mut w, t, _) = world();
        for bit in [1 << 52, 1 << 62, GRANT_MAPPED, 1 << 11, GLOBAL, HUGE_OR_PAT] {
            assert_eq!(
                w.update(D1, t.l1, 10, ro(t.data[0]) | bit),
                Err(Reserved),
                "{bit:#x}"
            );
        }
        assert_eq!(
            w.update(D1, t.l1, 10, GRANT_MAPPED),
            Err(Reserved),
            "even non-present"
        );
        assert_eq!(w.update(D1, t.l4, 1, link(t.l3) | 1 << 10), Err(Reserved));
        // XSA-148: a 2 MiB or 1 GiB mapping would reach frames without typing them.
        assert_eq!(
            w.update(D1, t.l2, 1, link(t.data[0]) | HUGE_OR_PAT),
            Err(Superpage)
        );
        assert_eq!(
            w.update(D1, t.l3, 1, link(t.l2) | HUGE_OR_PAT | GLOBAL),
            Err(Superpage)
        );
        assert_eq!(w.update(D1, t.l1, 10, ro(t.data[0]) & !USER), Err(NotUser));
        assert_eq!(w.update(D1, t.l3, 0, link(t.l2) & !USER), Err(NotUser));
        assert_eq!(
            w.update(D1, t.l1, 10, 0x1234_5000 | 0x5fe),
            Ok(false),
            "non-present: anything but GRANT_MAPPED"
        );
    }

    #[test]
    fn self_maps_and_cross_level_links_are_refused() {
        let (mut w, t, _) = world();
        // XSA-182/286 territory: no linear page tables at all.
        assert_eq!(w.update(D1, t.l4, 1, link(t.l4)), Err(WrongType));
        assert_eq!(w.update(D1, t.l3, 1, link(t.l3)), Err(WrongType));
        assert_eq!(w.update(D1, t.l3, 1, link(t.l4)), Err(WrongType));
        assert_eq!(w.update(D1, t.l2, 1, link(t.l2)), Err(WrongType));
        assert_eq!(w.update(D1, t.l4, 1, link(t.l2)), Err(WrongType));
        assert_eq!(
            w.update(D1, t.l2, 1, link(t.data[0])),
            Err(WrongType),
            "mapped writable"
        );
        // A fresh frame that points back at itself while being validated.
        let f = w.alloc(D1).unwrap();
        w.mem.write(f, 7, link(f));
        assert_eq!(w.update(D1, t.l3, 1, link(f)), Err(WrongType));
    }

    #[test]
    fn a_data_page_becomes_a_table_only_once_unmapped() {
        let (mut w, t, _) = world();
        assert_eq!(w.update(D1, t.l2, 1, link(t.data[0])), Err(WrongType));
        assert_eq!(w.update(D1, t.l1, 0, ro(t.data[0])), Ok(true));
        assert_eq!(w.update(D1, t.l2, 1, link(t.data[0])), Ok(false));
        assert_eq!(w.ft.info(t.data[0]).unwrap().ty, PageType::L1);
        assert_eq!(w.update(D1, t.l1, 10, rw(t.data[0])), Err(WrongType));
    }

    #[test]
    fn a_table_linked_twice_survives_one_unlink_and_is_devalidated_by_the_last() {
        let (mut w, t, _) = world();
        assert_eq!(w.update(D1, t.l2, 1, link(t.l1)), Ok(false));
        assert_eq!(w.ft.info(t.l1).unwrap().type_count, 2);
        assert_eq!(w.update(D1, t.l2, 1, 0), Ok(true));
        assert_eq!(w.ft.info(t.l1).unwrap().type_count, 1);
        assert_eq!(w.update(D1, t.l1, 10, rw(t.l1)), Err(WrongType));
        // The last link goes only once the table is empty (bounded work per update), whether
        // the entry is cleared or only loses its present bit ...
        let before = w.ft.frames.clone();
        let old = w.mem.read(t.l2, 0);
        for val in [0, old & !PRESENT, (old & !PRESENT) | NO_EXECUTE] {
            assert_eq!(w.update(D1, t.l2, 0, val), Err(TooDeep), "{val:#x}");
        }
        assert_eq!(w.ft.frames, before, "a refused unlink changes nothing");
        for i in 0..512 {
            if w.mem.read(t.l1, i) & PRESENT != 0 {
                assert_eq!(w.update(D1, t.l1, i, 0), Ok(true));
            }
        }
        // ... and then it devalidates the L1, which may then be written.
        assert_eq!(w.update(D1, t.l2, 0, 0), Ok(true));
        assert_eq!(w.ft.info(t.l1).unwrap(), idle(D1, 1));
        assert_eq!(w.ft.info(t.data[0]).unwrap().refs, 1);
        let f = w.alloc(D1).unwrap();
        assert_eq!(w.update(D1, t.l2, 0, link(f)), Ok(false));
        assert_eq!(w.update(D1, f, 0, rw(t.l1)), Ok(false));
    }

    #[test]
    fn rewriting_an_entry_with_its_own_value_frees_nothing() {
        let (mut w, t, u) = world();
        w.grant(D1, t.l1, 40, u.data[0], false).unwrap();
        let (before, grant) = (w.ft.frames.clone(), w.mem.read(t.l1, 40));
        assert_eq!(w.update(D1, t.l4, 0, link(t.l3)), Ok(true));
        assert_eq!(w.update(D1, t.l2, 0, link(t.l1)), Ok(true));
        assert_eq!(w.update(D1, t.l1, 0, rw(t.data[0])), Ok(true));
        assert_eq!(w.ft.frames, before);
        assert_eq!(w.mem.read(t.l1, 40), grant, "the L1 was never devalidated");
        assert!(w.ft.take_freed().is_empty());
    }

    #[test]
    fn a_failure_deep_in_validation_undoes_every_reference() {
        let (mut w, t, _) = world();
        // A new L2 candidate: two good L1s (one sharing data with the live tree), then an
        // L1 whose last entry sets GLOBAL.
        let (l2, a, b, c, d) = (
            w.alloc(D1).unwrap(),
            w.alloc(D1).unwrap(),
            w.alloc(D1).unwrap(),
            w.alloc(D1).unwrap(),
            w.alloc(D1).unwrap(),
        );
        w.mem.write(a, 0, rw(t.data[1]));
        w.mem.write(a, 1, ro(t.l1));
        w.mem.write(b, 5, rw(d));
        w.mem.write(l2, 0, link(a));
        w.mem.write(l2, 1, link(b));
        w.mem.write(l2, 2, link(a));
        w.mem.write(c, 0, rw(d));
        w.mem.write(c, 511, ro(d) | GLOBAL);
        w.mem.write(l2, 3, link(c));
        // A whole prepared subtree is more than one table's work for one update.
        let before = w.ft.frames.clone();
        assert_eq!(w.update(D1, t.l3, 1, link(l2)), Err(TooDeep));
        assert_eq!(w.ft.frames, before);
        // Built top-down instead: the L2 empty, then each L1 linked into it.
        let filled: Vec<(usize, u64)> = (0..4).map(|i| (i, w.mem.read(l2, i))).collect();
        for (i, _) in &filled {
            w.mem.write(l2, *i, 0);
        }
        assert_eq!(w.update(D1, t.l3, 1, link(l2)), Ok(false));
        for &(i, entry) in &filled[..3] {
            assert_eq!(w.update(D1, l2, i, entry), Ok(false));
        }
        // The bad L1 fails deep in its validation: every reference it took is undone.
        let before = w.ft.frames.clone();
        assert_eq!(w.update(D1, l2, 3, link(c)), Err(Reserved));
        assert_eq!(w.ft.frames, before);
        w.mem.write(c, 511, 0);
        assert_eq!(w.update(D1, l2, 3, link(c)), Ok(false));
        assert_eq!(w.ft.info(a).unwrap().type_count, 2);
        assert_eq!(w.ft.info(d).unwrap().type_count, 2);
        // Torn down bottom-up: each table emptied before its last link goes.
        assert_eq!(w.update(D1, t.l3, 1, 0), Err(TooDeep));
        for l1 in [a, b, c] {
            for i in 0..512 {
                if w.mem.read(l1, i) & PRESENT != 0 {
                    assert_eq!(w.update(D1, l1, i, 0), Ok(true));
                }
            }
        }
        for i in 0..4 {
            assert_eq!(w.update(D1, l2, i, 0), Ok(true));
        }
        assert_eq!(w.update(D1, t.l3, 1, 0), Ok(true));
        assert_eq!(w.ft.info(d).unwrap(), idle(D1, 1));
    }

    #[test]
    fn a_domain_has_at_most_max_tables_page_tables() {
        let mut w = World::with_frames(MAX_TABLES as usize + 64);
        let (t, _) = (w.build(D1), w.build(D2));
        let start = w.ft.tables_of(D1);
        assert!(start > 0 && start < 8, "{start}");
        // Empty L1s linked into the L2 (and, past its 511 free entries, into a second L2).
        let mut linked = Vec::new();
        let mut l2 = t.l2;
        let mut index = 1;
        while w.ft.tables_of(D1) < MAX_TABLES {
            if index == 512 {
                let next = w.alloc(D1).unwrap();
                assert_eq!(w.update(D1, t.l3, 1, link(next)), Ok(false));
                (l2, index) = (next, 0);
                continue;
            }
            let f = w.alloc(D1).unwrap();
            assert_eq!(w.update(D1, l2, index, link(f)), Ok(false));
            linked.push((l2, index));
            index += 1;
        }
        let f = w.alloc(D1).unwrap();
        let before = w.ft.frames.clone();
        assert_eq!(w.update(D1, l2, index, link(f)), Err(TooManyTables));
        assert_eq!(w.ft.frames, before, "a refused link changes nothing");
        // One table fewer makes room for one more.
        let (table, i) = linked.pop().unwrap();
        assert_eq!(w.update(D1, table, i, 0), Ok(true));
        assert_eq!(w.update(D1, l2, index, link(f)), Ok(false));
        // Another domain's quota is its own; a teardown gives the whole count back.
        assert!(w.ft.tables_of(D2) < 8);
        w.teardown(D1);
        assert_eq!(w.ft.tables_of(D1), 0);
    }

    #[test]
    fn hypervisor_written_pages_map_read_only_only() {
        let (mut w, t, _) = world();
        let s = w.alloc(D1).unwrap();
        w.ft.frames[(s - FIRST) as usize].hv_readonly = true;
        assert_eq!(w.update(D1, t.l1, 10, rw(s)), Err(Reserved));
        assert_eq!(w.update(D1, t.l1, 10, ro(s)), Ok(false));
    }

    #[test]
    fn grant_mappings() {
        let (mut w, t, u) = world();
        let g = u.data[3];
        assert_eq!(w.grant(D1, t.l1, 20, g, true), Ok(()));
        assert_eq!(
            w.mem.read(t.l1, 20),
            g << 12 | PRESENT | USER | NO_EXECUTE | GRANT_MAPPED | WRITABLE
        );
        assert_eq!(w.ft.info(g).unwrap().ty, PageType::Writable);
        assert_eq!(w.grant(D1, t.l1, 20, g, false), Err(Busy));
        assert_eq!(w.grant(D1, t.l1, 21, u.l1, true), Err(WrongType));
        assert_eq!(w.grant(D1, t.l1, 21, u.l1, false), Ok(()));
        assert_eq!(w.grant(D1, t.l2, 21, g, false), Err(NotPageTable));
        assert_eq!(w.grant(D1, u.l1, 21, g, false), Err(NotOwner));
        assert_eq!(w.update(D1, t.l1, 20, 0), Err(GrantEntry));
        assert_eq!(w.update(D1, t.l1, 20, ro(t.data[0])), Err(GrantEntry));
        assert_eq!(w.unmap(t.l1, 20, u.l1), Err(NotMapped));
        assert_eq!(w.unmap(t.l1, 20, g), Ok(false));
        assert_eq!(w.unmap(t.l1, 20, g), Err(NotMapped));
        assert_eq!(w.unmap(t.l1, 0, t.data[0]), Err(NotMapped));
        assert_eq!(w.ft.info(g).unwrap(), idle(D2, 2));
    }

    #[test]
    fn assign_release_and_put_page() {
        let (mut w, t, _) = world();
        assert_eq!(w.release(t.data[0], D1), Err(Busy));
        assert_eq!(w.release(t.l1, D1), Err(Busy));
        assert_eq!(w.op(|ft, _| ft.assign(t.data[0], D2, false)), Err(Busy));
        assert_eq!(w.op(|ft, _| ft.assign(FIRST - 1, D2, false)), Err(BadFrame));
        let f = w.alloc(D1).unwrap();
        assert_eq!(w.release(f, D2), Err(NotOwner));
        assert_eq!(w.release(f, D1), Ok(()));
        let f = w.alloc(D1).unwrap();
        w.allocated.remove(&f);
        assert!(w.ft.put_page(f));
        assert_eq!(w.ft.info(f), Some(FrameInfo::default()));
    }

    #[test]
    fn teardown_frees_exactly_the_owned_frames_when_nothing_is_shared() {
        let (mut w, _, u) = world();
        let owned = w.owned(D2);
        assert_eq!(w.teardown(D2), owned);
        assert!(owned.contains(&u.l4) && owned.len() == 8);
    }

    #[test]
    fn a_granted_frame_outlives_its_owner_until_unmapped() {
        let (mut w, t, u) = world();
        let g = t.data[0];
        w.grant(D2, u.l1, 30, g, true).unwrap();
        let owned = w.owned(D1);
        let freed = w.teardown(D1);
        assert_eq!(freed, owned.iter().copied().filter(|&m| m != g).collect());
        assert_eq!(
            w.ft.info(g).unwrap(),
            FrameInfo {
                owner: Some(D1),
                ty: PageType::Writable,
                type_count: 1,
                refs: 1,
                hv_readonly: false
            }
        );
        assert_eq!(w.unmap(u.l1, 30, g), Ok(true));
        assert_eq!(w.ft.info(g), Some(FrameInfo::default()));
    }

    #[test]
    fn a_grantee_dropping_its_mapping_implicitly_frees_the_dead_owners_frame() {
        // By unmapping it (the L1 that holds it cannot go while it does) ...
        let (mut w, t, u) = world();
        w.grant(D2, u.l1, 30, t.data[3], false).unwrap();
        w.teardown(D1);
        assert_eq!(w.update(D2, u.l2, 0, 0), Err(TooDeep));
        assert_eq!(
            w.unmap(u.l1, 30, t.data[3]),
            Ok(true),
            "the dead owner's frame is free"
        );
        assert_eq!(w.mem.read(u.l1, 30), 0);
        assert_eq!(w.unmap(u.l1, 30, t.data[3]), Err(NotMapped));
        // ... or by dying.
        let (mut w, t, u) = world();
        w.grant(D2, u.l1, 30, t.data[3], false).unwrap();
        w.teardown(D1);
        assert!(w.teardown(D2).contains(&t.data[3]));
    }

    /// xorshift64*: deterministic, no crates.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
            (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
        }
    }

    /// Random operations by up to three domains at a time, the invariant checked after each
    /// (and, by `World::op`, that every refused operation changed nothing).
    #[test]
    fn counts_stay_exact_under_random_operations() {
        for seed in 1..=6u64 {
            let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut w = World::new();
            let mut next_dom = 1;
            let mut grants: Vec<(u64, usize, u64)> = Vec::new();
            let mut outcomes: BTreeMap<&str, [u32; 2]> = BTreeMap::new();
            for _ in 0..3000 {
                let live: Vec<DomainId> = w.roots.keys().copied().collect();
                let Some(dom) = r.pick(&live).filter(|_| r.below(60) != 0) else {
                    if live.len() < 3 && w.ft.frames.iter().filter(|f| f.refs == 0).count() >= 8 {
                        w.build(next_dom);
                        next_dom += 1;
                    }
                    continue;
                };
                let mine: Vec<u64> = w.owned(dom).into_iter().collect();
                let tables: Vec<u64> = mine
                    .iter()
                    .copied()
                    .filter(|&m| w.ft.info(m).unwrap().ty.level().is_some())
                    .collect();
                let l1s: Vec<u64> = tables
                    .iter()
                    .copied()
                    .filter(|&m| w.ft.info(m).unwrap().ty == PageType::L1)
                    .collect();
                let any = FIRST + r.below(COUNT as u64 + 2);
                let frame = |r: &mut Rng| {
                    if r.below(8) == 0 {
                        any
                    } else {
                        r.pick(&mine).unwrap_or(any)
                    }
                };
                let table = |r: &mut Rng, of: &[u64]| {
                    if r.below(4) == 0 {
                        frame(r)
                    } else {
                        r.pick(of).unwrap_or(any)
                    }
                };
                let index = r.pick(&[0, 1, 2, 3, 4, 5, 255, 256]).unwrap();
                let (name, ok) = match r.below(12) {
                    0 => ("assign", w.alloc(dom).is_some()),
                    1 => {
                        let m = frame(&mut r);
                        let ok = w.release(m, dom).is_ok();
                        ("release", ok)
                    }
                    2 => {
                        let (l1, target) = (
                            table(&mut r, &l1s),
                            r.pick(&w.allocated.keys().copied().collect::<Vec<_>>())
                                .unwrap(),
                        );
                        let writable = r.below(2) == 0;
                        let ok = w
                            .op(|ft, mem| ft.map_grant(dom, l1, index, target, writable, mem))
                            .is_ok();
                        if ok {
                            grants.push((l1, index, target));
                        }
                        ("map_grant", ok)
                    }
                    3 => {
                        // A recorded mapping (gone if its L1 was unlinked), or a made-up one.
                        let (l1, index, target) = match r.below(3) {
                            0 => (frame(&mut r), index, frame(&mut r)),
                            _ if grants.is_empty() => continue,
                            _ => grants.swap_remove(r.below(grants.len() as u64) as usize),
                        };
                        let owned = w.allocated.contains_key(&target);
                        let res = w.unmap(l1, index, target);
                        if res == Ok(true) {
                            assert!(!owned, "freed a frame still allocated");
                        }
                        ("unmap_grant", res.is_ok())
                    }
                    _ => {
                        let (table, target) = (table(&mut r, &tables), frame(&mut r));
                        let mut val =
                            target << 12 | PRESENT | USER | ACCESSED | (r.below(2) * WRITABLE);
                        match r.below(24) {
                            0 => val &= !PRESENT,
                            1 => val &= !USER,
                            2 => {
                                val |= r
                                    .pick(&[HUGE_OR_PAT, GLOBAL, GRANT_MAPPED, 1 << 52, 1 << 11])
                                    .unwrap()
                            }
                            3 => val = link(table),
                            _ => {}
                        }
                        let ptr = at(table, index) + if r.below(40) == 0 { 4 } else { 0 };
                        let ok = w.op(|ft, mem| ft.update_entry(dom, ptr, val, mem)).is_ok();
                        for m in w.ft.take_freed() {
                            assert!(
                                !w.allocated.contains_key(&m)
                                    && w.ft.info(m) == Some(FrameInfo::default())
                            );
                        }
                        ("update_entry", ok)
                    }
                };
                outcomes.entry(name).or_default()[ok as usize] += 1;
                if r.below(150) == 0 {
                    let before: Vec<FrameInfo> = w.ft.frames.clone();
                    let freed = w.teardown(dom);
                    for (i, (b, a)) in before.iter().zip(&w.ft.frames).enumerate() {
                        let m = FIRST + i as u64;
                        assert_eq!(freed.contains(&m), b.refs > 0 && a.refs == 0, "{m:#x}");
                    }
                }
                // Each domain's page-table count is exactly its frames typed as tables.
                let mut typed: BTreeMap<DomainId, u32> = BTreeMap::new();
                for f in &w.ft.frames {
                    if let (Some(_), Some(owner), true) = (f.ty.level(), f.owner, f.type_count > 0)
                    {
                        *typed.entry(owner).or_default() += 1;
                    }
                }
                assert_eq!(typed, w.ft.tables, "page tables per domain");
            }
            println!("seed {seed}: {outcomes:?}, {} domains", next_dom - 1);
            // The sequence must actually exercise both outcomes of the interesting operations.
            for name in ["update_entry", "map_grant", "unmap_grant", "release"] {
                let [fail, ok] = outcomes[name];
                assert!(
                    fail > 0 && ok > 0,
                    "seed {seed}: {name} {fail} refused / {ok} done"
                );
            }
        }
    }
}
