//! Memory: the page-table entries guests may write through `mmu_update` and
//! `update_va_mapping`, and the structures the memory and grant hypercalls read.
//!
//! Domino's guests are paravirtualized in the paper's sense: they read their page tables
//! directly (mapped read-only at [`crate::layout::PT_WINDOW`]) and change them only through
//! the hypervisor, which validates every entry (Xen's `mod_l1_entry` .. `mod_l4_entry`).
//! Page-table entries hold machine addresses, as in Xen's PV interface.

/// Entry bits (Intel SDM vol. 3A, 4.5).
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const NO_CACHE: u64 = 1 << 4;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// Huge page in a level-2 or level-3 entry (refused); PAT in a level-1 entry (refused).
    pub const HUGE_OR_PAT: u64 = 1 << 7;
    /// Global: survives a CR3 load, so another domain could use it (refused).
    pub const GLOBAL: u64 = 1 << 8;
    /// Software bit the hypervisor sets on an entry that maps a grant: a guest may neither
    /// write it nor change such an entry except through `grant_op Unmap`.
    pub const GRANT_MAPPED: u64 = 1 << 9;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The machine address bits (a 52-bit physical address space).
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    /// Every bit a guest may set in an entry it writes: the rest (bits 7-11 and 52-62) are
    /// refused as reserved, huge, global or the hypervisor's.
    pub const GUEST_ALLOWED: u64 = PRESENT
        | WRITABLE
        | USER
        | WRITE_THROUGH
        | NO_CACHE
        | ACCESSED
        | DIRTY
        | ADDRESS
        | NO_EXECUTE;
}

/// One request of `mmu_update` (Xen's `struct mmu_update`): write `val` to the page-table
/// entry at machine address `ptr` (8-byte aligned, in a page table of the caller).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    pub ptr: u64,
    pub val: u64,
}

/// The argument of `grant_op Copy` (a simpler Xen `gnttab_copy`): `len` bytes between
/// offset `offset` of the frame that `granter` granted as `gref`, and the caller's memory at
/// `local`. The range must stay within the granted page; writing to it (`to_grant` non-zero)
/// needs a read-write grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantCopy {
    pub granter: u32,
    pub gref: u32,
    pub offset: u32,
    pub len: u32,
    pub local: u64,
    /// Non-zero: copy from `local` into the granted frame; zero: out of it.
    pub to_grant: u32,
    pub pad: u32,
}

/// A machine frame number from a machine address.
pub const fn mfn(machine_address: u64) -> u64 {
    machine_address >> 12
}
