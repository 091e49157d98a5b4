//! Domino, the hypervisor image.
//!
//! The boot code in `arch` enters [`kernel_entry`] on the bootstrap CPU in long mode, on the
//! boot stack, with interrupts off. From there: console, boot information, command line,
//! memory, descriptor tables, CPU discovery and start-up, then the run itself.
#![no_std]
#![no_main]

mod arch;
mod console;
mod time;

use abi::console::ExitCode;

/// The index of the CPU running this code (0 on the bootstrap CPU).
pub fn cpu_index() -> usize {
    0
}

/// The Rust entry of the bootstrap CPU, called by the boot code with the boot protocol's
/// marker and the physical address of its boot information.
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(marker: u32, info_phys: u32) -> ! {
    console::init();
    log::info!("Domino starting (marker {marker:#x}, boot information at {info_phys:#x})");
    log::info!("accelerator: {}", arch::cpu::accelerator());
    arch::exit(ExitCode::Success)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log::error!("hypervisor panic: {info}");
    arch::exit(ExitCode::Failure)
}
