//! Deliberate misbehaviour on request (`selftest=` on the command line), so that the
//! failure paths are tested as routinely as the success path.

use core::arch::asm;

/// Executes x87 and SSE instructions. A correctly working accelerator returns at once; the
/// broken nested KVM of our build machines never returns from the first one.
pub fn fpu_and_sse() -> u64 {
    let x87: u64;
    let sse: u64;
    // SAFETY: uses only the x87 stack (pushed and popped back to empty) and xmm0/xmm1,
    // declared as clobbered; SSE was enabled by the boot code.
    unsafe {
        asm!(
            "fninit",
            "fld1",
            "fld1",
            "faddp",
            "fistp qword ptr [{slot}]",
            "mov {x87}, qword ptr [{slot}]",
            "mov {tmp}, 3",
            "cvtsi2sd xmm0, {tmp}",
            "addsd xmm0, xmm0",
            "cvttsd2si {sse}, xmm0",
            slot = in(reg) &mut [0u64; 1],
            tmp = out(reg) _,
            x87 = out(reg) x87,
            sse = out(reg) sse,
            out("xmm0") _,
            out("xmm1") _,
        );
    }
    x87 + sse
}

/// Reads an address nothing maps, to take a page fault in the hypervisor.
pub fn page_fault() -> ! {
    let unmapped = 0x0000_7000_0000_0000 as *const u64;
    // SAFETY: deliberately unsound: the point is the page fault, which the trap handler
    // reports as fatal; control never comes back here.
    let value = unsafe { unmapped.read_volatile() };
    panic!("reading unmapped memory returned {value:#x} instead of faulting");
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
