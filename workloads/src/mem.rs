//! The C memory routines that `core` and `alloc` call, and the unwinder symbols they name.
//!
//! On the host target the compiler expects libc to provide them; a freestanding guest has to.
//! They are written with `rep movsb`/`rep stosb` in assembly so that the compiler cannot turn
//! their own loops back into calls to themselves. Left out of test builds, where libc has them.

use core::arch::asm;

/// # Safety
/// `dst` and `src` are valid for `n` bytes and do not overlap (the C contract of `memcpy`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memcpy's contract; `rep movsb` copies exactly `n` bytes
    // forwards, and the direction flag is clear (the SysV ABI requires it at every call).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `dst` and `src` are valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // `dst` is below `src`, or the ranges do not overlap: a forward copy never reads a
        // byte it has already overwritten.
        // SAFETY: as for memcpy, with the ranges the caller guarantees.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: `dst > src` and they overlap, so `n > 0`; copying backwards from the last
        // byte (direction flag set, then cleared again as the ABI requires) stays within the
        // caller's ranges and never reads a byte already overwritten.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
        dst
    }
}

/// # Safety
/// `dst` is valid for writes of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dst..dst + n` is writable; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") value as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and both ranges are valid for `n` bytes. Volatile reads keep the
        // compiler from recognising this loop as a call to memcmp itself.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Never called: every crate is built with `panic = "abort"`, but the prebuilt `core` still
/// names the unwinder's personality routine, so the linker needs the symbol.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Never called, for the same reason as [`rust_eh_personality`] (the prebuilt `alloc`).
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::hypercall::shutdown(abi::hypercall::shutdown::CRASH)
}
