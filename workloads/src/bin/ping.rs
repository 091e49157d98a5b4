//! `ping`: event-channel ping-pong between pairs of domains, the paper's event mechanism at
//! work. A spec has a group of pingers (`role = 0`) and then a group of `pairs` pongers
//! (`role = 1`); Domain0 creates them in that order, so pinger `d` and ponger `d + pairs` are
//! partners. The ponger allocates a port for its pinger (the first port of a fresh domain
//! is port 1); the pinger binds to it, retrying until the ponger has run.
//!
//! Then the pinger sends and waits for the answer, `work += 1` per round trip; the ponger
//! waits and answers, `work += 1` per answer. No event may be lost or doubled, so at any
//! instant the two counts differ by at most one.
//!
//! Arguments: `role` (0 pinger, 1 ponger), `pairs` (1). Expected fate: ok.
#![no_std]
#![no_main]

use workloads::time::sleep_ns;
use workloads::{entry, hypercall, println, rt, shared};

entry!(main);

/// The ponger allocates this port first.
const PONG_PORT: u32 = 1;

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let pairs = shared::arg("pairs", 1) as u32;
    let me = shared::domain_id();
    if shared::arg("role", 0) == 0 {
        let peer = me + pairs;
        let port = loop {
            match hypercall::evtchn_bind(peer, PONG_PORT) {
                Ok(port) => break port,
                Err(_) => sleep_ns(1_000_000),
            }
        };
        loop {
            if let Err(e) = hypercall::evtchn_send(port) {
                println!("send to domain {peer} failed: {e:?}");
                return 2;
            }
            shared::wait_event(port);
            shared::add_work(0, 1);
        }
    } else {
        let peer = me.saturating_sub(pairs);
        let port = match hypercall::evtchn_alloc_unbound(peer) {
            Ok(port) => port,
            Err(e) => {
                println!("cannot allocate a port for domain {peer}: {e:?}");
                return 2;
            }
        };
        loop {
            shared::wait_event(port);
            if let Err(e) = hypercall::evtchn_send(port) {
                println!("answer to domain {peer} failed: {e:?}");
                return 2;
            }
            shared::add_work(0, 1);
        }
    }
}
