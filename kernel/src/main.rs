//! Domino, the hypervisor image.
//!
//! The boot code in `arch` enters [`kernel_entry`] on the bootstrap CPU in long mode, on the
//! boot stack, with interrupts off. From there: console, boot information, command line,
//! memory, descriptor tables, CPU discovery and start-up, then the run itself.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod bootinfo;
mod console;
mod memory;
mod selftest;
mod time;
mod trap;

use abi::console::ExitCode;
use kernel::cmdline::{self, LogLevel, SelfTest};

/// The scheduling policies this build knows, the default first.
const POLICIES: &[&str] = &["credit", "rr", "bvt"];

/// The index of the CPU running this code (0 on the bootstrap CPU).
pub fn cpu_index() -> usize {
    0
}

/// The `boot` results record (DESIGN.md "Results").
#[derive(serde::Serialize)]
struct BootRecord<'a> {
    kind: &'a str,
    cpus_online: usize,
    cpus_found: usize,
    apic: &'a str,
    boot_ns: u64,
    accel: &'a str,
    protocol: &'a str,
    memory_bytes: u64,
}

/// Writes one results record for the runner.
fn record(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => console::record(&json),
        Err(e) => log::error!("cannot encode a results record: {e}"),
    }
}

/// The Rust entry of the bootstrap CPU, called by the boot code with the boot protocol's
/// marker and the physical address of its boot information.
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(marker: u32, info_phys: u32) -> ! {
    console::init();
    let info = match bootinfo::read(marker, u64::from(info_phys)) {
        Ok(info) => info,
        Err(e) => {
            log::error!("cannot read the boot information: {e:?}");
            arch::exit(ExitCode::Failure);
        }
    };
    let options = match cmdline::parse(&info.cmdline, POLICIES) {
        Ok(options) => options,
        Err(e) => {
            log::error!("{e}");
            arch::exit(ExitCode::BadInput);
        }
    };
    console::set_level(match options.loglevel {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    log::info!(
        "Domino booting by {} on {}; command line `{}`",
        info.protocol,
        arch::cpu::accelerator(),
        info.cmdline
    );
    if options.selftest == SelfTest::Probe {
        log::info!("probe: x87 and SSE give {}", selftest::fpu_and_sse());
        arch::exit(ExitCode::Success);
    }

    let mem = memory::init(&info);
    log::info!(
        "memory: {} MiB usable, {} MiB heap, {} free frames",
        mem.usable_bytes >> 20,
        mem.heap_bytes >> 20,
        mem.frames
    );
    let _tables = arch::gdt::init_this_cpu();
    arch::trap::load_idt();
    if options.selftest == SelfTest::Fault {
        log::info!("self-test: taking a page fault on purpose");
        selftest::page_fault();
    }

    record(&BootRecord {
        kind: "boot",
        cpus_online: 1,
        cpus_found: 1,
        apic: "xapic",
        boot_ns: time::since_boot_ns(),
        accel: arch::cpu::accelerator(),
        protocol: info.protocol,
        memory_bytes: mem.usable_bytes,
    });
    arch::exit(ExitCode::Success)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::emergency();
    log::error!("hypervisor panic: {info}");
    arch::exit(ExitCode::Failure)
}
