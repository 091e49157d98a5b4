//! The architecture layer: everything that touches the processor directly.
//!
//! As in Hubris's `arch.rs`, one module per architecture, each defining the same names, and
//! a compile error for anything else. Domain, event and scheduling code never reach past it.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("Domino runs on x86_64 only");
