//! Where things are in a guest's address space.
//!
//! The lower half (below `0x0000_8000_0000_0000`) is the guest's; the upper half is the
//! hypervisor's, present in every address space but inaccessible from ring 3. Guests are
//! linked to run at [`IMAGE_BASE`] (workloads/link.ld).

/// Lowest address a guest image may be loaded at.
pub const IMAGE_BASE: u64 = 0x40_0000;
/// Highest address (exclusive) a guest image may use.
pub const IMAGE_LIMIT: u64 = 0x1000_0000;
/// The read-only shared-info page ([`crate::shared::SharedInfo`]).
pub const SHARED_INFO: u64 = 0x1000_0000;
/// The guest-writable counters page ([`crate::shared::Counters`]), read by the hypervisor.
pub const COUNTERS: u64 = 0x1000_1000;
/// Where a guest maps frames itself (`update_va_mapping`, `grant_op Map`): 2 MiB whose
/// level-1 table the hypervisor builds, empty, at creation.
pub const MAP_AREA: u64 = 0x3000_0000;
/// Bytes of [`MAP_AREA`] (one level-1 table's worth).
pub const MAP_AREA_BYTES: u64 = 2 << 20;
/// The guest's page tables, mapped read-only one per page in the order of
/// [`crate::shared::MemoryInfo::pt_window`]: a guest reads its own page tables here.
pub const PT_WINDOW: u64 = 0x3020_0000;
/// Domain0's read-only copy of the experiment plan ([`crate::tool::plan::Plan`], postcard).
pub const PLAN: u64 = 0x2000_0000;
/// Largest plan the hypervisor maps.
pub const PLAN_LIMIT: u64 = 1 << 20;
/// Top of vCPU 0's stack; vCPU n's stack top is `STACK_TOP - n * STACK_STRIDE`.
pub const STACK_TOP: u64 = 0x7fff_0000;
/// Bytes of stack each vCPU gets.
pub const STACK_BYTES: u64 = 64 * 1024;
/// Distance between vCPU stacks (a guard page apart).
pub const STACK_STRIDE: u64 = STACK_BYTES + 0x1000;
/// One past the highest guest-usable address.
pub const USER_LIMIT: u64 = 0x0000_8000_0000_0000;
