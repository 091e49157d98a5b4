//! The C memory routines that `core` and `alloc` call.
//!
//! On the host target the compiler expects libc to provide them; a freestanding image has
//! to. The copy and fill loops are the `cmem` crate's (see why there).

/// # Safety
/// `dst` and `src` are valid for `n` bytes and do not overlap (the C contract of `memcpy`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the C contract of memcpy is `copy_forward`'s, and more.
    unsafe { cmem::copy_forward(dst, src, n) };
    dst
}

/// # Safety
/// `dst` and `src` are valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the C contract of memmove is `copy`'s.
    unsafe { cmem::copy(dst, src, n) };
    dst
}

/// # Safety
/// `dst` is valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the C contract of memset is `fill`'s (C passes the byte as an int).
    unsafe { cmem::fill(dst, value as u8, n) };
    dst
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and both ranges are valid for `n` bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Never called: every crate is built with `panic = "abort"`, but the prebuilt `core` still
/// names the unwinder's personality routine, so the linker needs the symbol.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Never called, for the same reason as [`rust_eh_personality`] (the prebuilt `alloc`).
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}
