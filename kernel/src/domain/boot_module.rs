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

/// Whether `bytes` lie in the module (which never changes while the hypervisor runs): an
/// image whose read-only pages may be loaded once and shared (`crate::mm::shared_image`).
pub fn holds(bytes: &[u8]) -> bool {
    MODULE.get().is_some_and(|m| {
        let (start, end) = (m.as_ptr() as usize, m.as_ptr() as usize + m.len());
        let at = bytes.as_ptr() as usize;
        start <= at && at + bytes.len() <= end
    })
}
