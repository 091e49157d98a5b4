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

/// Programs the UART (115200 8N1, FIFOs on). Called once, first thing, by the BSP.
pub fn init() {
    com1().init();
    set_115200();
    READY.store(true, Ordering::Release);
}

/// Sets COM1's divisor to 1, 115200 baud: `uart_16550` 0.3's `init` programs 3 (38400),
/// and has no call for the rate. What a guest's console call may cost is counted in bytes
/// of a 115200-baud UART (`abi::hypercall::CONSOLE_CALL_BYTES`, ~45 ms with interrupts
/// off); at 38400 the same call held its CPU ~133 ms on hardware, past the watchdog's
/// 100 ms (an audit of session 21; QEMU's UART takes bytes at any rate, so runs here do not
/// show it).
fn set_115200() {
    use x86_64::instructions::port::Port;
    // The 16550's line control register; with its DLAB bit (0x80) set, the two registers at
    // the base hold the divisor's low and high bytes.
    let (mut lcr, mut dll, mut dlm) = (
        Port::<u8>::new(COM1 + 3),
        Port::<u8>::new(COM1),
        Port::<u8>::new(COM1 + 1),
    );
    // SAFETY: COM1's registers, which only this module drives, programmed before any
    // write (`READY` is not set yet); 8N1 (0x03) as `init` left it, DLAB cleared after.
    unsafe {
        lcr.write(0x83);
        dll.write(1);
        dlm.write(0);
        lcr.write(0x03);
    }
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
