//! The XTF-style hostile suite's side of a guest: outcomes, checks, and the page-table
//! building that several cases need.
//!
//! Each case of the suite (`hostile-ring`, `hostile-pt`, `hostile-sched`, `hostile-pair`,
//! `hostile-regs`) ends in one of XTF's four outcomes, printed as one console line
//! `xtf: <case>: <OUTCOME>: <detail>` and reflected in how the domain ends:
//! - `SUCCESS`: the hypervisor did the right thing; the domain shuts down with 0 (`ok`), or,
//!   for a case whose right ending is being killed, it is killed (then nothing is printed
//!   after the `expecting to be killed` line: the kill is the outcome);
//! - `FAILURE`: it did not (a forbidden act survived, a check went wrong): shutdown code
//!   [`FAILURE`], which Domain0 reports as `killed: crashed (shutdown code 2)`;
//! - `ERROR`: the case could not be set up (a hypercall it relies on failed): [`ERROR`];
//! - `SKIP`: the CPU lacks what the case tests (UMIP, say): shutdown 0, and the line says so.
//!
//! `scripts/runner/src/xtf.rs` holds what each case must end as, and reads these lines.

use abi::error::Errno;
use abi::mm::{MmuUpdate, pte};

use crate::{hypercall, pagetable};

/// Shutdown code of a case whose check failed (the same as `hostile::SURVIVED`).
pub const FAILURE: u64 = crate::hostile::SURVIVED;
/// Shutdown code of a case that could not be set up.
pub const ERROR: u64 = 4;

/// A console line formatted without an allocator (the guests have no heap), cut at
/// [`crate::console::LINE_BYTES`].
pub struct Line {
    buf: [u8; crate::console::LINE_BYTES],
    len: usize,
}

impl Line {
    pub fn of(args: core::fmt::Arguments<'_>) -> Line {
        let mut l = Line {
            buf: [0; crate::console::LINE_BYTES],
            len: 0,
        };
        let _ = core::fmt::Write::write_fmt(&mut l, args);
        l
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl core::ops::Deref for Line {
    type Target = str;
    fn deref(&self) -> &str {
        // Cut at a character boundary if the line was cut.
        let mut n = self.len;
        while n > 0 && core::str::from_utf8(&self.buf[..n]).is_err() {
            n -= 1;
        }
        core::str::from_utf8(&self.buf[..n]).unwrap_or("")
    }
}

/// Writes an outcome line so that it gets out: a line the console quota refuses (`Again`,
/// after a case that printed a lot) is retried for up to 2 s. The outcome is the whole point
/// of a case; losing it would turn a SUCCESS into "never reported".
fn report(args: core::fmt::Arguments<'_>) {
    let mut line = Line::of(args);
    if line.len == line.buf.len() {
        line.buf[line.len - 1] = b'\n';
    } else {
        line.buf[line.len] = b'\n';
        line.len += 1;
    }
    for _ in 0..40 {
        match hypercall::console_write(&line.buf[..line.len]) {
            Err(Errno::Again) => crate::time::sleep_ns(50_000_000),
            _ => return,
        }
    }
}

/// Prints `SUCCESS` for `case`; the shutdown code to return (0).
pub fn success(case: &str, detail: core::fmt::Arguments<'_>) -> u64 {
    report(format_args!("xtf: {case}: SUCCESS: {detail}"));
    0
}

/// Prints `FAILURE` for `case`; the shutdown code to return.
pub fn failure(case: &str, detail: core::fmt::Arguments<'_>) -> u64 {
    report(format_args!("xtf: {case}: FAILURE: {detail}"));
    FAILURE
}

/// Prints `ERROR` for `case`; the shutdown code to return.
pub fn error(case: &str, detail: core::fmt::Arguments<'_>) -> u64 {
    report(format_args!("xtf: {case}: ERROR: {detail}"));
    ERROR
}

/// Prints `SKIP` for `case`; the shutdown code to return (0).
pub fn skip(case: &str, detail: core::fmt::Arguments<'_>) -> u64 {
    report(format_args!("xtf: {case}: SKIP: {detail}"));
    0
}

/// Announces that the next act must get the domain killed (the kill is the outcome).
pub fn expect_killed(case: &str, by: &str) {
    report(format_args!("xtf: {case}: expecting to be killed: {by}"));
}

/// The act that should have killed the domain did not: `FAILURE`.
pub fn survived(case: &str, what: core::fmt::Arguments<'_>) -> u64 {
    failure(case, format_args!("survived {what}"))
}

/// A case's checks: each prints `ok:` or `WRONG:`; [`Checks::verdict`] turns them into the
/// outcome.
pub struct Checks {
    case: &'static str,
    wrong: u32,
    done: u32,
}

impl Checks {
    pub fn new(case: &'static str) -> Checks {
        Checks {
            case,
            wrong: 0,
            done: 0,
        }
    }

    /// The case the checks are of.
    pub fn case(&self) -> &'static str {
        self.case
    }

    /// Records a condition; returns it.
    pub fn that(&mut self, what: core::fmt::Arguments<'_>, ok: bool) -> bool {
        self.done += 1;
        if !ok {
            self.wrong += 1;
            report(format_args!("WRONG: {what}"));
        }
        ok
    }

    /// Records a condition (printed only when it does not hold: the console has a quota,
    /// and a case's outcome line must not be the one it refuses).
    pub fn say(&mut self, what: core::fmt::Arguments<'_>, ok: bool) -> bool {
        self.that(what, ok)
    }

    /// Records a result that must equal `want`.
    pub fn eq<T: PartialEq + core::fmt::Debug>(&mut self, what: &str, got: T, want: T) -> bool {
        let ok = got == want;
        self.say(format_args!("{what}: got {got:?}, want {want:?}"), ok)
    }

    /// Records a result that must be one of `allowed`.
    pub fn one_of<T: PartialEq + core::fmt::Debug>(
        &mut self,
        what: &str,
        got: T,
        allowed: &[T],
    ) -> bool {
        let ok = allowed.contains(&got);
        self.say(
            format_args!("{what}: got {got:?}, want one of {allowed:?}"),
            ok,
        )
    }

    /// How many checks went wrong so far.
    pub fn wrong(&self) -> u32 {
        self.wrong
    }

    /// `SUCCESS` if every check held, `FAILURE` otherwise; the shutdown code.
    pub fn verdict(&self) -> u64 {
        if self.wrong == 0 {
            success(self.case, format_args!("{} checks held", self.done))
        } else {
            failure(
                self.case,
                format_args!("{} of {} checks went wrong", self.wrong, self.done),
            )
        }
    }
}

/// The index of this domain in its group: the decimal digits its name ends with (`int17`
/// is 17), which lets a group of identical domains cover a range of cases.
pub fn index_in_group() -> u64 {
    let name = crate::shared::name().as_bytes();
    let digits = name.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    name[name.len() - digits..]
        .iter()
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'))
}

/// One `mmu_update` of the entry at machine address `ptr`.
pub fn update(ptr: u64, val: u64) -> Result<u64, Errno> {
    // SAFETY: callers only write entries of tables they built for the case, or entries the
    // hypervisor must refuse; no memory Rust uses is remapped.
    unsafe { hypercall::mmu_update(&[MmuUpdate { ptr, val }]) }.map(|n| n as u64)
}

/// Takes one fresh (zeroed) frame of the domain's reservation.
pub fn take_frame() -> Result<u64, Errno> {
    let mut f = [0u64; 1];
    match hypercall::increase_reservation(&mut f)? {
        1 => Ok(f[0]),
        _ => Err(Errno::NoMem),
    }
}

/// Where a case's tables live: the machine address of a table built by [`map_page`], by
/// level and index path; the page-table window shows only the tables the hypervisor built,
/// so the cases remember their own.
#[derive(Clone, Copy, Debug, Default)]
pub struct Built {
    /// Machine address of the level-3, level-2 and level-1 tables on the way to the page
    /// (index 0 = level 1), whether found or built.
    pub tables: [u64; 3],
}

/// The machine address of the table an entry points at, or 0 if the entry is absent.
fn next_table(entry: u64) -> u64 {
    if entry & pte::PRESENT != 0 {
        entry & pte::ADDRESS
    } else {
        0
    }
}

/// Maps frame `mfn` at `va` (user, writable and executable as asked), building the missing
/// tables on the way from fresh frames. Tables the hypervisor built are found through the
/// page-table window; tables built here (not in the window) are known only by the caller,
/// so `va` must not need a table built by an earlier call unless it is passed in `known`.
pub fn map_page(
    va: u64,
    mfn: u64,
    writable: bool,
    exec: bool,
    known: Option<Built>,
) -> Result<Built, Errno> {
    let link = pte::PRESENT | pte::USER | pte::WRITABLE;
    let mut built = known.unwrap_or_default();
    let mut table = pagetable::root();
    for level in (2..=4u32).rev() {
        let index = pagetable::index_at(va, level) as u64;
        let slot = (level - 2) as usize; // the table this entry points at: level - 1
        let mut next = pagetable::read_entry(table, index as usize)
            .map(next_table)
            .unwrap_or(0);
        if next == 0 && built.tables[slot] != 0 {
            next = built.tables[slot];
        }
        if next == 0 {
            let t = take_frame()?;
            update(table + index * 8, (t << 12) | link)?;
            next = t << 12;
        }
        built.tables[slot] = next;
        table = next;
    }
    let leaf = (mfn << 12)
        | pte::PRESENT
        | pte::USER
        | if writable { pte::WRITABLE } else { 0 }
        | if exec { 0 } else { pte::NO_EXECUTE };
    update(table + pagetable::index_at(va, 1) as u64 * 8, leaf)?;
    Ok(built)
}

/// Writes `bytes` at offset `offset` of frame `mfn`, through a temporary writable mapping
/// at `abi::layout::MAP_AREA` (its first page, which must be free).
pub fn fill_frame(mfn: u64, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
    let va = abi::layout::MAP_AREA;
    // SAFETY: the first page of the map area is used by nothing else in these cases.
    unsafe { hypercall::update_va_mapping(va, pagetable::leaf(mfn, true)) }?;
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: the page was just mapped writable; offset + i < 4096 is the caller's.
        unsafe { ((va as usize + offset + i) as *mut u8).write_volatile(*b) };
    }
    // SAFETY: nothing refers to the page any more.
    unsafe { hypercall::update_va_mapping(va, 0) }?;
    Ok(())
}

/// CPUID leaf 7, sub-leaf 0: (EBX, ECX).
pub fn cpuid7() -> (u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(7, 0);
    (r.ebx, r.ecx)
}

/// Whether the CPU has UMIP (CPUID.7.0:ECX bit 2).
pub fn has_umip() -> bool {
    cpuid7().1 & (1 << 2) != 0
}

/// Whether the CPU has SMEP (CPUID.7.0:EBX bit 7).
pub fn has_smep() -> bool {
    cpuid7().0 & (1 << 7) != 0
}

/// Whether the CPU has SMAP (CPUID.7.0:EBX bit 20).
pub fn has_smap() -> bool {
    cpuid7().0 & (1 << 20) != 0
}

/// RFLAGS now.
pub fn rflags() -> u64 {
    let f: u64;
    // SAFETY: pushes and pops one word of the stack; no other effect.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) f, options(preserves_flags)) };
    f
}
