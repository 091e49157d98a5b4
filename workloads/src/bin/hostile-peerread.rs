//! `hostile-peerread`: tries to read memory that is not its own, where another domain's
//! frames could be: the hypervisor's direct map of physical memory (0xffff800000000000,
//! supervisor-only) and an address in its own lower half that nothing was mapped at
//! (0x30000000). Argument `target`: 0 = the direct map (default), 1 = the unmapped lower-half
//! address; `addr` (nonzero) reads that address instead. The first read must get the domain
//! killed with a page fault. vCPU 0 acts; other vCPUs park. If it survives it shuts down
//! with `hostile::SURVIVED`. Expected fate: killed.
#![no_std]
#![no_main]

use workloads::{entry, hostile, println, rt, shared};

entry!(main);

/// Start of the hypervisor's direct map of physical memory (every domain's frames).
const DIRECT_MAP: u64 = 0xffff_8000_0000_0000;
/// Between the image window and the stacks; never mapped into a domain.
const UNMAPPED: u64 = 0x3000_0000;

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let addr = match (shared::arg("addr", 0), shared::arg("target", 0)) {
        (0, 1) => UNMAPPED,
        (0, _) => DIRECT_MAP,
        (addr, _) => addr,
    };
    println!("reading memory that is not ours at {addr:#x}");
    let value = hostile::load(addr);
    println!("read {value:#x}");
    hostile::survived("a read of memory that is not its own")
}
