//! Machine memory: the heap and the frame allocator over the usable map (`frames`) and the
//! frame table over real memory (`frame_table`).
//!
//! See this folder's README for what it may use.

pub mod frame_table;
pub mod frames;

pub use frame_table::MACHINE;
