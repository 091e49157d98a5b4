//! The paravirtual interface: what a guest reaches with `syscall`. Hypercall dispatch
//! (`hypercall`), page tables and reservations (`mmu`), grant tables (`grant_table`), event
//! upcalls (`upcall`), Domain0's control and the end of domains (`control`). Event channels
//! are `crate::domain::event_channel`.
//!
//! See this folder's README for what it may use.

pub mod control;
pub mod grant_table;
pub mod hypercall;
pub mod mmu;
pub mod upcall;
