//! Per-CPU storage: a header reached through GS, and [`PerCpu`] arrays indexed by CPU.
//!
//! Each CPU's GS base (IA32_GS_BASE) points at a [`CpuHeader`] that the kernel owns,
//! usually as the first field of its own `#[repr(C)]` per-CPU structure (the syscall entry
//! will want a kernel stack pointer and a scratch slot at fixed GS offsets next to it). The
//! header starts with a pointer to itself, so `mov gs:[0]` yields an ordinary pointer to the
//! whole area, and holds the CPU index and APIC id, so [`cpu_index`] is one instruction.
//!
//! While in the kernel IA32_GS_BASE holds this pointer; when ring-3 guests arrive, the kernel
//! keeps the guest's GS base in IA32_KERNEL_GS_BASE and `swapgs` on every entry and exit.
//!
//! [`PerCpu<T>`] is the other half: an array with one cache-line-padded `T` per CPU (no
//! false sharing between CPUs), for data any CPU may read, such as the call-function
//! mailboxes or run-queue summaries.

use crossbeam_utils::CachePadded;

use crate::MAX_CPUS;

/// The start of every CPU's GS area.
#[derive(Debug)]
#[repr(C)]
pub struct CpuHeader {
    /// Address of this header (GS offset [`CpuHeader::SELF_OFFSET`]).
    pub self_ptr: *mut CpuHeader,
    /// Dense CPU index: 0 for the BSP, position in [`crate::Topology::cpus`] for others.
    pub cpu_index: usize,
    /// Local APIC id.
    pub apic_id: u32,
    _reserved: u32,
}

impl CpuHeader {
    /// GS offset of the self pointer.
    pub const SELF_OFFSET: usize = core::mem::offset_of!(CpuHeader, self_ptr);
    /// GS offset of the CPU index.
    pub const INDEX_OFFSET: usize = core::mem::offset_of!(CpuHeader, cpu_index);
    /// GS offset of the APIC id.
    pub const APIC_ID_OFFSET: usize = core::mem::offset_of!(CpuHeader, apic_id);

    /// A header for CPU `cpu_index`; its self pointer is filled in by [`install`].
    pub const fn new(cpu_index: usize, apic_id: u32) -> CpuHeader {
        CpuHeader {
            self_ptr: core::ptr::null_mut(),
            cpu_index,
            apic_id,
            _reserved: 0,
        }
    }
}

/// Points the calling CPU's GS base at `header`.
///
/// # Safety
/// `header` lives for the rest of the CPU's life and is used by no other CPU; the caller runs
/// at CPL 0 and nothing relies on the previous GS base.
pub unsafe fn install(header: *mut CpuHeader) {
    // SAFETY: the caller gives us exclusive, 'static access to `header`.
    unsafe { (*header).self_ptr = header };
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; the new base points at a live header.
    unsafe { crate::arch::wrmsr(crate::arch::IA32_GS_BASE, header as u64) };
}

/// The calling CPU's index (0 on the BSP).
///
/// Only valid after [`install`] on this CPU (before that GS may point anywhere).
#[inline]
pub fn cpu_index() -> usize {
    let index: usize;
    // SAFETY: after `install`, gs:[INDEX_OFFSET] is this CPU's header field; reading it has
    // no side effects.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) index, off = const CpuHeader::INDEX_OFFSET,
            options(nostack, preserves_flags, readonly, pure));
    }
    index
}

/// The calling CPU's header, as installed (cast it to the kernel's enclosing type).
///
/// Only valid after [`install`] on this CPU.
#[inline]
pub fn this_cpu() -> *mut CpuHeader {
    let p: *mut CpuHeader;
    // SAFETY: after `install`, gs:[SELF_OFFSET] holds the header's address; a plain read.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const CpuHeader::SELF_OFFSET,
            options(nostack, preserves_flags, readonly, pure));
    }
    p
}

/// One cache-line-padded `T` per CPU, indexed by CPU index.
///
/// Shared between CPUs, so `T` provides its own synchronisation (atomics, a lock) for
/// anything written while others may look.
pub struct PerCpu<T> {
    slots: [CachePadded<T>; MAX_CPUS],
}

impl<T> PerCpu<T> {
    /// From a ready array; usable in a `static` with
    /// `PerCpu::from_array([const { CachePadded::new(VALUE) }; MAX_CPUS])`.
    pub const fn from_array(slots: [CachePadded<T>; MAX_CPUS]) -> Self {
        PerCpu { slots }
    }

    /// Built by calling `f(cpu_index)` for each slot.
    pub fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        PerCpu {
            slots: core::array::from_fn(|i| CachePadded::new(f(i))),
        }
    }

    /// CPU `cpu`'s slot. Panics if `cpu >= MAX_CPUS`.
    #[inline]
    pub fn get(&self, cpu: usize) -> &T {
        &self.slots[cpu]
    }

    /// The calling CPU's slot (after [`install`]).
    #[inline]
    pub fn this(&self) -> &T {
        self.get(cpu_index())
    }

    /// All slots with their CPU index (including slots of CPUs that are not online).
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots.iter().map(|s| &**s).enumerate()
    }
}

impl<T: Default> Default for PerCpu<T> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    static COUNTERS: PerCpu<AtomicU64> =
        PerCpu::from_array([const { CachePadded::new(AtomicU64::new(0)) }; MAX_CPUS]);

    #[test]
    fn slots_are_separate_cache_lines() {
        let a = COUNTERS.get(0) as *const _ as usize;
        let b = COUNTERS.get(1) as *const _ as usize;
        assert!(b - a >= 64);
        COUNTERS.get(3).fetch_add(5, Ordering::Relaxed);
        assert_eq!(
            COUNTERS
                .iter()
                .map(|(_, c)| c.load(Ordering::Relaxed))
                .sum::<u64>(),
            5
        );
    }

    #[test]
    fn from_fn_passes_the_index() {
        let p = PerCpu::from_fn(|i| i * 2);
        assert_eq!(*p.get(200), 400);
    }

    #[test]
    fn header_layout_is_fixed() {
        assert_eq!(CpuHeader::SELF_OFFSET, 0);
        assert_eq!(CpuHeader::INDEX_OFFSET, 8);
        assert_eq!(CpuHeader::APIC_ID_OFFSET, 16);
        assert_eq!(core::mem::size_of::<CpuHeader>(), 24);
    }
}
