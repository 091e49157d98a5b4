//! The boot module: an archive of guest images and the plan, left in memory by the boot
//! loader and reserved from the frame allocator (`arch::bootmem` hands over its bytes).

use spin::Once;

static MODULE: Once<&'static [u8]> = Once::new();

/// Records the module's bytes. Called once at boot.
pub fn init(bytes: &'static [u8]) {
    MODULE.call_once(|| bytes);
}

/// A file of the archive, if the module exists and holds it.
pub fn file(name: &str) -> Option<&'static [u8]> {
    kerncore::image::find(MODULE.get()?, name).ok()
}
