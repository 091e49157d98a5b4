//! `switch`: yields in a loop (`work += 1` per yield). Several of them on one CPU do nothing
//! but switch domains, which is how the domain-switch benchmark measures a switch.
//!
//! With `ws_kib` = K (0..=64, default 0), each vCPU first reads K KiB of its own working set
//! (one word per 64-byte line, summed, as lmbench's `lat_ctx` sums its array) before every
//! yield: two such domains on one CPU are `lat_ctx`'s "2p/K", and one alone, which yields
//! back to itself, is the work without the switches (`scripts/bench compare` subtracts it).
//!
//! Arguments: `ws_kib` (0). Expected fate: ok.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use workloads::{entry, hypercall, println, shared};

entry!(main);

/// The largest working set, in KiB.
const MAX_WS_KIB: u64 = 64;
/// Words in a 64-byte line.
const LINE_WORDS: usize = 8;

/// The working sets, one per vCPU that asks for one (at most 4 vCPUs use one).
static WS: [[AtomicU64; MAX_WS_KIB as usize * 128]; 4] =
    [const { [const { AtomicU64::new(0) }; MAX_WS_KIB as usize * 128] }; 4];

fn main(vcpu: usize) -> u64 {
    let kib = shared::arg("ws_kib", 0);
    if kib > MAX_WS_KIB || (kib > 0 && vcpu >= WS.len()) {
        println!(
            "ws_kib = {kib}: must be 0..={MAX_WS_KIB}, on at most {} vCPUs",
            WS.len()
        );
        return 2;
    }
    let ws = &WS[vcpu.min(WS.len() - 1)][..kib as usize * 128];
    let mut sum = 0u64;
    loop {
        for line in ws.chunks(LINE_WORDS) {
            sum = sum.wrapping_add(line[0].load(Ordering::Relaxed));
        }
        core::hint::black_box(sum);
        shared::add_work(vcpu, 1);
        hypercall::yield_now();
    }
}
