//! x87/SSE state of a vCPU.
//!
//! A vCPU's registers are saved with `fxsave64` when it is interrupted (by the entry code,
//! before any Rust runs) and when it is switched away during a hypercall, and restored with
//! `fxrstor64` when it runs again. Vector registers are caller-saved across hypercalls, so a
//! hypercall that returns to the same vCPU scrubs them instead: no register ever carries one
//! domain's data, or the hypervisor's, into another.

use core::arch::asm;

/// An `fxsave64` image.
#[repr(C, align(64))]
#[derive(Clone)]
pub struct FpuState(pub [u8; 512]);

/// Where the XMM registers sit in the image (bytes 160..416).
const XMM_BYTES: core::ops::Range<usize> = 160..416;

static INITIAL: spin::Once<FpuState> = spin::Once::new();

impl FpuState {
    /// The state of a freshly reset FPU (`fninit`, MXCSR = 0x1f80: all exceptions masked).
    pub fn initial() -> FpuState {
        INITIAL
            .call_once(|| {
                let mut state = FpuState([0; 512]);
                let mxcsr: u32 = 0x1f80;
                // SAFETY: resets this CPU's x87 unit and MXCSR to their defaults (which the
                // hypervisor runs with anyway) and stores the image into a 64-byte aligned
                // 512-byte buffer, as `fxsave64` requires.
                unsafe {
                    asm!("fninit", "ldmxcsr [{m}]", "fxsave64 [{s}]",
                         m = in(reg) &mxcsr, s = in(reg) state.0.as_mut_ptr(), options(nostack));
                }
                state.0[XMM_BYTES].fill(0);
                state
            })
            .clone()
    }

    /// Saves the CPU's current x87/SSE state here.
    pub fn save(&mut self) {
        // SAFETY: `self.0` is a 64-byte aligned 512-byte buffer, as `fxsave64` requires.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    /// Loads this state into the CPU.
    pub fn restore(&self) {
        // SAFETY: the image was written by `fxsave64` (or is the initial one), so its
        // reserved bits and MXCSR are valid; 64-byte aligned as `fxrstor64` requires.
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
    }

    /// Saves the CPU's current x87/SSE state here, with the XMM registers zeroed: used when
    /// a vCPU leaves during a hypercall, when its XMM registers hold hypervisor data.
    pub fn save_scrubbed(&mut self) {
        // SAFETY: `self.0` is a 64-byte aligned 512-byte buffer, as `fxsave64` requires.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
        self.0[XMM_BYTES].fill(0);
    }
}
