//! `fpu`: checks that its registers survive preemption: fills xmm0..xmm15 and six general
//! registers with a pattern of its own (`workloads::regs`), spins, and checks every register
//! still holds it. The hypervisor saves a guest's x87/SSE state when a timer interrupt takes
//! the CPU away and restores it when the guest runs again; a register that changed, or that
//! holds another domain's pattern, is a leak, and the domain shuts down with [`LEAKED`], which
//! Domain0 reports as a failed run.
//!
//! Arguments: `spins` (loop iterations between fill and check, default 200000: a few
//! milliseconds under TCG, so that preemptions land inside). `work += 1` per clean check.
//! Expected fate: ok.
#![no_std]
#![no_main]

use workloads::{entry, println, shared};

entry!(main);

/// Shutdown code of a domain that saw its registers change.
const LEAKED: u64 = 4;

fn main(vcpu: usize) -> u64 {
    let spins = shared::arg("spins", 200_000);
    // Different for every domain and vCPU, never zero (the value a scrub leaves).
    let pattern = 0x9e37_79b9_7f4a_7c15u64
        .wrapping_mul(u64::from(shared::domain_id()) * 64 + vcpu as u64 + 1)
        | 1;
    loop {
        let bad = workloads::regs::fill_spin_check(pattern, spins);
        if bad != 0 {
            println!(
                "vCPU {vcpu}: {bad} of 38 register words (6 general, 32 XMM halves) changed while preempted"
            );
            return LEAKED;
        }
        shared::add_work(vcpu, 1);
    }
}
