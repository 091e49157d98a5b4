//! `mmu`: changes its own page tables through the hypervisor, in batches: the paper's
//! validated page-table updates at work, and their benchmark.
//!
//! It takes `batch` frames from the hypervisor (memory reservation), checks once that a
//! frame mapped writable at one address and read-only at another shows the same bytes at
//! both, then loops: one `mmu_update` call maps the `batch` frames into
//! `abi::layout::MAP_AREA` (writable), it writes and reads back through the first mapping,
//! and a second call unmaps them all (which the hypervisor follows with a TLB flush).
//! `work` = updates applied, so the CPU time per update is `cpu_ns / work`.
//!
//! A refused update, or bytes that differ, ends the domain with code 3.
//!
//! Arguments: `batch` (16, at most 512; its memory_kib must hold `batch` more frames).
//! Expected fate: ok.
#![no_std]
#![no_main]

use abi::layout::MAP_AREA;
use abi::mm::MmuUpdate;
use workloads::{entry, hostile, hypercall, pagetable, println, rt, shared};

entry!(main);

const MAX_BATCH: usize = abi::hypercall::MMU_BATCH as usize;

fn fail(what: &str) -> u64 {
    println!("{what}");
    hostile::CHECK_FAILED
}

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let batch = (shared::arg("batch", 16) as usize).clamp(1, MAX_BATCH);
    let mut frames = [0u64; MAX_BATCH];
    match hypercall::increase_reservation(&mut frames[..batch]) {
        Ok(n) if n == batch => {}
        _ => {
            return fail(
                "the hypervisor did not give the frames asked for (memory_kib too small?)",
            );
        }
    }
    let Some(l1) = pagetable::table_for(MAP_AREA, 1) else {
        return fail("no level-1 table for the map area in the page-table window");
    };
    let (a, b) = (MAP_AREA, MAP_AREA + 4096);
    // SAFETY: both pages of the map area are unused by Rust code; each is read or written
    // only while mapped, with volatile accesses.
    unsafe {
        if hypercall::update_va_mapping(a, pagetable::leaf(frames[0], true)).is_err()
            || hypercall::update_va_mapping(b, pagetable::leaf(frames[0], false)).is_err()
        {
            return fail("mapping a frame of our own was refused");
        }
        (a as *mut u64).write_volatile(0x600d_f00d);
        if (b as *const u64).read_volatile() != 0x600d_f00d {
            return fail("two mappings of one frame show different bytes");
        }
        let _ = hypercall::update_va_mapping(a, 0);
        let _ = hypercall::update_va_mapping(b, 0);
    }
    let mut map = [MmuUpdate::default(); MAX_BATCH];
    let mut unmap = [MmuUpdate::default(); MAX_BATCH];
    for i in 0..batch {
        let ptr = l1 + pagetable::index_at(MAP_AREA + i as u64 * 4096, 1) as u64 * 8;
        map[i] = MmuUpdate {
            ptr,
            val: pagetable::leaf(frames[i], true),
        };
        unmap[i] = MmuUpdate { ptr, val: 0 };
    }
    let mut round = 0u64;
    loop {
        round += 1;
        // SAFETY: the map area holds no Rust data; its pages are touched only while mapped.
        unsafe {
            if hypercall::mmu_update(&map[..batch]) != Ok(batch) {
                return fail("a batch of mappings was refused");
            }
            (a as *mut u64).write_volatile(round);
            if (a as *const u64).read_volatile() != round {
                return fail("a mapped page lost what was written");
            }
            if hypercall::mmu_update(&unmap[..batch]) != Ok(batch) {
                return fail("a batch of unmappings was refused");
            }
        }
        shared::add_work(0, 2 * batch as u64);
    }
}
