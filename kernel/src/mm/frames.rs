//! Physical memory at boot: the usable map, the kernel heap and the frame allocator.
//!
//! What the image, the boot information, the boot module and the real-mode area (AP
//! trampoline) occupy is taken out of the firmware's map; the heap and the frame bitmap are
//! carved from what remains, and every other frame goes to the allocator, which counts them
//! so that tests can check that nothing leaks.

use kerncore::frame_alloc::{FrameAllocator, FreeError};
use kerncore::memmap::{PAGE_SIZE, UsableMap};
use linked_list_allocator::LockedHeap;
use spin::Mutex;

use crate::arch::paging::{extend_direct_map, phys_to_virt};
use crate::bootinfo::BootInfo;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

unsafe extern "C" {
    static __image_phys_start: u8;
    static __image_phys_end: u8;
}

/// The real-mode area below 1 MiB is never handed out: the AP trampoline lives there.
const LOW_MEMORY_END: u64 = 0x10_0000;

/// What memory set-up found, for the boot log.
pub struct MemoryReport {
    pub usable_bytes: u64,
    pub heap_bytes: u64,
    pub frames: usize,
}

/// Builds the heap and the frame allocator. Called once, on the bootstrap CPU.
pub fn init(info: &BootInfo) -> MemoryReport {
    let mut map = UsableMap::from_regions(info.regions.iter().copied());
    let usable_bytes = map.total();
    map.reserve(0, LOW_MEMORY_END);
    map.reserve(
        &raw const __image_phys_start as u64,
        &raw const __image_phys_end as u64,
    );
    map.reserve(info.info.start, info.info.end);
    if let Some(module) = info.module {
        map.reserve(module.start, module.end);
    }

    let end = map.end();
    let mapped = extend_direct_map(end, || {
        let pd = map.take(PAGE_SIZE, PAGE_SIZE, LOW_MEMORY_END)?;
        // SAFETY: the frame was just taken out of the usable map and is direct-mapped
        // (page directories are taken below 4 GiB first, since `take` is lowest-first).
        unsafe {
            phys_to_virt(pd)
                .as_mut_ptr::<u8>()
                .write_bytes(0, PAGE_SIZE as usize)
        };
        Some(pd)
    });
    if mapped < end {
        log::warn!(
            "only the first {} GiB of memory are mapped; {} MiB are unused",
            mapped >> 30,
            (end - mapped) >> 20
        );
        map.reserve(mapped, end);
    }

    // A quarter of memory for the heap (per-CPU stacks and tables, domain objects), within
    // bounds that suit both a 64 MiB test machine and a large host; the spec validator's
    // memory model uses the same function.
    let heap_bytes = sched::limits::heap_bytes(usable_bytes);
    let heap = map
        .take(heap_bytes, 2 << 20, LOW_MEMORY_END)
        .expect("no room for the kernel heap");
    // SAFETY: the heap range was taken out of the usable map, is direct-mapped and is handed
    // to the allocator once.
    unsafe {
        HEAP.lock()
            .init(phys_to_virt(heap).as_mut_ptr(), heap_bytes as usize)
    };

    let words = FrameAllocator::bitmap_words(map.end());
    let bitmap_phys = map
        .take((words * 8) as u64, PAGE_SIZE, LOW_MEMORY_END)
        .expect("no room for the frame bitmap");
    // SAFETY: the bitmap range was taken out of the usable map, is direct-mapped, 8-byte
    // aligned and used only through this slice from now on.
    let bitmap = unsafe {
        core::slice::from_raw_parts_mut(phys_to_virt(bitmap_phys).as_mut_ptr::<u64>(), words)
    };
    crate::mm::frame_table::init(map.end());
    let mut frames = FrameAllocator::new(bitmap);
    for range in map.ranges() {
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
