//! Deliberate misbehaviour on request (`selftest=` on the command line), so that the
//! failure paths are tested as routinely as the success path. The machine's part (the
//! x87/SSE probe, the page fault) is `arch::selftest`.

use kerncore::cmdline::SelfTest;
use spin::Once;

pub use crate::arch::selftest::{fpu_and_sse, page_fault};

/// The self-test the command line asked for; set once at boot ([`set`]).
static ACTIVE: Once<SelfTest> = Once::new();

/// Records the command line's `selftest=` for [`stall`]. Called once at boot.
pub fn set(test: SelfTest) {
    ACTIVE.call_once(|| test);
}

/// Under `selftest=` `test` (one of the `slow-*` ones), holds this CPU `us` µs, as an
/// emulated CPU the host stopped at that point would (interrupts stay as the caller has
/// them, off in the hypervisor): what widens a race window between two steps on one CPU
/// and another CPU's step, for the checks that show the window closed.
pub fn stall(test: SelfTest, us: u64) {
    if ACTIVE.get() == Some(&test) {
        smp::time::delay_us(us);
    }
}

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
