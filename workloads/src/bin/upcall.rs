//! `upcall`: answers event-channel pings from its event upcall while its main loop computes,
//! checking that the upcall never disturbs the context it interrupts.
//!
//! It plays the ponger of a `ping` pair (its pinger is domain `me - pairs`, which binds to
//! our first port, port 1): the upcall, entered by the hypervisor whenever an event is
//! pending, sends the answer and counts it (`work += 1` per answer). Meanwhile every vCPU
//! fills the caller-saved general registers and every XMM register with a pattern, spins,
//! and checks them: an upcall that entered in the middle (an interrupt or a switch brought
//! it) must have restored them all.
//!
//! The port is bound to vCPU `vcpu` (`evtchn_bind_vcpu`): the upcall must run there and
//! nowhere else. Every `mask_every` rounds of its checks, vCPU 0 masks the port for
//! `mask_rounds` rounds (it sleeps 200 µs after each round): no upcall may handle the port meanwhile (one already under way when
//! the mask was set may finish); then `evtchn_unmask` must notify the vCPU of an event that
//! arrived while masked, or the pinger would wait forever.
//!
//! A changed register, an upcall on the wrong vCPU or on a masked port ends the domain with
//! code 3. Arguments: `pairs` (1), `spins` (20000), `vcpu` (0), `mask_every` (50),
//! `mask_rounds` (20). Expected fate: ok.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use workloads::time::sleep_ns;
use workloads::{entry, hypercall, println, shared, upcall};

entry!(main);

/// Our port to the pinger (the first port of a fresh domain).
static PORT: AtomicU32 = AtomicU32::new(0);
/// The vCPU the port is bound to.
static TARGET: AtomicU32 = AtomicU32::new(0);
/// Answers sent from upcalls (each vCPU's `work` slot is its own; this one is shared).
static ANSWERS: AtomicU64 = AtomicU64::new(0);
/// Set while vCPU 0 holds the port masked.
static MASKED: AtomicBool = AtomicBool::new(false);
/// Upcalls that handled the port while it was masked.
static WHILE_MASKED: AtomicU64 = AtomicU64::new(0);
/// Upcalls that ran on a vCPU the port is not bound to.
static WRONG_VCPU: AtomicU64 = AtomicU64::new(0);

fn on_event(vcpu: usize, port: u32) {
    if port != PORT.load(Ordering::Relaxed) {
        return;
    }
    if vcpu as u32 != TARGET.load(Ordering::Relaxed) {
        WRONG_VCPU.fetch_add(1, Ordering::Relaxed);
    }
    if MASKED.load(Ordering::Acquire) {
        WHILE_MASKED.fetch_add(1, Ordering::Relaxed);
    }
    if hypercall::evtchn_send(port).is_ok() {
        ANSWERS.fetch_add(1, Ordering::Relaxed);
        shared::add_work(vcpu, 1);
    }
}

fn main(vcpu: usize) -> u64 {
    let spins = shared::arg("spins", 20_000);
    if vcpu == 0 {
        if let Err(code) = set_up() {
            return code;
        }
    } else {
        // Wait for vCPU 0 to set the port up.
        while PORT.load(Ordering::Acquire) == 0 {
            core::hint::spin_loop();
        }
    }
    if let Err(e) = upcall::register(on_event) {
        println!("cannot register the upcall on vCPU {vcpu}: {e:?}");
        return 2;
    }
    let mask_every = shared::arg("mask_every", 50).max(1);
    let mask_rounds = shared::arg("mask_rounds", 20);
    let port = PORT.load(Ordering::Relaxed);
    let mut round = 0u64;
    let mut masked_until = 0u64;
    let mut handled_before_mask = 0u64;
    loop {
        round += 1;
        let pattern = 0x5bd1_e995_0000_0000
            | (u64::from(shared::domain_id()) << 24)
            | ((vcpu as u64) << 20)
            | (round & 0xf_ffff);
        let bad = workloads::regs::fill_spin_check(pattern, spins);
        if bad != 0 {
            println!(
                "{bad} registers changed under an upcall on vCPU {vcpu} (round {round}, {} upcalls)",
                upcall::UPCALLS.load(Ordering::Relaxed)
            );
            return 3;
        }
        if WRONG_VCPU.load(Ordering::Relaxed) != 0 {
            println!(
                "the port is bound to vCPU {}, but an upcall handled it elsewhere",
                TARGET.load(Ordering::Relaxed)
            );
            return 3;
        }
        if vcpu != 0 {
            continue;
        }
        // vCPU 0 leaves the CPU between rounds, so that with the port on another vCPU the
        // pinger is not starved of a CPU by two spinning vCPUs.
        sleep_ns(200_000);
        if mask_rounds == 0 {
            continue;
        }
        if masked_until == 0 && round.is_multiple_of(mask_every) {
            shared::set_mask(port, true);
            // An upcall already past its look at the mask may still answer once.
            handled_before_mask = WHILE_MASKED.load(Ordering::Relaxed);
            MASKED.store(true, Ordering::Release);
            masked_until = round + mask_rounds;
        } else if masked_until != 0 && round >= masked_until {
            MASKED.store(false, Ordering::Release);
            masked_until = 0;
            let extra = WHILE_MASKED.load(Ordering::Relaxed) - handled_before_mask;
            if extra > 1 {
                println!("{extra} upcalls handled the port while it was masked");
                return 3;
            }
            // A ping that arrived meanwhile is pending: unmasking must deliver it.
            if let Err(e) = hypercall::evtchn_unmask(port) {
                println!("unmask failed: {e:?}");
                return 3;
            }
        }
    }
}

/// Allocates the port for the pinger and binds it to the chosen vCPU (vCPU 0 does this).
fn set_up() -> Result<(), u64> {
    let pairs = shared::arg("pairs", 1) as u32;
    let target = (shared::arg("vcpu", 0) as u32).min(shared::vcpus() - 1);
    let peer = shared::domain_id().saturating_sub(pairs);
    let port = match hypercall::evtchn_alloc_unbound(peer) {
        Ok(port) => port,
        Err(e) => {
            println!("cannot allocate a port for domain {peer}: {e:?}");
            return Err(2);
        }
    };
    if let Err(e) = hypercall::evtchn_bind_vcpu(port, target as usize) {
        println!("cannot bind port {port} to vCPU {target}: {e:?}");
        return Err(2);
    }
    TARGET.store(target, Ordering::Relaxed);
    PORT.store(port, Ordering::Release);
    Ok(())
}
