//! Thin wrappers over the x86_64 instructions this crate needs: CPUID, MSRs, port I/O, the
//! TSC and the GS base. Written here (a dozen lines of `asm!`) rather than taken from a
//! crate so that every instruction the SMP code relies on is visible in one file.

use core::arch::asm;

/// Result of one CPUID leaf.
#[derive(Clone, Copy, Debug)]
pub struct Cpuid {
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

/// Executes CPUID with `leaf` in EAX and `subleaf` in ECX.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    Cpuid {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// The highest basic CPUID leaf.
pub fn max_leaf() -> u32 {
    cpuid(0, 0).eax
}

/// Whether the CPU offers x2APIC mode (CPUID.1:ECX bit 21).
pub fn has_x2apic() -> bool {
    cpuid(1, 0).ecx & (1 << 21) != 0
}

/// Whether the local APIC timer has a TSC-deadline mode (CPUID.1:ECX bit 24).
pub fn has_tsc_deadline() -> bool {
    cpuid(1, 0).ecx & (1 << 24) != 0
}

/// Whether the TSC runs at a constant rate in every power state (CPUID.80000007h:EDX bit 8).
pub fn has_invariant_tsc() -> bool {
    cpuid(0x8000_0000, 0).eax >= 0x8000_0007 && cpuid(0x8000_0007, 0).edx & (1 << 8) != 0
}

/// The APIC id of the calling CPU as CPUID reports it, whatever mode its APIC is in: the
/// 32-bit x2APIC id from leaf 0Bh when present, else the 8-bit initial id of leaf 1.
pub fn cpuid_apic_id() -> u32 {
    if max_leaf() >= 0x0B {
        let r = cpuid(0x0B, 0);
        // Leaf 0Bh is valid only if it reports a non-zero level type or logical count.
        if r.ebx != 0 || r.ecx & 0xFF00 != 0 {
            return r.edx;
        }
    }
    cpuid(1, 0).ebx >> 24
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (RDMSR of an absent MSR raises #GP), and the caller must be at
/// CPL 0.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists and we run at CPL 0; RDMSR touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` be valid for it; writing an MSR can change how the CPU behaves
/// in any way (paging, segment bases, interrupts), which the caller must account for.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value. Not `nomem`: MSR writes such as the
    // GS base or x2APIC ICR must stay ordered with the surrounding memory accesses.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading `port` must have no side effect the caller does not intend.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches that reading this port is harmless.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Reads a 32-bit value from an I/O port.
///
/// # Safety
/// Reading `port` must have no side effect the caller does not intend.
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller vouches that reading this port is harmless.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// Writing `value` to `port` must be what the caller intends for that device.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is permitted at CPL 0 whatever CR4.TSD says.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A spin-loop hint.
#[inline]
pub fn pause() {
    core::hint::spin_loop();
}

/// Runs `f` with maskable interrupts disabled, restoring the previous IF afterwards.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let rflags: u64;
    // SAFETY: reading RFLAGS and clearing IF only delays interrupts; it touches no memory the
    // compiler knows about (the push/pop pair uses the stack, hence no `nostack`).
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) rflags, options(preserves_flags)) };
    let r = f();
    if rflags & (1 << 9) != 0 {
        // SAFETY: interrupts were enabled on entry; re-enabling them restores that state.
        unsafe { asm!("sti", options(nomem, nostack)) };
    }
    r
}

/// Enables interrupts and halts until one arrives, then disables them again: the idle wait
/// of a CPU that has nothing to do (an IPI or the timer wakes it). `sti` delays interrupts by
/// one instruction, so none can slip in between it and `hlt` and be missed. The handler runs
/// on the current stack: this `asm!` is not `nostack`, so the compiler keeps nothing in the
/// red zone across it.
pub fn wait_for_interrupt() {
    // SAFETY: the kernel's IDT handles every vector that can arrive; enabling interrupts for
    // the length of the `hlt` is the purpose of the call.
    unsafe { asm!("sti", "hlt", "cli", options(nomem)) };
}

/// IA32_GS_BASE: the GS base used in the kernel (IA32_KERNEL_GS_BASE is the one `swapgs`
/// exchanges it with).
pub const IA32_GS_BASE: u32 = 0xC000_0101;
/// IA32_APIC_BASE: local APIC base address and mode bits.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE: the TSC value at which the local APIC timer fires in TSC-deadline mode.
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
