//! This CPU's area, reached through GS: the `smp` header first, then the few fields the
//! entry code in `entry.rs` reads at fixed offsets.
//!
//! Everything the scheduler keeps per CPU lives elsewhere (`crate::schedule`); this struct
//! holds only what assembly must find without a lock.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, Ordering};

use smp::percpu::CpuHeader;
use x86_64::structures::gdt::GlobalDescriptorTable;

/// The GS area of one CPU, at the top of its kernel stack with its GDT ([`install`]).
#[repr(C)]
pub struct CpuArea {
    pub header: CpuHeader,
    /// Top of this CPU's kernel stack: hypercalls run on it, and so does the idle loop.
    pub kernel_stack_top: u64,
    /// The guest's RSP while a hypercall runs (`syscall` does not switch stacks).
    pub user_rsp: u64,
    /// FPU save area of the vCPU running here (0 when none): asynchronous entries from
    /// ring 3 save the guest's x87/SSE state into it before any Rust code runs.
    pub cur_fpu: u64,
    /// Non-zero when the way back to ring 3 must restore the FPU state from `cur_fpu`
    /// (after an asynchronous entry or a domain switch); zero when it must scrub the
    /// vector registers instead (a hypercall that returns to the same vCPU).
    pub fpu_restore: u64,
    /// The vCPU running here (an `Arc<Vcpu>` the scheduler holds while it runs), as an
    /// address, so that a hypercall finds its caller without a lock; 0 when idle.
    pub current: u64,
    /// Its domain (an `Arc<Domain>` the scheduler holds while it runs), likewise.
    pub current_domain: u64,
    /// Transitions between the hypervisor and a guest or `hlt`, counted by the entry code
    /// (odd: in the hypervisor and not halted); read by the watchdog of another CPU.
    pub transitions: AtomicU64,
    /// The PML4 in this CPU's CR3 (physical address), and, while CR3 is being replaced, the
    /// one it is leaving (0 otherwise): see [`load_cr3`]. Read by other CPUs to find who
    /// may hold a domain's translations (Xen's `dirty_cpumask`).
    pub cr3: AtomicU64,
    pub cr3_leaving: AtomicU64,
    /// The address of the current vCPU's `upcall_pending` flag (its byte in its domain's
    /// counters page) if it has a callback, or of [`NO_UPCALL`]: never null, so that the
    /// `syscall` exit's fast path reads it without a test. It leaves by `sysretq` only while
    /// the byte is clear (Xen's `test_guest_events`).
    pub upcall_flag: u64,
    /// Set when this CPU must reschedule before returning to a guest (by itself, or by
    /// another CPU before its IPI): the `syscall` exit's fast path looks at it first (Xen's
    /// `softirq_pending` in `test_all_events`).
    pub need_resched: AtomicBool,
}

/// The `upcall_pending` byte [`CpuArea::upcall_flag`] points at when no vCPU runs or it has
/// none: always 0, never written.
static NO_UPCALL: AtomicU8 = AtomicU8::new(0);

/// Every CPU's area, for the watchdog (null until the CPU installs it).
static AREAS: [AtomicPtr<CpuArea>; smp::MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; smp::MAX_CPUS];

/// GS offset of [`CpuArea::kernel_stack_top`].
pub const KERNEL_STACK_TOP: usize = core::mem::offset_of!(CpuArea, kernel_stack_top);
/// GS offset of [`CpuArea::user_rsp`].
pub const USER_RSP: usize = core::mem::offset_of!(CpuArea, user_rsp);
/// GS offset of [`CpuArea::cur_fpu`].
pub const CUR_FPU: usize = core::mem::offset_of!(CpuArea, cur_fpu);
/// GS offset of [`CpuArea::transitions`].
pub const TRANSITIONS: usize = core::mem::offset_of!(CpuArea, transitions);
/// GS offset of [`CpuArea::fpu_restore`].
pub const FPU_RESTORE: usize = core::mem::offset_of!(CpuArea, fpu_restore);
/// GS offset of [`CpuArea::upcall_flag`].
pub const UPCALL_FLAG: usize = core::mem::offset_of!(CpuArea, upcall_flag);
/// GS offset of [`CpuArea::need_resched`].
pub const NEED_RESCHED: usize = core::mem::offset_of!(CpuArea, need_resched);

/// Bytes of each CPU's kernel stack.
pub const KERNEL_STACK_BYTES: usize = 64 * 1024;

/// What sits at the top of each CPU's kernel stack, above the stack proper.
#[repr(C)]
struct StackTop {
    /// This CPU's GDT, read by every `iretq` to a guest (its CS and SS descriptors).
    gdt: GlobalDescriptorTable,
    area: CpuArea,
}

/// Allocates this CPU's kernel stack with its area and its (empty) GDT at the top, points GS
/// at the area, and returns the GDT for `gdt::init_this_cpu` to fill and load.
///
/// They sit in the stack's last bytes and the stack grows down from just below them, as Xen
/// keeps `struct cpu_info` at the top of each CPU's stack (`get_cpu_info`,
/// xen/arch/x86/include/asm/current.h): the entry code reads the area on every hypercall,
/// whose frames fill the stack's top page, and a return by `iretq` (after every domain
/// switch) reads the GDT, so all three are one page. Under QEMU's TCG, where a domain
/// switch's CR3 load makes each page touched afterwards a TLB fill, the area and the GDT
/// allocated on their own took two more pages of every switch (README.md, "What the 34
/// fills are now").
pub fn install(cpu_index: usize, apic_id: u32) -> &'static mut GlobalDescriptorTable {
    let layout = core::alloc::Layout::from_size_align(KERNEL_STACK_BYTES, 4096)
        .expect("the kernel stack's layout is valid");
    // SAFETY: the layout's size is not zero.
    let base = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if base.is_null() {
        alloc::alloc::handle_alloc_error(layout);
    }
    let at = (KERNEL_STACK_BYTES - core::mem::size_of::<StackTop>()) & !63;
    // SAFETY: `at + size_of::<StackTop>()` is within the allocation (`at` rounds down), and
    // `base + at` is 64-byte aligned (`base` is page-aligned), enough for a `StackTop`.
    let slot = unsafe { base.add(at) }.cast::<StackTop>();
    // The stack proper ends below them, 64-byte aligned as a stack top must be (16).
    let stack_top = slot as u64;
    let value = CpuArea {
        header: CpuHeader::new(cpu_index, apic_id),
        kernel_stack_top: stack_top,
        user_rsp: 0,
        cur_fpu: 0,
        fpu_restore: 0,
        current: 0,
        current_domain: 0,
        // Odd: this CPU is in the hypervisor (booting).
        transitions: AtomicU64::new(1),
        cr3: AtomicU64::new(
            x86_64::registers::control::Cr3::read()
                .0
                .start_address()
                .as_u64(),
        ),
        cr3_leaving: AtomicU64::new(0),
        upcall_flag: &raw const NO_UPCALL as u64,
        need_resched: AtomicBool::new(false),
    };
    // SAFETY: `slot` is valid for a write of a `StackTop` and aligned (above); the
    // allocation is never freed, and nothing else uses these bytes: the stack grows down
    // from `slot`. So the `&'static mut`s made here are the only references to them.
    let top = unsafe {
        slot.write(StackTop {
            gdt: GlobalDescriptorTable::new(),
            area: value,
        });
        &mut *slot
    };
    let (gdt, area) = (&mut top.gdt, &mut top.area);
    AREAS[cpu_index].store(&raw mut *area, Ordering::Release);
    // SAFETY: the area is leaked (lives forever) and belongs to this CPU alone; nothing
    // relied on the previous GS base.
    unsafe { smp::percpu::install(&raw mut area.header) };
    gdt
}

/// CPU `cpu`'s area, if it installed one. Other CPUs use only its atomic fields.
fn area_of(cpu: usize) -> Option<&'static CpuArea> {
    let area = AREAS.get(cpu)?.load(Ordering::Acquire);
    // SAFETY: a non-null entry points at a leaked, never freed `CpuArea`; what other CPUs
    // read or write in it is atomic, so sharing it while its CPU changes it is sound.
    unsafe { area.as_ref() }
}

/// CPU `cpu`'s transition count ([`CpuArea::transitions`]), if it has an area.
pub fn transitions_of(cpu: usize) -> Option<u64> {
    area_of(cpu).map(|a| a.transitions.load(Ordering::Relaxed))
}

/// Loads `pml4` into this CPU's CR3, keeping [`CpuArea::cr3`] and [`CpuArea::cr3_leaving`]
/// true for other CPUs throughout: the new PML4 is recorded before the write and the old
/// one stays recorded as leaving until after it, so at every instant each PML4 the CPU may
/// hold translations of is named in one of the two.
///
/// # Safety
/// `pml4` is the physical address of a PML4 that maps the hypervisor's upper half as every
/// address space does, and stays allocated while recorded here (a domain is freed only once
/// [`cpus_holding`] no longer finds its PML4).
pub unsafe fn load_cr3(pml4: u64) {
    use x86_64::PhysAddr;
    use x86_64::registers::control::{Cr3, Cr3Flags};
    use x86_64::structures::paging::PhysFrame;
    // SAFETY: GS points at this CPU's live `CpuArea`; the fields are atomic.
    let area = unsafe { &*area() };
    let old = area.cr3.load(Ordering::Relaxed);
    area.cr3_leaving.store(old, Ordering::SeqCst);
    area.cr3.store(pml4, Ordering::SeqCst);
    // SAFETY: per the contract, `pml4` maps the hypervisor's half, so the code running now
    // stays mapped across the write.
    unsafe {
        Cr3::write(
            PhysFrame::containing_address(PhysAddr::new(pml4)),
            Cr3Flags::empty(),
        )
    };
    area.cr3_leaving.store(0, Ordering::Release);
}

/// The CPUs whose CR3 holds `pml4`, or did a moment ago and may still (the one it is
/// leaving during a switch): the CPUs that may hold its translations in their TLBs. A CPU
/// that loads `pml4` after this looks starts with a flushed TLB. The caller orders its
/// page-table writes before the call (SeqCst).
pub fn cpus_holding(pml4: u64) -> impl Iterator<Item = usize> {
    core::sync::atomic::fence(Ordering::SeqCst);
    // 0 is no PML4 (`cr3_leaving` when no load is under way).
    let cpus = if pml4 == 0 { 0 } else { AREAS.len() };
    (0..cpus).filter(move |&cpu| {
        area_of(cpu).is_some_and(|a| {
            a.cr3.load(Ordering::SeqCst) == pml4 || a.cr3_leaving.load(Ordering::SeqCst) == pml4
        })
    })
}

/// CPU `cpu`'s reschedule flag ([`CpuArea::need_resched`]). Panics for a CPU that never
/// came up: nothing schedules on one.
pub fn need_resched(cpu: usize) -> &'static AtomicBool {
    &area_of(cpu)
        .expect("a CPU that schedules has its area")
        .need_resched
}

/// This CPU's reschedule flag.
pub fn my_need_resched() -> &'static AtomicBool {
    // SAFETY: GS points at this CPU's leaked, never freed `CpuArea`; the field is atomic.
    unsafe { &(*area()).need_resched }
}

/// Tells the watchdog this CPU is making progress in a legitimately long stretch in the
/// hypervisor (the count moves by two, keeping its parity).
pub fn touch_watchdog() {
    // SAFETY: as in `set_current`; the field is atomic.
    unsafe { &(*area()).transitions }.fetch_add(2, Ordering::Relaxed);
}

/// Top of this CPU's kernel stack.
pub fn kernel_stack_top() -> x86_64::VirtAddr {
    // SAFETY: as in `set_current`.
    x86_64::VirtAddr::new(unsafe { (*area()).kernel_stack_top })
}

fn area() -> *mut CpuArea {
    smp::percpu::this_cpu().cast()
}

/// Records the vCPU now running here and its domain (null for none) and its FPU area (null
/// for none), and whether the exit path must load that area on the way out.
///
/// # Safety
/// This creates three aliases that outlive the call, until the next `set_current` on this
/// CPU (Hubris's `set_current_task` in spirit):
/// - `current` and `domain` are dereferenced by [`current`]'s users
///   (`schedule::with_current`): the caller keeps both objects alive and unmoved until then
///   (the scheduler holds an `Arc` of each);
/// - `fpu` is written by the entry code on every asynchronous entry from ring 3 and by
///   [`restore_fpu_on_exit`], and read by the exit path: it must be valid for writes of an
///   `FpuState` and used by nothing else until then (its vCPU is claimed by this CPU);
/// - `upcall_flag` is read (one byte) by the `syscall` exit path: it must be null or valid
///   for reads until then (a byte of the vCPU's counters page, which the vCPU holds); null
///   stands for none (the entry code then reads [`NO_UPCALL`]).
pub unsafe fn set_current(
    current: *const (),
    domain: *const (),
    fpu: *mut super::fpu::FpuState,
    upcall_flag: *const AtomicU8,
    restore: bool,
) {
    // SAFETY: GS points at this CPU's live `CpuArea` (installed at start-up); only this CPU
    // reads or writes it, with interrupts off.
    unsafe {
        (*area()).current = current as u64;
        (*area()).current_domain = domain as u64;
        (*area()).cur_fpu = fpu as u64;
        (*area()).upcall_flag = if upcall_flag.is_null() {
            &raw const NO_UPCALL as u64
        } else {
            upcall_flag as u64
        };
        (*area()).fpu_restore = u64::from(restore);
    }
}

/// Points the `syscall` exit's upcall check at `upcall_flag` (null for none, as in
/// [`set_current`]) for the vCPU current on this CPU: its callback was registered or
/// removed.
///
/// # Safety
/// As [`set_current`]'s `upcall_flag`: null, or valid for reads until the next
/// `set_current` on this CPU.
pub unsafe fn set_upcall_flag(upcall_flag: *const AtomicU8) {
    // SAFETY: GS points at this CPU's live `CpuArea` (installed at start-up); only this CPU
    // reads or writes it, with interrupts off.
    unsafe {
        (*area()).upcall_flag = if upcall_flag.is_null() {
            &raw const NO_UPCALL as u64
        } else {
            upcall_flag as u64
        };
    }
}

/// This CPU's records cleared: no vCPU runs here.
pub fn clear_current() {
    // SAFETY: null pointers create no alias.
    unsafe {
        set_current(
            core::ptr::null(),
            core::ptr::null(),
            core::ptr::null_mut(),
            core::ptr::null(),
            false,
        )
    }
}

/// The objects recorded by [`set_current`]: the current vCPU and its domain (null for
/// none). Dereferencing them is sound for as long as [`set_current`]'s caller promised.
pub fn current() -> (*const (), *const ()) {
    // SAFETY: GS points at this CPU's live `CpuArea`.
    unsafe {
        (
            (*area()).current as *const (),
            (*area()).current_domain as *const (),
        )
    }
}

/// Whether the way back to ring 3 will load the current vCPU's FPU area (its vector
/// registers are live guest state there) rather than scrub them.
pub fn fpu_restore_pending() -> bool {
    // SAFETY: GS points at this CPU's live `CpuArea`.
    unsafe { (*area()).fpu_restore != 0 }
}

/// Makes the way back to ring 3 load `state` as the current vCPU's vector registers: it is
/// copied into the vCPU's FPU area (named by `cur_fpu`), and a restore is requested.
pub fn restore_fpu_on_exit(state: &super::fpu::FpuState) {
    // SAFETY: GS points at this CPU's live `CpuArea`; `cur_fpu` is null or the FPU area that
    // `set_current`'s caller made this CPU's alone until the next `set_current`; the entry
    // code, its other writer, cannot run now (interrupts are off).
    unsafe {
        let area = (*area()).cur_fpu as *mut super::fpu::FpuState;
        if !area.is_null() {
            area.write(state.clone());
            (*self::area()).fpu_restore = 1;
        }
    }
}

/// Saves this CPU's x87/SSE state, XMM registers zeroed, into the FPU area of the vCPU
/// recorded here (a vCPU leaving during a hypercall: its XMM registers hold hypervisor
/// data). Nothing happens when none is recorded.
pub fn save_current_fpu_scrubbed() {
    // SAFETY: `cur_fpu` is null or the area `set_current`'s caller made this CPU's alone
    // until the next `set_current`; interrupts are off, so the entry code is not using it.
    unsafe {
        let fpu = (*area()).cur_fpu as *mut super::fpu::FpuState;
        if let Some(fpu) = fpu.as_mut() {
            fpu.save_scrubbed();
        }
    }
}

/// A copy of the FPU area of the vCPU recorded here, if any.
pub fn current_fpu_snapshot() -> Option<super::fpu::FpuState> {
    // SAFETY: as in `save_current_fpu_scrubbed`; only read here.
    unsafe { ((*area()).cur_fpu as *const super::fpu::FpuState).as_ref() }.cloned()
}
