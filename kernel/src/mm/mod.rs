//! Machine memory: the heap and the frame allocator over the usable map (`frames`) and the
//! frame table over real memory (`frame_table`), and the frames guest images share
//! (`shared_image`).
//!
//! See this folder's README for what it may use.

pub mod frame_table;
pub mod frames;
pub mod shared_image;

pub use frame_table::MACHINE;
