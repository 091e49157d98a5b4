//! Per-CPU segment tables: a GDT and a TSS for each CPU, with its interrupt stacks.
//!
//! Segments matter little in long mode, but the layout is fixed by `syscall`/`sysret`: the
//! STAR MSR names a kernel base (code, then data at +8) and a user base from which `sysret`
//! takes data at +8 and 64-bit code at +16. Each CPU needs its own TSS (its own ring-0 and
//! IST stacks) and therefore its own GDT, since loading a TSS marks its descriptor busy.

use alloc::boxed::Box;

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use super::trap::{IST_DEBUG, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};

/// Ring-0 code segment (the STAR kernel base).
pub const KERNEL_CODE: SegmentSelector = SegmentSelector(0x08);
/// Ring-0 data segment.
pub const KERNEL_DATA: SegmentSelector = SegmentSelector(0x10);
/// The STAR user base, which only a 32-bit `sysret` would use (we never do): its descriptor
/// is null, so guests have no 32-bit code segment at all. A far jump or return to it faults
/// (and kills the guest); with no compatibility-mode code, no guest can reach `MSR_CSTAR`,
/// whose entry kills its caller anyway.
pub const USER_BASE: SegmentSelector = SegmentSelector(0x18 | 3);
/// Ring-3 data segment (USER_BASE + 8).
pub const USER_DATA: SegmentSelector = SegmentSelector(0x20 | 3);
/// Ring-3 64-bit code segment (USER_BASE + 16).
pub const USER_CODE: SegmentSelector = SegmentSelector(0x28 | 3);

/// Size of each interrupt stack.
const IST_STACK_BYTES: usize = 16 * 1024;

/// A zeroed, 16-byte aligned stack; returns its top.
pub fn new_stack(bytes: usize) -> VirtAddr {
    #[repr(C, align(16))]
    struct Chunk([u8; 16]);
    let stack: &'static mut [Chunk] = Box::leak((0..bytes / 16).map(|_| Chunk([0; 16])).collect());
    VirtAddr::from_ptr(stack.as_ptr()) + bytes as u64
}

/// Builds and loads this CPU's GDT (into `gdt`, which `percpu::install` keeps at the top of
/// its kernel stack) and TSS, with fresh interrupt stacks. A trap from ring 3
/// lands on `kernel_stack_top` (RSP0), where hypercalls run too, so the frame of whatever
/// entered from a guest is always in one place and a fault taken while handling it (a
/// guest-memory copy) nests below it instead of overwriting it; NMI, #DB, #DF and #MC have
/// IST stacks of their own, since they can arrive where the stack is not to be trusted.
pub fn init_this_cpu(kernel_stack_top: VirtAddr, gdt: &'static mut GlobalDescriptorTable) {
    let tss: &'static mut TaskStateSegment = Box::leak(Box::new(TaskStateSegment::new()));
    tss.privilege_stack_table[0] = kernel_stack_top;
    for ist in [IST_DEBUG, IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK] {
        tss.interrupt_stack_table[usize::from(ist - 1)] = new_stack(IST_STACK_BYTES);
    }
    // SAFETY: the TSS is leaked, so it lives as long as the GDT that points at it, and only
    // this CPU uses it (through its task register) or changes it (through `CpuTables`).
    let tss_descriptor = unsafe { Descriptor::tss_segment_unchecked(&raw const *tss) };

    let selectors = [
        gdt.append(Descriptor::kernel_code_segment()),
        gdt.append(Descriptor::kernel_data_segment()),
        // The STAR user base: null (no 32-bit code segment).
        gdt.append(Descriptor::UserSegment(0)),
        gdt.append(Descriptor::user_data_segment()),
        gdt.append(Descriptor::user_code_segment()),
    ];
    debug_assert_eq!(
        selectors.map(|s| s.0),
        [
            KERNEL_CODE.0,
            KERNEL_DATA.0,
            USER_BASE.0,
            USER_DATA.0,
            USER_CODE.0
        ]
    );
    let tss_selector = gdt.append(tss_descriptor);
    gdt.load();
    // SAFETY: the selectors name the descriptors just loaded; the TSS descriptor is valid
    // and not busy (it is new).
    unsafe {
        CS::set_reg(KERNEL_CODE);
        SS::set_reg(KERNEL_DATA);
        DS::set_reg(KERNEL_DATA);
        ES::set_reg(KERNEL_DATA);
        load_tss(tss_selector);
    }
}
