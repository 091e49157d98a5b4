//! The serial console and the `log` back end.
//!
//! Every line carries the time since boot and the CPU that wrote it, so interleaved output
//! from many CPUs can still be read. Results records bypass the log levels: they are data
//! for the runner (`abi::tool::console::RECORD_PREFIX`), not messages.
//!
//! Everything written goes through one ring (`kerncore::conring`, Xen's serial transmit
//! buffer), whole lines at a time under its lock, so lines never interleave and keep their
//! order. The serial port is fed from the ring a FIFO's worth at a time, whenever it has
//! room, by whoever passes: each write, each CPU's timer interrupt ([`poll`]), an idle CPU
//! (which arms its timer to come back while bytes wait, [`pending`]). Written straight to
//! the port, a guest's console call held its CPU with interrupts off for as long as its
//! text took to go out at 115200 baud (~45 ms a call), its CPU's other domains waited as
//! long, and other CPUs' writers spun behind it (`isolation/slow-uart`). A guest's text
//! takes at most half the ring ([`write_guest`] refuses beyond, and the guest retries); the
//! hypervisor's own lines wait for room when the ring is full, so none is lost.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use kerncore::cmdline::SelfTest;
use kerncore::conring::ByteRing;
use spin::Mutex;

use crate::arch::serial;
use crate::time;

static LEVEL: AtomicU8 = AtomicU8::new(log::LevelFilter::Info as u8);

/// Bytes the ring holds: ~5.7 s of a 115200-baud port.
const RING_BYTES: usize = 64 * 1024;
/// How full guests' text may make the ring: the rest is kept for the hypervisor's lines.
const GUEST_FILL: usize = RING_BYTES / 2;

static RING: Mutex<ByteRing<RING_BYTES>> = Mutex::new(ByteRing::new());
/// The CPU holding [`RING`]'s lock, plus one (0: none): a CPU that takes an NMI or a fault
/// while it holds the lock, and logs from there, writes straight to the port instead of
/// spinning on its own lock ([`lock_ring`]).
static HOLDER: AtomicUsize = AtomicUsize::new(0);
/// Bytes waiting in the ring, for a look without its lock ([`pending`]).
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Set by a fatal report ([`emergency`]): from then on, writes go straight to the port.
static EMERGENCY: AtomicBool = AtomicBool::new(false);

/// Starts the serial port and installs the logger. Called once, first thing, by the BSP.
pub fn init() {
    serial::init();
    static LOGGER: Logger = Logger;
    // A second call would fail; there is none.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}

/// Sets the most verbose level printed.
pub fn set_level(level: log::LevelFilter) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The ring, locked; `None` if this CPU holds it already (an NMI or a fault taken inside a
/// write): the caller then writes straight to the port.
fn lock_ring() -> Option<RingGuard> {
    let me = crate::cpu_index() + 1;
    if HOLDER.load(Ordering::Acquire) == me {
        return None;
    }
    // Behind a holder that waits for the port (the ring full, the exit's flush), as long as
    // the port takes: not stuck, as the holder is not (`send_waiting`).
    let guard = loop {
        if let Some(g) = RING.try_lock() {
            break g;
        }
        crate::touch_watchdog();
        core::hint::spin_loop();
    };
    HOLDER.store(me, Ordering::Release);
    Some(RingGuard(guard))
}

/// The ring, locked, if no CPU holds it now.
fn try_lock_ring() -> Option<RingGuard> {
    let guard = RING.try_lock()?;
    HOLDER.store(crate::cpu_index() + 1, Ordering::Release);
    Some(RingGuard(guard))
}

/// [`RING`] locked by this CPU ([`lock_ring`]); its holder mark goes with it.
struct RingGuard(spin::MutexGuard<'static, ByteRing<RING_BYTES>>);

impl Drop for RingGuard {
    fn drop(&mut self) {
        HOLDER.store(0, Ordering::Release);
    }
}

impl core::ops::Deref for RingGuard {
    type Target = ByteRing<RING_BYTES>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for RingGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Writes formatted text to the console as one piece, not interleaved with other CPUs'.
pub fn write_fmt(args: fmt::Arguments) {
    write_with(|w| w.write_fmt(args));
}

/// Runs `write` on the ring (then feeds the port), or on the port itself after a fatal
/// report or from inside this CPU's own ring write ([`lock_ring`]).
fn write_with(write: impl FnOnce(&mut dyn Write) -> fmt::Result) {
    if !serial::ready() {
        return;
    }
    let ring = if EMERGENCY.load(Ordering::Acquire) {
        None
    } else {
        lock_ring()
    };
    let Some(mut ring) = ring else {
        let _ = write(&mut Direct);
        return;
    };
    let _ = write(&mut Appender(&mut ring));
    feed(&mut ring);
}

/// Writes one line of a guest's console text (`args`, the domain's name and its text as
/// shown), which costs the serial port `cost` bytes (`abi::hypercall::console_line_cost`),
/// as the log writes a line at level info. Returns false, writing nothing, if guests' text
/// already fills the ring as far as it may ([`GUEST_FILL`]): the port is that far behind,
/// and the caller refuses the rest of the call. Domain0 (`privileged`) is not refused: its
/// lines (each domain's verdict) wait for room as the hypervisor's do.
pub fn write_guest(privileged: bool, cost: usize, args: fmt::Arguments) -> bool {
    if (log::Level::Info as u8) > LEVEL.load(Ordering::Relaxed) || !serial::ready() {
        return true;
    }
    if EMERGENCY.load(Ordering::Acquire) {
        return false;
    }
    let Some(mut ring) = lock_ring() else {
        return false;
    };
    if !privileged && ring.len() + cost > GUEST_FILL {
        feed(&mut ring);
        return false;
    }
    let _ = log_line(&mut Appender(&mut ring), log::Level::Info, args);
    feed(&mut ring);
    true
}

/// Whether guests' text has room in the ring for a line that costs the port `cost` bytes
/// ([`write_guest`]): a look before the caller charges the line to the guest's quota. (The
/// ring may fill between the look and the write: the write then refuses the line.)
pub fn has_room_for_guest(cost: usize) -> bool {
    WAITING.load(Ordering::Relaxed) + cost <= GUEST_FILL
}

/// Whether bytes wait in the ring for the port: an idle CPU then arms its timer to feed
/// the port again soon ([`POLL_NS`]) instead of sleeping until its next event.
pub fn pending() -> bool {
    WAITING.load(Ordering::Relaxed) != 0
}

/// How soon an idle CPU comes back to feed the port while bytes wait: about the time a
/// 16-byte FIFO takes to empty at 115200 baud.
pub const POLL_NS: u64 = 1_000_000;

/// Feeds the port from the ring as far as it has room, if bytes wait and no other CPU is
/// at it. Cheap when nothing waits: called from every timer interrupt and idle step.
pub fn poll() {
    if !pending() {
        return;
    }
    if HOLDER.load(Ordering::Relaxed) != 0 {
        return; // whoever holds it feeds the port before letting go
    }
    if let Some(mut ring) = try_lock_ring() {
        feed(&mut ring);
    }
}

/// Writes one results record line (a JSON object) for the runner.
pub fn record(json: &str) {
    write_fmt(format_args!(
        "{}{}\n",
        abi::tool::console::RECORD_PREFIX,
        json
    ));
}

/// Writes one typed results record (`abi::tool::results`) for the runner.
pub fn write_record(r: &abi::tool::results::Record) {
    match serde_json::to_string(r) {
        Ok(json) => record(&json),
        Err(e) => log::error!("cannot encode a {} record: {e}", r.kind()),
    }
}

/// Sends everything the ring holds, waiting for the port: before the machine stops. After a
/// fatal report there is nothing left to send ([`emergency`]), and the ring's holder may be
/// the CPU that failed.
pub fn flush() {
    if EMERGENCY.load(Ordering::Acquire) {
        return;
    }
    let Some(mut ring) = lock_ring() else {
        return;
    };
    while !ring.is_empty() {
        make_room(&mut ring);
    }
    WAITING.store(0, Ordering::Relaxed);
}

/// One log line: time since boot, CPU, level, text.
fn log_line(w: &mut (impl Write + ?Sized), level: log::Level, args: fmt::Arguments) -> fmt::Result {
    let ns = time::now_ns();
    writeln!(
        w,
        "[{:5}.{:06}] cpu{} {:5} {}",
        ns / 1_000_000_000,
        (ns / 1000) % 1_000_000,
        crate::cpu_index(),
        level,
        args
    )
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() as u8 <= LEVEL.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            write_with(|w| log_line(w, record.level(), *record.args()));
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// Appends text to the ring (its lock held), waiting for the port to take bytes while the
/// ring is full.
struct Appender<'a>(&'a mut ByteRing<RING_BYTES>);

impl Write for Appender<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        loop {
            let n = self.0.push(rest);
            rest = &rest[n..];
            if rest.is_empty() {
                return Ok(());
            }
            make_room(self.0);
        }
    }
}

/// Writes straight to the port, waiting for it: a fatal report's way ([`emergency`]).
struct Direct;

impl Write for Direct {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(serial::FIFO_BYTES) {
            send_waiting(chunk);
        }
        Ok(())
    }
}

/// Feeds the port from the ring while it has room, without waiting.
fn feed(ring: &mut ByteRing<RING_BYTES>) {
    let mut buf = [0u8; serial::FIFO_BYTES];
    while !ring.is_empty() && uart_ready() {
        let n = ring.pop(&mut buf);
        uart_send(&buf[..n]);
    }
    WAITING.store(ring.len(), Ordering::Relaxed);
}

/// Sends a FIFO's worth from the ring, waiting for the port to have room.
fn make_room(ring: &mut ByteRing<RING_BYTES>) {
    let mut buf = [0u8; serial::FIFO_BYTES];
    let n = ring.pop(&mut buf);
    send_waiting(&buf[..n]);
}

/// Sends up to a FIFO's worth, waiting for the port to have room: only where the bytes must
/// go out before anything else (a full ring, the machine stopping, a fatal report), so the
/// watchdog is told this CPU is not stuck (the exit's flush of a run's records takes
/// seconds at 115200 baud).
fn send_waiting(bytes: &[u8]) {
    while !uart_ready() {
        crate::touch_watchdog();
        core::hint::spin_loop();
    }
    uart_send(bytes);
}

/// `selftest=slow-uart`: the port as a 115200-baud UART would take bytes, ~87 µs each (ten
/// bits), a 16-byte FIFO at a time. QEMU's UART takes them at once, so runs here never
/// showed what a console write cost on hardware: this one does (`isolation/slow-uart`).
const UART_BYTE_NS: u64 = 86_806;
/// Under `selftest=slow-uart`: when the modelled FIFO will be empty.
static UART_FREE_AT: AtomicU64 = AtomicU64::new(0);

/// Whether the port's transmit FIFO is empty ([`serial::tx_ready`], or the model).
fn uart_ready() -> bool {
    // The model runs on system time, 0 until the TSC is calibrated: the port as it is till
    // then.
    if time::self_test_is(SelfTest::SlowUart)
        && time::tsc_hz() != 0
        && time::now_ns() < UART_FREE_AT.load(Ordering::Relaxed)
    {
        return false;
    }
    serial::tx_ready()
}

/// Writes up to a FIFO's worth into the port, which [`uart_ready`] said has room.
fn uart_send(bytes: &[u8]) {
    if time::self_test_is(SelfTest::SlowUart) {
        let from = time::now_ns().max(UART_FREE_AT.load(Ordering::Relaxed));
        UART_FREE_AT.store(from + bytes.len() as u64 * UART_BYTE_NS, Ordering::Relaxed);
    }
    serial::send_burst(bytes);
}

/// Takes the console for a fatal report: from now on every write goes straight to the port,
/// whoever holds the ring (the CPU holding it may be the one that just faulted, or stopped
/// for good). What the ring holds is sent first if its lock can be had.
pub fn emergency() {
    if let Some(mut ring) = try_lock_ring() {
        while !ring.is_empty() {
            make_room(&mut ring);
        }
        WAITING.store(0, Ordering::Relaxed);
    }
    EMERGENCY.store(true, Ordering::Release);
}
