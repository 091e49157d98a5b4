//! Deliberate misbehaviour on request (`selftest=` on the command line), so that the
//! failure paths are tested as routinely as the success path. The machine's part (the
//! x87/SSE probe, the page fault) is `arch::selftest`.

pub use crate::arch::selftest::{fpu_and_sse, page_fault};

/// Stays in the hypervisor for good, interrupts off, once the watchdog is armed: the
/// watchdog of another CPU must find this CPU stuck, and its NMI must stop the machine.
pub fn hang() -> ! {
    while !crate::schedule::watchdog_armed() {
        core::hint::spin_loop();
    }
    log::info!("self-test: CPU 1 now hangs in the hypervisor on purpose");
    loop {
        core::hint::spin_loop();
    }
}
