//! Shared image frames: the pages of a guest image that only read-only segments cover (text,
//! rodata; `kerncore::image::shared_pages`) are loaded once per image of the boot module and
//! mapped read-only into every domain built from it. Under an emulator that keys translated
//! code by physical address (QEMU TCG), 1024 domains of one image then share one translation
//! instead of each paying for its own in its first slices.
//!
//! The frames are owned by no domain (`kerncore::frame_table::SHARED_OWNER`), so every
//! frame-table rule keyed on ownership refuses them to guests ("Shared image frames" there).
//! Each image here counts its users, the address spaces built from it: the image's
//! allocation reference on its frames goes with the last of them, and a frame is freed once
//! no table maps it either. `share_images=off` on the command line gives every domain its own
//! copy, as before, to measure the difference.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use kerncore::image::{self, SharedPage};
use spin::Mutex;

use crate::arch::addrspace::alloc_filled;
use crate::mm::frame_table::{MACHINE, free_all, table};

/// Images with shared frames at once, at most; a domain of one more image gets its own copy.
pub const MAX_IMAGES: usize = 32;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// One image's shared frames.
struct Image {
    /// Where the image's bytes are (in the boot module, which never changes) and how many.
    key: (usize, usize),
    /// Address spaces built from it that still exist.
    users: u32,
    /// Its shared pages and their frames (physical addresses), in address order.
    pages: Vec<(SharedPage, u64)>,
}

/// The images with shared frames. Its room is reserved with the first domain (Domain0), so
/// that the heap with every guest gone is what it was before the first guest came.
static IMAGES: Mutex<Vec<Image>> = Mutex::new(Vec::new());

/// Sets whether images are shared (the `share_images=` command-line word), at boot.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Release);
}

/// The shared pages of `image` (bytes of the boot module) and their frames, loaded on first
/// use, with one more user counted, which the caller hands to the address space it builds
/// (`AddressSpace::share`, given up when that space is dropped). `None` when sharing is
/// off, the image has no such page, or there is no room or memory: the caller then gives
/// the domain its own copy.
pub fn acquire(image: &[u8]) -> Option<Vec<(SharedPage, u64)>> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    let key = (image.as_ptr() as usize, image.len());
    let mut images = IMAGES.lock();
    let known = images.len();
    images.reserve_exact(MAX_IMAGES.saturating_sub(known));
    if let Some(known) = images.iter_mut().find(|i| i.key == key) {
        known.users += 1;
        return Some(known.pages.clone());
    }
    if images.len() == MAX_IMAGES {
        return None;
    }
    let wanted = image::shared_pages(image).ok()?;
    let mut pages = Vec::with_capacity(wanted.len());
    for page in wanted {
        let mut filled = Ok(());
        let frame = alloc_filled(&MACHINE, |bytes| {
            filled = image::fill_page(image, page.va, bytes);
        });
        let loaded = match frame {
            Some(phys) if filled.is_ok() && table().assign_shared(phys >> 12).is_ok() => Some(phys),
            Some(phys) => {
                free_all([phys >> 12]);
                None
            }
            None => None,
        };
        let Some(phys) = loaded else {
            put_all(&pages);
            return None;
        };
        pages.push((page, phys));
    }
    if pages.is_empty() {
        return None;
    }
    images.push(Image {
        key,
        users: 1,
        pages: pages.clone(),
    });
    Some(pages)
}

/// One user of the image whose shared frames are `frames` fewer (its address space is gone):
/// with the last, the image's references go, freeing every frame no table maps any more.
pub fn release(frames: &[u64]) {
    let mut images = IMAGES.lock();
    let Some(at) = images
        .iter()
        .position(|i| i.pages.first().map(|p| p.1) == frames.first().copied())
    else {
        log::error!("shared frames {frames:#x?} of no image released");
        return;
    };
    images[at].users -= 1;
    if images[at].users == 0 {
        let gone = images.swap_remove(at);
        drop(images);
        put_all(&gone.pages);
    }
}

/// Drops the image's reference on each frame, freeing those nobody maps.
fn put_all(pages: &[(SharedPage, u64)]) {
    let t = table();
    free_all(
        pages
            .iter()
            .map(|p| p.1 >> 12)
            .filter(|&mfn| t.put_page(mfn))
            .collect::<Vec<_>>(),
    );
}
