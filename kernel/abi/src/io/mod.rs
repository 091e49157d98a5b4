//! The I/O protocols between domains: the shared ring every split device uses and the two
//! devices built on it (Xen's `public/io/`).
//!
//! These are guest-to-guest contracts: the hypervisor only grants the pages and carries the
//! event-channel notifications; it never reads a ring. A frontend and a backend that both
//! compile this module agree on every slot's layout.

pub mod blkif;
pub mod netif;
pub mod ring;
