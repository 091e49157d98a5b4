//! `hostile-regs`: the register-leak case of the XTF-style hostile suite. It has its own
//! `_start`, which saves every register the vCPU was started with before any code runs.
//!
//! - `role` 0, the filler: every vCPU fills the general registers, XMM0-15, MXCSR, the x87
//!   control word and DS/ES/FS/GS with values of its own and spins and yields with them, so
//!   that whatever the hypervisor leaves behind on a CPU is those values. Ends with SUCCESS
//!   after 800 ms.
//! - `role` 1, the checker (2 vCPUs, on the filler's CPU): what each vCPU got at entry must
//!   be the entry contract (workloads/README.md) and nothing else: RDI its index, RSP its
//!   stack top, RFLAGS 0x202, CS 0x2b, SS 0x23, every other general register 0, XMM0-15 0,
//!   MXCSR 0x1f80, x87 control word 0x37f, DS/ES/FS/GS null or the user data segment. Each
//!   vCPU checks its own entry; vCPU 0 reports SUCCESS if every entry was clean (case
//!   `regs-at-entry`). (`vcpu_op Up` resumes a vCPU where it went down rather than at the
//!   entry, so each vCPU enters once: a spec runs several checkers.)
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout::{STACK_STRIDE, STACK_TOP};
use workloads::xtf::{self, Checks};
use workloads::{println, shared, time};

/// What `_start` saves, in push order reversed (lowest address first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    xmm: [[u64; 2]; 16],
    mxcsr: u32,
    fcw: u16,
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    ss: u16,
    cs: u16,
    pad: [u16; 3],
    /// r15 .. rax as pushed: r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx,
    /// rbx, rax.
    gpr: [u64; 15],
    rflags: u64,
}

const GPR_NAMES: [&str; 15] = [
    "r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8", "rbp", "rdi", "rsi", "rdx", "rcx", "rbx",
    "rax",
];

workloads::entry!(
    start: regs_entry,
    prologue: [
        "pushfq",
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11",
        "push r12", "push r13", "push r14", "push r15",
        "sub rsp, 280",
        ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
        "movdqu [rsp + 16 * \\r], xmm\\r",
        ".endr",
        "stmxcsr [rsp + 256]",
        "fnstcw [rsp + 260]",
        "mov ax, ds", "mov [rsp + 262], ax",
        "mov ax, es", "mov [rsp + 264], ax",
        "mov ax, fs", "mov [rsp + 266], ax",
        "mov ax, gs", "mov [rsp + 268], ax",
        "mov ax, ss", "mov [rsp + 270], ax",
        "mov ax, cs", "mov [rsp + 272], ax",
        "mov rsi, rsp",
    ]
);

const _: () = assert!(core::mem::size_of::<Entry>() == 280 + 16 * 8);

/// Entries seen by each vCPU (0 and 1) and how many times vCPU 1 started.
static SEEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static BAD: AtomicU64 = AtomicU64::new(0);

extern "C" fn regs_entry(vcpu: usize, saved: *const Entry) -> ! {
    if shared::arg("role", 0) != 0 {
        // SAFETY: `_start` just wrote a whole `Entry` at `saved`, on this vCPU's stack, above
        // the frame of this function.
        let e = unsafe { saved.read() };
        let mut ok = clean(vcpu, &e);
        // RSP at entry: just above what `_start` pushed.
        let rsp = saved as u64 + core::mem::size_of::<Entry>() as u64;
        let top = STACK_TOP - vcpu as u64 * STACK_STRIDE;
        if rsp != top {
            println!("WRONG: vCPU {vcpu} at entry: RSP = {rsp:#x}, want {top:#x}");
            ok = false;
        }
        if !ok {
            BAD.fetch_add(1, Ordering::SeqCst);
        }
        SEEN[vcpu.min(1)].fetch_add(1, Ordering::SeqCst);
    }
    workloads::rt::run(vcpu, run)
}

fn run(vcpu: usize) -> u64 {
    match shared::arg("role", 0) {
        0 => filler(vcpu),
        _ => checker(vcpu),
    }
}

/// Checks one entry against the contract; prints what differs; returns whether it held.
fn clean(vcpu: usize, e: &Entry) -> bool {
    let mut ok = true;
    let mut bad = |what: core::fmt::Arguments<'_>| {
        ok = false;
        println!("WRONG: vCPU {vcpu} at entry: {what}");
    };
    for (i, (name, v)) in GPR_NAMES.iter().zip(e.gpr).enumerate() {
        let want = if i == 9 { vcpu as u64 } else { 0 };
        if v != want {
            bad(format_args!("{name} = {v:#x}, want {want:#x}"));
        }
    }
    // RSP before `_start` pushed: the saved block is 15 words + RFLAGS + 280 bytes below.
    if e.rflags != 0x202 {
        bad(format_args!("RFLAGS = {:#x}, want 0x202", e.rflags));
    }
    for (i, x) in e.xmm.iter().enumerate() {
        if *x != [0, 0] {
            bad(format_args!("xmm{i} = {x:#x?}"));
        }
    }
    if e.mxcsr != 0x1f80 {
        bad(format_args!("MXCSR = {:#x}, want 0x1f80", e.mxcsr));
    }
    if e.fcw != 0x37f {
        bad(format_args!("x87 control word = {:#x}, want 0x37f", e.fcw));
    }
    for (name, s) in [("DS", e.ds), ("ES", e.es), ("FS", e.fs), ("GS", e.gs)] {
        if s & !3 != 0 && s != 0x23 {
            bad(format_args!("{name} = {s:#x}, want null or 0x23"));
        }
    }
    if e.cs != 0x2b || e.ss != 0x23 {
        bad(format_args!(
            "CS:SS = {:#x}:{:#x}, want 0x2b:0x23",
            e.cs, e.ss
        ));
    }
    ok
}

fn checker(vcpu: usize) -> u64 {
    if vcpu != 0 {
        workloads::rt::park(vcpu);
    }
    let mut c = Checks::new("regs-at-entry");
    let vcpus = u64::from(shared::vcpus()).min(2);
    let until = time::now_ns() + 500_000_000;
    while SEEN[0].load(Ordering::SeqCst) + SEEN[1].load(Ordering::SeqCst) < vcpus
        && time::now_ns() < until
    {
        time::sleep_ns(1_000_000);
    }
    let seen = SEEN[0].load(Ordering::SeqCst) + SEEN[1].load(Ordering::SeqCst);
    c.eq("vCPUs that entered", seen, vcpus);
    c.eq(
        "entries with a register not as the contract says",
        BAD.load(Ordering::SeqCst),
        0,
    );
    c.verdict()
}

/// Fills every register it can with its own values and spins and yields with them there.
fn filler(vcpu: usize) -> u64 {
    let sel: u16 = 0x2b;
    let until = time::now_ns() + 800_000_000;
    let mut rounds = 0u64;
    while time::now_ns() < until {
        // SAFETY: fills registers it declares clobbered; the selectors loaded change nothing
        // Rust relies on in 64-bit mode; MXCSR and the x87 control word are restored.
        unsafe {
            core::arch::asm!(
                "sub rsp, 16",
                "stmxcsr [rsp]",
                "fnstcw [rsp + 4]",
                "mov dword ptr [rsp + 8], 0x7fa0",
                "ldmxcsr [rsp + 8]",
                "mov word ptr [rsp + 8], 0x27f",
                "fldcw [rsp + 8]",
                "mov ds, {sel:x}", "mov es, {sel:x}", "mov fs, {sel:x}", "mov gs, {sel:x}",
                "movq xmm0, {p}",
                "punpcklqdq xmm0, xmm0",
                ".irp r, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
                "movdqa xmm\\r, xmm0",
                ".endr",
                "mov rax, {p}", "mov rcx, {p}", "mov rdx, {p}", "mov rsi, {p}", "mov rdi, {p}",
                "mov r8, {p}", "mov r9, {p}", "mov r10, {p}", "mov r11, {p}",
                "mov {n:e}, 20000",
                "2:",
                "dec {n:e}",
                "jnz 2b",
                // A yield with everything still filled (RCX and R11 go to `syscall`).
                "mov eax, {sched_op}",
                "xor edi, edi",
                "syscall",
                "ldmxcsr [rsp]",
                "fldcw [rsp + 4]",
                "add rsp, 16",
                sel = in(reg) sel,
                p = in(reg) 0xf111_e700_0000_0000u64 | vcpu as u64,
                n = out(reg) _,
                sched_op = const abi::hypercall::SCHED_OP,
                out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            );
        }
        rounds += 1;
    }
    // SAFETY: back to null selectors.
    unsafe {
        core::arch::asm!("xor eax, eax", "mov ds, ax", "mov es, ax", "mov fs, ax", "mov gs, ax", out("rax") _)
    };
    if vcpu != 0 {
        workloads::rt::park(vcpu);
    }
    xtf::success(
        "regs-filler",
        format_args!("{rounds} rounds with every register filled"),
    )
}
