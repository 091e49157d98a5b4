//! The machine's part of the deliberate misbehaviour `selftest=` asks for (`crate::selftest`
//! has the rest): a probe of the x87 and SSE units, and a page fault in the hypervisor.

use core::arch::asm;

/// An address no page table of the hypervisor maps: the lower half beyond the boot code's
/// 4 GiB identity map, and beyond any guest's reach at boot.
const UNMAPPED: u64 = 0x0000_7000_0000_0000;

/// Executes x87 and SSE instructions. A correctly working accelerator returns at once; the
/// broken nested KVM of our build machines never returns from the first one.
pub fn fpu_and_sse() -> u64 {
    let x87: u64;
    let sse: u64;
    // SAFETY: uses only the x87 stack (pushed and popped back to empty) and xmm0/xmm1,
    // declared as clobbered; SSE was enabled by the boot code. The one store is to `slot`,
    // a local passed in.
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

/// Reads an address nothing maps, to take a page fault in the hypervisor, which the trap
/// handler reports as fatal: the machine stops (exit 1).
pub fn page_fault() -> ! {
    // SAFETY: the load only fills a scratch register, and no path continues after it: it
    // faults (the address is unmapped, or, were a guest's page there, SMAP refuses it), and
    // the fatal-exception handler never returns; if it ever completed, `ud2` faults next.
    // Nothing of Rust's memory is touched.
    unsafe {
        asm!(
            "mov rax, qword ptr [{at}]",
            "ud2",
            at = in(reg) UNMAPPED,
            options(noreturn, nostack, readonly)
        )
    }
}
