//! Multi-core machinery for Domino: CPU discovery, the local APIC, time, AP start-up,
//! per-CPU storage, IPIs and barriers.
//!
//! The kernel calls this crate in a fixed order on the bootstrap CPU (BSP) and on each
//! application processor (AP); `smp/README.md` spells the sequence out. Everything that is
//! logic rather than hardware (MADT interpretation, time conversions, the call-function
//! mailbox protocol, the barrier) is written so that `cargo test -p smp` exercises it on the
//! host; the hardware paths run only inside the hypervisor.
#![cfg_attr(not(test), no_std)]

pub mod apic;
pub mod arch;
pub mod barrier;
pub mod cpu_topology;
pub mod ipi;
pub mod madt;
pub mod percpu;
pub mod shootdown;
pub mod startup;
pub mod time;
pub mod timer;
mod trampoline;

pub use madt::{Cpu, Error, IoApic, Topology, discover};

/// The largest number of CPUs the hypervisor drives: every table and per-CPU array is this
/// long. xAPIC destinations are 8 bits wide with 0xFF the broadcast, which is where 255
/// usable CPUs come from; the one spare slot keeps the arrays a power of two.
pub const MAX_CPUS: usize = 256;

/// Interrupt vectors owned by this crate, in one place. The kernel installs its IDT entries
/// for them and calls [`apic::eoi`] at the end of each handler (except the spurious one).
pub mod vectors {
    /// The per-CPU one-shot timer ([`crate::timer`]).
    pub const TIMER: u8 = 0xEF;
    /// Reschedule IPI: "look at your run queue on the way out" ([`crate::ipi::send_reschedule`]).
    pub const RESCHEDULE: u8 = 0xF0;
    /// Call-function IPI: run the function in your mailbox ([`crate::ipi::handle_call_function_ipi`]).
    pub const CALL_FUNCTION: u8 = 0xF1;
    /// Spurious-interrupt vector of the local APIC; its handler must *not* send an EOI.
    pub const SPURIOUS: u8 = 0xFF;
}
