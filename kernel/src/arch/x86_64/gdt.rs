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

use super::trap::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, IST_TRAP};

/// Ring-0 code segment (the STAR kernel base).
pub const KERNEL_CODE: SegmentSelector = SegmentSelector(0x08);
/// Ring-0 data segment.
pub const KERNEL_DATA: SegmentSelector = SegmentSelector(0x10);
/// The STAR user base: a 32-bit ring-3 code segment that `sysret` never uses.
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

/// Builds and loads this CPU's GDT and TSS, with fresh interrupt stacks. Every IDT gate
/// names an IST slot, so the TSS's ring-0 stack (RSP0) is never used.
pub fn init_this_cpu() {
    let tss: &'static mut TaskStateSegment = Box::leak(Box::new(TaskStateSegment::new()));
    for ist in [IST_TRAP, IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK] {
        tss.interrupt_stack_table[usize::from(ist - 1)] = new_stack(IST_STACK_BYTES);
    }
    // SAFETY: the TSS is leaked, so it lives as long as the GDT that points at it, and only
    // this CPU uses it (through its task register) or changes it (through `CpuTables`).
    let tss_descriptor = unsafe { Descriptor::tss_segment_unchecked(&raw const *tss) };

    let gdt: &'static mut GlobalDescriptorTable = Box::leak(Box::new(GlobalDescriptorTable::new()));
    let selectors = [
        gdt.append(Descriptor::kernel_code_segment()),
        gdt.append(Descriptor::kernel_data_segment()),
        // 32-bit ring-3 code: present, DPL 3, readable, 4 GiB limit.
        gdt.append(Descriptor::UserSegment(0x00cf_fa00_0000_ffff)),
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
