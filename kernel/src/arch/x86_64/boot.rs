//! The first instructions: the PVH and multiboot2 entries, and the climb into long mode.
//!
//! Both boot protocols enter in 32-bit protected mode with paging off, at a physical address
//! we name in the image: PVH through the Xen ELF note `XEN_ELFNOTE_PHYS32_ENTRY` (QEMU's
//! `-kernel`), multiboot2 through the entry-address tag of the multiboot2 header (GRUB).
//! They differ only in where the boot information is and how it is marked, so each entry
//! records (protocol marker, information address), which [`handoff`] returns later, and both
//! share the rest: build the boot page tables, enable SSE (the prebuilt `core` uses it),
//! enter long mode, jump to the higher half and call `kernel_entry` (in `main.rs`) on the
//! boot stack.
//!
//! The boot page tables map, with 2 MiB pages:
//! - the first 4 GiB of physical memory at 0 (identity, for this code and the AP trampoline),
//! - the same 4 GiB at `PHYS_OFFSET` (the direct map), with 0xFE00_0000.. uncached (APIC MMIO),
//! - the first 1 GiB at `KERNEL_VMA` (0xffff_ffff_8000_0000), where the image is linked,
//!   through slot 510 of the PDPT the other two use.

use core::arch::global_asm;

/// The marker the PVH entry passes to the Rust entry: the magic of `hvm_start_info`.
pub const PVH_MARKER: u32 = 0x336e_c578;
/// The value GRUB leaves in EAX for a multiboot2 kernel.
pub const MULTIBOOT2_MARKER: u32 = 0x36d7_6289;

global_asm!(
    r#"
    .section .boot.header, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    /* entry address tag: where GRUB jumps, in 32-bit protected mode */
    .balign 8
    .short 3, 0
    .long 12
    .long mb2_start32
    .balign 8
    .short 0, 0
    .long 8
mb2_header_end:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18                 /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4

    .section .boot.text, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    movl $0x336ec578, %edi
    movl %ebx, %esi
    jmp start32_common

mb2_start32:
    movl %eax, %edi
    movl %ebx, %esi

start32_common:
    cli
    cld
    rdtsc
    movl %eax, boot_tsc
    movl %edx, boot_tsc + 4
    movl %edi, boot_marker
    movl %esi, boot_info_phys

    /* PD entries: 2048 x 2 MiB covering 4 GiB; the last 16 (0xFE00_0000..) uncached */
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax          /* present, writable, 2 MiB page */
    cmpl $2032, %ecx
    jb 2f
    orl $0x18, %eax          /* PWT | PCD */
2:  movl %eax, boot_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax           /* bits 32.. of the physical address */
    movl %eax, boot_pd + 4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    /* PDPT for the low 4 GiB: four page directories */
    movl $boot_pd + 0x3, boot_pdpt_low
    movl $boot_pd + 0x1003, boot_pdpt_low + 8
    movl $boot_pd + 0x2003, boot_pdpt_low + 16
    movl $boot_pd + 0x3003, boot_pdpt_low + 24
    /* The image's 1 GiB at KERNEL_VMA (PML4 slot 511, PDPT slot 510) through the same PDPT:
       its slot 510 -> the first page directory. One PDPT for both halves: under QEMU's TCG
       each page-table page a walk reads after a CR3 load is a TLB fill of its own, and a
       domain switch walks both the direct map and the image (a PDPT of the image's own was
       one fill more per switch). The alias this makes at 510 GiB into the identity map and
       the direct map is never used: the direct map stops short of it (`paging.rs`,
       `extend_direct_map`). */
    movl $boot_pd + 0x3, boot_pdpt_low + 510 * 8
    /* PML4: identity (0), direct map (256), kernel image (511) */
    movl $boot_pdpt_low + 0x3, boot_pml4
    movl $boot_pdpt_low + 0x3, boot_pml4 + 256 * 8
    movl $boot_pdpt_low + 0x3, boot_pml4 + 511 * 8

    /* CR4: PAE, PGE, OSFXSR, OSXMMEXCPT: SSE must work before any Rust code runs */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 7) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    /* EFER: long mode, no-execute, syscall */
    movl $0xc0000080, %ecx
    rdmsr
    orl $((1 << 0) | (1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0: paging, write protect, native FPU errors, monitor coprocessor; no emulation */
    movl %cr0, %eax
    andl $~(1 << 2), %eax
    orl $((1 << 31) | (1 << 16) | (1 << 5) | (1 << 1) | 1), %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_start

    .code64
long_start:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $high_start, %rax
    jmp *%rax

    .section .boot.data, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .globl boot_tsc
    .balign 8
boot_tsc:
    .quad 0
    .globl boot_marker, boot_info_phys
boot_marker:
    .long 0
boot_info_phys:
    .long 0

    .section .boot.bss, "aw", @nobits
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pd:
    .skip 4 * 4096

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
boot_stack_bottom:
    .skip 262144
boot_stack_top:

    .section .text.high_start, "ax"
high_start:
    leaq boot_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call kernel_entry
    ud2
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// The TSC at the first boot instruction, stored by the 32-bit entry (identity-mapped).
    static boot_tsc: u64;
    /// The boot protocol's marker ([`PVH_MARKER`] or [`MULTIBOOT2_MARKER`]), stored by the
    /// 32-bit entry.
    static boot_marker: u32;
    /// The physical address of the boot information (EBX at entry), stored likewise.
    static boot_info_phys: u32;
    /// The boot PML4 (identity-mapped physical address = its link address).
    static boot_pml4: u8;
}

/// `boot_tsc`, copied into the higher half: guest address spaces do not map the
/// identity-mapped boot section.
static ENTRY_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// `boot_marker` and `boot_info_phys`, likewise (`marker << 32 | address`).
static HANDOFF: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Copies what the boot section recorded into the higher half. Called first thing by the
/// Rust entry, while the boot page tables (with their identity map) are loaded.
pub fn save_boot_facts() {
    // SAFETY: `boot_tsc`, `boot_marker` and `boot_info_phys` were written once by the 32-bit
    // entry, before any Rust code ran, and nothing writes them since; their link addresses
    // are identity-mapped in the boot page tables, which are loaded until the first guest
    // address space (and none is before this runs, first thing).
    let (tsc, marker, info) = unsafe {
        (
            core::ptr::read_volatile(&raw const boot_tsc),
            core::ptr::read_volatile(&raw const boot_marker),
            core::ptr::read_volatile(&raw const boot_info_phys),
        )
    };
    ENTRY_TSC.store(tsc, core::sync::atomic::Ordering::Relaxed);
    HANDOFF.store(
        u64::from(marker) << 32 | u64::from(info),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// What the loader handed over: the protocol's marker and the physical address of its boot
/// information (`bootinfo` reads it).
pub(super) fn handoff() -> (u32, u64) {
    let v = HANDOFF.load(core::sync::atomic::Ordering::Relaxed);
    ((v >> 32) as u32, v & 0xffff_ffff)
}

/// The TSC value read at the very first instruction of the boot, before any set-up.
pub fn entry_tsc() -> u64 {
    ENTRY_TSC.load(core::sync::atomic::Ordering::Relaxed)
}

/// Physical address of the boot PML4 (linked at its physical address in `.boot.bss`).
pub fn boot_pml4_phys() -> u64 {
    &raw const boot_pml4 as u64
}
