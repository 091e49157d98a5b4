//! `upcall`: answers event-channel pings from its event upcall while its main loop computes,
//! checking that the upcall never disturbs the context it interrupts.
//!
//! It plays the ponger of a `ping` pair (its pinger is domain `me - pairs`, which binds to
//! our first port, port 1): the upcall, entered by the hypervisor whenever an event is
//! pending, sends the answer and counts it (`work += 1` per answer). Meanwhile `main` fills
//! the caller-saved general registers and every XMM register with a pattern, spins, and
//! checks them: an upcall that entered in the middle (an interrupt or a switch brought it)
//! must have restored them all. A changed register ends the domain with code 3.
//!
//! Arguments: `pairs` (1), `spins` (20000). Expected fate: ok.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

use workloads::{entry, hypercall, println, rt, shared, upcall};

entry!(main);

/// Our port to the pinger (the first port of a fresh domain).
static PORT: AtomicU32 = AtomicU32::new(0);

fn on_event(port: u32) {
    if port == PORT.load(Ordering::Relaxed) && hypercall::evtchn_send(port).is_ok() {
        shared::add_work(0, 1);
    }
}

/// Fills RDX, RSI, R8-R11 and XMM0-15 with `pattern`, spins `spins` times, and returns how
/// many of them no longer hold it.
fn fill_spin_check(pattern: u64, spins: u64) -> u64 {
    let bad: u64;
    // SAFETY: touches only registers given to or clobbered by the asm; no memory.
    unsafe {
        asm!(
            "movq xmm0, {p}",
            "punpcklqdq xmm0, xmm0",
            "movdqa xmm1, xmm0", "movdqa xmm2, xmm0", "movdqa xmm3, xmm0",
            "movdqa xmm4, xmm0", "movdqa xmm5, xmm0", "movdqa xmm6, xmm0",
            "movdqa xmm7, xmm0", "movdqa xmm8, xmm0", "movdqa xmm9, xmm0",
            "movdqa xmm10, xmm0", "movdqa xmm11, xmm0", "movdqa xmm12, xmm0",
            "movdqa xmm13, xmm0", "movdqa xmm14, xmm0", "movdqa xmm15, xmm0",
            "mov rdx, {p}", "mov rsi, {p}", "mov r8, {p}", "mov r9, {p}",
            "mov r10, {p}", "mov r11, {p}",
            "2:",
            "dec {n}",
            "jnz 2b",
            "xor {bad:e}, {bad:e}",
            ".irp r, rdx,rsi,r8,r9,r10,r11",
            "xor {b:e}, {b:e}",
            "cmp \\r, {p}",
            "setne {b:l}",
            "add {bad}, {b}",
            ".endr",
            ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "movq {t}, xmm\\r",
            "xor {b:e}, {b:e}",
            "cmp {t}, {p}",
            "setne {b:l}",
            "add {bad}, {b}",
            "pshufd xmm\\r, xmm\\r, 0xee",
            "movq {t}, xmm\\r",
            "xor {b:e}, {b:e}",
            "cmp {t}, {p}",
            "setne {b:l}",
            "add {bad}, {b}",
            ".endr",
            p = in(reg) pattern,
            n = inout(reg) spins.max(1) => _,
            bad = out(reg) bad,
            t = out(reg) _,
            b = out(reg) _,
            out("rdx") _, out("rsi") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
    bad
}

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let pairs = shared::arg("pairs", 1) as u32;
    let spins = shared::arg("spins", 20_000);
    let peer = shared::domain_id().saturating_sub(pairs);
    let port = match hypercall::evtchn_alloc_unbound(peer) {
        Ok(port) => port,
        Err(e) => {
            println!("cannot allocate a port for domain {peer}: {e:?}");
            return 2;
        }
    };
    PORT.store(port, Ordering::Relaxed);
    if let Err(e) = upcall::register(0, on_event) {
        println!("cannot register the upcall: {e:?}");
        return 2;
    }
    let mut round = 0u64;
    loop {
        round += 1;
        let pattern = 0x5bd1_e995_0000_0000 | (u64::from(shared::domain_id()) << 16) | round;
        let bad = fill_spin_check(pattern, spins);
        if bad != 0 {
            println!(
                "{bad} registers changed under an upcall (round {round}, {} upcalls)",
                upcall::UPCALLS.load(Ordering::Relaxed)
            );
            return 3;
        }
    }
}
