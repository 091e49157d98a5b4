//! Guest memory, the one way the hypervisor touches it: copies to and from the current
//! guest's half of the address space. Every guest pointer is checked to lie below
//! `abi::layout::USER_LIMIT` before it is touched, and is touched only through
//! [`super::entry::copy_guest`], which survives an unmapped page: a wild pointer gets
//! `Errno::Fault`, never a hypervisor crash.
//!
//! Values go to and from guests as bytes: [`Plain`] marks the types whose bytes may be
//! copied both ways (no padding, no invalid bit pattern): `copy_from_guest(v.as_bytes_mut(),
//! at)` reads one, [`copy_value_to_guest`] writes one.

use abi::error::Errno;
use abi::layout::USER_LIMIT;
use abi::shared::{SharedInfo, UpcallFrame};

use super::entry::copy_guest;

/// Whether `[addr, addr + len)` lies within the guest's half.
fn guest_range_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= USER_LIMIT)
}

/// Copies `dst.len()` bytes from guest address `src`.
pub fn copy_from_guest(dst: &mut [u8], src: u64) -> Result<(), Errno> {
    // SAFETY: `dst` is hypervisor memory of the right length, borrowed mutably.
    unsafe { copy_from_guest_raw(dst.as_mut_ptr(), dst.len(), src) }
}

/// Copies `src` to guest address `dst`.
pub fn copy_to_guest(dst: u64, src: &[u8]) -> Result<(), Errno> {
    // SAFETY: `src` is hypervisor memory of the right length, borrowed.
    unsafe { copy_to_guest_raw(dst, src.as_ptr(), src.len()) }
}

/// Copies `len` bytes from guest address `src` to hypervisor memory at `dst`.
///
/// # Safety
/// `dst` is valid for writes of `len` bytes, and nothing else writes them through a Rust
/// reference meanwhile (another CPU or a guest may write them too, as they may a
/// `FrameAccess` frame: the copy is plain byte moves, as a device's).
pub(super) unsafe fn copy_from_guest_raw(dst: *mut u8, len: usize, src: u64) -> Result<(), Errno> {
    if !guest_range_ok(src, len as u64) {
        return Err(Errno::Fault);
    }
    // SAFETY: `dst` per the contract; `src` lies in the guest half of the address space
    // loaded now (the caller's), which holds no hypervisor object, and faults there are
    // recovered by the copy's fix-up.
    unsafe { copy_guest(dst, src as *const u8, len) }.map_err(|()| Errno::Fault)
}

/// Copies `len` bytes of hypervisor memory at `src` to guest address `dst`.
///
/// # Safety
/// `src` is valid for reads of `len` bytes.
pub(super) unsafe fn copy_to_guest_raw(dst: u64, src: *const u8, len: usize) -> Result<(), Errno> {
    if !guest_range_ok(dst, len as u64) {
        return Err(Errno::Fault);
    }
    // SAFETY: `src` per the contract; `dst` as in `copy_from_guest_raw`, the other way
    // round. Writes to read-only guest pages fault (CR0.WP is set) and are recovered too.
    unsafe { copy_guest(dst as *mut u8, src, len) }.map_err(|()| Errno::Fault)
}

/// Copies `value`'s bytes to guest address `dst`.
pub fn copy_value_to_guest<T: Plain>(dst: u64, value: &T) -> Result<(), Errno> {
    copy_to_guest(dst, value.as_bytes())
}

/// A type whose bytes may be shared with a guest both ways: its value can be viewed as
/// bytes, and any bytes are a value.
///
/// # Safety
/// Implement only for `#[repr(C)]` types with no padding (every byte of a value is
/// initialised, so reading them is defined and leaks nothing) and no invalid bit pattern
/// (integers and arrays of them: writing any bytes leaves a valid value).
pub unsafe trait Plain: Copy {
    /// The value's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Plain`: every byte of the value is initialised; the slice covers
        // exactly the value, borrowed for its lifetime.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// The value's bytes, to be overwritten with any bytes.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and any bytes written leave a valid value (`Plain`); the
        // slice borrows the value mutably, so nothing else sees it meanwhile.
        unsafe {
            core::slice::from_raw_parts_mut((self as *mut Self).cast::<u8>(), size_of::<Self>())
        }
    }
}

// SAFETY: `#[repr(C)]`, twelve `u64`s: no padding (the size check below), any bits valid.
unsafe impl Plain for UpcallFrame {}
const _: () = assert!(size_of::<UpcallFrame>() == 12 * 8);

// SAFETY: `#[repr(C)]`, made of `u32`, `u64` and byte arrays, each at an offset that is a
// multiple of its alignment (`TimeInfo` has its own explicit `pad`), so no padding: the size
// is the sum of the fields' sizes, checked below. Any bits are valid for every field.
unsafe impl Plain for SharedInfo {}
const _: () = {
    use abi::shared::{Arg, MAX_ARGS, MAX_VCPUS, MemoryInfo, NAME_BYTES, TimeInfo, VcpuTime};
    assert!(size_of::<TimeInfo>() == 4 + 4 + 3 * 8);
    assert!(size_of::<Arg>() == 16 + 8);
    assert!(size_of::<VcpuTime>() == 4 + 4 + 2 * 8);
    assert!(size_of::<MemoryInfo>() == 3 * 8 + abi::shared::PT_WINDOW_SLOTS * 8);
    assert!(
        size_of::<SharedInfo>()
            == 4 + 4
                + NAME_BYTES
                + size_of::<TimeInfo>()
                + MAX_ARGS * size_of::<Arg>()
                + 8
                + 8
                + MAX_VCPUS * size_of::<VcpuTime>()
                + size_of::<MemoryInfo>()
    );
};
