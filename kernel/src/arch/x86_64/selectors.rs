//! A vCPU's data segment selectors (DS, ES, FS, GS), saved and restored on every switch.
//!
//! In long mode a guest in ring 3 may load any selector whose descriptor has DPL 3 (the
//! user data and 64-bit code segments, or null) into DS, ES, FS and GS, and nothing on the
//! way into or out of the hypervisor touches them. Left alone, what one domain loaded would
//! be what the next domain on that CPU finds: a channel between domains. So each vCPU keeps
//! its own four, packed in one `u64` (16 bits each, DS lowest), zero (null) at creation.
//!
//! Bases: every descriptor in the GDT has base 0 and CR4.FSGSBASE stays off, so the FS and
//! GS bases a guest can have are 0; loading GS here resets the guest's (inactive) GS base
//! to 0 as well, which is then also the same for every vCPU.

use core::arch::asm;

fn read() -> u64 {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!(
            "mov {0:x}, ds",
            "mov {1:x}, es",
            "mov {2:x}, fs",
            "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags),
        );
    }
    u64::from(ds) | u64::from(es) << 16 | u64::from(fs) << 32 | u64::from(gs) << 48
}

/// The selectors in the CPU now (the vCPU leaving has them), to keep until it runs again.
pub fn save() -> u64 {
    read()
}

/// Loads the selectors a vCPU saved (`packed`, from [`save`], or 0 for a new vCPU), unless
/// the CPU has them already.
pub fn restore(packed: u64) {
    if read() == packed {
        return;
    }
    let [ds, es, fs, gs] = [0, 16, 32, 48].map(|shift| (packed >> shift) as u16);
    // SAFETY: each selector was in a segment register while the guest ran in ring 3 (or is
    // null), so its descriptor is a DPL-3 data or readable code segment, which ring 0 may
    // load too; their bases are 0 and the hypervisor does not use DS/ES/FS bases. GS is
    // loaded with the guest's GS base swapped in (interrupts are off; an NMI in between
    // finds the guest's GS base and swaps it itself, see `entry.rs`), so the hypervisor's
    // GS base is untouched.
    unsafe {
        asm!(
            "mov ds, {0:x}",
            "mov es, {1:x}",
            "mov fs, {2:x}",
            "swapgs",
            "mov gs, {3:x}",
            "swapgs",
            in(reg) ds, in(reg) es, in(reg) fs, in(reg) gs,
            options(nostack, preserves_flags),
        );
    }
}
