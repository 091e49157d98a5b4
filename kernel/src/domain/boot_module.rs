//! The boot module: an archive of guest images and the experiment plan, left in memory by
//! the boot loader and reserved from the frame allocator.

use spin::Once;

use crate::arch::paging::phys_to_virt;
use kerncore::memmap::Range;

static MODULE: Once<&'static [u8]> = Once::new();

/// Records where the module is. Called once at boot.
pub fn init(range: Range) {
    // SAFETY: the loader placed the module at `range`; memory init reserved it, so it stays
    // untouched for the life of the machine, and it is direct-mapped.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            phys_to_virt(range.start).as_ptr::<u8>(),
            range.len() as usize,
        )
    };
    MODULE.call_once(|| bytes);
}

/// A file of the archive, if the module exists and holds it.
pub fn file(name: &str) -> Option<&'static [u8]> {
    kerncore::image::find(MODULE.get()?, name).ok()
}
