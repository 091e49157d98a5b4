//! Every way into and out of the hypervisor, in assembly: the 256 trap stubs, the `syscall`
//! entries, the return to a guest, the jump to the idle loop, the idle `hlt`, and the
//! fault-tolerant copy to and from guest memory.
//!
//! One frame layout serves all entries: [`super::trap::TrapFrame`], the CPU's interrupt frame
//! with our vector and error code below it and the fifteen general registers below that. The
//! `syscall` entry builds the same frame by hand, at the same place (the top of this CPU's
//! kernel stack), so a vCPU's state is the same whichever way it entered, and switching to
//! another vCPU is a matter of rewriting the frame before the common exit path pops it
//! (Xen's model: the hypervisor is not preemptible and never keeps a stack per vCPU).
//!
//! # Entry and exit paths, and what each sanitises
//!
//! Everything a guest controls on the way in is either saved and left untouched, or
//! cleared before Rust code runs; everything on the way out is checked
//! (`trap::exit_frame_ok`) so that neither `sysretq` nor `iretq` can fault in ring 0.
//!
//! | path | stack | GS | RFLAGS in the hypervisor | other |
//! |---|---|---|---|---|
//! | `syscall` from 64-bit mode (`syscall_entry`, LSTAR) | kernel stack | `swapgs` | SFMASK clears every flag (NT, AC, TF, DF, IF, IOPL, RF, ID, arithmetic) | RCX/R11 kept in the frame |
//! | `syscall` from compat mode (`compat_syscall_entry`, CSTAR) | kernel stack | `swapgs` | as above | unreachable (no 32-bit user code segment); kills the caller |
//! | `sysenter` | — | — | — | SYSENTER_CS = 0: #GP, kills the caller |
//! | exception or interrupt from ring 3 (`trap_common`) | kernel stack (TSS.RSP0) | `swapgs` | `popfq` of 0x2: all clear (delivery clears only TF, NT, IF, RF; AC and DF would survive) | x87/SSE saved (`fxsave64`) before any Rust code |
//! | `int N`, `int3`, `into`, `int1` from ring 3 | kernel stack | `swapgs` | as above | every gate has DPL 0: #GP with the gate in the error code, kills the caller (`KillReason::SoftwareInterrupt`) |
//! | exception or interrupt in ring 0 (`trap_from_hypervisor`) | the current stack | paranoid: the GS base is read and swapped if it is a guest's (a fault after the exit's `swapgs`) | all clear | only idle-loop interrupts and guest-copy page faults are expected |
//! | NMI, #DB, #DF, #MC | IST stacks of their own | as for their ring | all clear | #DB on the first instruction of `syscall_entry` (a guest's TF) is ignored; NMI is the watchdog's |
//! | back to a guest by `sysretq` | — | `swapgs` | the guest's R11 | only when nothing is due (no reschedule, no pending event, the frame not rewritten: Xen's `test_all_events`), RIP in the guest's half (XSA-7) and RSP canonical, else through `syscall_leave` (the frame check, which kills for a bad RIP or RSP) and maybe `iretq`; vector registers scrubbed |
//! | back to a guest by `iretq` (`return_from_trap`) | — | `swapgs` | the frame's | frame checked (guest selectors, RIP in the guest half, IF on, IOPL 0); x87/SSE restored or scrubbed |
//! | into a guest from the idle loop (`resume_frame`) | the idle loop's, abandoned | `swapgs` | the frame's | after `trap::leave`, as every exit: a reschedule if due, the upcall, the frame check; a vCPU whose domain the upcall killed is not entered |
//! | vCPU switch (`schedule::reschedule`) | — | — | — | general, x87/SSE registers and DS/ES/FS/GS selectors saved and restored per vCPU; CR3 loaded |
//! | guest memory (`copy_user`) | — | — | AC set for the copy alone (SMAP) | a fault resumes at the fix-up: `Errno::Fault` |
//!
//! CPU protections (`cpu::protect_this_cpu`): SMEP, SMAP and UMIP wherever the CPU has them;
//! FSGSBASE and TSD off. The upper half of every address space is supervisor-only.
//!
//! FPU state: an asynchronous entry from ring 3 saves it (`fxsave64` to the current vCPU's
//! area, named in the per-CPU area) before any Rust code can clobber it, and asks the exit
//! path to restore it. A hypercall saves nothing, since vector registers are caller-saved in
//! the hypercall ABI; its exit path scrubs them unless a restore was requested.
//!
//! MXCSR and the x87 control word stay the guest's during a hypercall (callee-saved in the
//! ABI): the hypervisor does no floating-point arithmetic (`clippy::float_arithmetic` is
//! denied), so a guest that unmasks floating-point exceptions cannot raise one in ring 0.
//!
//! The watchdog's count (`percpu::CpuArea::transitions`) moves by one at every entry from
//! and exit to a guest, and around the idle `hlt`.

use core::arch::global_asm;

use super::gdt::{USER_CODE, USER_DATA};
use super::percpu::{
    CUR_FPU, FPU_RESTORE, KERNEL_STACK_TOP, NEED_RESCHED, TRANSITIONS, UPCALL_FLAG, USER_RSP,
};
use super::trap::{TrapFrame, frame};

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

    /* Zeroes XMM0-15: one `pxor`, then register moves. Same effect as sixteen `pxor`s, but
       QEMU's TCG (7.2) runs each `pxor` as a helper call and a register `movaps` as four
       inline loads and stores, so this is most of the hypercall exit's cost there; on
       hardware, register moves are eliminated at rename. */
    .macro scrub_xmm
    pxor %xmm0, %xmm0
    movaps %xmm0, %xmm1
    movaps %xmm0, %xmm2
    movaps %xmm0, %xmm3
    movaps %xmm0, %xmm4
    movaps %xmm0, %xmm5
    movaps %xmm0, %xmm6
    movaps %xmm0, %xmm7
    movaps %xmm0, %xmm8
    movaps %xmm0, %xmm9
    movaps %xmm0, %xmm10
    movaps %xmm0, %xmm11
    movaps %xmm0, %xmm12
    movaps %xmm0, %xmm13
    movaps %xmm0, %xmm14
    movaps %xmm0, %xmm15
    .endm

/* Stack on arrival: vector, error code, RIP, CS, RFLAGS, RSP, SS. From ring 3 the CPU has
   switched to this CPU's kernel stack (TSS.RSP0); from ring 0 it pushed onto the current
   stack (only NMI, #DB, #DF and #MC use IST stacks of their own). */
trap_common:
    testb $3, {hw_cs}(%rsp)
    jz trap_from_hypervisor
    swapgs
    incq %gs:{transitions}
    push_gprs
    /* Nothing of the guest's RFLAGS stays in force: interrupt delivery clears TF, NT and IF
       but not AC (which would switch SMAP off) or DF. */
    pushq $2
    popfq
    movq %gs:{cur_fpu}, %rax
    testq %rax, %rax
    jz 2f
    fxsave64 (%rax)
    movq $1, %gs:{fpu_restore}
2:  movq %rsp, %rdi
    call trap_dispatch
    testq %rax, %rax
    jnz run_idle

/* The common way back to a guest. %rsp points at a TrapFrame with ring-3 selectors,
   possibly rewritten for another vCPU, and checked by `exit_frame_ok`. */
    .globl return_from_trap
return_from_trap:
    cmpq $0, %gs:{fpu_restore}
    je 3f
    movq %gs:{cur_fpu}, %rax
    fxrstor64 (%rax)
    movq $0, %gs:{fpu_restore}
    jmp 4f
3:  scrub_xmm
4:  pop_gprs
    incq %gs:{transitions}
    swapgs
    addq ${iret_frame}, %rsp
    iretq

/* A trap taken in the hypervisor: the idle loop's `hlt`, a fault in the guest-memory copy,
   or a bug. GS is not trusted (Linux's paranoid entry): a fault on the exit path after
   `swapgs`, or on the first instruction of `syscall_entry`, finds the guest's GS base, so
   the kernel's is put back if it is not there (every kernel GS base is a higher-half
   address; a guest's is always below it, since CR4.FSGSBASE stays off), and bit 63 of the
   frame's vector records that it must be swapped back. */
trap_from_hypervisor:
    push_gprs
    pushq $2
    popfq
    movl $0xc0000101, %ecx
    rdmsr
    testl %edx, %edx
    js 6f
    swapgs
    btsq $63, {vector}(%rsp)
6:  movq %rsp, %rdi
    call trap_dispatch
    btrq $63, {vector}(%rsp)
    jnc 7f
    swapgs
7:  pop_gprs
    addq ${iret_frame}, %rsp
    iretq

/* The frame a `syscall` entry builds by hand, the same as a trap's from ring 3: onto this
   CPU's kernel stack, the guest's SS, RSP, RFLAGS (R11), CS and RIP (RCX), an error code of
   0, the vector SYSCALL_VECTOR, then every general register. */
    .macro syscall_frame
    swapgs
    incq %gs:{transitions}
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
    .endm

/* syscall from 64-bit mode: RCX = guest RIP, R11 = guest RFLAGS, RSP still the guest's,
   and RFLAGS already masked by SFMASK (every flag that matters to ring 0 cleared).
   The hypercall is one call through HYPERCALL_TABLE (Xen's `hypercall_table`); then, as
   Xen's `test_all_events`, the way out is `sysretq` unless this CPU must reschedule, the
   vCPU has an event pending, the frame was rewritten, the FPU state must be restored, or
   the return address is not the guest's: each sends it through `syscall_leave` first. */
    .globl syscall_entry
syscall_entry:
    syscall_frame
    movq %rsp, %rdi
    cmpq ${nr_hypercalls}, %rax
    jae 1f
    leaq HYPERCALL_TABLE(%rip), %rcx
    call *(%rcx,%rax,8)
    jmp 2f
1:  call syscall_unknown
    /* RAX: 0, the caller's frame with its result; 1, a rewritten frame. */
2:  testq %rax, %rax
    jnz 5f
    cmpb $0, %gs:{need_resched}
    jne 5f
    movq %gs:{upcall_flag}, %rcx
    testq %rcx, %rcx
    jz 3f
    cmpb $0, (%rcx)
    jne 5f
    /* Never sysretq to a non-canonical RIP: Intel CPUs raise #GP in ring 0 with the guest's
       stack (XSA-7, CVE-2012-0217). Nor with a non-canonical RSP, which the guest chose
       and `syscall` kept. `syscall_leave`'s frame check kills the caller for either. This
       is also the last line for a frame `syscall_leave` passed, as in Xen's
       restore_all_guest. */
3:  movq {rip}(%rsp), %rax
    shrq $47, %rax
    jnz 5f
    movq {rsp}(%rsp), %rax
    movabsq $0x800000000000, %rcx
    addq %rcx, %rax
    shrq $48, %rax
    jnz 5f
    cmpq $0, %gs:{fpu_restore}
    jne return_from_trap
    scrub_xmm
    pop_gprs
    movq {hw_rip}(%rsp), %rcx
    movq {hw_rflags}(%rsp), %r11
    movq {hw_rsp}(%rsp), %rsp
    incq %gs:{transitions}
    swapgs
    sysretq
    /* The slow way out: `syscall_leave` reschedules, enters an upcall, checks the frame.
       0: back by sysretq; 1: the frame holds a vCPU that did not enter by syscall, or the
       FPU must be restored: leave by iretq, which restores every register; 2: nothing to
       run here, so idle. */
5:  movq %rsp, %rdi
    movq %rax, %rsi
    call syscall_leave
    cmpq $1, %rax
    je return_from_trap
    ja run_idle
    jmp 3b

/* syscall from compatibility mode (MSR_CSTAR). Guests have no 32-bit code segment, so this
   cannot happen; if it ever does, the caller is killed rather than trusted: it gets the
   same frame as a 64-bit hypercall, and `compat_syscall_dispatch` kills its domain. */
    .globl compat_syscall_entry
compat_syscall_entry:
    syscall_frame
    movq %rsp, %rdi
    call compat_syscall_dispatch
    testq %rax, %rax
    jnz run_idle
    jmp return_from_trap

/* syscall_floor: the benchmarks' floor, installed in LSTAR only while Domain0 measures it:
   a NULL hypercall returns at once by `sysretq` (nothing saved, no stack touched); any other
   number takes the full entry, and so does a return address past the guest's half (bit 47:
   a `syscall` in the last two bytes below it), which `sysretq` must never get (XSA-7). */
    .globl syscall_floor
syscall_floor:
    cmpq ${null_hypercall}, %rax
    jne syscall_entry
    btq $47, %rcx
    jc syscall_entry
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
   resumes at the fix-up, with RCX holding the bytes left. RFLAGS.AC is set for the copy
   alone: with SMAP on, it is the only place ring 0 may touch a guest page (`stac`/`clac`
   done with pushfq/popfq, which every CPU has, SMAP or not). */
    .globl copy_user, copy_user_insn, copy_user_fixup
copy_user:
    pushfq
    orq ${ac}, (%rsp)
    popfq
    movq %rdx, %rcx
copy_user_insn:
    rep movsb
    xorl %eax, %eax
8:  pushfq
    andq $~{ac}, (%rsp)
    popfq
    ret
copy_user_fixup:
    movq %rcx, %rax
    jmp 8b

/* idle_halt(): waits for an interrupt with interrupts on, then turns them off. The
   interrupt is taken on this stack, below the caller's frame (an `extern "C"` call, so no
   red zone of the caller is live). */
    .globl idle_halt
idle_halt:
    incq %gs:{transitions}
    sti
    hlt
    cli
    incq %gs:{transitions}
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
    transitions = const TRANSITIONS,
    kernel_stack_top = const KERNEL_STACK_TOP,
    user_data = const USER_DATA.0 as u64,
    user_code = const USER_CODE.0 as u64,
    syscall_vector = const SYSCALL_VECTOR,
    vector = const frame::VECTOR,
    rip = const core::mem::offset_of!(TrapFrame, rip),
    rsp = const core::mem::offset_of!(TrapFrame, rsp),
    hw_cs = const frame::CS,
    hw_rip = const frame::RIP,
    hw_rflags = const frame::RFLAGS,
    hw_rsp = const frame::RSP,
    iret_frame = const frame::IRET_FRAME,
    ac = const 1u64 << 18,
    null_hypercall = const abi::hypercall::NULL,
    nr_hypercalls = const abi::hypercall::NR_HYPERCALLS,
    need_resched = const NEED_RESCHED,
    upcall_flag = const UPCALL_FLAG,
    options(att_syntax)
);

unsafe extern "C" {
    fn resume_frame(frame: *const super::trap::TrapFrame) -> !;
    fn run_idle() -> !;
    fn copy_user(dst: *mut u8, src: *const u8, len: usize) -> usize;
    fn idle_halt();
    static copy_user_insn: u8;
    static copy_user_fixup: u8;
    fn syscall_entry();
    fn compat_syscall_entry();
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

/// Sleeps until the next interrupt (which is handled before this returns), interrupts on
/// only while halted.
pub fn wait_for_interrupt() {
    // SAFETY: interrupts are taken on the current stack below this call, which holds no
    // live data below its stack pointer; every handler returns here with RFLAGS restored
    // by `iretq`, and `cli` turns interrupts off again before returning.
    unsafe { idle_halt() }
}

/// Whether `rip` is the first instruction of the 64-bit `syscall` entry, where a #DB from a
/// guest's TF is reported.
pub fn is_syscall_entry(rip: u64) -> bool {
    rip == syscall_entry as *const () as u64
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

/// Points `syscall` at our entry: STAR selectors, LSTAR entry, CSTAR (compatibility mode)
/// at the entry that kills its caller, SYSENTER disabled, and the RFLAGS bits cleared on
/// entry: every flag but the reserved bit 1, as Linux's `syscall_init` does, so that nothing
/// a guest sets with `popfq` (NT, AC, TF, DF, IOPL is not settable but is cleared too) is in
/// force while the hypervisor runs. NT would make the hypervisor's own `iretq` a task
/// return (#GP); AC would switch SMAP off; TF would single-step the hypervisor.
pub fn init_syscall() {
    use x86_64::registers::model_specific::{Efer, EferFlags, LStar, Msr, SFMask, Star};
    const IA32_CSTAR: u32 = 0xc000_0083;
    const IA32_SYSENTER_CS: u32 = 0x174;
    const IA32_SYSENTER_ESP: u32 = 0x175;
    const IA32_SYSENTER_EIP: u32 = 0x176;
    // SAFETY: the selectors match the GDT layout of `gdt.rs`; the entries are the stubs
    // above; EFER.SCE was set by the boot code, and setting it again changes nothing else.
    // A SYSENTER_CS of 0 makes `sysenter` raise #GP (a guest fault, which kills it), and
    // `sysenter` is #UD in long mode on AMD anyway.
    unsafe {
        Efer::update(|f| *f |= EferFlags::SYSTEM_CALL_EXTENSIONS);
        LStar::write(x86_64::VirtAddr::new(syscall_entry as *const () as u64));
        Msr::new(IA32_CSTAR).write(compat_syscall_entry as *const () as u64);
        for msr in [IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP] {
            Msr::new(msr).write(0);
        }
        SFMask::write(SYSCALL_CLEARED_FLAGS);
    }
    Star::write(
        super::gdt::USER_CODE,
        super::gdt::USER_DATA,
        super::gdt::KERNEL_CODE,
        super::gdt::KERNEL_DATA,
    )
    .expect("GDT layout matches what syscall/sysret require");
}

/// The RFLAGS bits `syscall` clears (SFMASK): all of them (bit 1 is reserved and always
/// reads 1).
pub const SYSCALL_CLEARED_FLAGS: x86_64::registers::rflags::RFlags =
    x86_64::registers::rflags::RFlags::from_bits_truncate(!0x2);
