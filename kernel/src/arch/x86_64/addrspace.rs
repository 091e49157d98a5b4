//! A domain's address space: its own PML4, the hypervisor's upper half shared.
//!
//! Every frame the address space holds, guest pages and page tables alike, is recorded, so
//! that dropping it returns each one to the frame allocator: destroying a domain cannot leak
//! memory. Guest pages come one frame at a time from wherever the allocator finds them: as
//! in the paper, a domain's memory need not be contiguous.
//!
//! The few frames of a domain that the hypervisor itself reads and writes for the domain's
//! whole life (its shared-info and counters pages) are reached only through a [`HeldPage`],
//! which holds the frame for as long as it exists.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use abi::control::DomainId;
use kerncore::frame_table::MmError;

use super::paging::{PHYS_OFFSET, phys_to_virt};

/// Where an address space's frames come from and go back to: the hypervisor's frame
/// allocator and frame table, which live above this layer (`crate::mm::frame_table::Machine`).
pub trait FrameSource: Sync {
    /// A free frame's physical address, or `None` when memory is exhausted.
    fn alloc(&self) -> Option<u64>;
    /// Returns a frame taken with [`FrameSource::alloc`] and never handed to the frame table.
    fn free(&self, phys: u64);
    /// Records `frames` as `owner`'s in the frame table and validates and pins the tables
    /// under `pml4` (see [`AddressSpace::adopt`]). Each frame of `hv_held` gets one more
    /// reference, the hypervisor's own, which only [`FrameSource::put`] drops: until then
    /// the frame is never freed nor given back by the guest, whatever happens to the address
    /// space.
    fn adopt(
        &self,
        owner: DomainId,
        pml4: u64,
        frames: &[u64],
        hv_readonly: &[u64],
        hv_held: &[u64],
    ) -> Result<(), MmError>;
    /// Drops every reference an adopted space holds and frees what nobody else holds (not
    /// the hypervisor's references on its held frames: see [`FrameSource::put`]).
    fn teardown(&self, owner: DomainId, pml4: u64, frames: &[u64]);
    /// Drops the hypervisor's reference on a held frame (taken by [`FrameSource::adopt`]),
    /// and frees the frame if that was the last reference.
    fn put(&self, phys: u64);
    /// Takes a reference on `owner`'s data frame `phys` for the hypervisor to read (and, if
    /// `write`, to write) through the direct map for a moment ([`FrameAccess`]): until
    /// [`FrameSource::end_access`], the frame is not freed and, if `write`, is not and
    /// cannot become a page table.
    fn access(&self, phys: u64, owner: DomainId, write: bool) -> Result<(), MmError>;
    /// Drops what [`FrameSource::access`] took (freeing the frame if that was the last
    /// reference).
    fn end_access(&self, phys: u64, write: bool);
    /// The address space that mapped the shared image frames `frames` (the frames of one
    /// image, see [`AddressSpace::share`]) is gone: one user of that image fewer.
    fn release_shared(&self, frames: &[u64]);
}

/// Takes a free frame from `source` and zeroes it: a fresh page (a guest's, or one of its
/// page tables) with nothing left in it from its last user.
pub fn alloc_zeroed(source: &dyn FrameSource) -> Option<u64> {
    let phys = source.alloc()?;
    // SAFETY: a frame `alloc` just returned is free RAM, direct-mapped (the allocator hands
    // out only direct-mapped frames), and the caller's alone until it hands it on.
    unsafe { phys_to_virt(phys).as_mut_ptr::<u8>().write_bytes(0, 4096) };
    Some(phys)
}

/// Takes a free frame from `source`, zeroes it, and lets `fill` write it (a page of a shared
/// image, loaded once).
pub fn alloc_filled(source: &dyn FrameSource, fill: impl FnOnce(&mut [u8])) -> Option<u64> {
    let phys = alloc_zeroed(source)?;
    // SAFETY: as in `alloc_zeroed`: free RAM, direct-mapped, and the caller's alone until it
    // hands it on, so this is the only reference to those 4096 bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(phys).as_mut_ptr(), 4096) };
    fill(page);
    Some(phys)
}

/// A moment's access to a domain's data frame through the direct map, for a grant copy:
/// the frame is held (not freed, and if writable not a page table) until the access drops.
///
/// Copies are plain byte moves with no Rust reference to the frame: the owner may be
/// writing it from another CPU at the same time, as a device would.
pub struct FrameAccess<'a> {
    phys: u64,
    write: bool,
    source: &'a dyn FrameSource,
}

impl<'a> FrameAccess<'a> {
    /// Holds `owner`'s frame `phys` (page-aligned) for reading, and for writing if `write`.
    pub fn new(
        source: &'a dyn FrameSource,
        phys: u64,
        owner: DomainId,
        write: bool,
    ) -> Result<Self, MmError> {
        source.access(phys & !0xfff, owner, write)?;
        Ok(FrameAccess {
            phys: phys & !0xfff,
            write,
            source,
        })
    }

    /// The direct-map address of `len` bytes at `offset`, checked to lie in the frame.
    fn at(&self, offset: usize, len: usize) -> Result<*mut u8, abi::error::Errno> {
        if offset.checked_add(len).is_none_or(|end| end > 4096) {
            return Err(abi::error::Errno::Inval);
        }
        Ok(phys_to_virt(self.phys + offset as u64).as_mut_ptr::<u8>())
    }

    /// Copies `len` bytes from guest address `src` (in the address space loaded now) into
    /// the frame at `offset`. The access must be writable.
    pub fn copy_from_guest(
        &self,
        offset: usize,
        len: usize,
        src: u64,
    ) -> Result<(), abi::error::Errno> {
        assert!(self.write, "a copy into a frame held for reading");
        let dst = self.at(offset, len)?;
        // SAFETY: `dst..dst + len` lies in the frame (`at`), which is held, direct-mapped and
        // not a page table (the writable access) until `self` drops; no Rust reference to
        // it exists.
        unsafe { super::guest::copy_from_guest_raw(dst, len, src) }
    }

    /// Copies `len` bytes of the frame at `offset` to guest address `dst` (in the address
    /// space loaded now).
    pub fn copy_to_guest(
        &self,
        offset: usize,
        len: usize,
        dst: u64,
    ) -> Result<(), abi::error::Errno> {
        let src = self.at(offset, len)?;
        // SAFETY: `src..src + len` lies in the frame (`at`), held and direct-mapped until
        // `self` drops.
        unsafe { super::guest::copy_to_guest_raw(dst, src, len) }
    }
}

impl Drop for FrameAccess<'_> {
    fn drop(&mut self) {
        self.source.end_access(self.phys, self.write);
    }
}

/// How a guest page may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub writable: bool,
    pub executable: bool,
}

/// Out of frames while building the address space.
#[derive(Debug)]
pub struct OutOfMemory;

/// Hands frames to the page-table code and remembers them.
struct Recorder<'a>(&'static dyn FrameSource, &'a mut Vec<u64>);

// SAFETY: every frame returned comes from the frame allocator, unused by anyone else, and
// is recorded so that it is freed exactly once, when the address space is dropped.
unsafe impl FrameAllocator<Size4KiB> for Recorder<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let phys = self.0.alloc()?;
        self.1.push(phys);
        Some(PhysFrame::containing_address(PhysAddr::new(phys)))
    }
}

/// A guest address space.
pub struct AddressSpace {
    source: &'static dyn FrameSource,
    pml4: u64,
    /// Every frame owned: the PML4, lower-level tables and guest pages.
    frames: Vec<u64>,
    /// Where each frame is in `frames`, kept from adoption on, when the domain starts taking
    /// and giving back frames one at a time (memory reservations): forgetting a frame is a
    /// lookup, not a search of every frame it holds (Xen unlinks a page from its owner's
    /// `page_list` in constant time). Empty while building.
    positions: BTreeMap<u64, usize>,
    /// The domain that owns its frames in the frame table, once adopted
    /// ([`AddressSpace::adopt`]); until then its frames are plain allocations.
    owner: Option<DomainId>,
    /// The frames of a shared image it uses ([`AddressSpace::share`]), owned by no domain.
    shared: Vec<u64>,
}

/// Address bits of a page-table entry.
const ENTRY_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Flags of an entry pointing at a lower-level table the hypervisor built.
const TABLE_FLAGS: u64 = 0x7; // present, writable, user

/// Reads entry `index` of the table at `table`.
fn read_entry(table: u64, index: usize) -> u64 {
    // SAFETY: `table` is a page-table frame of a live address space, direct-mapped;
    // `index` < 512 keeps the read inside it; an aligned 8-byte load is atomic.
    unsafe {
        phys_to_virt(table)
            .as_ptr::<u64>()
            .add(index)
            .read_volatile()
    }
}

/// The index of `va`'s entry at `level` (4 = PML4 .. 1 = L1).
fn index_at(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

impl AddressSpace {
    /// An address space with nothing in the lower half and the hypervisor's upper half.
    pub fn new(source: &'static dyn FrameSource) -> Result<AddressSpace, OutOfMemory> {
        let pml4 = alloc_zeroed(source).ok_or(OutOfMemory)?;
        let kernel = super::boot::boot_pml4_phys();
        // SAFETY: both tables are direct-mapped frames; the new one is ours alone, the
        // kernel's upper-half entries are only read. Sharing them (rather than copying the
        // tables below) keeps later changes to the direct map visible everywhere.
        unsafe {
            let dst = phys_to_virt(pml4).as_mut_ptr::<u64>();
            let src = phys_to_virt(kernel).as_ptr::<u64>();
            core::ptr::copy_nonoverlapping(src.add(256), dst.add(256), 256);
        }
        Ok(AddressSpace {
            source,
            pml4,
            frames: alloc::vec![pml4],
            positions: BTreeMap::new(),
            owner: None,
            shared: Vec::new(),
        })
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: `pml4` is this address space's own top-level table, direct-mapped at
        // PHYS_OFFSET, and `&mut self` makes this the only mapper for it.
        unsafe {
            let table = &mut *phys_to_virt(self.pml4).as_mut_ptr::<PageTable>();
            OffsetPageTable::new(table, VirtAddr::new(PHYS_OFFSET))
        }
    }

    /// Maps a fresh zeroed frame at the page `va` with `access`, for ring 3, and returns the
    /// frame's physical address. An already-mapped page is returned as it is.
    pub fn map_new(&mut self, va: u64, access: Access) -> Result<u64, OutOfMemory> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
        if let Ok(frame) = x86_64::structures::paging::Translate::translate_addr(
            &self.mapper(),
            page.start_address(),
        )
        .ok_or(())
        {
            return Ok(frame.as_u64());
        }
        let phys = alloc_zeroed(self.source).ok_or(OutOfMemory)?;
        self.frames.push(phys);
        let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE;
        if access.writable {
            flags |= Flags::WRITABLE;
        }
        if !access.executable {
            flags |= Flags::NO_EXECUTE;
        }
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        // SAFETY: the frame is fresh and zeroed, the page was unmapped, and the address
        // space is not loaded on any CPU while it is being built (a running domain's
        // mappings are not changed here), so no stale TLB entry can exist.
        unsafe { self.map_building(page, frame, flags) }.map(|()| phys)
    }

    /// Maps `page` to `frame` with `flags` while building, the page-table frames it takes
    /// recorded as this space's.
    ///
    /// # Safety
    /// The frame must be safe for the guest to reach with `flags`, and the address space
    /// must not be loaded on any CPU (so no stale TLB entry can exist for `page`).
    unsafe fn map_building(
        &mut self,
        page: Page<Size4KiB>,
        frame: PhysFrame<Size4KiB>,
        flags: Flags,
    ) -> Result<(), OutOfMemory> {
        let mut tables = core::mem::take(&mut self.frames);
        let source = self.source;
        // SAFETY: the caller's promise (this function's `# Safety`).
        let result = unsafe {
            self.mapper()
                .map_to(page, frame, flags, &mut Recorder(source, &mut tables))
        };
        self.frames = tables;
        result.map(|flush| flush.ignore()).map_err(|_| OutOfMemory)
    }

    /// Records that this address space uses the frames of one shared image (a user of it,
    /// which dropping the space gives up: [`FrameSource::release_shared`]); called once,
    /// before any of them is mapped with [`AddressSpace::map_shared`].
    pub fn share(&mut self, frames: Vec<u64>) {
        assert!(self.shared.is_empty(), "one shared image per address space");
        self.shared = frames;
    }

    /// Maps the shared image frame `phys` (one of [`AddressSpace::share`]'s) at the page
    /// `va`, read-only, for ring 3, while building. Not counted in [`AddressSpace::frames`]:
    /// it is no domain's.
    pub fn map_shared(&mut self, va: u64, phys: u64, executable: bool) -> Result<(), OutOfMemory> {
        assert!(
            self.owner.is_none() && self.shared.contains(&phys),
            "a shared frame is mapped while building, after `share`"
        );
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
        let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE;
        if !executable {
            flags |= Flags::NO_EXECUTE;
        }
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        // SAFETY: the frame holds the image's bytes and is mapped read-only (nothing the
        // guest does through this mapping changes it); the address space is not loaded on
        // any CPU while it is being built, so no stale TLB entry can exist.
        unsafe { self.map_building(page, frame, flags) }
    }

    /// Copies `bytes` into the guest pages starting at `va` (already mapped by `map_new`).
    pub fn write(&mut self, va: u64, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let at = va + done as u64;
            let page_left = (4096 - (at % 4096)) as usize;
            let n = page_left.min(bytes.len() - done);
            let phys = self
                .map_new(
                    at,
                    Access {
                        writable: false,
                        executable: false,
                    },
                )
                .expect("page mapped before write");
            // SAFETY: `phys` is a frame of this address space, direct-mapped; the copy stays
            // within the page (`n <= page_left`).
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes[done..].as_ptr(),
                    phys_to_virt(phys + at % 4096).as_mut_ptr(),
                    n,
                );
            }
            done += n;
        }
    }

    /// Frames held, page tables included.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// The level-1 table and the index in it of the entry that maps `va`, if the tables
    /// down to level 1 exist (no superpages: the hypervisor builds none, and refuses them).
    pub fn l1_entry(&self, va: u64) -> Option<(u64, usize)> {
        // The guest's half only: a guest's address (a grant's) must not walk the
        // hypervisor's tables. (Today the hypervisor's half is all 2 MiB pages, which the
        // walk refuses anyway; an audit asked for the bound, session 21.)
        if va >= abi::layout::USER_LIMIT {
            return None;
        }
        let mut table = self.pml4;
        for level in (2..=4).rev() {
            let entry = read_entry(table, index_at(va, level));
            if entry & 1 == 0 || entry & (1 << 7) != 0 {
                return None;
            }
            table = entry & ENTRY_ADDRESS;
        }
        Some((table, index_at(va, 1)))
    }

    /// Builds the tables down to the level-1 table covering `va`, empty, while the address
    /// space is being built.
    pub fn ensure_l1(&mut self, va: u64) -> Result<u64, OutOfMemory> {
        let mut table = self.pml4;
        for level in (2..=4).rev() {
            let index = index_at(va, level);
            let entry = read_entry(table, index);
            table = if entry & 1 != 0 {
                entry & ENTRY_ADDRESS
            } else {
                let fresh = alloc_zeroed(self.source).ok_or(OutOfMemory)?;
                self.frames.push(fresh);
                // SAFETY: `table` is one of this address space's tables, direct-mapped,
                // not yet loaded on any CPU (creation time): no TLB can hold the entry.
                unsafe {
                    phys_to_virt(table)
                        .as_mut_ptr::<u64>()
                        .add(index)
                        .write_volatile(fresh | TABLE_FLAGS)
                };
                fresh
            };
        }
        Ok(table)
    }

    /// Every page table of the guest's half, the PML4 first, parents before children.
    pub fn tables(&self) -> Vec<u64> {
        let mut out = alloc::vec![self.pml4];
        let mut level_tables = alloc::vec![self.pml4];
        for level in (2..=4).rev() {
            let mut next = Vec::new();
            for &t in &level_tables {
                let count = if level == 4 { 256 } else { 512 };
                for i in 0..count {
                    let e = read_entry(t, i);
                    if e & 1 != 0 && e & (1 << 7) == 0 {
                        next.push(e & ENTRY_ADDRESS);
                    }
                }
            }
            out.extend_from_slice(&next);
            level_tables = next;
        }
        out
    }

    /// Maps every page table read-only at `window` (one page each, in the order of
    /// [`AddressSpace::tables`]), so that the guest can read its own page tables; returns
    /// the tables, at most `max`. Called last when building, after the window's own
    /// level-1 table exists (so mapping adds no table).
    pub fn map_tables_at(&mut self, window: u64, max: usize) -> Result<Vec<u64>, OutOfMemory> {
        let l1 = self.ensure_l1(window)?;
        let tables = self.tables();
        let shown = &tables[..tables.len().min(max)];
        for (i, &t) in shown.iter().enumerate() {
            let va = window + (i as u64) * 4096;
            let index = index_at(va, 1);
            debug_assert_eq!(self.l1_entry(va).map(|(t, _)| t), Some(l1));
            // Present, user, no-execute; not writable.
            let entry = t | 0x5 | (1 << 63);
            // SAFETY: as in `ensure_l1`: a table of this address space at creation time.
            unsafe {
                phys_to_virt(l1)
                    .as_mut_ptr::<u64>()
                    .add(index)
                    .write_volatile(entry)
            };
        }
        Ok(shown.to_vec())
    }

    /// Hands the address space to domain `owner`: its frames are recorded as the domain's in
    /// the frame table (those in `hv_readonly` as pages only the hypervisor writes), and its
    /// tables are validated and pinned, as any table a guest built would be. From now on the
    /// tables change only through validated updates, and dropping the address space tears
    /// them down through the frame table.
    ///
    /// The frames of `hv_held` (distinct frames of this address space) are pages the
    /// hypervisor reads and writes for the domain's whole life: each comes back as a
    /// [`HeldPage`], which holds a reference on it until the last handle is dropped.
    ///
    /// # Panics
    /// If the space was adopted before, or `hv_held` names a frame that is not its own or
    /// names one twice.
    pub fn adopt<const N: usize>(
        &mut self,
        owner: DomainId,
        hv_readonly: &[u64],
        hv_held: [u64; N],
    ) -> Result<[HeldPage; N], MmError> {
        assert!(self.owner.is_none(), "an address space is adopted once");
        for (i, phys) in hv_held.iter().enumerate() {
            assert!(
                self.frames.contains(phys) && !hv_held[..i].contains(phys),
                "held frame {phys:#x} is not a distinct frame of this address space"
            );
        }
        self.source
            .adopt(owner, self.pml4, &self.frames, hv_readonly, &hv_held)?;
        self.owner = Some(owner);
        self.positions = self
            .frames
            .iter()
            .enumerate()
            .map(|(i, &f)| (f, i))
            .collect();
        let source = self.source;
        Ok(hv_held.map(|phys| HeldPage {
            phys,
            _hold: Arc::new(Hold { phys, source }),
        }))
    }

    /// Records a frame the domain took (memory reservation), already assigned to it (the
    /// space is adopted).
    pub fn push_frame(&mut self, frame: u64) {
        debug_assert!(
            self.owner.is_some(),
            "frames are taken once the space is adopted"
        );
        self.positions.insert(frame, self.frames.len());
        self.frames.push(frame);
    }

    /// Forgets a frame the domain gave back (already released in the frame table): one
    /// lookup in `positions`, whichever frame it is (it was a search from the newest, which
    /// for the oldest of 32,768 frames held took 1.7 ms of `-icount shift=3` time).
    pub fn remove_frame(&mut self, frame: u64) -> bool {
        let Some(i) = self.positions.remove(&frame) else {
            return false;
        };
        self.frames.swap_remove(i);
        if let Some(&moved) = self.frames.get(i) {
            self.positions.insert(moved, i);
        }
        true
    }

    /// The physical address of the PML4.
    pub fn pml4(&self) -> u64 {
        self.pml4
    }
}

/// Loads the hypervisor's own address space (no guest mapped) on the current CPU.
pub fn activate_kernel() {
    // SAFETY: the boot PML4 maps the hypervisor's upper half like every address space, and
    // is never freed.
    unsafe { super::percpu::load_cr3(super::boot::boot_pml4_phys()) };
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // Freeing tables a CPU still walks would let a reused frame become that CPU's page
        // tables (and its entries, global ones included, its TLB's): `destroy` waits until no
        // CPU records the PML4 (`percpu::load_cr3`). A drop that did not wait is a bug.
        if let Some(cpu) = super::percpu::cpus_holding(self.pml4).next() {
            panic!(
                "address space {:#x} freed while CPU {cpu}'s CR3 may still hold it",
                self.pml4
            );
        }
        if let Some(owner) = self.owner {
            // Every reference its tables hold is dropped; frames still mapped by another
            // domain (grants) stay until that domain unmaps them.
            self.source.teardown(owner, self.pml4, &self.frames);
        } else {
            for &frame in &self.frames {
                self.source.free(frame);
            }
        }
        if !self.shared.is_empty() {
            self.source.release_shared(&self.shared);
        }
    }
}

/// Loads the address space whose PML4 is at `pml4` on the current CPU.
pub fn activate_pml4(pml4: u64) {
    // SAFETY: `pml4` is the PML4 of a live domain (its vCPU is claimed by this CPU), which
    // maps the hypervisor's upper half like every address space; the domain's frames are
    // freed only once no CPU records it (`percpu::cpus_holding`), and `load_cr3` records it
    // before the write.
    unsafe { super::percpu::load_cr3(pml4) };
}

/// A frame of a domain that the hypervisor reads and writes for the domain's whole life
/// (the shared-info and counters pages, `abi::shared`), made by [`AddressSpace::adopt`].
///
/// Why its accesses are sound, once for all of them:
/// - **The memory is live.** The handles of a frame share (by `Arc`) one [`Hold`], which
///   owns a reference on the frame in the frame table, taken by `adopt` and dropped only by
///   the `Hold`'s `Drop`, after the last handle. While that reference is held
///   the frame is never freed to the allocator: a guest cannot give it back (a frame with
///   more than its allocation reference is never released), and tearing the address space
///   down leaves it allocated. So the frame stays this domain's RAM, direct-mapped (the
///   allocator hands out only direct-mapped frames), for the handle's whole life, and every
///   reference an accessor returns borrows the handle.
/// - **No access is out of the page or misaligned.** Every accessor checks that the field
///   lies inside the 4 KiB frame and is aligned for its type, and panics otherwise (offsets
///   come from `offset_of!` on `abi::shared`'s `#[repr(C)]` types).
/// - **No data race.** The hypervisor touches the page only through atomics (a plain
///   [`HeldPage::write`] is byte-wise atomic too), and there is one [`Hold`] per frame
///   (`adopt` refuses a frame twice, and a frame belongs to one address space). The guest may write the page at any time from its own mapping (the counters
///   page is guest-writable): like a device's DMA, that is outside the Rust program, and
///   atomic accesses are what such memory needs. Every bit pattern is a valid integer.
///
/// The frame table must also keep a held frame from ever becoming a page table, since the
/// hypervisor writes it without validation: that is `crate::mm`'s part of the contract.
///
/// A handle keeps the frame's address beside its `Arc`, so that an access reads only the
/// handle (in the vCPU) and the page: under TCG every other page a domain switch touches
/// after its CR3 load costs a TLB fill, and the `Arc`s' allocations of a switch's two vCPUs
/// were three of them (`scripts/tlb-fills`).
#[derive(Clone)]
pub struct HeldPage {
    phys: u64,
    _hold: Arc<Hold>,
}

/// The reference on a held frame that its [`HeldPage`] handles share, given back when the
/// last of them is dropped.
struct Hold {
    phys: u64,
    source: &'static dyn FrameSource,
}

impl HeldPage {
    /// The address of `size` bytes at `offset`, checked to lie in the frame and to be
    /// aligned to `size` (a power of two).
    fn at(&self, offset: usize, size: usize) -> *mut u8 {
        assert!(
            offset.is_multiple_of(size) && offset.checked_add(size).is_some_and(|end| end <= 4096),
            "field of {size} bytes at {offset:#x} of a held page"
        );
        phys_to_virt(self.phys + offset as u64).as_mut_ptr::<u8>()
    }

    /// The byte at `offset`, as an atomic.
    pub fn atomic_u8(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: in the frame, which lives as long as `self` (see the type's doc); any
        // alignment suits a byte; accessed only atomically by the hypervisor.
        unsafe { AtomicU8::from_ptr(self.at(offset, 1)) }
    }

    /// The 4-byte word at `offset` (4-byte aligned), as an atomic.
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as in `atomic_u8`; `at` checked the alignment.
        unsafe { AtomicU32::from_ptr(self.at(offset, 4).cast()) }
    }

    /// The 8-byte word at `offset` (8-byte aligned), as an atomic.
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `atomic_u8`; `at` checked the alignment.
        unsafe { AtomicU64::from_ptr(self.at(offset, 8).cast()) }
    }

    /// Reads the 8-byte word at `offset`, which the guest may be changing (a relaxed load).
    pub fn read_u64(&self, offset: usize) -> u64 {
        self.atomic_u64(offset).load(Ordering::Relaxed)
    }

    /// Writes `bytes` at `offset`, one relaxed atomic byte store each (so a guest reading
    /// meanwhile sees old or new bytes, nothing worse); used to fill a page once.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= 4096),
            "{} bytes at {offset:#x} of a held page",
            bytes.len()
        );
        for (i, &b) in bytes.iter().enumerate() {
            self.atomic_u8(offset + i).store(b, Ordering::Relaxed);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.source.put(self.phys);
    }
}
