//! Helpers for the hostile workloads: touching memory by address, single-stepping, and the
//! shutdown codes that make a hypervisor's failure to stop them visible.
//!
//! A hostile program does something a correct hypervisor kills it for. If it is still alive
//! afterwards it shuts down with [`SURVIVED`], which Domain0 reports as
//! `killed: crashed (shutdown code 2)` and counts against an `expect = "killed"`.

use core::arch::asm;

/// Shutdown code: the hostile act that should have been fatal was not.
pub const SURVIVED: u64 = 2;
/// Shutdown code: a hypercall given a bad argument did not fail as it should (wildptr).
pub const CHECK_FAILED: u64 = 3;

/// Loads 8 bytes from `addr` with one `mov`. If the address is not mapped readable for ring 3,
/// the CPU faults and the hypervisor kills the domain: that is the point.
///
/// Done in assembly rather than with a pointer read so that no Rust-level assumption about
/// the memory is made: only the value read comes back, and nothing is written.
#[inline(never)]
pub fn load(addr: u64) -> u64 {
    let value: u64;
    // SAFETY: reads one quadword and writes only `value`; whatever is (not) at `addr`, the
    // program's own memory is untouched. A fault ends the domain, which is intended.
    unsafe {
        asm!("mov {value}, qword ptr [{addr}]", addr = in(reg) addr, value = out(reg) value,
             options(nostack, readonly, preserves_flags));
    }
    value
}

/// Single-steps: sets the trap flag (RFLAGS.TF) over two `nop`s, then clears it. The debug
/// trap after the first `nop` must end the domain; if the hypervisor lets it go on, this
/// returns with the flags as they were.
#[inline(never)]
pub fn single_step() {
    // SAFETY: changes only RFLAGS.TF, on this vCPU's stack, and puts it back. The trap ends
    // the domain, which is intended.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "nop",
            "nop",
            "pushfq",
            "and qword ptr [rsp], ~0x100",
            "popfq"
        )
    };
}

/// Reports that the domain survived `what`, and returns the shutdown code that says so.
pub fn survived(what: &str) -> u64 {
    crate::println!("HYPERVISOR BUG: survived {what}");
    SURVIVED
}
