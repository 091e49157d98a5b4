//! `hostile-ring`: the ring-transition class of the XTF-style hostile suite (XSA-7, the
//! XSA-260 family, and their neighbours). Argument `case` picks one act; each ends as
//! `workloads::xtf` describes, and `scripts/runner/src/xtf.rs` says which ending is right.
//!
//! | case | name | act | right ending |
//! |---|---|---|---|
//! | 0 | compat-syscall | far return to GDT selector 0x18\|3 (a 32-bit code segment), `syscall` there | killed, never ring 0 |
//! | 1 | compat-ring0 | the same with a page of its own at VA 0 whose code, reached in ring 0, stores CR0 and `iretq`s back | killed; surviving with CR0 read is FAILURE |
//! | 2 | compat-int80 | far return to 0x18\|3, `int 0x80` there | killed |
//! | 3 | iret-compat | `iretq` to 0x18\|3, `syscall` there | killed |
//! | 4 | nt-yield | RFLAGS.NT set by `popfq`, then 200 yields | SUCCESS |
//! | 5 | nt-calls | NT set, then null, console_write, set_timer + block, 2,000 times null | SUCCESS |
//! | 6 | flags | AC, DF and ID set, IOPL 3 asked for, then null, yield and console_write; IOPL must stay 0 and every call work | SUCCESS |
//! | 7 | tf | RFLAGS.TF set by `popfq` (single-step) | killed: exception 1 |
//! | 8 | sysret-null | `syscall` (null) as the last two bytes below 0x0000_8000_0000_0000 (RCX non-canonical on return: Intel's `sysret` #GP in ring 0, XSA-7) | killed |
//! | 9 | sysret-block | the same with a `block` on an armed timer (the return goes through a switch to idle and back, by `iretq`) | killed |
//! | 10 | int3 | `int3` (0xcc) | killed |
//! | 11 | into | `into` (0xce, invalid in 64-bit mode) | killed |
//! | 12 | icebp | `int1`/`icebp` (0xf1) | killed |
//! | 13 | swapgs | `swapgs` in ring 3 | killed |
//! | 14 | sysret | `sysretq` in ring 3 | killed |
//! | 15 | iret-ring0 | `iretq` to CS 0x08 (ring 0) | killed |
//! | 16 | iret-noncanonical | `iretq` to RIP 0x0000_8000_0000_0000 | killed |
//! | 17 | mov-dr7 | `mov dr7, rax` | killed |
//! | 18 | mov-dr6 | `mov rax, dr6` | killed |
//! | 19 | lgdt | `lgdt` | killed |
//! | 20 | lidt | `lidt` | killed |
//! | 21 | ltr | `ltr` | killed |
//! | 22..=26 | sgdt, sidt, sldt, str, smsw | the UMIP instructions: with UMIP they fault; a value read is FAILURE (sgdt/sidt name hypervisor addresses) | killed (SKIP without UMIP) |
//! | 27 | seg-loads | every selector 0x00..=0x43 (GDT index 0..8, RPL 0 and 3) into DS, ES, FS, GS and SS where `verr`/`verw` say the CPU allows it; each must stay loaded across 20 yields and a preemption (a null selector may come back with another RPL) | SUCCESS |
//! | 28 | seg-bad | the group index picks one load the CPU must refuse (`verr`/`verw` confirm): DS with 0x08, 0x0b, 0x10, 0x13, 0x30, 0x33, 0x38, 0x40; SS with 0x00, 0x2b, 0x20, 0x1b | killed (ERROR if the CPU would allow it) |
//! | 29 | sysenter | `sysenter` (SYSENTER_CS is 0) | killed |
//! | 30..=33 | upcall-unmapped, upcall-readonly, upcall-kernel, upcall-noncanonical | an event upcall registered, the timer VIRQ due, RSP pointed at an unmapped page, a read-only page, the hypervisor's half, a non-canonical address, spinning in ring 3 (the upcall is entered from the timer interrupt) | killed: bad event upcall |
//! | 34 | upcall-hypercall | the same with RSP unmapped, in a loop of null hypercalls (entered on the way out of `syscall`) | killed: bad event upcall |
//! | 37 | upcall-idle | RSP unmapped, then `block` until the timer: the upcall is due when the idle loop enters the vCPU again | killed: bad event upcall, and the killed vCPU never runs again |
//! | 38 | tf-syscall | RFLAGS.TF set by `popfq` right before a `syscall`: the CPU reports the single-step trap on the hypervisor's first instruction, in ring 0 | killed: exception 1 (after the return, single-stepping), the machine running on |
//! | 39 | tf-movss-syscall | the same with a `mov ss` between them (the trap is held over the `mov ss` shadow onto the `syscall`, CVE-2018-8897's shape) | killed: exception 1 |
//! | 35 | wrmsr | `wrmsr` to LSTAR | killed |
//! | 36 | invlpg | `invlpg` | killed |
//! | 40 | force-callback | an upcall registered, its own `upcall_pending` set by hand, then a null hypercall, 1,000 times (Xen's `xen_force_evtchn_callback`): the upcall must be entered on the way out of that very hypercall, each time, not at a later interrupt | SUCCESS |
//! | 100 | int-n | `int N` (0xcd N), N = the domain's index in its group (`int0`..`int255`) | killed |
//!
//! vCPU 0 acts; other vCPUs park. A case that should be killed and survives prints FAILURE
//! and shuts down with `xtf::FAILURE`.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall as nr;
use abi::layout::SHARED_INFO;
use workloads::xtf::{self, Checks};
use workloads::{entry, hostile, hypercall, println, rt, shared, time, upcall};

entry!(main);

/// The 32-bit (compatibility-mode) code segment of today's GDT, RPL 3.
const COMPAT_CS: u64 = 0x18 | 3;
/// The 64-bit user code segment.
const USER_CS: u64 = 0x28 | 3;
/// The user data segment.
const USER_SS: u64 = 0x20 | 3;

/// Where `xtf_back64` finds the stack to return on; written by `xtf_leave64`.
#[unsafe(no_mangle)]
static XTF_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
/// What the ring-0 payload at VA 0 stores (CR0): non-zero means ring 0 was reached.
#[unsafe(no_mangle)]
static XTF_RING0_PROOF: AtomicU64 = AtomicU64::new(0);

global_asm!(
    ".pushsection .text.xtf_ring, \"ax\", @progbits",
    // xtf_leave64(rip, cs, rflags, how): saves the callee-saved registers and RSP, then
    // leaves 64-bit code for `cs:rip` by far return (how = 0) or `iretq` (how = 1, with
    // `rflags`, this stack and the user SS). Code that gets back jumps to `xtf_back64`, which
    // returns 1 from here.
    ".globl xtf_leave64",
    "xtf_leave64:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + XTF_SAVED_RSP], rsp",
    "test rcx, rcx",
    "jnz 2f",
    "push rsi",
    "push rdi",
    ".byte 0x48, 0xcb", // retfq
    "2:",
    "mov rax, rsp",
    "push {ss}",
    "push rax",
    "push rdx",
    "push rsi",
    "push rdi",
    "iretq",
    ".globl xtf_back64",
    "xtf_back64:",
    "mov rsp, [rip + XTF_SAVED_RSP]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "mov eax, 1",
    "ret",
    // Compatibility-mode code: one act each, then back to 64-bit code at `xtf_back64`.
    ".code32",
    ".globl xtf_compat_syscall",
    "xtf_compat_syscall:",
    "mov eax, {null}",
    "syscall",
    "push {user_cs}",
    ".byte 0x68", // push imm32
    ".long xtf_back64",
    "retf",
    ".globl xtf_compat_int80",
    "xtf_compat_int80:",
    "mov eax, {null}",
    "int 0x80",
    "push {user_cs}",
    ".byte 0x68", // push imm32
    ".long xtf_back64",
    "retf",
    ".code64",
    // 256 entries of 4 bytes: `int N; ret; int3`.
    ".balign 16",
    ".globl xtf_int_table",
    "xtf_int_table:",
    ".set xtf_n, 0",
    ".rept 256",
    ".byte 0xcd, xtf_n, 0xc3, 0xcc",
    ".set xtf_n, xtf_n + 1",
    ".endr",
    ".popsection",
    ss = const USER_SS,
    user_cs = const USER_CS,
    null = const nr::NULL,
);

unsafe extern "C" {
    fn xtf_leave64(rip: u64, cs: u64, rflags: u64, how: u64) -> u64;
    static xtf_back64: u8;
    static xtf_compat_syscall: u8;
    static xtf_compat_int80: u8;
    static xtf_int_table: u8;
}

fn addr(sym: &u8) -> u64 {
    sym as *const u8 as u64
}

/// Leaves 64-bit mode for `cs:rip` (by far return, or `iretq` with `rflags`); returns
/// whether the code got back (which, for every case here, it must not).
fn leave64(rip: u64, cs: u64, rflags: u64, by_iret: bool) -> bool {
    // SAFETY: `xtf_leave64` saves and restores every callee-saved register and the stack
    // pointer; what runs meanwhile touches no Rust memory except the two statics above.
    unsafe { xtf_leave64(rip, cs, rflags, u64::from(by_iret)) == 1 }
}

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let case = shared::arg("case", 0);
    match case {
        0 => compat("compat-syscall", false, false),
        1 => compat("compat-ring0", true, false),
        2 => {
            xtf::expect_killed("compat-int80", "far return to a 32-bit code segment");
            // SAFETY: symbol address only.
            let rip = addr(unsafe { &xtf_compat_int80 });
            let back = leave64(rip, COMPAT_CS, 0, false);
            xtf::survived(
                "compat-int80",
                format_args!("int 0x80 in compat mode ({back})"),
            )
        }
        3 => compat("iret-compat", false, true),
        4 => nt("nt-yield", true),
        5 => nt("nt-calls", false),
        6 => flags(),
        7 => {
            xtf::expect_killed("tf", "single-step trap (exception 1)");
            hostile::single_step();
            xtf::survived("tf", format_args!("single-stepping"))
        }
        8 => sysret_hole("sysret-null", nr::NULL),
        9 => sysret_hole("sysret-block", nr::SCHED_OP),
        10..=14 | 17..=21 | 29 | 35 | 36 => insn(case),
        15 => iret_bad("iret-ring0", 0x08, 0),
        16 => iret_bad("iret-noncanonical", USER_CS, 0x0000_8000_0000_0000),
        22..=26 => umip(case),
        27 => seg_loads(),
        28 => seg_bad(),
        30..=34 | 37 => upcall_bad_stack(case),
        38 | 39 => tf_syscall(case == 39),
        40 => force_callback(),
        100 => int_n(),
        _ => xtf::error("hostile-ring", format_args!("no case {case}")),
    }
}

/// A ring-0 instruction (or one that must fault) executed in ring 3.
fn insn(case: u64) -> u64 {
    let name = match case {
        10 => "int3",
        11 => "into",
        12 => "icebp",
        13 => "swapgs",
        14 => "sysret",
        17 => "mov-dr7",
        18 => "mov-dr6",
        19 => "lgdt",
        20 => "lidt",
        21 => "ltr",
        29 => "sysenter",
        35 => "wrmsr",
        _ => "invlpg",
    };
    xtf::expect_killed(name, "a fault in ring 3");
    let desc = [0u64; 2];
    // SAFETY: each instruction faults in ring 3 (that is the case). Should one run, it
    // touches only the registers declared here or reads `desc`: `lgdt`/`lidt` read it,
    // `sysret` would return to the next instruction, `wrmsr` would point LSTAR at 0 (which
    // the run would show), `invlpg` flushes a translation of its own.
    unsafe {
        match case {
            10 => asm!("int3"),
            11 => asm!(".byte 0xce"),
            12 => asm!(".byte 0xf1"),
            13 => asm!("swapgs"),
            14 => asm!("lea rcx, [rip + 2f]", "pushfq", "pop r11", "sysretq", "2:",
                       out("rcx") _, out("r11") _),
            17 => asm!("xor eax, eax", "mov dr7, rax", out("rax") _),
            18 => asm!("mov rax, dr6", out("rax") _),
            19 => asm!("lgdt [{}]", in(reg) desc.as_ptr()),
            20 => asm!("lidt [{}]", in(reg) desc.as_ptr()),
            21 => asm!("mov ax, 0x30", "ltr ax", out("rax") _),
            29 => asm!("sysenter"),
            35 => asm!("wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0, in("edx") 0),
            _ => asm!("invlpg [{}]", in(reg) 0x40_0000u64),
        }
    }
    xtf::survived(name, format_args!("`{name}` in ring 3"))
}

/// Enters compatibility mode and makes a hypercall there; with `ring0`, a page mapped at
/// VA 0 holds code that proves ring 0 (the old `MSR_CSTAR` is 0).
fn compat(case: &str, ring0: bool, by_iret: bool) -> u64 {
    if ring0 && let Err(e) = map_ring0_payload() {
        return xtf::error(case, format_args!("mapping the page at VA 0: {e:?}"));
    }
    xtf::expect_killed(case, "entering a 32-bit code segment, or syscall from it");
    // SAFETY: symbol address only.
    let rip = addr(unsafe { &xtf_compat_syscall });
    let back = leave64(rip, COMPAT_CS, 0x202, by_iret);
    let proof = XTF_RING0_PROOF.load(Ordering::SeqCst);
    if proof != 0 {
        return xtf::failure(
            case,
            format_args!(
                "guest code ran in ring 0 at VA 0 through MSR_CSTAR (read CR0 = {proof:#x})"
            ),
        );
    }
    xtf::survived(
        case,
        format_args!("syscall in compatibility mode (back: {back})"),
    )
}

/// Maps, at VA 0, a page of code that reads CR0 into `XTF_RING0_PROOF` and `iretq`s to
/// `xtf_back64` in ring 3: what a guest gets from a `syscall` in compatibility mode while
/// `MSR_CSTAR` is 0 and SMEP is off.
fn map_ring0_payload() -> Result<(), abi::error::Errno> {
    let proof = &XTF_RING0_PROOF as *const AtomicU64 as u64;
    let saved = &XTF_SAVED_RSP as *const AtomicU64 as u64;
    // SAFETY: symbol address only.
    let back = addr(unsafe { &xtf_back64 });
    let (proof, saved, back) = (proof as u32, saved as u32, back as u32);
    let mut code = [0u8; 64];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        code[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(&[0x0f, 0x20, 0xc0]); // mov rax, cr0
    put(&[0x48, 0x89, 0x04, 0x25]); // mov [proof], rax
    put(&proof.to_le_bytes());
    put(&[0x6a, USER_SS as u8]); // push ss
    put(&[0xff, 0x34, 0x25]); // push qword [saved]
    put(&saved.to_le_bytes());
    put(&[0x68, 0x02, 0x02, 0, 0]); // push 0x202
    put(&[0x6a, USER_CS as u8]); // push cs
    put(&[0x68]); // push back
    put(&back.to_le_bytes());
    put(&[0x48, 0xcf]); // iretq
    let page = xtf::take_frame()?;
    xtf::fill_frame(page, 0, &code[..n])?;
    xtf::map_page(0, page, false, true, None)?;
    Ok(())
}

/// RFLAGS.NT set, then hypercalls: the hypervisor must not `iretq` with NT set.
fn nt(case: &str, yields: bool) -> u64 {
    const NT: u64 = 1 << 14;
    let mut c = Checks::new(if yields { "nt-yield" } else { "nt-calls" });
    set_flags(NT);
    let mut nt_kept = true;
    if yields {
        for _ in 0..200 {
            hypercall::yield_now();
            nt_kept &= xtf::rflags() & NT != 0;
        }
    } else {
        for _ in 0..2000 {
            hypercall::null();
        }
        nt_kept &= xtf::rflags() & NT != 0;
        let n = hypercall::console_write(b"(NT set)\n");
        let _ = hypercall::set_timer(time::now_ns() + 200_000);
        hypercall::block();
        clear_flags(NT);
        c.eq("console_write with NT set", n, Ok(9));
    }
    clear_flags(NT);
    println!("{case}: NT still set after the calls: {nt_kept}");
    c.that(format_args!("the domain survived NT"), true);
    c.verdict()
}

fn set_flags(bits: u64) {
    // SAFETY: sets RFLAGS bits a ring-3 `popfq` may change; no memory but the stack word.
    unsafe { asm!("pushfq", "or [rsp], {}", "popfq", in(reg) bits) };
}

fn clear_flags(bits: u64) {
    // SAFETY: as in `set_flags`.
    unsafe { asm!("pushfq", "and [rsp], {}", "popfq", in(reg) !bits) };
}

/// AC, DF and ID set, IOPL 3 asked for: calls that copy guest memory must still work (SMAP
/// with `stac`/`clac`, DF cleared on entry), IOPL must stay 0.
fn flags() -> u64 {
    const AC: u64 = 1 << 18;
    const DF: u64 = 1 << 10;
    const ID: u64 = 1 << 21;
    const IOPL: u64 = 3 << 12;
    let mut c = Checks::new("flags");
    let msg = b"(AC, DF, ID set)\n";
    let (ret, after): (i64, u64);
    // SAFETY: the flags are set only around one console_write, which reads `msg`; Rust code
    // never runs with DF or AC set.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], {bits}",
            "popfq",
            "syscall",
            "pushfq",
            "pop rdx",
            "cld",
            "pushfq",
            "and qword ptr [rsp], {clear}",
            "popfq",
            bits = in(reg) AC | DF | ID | IOPL,
            clear = in(reg) !(AC | DF | ID),
            out("rdx") after,
            inlateout("rax") nr::CONSOLE_WRITE => ret,
            in("rdi") msg.as_ptr(),
            in("rsi") msg.len(),
            out("rcx") _, out("r11") _,
            clobber_abi("C"),
        );
    }
    c.eq("console_write with AC, DF, ID set", ret, msg.len() as i64);
    c.eq("IOPL after popfq asking for 3", after & IOPL, 0);
    c.eq(
        "AC, DF, ID as the guest left them",
        after & (AC | DF | ID),
        AC | DF | ID,
    );
    set_flags(AC | ID);
    hypercall::null();
    hypercall::yield_now();
    let f = xtf::rflags();
    clear_flags(AC | ID);
    c.eq(
        "AC and ID kept across null and yield",
        f & (AC | ID),
        AC | ID,
    );
    c.verdict()
}

/// A `syscall` as the last two bytes of the lower half: the return address in RCX is
/// 0x0000_8000_0000_0000, not canonical.
fn sysret_hole(case: &str, number: u64) -> u64 {
    const PAGE: u64 = 0x7fff_ffff_f000;
    let frame = match xtf::take_frame() {
        Ok(f) => f,
        Err(e) => return xtf::error(case, format_args!("taking a frame: {e:?}")),
    };
    let mut code = [0x90u8; 4096];
    code[4094] = 0x0f;
    code[4095] = 0x05;
    if let Err(e) = xtf::fill_frame(frame, 0, &code) {
        return xtf::error(case, format_args!("writing the page: {e:?}"));
    }
    if let Err(e) = xtf::map_page(PAGE, frame, false, true, None) {
        return xtf::error(case, format_args!("mapping 0x7fff_ffff_f000: {e:?}"));
    }
    xtf::expect_killed(case, "returning to a non-canonical RIP");
    // A block (sched_op 1) sleeps until the timer: the vCPU leaves the CPU and comes back
    // through the idle loop's `iretq`.
    let op = if number == nr::SCHED_OP {
        let _ = hypercall::set_timer(time::now_ns() + 1_000_000);
        abi::hypercall::SchedOp::Block as u64
    } else {
        0
    };
    // SAFETY: jumps to the page just mapped; the `syscall` there returns (if ever) to a
    // non-canonical address, which faults in ring 3.
    unsafe {
        asm!("call {t}", t = in(reg) PAGE + 4094, in("rax") number, in("rdi") op,
             clobber_abi("C"))
    };
    xtf::survived(case, format_args!("a syscall at the top of the lower half"))
}

/// `iretq` with a frame the CPU must refuse from ring 3.
fn iret_bad(case: &str, cs: u64, rip: u64) -> u64 {
    let rip = if rip == 0 {
        // SAFETY: symbol address only.
        addr(unsafe { &xtf_back64 })
    } else {
        rip
    };
    xtf::expect_killed(case, "a fault on iretq");
    let back = leave64(rip, cs, 0x202, true);
    xtf::survived(
        case,
        format_args!("iretq to {cs:#x}:{rip:#x} (back: {back})"),
    )
}

/// The instructions UMIP makes ring-0 only.
fn umip(case: u64) -> u64 {
    let name = ["sgdt", "sidt", "sldt", "str", "smsw"][(case - 22) as usize];
    if !xtf::has_umip() {
        return xtf::skip(name, format_args!("the CPU has no UMIP"));
    }
    xtf::expect_killed(name, "UMIP");
    let mut buf = [0u8; 16];
    // SAFETY: each stores at most 10 bytes into `buf` or a register.
    unsafe {
        match case {
            22 => asm!("sgdt [{}]", in(reg) buf.as_mut_ptr()),
            23 => asm!("sidt [{}]", in(reg) buf.as_mut_ptr()),
            24 => asm!("sldt ax", out("rax") _),
            25 => asm!("str ax", out("rax") _),
            _ => asm!("smsw rax", out("rax") _),
        }
    }
    let value = u64::from_le_bytes([
        buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
    ]);
    xtf::failure(
        name,
        format_args!("`{name}` ran in ring 3 with UMIP available (table base {value:#x})"),
    )
}

/// The segment registers a guest may load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    Ds,
    Es,
    Fs,
    Gs,
    Ss,
}

fn load_seg(reg: Seg, sel: u16) {
    // SAFETY: loads one segment register; in 64-bit mode none of them changes how Rust's
    // memory is addressed (FS and GS bases become the descriptor's, 0, and nothing here uses
    // them). A load the CPU refuses faults, which kills the domain.
    unsafe {
        match reg {
            Seg::Ds => asm!("mov ds, {0:x}", in(reg) sel),
            Seg::Es => asm!("mov es, {0:x}", in(reg) sel),
            Seg::Fs => asm!("mov fs, {0:x}", in(reg) sel),
            Seg::Gs => asm!("mov gs, {0:x}", in(reg) sel),
            Seg::Ss => asm!("mov ss, {0:x}", in(reg) sel),
        }
    }
}

fn read_seg(reg: Seg) -> u16 {
    let v: u16;
    // SAFETY: reads a segment selector into a register.
    unsafe {
        match reg {
            Seg::Ds => asm!("mov {0:x}, ds", out(reg) v),
            Seg::Es => asm!("mov {0:x}, es", out(reg) v),
            Seg::Fs => asm!("mov {0:x}, fs", out(reg) v),
            Seg::Gs => asm!("mov {0:x}, gs", out(reg) v),
            Seg::Ss => asm!("mov {0:x}, ss", out(reg) v),
        }
    }
    v
}

/// `verr`/`verw`: whether `sel` is readable / writable from ring 3 (ZF).
fn ver(sel: u16, write: bool) -> bool {
    let ok: u8;
    // SAFETY: `verr`/`verw` only set ZF.
    unsafe {
        if write {
            asm!("verw {0:x}", "setz {1}", in(reg) sel, out(reg_byte) ok)
        } else {
            asm!("verr {0:x}", "setz {1}", in(reg) sel, out(reg_byte) ok)
        }
    }
    ok != 0
}

/// `lar`: the access-rights word of `sel`, if the CPU lets ring 3 see it.
fn lar(sel: u16) -> Option<u32> {
    let (rights, ok): (u32, u8);
    // SAFETY: `lar` only writes the register and ZF.
    unsafe {
        asm!("xor {r:e}, {r:e}", "lar {r:e}, {s:e}", "setz {ok}",
             s = in(reg) u32::from(sel), r = out(reg) rights, ok = out(reg_byte) ok)
    };
    (ok != 0).then_some(rights)
}

/// Whether the CPU lets ring 3 load `sel` into `reg`.
fn loadable(reg: Seg, sel: u16) -> bool {
    match reg {
        Seg::Ss => sel & 3 == 3 && ver(sel, true),
        _ => sel & !3 == 0 || ver(sel, false),
    }
}

const SEGS: [Seg; 5] = [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs, Seg::Ss];

/// Every loadable selector into every segment register, kept across yields and preemption.
fn seg_loads() -> u64 {
    let mut c = Checks::new("seg-loads");
    let start = SEGS.map(read_seg);
    println!("selectors at start: DS, ES, FS, GS, SS = {start:#x?}");
    for index in 0..=8u16 {
        let sel = index << 3;
        println!(
            "GDT {sel:#04x}: lar {:?}, lar|3 {:?}",
            lar(sel).map(rights),
            lar(sel | 3).map(rights)
        );
    }
    let mut loaded = 0;
    for index in 0..=8u16 {
        for rpl in [0u16, 3] {
            let sel = index << 3 | rpl;
            for reg in SEGS {
                if !loadable(reg, sel) {
                    continue;
                }
                load_seg(reg, sel);
                // A null selector may lose its RPL on a return to ring 3 (the CPU's doing,
                // QEMU's at least): every null selector counts as the same.
                let kept = |now: u16| now == sel || (now & !3 == 0 && sel & !3 == 0);
                let mut same = kept(read_seg(reg));
                for _ in 0..20 {
                    hypercall::yield_now();
                    same &= kept(read_seg(reg));
                }
                // Long enough for a timer interrupt and, with neighbours, a preemption.
                let until = time::now_ns() + 2_000_000;
                while time::now_ns() < until {
                    same &= kept(read_seg(reg));
                }
                c.that(
                    format_args!(
                        "{reg:?} = {sel:#x} kept across yields (now {:#x})",
                        read_seg(reg)
                    ),
                    same,
                );
                loaded += 1;
                load_seg(reg, start[SEGS.iter().position(|&r| r == reg).unwrap_or(0)]);
            }
        }
    }
    println!("{loaded} loads the CPU allows were made and kept");
    c.that(format_args!("some selectors were loadable"), loaded > 0);
    c.verdict()
}

/// The type, DPL, present and flag bits of a `lar` result.
fn rights(r: u32) -> u32 {
    r >> 8 & 0xffff
}

/// One load the CPU must refuse, picked by the domain's index in its group.
fn seg_bad() -> u64 {
    const BAD: [(Seg, u16); 12] = [
        (Seg::Ds, 0x08),
        (Seg::Ds, 0x0b),
        (Seg::Ds, 0x10),
        (Seg::Ds, 0x13),
        (Seg::Ds, 0x30),
        (Seg::Ds, 0x33),
        (Seg::Ds, 0x38),
        (Seg::Ds, 0x40),
        (Seg::Ss, 0x00),
        (Seg::Ss, 0x2b),
        (Seg::Ss, 0x20),
        (Seg::Ss, 0x1b),
    ];
    let (reg, sel) = BAD[xtf::index_in_group() as usize % BAD.len()];
    if loadable(reg, sel) {
        return xtf::error(
            "seg-bad",
            format_args!("the CPU would let ring 3 load {sel:#x} into {reg:?}: the GDT changed"),
        );
    }
    xtf::expect_killed("seg-bad", "a segment load the CPU refuses");
    load_seg(reg, sel);
    xtf::survived("seg-bad", format_args!("loading {sel:#x} into {reg:?}"))
}

/// `int N` with N = this domain's index in its group.
fn int_n() -> u64 {
    let n = xtf::index_in_group() % 256;
    // SAFETY: symbol address only.
    let entry = addr(unsafe { &xtf_int_table }) + n * 4;
    println!("xtf: int-n: expecting to be killed: int {n:#x}");
    // SAFETY: calls `int N; ret`; a vector that returns comes back here.
    unsafe { asm!("call {}", in(reg) entry, clobber_abi("C")) };
    xtf::survived("int-n", format_args!("int {n:#x}"))
}

/// The upcall handler of the bad-stack cases: re-arms the timer, so that an upcall entered
/// before RSP went bad (the vCPU preempted between arming and spinning) is followed by one
/// that must fail.
fn rearm(_: usize, _: u32) {
    let _ = hypercall::set_timer(time::now_ns() + 2_000_000);
}

/// What `upcall-idle` prints if its vCPU runs after the upcall that must kill it was due.
static ZOMBIE: &[u8] = b"xtf: upcall-idle: FAILURE: ran after the upcall was due\n";

/// Registers an upcall, arms the timer VIRQ, and points RSP where no upcall frame fits.
fn upcall_bad_stack(case: u64) -> u64 {
    let (name, rsp) = match case {
        30 => ("upcall-unmapped", 0x5000_0000u64),
        31 => ("upcall-readonly", SHARED_INFO + 0x800),
        32 => ("upcall-kernel", 0xffff_8000_0010_0000),
        33 => ("upcall-noncanonical", 0x8000_0000_0000_0000),
        34 => ("upcall-hypercall", 0x5000_0000),
        _ => ("upcall-idle", 0x5000_0000),
    };
    let port = match hypercall::evtchn_bind_virq(abi::hypercall::virq::TIMER) {
        Ok(p) => p,
        Err(e) => return xtf::error(name, format_args!("binding the timer VIRQ: {e:?}")),
    };
    if let Err(e) = upcall::register(rearm) {
        return xtf::error(name, format_args!("registering the upcall: {e:?}"));
    }
    println!("timer VIRQ on port {port}; RSP will be {rsp:#x}");
    xtf::expect_killed(name, "bad event upcall");
    let deadline = time::now_ns() + 2_000_000;
    let _ = hypercall::set_timer(deadline);
    match case {
        // The upcall is due on the way out of a hypercall.
        // SAFETY: never returns; the stack is not used again (the upcall must not be
        // entered: its frame cannot be written).
        34 => unsafe {
            asm!("mov rsp, {rsp}", "2:", "mov eax, {null}", "syscall", "jmp 2b",
                 rsp = in(reg) rsp, null = const nr::NULL, options(noreturn))
        },
        // Blocked until the timer: the vCPU is entered again from the idle loop, which must
        // not enter it once the upcall killed the domain. A return from `block` is the vCPU
        // running after the upcall was due: it says so.
        // SAFETY: as above; the console line is a static.
        37 => unsafe {
            asm!("mov rsp, {rsp}",
                 "mov eax, {set_timer}", "mov rdi, r13", "syscall",
                 "2:", "mov eax, {sched_op}", "mov edi, {block}", "syscall",
                 "mov eax, {console}", "mov rdi, r12", "mov esi, {len}", "syscall",
                 "jmp 2b",
                 // The deadline and the message's address in registers that nothing here
                 // writes and every hypercall keeps (RAX, RDI, RCX, R11 are all taken).
                 rsp = in(reg) rsp, in("r13") deadline,
                 in("r12") ZOMBIE.as_ptr(), len = const ZOMBIE.len(),
                 set_timer = const nr::SET_TIMER, sched_op = const nr::SCHED_OP,
                 console = const nr::CONSOLE_WRITE,
                 block = const abi::hypercall::SchedOp::Block as u64, options(noreturn))
        },
        // Spinning in ring 3: the upcall is due on the way out of the timer interrupt.
        // SAFETY: as above.
        _ => unsafe {
            asm!("mov rsp, {rsp}", "2:", "jmp 2b", rsp = in(reg) rsp, options(noreturn))
        },
    }
}

/// An event the guest marks pending itself is entered on the way out of its next hypercall:
/// how a Xen guest forces its event callback (`xen_force_evtchn_callback` makes a cheap
/// hypercall for it). The hypervisor's `syscall` exit leaves by `sysretq` only when no event
/// is pending (`arch::entry`, Xen's `test_all_events`); without that check the upcall would
/// wait for the next interrupt.
fn force_callback() -> u64 {
    const NAME: &str = "force-callback";
    const ROUNDS: u64 = 1000;
    let mut c = Checks::new(NAME);
    if let Err(e) = upcall::register(|_, _| {}) {
        return xtf::error(NAME, format_args!("registering the upcall: {e:?}"));
    }
    // SAFETY: the counters page is mapped read-write for the domain's whole life; the
    // hypervisor changes the flag only with atomic operations.
    let pending = unsafe {
        let ev = core::ptr::addr_of_mut!(
            (*(abi::layout::COUNTERS as *mut abi::shared::Counters)).vcpu_events[0]
        );
        &*(core::ptr::addr_of_mut!((*ev).upcall_pending) as *const core::sync::atomic::AtomicU8)
    };
    let mut entered = 0;
    for _ in 0..ROUNDS {
        let before = upcall::UPCALLS.load(Ordering::SeqCst);
        pending.store(1, Ordering::SeqCst);
        hypercall::null();
        // An interrupt between the store and the call may have entered it first: that is
        // an upcall entered by now too.
        if upcall::UPCALLS.load(Ordering::SeqCst) != before {
            entered += 1;
        }
    }
    c.that(
        format_args!(
            "the upcall was entered on the way out of the null hypercall after each mark \
             ({entered} of {ROUNDS})"
        ),
        entered == ROUNDS,
    );
    c.verdict()
}

/// Single-stepping into a `syscall`: the trap lands on the hypervisor's entry.
fn tf_syscall(movss: bool) -> u64 {
    let name = if movss {
        "tf-movss-syscall"
    } else {
        "tf-syscall"
    };
    xtf::expect_killed(name, "a single-step trap after the hypercall (exception 1)");
    // SAFETY: sets TF and makes a null hypercall; the trap after it kills the domain. Should
    // it survive, TF is cleared again and nothing but RAX, RCX, R11 changed.
    unsafe {
        if movss {
            asm!(
                "mov {ss:e}, ss",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "mov ss, {ss:e}",
                "syscall",
                "pushfq",
                "and qword ptr [rsp], ~0x100",
                "popfq",
                ss = out(reg) _,
                inlateout("rax") nr::NULL => _,
                out("rcx") _, out("r11") _,
            )
        } else {
            asm!(
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "syscall",
                "pushfq",
                "and qword ptr [rsp], ~0x100",
                "popfq",
                inlateout("rax") nr::NULL => _,
                out("rcx") _, out("r11") _,
            )
        }
    }
    xtf::survived(name, format_args!("a single-stepped syscall"))
}
