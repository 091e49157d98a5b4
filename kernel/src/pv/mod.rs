//! The paravirtual interface: what a guest reaches with `syscall`. Hypercall dispatch
//! (`hypercall`), grant tables (`grant_table`), event upcalls (`upcall`).
//!
//! See this folder's README for what it may use.

pub mod grant_table;
pub mod hypercall;
pub mod upcall;
