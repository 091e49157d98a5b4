//! Machine memory: the heap and frame allocator over the usable map (`frames`), the frame
//! table over real memory with the hypercalls that change a guest's page tables and its
//! reservation (`mmu`).
//!
//! See this folder's README for what it may use.

pub mod frames;
pub mod mmu;
