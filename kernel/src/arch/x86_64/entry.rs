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
//! The `syscall` entry fills the frame in two steps (`syscall_frame`, `complete_frame`):
//! first what a hypercall may read or change (RIP, RFLAGS, RSP and the caller-saved
//! registers), then, only on the ways out that run more Rust code (`syscall_leave`, the
//! compatibility-mode entry), the constants and the callee-saved registers, which the C ABI
//! has kept in their registers meanwhile. So the Rust code reached through
//! `HYPERCALL_TABLE` may read only what the entry stored (the argument registers RDI, RSI,
//! RDX, R10, R8, and RAX, RIP, RSP, RFLAGS), and write RAX, RCX, RDX, RSI, RDI, R8 to R11,
//! RIP, RSP and RFLAGS; a vCPU switch,
//! an upcall and the exit check (which read or rewrite all of it) run in `syscall_leave`,
//! after `complete_frame`. The fast way out (`sysretq`) loads back only what a hypercall
//! may have changed.
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
//!
//! # What QEMU's TCG charges (7.2, the measuring machine)
//!
//! Profiled with `perf record -p QEMU` during Domain0's null-hypercall benchmark (session
//! 12, before the shape described here): against the `syscall; sysretq` floor, four fifths
//! of the extra time was in
//! translated code, the rest in the two block look-ups of the table's indirect `call` and
//! of the `ret` (`helper_lookup_tb_ptr`). In translated code, every guest load or store is
//! a soft-TLB lookup (about a dozen host instructions, a `push` or `pop` one more to write
//! RSP back), every conditional branch ends a translated block (the registers go back to
//! QEMU's CPU state, the next block reloads them), `incq` calls a helper to keep CF (so the
//! watchdog's count is bumped by `addq`), while `pxor` and register moves of XMM registers
//! are inline 16-byte stores and loads (the new SSE decoder). Hence the fast path's shape:
//! half the frame stored and a third of it loaded back (above), one branch between the
//! call and `sysretq`, none before the call. What is left above the floor is mostly the
//! Rust dispatch (its call, its `ret` and the blocks of `with_current`'s two tests: the
//! path without them, measured once, was 10–14 ns, about 40%, cheaper); dropping the XMM
//! scrub saved nothing measurable.

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

    /* Zeroes XMM0-15 with sixteen `pxor`s, each a zeroing idiom (no execution unit on
       hardware; under QEMU 7.2's TCG, whose new SSE decoder translates it inline, one
       16-byte store into the register file, where a register `movaps` is a load and a
       store). */
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

/* Stack on arrival: vector, error code, RIP, CS, RFLAGS, RSP, SS. From ring 3 the CPU has
   switched to this CPU's kernel stack (TSS.RSP0); from ring 0 it pushed onto the current
   stack (only NMI, #DB, #DF and #MC use IST stacks of their own). */
trap_common:
    testb $3, {hw_cs}(%rsp)
    jz trap_from_hypervisor
    swapgs
    addq $1, %gs:{transitions}
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
    addq $1, %gs:{transitions}
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

/* The frame a `syscall` entry builds by hand, the same as a trap's from ring 3, on this
   CPU's kernel stack, in two parts. `syscall_frame`, on entry: the guest's RIP (RCX),
   RFLAGS (R11) and RSP, and the registers that Rust code may clobber (RAX, RCX, RDX, RSI,
   RDI, R8 to R11), which are also the only ones a hypercall reads or writes (its arguments
   and results; `CALLBACK_RETURN` rewrites these, RIP, RSP and RFLAGS). `complete_frame`,
   before any other Rust code may see the frame (so on every way out but the fast
   `sysretq`): the constants (SS, CS, an error code of 0, the vector SYSCALL_VECTOR) and
   the callee-saved registers, which hold the guest's values again once the hypercall has
   returned (the C ABI), and which nothing before that point changes in the frame. Under
   TCG each stored or loaded word is a soft-TLB lookup: the fast path stores 13 of the 22
   and loads 10. Stores, not pushes: a `push` also writes RSP back to QEMU's CPU state. */
    .macro syscall_frame
    swapgs
    addq $1, %gs:{transitions}
    movq %rsp, %gs:{user_rsp}
    movq %gs:{kernel_stack_top}, %rsp
    subq ${frame_bytes}, %rsp
    movq %rcx, {rip}(%rsp)
    movq %r11, {rflags}(%rsp)
    movq %rax, {f_rax}(%rsp)
    movq %rcx, {f_rcx}(%rsp)
    movq %rdx, {f_rdx}(%rsp)
    movq %rsi, {f_rsi}(%rsp)
    movq %rdi, {f_rdi}(%rsp)
    movq %r8, {f_r8}(%rsp)
    movq %r9, {f_r9}(%rsp)
    movq %r10, {f_r10}(%rsp)
    movq %r11, {f_r11}(%rsp)
    movq %gs:{user_rsp}, %rcx
    movq %rcx, {rsp}(%rsp)
    .endm

    .macro complete_frame
    movq ${user_data}, {ss}(%rsp)
    movq ${user_code}, {cs}(%rsp)
    movq $0, {error_code}(%rsp)
    movq ${syscall_vector}, {vector}(%rsp)
    movq %rbx, {f_rbx}(%rsp)
    movq %rbp, {f_rbp}(%rsp)
    movq %r12, {f_r12}(%rsp)
    movq %r13, {f_r13}(%rsp)
    movq %r14, {f_r14}(%rsp)
    movq %r15, {f_r15}(%rsp)
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
    /* Numbers past the table take its last entry, `syscall_unknown`: a `cmov`, not a
       branch, so that under TCG the entry is one translated block up to the call. */
    movl ${nr_hypercalls}, %ecx
    cmpq %rcx, %rax
    cmovbq %rax, %rcx
    call *HYPERCALL_TABLE(,%rcx,8)
    /* RAX: 0, the caller's frame with its result; 1, a rewritten frame. Every reason to
       leave other than by `sysretq` is OR-ed into RCX and tested once (under TCG each
       conditional branch ends a translated block): the exit code, the vCPU's
       `upcall_pending` byte (`upcall_flag` always points at one: a zero byte when no
       vCPU runs or it has no callback), this CPU's `need_resched`, a requested FPU restore, and a return to a
       non-canonical RIP or RSP: Intel CPUs raise #GP in ring 0 with the guest's stack
       for the first (XSA-7, CVE-2012-0217), and the guest chose the second, which
       `syscall` kept. `syscall_leave` sorts them out; its frame check kills the caller
       for a bad RIP or RSP. */
    movq %gs:{upcall_flag}, %rcx
    movzbl (%rcx), %ecx
    orb %gs:{need_resched}, %cl
    orq %rax, %rcx
    orq %gs:{fpu_restore}, %rcx
    movq {rip}(%rsp), %rdx
    shrq $47, %rdx
    orq %rdx, %rcx
    movq {rsp}(%rsp), %rdx
    movabsq $0x800000000000, %rsi
    addq %rsi, %rdx
    shrq $48, %rdx
    orq %rdx, %rcx
    jnz 5f
    /* Only what the hypercall may have changed comes back from the frame: RCX and R11
       are the return RIP and RFLAGS, and the callee-saved registers never left. */
4:  scrub_xmm
    movq {f_rax}(%rsp), %rax
    movq {f_rdx}(%rsp), %rdx
    movq {f_rsi}(%rsp), %rsi
    movq {f_rdi}(%rsp), %rdi
    movq {f_r8}(%rsp), %r8
    movq {f_r9}(%rsp), %r9
    movq {f_r10}(%rsp), %r10
    movq {rip}(%rsp), %rcx
    movq {rflags}(%rsp), %r11
    movq {rsp}(%rsp), %rsp
    addq $1, %gs:{transitions}
    swapgs
    sysretq
    /* The slow way out: `syscall_leave` reschedules, enters an upcall, checks the frame.
       0: back by sysretq; 1: the frame holds a vCPU that did not enter by syscall, or the
       FPU must be restored: leave by iretq, which restores every register; 2: nothing to
       run here, so idle. */
5:  complete_frame
6:  movq %rsp, %rdi
    movq %rax, %rsi
    call syscall_leave
    cmpq $1, %rax
    je return_from_trap
    ja run_idle
    /* 0: the FPU restore and the canonical RIP and RSP looked at again, the last line
       for a frame `syscall_leave` passed, as in Xen's restore_all_guest. */
    cmpq $0, %gs:{fpu_restore}
    jne return_from_trap
    movq {rip}(%rsp), %rax
    shrq $47, %rax
    jnz 6b
    movq {rsp}(%rsp), %rax
    movabsq $0x800000000000, %rcx
    addq %rcx, %rax
    shrq $48, %rax
    jnz 6b
    jmp 4b

/* syscall from compatibility mode (MSR_CSTAR). Guests have no 32-bit code segment, so this
   cannot happen; if it ever does, the caller is killed rather than trusted: it gets the
   same frame as a 64-bit hypercall, and `compat_syscall_dispatch` kills its domain. */
    .globl compat_syscall_entry
compat_syscall_entry:
    syscall_frame
    complete_frame
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
    addq $1, %gs:{transitions}
    sti
    hlt
    cli
    addq $1, %gs:{transitions}
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
    rflags = const core::mem::offset_of!(TrapFrame, rflags),
    cs = const core::mem::offset_of!(TrapFrame, cs),
    ss = const core::mem::offset_of!(TrapFrame, ss),
    error_code = const core::mem::offset_of!(TrapFrame, error_code),
    frame_bytes = const core::mem::size_of::<TrapFrame>(),
    f_rax = const core::mem::offset_of!(TrapFrame, rax),
    f_rbx = const core::mem::offset_of!(TrapFrame, rbx),
    f_rcx = const core::mem::offset_of!(TrapFrame, rcx),
    f_rdx = const core::mem::offset_of!(TrapFrame, rdx),
    f_rsi = const core::mem::offset_of!(TrapFrame, rsi),
    f_rdi = const core::mem::offset_of!(TrapFrame, rdi),
    f_rbp = const core::mem::offset_of!(TrapFrame, rbp),
    f_r8 = const core::mem::offset_of!(TrapFrame, r8),
    f_r9 = const core::mem::offset_of!(TrapFrame, r9),
    f_r10 = const core::mem::offset_of!(TrapFrame, r10),
    f_r11 = const core::mem::offset_of!(TrapFrame, r11),
    f_r12 = const core::mem::offset_of!(TrapFrame, r12),
    f_r13 = const core::mem::offset_of!(TrapFrame, r13),
    f_r14 = const core::mem::offset_of!(TrapFrame, r14),
    f_r15 = const core::mem::offset_of!(TrapFrame, r15),
    hw_cs = const frame::CS,
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

/// Whether `rip` is the first instruction of a 64-bit `syscall` entry, where a #DB from a
/// guest's TF is reported: the hypercall entry, or the benchmark floor while Domain0 has it
/// in LSTAR (`set_syscall_floor`; found by the attack sessions, not shown by a case: only
/// Domain0 runs then, and QEMU's TCG does not raise this #DB).
pub fn is_syscall_entry(rip: u64) -> bool {
    rip == syscall_entry as *const () as u64 || rip == syscall_floor as *const () as u64
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
