//! The logic of the hypercall fuzzer (the `fuzz` guest, `src/bin/fuzz.rs`), kept apart from
//! the assembly that issues the calls so that it is tested on the host.
//!
//! In the manner of Hyper-Cube (Schumilo et al., NDSS 2020), the guest is a small, fast
//! interpreter of random programs: a seeded generator ([`generator`]) turns a [`Rng`] stream into
//! hypercalls over the whole ABI of `abi::hypercall` (every number, every operation, numbers
//! and operations that do not exist), with arguments drawn from edge values (0, 1, -1,
//! `u64::MAX`, values just past each limit, values above 32 bits that would alias a valid one
//! if truncated), pointers of every class (its own buffers, read-only pages, unmapped pages,
//! the hypervisor's half, non-canonical addresses, ranges that wrap or straddle the end of
//! the lower half) and the objects it holds (ports, grant references, handles, frames), which
//! the sequences create, use and destroy, racing between vCPUs. Each call enters with random
//! register and RFLAGS state ([`Entry`]).
//!
//! Oracles, each a property of the ABI rather than of today's implementation:
//! - every call's result is one its [`Oracle`] allows: a success only where the ABI can give
//!   one, in range (ports, references, counts), and otherwise one of the errors its
//!   operation documents; a wild pointer never succeeds; an error code the ABI does not
//!   have is always wrong;
//! - the registers the ABI preserves come back unchanged; the others hold either what the
//!   guest put there or zero (anything else is the hypervisor's data, leaking), and RFLAGS
//!   comes back with no flag the guest did not have ([`check_return`]).
//!
//! What a fuzzer cannot see from inside, the run checks: the hypervisor never faults or
//! hangs, every frame comes back after the run (Domain0's verdict), and bystanders keep
//! their memory, their registers and their progress (the `bystander` mode).

pub mod generator;

use core::fmt;

use abi::error::Errno;

/// Most vCPUs of a fuzzing domain (each has its own register slot and buffers).
pub const MAX_VCPUS: usize = 4;
/// Words of each vCPU's payload buffer: what pointer arguments point at (`mmu_update`
/// requests, frame lists, port lists, a `GrantCopy`, control requests).
pub const PAYLOAD_WORDS: usize = 1024;
/// Bytes of each vCPU's scratch buffer, which the hypervisor may write (copies out).
pub const SCRATCH_BYTES: u64 = 8192;
/// Pages of its own a fuzzing domain grants to others.
pub const GRANT_PAGES: usize = 8;
/// How far ahead the timer is armed before a call that may block.
pub const BLOCK_NS: u64 = 20_000;

/// Bits of the `avoid` argument: known holes a campaign can steer around, so that a run
/// still tests everything else while a hole is open. 0 (the default) avoids nothing. The
/// three below were issue 10's, all closed since (main e281889); the bits stay for runs on
/// older builds and for bisecting.
pub mod avoid {
    /// RFLAGS.NT at entry (SFMASK does not clear it; the hypervisor's `iretq` then faults).
    pub const NT: u64 = 1 << 0;
    /// Timer deadlines more than [`super::BLOCK_NS`] × 5 ahead (each used to stay queued
    /// until it fired, filling the CPU's timer heap).
    pub const FAR_TIMERS: u64 = 1 << 1;
    /// `poll` calls that could sleep (one that starts after the armed timer fired never
    /// woke).
    pub const POLL_SLEEP: u64 = 1 << 2;
}

/// splitmix64 (Steele, Lea, Flood 2014): every seed, zero included, gives a good stream,
/// and one step is a few instructions, so the generator costs little next to a hypercall.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// True once in `n` times on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// The splitmix64 finaliser: a bijective scramble of 64 bits, used to derive one seed from
/// several numbers (the campaign's seed, the domain, the vCPU).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one vCPU of one domain in a campaign seeded with `seed`: printed with every
/// failure, it reproduces that vCPU's stream.
pub fn vcpu_seed(seed: u64, domain: u32, vcpu: u32) -> u64 {
    mix(seed ^ mix(u64::from(domain) << 32 | u64::from(vcpu)))
}

/// Every error code of the ABI, in the order of [`ErrSet`]'s bits.
const ERRNOS: [Errno; 9] = Errno::ALL;

/// A set of error codes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrSet(u16);

impl ErrSet {
    /// No error allowed.
    pub const NONE: ErrSet = ErrSet(0);

    /// The set of `errs`.
    pub const fn of(errs: &[Errno]) -> ErrSet {
        let mut bits = 0u16;
        let mut i = 0;
        while i < errs.len() {
            bits |= Self::bit(errs[i]);
            i += 1;
        }
        ErrSet(bits)
    }

    const fn bit(e: Errno) -> u16 {
        match e {
            Errno::Perm => 1,
            Errno::Srch => 2,
            Errno::NoMem => 4,
            Errno::Fault => 8,
            Errno::Busy => 16,
            Errno::Inval => 32,
            Errno::NoSys => 64,
            Errno::TooBig => 128,
            Errno::Again => 256,
        }
    }

    /// Whether `e` is in the set.
    pub fn contains(self, e: Errno) -> bool {
        self.0 & Self::bit(e) != 0
    }

    /// The union of two sets.
    pub const fn with(self, other: ErrSet) -> ErrSet {
        ErrSet(self.0 | other.0)
    }
}

impl fmt::Debug for ErrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(ERRNOS.iter().filter(|e| self.contains(**e)))
            .finish()
    }
}

/// What results a call may have: a success in `ok` (inclusive bounds), or an error in `errs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oracle {
    pub ok: Option<(u64, u64)>,
    pub errs: ErrSet,
}

impl Oracle {
    /// Must succeed with exactly `v`.
    pub const fn exactly(v: u64) -> Oracle {
        Oracle {
            ok: Some((v, v)),
            errs: ErrSet::NONE,
        }
    }

    /// Must fail, with one of `errs`.
    pub const fn fails(errs: ErrSet) -> Oracle {
        Oracle { ok: None, errs }
    }

    /// May succeed with a value in `lo..=hi` or fail with one of `errs`.
    pub const fn either(lo: u64, hi: u64, errs: ErrSet) -> Oracle {
        Oracle {
            ok: Some((lo, hi)),
            errs,
        }
    }

    /// For a call on an object drawn valid or not (`valid`): if valid, may succeed with 0 or
    /// fail with one of `if_valid`; if not, must fail with one of `if_not`.
    pub const fn zero_if_valid(valid: bool, if_valid: ErrSet, if_not: ErrSet) -> Oracle {
        if valid {
            Oracle::either(0, 0, if_valid)
        } else {
            Oracle::fails(if_not)
        }
    }

    /// Checks a raw return value (RAX).
    pub fn check(&self, ret: i64) -> Result<(), Wrong> {
        if ret >= 0 {
            let v = ret as u64;
            return match self.ok {
                None => Err(Wrong::Succeeded(v)),
                Some((lo, hi)) if v < lo || v > hi => Err(Wrong::OutOfRange(v)),
                Some(_) => Ok(()),
            };
        }
        match Errno::from_ret(ret) {
            None => Err(Wrong::UnknownError(ret)),
            Some(e) if !self.errs.contains(e) => Err(Wrong::Error(e)),
            Some(_) => Ok(()),
        }
    }
}

/// How a result broke its oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// A success where the ABI allows none.
    Succeeded(u64),
    /// A success with a value out of the allowed range.
    OutOfRange(u64),
    /// An error the operation does not allow here.
    Error(Errno),
    /// A negative value that is no error code of the ABI.
    UnknownError(i64),
}

/// Registers in the x86 encoding order, as [`Entry::regs`] and [`Out::regs`] hold them.
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R9: usize = 9;
    pub const R10: usize = 10;
    pub const R11: usize = 11;
    pub const R12: usize = 12;
    pub const R13: usize = 13;
    pub const R14: usize = 14;
    pub const R15: usize = 15;
    /// Names, for messages.
    pub const NAMES: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
}

/// RFLAGS bits.
pub mod flags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
    /// The arithmetic flags.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
    /// What a ring-3 `popfq` can change (IOPL, IF, VIF, VIP and VM it silently keeps).
    pub const USER_SETTABLE: u64 = ARITH | TF | DF | NT | AC | ID;
}

/// The machine state a fuzzed call enters with: all sixteen general registers (the
/// executor overwrites RAX and the argument registers with the call), RFLAGS for `popfq`,
/// RSP (0: the real stack pointer, unchanged), and XMM0-15. The executor's assembly reads
/// it in place (`#[repr(C)]`) and writes back into `regs[RSP]` and `flags` the RSP and
/// RFLAGS the `syscall` actually ran with, which is what [`check_return`] compares.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub regs: [u64; 16],
    pub flags: u64,
    pub rsp: u64,
    pub xmm: [u64; 32],
}

/// The machine state right after the `syscall` instruction returned.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Out {
    pub regs: [u64; 16],
    pub flags: u64,
    pub xmm: [u64; 32],
}

/// A register that came back wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegWrong {
    /// A register the ABI preserves changed.
    Clobbered { reg: usize, was: u64, now: u64 },
    /// A register holds neither the guest's value nor zero: the hypervisor's data.
    Leaked { reg: usize, was: u64, now: u64 },
    /// XMM qword `index` (register index / 2) holds neither the guest's value nor zero.
    XmmLeaked { index: usize, was: u64, now: u64 },
    /// RFLAGS came back with flags the guest did not have, or without IF, or with IOPL.
    Flags { was: u64, now: u64 },
}

impl fmt::Display for RegWrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RegWrong::Clobbered { reg, was, now } => write!(
                f,
                "{} is preserved by the ABI but changed from {was:#x} to {now:#x}",
                reg::NAMES[reg]
            ),
            RegWrong::Leaked { reg, was, now } => write!(
                f,
                "{} came back {now:#x}: neither the guest's {was:#x} nor 0",
                reg::NAMES[reg]
            ),
            RegWrong::XmmLeaked { index, was, now } => write!(
                f,
                "xmm{} qword {} came back {now:#x}: neither the guest's {was:#x} nor 0",
                index / 2,
                index % 2
            ),
            RegWrong::Flags { was, now } => {
                write!(f, "rflags went in as {was:#x} and came back {now:#x}")
            }
        }
    }
}

/// Checks the state after a hypercall against the state it entered with (`entry`, with
/// `flags` as the CPU took them from `popfq`) and the address right after the `syscall`
/// instruction (`ret_rip`):
/// - RBX, RBP, RSP, R12-R15 are preserved (the ABI);
/// - RCX is the return address or the guest's value, R11 holds flags only (no pointer);
/// - RDX, RSI, RDI, R8-R10 and every XMM qword are the guest's value or zero;
/// - RFLAGS has IF, no IOPL, and no flag the guest did not enter with.
pub fn check_return(entry: &Entry, out: &Out, ret_rip: u64) -> Result<(), RegWrong> {
    for r in [
        reg::RBX,
        reg::RBP,
        reg::RSP,
        reg::R12,
        reg::R13,
        reg::R14,
        reg::R15,
    ] {
        if out.regs[r] != entry.regs[r] {
            return Err(RegWrong::Clobbered {
                reg: r,
                was: entry.regs[r],
                now: out.regs[r],
            });
        }
    }
    let rcx = out.regs[reg::RCX];
    if rcx != ret_rip && rcx != entry.regs[reg::RCX] {
        return Err(RegWrong::Leaked {
            reg: reg::RCX,
            was: entry.regs[reg::RCX],
            now: rcx,
        });
    }
    let r11 = out.regs[reg::R11];
    if r11 & !0x3f_ffff != 0 && r11 != entry.regs[reg::R11] {
        return Err(RegWrong::Leaked {
            reg: reg::R11,
            was: entry.regs[reg::R11],
            now: r11,
        });
    }
    for r in [reg::RDX, reg::RSI, reg::RDI, reg::R8, reg::R9, reg::R10] {
        let (was, now) = (entry.regs[r], out.regs[r]);
        if now != was && now != 0 {
            return Err(RegWrong::Leaked { reg: r, was, now });
        }
    }
    for (index, (&was, &now)) in entry.xmm.iter().zip(&out.xmm).enumerate() {
        if now != was && now != 0 {
            return Err(RegWrong::XmmLeaked { index, was, now });
        }
    }
    let allowed = entry.flags | flags::IF | flags::FIXED;
    if out.flags & flags::IF == 0 || out.flags & flags::IOPL != 0 || out.flags & !allowed != 0 {
        return Err(RegWrong::Flags {
            was: entry.flags,
            now: out.flags,
        });
    }
    Ok(())
}

/// Checks the state after a `callback_return` to a frame the guest built: RAX, RCX, RDX,
/// RSI, RDI, R8-R11 and RSP are the frame's (the ABI restores them), the callee-saved
/// registers are what they were, the arithmetic flags are the frame's, IF is set and IOPL
/// and TF are clear whatever the frame said.
pub fn check_callback_return(
    frame: &abi::shared::UpcallFrame,
    entry: &Entry,
    out: &Out,
) -> Result<(), RegWrong> {
    let restored = [
        (reg::RAX, frame.rax),
        (reg::RCX, frame.rcx),
        (reg::RDX, frame.rdx),
        (reg::RSI, frame.rsi),
        (reg::RDI, frame.rdi),
        (reg::R8, frame.r8),
        (reg::R9, frame.r9),
        (reg::R10, frame.r10),
        (reg::R11, frame.r11),
        (reg::RSP, frame.rsp),
    ];
    for (r, want) in restored {
        if out.regs[r] != want {
            return Err(RegWrong::Clobbered {
                reg: r,
                was: want,
                now: out.regs[r],
            });
        }
    }
    for r in [reg::RBX, reg::RBP, reg::R12, reg::R13, reg::R14, reg::R15] {
        if out.regs[r] != entry.regs[r] {
            return Err(RegWrong::Clobbered {
                reg: r,
                was: entry.regs[r],
                now: out.regs[r],
            });
        }
    }
    let f = out.flags;
    if f & flags::ARITH != frame.rflags & flags::ARITH
        || f & flags::IF == 0
        || f & (flags::IOPL | flags::TF | flags::VM) != 0
    {
        return Err(RegWrong::Flags {
            was: frame.rflags,
            now: f,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_in_range() {
        let a: Vec<u64> = (0..8)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..8)
            .scan(Rng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(0);
        let v: Vec<u64> = (0..2000).map(|_| r.below(10)).collect();
        assert!(v.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| v.contains(&d)));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn vcpu_seeds_differ() {
        let s = [
            vcpu_seed(1, 1, 0),
            vcpu_seed(1, 1, 1),
            vcpu_seed(1, 2, 0),
            vcpu_seed(2, 1, 0),
        ];
        for i in 0..s.len() {
            for j in i + 1..s.len() {
                assert_ne!(s[i], s[j]);
            }
        }
    }

    #[test]
    fn oracles_judge_results() {
        use Errno::*;
        let must_fail = Oracle::fails(ErrSet::of(&[Fault, Inval]));
        assert_eq!(must_fail.check(-14), Ok(()));
        assert_eq!(must_fail.check(0), Err(Wrong::Succeeded(0)));
        assert_eq!(must_fail.check(-1), Err(Wrong::Error(Perm)));
        assert_eq!(must_fail.check(-4095), Err(Wrong::UnknownError(-4095)));
        let port = Oracle::either(1, 1023, ErrSet::of(&[NoMem]));
        assert_eq!(port.check(5), Ok(()));
        assert_eq!(port.check(0), Err(Wrong::OutOfRange(0)));
        assert_eq!(port.check(1024), Err(Wrong::OutOfRange(1024)));
        assert_eq!(port.check(-12), Ok(()));
        assert_eq!(Oracle::exactly(0).check(1), Err(Wrong::OutOfRange(1)));
        assert!(ErrSet::of(&[Busy]).with(ErrSet::of(&[Srch])).contains(Srch));
        assert_eq!(format!("{:?}", ErrSet::of(&[Perm, NoSys])), "{Perm, NoSys}");
    }

    fn entry() -> Entry {
        Entry {
            regs: core::array::from_fn(|i| 0x1111 * (i as u64 + 1)),
            flags: flags::IF | flags::FIXED | flags::CF | flags::DF,
            rsp: 0,
            xmm: core::array::from_fn(|i| 0xabc0 + i as u64),
        }
    }

    fn out_of(e: &Entry) -> Out {
        Out {
            regs: e.regs,
            flags: e.flags,
            xmm: e.xmm,
        }
    }

    #[test]
    fn registers_are_checked() {
        let e = entry();
        let mut o = out_of(&e);
        assert_eq!(check_return(&e, &o, 0x40_1000), Ok(()));
        o.regs[reg::RCX] = 0x40_1000;
        o.regs[reg::RDX] = 0;
        o.xmm[3] = 0;
        o.flags &= !(flags::CF | flags::DF);
        assert_eq!(check_return(&e, &o, 0x40_1000), Ok(()));
        let mut bad = o.clone();
        bad.regs[reg::R12] ^= 1;
        assert!(matches!(
            check_return(&e, &bad, 0x40_1000),
            Err(RegWrong::Clobbered { reg: reg::R12, .. })
        ));
        let mut bad = o.clone();
        bad.regs[reg::RSI] = 0xffff_8000_0000_1234;
        assert!(matches!(
            check_return(&e, &bad, 0x40_1000),
            Err(RegWrong::Leaked { reg: reg::RSI, .. })
        ));
        let mut bad = o.clone();
        bad.regs[reg::R11] = 0xffff_ffff_8000_0000;
        assert!(check_return(&e, &bad, 0x40_1000).is_err());
        let mut bad = o.clone();
        bad.xmm[31] = 7;
        assert!(matches!(
            check_return(&e, &bad, 0x40_1000),
            Err(RegWrong::XmmLeaked { index: 31, .. })
        ));
        for f in [flags::TF, flags::NT, flags::IOPL] {
            let mut bad = o.clone();
            bad.flags |= f;
            assert!(check_return(&e, &bad, 0x40_1000).is_err(), "{f:#x}");
        }
        let mut bad = o.clone();
        bad.flags &= !flags::IF;
        assert!(check_return(&e, &bad, 0x40_1000).is_err());
    }

    #[test]
    fn callback_returns_are_checked() {
        let e = entry();
        let frame = abi::shared::UpcallFrame {
            rax: 1,
            rcx: 2,
            rdx: 3,
            rsi: 4,
            rdi: 5,
            r8: 6,
            r9: 7,
            r10: 8,
            r11: 9,
            rflags: flags::CF | flags::ZF | flags::TF | flags::IOPL,
            rip: 0x40_2000,
            rsp: 0x7ffe_f000,
        };
        let mut o = out_of(&e);
        for (r, v) in [
            (reg::RAX, 1),
            (reg::RCX, 2),
            (reg::RDX, 3),
            (reg::RSI, 4),
            (reg::RDI, 5),
            (reg::R8, 6),
            (reg::R9, 7),
            (reg::R10, 8),
            (reg::R11, 9),
            (reg::RSP, 0x7ffe_f000),
        ] {
            o.regs[r] = v;
        }
        o.flags = flags::CF | flags::ZF | flags::IF | flags::FIXED;
        assert_eq!(check_callback_return(&frame, &e, &o), Ok(()));
        let mut bad = o.clone();
        bad.flags |= flags::TF;
        assert!(check_callback_return(&frame, &e, &bad).is_err());
        let mut bad = o.clone();
        bad.regs[reg::R9] = 0;
        assert!(check_callback_return(&frame, &e, &bad).is_err());
        let mut bad = o.clone();
        bad.regs[reg::RBX] = 0;
        assert!(check_callback_return(&frame, &e, &bad).is_err());
    }
}
