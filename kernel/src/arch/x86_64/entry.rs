//! Every way into and out of the hypervisor, in assembly: the 256 trap stubs, the `syscall`
//! entry, the return to a guest, the jump to the idle loop, and the fault-tolerant copy
//! to and from guest memory.
//!
//! One frame layout serves all entries: [`super::trap::TrapFrame`], the CPU's interrupt frame
//! with our vector and error code below it and the fifteen general registers below that. The
//! `syscall` entry builds the same frame by hand, so a vCPU's state is the same whichever
//! way it entered, and switching to another vCPU is a matter of rewriting the frame before
//! the common exit path pops it (Xen's model: the hypervisor is not preemptible and never
//! keeps a stack per vCPU).
//!
//! FPU state: an asynchronous entry from ring 3 saves it (`fxsave64` to the current vCPU's
//! area, named in the per-CPU area) before any Rust code can clobber it, and asks the exit
//! path to restore it. A hypercall saves nothing, since vector registers are caller-saved in
//! the hypercall ABI; its exit path scrubs them unless a restore was requested.

use core::arch::global_asm;

use super::gdt::{USER_CODE, USER_DATA};
use super::percpu::{CUR_FPU, FPU_RESTORE, KERNEL_STACK_TOP, USER_RSP};

/// The `vector` value of a frame built by the `syscall` entry.
pub const SYSCALL_VECTOR: u64 = 0x100;

global_asm!(
    r#"
    .macro trap_stub vector
    .balign 16
trap_stub_\vector:
    .if (\vector == 8) || (\vector >= 10 && \vector <= 14) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    pushq $0
    .endif
    pushq $\vector
    jmp trap_common
    .endm

    .section .text.entry, "ax"
    .altmacro
    .set i, 0
    .rept 256
    trap_stub %i
    .set i, i + 1
    .endr

    .macro push_gprs
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    .endm

    .macro pop_gprs
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    .endm

    .macro scrub_xmm
    pxor %xmm0, %xmm0
    pxor %xmm1, %xmm1
    pxor %xmm2, %xmm2
    pxor %xmm3, %xmm3
    pxor %xmm4, %xmm4
    pxor %xmm5, %xmm5
    pxor %xmm6, %xmm6
    pxor %xmm7, %xmm7
    pxor %xmm8, %xmm8
    pxor %xmm9, %xmm9
    pxor %xmm10, %xmm10
    pxor %xmm11, %xmm11
    pxor %xmm12, %xmm12
    pxor %xmm13, %xmm13
    pxor %xmm14, %xmm14
    pxor %xmm15, %xmm15
    .endm

/* Stack on arrival: vector, error code, RIP, CS, RFLAGS, RSP, SS. CS is at 24(%rsp). */
trap_common:
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:  push_gprs
    /* CS is now at 144(%rsp): 15 registers, vector, error code, RIP. */
    testb $3, 144(%rsp)
    jz 2f
    movq %gs:{cur_fpu}, %rax
    testq %rax, %rax
    jz 2f
    fxsave64 (%rax)
    movq $1, %gs:{fpu_restore}
2:  movq %rsp, %rdi
    cld
    call trap_dispatch

/* The common way out. %rsp points at a TrapFrame, possibly rewritten for another vCPU. */
    .globl return_from_trap
return_from_trap:
    testb $3, 144(%rsp)
    jz 4f
    cmpq $0, %gs:{fpu_restore}
    je 3f
    movq %gs:{cur_fpu}, %rax
    fxrstor64 (%rax)
    movq $0, %gs:{fpu_restore}
    jmp 4f
3:  scrub_xmm
4:  pop_gprs
    testb $3, 24(%rsp)
    jz 5f
    swapgs
5:  addq $16, %rsp
    iretq

/* syscall: RCX = guest RIP, R11 = guest RFLAGS, RSP still the guest's, IF cleared by FMASK. */
    .globl syscall_entry
syscall_entry:
    swapgs
    movq %rsp, %gs:{user_rsp}
    movq %gs:{kernel_stack_top}, %rsp
    pushq ${user_data}
    pushq %gs:{user_rsp}
    pushq %r11
    pushq ${user_code}
    pushq %rcx
    pushq $0
    pushq ${syscall_vector}
    push_gprs
    movq %rsp, %rdi
    cld
    call syscall_dispatch
    /* Non-zero: the frame now holds a vCPU that did not enter by syscall, or the FPU must
       be restored: leave by iretq, which restores every register. */
    testq %rax, %rax
    jnz return_from_trap
    cmpq $0, %gs:{fpu_restore}
    jne return_from_trap
    scrub_xmm
    pop_gprs
    movq 16(%rsp), %rcx
    movq 32(%rsp), %r11
    movq 40(%rsp), %rsp
    swapgs
    sysretq

/* syscall_floor: the benchmarks' floor, installed in LSTAR only while Domain0 measures it:
   a NULL hypercall returns at once by `sysretq` (nothing saved, no stack touched); any other
   number takes the full entry. */
    .globl syscall_floor
syscall_floor:
    cmpq ${null_hypercall}, %rax
    jne syscall_entry
    sysretq

/* resume_frame(frame): leaves through the TrapFrame at `frame`, which becomes the stack.
   Used by the idle loop to enter a guest: the frame is a local of the idle loop, on this
   CPU's kernel stack, and nothing below it is needed any more. */
    .globl resume_frame
resume_frame:
    movq %rdi, %rsp
    jmp return_from_trap

/* run_idle(): abandons the current stack for the top of this CPU's kernel stack and runs
   the idle loop there. */
    .globl run_idle
run_idle:
    movq %gs:{kernel_stack_top}, %rsp
    call idle_loop
    ud2

/* copy_user(dst, src, len) -> bytes not copied. A page fault on the marked instruction
   resumes at the fix-up, with RCX holding the bytes left. */
    .globl copy_user, copy_user_insn, copy_user_fixup
copy_user:
    movq %rdx, %rcx
copy_user_insn:
    rep movsb
    xorl %eax, %eax
    ret
copy_user_fixup:
    movq %rcx, %rax
    ret

    .macro stub_address vector
    .quad trap_stub_\vector
    .endm
    .section .rodata.trap_stubs, "a"
    .balign 8
    .globl trap_stub_table
trap_stub_table:
    .set i, 0
    .rept 256
    stub_address %i
    .set i, i + 1
    .endr
    .noaltmacro
"#,
    cur_fpu = const CUR_FPU,
    fpu_restore = const FPU_RESTORE,
    user_rsp = const USER_RSP,
    kernel_stack_top = const KERNEL_STACK_TOP,
    user_data = const USER_DATA.0 as u64,
    user_code = const USER_CODE.0 as u64,
    syscall_vector = const SYSCALL_VECTOR,
    null_hypercall = const abi::hypercall::NULL,
    options(att_syntax)
);

unsafe extern "C" {
    fn resume_frame(frame: *const super::trap::TrapFrame) -> !;
    fn run_idle() -> !;
    fn copy_user(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static copy_user_insn: u8;
    static copy_user_fixup: u8;
    fn syscall_entry();
    fn syscall_floor();
}

/// Points this CPU's `syscall` at the benchmark floor (`on`) or back at the full entry.
pub fn set_syscall_floor(on: bool) {
    let entry = if on {
        syscall_floor as *const ()
    } else {
        syscall_entry as *const ()
    };
    // Both are complete `syscall` entries: the floor falls through to the full one for
    // everything but the null hypercall.
    x86_64::registers::model_specific::LStar::write(x86_64::VirtAddr::new(entry as u64));
}

/// Enters a guest with the registers in `frame`, from the idle loop.
pub fn enter_guest(frame: &super::trap::TrapFrame) -> ! {
    // SAFETY: the frame is on this CPU's kernel stack (a local of the idle loop), which is
    // abandoned from here on; the caller (the scheduler) has loaded the guest's CR3 and FPU
    // pointer, and the frame holds ring-3 selectors and a guest RIP, so `iretq` enters it.
    unsafe { resume_frame(frame) }
}

/// Abandons whatever this CPU was doing in the hypervisor and runs the idle loop on a fresh
/// kernel stack.
pub fn go_idle() -> ! {
    // SAFETY: nothing on the current stack is needed any more: the caller saved the vCPU
    // state it was handling; `idle_loop` needs no arguments.
    unsafe { run_idle() }
}

/// If a page fault at `rip` happened inside the guest-memory copy, where to resume.
pub fn copy_fixup(rip: u64) -> Option<u64> {
    (rip == &raw const copy_user_insn as u64).then_some(&raw const copy_user_fixup as u64)
}

/// Copies between guest and hypervisor memory; `Err(())` if part of the guest range is
/// not mapped (the copy stops there).
///
/// # Safety
/// One of `dst`/`src` is hypervisor memory valid for `len` bytes; the other is a guest
/// range the caller has checked lies below `abi::layout::USER_LIMIT`, in the address space
/// loaded now.
pub unsafe fn copy_guest(dst: *mut u8, src: *const u8, len: usize) -> Result<(), ()> {
    // SAFETY: per the contract; faults on the guest side are caught by the fix-up.
    match unsafe { copy_user(dst, src, len) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

/// Points `syscall` at our entry: STAR selectors, LSTAR entry, and the RFLAGS bits to clear
/// on entry (IF, so the hypervisor runs with interrupts off; TF, DF, AC).
pub fn init_syscall() {
    use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
    use x86_64::registers::rflags::RFlags;
    // SAFETY: the selectors match the GDT layout of `gdt.rs`; the entry is the stub above;
    // EFER.SCE was set by the boot code, and setting it again changes nothing else.
    unsafe {
        Efer::update(|f| *f |= EferFlags::SYSTEM_CALL_EXTENSIONS);
        LStar::write(x86_64::VirtAddr::new(syscall_entry as *const () as u64));
        SFMask::write(
            RFlags::INTERRUPT_FLAG
                | RFlags::TRAP_FLAG
                | RFlags::DIRECTION_FLAG
                | RFlags::ALIGNMENT_CHECK,
        );
    }
    Star::write(
        super::gdt::USER_CODE,
        super::gdt::USER_DATA,
        super::gdt::KERNEL_CODE,
        super::gdt::KERNEL_DATA,
    )
    .expect("GDT layout matches what syscall/sysret require");
}
