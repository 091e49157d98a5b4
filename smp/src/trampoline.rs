//! The AP start-up trampoline: real mode → protected mode → long mode → Rust.
//!
//! A STARTUP IPI starts an AP in 16-bit real mode at CS:IP = (page << 8):0, i.e. at physical
//! `page << 12`, below 1 MiB. The code below is assembled into the kernel image and copied
//! there at run time ([`install`]). It is position-independent in 16-bit mode (everything is
//! CS-relative) and finds its own base (CS << 4) for the 32- and 64-bit parts, so the only
//! fields patched are the data block right after the first jump: the temporary GDT and its
//! pointer, the two far-jump targets, and the per-start parameters (CR3, stack, entry, CPU
//! index) that the BSP rewrites before each AP.
//!
//! Why each step (Intel SDM vol. 3, 9.9 "Mode switching"):
//! - `cli`, and RFLAGS cleared before the call: the AP must never take an interrupt on the
//!   Rust stack (the prebuilt `core` assumes a red zone) and has no IDT yet;
//! - CR4.PAE (required for long mode), PGE (as on the BSP), OSFXSR|OSXMMEXCPT and CR0.MP with
//!   CR0.EM clear: `core` uses SSE from the first Rust instruction;
//! - EFER.LME|NXE|SCE, then CR0.PG|WP|NE: the kernel's page tables use NX, `syscall` will be
//!   used, and WP makes read-only kernel mappings read-only for ring 0 too;
//! - the far jump into a 64-bit code segment completes the switch; the kernel PML4 identity
//!   maps the first 4 GiB, so the trampoline keeps running at its low address until it calls
//!   the kernel's higher-half entry;
//! - the AP stores its CPU index into `ack` only after it has read every per-start field into
//!   registers, so the BSP may then rewrite them for the next AP.

use core::arch::global_asm;
use core::mem::offset_of;

/// Fields after the first jump (offset [`DATA_OFFSET`] in the trampoline).
#[repr(C)]
pub(crate) struct TrampolineData {
    /// Null, 32-bit code (0x08), data (0x10), 64-bit code (0x18).
    pub gdt: [u64; 4],
    _pad: [u16; 3],
    /// GDTR image: limit then 32-bit linear base (upper half zero).
    pub gdtr_limit: u16,
    pub gdtr_base: u64,
    /// m16:32 far pointer to the 32-bit code.
    pub far32_offset: u32,
    pub far32_selector: u32,
    /// m16:32 far pointer to the 64-bit code.
    pub far64_offset: u32,
    pub far64_selector: u32,
    /// CR3 to load (below 4 GiB: loaded in 32-bit mode).
    pub cr3: u64,
    /// The kernel's `extern "C" fn(usize) -> !`.
    pub entry: u64,
    /// Top of this AP's stack (rounded down to 16 bytes).
    pub stack_top: u64,
    /// Index of the AP being started.
    pub cpu_index: u64,
    /// Written by the AP: its index, once it no longer needs the fields above.
    pub ack: u64,
}

/// Offset of [`TrampolineData`] within the trampoline.
pub(crate) const DATA_OFFSET: usize = 8;
/// The selectors of the temporary GDT.
pub(crate) const CODE32: u16 = 0x08;
pub(crate) const DATA: u16 = 0x10;
pub(crate) const CODE64: u16 = 0x18;

global_asm!(
    r#"
    .section .text.smp_trampoline, "ax"
    .balign 16
    .globl smp_trampoline_start
smp_trampoline_start:
    .code16
    jmp 2f
    .balign 8
    .skip {data_size}
2:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    xorl %ebx, %ebx
    movw %ax, %bx
    shll $4, %ebx                       /* ebx = physical base of the trampoline */
    lgdtl {gdtr}
    movl %cr0, %eax
    orl $1, %eax                        /* PE */
    movl %eax, %cr0
    ljmpl *{far32}

    .code32
    .globl smp_trampoline_32
smp_trampoline_32:
    movw ${data_sel}, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 7) | (1 << 9) | (1 << 10)), %eax   /* PAE PGE OSFXSR OSXMMEXCPT */
    movl %eax, %cr4
    movl {cr3}(%ebx), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx              /* EFER */
    rdmsr
    orl $((1 << 0) | (1 << 8) | (1 << 11)), %eax               /* SCE LME NXE */
    wrmsr
    movl %cr0, %eax
    andl $~((1 << 2) | (1 << 3) | (1 << 29) | (1 << 30)), %eax /* EM TS NW CD off */
    orl $((1 << 31) | (1 << 16) | (1 << 5) | (1 << 1) | 1), %eax /* PG WP NE MP PE */
    movl %eax, %cr0
    ljmpl *{far64}(%ebx)

    .code64
    .globl smp_trampoline_64
smp_trampoline_64:
    movw ${data_sel}, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %ebx, %ebx
    movq {stack}(%rbx), %rsp
    movq {index}(%rbx), %rdi
    movq {entry}(%rbx), %rax
    movq %rdi, {ack}(%rbx)              /* fields consumed: the BSP may reuse them */
    andq $-16, %rsp
    pushq $0
    popfq                               /* IF=0, DF=0, AC=0 */
    xorl %ebp, %ebp
    callq *%rax
2:  cli
    hlt
    jmp 2b
    .globl smp_trampoline_end
smp_trampoline_end:
    .text
    "#,
    data_size = const core::mem::size_of::<TrampolineData>(),
    gdtr = const DATA_OFFSET + offset_of!(TrampolineData, gdtr_limit),
    far32 = const DATA_OFFSET + offset_of!(TrampolineData, far32_offset),
    far64 = const DATA_OFFSET + offset_of!(TrampolineData, far64_offset),
    cr3 = const DATA_OFFSET + offset_of!(TrampolineData, cr3),
    stack = const DATA_OFFSET + offset_of!(TrampolineData, stack_top),
    index = const DATA_OFFSET + offset_of!(TrampolineData, cpu_index),
    entry = const DATA_OFFSET + offset_of!(TrampolineData, entry),
    ack = const DATA_OFFSET + offset_of!(TrampolineData, ack),
    data_sel = const DATA,
    options(att_syntax)
);

unsafe extern "C" {
    static smp_trampoline_start: u8;
    static smp_trampoline_32: u8;
    static smp_trampoline_64: u8;
    static smp_trampoline_end: u8;
}

/// Bytes of code and data to copy.
pub(crate) fn len() -> usize {
    (&raw const smp_trampoline_end as usize) - (&raw const smp_trampoline_start as usize)
}

/// Copies the trampoline to `dst` (the direct-map address of physical `phys`) and fills in
/// the fixed fields. Returns the data block, which the caller fills per AP.
///
/// # Safety
/// `dst` is writable for [`len`] bytes, maps physical `phys`, and nothing else uses it.
pub(crate) unsafe fn install(dst: *mut u8, phys: u32, cr3: u32) -> *mut TrampolineData {
    let start = &raw const smp_trampoline_start;
    let off = |sym: *const u8| (sym as usize - start as usize) as u32;
    // SAFETY: the source is the trampoline's bytes in the kernel image; the caller vouches
    // for the destination, which cannot overlap the image (it is below 1 MiB).
    unsafe { core::ptr::copy_nonoverlapping(start, dst, len()) };
    // SAFETY: DATA_OFFSET is 8-aligned within the copied block (the `.balign 8` after the
    // first jump, and the block is 16-aligned; `install` callers page-align `dst`).
    let data = unsafe { dst.add(DATA_OFFSET).cast::<TrampolineData>() };
    let gdt_phys = u64::from(phys) + (DATA_OFFSET + offset_of!(TrampolineData, gdt)) as u64;
    let fields = TrampolineData {
        gdt: [
            0,
            0x00cf_9a00_0000_ffff, // 32-bit code, flat 4 GiB
            0x00cf_9200_0000_ffff, // data, flat 4 GiB
            0x00af_9a00_0000_ffff, // 64-bit code
        ],
        _pad: [0; 3],
        gdtr_limit: (4 * 8 - 1) as u16,
        gdtr_base: gdt_phys,
        far32_offset: phys + off(&raw const smp_trampoline_32),
        far32_selector: u32::from(CODE32),
        far64_offset: phys + off(&raw const smp_trampoline_64),
        far64_selector: u32::from(CODE64),
        cr3: u64::from(cr3),
        entry: 0,
        stack_top: 0,
        cpu_index: 0,
        ack: 0,
    };
    // SAFETY: `data` is within the copied block, aligned, and exclusively ours.
    unsafe { data.write_volatile(fields) };
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_in_one_page_and_data_is_where_the_code_expects() {
        assert!(len() < 4096, "trampoline is {} bytes", len());
        assert_eq!(
            offset_of!(TrampolineData, gdtr_base),
            offset_of!(TrampolineData, gdtr_limit) + 2
        );
        assert_eq!(
            offset_of!(TrampolineData, far32_selector),
            offset_of!(TrampolineData, far32_offset) + 4
        );
        // The first instruction is a two-byte short jump over the data block.
        let first = unsafe_first_bytes();
        assert_eq!(first[0], 0xEB);
        assert_eq!(
            usize::from(first[1]) + 2,
            DATA_OFFSET + core::mem::size_of::<TrampolineData>()
        );
    }

    fn unsafe_first_bytes() -> [u8; 2] {
        // SAFETY: the trampoline is at least two bytes of code in our own image.
        unsafe { core::ptr::read(&raw const smp_trampoline_start as *const [u8; 2]) }
    }
}
