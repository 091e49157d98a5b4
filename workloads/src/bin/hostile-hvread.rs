//! `hostile-hvread`: reads the hypervisor's memory (its image, at 0xffffffff80100000), present
//! in every address space but supervisor-only; the read must get the domain killed with a page
//! fault. Argument `addr` overrides the address. vCPU 0 acts; other vCPUs park. If it
//! survives it shuts down with `hostile::SURVIVED`. Expected fate: killed.
#![no_std]
#![no_main]

use workloads::{entry, hostile, println, rt, shared};

entry!(main);

/// The hypervisor image (1 MiB above the start of its higher-half window).
const HYPERVISOR_IMAGE: u64 = 0xffff_ffff_8010_0000;

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let addr = shared::arg("addr", HYPERVISOR_IMAGE);
    println!("reading hypervisor memory at {addr:#x}");
    let value = hostile::load(addr);
    println!("read {value:#x}");
    hostile::survived("a read of hypervisor memory")
}
