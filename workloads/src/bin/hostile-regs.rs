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
//! - `role` 2, the hypercall checker (1 vCPU, on the filler's CPU; case `regs-hypercall`):
//!   the `syscall` entry stores only part of the trap frame and writes the rest (RBX, RBP,
//!   R12-R15, the selectors) only on the slow way out (`kernel/src/arch/x86_64/entry.rs`);
//!   until then those words hold what an earlier entry left on the kernel stack. Each of
//!   `rounds` calls enters with RBX, RBP, R12-R15 and the argument registers set to values
//!   of its own and must come back with every one of them unchanged, RAX its result and RCX
//!   the address after the `syscall`, whichever way out it took: the unmask of its timer
//!   VIRQ's port with the event pending (the upcall is entered at the hypercall's exit, then
//!   `callback_return`),
//!   a yield (a switch to the filler and back), a null call (`sysretq`) and an unknown
//!   number. Every unmask must have been followed by its upcall.
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
        2 => hypercall_checker(vcpu),
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

/// What [`probe`] enters a hypercall with: RBX, RBP, R12-R15, RSI, RDX, R8, R9, R10, RDI,
/// RAX (the number). Addressed RIP-relative by the assembly.
static mut PROBE_IN: [u64; 13] = [0; 13];
/// What it came back with: the thirteen registers of [`PROBE_IN`] in that order, then RCX,
/// R11, and the address right after the `syscall` (RCX's right value).
static mut PROBE_OUT: [u64; 16] = [0; 16];

/// Issues one hypercall with every register of `regs` loaded (RBX, RBP, R12-R15, RSI, RDX,
/// R8, R9, R10, RDI, RAX) and returns every register as it came back.
fn probe(regs: [u64; 13]) -> [u64; 16] {
    // SAFETY: one vCPU uses the statics (the case runs on vCPU 0 alone), through raw
    // pointers; the assembly saves and restores RBX and RBP, which Rust reserves, and
    // declares everything else it changes; the upcall frame goes below the red zone.
    unsafe {
        core::ptr::addr_of_mut!(PROBE_IN).write_volatile(regs);
        core::arch::asm!(
            "push rbx",
            "push rbp",
            "mov rbx, [rip + {inp}]",
            "mov rbp, [rip + {inp} + 8]",
            "mov r12, [rip + {inp} + 16]",
            "mov r13, [rip + {inp} + 24]",
            "mov r14, [rip + {inp} + 32]",
            "mov r15, [rip + {inp} + 40]",
            "mov rsi, [rip + {inp} + 48]",
            "mov rdx, [rip + {inp} + 56]",
            "mov r8, [rip + {inp} + 64]",
            "mov r9, [rip + {inp} + 72]",
            "mov r10, [rip + {inp} + 80]",
            "mov rdi, [rip + {inp} + 88]",
            "mov rax, [rip + {inp} + 96]",
            "syscall",
            "3:",
            "mov [rip + {out}], rbx",
            "mov [rip + {out} + 8], rbp",
            "mov [rip + {out} + 16], r12",
            "mov [rip + {out} + 24], r13",
            "mov [rip + {out} + 32], r14",
            "mov [rip + {out} + 40], r15",
            "mov [rip + {out} + 48], rsi",
            "mov [rip + {out} + 56], rdx",
            "mov [rip + {out} + 64], r8",
            "mov [rip + {out} + 72], r9",
            "mov [rip + {out} + 80], r10",
            "mov [rip + {out} + 88], rdi",
            "mov [rip + {out} + 96], rax",
            "mov [rip + {out} + 104], rcx",
            "mov [rip + {out} + 112], r11",
            "lea rax, [rip + 3b]",
            "mov [rip + {out} + 120], rax",
            "pop rbp",
            "pop rbx",
            inp = sym PROBE_IN,
            out = sym PROBE_OUT,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("C"),
        );
        core::ptr::addr_of!(PROBE_OUT).read_volatile()
    }
}

const PROBE_NAMES: [&str; 13] = [
    "rbx", "rbp", "r12", "r13", "r14", "r15", "rsi", "rdx", "r8", "r9", "r10", "rdi", "rax",
];

fn count_upcall(_vcpu: usize, _port: u32) {}

/// Role 2: case `regs-hypercall` (see the module's doc).
fn hypercall_checker(vcpu: usize) -> u64 {
    use abi::hypercall::{EVTCHN_OP, EvtchnOp, NULL, SCHED_OP, SchedOp};
    const CASE: &str = "regs-hypercall";
    if vcpu != 0 {
        workloads::rt::park(vcpu);
    }
    let rounds = shared::arg("rounds", 400);
    if let Err(e) = workloads::upcall::register(count_upcall) {
        return xtf::error(CASE, format_args!("registering the upcall: {e:?}"));
    }
    let port = match workloads::hypercall::evtchn_bind_virq(abi::hypercall::virq::TIMER) {
        Ok(p) => p,
        Err(e) => return xtf::error(CASE, format_args!("binding the timer VIRQ: {e:?}")),
    };
    let mut c = Checks::new(CASE);
    let (mut bad, mut sends) = (0u64, 0u64);
    let upcalls_before = workloads::upcall::UPCALLS.load(Ordering::SeqCst);
    for i in 0..rounds {
        let mut regs: [u64; 13] =
            core::array::from_fn(|j| 0x5eed_0000_0000_0000 | i << 8 | j as u64);
        // (number, RDI, the result it must leave in RAX)
        let (number, rdi, result) = match i % 4 {
            0 => {
                // The timer's event left pending on its masked port; the unmask (RSI: the
                // port) marks the upcall due, which is entered on the way out.
                shared::set_mask(port, true);
                let _ = workloads::hypercall::set_timer(time::now_ns());
                let until = time::now_ns() + 100_000_000;
                while !shared::pending(port) && time::now_ns() < until {
                    core::hint::spin_loop();
                }
                if !shared::pending(port) {
                    return xtf::error(CASE, format_args!("the timer VIRQ never came"));
                }
                regs[6] = u64::from(port);
                sends += 1;
                (EVTCHN_OP, EvtchnOp::Unmask as u64, 0)
            }
            1 => (SCHED_OP, SchedOp::Yield as u64, 0),
            2 => (NULL, regs[11], 0),
            _ => (
                0x5eed_0000 | i,
                regs[11],
                abi::error::Errno::NoSys.to_ret() as u64,
            ),
        };
        regs[11] = rdi;
        regs[12] = number;
        let out = probe(regs);
        let mut want = regs;
        want[12] = result;
        let mut wrong = false;
        for (j, name) in PROBE_NAMES.iter().enumerate() {
            if out[j] != want[j] {
                wrong = true;
                if bad < 8 {
                    println!(
                        "WRONG: call {i} (number {number:#x}): {name} = {:#x}, want {:#x}",
                        out[j], want[j]
                    );
                }
            }
        }
        if out[13] != out[15] {
            wrong = true;
            if bad < 8 {
                println!(
                    "WRONG: call {i} (number {number:#x}): rcx = {:#x}, want {:#x}",
                    out[13], out[15]
                );
            }
        }
        bad += u64::from(wrong);
    }
    let upcalls = workloads::upcall::UPCALLS.load(Ordering::SeqCst) - upcalls_before;
    println!("{rounds} calls, {sends} unmasks of a pending port, {upcalls} upcalls");
    c.eq("calls that came back with a register not their own", bad, 0);
    c.that(
        format_args!("every unmask's upcall was taken ({upcalls} for {sends})"),
        upcalls >= sends,
    );
    c.verdict()
}
