//! The serial console and the `log` back end.
//!
//! Every line carries the time since boot and the CPU that wrote it, so interleaved output
//! from many CPUs can still be read. Results records bypass the log levels: they are data
//! for the runner (`abi::tool::console::RECORD_PREFIX`), not messages.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::arch::serial;
use crate::time;

static LEVEL: AtomicU8 = AtomicU8::new(log::LevelFilter::Info as u8);

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

/// Writes formatted text to the console as one piece, not interleaved with other CPUs.
pub fn write_fmt(args: fmt::Arguments) {
    serial::write_fmt(args);
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

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() as u8 <= LEVEL.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = time::now_ns();
        write_fmt(format_args!(
            "[{:5}.{:06}] cpu{} {:5} {}\n",
            ns / 1_000_000_000,
            (ns / 1000) % 1_000_000,
            crate::cpu_index(),
            record.level(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Takes the console back from whoever holds it, for a fatal report: the CPU that holds the
/// lock may be the one that just faulted, or stopped for good.
pub fn emergency() {
    // A line interleaved with another CPU's half-written one is better than a report never
    // written.
    serial::break_lock();
}
