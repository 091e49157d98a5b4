//! Physical memory at boot: the usable map, the kernel heap and the frame allocator.
//!
//! `arch::bootmem` takes out of the firmware's map what the image, the boot information, the
//! boot module and the real-mode area (AP trampoline) occupy; the heap and the frame bitmap
//! are carved from what remains, and every other frame goes to the allocator, which counts
//! them so that tests can check that nothing leaks.

use kerncore::frame_alloc::{FrameAllocator, FreeError};
use linked_list_allocator::LockedHeap;
use spin::Mutex;

use crate::arch::bootmem::BootMemory;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

/// What memory set-up found, for the boot log.
pub struct MemoryReport {
    pub usable_bytes: u64,
    pub heap_bytes: u64,
    pub frames: usize,
}

/// Builds the heap and the frame allocator from the machine's free RAM. Called once, on the
/// bootstrap CPU.
pub fn init(mut memory: BootMemory) -> MemoryReport {
    let usable_bytes = memory.usable_bytes();
    // A quarter of memory for the heap (per-CPU stacks and tables, domain objects), within
    // bounds that suit both a 64 MiB test machine and a large host; the spec validator's
    // memory model uses the same function.
    let heap_bytes = sched::limits::heap_bytes(usable_bytes);
    let heap = memory
        .take_bytes(heap_bytes, 2 << 20)
        .expect("no room for the kernel heap");
    HEAP.lock().init_from_slice(heap);

    let end = memory.end();
    let bitmap = memory
        .take_words(FrameAllocator::bitmap_words(end))
        .expect("no room for the frame bitmap");
    crate::mm::frame_table::init(end);
    let mut frames = FrameAllocator::new(bitmap, end);
    for range in memory.into_ranges() {
        frames.add_range(range.start, range.end);
    }
    let report = MemoryReport {
        usable_bytes,
        heap_bytes,
        frames: frames.free_frames(),
    };
    *FRAMES.lock() = Some(frames);
    report
}

/// Takes a free frame; its contents are whatever it held before.
///
/// Building or tearing down a large domain is one hypercall that can take longer than the
/// watchdog allows under TCG; each frame taken or given back counts as progress.
pub fn alloc_frame() -> Option<u64> {
    crate::arch::percpu::touch_watchdog();
    FRAMES.lock().as_mut()?.alloc()
}

/// Returns a frame to the pool.
pub fn free_frame(phys: u64) -> Result<(), FreeError> {
    crate::arch::percpu::touch_watchdog();
    FRAMES
        .lock()
        .as_mut()
        .map_or(Err(FreeError::OutOfRange(phys)), |f| f.free(phys))
}

/// Bytes of the kernel heap in use.
pub fn heap_used() -> usize {
    HEAP.lock().used()
}

/// Frames free now, and frames the allocator manages.
pub fn frame_counts() -> (usize, usize) {
    FRAMES
        .lock()
        .as_ref()
        .map_or((0, 0), |f| (f.free_frames(), f.managed_frames()))
}
