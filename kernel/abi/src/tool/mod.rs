//! The tooling contracts: what the host-side runner and Domain0 exchange with the machine,
//! rather than what a guest calls.
//!
//! - [`console`]: the serial line protocol (`@domino` records, `@trace` lines) and the exit
//!   codes the runner reads.
//! - [`plan`]: the experiment, expanded by the runner, that Domain0 carries out.
//! - [`results`] (with the `alloc` feature): every results record as a Rust type.

pub mod console;
pub mod linux;
pub mod plan;
#[cfg(feature = "alloc")]
pub mod results;
