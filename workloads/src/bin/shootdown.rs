//! `shootdown`: checks that a page-table update reaches the TLBs of the domain's other
//! vCPUs before the hypercall returns (the TLB shootdown of the paper's validated updates).
//!
//! vCPU 1 keeps reading the first word of page `X` of the map area, so its CPU's TLB holds
//! the translation. vCPU 0 writes generation `g` into frame `F[g % 2]` (through a second
//! mapping), remaps `X` to that frame with `update_va_mapping`, and then publishes `g`. Once
//! vCPU 1 sees `g` published, its next read of `X` must show `g`: a stale translation would
//! still show the previous frame's older generation. `work += 1` (on vCPU 0) per remap
//! that vCPU 1 confirmed. A stale read ends the domain with code 3.
//!
//! Run it with 2 vCPUs on at least 2 CPUs. Arguments: none. Expected fate: ok.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout::MAP_AREA;
use workloads::{entry, hostile, hypercall, pagetable, println, rt, shared};

entry!(main);

/// The generation vCPU 0 published last (0: not started).
static PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// The generation vCPU 1 confirmed last.
static CONFIRMED: AtomicU64 = AtomicU64::new(0);
/// Set by vCPU 1 when it saw a stale translation.
static STALE: AtomicU64 = AtomicU64::new(0);

const X: u64 = MAP_AREA;
const Y: u64 = MAP_AREA + 4096;

fn main(vcpu: usize) -> u64 {
    match vcpu {
        0 => remapper(),
        1 => reader(),
        _ => rt::park(vcpu),
    }
}

fn remapper() -> u64 {
    if shared::vcpus() < 2 {
        println!("shootdown needs 2 vCPUs");
        return hostile::CHECK_FAILED;
    }
    let mut frames = [0u64; 2];
    if hypercall::increase_reservation(&mut frames) != Ok(2) {
        println!("no frames");
        return hostile::CHECK_FAILED;
    }
    let mut g = 0u64;
    loop {
        g += 1;
        let frame = frames[(g % 2) as usize];
        // SAFETY: X and Y are map-area pages that hold no Rust data; they are accessed only
        // with volatile loads and stores while mapped.
        unsafe {
            if hypercall::update_va_mapping(Y, pagetable::leaf(frame, true)).is_err() {
                println!("mapping a frame of our own was refused");
                return hostile::CHECK_FAILED;
            }
            (Y as *mut u64).write_volatile(g);
            if hypercall::update_va_mapping(X, pagetable::leaf(frame, false)).is_err() {
                println!("remapping was refused");
                return hostile::CHECK_FAILED;
            }
        }
        PUBLISHED.store(g, Ordering::Release);
        // Wait for vCPU 1 to confirm (or report a stale read).
        while CONFIRMED.load(Ordering::Acquire) < g {
            let stale = STALE.load(Ordering::Acquire);
            if stale != 0 {
                println!(
                    "vCPU 1 read generation {stale} through X after generation {g} was mapped: a stale TLB entry"
                );
                return hostile::CHECK_FAILED;
            }
            core::hint::spin_loop();
        }
        shared::add_work(0, 1);
    }
}

fn reader() -> ! {
    let mut last = 0u64;
    loop {
        let want = PUBLISHED.load(Ordering::Acquire);
        let seen = if want == 0 {
            0
        } else {
            // SAFETY: as in `remapper`; X is mapped from the first publication on.
            unsafe { (X as *const u64).read_volatile() }
        };
        if want > last {
            if seen == want {
                CONFIRMED.store(want, Ordering::Release);
                last = want;
            } else if seen < want {
                // vCPU 0's update_va_mapping returned before publishing, so the
                // translation must be the new one by now.
                STALE.store(seen.max(1), Ordering::Release);
            }
        }
    }
}
