//! COM1, the serial port the console writes to.
//!
//! The port holds no Rust state: a `SerialPort` is only its I/O base, made afresh for each
//! write. The lock that keeps one CPU's text from interleaving with another's guards no data
//! either, so a fatal report may simply break it ([`break_lock`]): the worst outcome is two
//! CPUs' bytes mixed on the wire.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use uart_16550::SerialPort;

/// COM1's base I/O port.
const COM1: u16 = 0x3f8;

/// Set once [`init`] has programmed the UART; writes before that are dropped.
static READY: AtomicBool = AtomicBool::new(false);
/// Held while one CPU writes.
static BUSY: AtomicBool = AtomicBool::new(false);

fn com1() -> SerialPort {
    // SAFETY: 0x3f8 is the PC's first serial port (a 16550 on every machine we boot), and
    // only this module drives it.
    unsafe { SerialPort::new(COM1) }
}

/// Programs the UART (38400 8N1, FIFOs on). Called once, first thing, by the BSP.
pub fn init() {
    com1().init();
    READY.store(true, Ordering::Release);
}

/// Writes formatted text as one piece, not interleaved with other CPUs' (unless a fatal
/// report broke the lock).
pub fn write_fmt(args: fmt::Arguments) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    while BUSY
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = com1().write_fmt(args);
    BUSY.store(false, Ordering::Release);
}

/// Frees the port from whoever holds it, for a fatal report: the CPU that holds it may be
/// the one that just faulted, or stopped for good.
pub fn break_lock() {
    BUSY.store(false, Ordering::Release);
}
