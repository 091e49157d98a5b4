//! Checking that a program's registers survive what happens behind its back (preemption,
//! a switch to another domain, an event upcall): fill them with a pattern, spin, look.

use core::arch::asm;

/// Fills RDX, RSI, R8-R11 and XMM0-15 with `pattern`, spins `spins` times, and returns how
/// many of them no longer hold it.
pub fn fill_spin_check(pattern: u64, spins: u64) -> u64 {
    let bad: u64;
    // SAFETY: touches only registers given to or clobbered by the asm; no memory.
    unsafe {
        asm!(
            "movq xmm0, {p}",
            "punpcklqdq xmm0, xmm0",
            "movdqa xmm1, xmm0", "movdqa xmm2, xmm0", "movdqa xmm3, xmm0",
            "movdqa xmm4, xmm0", "movdqa xmm5, xmm0", "movdqa xmm6, xmm0",
            "movdqa xmm7, xmm0", "movdqa xmm8, xmm0", "movdqa xmm9, xmm0",
            "movdqa xmm10, xmm0", "movdqa xmm11, xmm0", "movdqa xmm12, xmm0",
            "movdqa xmm13, xmm0", "movdqa xmm14, xmm0", "movdqa xmm15, xmm0",
            "mov rdx, {p}", "mov rsi, {p}", "mov r8, {p}", "mov r9, {p}",
            "mov r10, {p}", "mov r11, {p}",
            "2:",
            "dec {n}",
            "jnz 2b",
            "xor {bad:e}, {bad:e}",
            ".irp r, rdx,rsi,r8,r9,r10,r11",
            "xor {b:e}, {b:e}",
            "cmp \\r, {p}",
            "setne {b:l}",
            "add {bad}, {b}",
            ".endr",
            ".irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "movq {t}, xmm\\r",
            "xor {b:e}, {b:e}",
            "cmp {t}, {p}",
            "setne {b:l}",
            "add {bad}, {b}",
            "pshufd xmm\\r, xmm\\r, 0xee",
            "movq {t}, xmm\\r",
            "xor {b:e}, {b:e}",
            "cmp {t}, {p}",
            "setne {b:l}",
            "add {bad}, {b}",
            ".endr",
            p = in(reg) pattern,
            n = inout(reg) spins.max(1) => _,
            bad = out(reg) bad,
            t = out(reg) _,
            b = out(reg) _,
            out("rdx") _, out("rsi") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
    bad
}
