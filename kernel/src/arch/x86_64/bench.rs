//! Floors for the benchmarks: the part of a path that no implementation can skip, timed on
//! this machine so that `scripts/bench` can show each measurement beside its floor. (The
//! null hypercall's floor, a bare `syscall; sysretq`, is `entry::set_syscall_floor`.)

use core::hint::black_box;

use x86_64::registers::control::Cr3;

use super::fpu::FpuState;
use super::trap::TrapFrame;

/// Times `iters` rounds of the part of a domain switch that no implementation can skip: copy
/// the general registers out and back (a trap frame each way), save and restore the FPU
/// state, and reload CR3 (which flushes the non-global TLB entries). Returns TSC ticks. The
/// floor of the domain-switch target.
pub fn switch_floor(iters: u32) -> u64 {
    let mut live = TrapFrame::default();
    let mut saved = TrapFrame::default();
    let mut fpu = alloc::boxed::Box::new(FpuState::initial());
    let (pml4, flags) = Cr3::read();
    let start = super::cpu::rdtsc();
    for i in 0..iters {
        if i % 1024 == 0 {
            super::percpu::touch_watchdog(); // a long loop on purpose
        }
        live.rax = u64::from(i);
        saved.clone_from(black_box(&live));
        fpu.save();
        // SAFETY: reloads the CR3 value read above, still the one in force: nothing in this
        // loop loads another, and the hypervisor runs with interrupts off, so no switch
        // happens meanwhile. No mapping changes; the TLB is flushed, the cost measured.
        unsafe { Cr3::write(pml4, flags) };
        fpu.restore();
        live.clone_from(black_box(&saved));
    }
    black_box(&live);
    super::cpu::rdtsc() - start
}
