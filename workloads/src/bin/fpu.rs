//! `fpu`: checks that its vector registers survive preemption: fills xmm0..xmm15 with a
//! pattern of its own, spins, and checks every register still holds it. The hypervisor saves
//! a guest's x87/SSE state when a timer interrupt takes the CPU away and restores it when the
//! guest runs again; a register that changed, or that holds another domain's pattern, is a
//! leak, and the domain shuts down with [`LEAKED`], which Domain0 reports as a failed run.
//!
//! Arguments: `spins` (loop iterations between fill and check, default 200000: a few
//! milliseconds under TCG, so that preemptions land inside). `work += 1` per clean check.
//! Expected fate: ok.
#![no_std]
#![no_main]

use core::arch::asm;

use workloads::{entry, println, shared};

entry!(main);

/// Shutdown code of a domain that saw its registers change.
const LEAKED: u64 = 4;

/// Fills every XMM register with `pattern` (both halves), spins `spins` times, and returns
/// how many of the 32 register halves no longer hold it.
fn fill_spin_check(pattern: u64, spins: u64) -> u64 {
    let bad: u64;
    // SAFETY: touches only the XMM registers (declared clobbered) and general registers
    // given to the asm; no memory.
    unsafe {
        asm!(
            "movq xmm0, {p}",
            "punpcklqdq xmm0, xmm0",
            "movdqa xmm1, xmm0", "movdqa xmm2, xmm0", "movdqa xmm3, xmm0",
            "movdqa xmm4, xmm0", "movdqa xmm5, xmm0", "movdqa xmm6, xmm0",
            "movdqa xmm7, xmm0", "movdqa xmm8, xmm0", "movdqa xmm9, xmm0",
            "movdqa xmm10, xmm0", "movdqa xmm11, xmm0", "movdqa xmm12, xmm0",
            "movdqa xmm13, xmm0", "movdqa xmm14, xmm0", "movdqa xmm15, xmm0",
            "2:",
            "dec {n}",
            "jnz 2b",
            "xor {bad:e}, {bad:e}",
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
    let spins = shared::arg("spins", 200_000);
    // Different for every domain and vCPU, never zero (the value a scrub leaves).
    let pattern = 0x9e37_79b9_7f4a_7c15u64
        .wrapping_mul(u64::from(shared::domain_id()) * 64 + vcpu as u64 + 1)
        | 1;
    loop {
        let bad = fill_spin_check(pattern, spins);
        if bad != 0 {
            println!("vCPU {vcpu}: {bad} of 32 XMM register halves changed while preempted");
            return LEAKED;
        }
        shared::add_work(vcpu, 1);
    }
}
