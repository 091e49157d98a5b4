//! Guest memory, the one way the hypervisor touches it: copies to and from the current
//! guest's half of the address space. Every guest pointer is checked to lie below
//! `abi::layout::USER_LIMIT` before it is touched, and is touched only through
//! `arch::entry::copy_guest`, which survives an unmapped page: a wild pointer gets
//! `Errno::Fault`, never a hypervisor crash. A leaf: it uses only `arch` and `abi`.

use abi::error::Errno;
use abi::layout::USER_LIMIT;

use crate::arch::entry::copy_guest;

/// Whether `[addr, addr + len)` lies within the guest's half.
fn guest_range_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= USER_LIMIT)
}

/// Copies `dst.len()` bytes from guest address `src`.
pub fn copy_from_guest(dst: &mut [u8], src: u64) -> Result<(), Errno> {
    if !guest_range_ok(src, dst.len() as u64) {
        return Err(Errno::Fault);
    }
    // SAFETY: `dst` is hypervisor memory of the right length; `src` lies in the guest half
    // of the address space loaded now (the caller's), and faults there are recovered.
    unsafe { copy_guest(dst.as_mut_ptr(), src as *const u8, dst.len()) }.map_err(|()| Errno::Fault)
}

/// Copies `src` to guest address `dst`.
pub fn copy_to_guest(dst: u64, src: &[u8]) -> Result<(), Errno> {
    if !guest_range_ok(dst, src.len() as u64) {
        return Err(Errno::Fault);
    }
    // SAFETY: as in `copy_from_guest`, the other way round. Writes to read-only guest pages
    // fault (CR0.WP is set) and are recovered too.
    unsafe { copy_guest(dst as *mut u8, src.as_ptr(), src.len()) }.map_err(|()| Errno::Fault)
}
