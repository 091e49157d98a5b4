//! COM1, the serial port the console writes to.
//!
//! The port holds no Rust state: a `SerialPort` is only its I/O base, made afresh for its
//! set-up. What to write, when, and by whom is the console's (`console.rs`, its ring): this
//! module only says whether the transmit FIFO has room and fills it.

use core::sync::atomic::{AtomicBool, Ordering};

use uart_16550::SerialPort;

/// COM1's base I/O port.
const COM1: u16 = 0x3f8;

/// Set once [`init`] has programmed the UART; writes before that are dropped.
static READY: AtomicBool = AtomicBool::new(false);

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
/// and has no call for the rate. The console's budgets (a guest's quota, what one call may
/// put in the ring: `abi::hypercall::CONSOLE_CALL_BYTES`) are counted in bytes of a
/// 115200-baud UART; at 38400 the port fell three times further behind them (an audit of
/// session 21).
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

/// Bytes the UART's transmit FIFO takes at once (a 16550A's).
pub const FIFO_BYTES: usize = 16;

/// The line status register's bit "transmitter holding register empty": with the FIFOs on,
/// the transmit FIFO is empty and takes [`FIFO_BYTES`] more.
const LSR_THR_EMPTY: u8 = 0x20;

/// Whether the port is programmed and its transmit FIFO empty: [`send_burst`] may write up
/// to [`FIFO_BYTES`] without waiting.
pub fn tx_ready() -> bool {
    if !READY.load(Ordering::Acquire) {
        return false;
    }
    let mut lsr = x86_64::instructions::port::Port::<u8>::new(COM1 + 5);
    // SAFETY: reading COM1's line status register has no side effect on transmission; only
    // this module drives the port.
    unsafe { lsr.read() & LSR_THR_EMPTY != 0 }
}

/// Writes up to [`FIFO_BYTES`] bytes into the transmit FIFO without waiting: the caller saw
/// [`tx_ready`]. Nothing before [`init`].
pub fn send_burst(bytes: &[u8]) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let mut thr = x86_64::instructions::port::Port::<u8>::new(COM1);
    for &b in &bytes[..bytes.len().min(FIFO_BYTES)] {
        // SAFETY: COM1's transmit holding register; the FIFO is empty (`tx_ready`) and takes
        // this many bytes.
        unsafe { thr.write(b) };
    }
}

/// Whether [`init`] has programmed the port (writes before it are dropped).
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}
