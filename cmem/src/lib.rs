//! The bodies of the C memory routines (`memcpy`, `memmove`, `memset`, `memcmp`) that `core`
//! and `alloc` call, for the freestanding hypervisor and guests, and the one macro,
//! [`export_c_symbols!`], that exports them under the C names together with the unwinder
//! symbols the prebuilt `core` and `alloc` name. Each binary invokes the macro itself
//! (`kernel/src/arch/x86_64/mod.rs`, `workloads/src/lib.rs`), so that host test builds,
//! where libc and `std` have these symbols, link nothing extra.
//!
//! They move 32 bytes per loop iteration, then 8, then single bytes, in assembly, so the
//! compiler cannot turn their loops back into calls to themselves. Not `rep movsb`: QEMU's
//! TCG, where Domino is developed and tested, runs a `rep` string instruction one element
//! per translated-block execution, which made copying a 176-byte trap frame cost hundreds of
//! block executions on every domain switch. On hardware with fast `rep movsb` (ERMS) these
//! loops are about as fast for the small copies a hypervisor makes.

#![no_std]

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst`, lowest address first.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes. The ranges may overlap only
/// with `dst` below `src` (a forward copy then never reads a byte it already overwrote: each
/// chunk is read whole before it is written, and writes stay below the next read).
#[inline(always)]
pub unsafe fn copy_forward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller guarantees both ranges; the loops touch exactly `n` bytes of each,
    // and use only the registers declared below.
    unsafe {
        asm!(
            "cmp rcx, 32",
            "jb 3f",
            "2:",
            "mov r8, [rsi]",
            "mov r9, [rsi + 8]",
            "mov r10, [rsi + 16]",
            "mov r11, [rsi + 24]",
            "mov [rdi], r8",
            "mov [rdi + 8], r9",
            "mov [rdi + 16], r10",
            "mov [rdi + 24], r11",
            "add rsi, 32",
            "add rdi, 32",
            "sub rcx, 32",
            "cmp rcx, 32",
            "jae 2b",
            "3:",
            "cmp rcx, 8",
            "jb 5f",
            "4:",
            "mov r8, [rsi]",
            "mov [rdi], r8",
            "add rsi, 8",
            "add rdi, 8",
            "sub rcx, 8",
            "cmp rcx, 8",
            "jae 4b",
            "5:",
            "test rcx, rcx",
            "jz 7f",
            "6:",
            "mov r8b, [rsi]",
            "mov [rdi], r8b",
            "inc rsi",
            "inc rdi",
            "dec rcx",
            "jnz 6b",
            "7:",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            options(nostack),
        );
    }
}

/// Copies `n` bytes from `src` to `dst`, highest address first.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes. The ranges may overlap only
/// with `dst` above `src` (a backward copy then never reads a byte it already overwrote).
#[inline(always)]
pub unsafe fn copy_backward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller guarantees both ranges; starting one past the end of each, the
    // loops step down over exactly `n` bytes.
    unsafe {
        asm!(
            "add rsi, rcx",
            "add rdi, rcx",
            "cmp rcx, 8",
            "jb 3f",
            "2:",
            "sub rsi, 8",
            "sub rdi, 8",
            "mov r8, [rsi]",
            "mov [rdi], r8",
            "sub rcx, 8",
            "cmp rcx, 8",
            "jae 2b",
            "3:",
            "test rcx, rcx",
            "jz 5f",
            "4:",
            "dec rsi",
            "dec rdi",
            "mov r8b, [rsi]",
            "mov [rdi], r8b",
            "dec rcx",
            "jnz 4b",
            "5:",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            out("r8") _,
            options(nostack),
        );
    }
}

/// Copies `n` bytes from `src` to `dst`, which may overlap in any way (`memmove`).
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes.
#[inline(always)]
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // `dst` is below `src`, or the ranges do not overlap.
        // SAFETY: the caller's ranges, in the case `copy_forward` allows.
        unsafe { copy_forward(dst, src, n) }
    } else {
        // SAFETY: `dst` is above `src` and they overlap: the case `copy_backward` allows.
        unsafe { copy_backward(dst, src, n) }
    }
}

/// Sets `n` bytes at `dst` to `value`.
///
/// # Safety
/// `dst` is valid for writes of `n` bytes.
#[inline(always)]
pub unsafe fn fill(dst: *mut u8, value: u8, n: usize) {
    let pattern = u64::from(value) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees the range; the loops write exactly `n` bytes of it.
    unsafe {
        asm!(
            "cmp rcx, 32",
            "jb 3f",
            "2:",
            "mov [rdi], rax",
            "mov [rdi + 8], rax",
            "mov [rdi + 16], rax",
            "mov [rdi + 24], rax",
            "add rdi, 32",
            "sub rcx, 32",
            "cmp rcx, 32",
            "jae 2b",
            "3:",
            "cmp rcx, 8",
            "jb 5f",
            "4:",
            "mov [rdi], rax",
            "add rdi, 8",
            "sub rcx, 8",
            "cmp rcx, 8",
            "jae 4b",
            "5:",
            "test rcx, rcx",
            "jz 7f",
            "6:",
            "mov [rdi], al",
            "inc rdi",
            "dec rcx",
            "jnz 6b",
            "7:",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("rax") pattern,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer with a distinct byte at every position.
    fn pattern(len: usize) -> [u8; 256] {
        core::array::from_fn(|i| if i < len { (i * 7 + 3) as u8 } else { 0 })
    }

    #[test]
    fn forward_copies_every_length_and_alignment_exactly() {
        for len in 0..100 {
            for (so, d_o) in [(0, 0), (1, 0), (0, 3), (5, 7)] {
                let src = pattern(200);
                let mut dst = [0xEEu8; 256];
                // SAFETY: offsets + len stay within both 256-byte buffers.
                unsafe { copy_forward(dst.as_mut_ptr().add(d_o), src.as_ptr().add(so), len) };
                assert_eq!(&dst[d_o..d_o + len], &src[so..so + len], "len {len}");
                assert!(
                    dst[..d_o].iter().all(|&b| b == 0xEE),
                    "wrote before, len {len}"
                );
                assert!(
                    dst[d_o + len..].iter().all(|&b| b == 0xEE),
                    "wrote past, len {len}"
                );
            }
        }
    }

    #[test]
    fn copy_handles_overlap_both_ways() {
        for len in 0..100 {
            for shift in [1usize, 3, 8, 9, 31, 32, 33] {
                let orig = pattern(256);
                // dst above src
                let mut buf = orig;
                // SAFETY: shift + len <= 133 < 256.
                unsafe { copy(buf.as_mut_ptr().add(shift), buf.as_ptr(), len) };
                assert_eq!(
                    &buf[shift..shift + len],
                    &orig[..len],
                    "up {shift} len {len}"
                );
                assert_eq!(
                    &buf[..shift],
                    &orig[..shift],
                    "before, up {shift} len {len}"
                );
                assert_eq!(
                    &buf[shift + len..],
                    &orig[shift + len..],
                    "past, up {shift}"
                );
                // dst below src
                let mut buf = orig;
                // SAFETY: as above.
                unsafe { copy(buf.as_mut_ptr(), buf.as_ptr().add(shift), len) };
                assert_eq!(
                    &buf[..len],
                    &orig[shift..shift + len],
                    "down {shift} len {len}"
                );
                assert_eq!(&buf[len..], &orig[len..], "past, down {shift} len {len}");
            }
        }
    }

    #[test]
    fn fill_sets_exactly_n_bytes() {
        for len in 0..100 {
            for off in [0usize, 1, 5] {
                let mut buf = [0x11u8; 256];
                // SAFETY: off + len < 256.
                unsafe { fill(buf.as_mut_ptr().add(off), 0xA5, len) };
                assert!(buf[off..off + len].iter().all(|&b| b == 0xA5), "len {len}");
                assert!(buf[..off].iter().all(|&b| b == 0x11));
                assert!(
                    buf[off + len..].iter().all(|&b| b == 0x11),
                    "past, len {len}"
                );
            }
        }
    }
}

/// Compares `n` bytes of `a` and `b` as C's `memcmp` does: the difference of the first
/// differing bytes, or 0.
///
/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
#[inline(always)]
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
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

/// Exports `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` under their C names, built on
/// this crate's loops, and the two unwinder symbols the prebuilt `core` and `alloc` name
/// though every crate here is built with `panic = "abort"` (`rust_eh_personality`,
/// `_Unwind_Resume`: never called; the second traps with `ud2` if it ever is, which kills a
/// guest and stops the hypervisor with a report). Invoke it once in a freestanding binary,
/// outside test builds.
#[macro_export]
macro_rules! export_c_symbols {
    () => {
        /// # Safety
        /// `dst` and `src` are valid for `n` bytes and do not overlap (C's `memcpy`).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
            // SAFETY: the C contract of memcpy is `copy_forward`'s, and more.
            unsafe { $crate::copy_forward(dst, src, n) };
            dst
        }

        /// # Safety
        /// `dst` and `src` are valid for `n` bytes; they may overlap (C's `memmove`).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
            // SAFETY: the C contract of memmove is `copy`'s.
            unsafe { $crate::copy(dst, src, n) };
            dst
        }

        /// # Safety
        /// `dst` is valid for writes of `n` bytes (C's `memset`).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
            // SAFETY: the C contract of memset is `fill`'s (C passes the byte as an int).
            unsafe { $crate::fill(dst, value as u8, n) };
            dst
        }

        /// # Safety
        /// `a` and `b` are valid for reads of `n` bytes (C's `memcmp`).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
            // SAFETY: the C contract of memcmp is `compare`'s.
            unsafe { $crate::compare(a, b, n) }
        }

        /// # Safety
        /// `a` and `b` are valid for reads of `n` bytes (C's `bcmp`).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
            // SAFETY: the C contract of bcmp is memcmp's, with less said about the result.
            unsafe { $crate::compare(a, b, n) }
        }

        /// Never called: the prebuilt `core` names the unwinder's personality routine.
        #[unsafe(no_mangle)]
        pub extern "C" fn rust_eh_personality() {}

        /// Never called, for the same reason (the prebuilt `alloc`); traps if it ever is.
        #[unsafe(no_mangle)]
        pub extern "C" fn _Unwind_Resume() -> ! {
            // SAFETY: `ud2` only raises an invalid-opcode exception.
            unsafe { core::arch::asm!("ud2", options(noreturn)) }
        }
    };
}

#[cfg(test)]
mod compare_tests {
    use super::compare;

    #[test]
    fn compare_is_memcmp() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"", b""),
            (b"abc", b"abc"),
            (b"abc", b"abd"),
            (b"abd", b"abc"),
            (b"\x00\xff", b"\x00\x01"),
        ];
        for (a, b) in cases {
            // SAFETY: both slices are valid for their common length.
            let got = unsafe { compare(a.as_ptr(), b.as_ptr(), a.len()) };
            let want = a
                .iter()
                .zip(b)
                .find(|(x, y)| x != y)
                .map_or(0, |(x, y)| i32::from(*x) - i32::from(*y));
            assert_eq!(got, want, "{a:?} {b:?}");
        }
    }
}
