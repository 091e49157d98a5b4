//! `virq`: takes its timer as an event: each vCPU binds a port to its own timer virtual IRQ
//! (VIRQs are per vCPU, as in Xen), arms its one-shot timer every `period_us`, and sleeps in
//! `poll` on that port; `work += 1` on that vCPU per timer event received. It checks the
//! event path from the hypervisor's timer to a guest's port and vCPU, and `poll`.
//!
//! Arguments: `period_us` (1000). Expected fate: ok.
#![no_std]
#![no_main]

use abi::hypercall::virq;
use workloads::time::now_ns;
use workloads::{entry, hypercall, println, shared};

entry!(main);

fn main(vcpu: usize) -> u64 {
    let period_ns = shared::arg("period_us", 1000).max(1) * 1000;
    let port = match hypercall::evtchn_bind_virq_vcpu(virq::TIMER, vcpu) {
        Ok(port) => port,
        Err(e) => {
            println!("cannot bind the timer VIRQ: {e:?}");
            return 2;
        }
    };
    let mut next = now_ns() + period_ns;
    loop {
        let _ = hypercall::set_timer(next);
        while !shared::take_event(port) {
            let _ = hypercall::poll(&[port]);
        }
        shared::add_work(vcpu, 1);
        next = (next + period_ns).max(now_ns());
    }
}
