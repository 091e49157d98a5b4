//! x87/SSE state of a vCPU.
//!
//! A vCPU's registers are saved with `fxsave64` when it is interrupted (by the entry code,
//! before any Rust runs) and when it is switched away during a hypercall, and restored with
//! `fxrstor64` when it runs again. Vector registers are caller-saved across hypercalls, so a
//! hypercall that returns to the same vCPU scrubs them instead: no register ever carries one
//! domain's data, or the hypervisor's, into another.

use core::arch::asm;
use core::cell::UnsafeCell;

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

/// A vCPU's x87/SSE save area. It is written behind Rust's back: by the entry code, which
/// `fxsave64`s an interrupted guest's state into the area the per-CPU area names
/// (`percpu::set_current`), and read by the exit path's `fxrstor64`. Hence the cell.
///
/// Only the CPU that has the owning vCPU claimed (its `running_on`) touches the area; the
/// claim is a compare-and-swap (acquire) and the release a store (release), so one CPU's
/// accesses happen before the next one's. Rust code reaches the contents only through the
/// per-CPU area (`percpu::save_current_fpu_scrubbed`, `current_fpu_snapshot`,
/// `restore_fpu_on_exit`), for the vCPU recorded there by `percpu::set_current`, whose
/// contract is exactly that exclusivity.
#[repr(transparent)]
pub struct FpuArea(UnsafeCell<FpuState>);

// SAFETY: shared between CPUs only as described on the type: accessed by one CPU at a time,
// the one with the owning vCPU claimed, with the claim ordering the accesses.
unsafe impl Sync for FpuArea {}

impl FpuArea {
    /// An area holding the state of a freshly reset FPU.
    pub fn new() -> FpuArea {
        FpuArea(UnsafeCell::new(FpuState::initial()))
    }

    /// The area's address, for the per-CPU area (`percpu::set_current`) and the entry code.
    pub fn as_ptr(&self) -> *mut FpuState {
        self.0.get()
    }
}

impl Default for FpuArea {
    fn default() -> Self {
        Self::new()
    }
}
