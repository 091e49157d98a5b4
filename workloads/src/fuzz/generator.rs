//! The call generator: from a random stream, the domain's facts and the objects it holds,
//! one hypercall with its arguments, what its result may be ([`Oracle`]) and what a success
//! means for the objects ([`Effect`]).
//!
//! Arguments come in classes, and the class decides the oracle: a pointer is the guest's
//! own buffer, its read-only memory, or wild (the null page, below the image, an unmapped
//! region, the last bytes of the lower half, non-canonical, the hypervisor's direct map or
//! image, a range that wraps); a port, reference or handle is one the domain holds (or
//! might: another vCPU's, or one just closed), or one that can never be valid (0 where the
//! ABI says so, past the table, above 32 bits); a domain is this one, a neighbour (which may
//! or may not exist), or one that cannot exist. A wild pointer, an invalid object, a domain
//! that cannot exist, or a page-table entry the ABI forbids must fail; the rest may succeed.
//!
//! What the generator never does, because it would end or wedge the fuzzer itself rather
//! than test the hypervisor: `sched_op(Shutdown)`, taking vCPU 0 (or a single vCPU) down,
//! `callback_return` with anything but a frame built by the executor, writing anything but
//! a refused value into a live page-table entry, or giving the hypervisor a buffer smaller
//! than what it may write. These are checked by the tests below over many calls.

use abi::control::{Domctl, Sysctl};
use abi::error::Errno::{Again, Busy, Fault, Inval, NoMem, NoSys, Perm, Srch, TooBig};
use abi::hypercall::{self as nr, EvtchnOp, GrantOp, MemoryOp, SchedOp, VcpuOp};
use abi::layout::{
    IMAGE_BASE, MAP_AREA, MAP_AREA_BYTES, PT_WINDOW, SHARED_INFO, STACK_BYTES, STACK_TOP,
    USER_LIMIT,
};
use abi::mm::pte;
use abi::shared::MAX_PORTS;

use super::{BLOCK_NS, ErrSet, GRANT_PAGES, Oracle, PAYLOAD_WORDS, Rng, SCRATCH_BYTES, avoid};
use super::{Entry, flags};

/// What the executor tells the generator about its domain and memory.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub domain: u32,
    pub vcpus: u32,
    pub vcpu: u32,
    /// The system time now (deadlines are drawn around it).
    pub now_ns: u64,
    /// Bits of [`avoid`].
    pub avoid: u64,
    /// Bit `op as u8` set: that [`Op`] may be drawn (0: every op).
    pub ops: u64,
    /// The most frames the domain may hold.
    pub frames_limit: u64,
    /// This vCPU's payload buffer ([`PAYLOAD_WORDS`] words), which the generator fills.
    pub payload: u64,
    /// This vCPU's scratch buffer ([`SCRATCH_BYTES`]), which the hypervisor may write.
    pub scratch: u64,
    /// Printable read-only bytes (what a valid console write prints).
    pub text: u64,
    pub text_len: u64,
    /// The end of the image (page-aligned): the page after it is not mapped, so a buffer
    /// that ends there straddles the end of mapped memory (only for calls that read it).
    pub image_end: u64,
    /// Page-aligned writable pages of the domain's own, to grant.
    pub grant_pages: [u64; GRANT_PAGES],
    pub facts: Facts,
}

/// What the domain's page tables say, read once from the page-table window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    /// Machine address of the level-4 table.
    pub root: u64,
    /// Machine address of the level-1 table of `MAP_AREA` (0: not found).
    pub map_l1: u64,
    /// A live page of the image (its code) and the machine address of the level-1 entry
    /// that maps it (0: not found): only values the ABI refuses are ever written there.
    pub live_va: u64,
    pub live_l1e: u64,
    /// A data frame of the domain that is mapped (a stack page).
    pub live_mfn: u64,
    /// The shared-info page's frame (the hypervisor's to write).
    pub shared_mfn: u64,
}

/// The objects a domain holds, as the executor's tables know them (racing vCPUs share them).
pub trait Objects {
    /// A port the domain holds (or held very recently).
    fn port(&self, r: &mut Rng) -> Option<u32>;
    /// A grant reference the domain handed out.
    fn gref(&self, r: &mut Rng) -> Option<u32>;
    /// A handle of a grant mapping the domain holds.
    fn handle(&self, r: &mut Rng) -> Option<u32>;
    /// A frame the domain took with `IncreaseReservation`.
    fn frame(&self, r: &mut Rng) -> Option<u64>;
}

/// Every kind of call the generator makes, for statistics and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Console,
    Yield,
    Block,
    Poll,
    SchedBad,
    Timer,
    VcpuUp,
    VcpuDown,
    VcpuBad,
    Domctl,
    Sysctl,
    Null,
    EvAlloc,
    EvBind,
    EvSend,
    EvClose,
    EvVirq,
    EvBindVcpu,
    EvUnmask,
    EvBad,
    Callback,
    CallbackReturn,
    Grant,
    GrantEnd,
    GrantMap,
    GrantUnmap,
    GrantCopy,
    GrantBad,
    Mmu,
    Uva,
    MemInc,
    MemDec,
    MemCur,
    MemMax,
    MemBad,
    NoSys,
}

/// How many [`Op`]s there are.
pub const OPS: usize = 36;

/// Each op and how often it is drawn (out of the sum).
const WEIGHTS: [(Op, u32); OPS] = [
    (Op::Console, 3),
    (Op::Yield, 2),
    (Op::Block, 1),
    (Op::Poll, 2),
    (Op::SchedBad, 2),
    (Op::Timer, 6),
    (Op::VcpuUp, 2),
    (Op::VcpuDown, 1),
    (Op::VcpuBad, 1),
    (Op::Domctl, 3),
    (Op::Sysctl, 3),
    (Op::Null, 8),
    (Op::EvAlloc, 5),
    (Op::EvBind, 5),
    (Op::EvSend, 6),
    (Op::EvClose, 5),
    (Op::EvVirq, 2),
    (Op::EvBindVcpu, 3),
    (Op::EvUnmask, 3),
    (Op::EvBad, 1),
    (Op::Callback, 3),
    (Op::CallbackReturn, 2),
    (Op::Grant, 4),
    (Op::GrantEnd, 2),
    (Op::GrantMap, 8),
    (Op::GrantUnmap, 4),
    (Op::GrantCopy, 5),
    (Op::GrantBad, 1),
    (Op::Mmu, 6),
    (Op::Uva, 5),
    (Op::MemInc, 3),
    (Op::MemDec, 3),
    (Op::MemCur, 1),
    (Op::MemMax, 1),
    (Op::MemBad, 1),
    (Op::NoSys, 3),
];

impl Op {
    /// Every op, in order.
    pub const ALL: [Op; OPS] = {
        let mut all = [Op::Console; OPS];
        let mut i = 0;
        while i < OPS {
            all[i] = WEIGHTS[i].0;
            i += 1;
        }
        all
    };

    /// Its name in statistics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Console => "console",
            Op::Yield => "yield",
            Op::Block => "block",
            Op::Poll => "poll",
            Op::SchedBad => "sched?",
            Op::Timer => "timer",
            Op::VcpuUp => "vcpu_up",
            Op::VcpuDown => "vcpu_down",
            Op::VcpuBad => "vcpu?",
            Op::Domctl => "domctl",
            Op::Sysctl => "sysctl",
            Op::Null => "null",
            Op::EvAlloc => "ev_alloc",
            Op::EvBind => "ev_bind",
            Op::EvSend => "ev_send",
            Op::EvClose => "ev_close",
            Op::EvVirq => "ev_virq",
            Op::EvBindVcpu => "ev_bindvcpu",
            Op::EvUnmask => "ev_unmask",
            Op::EvBad => "ev?",
            Op::Callback => "callback",
            Op::CallbackReturn => "cb_return",
            Op::Grant => "grant",
            Op::GrantEnd => "gnt_end",
            Op::GrantMap => "gnt_map",
            Op::GrantUnmap => "gnt_unmap",
            Op::GrantCopy => "gnt_copy",
            Op::GrantBad => "gnt?",
            Op::Mmu => "mmu_update",
            Op::Uva => "update_va",
            Op::MemInc => "mem_inc",
            Op::MemDec => "mem_dec",
            Op::MemCur => "mem_cur",
            Op::MemMax => "mem_max",
            Op::MemBad => "mem?",
            Op::NoSys => "nosys",
        }
    }
}

/// What a successful call changed among the domain's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// The result is a new port.
    NewPort,
    /// This port was closed.
    ClosedPort(u32),
    /// The result is a new grant reference.
    NewGref,
    /// This grant ended.
    EndedGref(u32),
    /// The result is the handle of a mapping at `va`.
    NewHandle {
        va: u64,
        writable: bool,
    },
    /// This mapping was undone.
    Unmapped(u32),
    /// The first `result` payload words are frames now held.
    NewFrames,
    /// The first `result` payload words are frames given back.
    GaveBack,
}

/// One generated hypercall.
#[derive(Clone, Debug)]
pub struct Call {
    pub op: Op,
    /// RAX.
    pub nr: u64,
    /// RDI, RSI, RDX, R10, R8.
    pub args: [u64; 5],
    pub oracle: Oracle,
    pub effect: Effect,
    /// The call may sleep: arm the timer first, [`BLOCK_NS`] ahead or, with
    /// `arm_past`, at a deadline already past (the ABI says the timer then fires at once
    /// and a `block` returns at once; `poll` returns on the timer too).
    pub arm_timer: bool,
    pub arm_past: bool,
}

impl Call {
    fn new(op: Op, nr: u64, args: [u64; 5], oracle: Oracle) -> Call {
        Call {
            op,
            nr,
            args,
            oracle,
            effect: Effect::None,
            arm_timer: false,
            arm_past: false,
        }
    }

    /// A call of a hypercall number, or an operation of a multiplexed call, that the ABI does
    /// not have: refused with `NoSys`, whatever its arguments. `first`: the multiplexed call's
    /// operation (drawn before `rest`, so that a seed's stream stays as it was).
    fn refused(op: Op, nr: u64, first: u64, rest: [u64; 4]) -> Call {
        let [a, b, c, d] = rest;
        Call::new(
            op,
            nr,
            [first, a, b, c, d],
            Oracle::fails(ErrSet::of(&[NoSys])),
        )
    }

    fn with(mut self, effect: Effect) -> Call {
        self.effect = effect;
        self
    }
}

/// Values at and around every limit of the ABI.
const EDGES: [u64; 38] = [
    0,
    1,
    2,
    3,
    7,
    8,
    15,
    16,
    63,
    64,
    65,
    255,
    256,
    511,
    512,
    513,
    1023,
    1024,
    1025,
    4095,
    4096,
    4097,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    u64::MAX - 4095,
    0x0000_7fff_ffff_ffff,
    0x0000_8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    -22i64 as u64,
    -14i64 as u64,
];

/// An operation number a multiplexed call with operations `all` must refuse: the two past
/// its last, `valid` with a high bit set (the hypervisor must not truncate), 2^63, 2^64 - 1.
fn bad_op<T>(r: &mut Rng, all: &[T], valid: u64) -> u64 {
    let past = all.len() as u64;
    r.pick(&[past, past + 1, 1 << 32 | valid, 1 << 63, u64::MAX])
}

/// A number: an edge value, a small one, or random bits of random width.
pub fn num(r: &mut Rng) -> u64 {
    match r.below(4) {
        0 | 1 => r.pick(&EDGES),
        2 => r.below(64),
        _ => r.next_u64() >> r.below(64),
    }
}

/// A non-zero number.
fn num_nonzero(r: &mut Rng) -> u64 {
    num(r).max(1)
}

/// A pointer that is not the guest's: nothing of it may be read or written.
pub fn wild(r: &mut Rng) -> u64 {
    match r.below(9) {
        0 => r.below(0x1000),
        1 => IMAGE_BASE - 8 - r.below(0x3000),
        2 => 0x5000_0000_0000 + r.below(1 << 30),
        3 => USER_LIMIT - 1 - r.below(64),
        4 => USER_LIMIT + r.below(1 << 40),
        5 => 0xffff_8000_0000_0000 + r.below(1 << 30),
        6 => 0xffff_ffff_8000_0000 + r.below(1 << 24),
        7 => u64::MAX - r.below(4096),
        _ => 1 << 63 | r.next_u64() >> 20,
    }
}

/// Whether `p` is one of [`wild`]'s addresses (for the tests and the executor's own checks).
pub fn is_wild(p: u64) -> bool {
    p < 0x1000
        || (IMAGE_BASE - 0x3010..IMAGE_BASE).contains(&p)
        || (0x5000_0000_0000..0x5000_4000_0000).contains(&p)
        || p >= USER_LIMIT - 64
}

/// A buffer of `unit`-byte items that starts in mapped memory (the image's last bytes) and
/// runs past its end; returns its address and how many whole items are mapped (1..=4).
/// Only for calls that read the buffer: the bytes there are the image's own.
fn straddle(r: &mut Rng, env: &Env, unit: u64) -> (u64, u64) {
    let mapped = 1 + r.below(4);
    (env.image_end - mapped * unit, mapped)
}

/// `v` made canonical (bits 63..48 copies of bit 47).
pub fn canonical(v: u64) -> u64 {
    (((v << 16) as i64) >> 16) as u64
}

/// A stack pointer for the entry state: wild, somewhere in (or past) the stacks at any
/// alignment, or an edge value; always canonical, since a hypercall made with a
/// non-canonical RSP ends the domain (its return frame is refused: `mode` 2's
/// `SyscallNonCanonicalRsp`).
fn wild_rsp(r: &mut Rng) -> u64 {
    canonical(match r.below(3) {
        0 => wild(r),
        1 => STACK_TOP - r.below(4 * STACK_BYTES),
        _ => r.pick(&EDGES),
    })
}

/// Who a domain argument names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Me,
    /// A neighbour, Domain0 or a bystander: it may or may not exist.
    Other,
    /// No domain can have this id (some would alias a neighbour if truncated to 32 bits).
    Nobody,
}

fn domain(r: &mut Rng, env: &Env) -> (u64, Who) {
    let me = u64::from(env.domain);
    match r.below(12) {
        0..=3 => (me + 1, Who::Other),
        4..=6 => (me.saturating_sub(1), Who::Other),
        7 => (me + 2, Who::Other),
        8 => (r.pick(&[0, me.saturating_sub(2)]), Who::Other),
        9 => (me, Who::Me),
        _ => (
            r.pick(&[
                60_000,
                u64::from(u32::MAX),
                1 << 32 | (me + 1),
                1 << 32 | me.saturating_sub(1),
                u64::MAX,
            ]),
            Who::Nobody,
        ),
    }
}

/// A port: one held (`true`: it may be valid) or one that never is.
fn port(r: &mut Rng, objs: &impl Objects) -> (u64, bool) {
    match r.below(8) {
        0..=4 => match objs.port(r) {
            Some(p) => (u64::from(p), true),
            None => (1 + r.below(8), true),
        },
        5 => (1 + r.below(16), true),
        _ => (
            r.pick(&[
                0,
                MAX_PORTS as u64,
                MAX_PORTS as u64 + 1,
                4096,
                u64::from(u32::MAX),
                1 << 32 | 1,
                u64::MAX,
            ]),
            false,
        ),
    }
}

/// A grant reference another domain may have granted (they are handed out lowest first, and
/// a fuzzer holds a few at a time), or one that never is valid.
fn foreign_gref(r: &mut Rng) -> (u64, bool) {
    if r.one_in(5) {
        (
            r.pick(&[0, u64::from(u32::MAX), 1 << 32 | 1, u64::MAX]),
            false,
        )
    } else {
        (1 + r.below(8), true)
    }
}

/// A valid vCPU index of the domain, or one past them.
fn vcpu_index(r: &mut Rng, env: &Env) -> (u64, bool) {
    if r.one_in(4) {
        (
            r.pick(&[
                u64::from(env.vcpus),
                u64::from(env.vcpus) + 1,
                64,
                u64::from(u32::MAX),
                1 << 32,
                u64::MAX,
            ]),
            false,
        )
    } else {
        (r.below(u64::from(env.vcpus)), true)
    }
}

/// Writes `bytes` into the payload from its start (little-endian words).
fn put_bytes(payload: &mut [u64], bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        payload[i] = u64::from_le_bytes(w);
    }
}

/// Draws the op of the next call.
fn pick_op(r: &mut Rng, env: &Env) -> Op {
    const TOTAL: u64 = {
        let mut t = 0;
        let mut i = 0;
        while i < OPS {
            t += WEIGHTS[i].1 as u64;
            i += 1;
        }
        t
    };
    loop {
        let mut x = r.below(TOTAL);
        let op = WEIGHTS
            .iter()
            .find(|(_, w)| {
                let hit = x < u64::from(*w);
                x = x.saturating_sub(u64::from(*w));
                hit
            })
            .map_or(Op::Null, |(op, _)| *op);
        // Only a vCPU other than 0 of a multi-vCPU domain goes down: vCPU 0 brings it back.
        if op == Op::VcpuDown && (env.vcpu == 0 || env.vcpus < 2) {
            continue;
        }
        if env.ops != 0 && env.ops & 1 << op as u8 == 0 {
            if env.ops & !(1 << Op::VcpuDown as u8) & ((1 << OPS) - 1) == 0 {
                return Op::Null; // nothing else allowed: keep going with null calls
            }
            continue;
        }
        return op;
    }
}

/// The entry state of the next call, written over `e`: random general registers (one in
/// four an edge value or a small number), RFLAGS (whatever a ring-3 `popfq` can set but TF,
/// plus attempts at what it cannot), one time in four a wild RSP, and random XMM registers.
/// Cheap on purpose (two mixes per register): it runs before every call.
pub fn entry_into(r: &mut Rng, env: &Env, e: &mut Entry) {
    let s = r.next_u64();
    for (i, v) in e.regs.iter_mut().enumerate() {
        let x = super::mix(s ^ i as u64);
        *v = match x & 7 {
            0 => EDGES[(x >> 8) as usize % EDGES.len()],
            1 => (x >> 8) & 0xff,
            _ => x,
        };
    }
    let mut settable = flags::USER_SETTABLE & !flags::TF;
    if env.avoid & avoid::NT != 0 {
        settable &= !flags::NT;
    }
    let x = r.next_u64();
    let mut f = flags::FIXED | flags::IF | (x & settable);
    if x >> 56 & 7 == 0 {
        // Ignored by popfq in ring 3 (IOPL 0): they must not stick.
        f |= x & (flags::IOPL | flags::VIF | flags::VIP | flags::VM | flags::RF);
    }
    if x >> 59 & 7 == 0 {
        f &= !flags::IF;
    }
    e.flags = f;
    e.rsp = if x >> 62 == 0 { wild_rsp(r) } else { 0 };
    let t = r.next_u64();
    for (i, v) in e.xmm.iter_mut().enumerate() {
        *v = if (t >> (i % 64)) & 31 == 0 {
            0
        } else {
            t.rotate_left(i as u32 * 7) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        };
    }
}

/// A cheaper variation of the last entry state (what the last call ran with, in `e`): new
/// RFLAGS, a new RSP choice, and one general register and one XMM qword changed. The
/// executor draws a fresh state ([`entry_into`]) for one call in four and varies it for
/// the others: the registers the hypervisor must preserve keep being checked with random
/// values, at a fraction of the cost.
pub fn vary_entry(r: &mut Rng, env: &Env, e: &mut Entry) {
    let x = r.next_u64();
    let mut settable = flags::USER_SETTABLE & !flags::TF;
    if env.avoid & avoid::NT != 0 {
        settable &= !flags::NT;
    }
    e.flags = flags::FIXED | flags::IF | (x & settable);
    e.rsp = if x >> 62 == 0 { wild_rsp(r) } else { 0 };
    e.regs[(x >> 32) as usize % 16] = num(r);
    e.xmm[(x >> 40) as usize % 32] = r.next_u64();
}

/// [`entry_into`] a fresh [`Entry`].
pub fn entry(r: &mut Rng, env: &Env) -> Entry {
    let mut e = Entry::default();
    entry_into(r, env, &mut e);
    e
}

/// The next call.
pub fn call(r: &mut Rng, env: &Env, objs: &impl Objects, payload: &mut [u64]) -> Call {
    debug_assert!(payload.len() >= PAYLOAD_WORDS);
    match pick_op(r, env) {
        Op::Console => console(r, env),
        op @ (Op::Yield | Op::Block | Op::Poll | Op::SchedBad) => sched(op, r, env, objs, payload),
        Op::Timer => timer(r, env),
        op @ (Op::VcpuUp | Op::VcpuDown | Op::VcpuBad) => vcpu(op, r, env),
        op @ (Op::Domctl | Op::Sysctl) => control(op, r, env, payload),
        Op::Null => Call::new(
            Op::Null,
            nr::NULL,
            [num(r), num(r), num(r), num(r), num(r)],
            Oracle::exactly(0),
        ),
        op @ (Op::EvAlloc
        | Op::EvBind
        | Op::EvSend
        | Op::EvClose
        | Op::EvVirq
        | Op::EvBindVcpu
        | Op::EvUnmask
        | Op::EvBad) => evtchn(op, r, env, objs),
        Op::Callback => callback(r, env),
        Op::CallbackReturn => callback_return(r, payload),
        op @ (Op::Grant
        | Op::GrantEnd
        | Op::GrantMap
        | Op::GrantUnmap
        | Op::GrantCopy
        | Op::GrantBad) => grant(op, r, env, objs, payload),
        Op::Mmu => mmu(r, env, objs, payload),
        Op::Uva => update_va(r, env, objs),
        op @ (Op::MemInc | Op::MemDec | Op::MemCur | Op::MemMax | Op::MemBad) => {
            memory(op, r, env, objs, payload)
        }
        Op::NoSys => {
            let number = match r.below(4) {
                0 => 14 + r.below(32),
                1 => 1 << 32 | r.below(14),
                2 => 1 << 63 | r.below(14),
                _ => r.pick(&[255, 256, 0x100 | nr::NULL, u64::MAX, u64::MAX - 1]),
            };
            Call::refused(Op::NoSys, number, num(r), [num(r), num(r), num(r), num(r)])
        }
    }
}

/// `console_write`: an unprivileged domain's output is rate-limited (`Again` over its
/// quota, whichever check comes first).
fn console(r: &mut Rng, env: &Env) -> Call {
    let (ptr, len, oracle) = match r.below(64) {
        // A real line, rarely: each one is logged.
        0 if env.text_len > 0 => {
            let off = r.below(env.text_len / 2);
            let len = 1 + r.below((env.text_len - off).min(32));
            (
                env.text + off,
                len,
                Oracle::either(0, len, ErrSet::of(&[NoMem, Busy, TooBig, Again])),
            )
        }
        1..=8 => (
            if r.one_in(2) { wild(r) } else { env.text },
            0,
            Oracle::either(0, 0, ErrSet::of(&[Fault, Inval, Again])),
        ),
        // Running off the end of mapped memory: a fault, or a short write of what is mapped.
        9..=12 if env.image_end != 0 => {
            let unit = 1 + r.below(16);
            let (ptr, mapped) = straddle(r, env, unit);
            let mapped = mapped * unit;
            (
                ptr,
                mapped + 1 + r.below(4096),
                Oracle::either(0, mapped, ErrSet::of(&[Fault, Inval, TooBig, Again])),
            )
        }
        _ => (
            wild(r),
            num_nonzero(r),
            Oracle::fails(ErrSet::of(&[Fault, Inval, TooBig, Again])),
        ),
    };
    Call::new(
        Op::Console,
        nr::CONSOLE_WRITE,
        [ptr, len, num(r), num(r), num(r)],
        oracle,
    )
}

fn sched(op: Op, r: &mut Rng, env: &Env, objs: &impl Objects, payload: &mut [u64]) -> Call {
    let junk = [num(r), num(r)];
    match op {
        Op::Yield => Call::new(
            op,
            nr::SCHED_OP,
            [SchedOp::Yield as u64, junk[0], junk[1], num(r), num(r)],
            Oracle::exactly(0),
        ),
        Op::Block => {
            let mut c = Call::new(
                op,
                nr::SCHED_OP,
                [SchedOp::Block as u64, junk[0], junk[1], num(r), num(r)],
                Oracle::exactly(0),
            );
            c.arm_timer = true;
            c.arm_past = r.one_in(4);
            c
        }
        Op::Poll => {
            let may_sleep = env.avoid & avoid::POLL_SLEEP == 0;
            match r.below(4) {
                0 | 1 if may_sleep => {
                    let count = if r.one_in(8) { 64 } else { 1 + r.below(8) };
                    for w in payload.iter_mut().take((count as usize).div_ceil(2)) {
                        let a = port(r, objs).0 as u32;
                        let b = port(r, objs).0 as u32;
                        *w = u64::from(a) | u64::from(b) << 32;
                    }
                    let mut c = Call::new(
                        op,
                        nr::SCHED_OP,
                        [SchedOp::Poll as u64, env.payload, count, num(r), num(r)],
                        Oracle::either(0, 1, ErrSet::of(&[Inval])),
                    );
                    c.arm_timer = true;
                    c.arm_past = r.one_in(4);
                    c
                }
                2 => Call::new(
                    op,
                    nr::SCHED_OP,
                    [
                        SchedOp::Poll as u64,
                        if r.one_in(2) { env.payload } else { wild(r) },
                        r.pick(&[0, 65, 1 << 32 | 1, u64::MAX, 1 << 63]),
                        num(r),
                        num(r),
                    ],
                    Oracle::fails(ErrSet::of(&[Inval, Fault])),
                ),
                3 if may_sleep && env.image_end != 0 => {
                    // The port list runs off the end of mapped memory.
                    let (ptr, mapped) = straddle(r, env, 4);
                    let count = mapped + 1 + r.below(8);
                    let mut c = Call::new(
                        op,
                        nr::SCHED_OP,
                        [SchedOp::Poll as u64, ptr, count, num(r), num(r)],
                        Oracle::either(0, 1, ErrSet::of(&[Fault, Inval])),
                    );
                    c.arm_timer = true;
                    c
                }
                _ => Call::new(
                    op,
                    nr::SCHED_OP,
                    [
                        SchedOp::Poll as u64,
                        wild(r),
                        1 + r.below(64),
                        num(r),
                        num(r),
                    ],
                    Oracle::fails(ErrSet::of(&[Fault, Inval])),
                ),
            }
        }
        _ => Call::refused(
            Op::SchedBad,
            nr::SCHED_OP,
            r.pick(&[
                4,
                5,
                64,
                1 << 32,
                1 << 32 | SchedOp::Block as u64,
                1 << 32 | SchedOp::Shutdown as u64,
                1 << 63 | SchedOp::Shutdown as u64,
                u64::MAX,
            ]),
            [junk[0], junk[1], num(r), num(r)],
        ),
    }
}

fn timer(r: &mut Rng, env: &Env) -> Call {
    let now = env.now_ns;
    let near = match r.below(4) {
        0 => 0,
        1 => r.below(now.max(1)),
        _ => now + r.below(5 * BLOCK_NS),
    };
    let deadline = if env.avoid & avoid::FAR_TIMERS != 0 || r.one_in(2) {
        near
    } else {
        match r.below(4) {
            0 => now + 1_000_000_000 + r.below(1 << 40),
            1 => r.pick(&[u64::MAX, i64::MAX as u64, 1 << 63, u64::MAX - 1]),
            _ => now.wrapping_add(num(r)),
        }
    };
    Call::new(
        Op::Timer,
        nr::SET_TIMER,
        [deadline, num(r), num(r), num(r), num(r)],
        Oracle::exactly(0),
    )
}

fn vcpu(op: Op, r: &mut Rng, env: &Env) -> Call {
    match op {
        Op::VcpuUp => {
            let (which, valid) = vcpu_index(r, env);
            let oracle = Oracle::zero_if_valid(
                valid,
                ErrSet::of(&[Busy, Inval]),
                ErrSet::of(&[Inval, Srch]),
            );
            Call::new(
                op,
                nr::VCPU_OP,
                [VcpuOp::Up as u64, which, num(r), num(r), num(r)],
                oracle,
            )
        }
        Op::VcpuDown => Call::new(
            op,
            nr::VCPU_OP,
            [
                VcpuOp::Down as u64,
                u64::from(env.vcpu),
                num(r),
                num(r),
                num(r),
            ],
            Oracle::either(0, 0, ErrSet::of(&[Busy, Perm, Inval])),
        ),
        _ => Call::refused(
            Op::VcpuBad,
            nr::VCPU_OP,
            bad_op(r, &VcpuOp::ALL, VcpuOp::Down as u64),
            [num(r), num(r), num(r), num(r)],
        ),
    }
}

/// `domctl`/`sysctl`: well-formed requests (each would hurt someone if obeyed) or junk,
/// from an unprivileged domain: never a success.
fn control(op: Op, r: &mut Rng, env: &Env, payload: &mut [u64]) -> Call {
    let number = if op == Op::Domctl {
        nr::DOMCTL
    } else {
        nr::SYSCTL
    };
    let mut bytes = [0u8; 128];
    let neighbour = env.domain + 1;
    let encoded = if op == Op::Domctl {
        let req = match r.below(9) {
            0 => Domctl::Destroy { domain: neighbour },
            7 => Domctl::MoveToPool {
                domain: neighbour,
                pool: r.below(3) as u32,
            },
            1 => Domctl::Pause { domain: neighbour },
            2 => Domctl::Unpause { domain: 0 },
            3 => Domctl::GetInfo { domain: 0 },
            4 => Domctl::Wait { domain: neighbour },
            5 => Domctl::PauseAll,
            6 => Domctl::UnpauseAll,
            _ => Domctl::GetSnapshot {
                domain: env.domain,
                slot: 0,
            },
        };
        abi::control::encode(&req, &mut bytes)
    } else {
        let req = match r.below(15) {
            0 => Sysctl::Shutdown { code: 1 },
            8 => Sysctl::SetPoolPolicy {
                pool: 0,
                policy: "rr",
            },
            9 => Sysctl::PoolRemoveCpu { pool: 0, cpu: 0 },
            10 => Sysctl::PoolAddCpu { pool: 0, cpu: 1 },
            11 => Sysctl::PoolCreate {
                name: "evil",
                policy: "fifo",
            },
            12 => Sysctl::PoolDestroy { pool: 1 },
            13 => Sysctl::SetPoolParam {
                pool: 0,
                name: "tslice_ms",
                value: 1,
            },
            14 => Sysctl::PoolInfo { pool: 0 },
            1 => Sysctl::GetPolicy,
            2 => Sysctl::FrameCounts,
            3 => Sysctl::SetSchedParam {
                name: "tslice_ms",
                value: 1,
            },
            4 => Sysctl::BenchFloor { on: true },
            5 => Sysctl::EmitRecord { json: "{}" },
            6 => Sysctl::TakeSnapshot { slot: 0 },
            _ => Sysctl::HeapUsed,
        };
        abi::control::encode(&req, &mut bytes)
    };
    let len = encoded.unwrap_or(0);
    if r.one_in(2) {
        put_bytes(payload, &bytes[..len]);
        Call::new(
            op,
            number,
            [env.payload, len as u64, env.scratch, 256, num(r)],
            Oracle::fails(ErrSet::of(&[Perm])),
        )
    } else {
        for w in payload.iter_mut().take(16) {
            *w = r.next_u64();
        }
        let req = if r.one_in(2) { env.payload } else { wild(r) };
        let reply = if r.one_in(2) { env.scratch } else { wild(r) };
        Call::new(
            op,
            number,
            [req, num(r), reply, num(r), num(r)],
            Oracle::fails(ErrSet::of(&[Perm, Fault, Inval, TooBig])),
        )
    }
}

const NEW_PORT: Oracle = Oracle::either(1, MAX_PORTS as u64 - 1, ErrSet::of(&[Srch, NoMem, Inval]));

fn evtchn(op: Op, r: &mut Rng, env: &Env, objs: &impl Objects) -> Call {
    let ev = |op: Op, which: EvtchnOp, a1: u64, a2: u64, r: &mut Rng, oracle: Oracle| {
        Call::new(
            op,
            nr::EVTCHN_OP,
            [which as u64, a1, a2, num(r), num(r)],
            oracle,
        )
    };
    let bad_port = ErrSet::of(&[Inval]);
    match op {
        Op::EvAlloc => {
            let (d, who) = domain(r, env);
            let oracle = if who == Who::Nobody {
                Oracle::fails(ErrSet::of(&[Srch, Inval]))
            } else {
                NEW_PORT
            };
            ev(op, EvtchnOp::AllocUnbound, d, num(r), r, oracle).with(Effect::NewPort)
        }
        Op::EvBind => {
            let (d, who) = domain(r, env);
            let (rport, valid) = if r.one_in(5) {
                (r.pick(&[0, 1024, u64::from(u32::MAX), 1 << 32 | 1]), false)
            } else {
                // Ports are handed out lowest first too; a fuzzer holds up to 64.
                let span = if r.one_in(4) { 64 } else { 8 };
                (1 + r.below(span), true)
            };
            let oracle = if who == Who::Other && valid {
                Oracle::either(
                    1,
                    MAX_PORTS as u64 - 1,
                    ErrSet::of(&[Srch, Inval, NoMem, Perm, Busy]),
                )
            } else {
                Oracle::fails(ErrSet::of(&[Srch, Inval]))
            };
            ev(op, EvtchnOp::BindInterdomain, d, rport, r, oracle).with(Effect::NewPort)
        }
        Op::EvSend => {
            let (p, valid) = port(r, objs);
            let oracle = Oracle::zero_if_valid(
                valid,
                ErrSet::of(&[Inval, Srch]),
                ErrSet::of(&[Inval, Srch]),
            );
            ev(op, EvtchnOp::Send, p, num(r), r, oracle)
        }
        Op::EvClose => {
            let (p, valid) = port(r, objs);
            let oracle = Oracle::zero_if_valid(valid, bad_port, bad_port);
            ev(op, EvtchnOp::Close, p, num(r), r, oracle).with(Effect::ClosedPort(p as u32))
        }
        Op::EvVirq => {
            let (target, valid) = vcpu_index(r, env);
            let virq = match r.below(4) {
                0 | 1 => u64::from(nr::virq::TIMER),
                2 => u64::from(nr::virq::DOM_EXC),
                _ => r.pick(&[
                    u64::from(nr::virq::COUNT),
                    3,
                    1 << 32,
                    u64::from(u32::MAX),
                    u64::MAX,
                ]),
            };
            let oracle = if virq == u64::from(nr::virq::DOM_EXC) {
                Oracle::fails(ErrSet::of(&[Perm, Inval]))
            } else if virq == u64::from(nr::virq::TIMER) && valid {
                Oracle::either(1, MAX_PORTS as u64 - 1, ErrSet::of(&[NoMem, Busy, Inval]))
            } else {
                Oracle::fails(ErrSet::of(&[Inval]))
            };
            ev(op, EvtchnOp::BindVirq, virq, target, r, oracle).with(Effect::NewPort)
        }
        Op::EvBindVcpu => {
            let (p, pvalid) = port(r, objs);
            let (target, valid) = vcpu_index(r, env);
            let oracle = if pvalid && valid {
                Oracle::either(0, 0, bad_port)
            } else {
                Oracle::fails(bad_port)
            };
            ev(op, EvtchnOp::BindVcpu, p, target, r, oracle)
        }
        Op::EvUnmask => {
            let (p, valid) = port(r, objs);
            let oracle = Oracle::zero_if_valid(valid, bad_port, bad_port);
            ev(op, EvtchnOp::Unmask, p, num(r), r, oracle)
        }
        _ => Call::refused(
            Op::EvBad,
            nr::EVTCHN_OP,
            bad_op(r, &EvtchnOp::ALL, EvtchnOp::Send as u64),
            [port(r, objs).0, num(r), num(r), num(r)],
        ),
    }
}

fn callback(r: &mut Rng, env: &Env) -> Call {
    let (entry, oracle) = match r.below(4) {
        0 => (0, Oracle::exactly(0)),
        1 => (
            if r.one_in(2) {
                env.text
            } else {
                r.below(USER_LIMIT)
            },
            Oracle::either(0, 0, ErrSet::of(&[Inval, Fault])),
        ),
        _ => {
            let (high, image) = (USER_LIMIT + r.below(1 << 40), r.below(1 << 20));
            (
                r.pick(&[
                    USER_LIMIT,
                    high,
                    0xffff_8000_0000_0000,
                    0xffff_ffff_8000_0000 + image,
                    u64::MAX,
                ]),
                Oracle::fails(ErrSet::of(&[Inval, Fault])),
            )
        }
    };
    Call::new(
        Op::Callback,
        nr::SET_CALLBACK,
        [entry, num(r), num(r), num(r), num(r)],
        oracle,
    )
}

/// `callback_return` to a frame the executor completes: the payload holds an
/// `UpcallFrame` whose registers and RFLAGS are random (TF, NT, IOPL, AC, VM, RF among
/// them: the hypervisor must not let those through); the executor writes its RIP and RSP.
fn callback_return(r: &mut Rng, payload: &mut [u64]) -> Call {
    for w in payload.iter_mut().take(9) {
        *w = num(r);
    }
    payload[9] = r.next_u64()
        & (flags::USER_SETTABLE | flags::IOPL | flags::VM | flags::RF | flags::IF | flags::VIF);
    payload[10] = 0;
    payload[11] = 0;
    Call::new(
        Op::CallbackReturn,
        nr::CALLBACK_RETURN,
        [0; 5],
        Oracle::exactly(0),
    )
}

/// A page to grant: `(va, may succeed, only read-only)`. The domain's grant pages may go
/// read-write; its text and whatever its `MAP_AREA` maps (possibly its own stack, aliased)
/// only read-only, or a neighbour that maps them would write into the fuzzer itself, which
/// the ABI allows and which would only test the fuzzer. The shared-info page, the page
/// tables and wild addresses must be refused.
fn grant_va(r: &mut Rng, env: &Env) -> (u64, bool, bool) {
    match r.below(10) {
        0..=4 => (r.pick(&env.grant_pages), true, false),
        5 => (env.text & !0xfff, true, true),
        6 => (MAP_AREA + r.below(512) * 4096, true, true),
        7 => (r.pick(&[SHARED_INFO, PT_WINDOW]), false, false),
        _ => (wild(r), false, false),
    }
}

fn grant(op: Op, r: &mut Rng, env: &Env, objs: &impl Objects, payload: &mut [u64]) -> Call {
    let gop = |op: Op, which: GrantOp, a: [u64; 4], oracle: Oracle| {
        Call::new(
            op,
            nr::GRANT_OP,
            [which as u64, a[0], a[1], a[2], a[3]],
            oracle,
        )
    };
    match op {
        Op::Grant => {
            let (va, own, only_ro) = grant_va(r, env);
            let (d, who) = domain(r, env);
            let junk = num(r) | 1;
            let readonly = if only_ro {
                junk
            } else {
                r.pick(&[0, 0, 1, junk])
            };
            let oracle = if own && who == Who::Other {
                Oracle::either(
                    1,
                    u64::from(u32::MAX),
                    ErrSet::of(&[NoMem, Srch, Inval, Perm, Busy, Fault]),
                )
            } else {
                Oracle::fails(ErrSet::of(&[Inval, Perm, Fault, Srch]))
            };
            gop(op, GrantOp::Grant, [va, d, readonly, num(r)], oracle).with(Effect::NewGref)
        }
        Op::GrantEnd => {
            let (gref, valid) = if r.one_in(5) {
                (
                    r.pick(&[0, u64::from(u32::MAX), 1 << 32 | 1, u64::MAX]),
                    false,
                )
            } else {
                (objs.gref(r).map_or_else(|| 1 + r.below(8), u64::from), true)
            };
            let oracle =
                Oracle::zero_if_valid(valid, ErrSet::of(&[Busy, Inval]), ErrSet::of(&[Inval]));
            gop(op, GrantOp::End, [gref, num(r), num(r), num(r)], oracle)
                .with(Effect::EndedGref(gref as u32))
        }
        Op::GrantMap => {
            let (d, who) = domain(r, env);
            let (gref, gvalid) = foreign_gref(r);
            let (va, vvalid) = match r.below(8) {
                0..=5 => (MAP_AREA + r.below(512) * 4096, true),
                6 => (MAP_AREA + r.below(512) * 4096 + 1 + r.below(4095), false),
                _ => {
                    let w = wild(r) & !0xfff;
                    (
                        r.pick(&[
                            MAP_AREA - 4096,
                            MAP_AREA + MAP_AREA_BYTES,
                            env.text & !0xfff,
                            env.scratch & !0xfff,
                            w,
                        ]),
                        false,
                    )
                }
            };
            let junk = num(r);
            let readonly = r.pick(&[0, 1, junk]);
            let oracle = if who == Who::Other && gvalid && vvalid {
                Oracle::either(
                    0,
                    u64::from(u32::MAX),
                    ErrSet::of(&[Srch, Inval, Perm, Busy, NoMem]),
                )
            } else {
                Oracle::fails(ErrSet::of(&[Srch, Inval, Perm, Fault]))
            };
            gop(op, GrantOp::Map, [d, gref, va, readonly], oracle).with(Effect::NewHandle {
                va,
                writable: readonly == 0,
            })
        }
        Op::GrantUnmap => {
            let (h, valid) = if r.one_in(5) {
                (
                    r.pick(&[0, u64::from(u32::MAX), 1 << 32 | 1, u64::MAX]),
                    false,
                )
            } else {
                (
                    objs.handle(r).map_or_else(|| 1 + r.below(8), u64::from),
                    true,
                )
            };
            let oracle = Oracle::zero_if_valid(valid, ErrSet::of(&[Inval]), ErrSet::of(&[Inval]));
            gop(op, GrantOp::Unmap, [h, num(r), num(r), num(r)], oracle)
                .with(Effect::Unmapped(h as u32))
        }
        Op::GrantCopy => grant_copy(r, env, payload),
        _ => Call::refused(
            Op::GrantBad,
            nr::GRANT_OP,
            bad_op(r, &GrantOp::ALL, GrantOp::Map as u64),
            [num(r), num(r), MAP_AREA, num(r)],
        ),
    }
}

/// `grant_op Copy`: the `GrantCopy` in the payload names a granter, a reference, a range of
/// the granted page and a local buffer; any invalid part must make it fail, and a local
/// buffer the guest cannot write must never be written.
fn grant_copy(r: &mut Rng, env: &Env, payload: &mut [u64]) -> Call {
    let (granter, who) = domain(r, env);
    let (gref, gvalid) = foreign_gref(r);
    let (offset, len, range_ok) = if r.one_in(5) {
        let (o, l) = r.pick(&[
            (4096, 1),
            (0, 4097),
            (4095, 2),
            (1, u64::from(u32::MAX)),
            (u64::from(u32::MAX), 1),
        ]);
        (o, l, false)
    } else {
        let o = r.below(4096);
        (o, r.below(4096 - o + 1), true)
    };
    let to_grant = r.pick(&[0, 1, 0x8000_0000, u64::from(u32::MAX)]);
    let (local, local_ok) = match r.below(6) {
        0..=3 => (env.scratch + r.below(SCRATCH_BYTES - 4096), true),
        // Read-only: fine to copy from, never to write (a copy of 0 bytes writes nothing).
        4 => (env.text, to_grant != 0 || len == 0),
        // Nothing of it may be touched: only a copy of 0 bytes may succeed.
        _ => (wild(r), len == 0),
    };
    payload[0] = (granter & 0xffff_ffff) | gref << 32;
    payload[1] = offset | len << 32;
    payload[2] = local;
    payload[3] = to_grant | num(r) << 32;
    // A granter or reference above 32 bits is truncated into the struct: such a call is
    // about another domain or reference, which the oracle cannot tell apart.
    let aliased = granter > u64::from(u32::MAX) || gref > u64::from(u32::MAX);
    let (ptr, ptr_ok) = if r.one_in(6) {
        (wild(r), false)
    } else {
        (env.payload, true)
    };
    let may = ptr_ok && range_ok && local_ok && (aliased || (who == Who::Other && gvalid));
    let oracle = if may {
        Oracle::either(0, len, ErrSet::of(&[Srch, Inval, Perm, Fault, Busy]))
    } else {
        Oracle::fails(ErrSet::of(&[Srch, Inval, Perm, Fault]))
    };
    Call::new(
        Op::GrantCopy,
        nr::GRANT_OP,
        [GrantOp::Copy as u64, ptr, num(r), num(r), num(r)],
        oracle,
    )
}

/// Frames that are not the domain's: the hypervisor's image (loaded at 1 MiB) and frames
/// past any RAM.
fn foreign_mfn(r: &mut Rng) -> u64 {
    match r.below(3) {
        0 => 0x100 + r.below(0x100),
        1 => pte::ADDRESS >> 12,
        _ => (1 << 38) + r.below(1 << 20),
    }
}

/// Extra bits a guest may set in a present entry.
fn allowed_bits(r: &mut Rng) -> u64 {
    r.next_u64()
        & (pte::WRITE_THROUGH | pte::NO_CACHE | pte::ACCESSED | pte::DIRTY | pte::NO_EXECUTE)
}

/// A level-1 entry the ABI allows in `MAP_AREA` (mapping may still fail, e.g. a frame
/// another vCPU gave back).
fn allowed_leaf(r: &mut Rng, env: &Env, objs: &impl Objects) -> u64 {
    let base = pte::PRESENT | pte::USER;
    match r.below(8) {
        0 => 0,
        1 => r.next_u64() & !(pte::PRESENT | pte::GRANT_MAPPED),
        2 => (env.facts.root & pte::ADDRESS) | base | allowed_bits(r),
        3 => (env.facts.shared_mfn << 12) | base | allowed_bits(r),
        4 => (env.facts.live_mfn << 12) | base | pte::WRITABLE | allowed_bits(r),
        _ => match objs.frame(r) {
            Some(f) => (f << 12) | base | allowed_bits(r) | (r.next_u64() & pte::WRITABLE),
            None => 0,
        },
    }
}

/// A present level-1 entry the ABI refuses: a reserved, huge/PAT, global or grant bit; a
/// frame not the domain's; a page table or the shared-info page writable; no user bit.
fn refused_leaf(r: &mut Rng, env: &Env, objs: &impl Objects) -> u64 {
    let base = pte::PRESENT | pte::USER;
    let own = objs.frame(r).unwrap_or(env.facts.live_mfn) << 12;
    match r.below(7) {
        0 => {
            let high = 1 << (52 + r.below(11));
            let bad = r.pick(&[
                pte::HUGE_OR_PAT,
                pte::GLOBAL,
                pte::GRANT_MAPPED,
                1 << 10,
                1 << 11,
                high,
            ]);
            own | base | bad | allowed_bits(r)
        }
        1 | 2 => (foreign_mfn(r) << 12) | base | allowed_bits(r) | (r.next_u64() & pte::WRITABLE),
        3 => (env.facts.root & pte::ADDRESS) | base | pte::WRITABLE,
        4 => (env.facts.map_l1 & pte::ADDRESS) | base | pte::WRITABLE,
        5 => (env.facts.shared_mfn << 12) | base | pte::WRITABLE,
        _ => (env.facts.live_mfn << 12) | pte::PRESENT | pte::WRITABLE,
    }
}

/// One `mmu_update` request and whether the ABI must refuse it.
fn mmu_request(r: &mut Rng, env: &Env, objs: &impl Objects) -> (u64, u64, bool) {
    let f = env.facts;
    let map_entry = |r: &mut Rng| f.map_l1 + r.below(512) * 8;
    match r.below(10) {
        0..=2 if f.map_l1 != 0 => (map_entry(r), allowed_leaf(r, env, objs), false),
        3 | 4 if f.map_l1 != 0 => (map_entry(r), refused_leaf(r, env, objs), true),
        5 if f.live_l1e != 0 => (f.live_l1e, refused_leaf(r, env, objs), true),
        6 => {
            // An unused slot of the root, far from everything the domain uses: linking a
            // frame of its own there makes it a level-3 table.
            let ptr = f.root + (1 + r.below(127)) * 8;
            let val = match r.below(4) {
                0 => 0,
                1 => (f.root & pte::ADDRESS) | pte::PRESENT | pte::USER | pte::WRITABLE,
                _ => objs
                    .frame(r)
                    .map_or(0, |m| (m << 12) | pte::PRESENT | pte::USER | pte::WRITABLE),
            };
            (
                ptr,
                val,
                val & pte::ADDRESS == f.root & pte::ADDRESS && val != 0,
            )
        }
        7 => (f.root + (256 + r.below(256)) * 8, r.next_u64(), true),
        _ => {
            let ptr = match r.below(4) {
                0 => f.map_l1.max(f.root) + 1 + r.below(7),
                1 => (foreign_mfn(r) << 12) + r.below(512) * 8,
                2 => pte::ADDRESS + r.below(512) * 8,
                _ => !7,
            };
            (ptr, r.next_u64(), true)
        }
    }
}

fn mmu(r: &mut Rng, env: &Env, objs: &impl Objects, payload: &mut [u64]) -> Call {
    const ERRS: ErrSet = ErrSet::of(&[Inval, Perm, Busy, Fault, NoMem, Srch]);
    let bad_count = r.one_in(8);
    let n = if r.one_in(16) {
        1 + r.below(nr::MMU_BATCH)
    } else {
        1 + r.below(8)
    };
    let mut first_refused = n;
    for i in 0..n {
        let (ptr, val, refused) = mmu_request(r, env, objs);
        payload[2 * i as usize] = ptr;
        payload[2 * i as usize + 1] = val;
        if refused && first_refused == n {
            first_refused = i;
        }
    }
    let (ptr, count, oracle) = if bad_count {
        (
            if r.one_in(2) { env.payload } else { wild(r) },
            r.pick(&[0, nr::MMU_BATCH + 1, 1 << 32 | 1, u64::MAX]),
            Oracle::fails(ErrSet::of(&[Inval, Fault, TooBig])),
        )
    } else if r.one_in(8) {
        (wild(r), n, Oracle::fails(ErrSet::of(&[Fault, Inval])))
    } else if r.one_in(16) && env.image_end != 0 {
        // The requests run off the end of mapped memory: the mapped ones are the image's
        // own bytes, which may be anything; none past the end may be applied.
        let (ptr, mapped) = straddle(r, env, 16);
        let count = mapped + 1 + r.below(40);
        let oracle = Oracle::either(1, mapped, ERRS.with(ErrSet::of(&[Fault])));
        (ptr, count, oracle)
    } else if first_refused == 0 {
        (env.payload, n, Oracle::fails(ERRS))
    } else {
        (env.payload, n, Oracle::either(1, first_refused, ERRS))
    };
    Call::new(
        Op::Mmu,
        nr::MMU_UPDATE,
        [ptr, count, num(r), num(r), num(r)],
        oracle,
    )
}

fn update_va(r: &mut Rng, env: &Env, objs: &impl Objects) -> Call {
    const ERRS: ErrSet = ErrSet::of(&[Inval, Perm, Busy, Fault, NoMem, Srch]);
    let (va, pte, oracle) = match r.below(8) {
        0..=2 => (
            MAP_AREA + r.below(512) * 4096,
            allowed_leaf(r, env, objs),
            Oracle::either(0, 0, ERRS),
        ),
        3 | 4 => (
            MAP_AREA + r.below(512) * 4096,
            refused_leaf(r, env, objs),
            Oracle::fails(ERRS),
        ),
        5 if env.facts.live_va != 0 => (
            env.facts.live_va,
            refused_leaf(r, env, objs),
            Oracle::fails(ERRS),
        ),
        _ => {
            let (a, b) = (r.below(1 << 30), r.below(1 << 30));
            (
                r.pick(&[
                    USER_LIMIT,
                    0xffff_8000_0000_0000 + a,
                    0xffff_ffff_8000_0000,
                    !0xfff,
                    0x5000_0000_0000 + b,
                ]),
                if r.one_in(2) {
                    0
                } else {
                    allowed_leaf(r, env, objs)
                },
                Oracle::fails(ERRS),
            )
        }
    };
    Call::new(
        Op::Uva,
        nr::UPDATE_VA_MAPPING,
        [va, pte, num(r), num(r), num(r)],
        oracle,
    )
}

/// A frame to give back and whether the ABI must refuse it (not the domain's, or mapped).
fn give_back_frame(r: &mut Rng, env: &Env, objs: &impl Objects) -> (u64, bool) {
    match r.below(8) {
        0..=3 => match objs.frame(r) {
            Some(f) => (f, false),
            None => (foreign_mfn(r), true),
        },
        4 => (foreign_mfn(r), true),
        5 => (env.facts.live_mfn, true),
        6 => (env.facts.root >> 12, true),
        _ => (r.pick(&[env.facts.shared_mfn, 0, u64::MAX]), true),
    }
}

fn memory(op: Op, r: &mut Rng, env: &Env, objs: &impl Objects, payload: &mut [u64]) -> Call {
    let mem = |op: Op, which: MemoryOp, list: u64, count: u64, r: &mut Rng, oracle: Oracle| {
        Call::new(
            op,
            nr::MEMORY_OP,
            [which as u64, list, count, num(r), num(r)],
            oracle,
        )
    };
    match op {
        Op::MemInc => {
            // The hypervisor writes up to min(count, frames left) words at the list: with
            // the payload as the list, a count past it is only allowed when every frame
            // the domain may hold fits.
            let room = env.frames_limit <= PAYLOAD_WORDS as u64;
            match r.below(6) {
                0..=3 => {
                    let count = if room && r.one_in(4) {
                        num(r)
                    } else {
                        r.below(17)
                    };
                    mem(
                        op,
                        MemoryOp::IncreaseReservation,
                        env.payload,
                        count,
                        r,
                        Oracle::either(0, count.min(env.frames_limit), ErrSet::of(&[NoMem])),
                    )
                    .with(Effect::NewFrames)
                }
                _ => {
                    let list = if r.one_in(2) { env.text } else { wild(r) };
                    mem(
                        op,
                        MemoryOp::IncreaseReservation,
                        list,
                        1 + r.below(16),
                        r,
                        Oracle::either(0, 0, ErrSet::of(&[Fault, Inval, NoMem])),
                    )
                }
            }
        }
        Op::MemDec => {
            const ERRS: ErrSet = ErrSet::of(&[Inval, Perm, Busy, Fault, Srch]);
            let n = 1 + r.below(4);
            let mut first_refused = n;
            for i in 0..n {
                let (f, refused) = give_back_frame(r, env, objs);
                payload[i as usize] = f;
                if refused && first_refused == n {
                    first_refused = i;
                }
            }
            let (list, count, oracle) = match r.below(8) {
                0 => (env.payload, 0, Oracle::either(0, 0, ErrSet::of(&[Inval]))),
                1 => (wild(r), n, Oracle::fails(ErrSet::of(&[Fault, Inval]))),
                _ if first_refused == 0 => (env.payload, n, Oracle::fails(ERRS)),
                _ => (env.payload, n, Oracle::either(1, first_refused, ERRS)),
            };
            mem(op, MemoryOp::DecreaseReservation, list, count, r, oracle).with(Effect::GaveBack)
        }
        Op::MemCur => mem(
            op,
            MemoryOp::CurrentReservation,
            num(r),
            num(r),
            r,
            Oracle::either(1, env.frames_limit, ErrSet::NONE),
        ),
        Op::MemMax => mem(
            op,
            MemoryOp::MaximumReservation,
            num(r),
            num(r),
            r,
            Oracle::exactly(env.frames_limit),
        ),
        _ => Call::refused(
            Op::MemBad,
            nr::MEMORY_OP,
            r.pick(&[4, 5, 1 << 32, 1 << 32 | 1, 1 << 63, u64::MAX]),
            [env.payload, 1, num(r), num(r)],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects as a fuzzer holding a few of each would see them.
    struct Held {
        ports: Vec<u32>,
        grefs: Vec<u32>,
        handles: Vec<u32>,
        frames: Vec<u64>,
    }

    impl Objects for Held {
        fn port(&self, r: &mut Rng) -> Option<u32> {
            (!self.ports.is_empty()).then(|| r.pick(&self.ports))
        }
        fn gref(&self, r: &mut Rng) -> Option<u32> {
            (!self.grefs.is_empty()).then(|| r.pick(&self.grefs))
        }
        fn handle(&self, r: &mut Rng) -> Option<u32> {
            (!self.handles.is_empty()).then(|| r.pick(&self.handles))
        }
        fn frame(&self, r: &mut Rng) -> Option<u64> {
            (!self.frames.is_empty()).then(|| r.pick(&self.frames))
        }
    }

    const TEXT: u64 = 0x40_8000;
    const PAYLOAD: u64 = 0x41_0000;
    const SCRATCH: u64 = 0x41_2000;
    const ROOT: u64 = 0x0123_4000;
    const MAP_L1: u64 = 0x0123_8000;
    const LIVE_L1E: u64 = 0x0123_9008;

    fn env(vcpu: u32, vcpus: u32) -> Env {
        Env {
            domain: 3,
            vcpus,
            vcpu,
            now_ns: 5_000_000_000,
            avoid: 0,
            ops: 0,
            frames_limit: 256,
            payload: PAYLOAD,
            scratch: SCRATCH,
            text: TEXT,
            text_len: 200,
            image_end: 0x48_0000,
            grant_pages: core::array::from_fn(|i| 0x42_0000 + i as u64 * 4096),
            facts: Facts {
                root: ROOT,
                map_l1: MAP_L1,
                live_va: 0x40_1000,
                live_l1e: LIVE_L1E,
                live_mfn: 0x2222,
                shared_mfn: 0x3333,
            },
        }
    }

    fn held() -> Held {
        Held {
            ports: vec![1, 2, 5],
            grefs: vec![1, 3],
            handles: vec![1],
            frames: vec![0x5000, 0x5001],
        }
    }

    /// Generates `n` calls (with their payloads) from `seed`.
    fn calls(seed: u64, e: &Env, n: usize) -> Vec<(Call, Vec<u64>)> {
        let mut r = Rng::new(seed);
        let objs = held();
        (0..n)
            .map(|_| {
                let mut payload = vec![0u64; PAYLOAD_WORDS];
                let c = call(&mut r, e, &objs, &mut payload);
                (c, payload)
            })
            .collect()
    }

    #[test]
    fn the_stream_is_fixed_by_the_seed() {
        let e = env(0, 1);
        let key = |v: &[(Call, Vec<u64>)]| -> Vec<(u64, [u64; 5])> {
            v.iter().map(|(c, _)| (c.nr, c.args)).collect()
        };
        assert_eq!(key(&calls(42, &e, 500)), key(&calls(42, &e, 500)));
        assert_ne!(key(&calls(42, &e, 500)), key(&calls(43, &e, 500)));
        let mut a = Rng::new(9);
        let mut b = Rng::new(9);
        assert_eq!(entry(&mut a, &e), entry(&mut b, &e));
    }

    #[test]
    fn every_hypercall_and_op_is_drawn() {
        let e = env(1, 2);
        let all = calls(1, &e, 100_000);
        for op in Op::ALL {
            assert!(all.iter().any(|(c, _)| c.op == op), "{op:?} never drawn");
        }
        for number in 0..=nr::MEMORY_OP {
            assert!(
                all.iter().any(|(c, _)| c.nr == number),
                "hypercall {number} never drawn"
            );
        }
        assert!(all.iter().any(|(c, _)| c.nr > nr::MEMORY_OP && c.nr < 64));
        assert!(
            all.iter()
                .any(|(c, _)| c.nr >> 32 == 1 && c.nr & 0xffff_ffff <= 13)
        );
        for v in [0, u64::MAX, 0xffff_8000_0000_0000, 1 << 32 | 1, 1024] {
            assert!(
                all.iter().any(|(c, _)| c.args.contains(&v)),
                "{v:#x} never an argument"
            );
        }
        // Each region of wild pointers is used.
        for (lo, hi) in [
            (0, 0x1000),
            (USER_LIMIT, 1 << 63),
            (0xffff_8000_0000_0000, 0xffff_8000_4000_0000),
            (0xffff_ffff_8000_0000, u64::MAX - 4096),
        ] {
            assert!(
                all.iter()
                    .any(|(c, _)| c.nr == nr::CONSOLE_WRITE && (lo..hi).contains(&c.args[0])),
                "no console write at {lo:#x}..{hi:#x}"
            );
        }
    }

    #[test]
    fn the_generator_never_ends_or_wedges_its_own_domain() {
        for (vcpu, vcpus) in [(0, 1), (0, 2), (1, 2)] {
            let e = env(vcpu, vcpus);
            for (c, payload) in calls(u64::from(vcpu) * 7 + u64::from(vcpus), &e, 100_000) {
                assert!(
                    !(c.nr == nr::SCHED_OP && c.args[0] == SchedOp::Shutdown as u64),
                    "shutdown drawn"
                );
                if c.nr == nr::VCPU_OP && c.args[0] == VcpuOp::Down as u64 {
                    assert!(vcpu > 0 && vcpus > 1, "vCPU {vcpu} of {vcpus} taken down");
                    assert_eq!(c.args[1], u64::from(vcpu));
                }
                if c.op == Op::CallbackReturn {
                    assert_eq!(c.nr, nr::CALLBACK_RETURN);
                } else {
                    assert_ne!(c.nr, nr::CALLBACK_RETURN);
                }
                if c.nr == nr::MMU_UPDATE && c.args[0] == PAYLOAD && c.args[1] <= nr::MMU_BATCH {
                    for i in 0..c.args[1] as usize {
                        let (ptr, val) = (payload[2 * i], payload[2 * i + 1]);
                        // The live entry only ever gets a present value the ABI refuses,
                        // and the root's slot 0 (the image, the stacks) is never touched.
                        if ptr == LIVE_L1E {
                            assert_ne!(val & pte::PRESENT, 0, "live entry cleared");
                        }
                        assert_ne!(ptr, ROOT, "root slot 0 written");
                    }
                }
                if c.nr == nr::UPDATE_VA_MAPPING && c.args[0] == 0x40_1000 {
                    assert_ne!(c.args[1] & pte::PRESENT, 0);
                    assert!(c.oracle.ok.is_none());
                }
                if c.nr == nr::MEMORY_OP
                    && c.args[0] == MemoryOp::IncreaseReservation as u64
                    && c.args[1] == PAYLOAD
                {
                    assert!(
                        c.args[2].min(e.frames_limit) <= PAYLOAD_WORDS as u64,
                        "the hypervisor could write past the payload"
                    );
                }
                if c.arm_timer {
                    assert!(c.nr == nr::SCHED_OP);
                }
                if c.nr == nr::SCHED_OP && c.args[0] == SchedOp::Block as u64 {
                    assert!(c.arm_timer, "block without a timer");
                }
            }
        }
    }

    #[test]
    fn wild_pointers_and_impossible_objects_never_may_succeed() {
        let e = env(0, 1);
        let mut straddles = 0;
        for (c, payload) in calls(5, &e, 100_000) {
            let ok = c.oracle.ok.is_some();
            match c.nr {
                nr::CONSOLE_WRITE if is_wild(c.args[0]) && c.args[1] > 0 => assert!(!ok),
                // Straddling the end of mapped memory: never more than what is mapped.
                nr::CONSOLE_WRITE | nr::MMU_UPDATE
                    if (e.image_end - 4096..e.image_end).contains(&c.args[0]) =>
                {
                    straddles += 1;
                    let unit = if c.nr == nr::MMU_UPDATE { 16 } else { 1 };
                    let mapped = (e.image_end - c.args[0]) / unit;
                    assert!(c.args[1] > mapped, "{c:?}");
                    assert!(c.oracle.ok.is_none_or(|(_, hi)| hi <= mapped), "{c:?}");
                }
                nr::DOMCTL | nr::SYSCTL => assert!(!ok),
                n if n > nr::MEMORY_OP => assert!(!ok),
                nr::EVTCHN_OP if c.args[0] == EvtchnOp::Send as u64 && c.args[1] >= 1024 => {
                    assert!(!ok)
                }
                nr::GRANT_OP if c.args[0] == GrantOp::Copy as u64 => {
                    let local = payload[2];
                    let len = payload[1] >> 32;
                    let to_grant = payload[3] & 0xffff_ffff != 0;
                    if is_wild(local) && len > 0 || is_wild(c.args[1]) {
                        assert!(!ok, "{c:?}");
                    }
                    // Out of a granted page into read-only memory: never, unless 0 bytes.
                    if local == TEXT && !to_grant && len > 0 {
                        assert!(!ok, "{c:?}");
                    }
                }
                nr::GRANT_OP if c.args[0] == GrantOp::Map as u64 => {
                    let va = c.args[3];
                    if !(MAP_AREA..MAP_AREA + MAP_AREA_BYTES).contains(&va) || va & 0xfff != 0 {
                        assert!(!ok);
                    }
                }
                nr::SET_CALLBACK if c.args[0] >= USER_LIMIT => assert!(!ok),
                nr::GRANT_OP
                    if c.args[0] == GrantOp::Grant as u64
                        && ok
                        && !e.grant_pages.contains(&c.args[1]) =>
                {
                    assert_ne!(c.args[3], 0, "a page not meant for it granted read-write");
                }
                nr::MEMORY_OP
                    if c.args[0] == MemoryOp::IncreaseReservation as u64 && is_wild(c.args[1]) =>
                {
                    assert_eq!(c.oracle.ok, Some((0, 0)));
                }
                _ => {}
            }
        }
        assert!(
            straddles > 100,
            "{straddles} calls straddle the end of mapped memory"
        );
    }

    #[test]
    fn a_valid_grant_copy_of_nothing_may_succeed_wherever_it_points() {
        // Found by the fuzzer itself on the hypervisor (seed 7, bench-fuzz): a copy of 0 bytes
        // out of a valid grant into read-only memory succeeded with 0, which the ABI allows
        // (nothing is written), but the oracle had refused any success.
        let e = env(0, 1);
        let mut r = Rng::new(17);
        let mut seen = 0;
        for _ in 0..400_000 {
            let mut payload = vec![0u64; PAYLOAD_WORDS];
            let c = grant_copy(&mut r, &e, &mut payload);
            let (granter, gref) = (payload[0] & 0xffff_ffff, payload[0] >> 32);
            let (offset, len) = (payload[1] & 0xffff_ffff, payload[1] >> 32);
            if len == 0
                && c.args[1] == PAYLOAD
                && offset <= 4096
                && (1..=8).contains(&gref)
                && [2, 4].contains(&granter)
            {
                seen += 1;
                assert!(c.oracle.ok.is_some(), "{c:?} {:x?}", &payload[..4]);
            }
        }
        assert!(seen > 10, "{seen} valid copies of 0 bytes");
    }

    #[test]
    fn refused_requests_bound_what_a_batch_may_apply() {
        let e = env(0, 1);
        let objs = held();
        let mut r = Rng::new(11);
        let mut seen_refused_first = false;
        for _ in 0..20_000 {
            let mut payload = vec![0u64; PAYLOAD_WORDS];
            let c = mmu(&mut r, &e, &objs, &mut payload);
            if c.args[0] != PAYLOAD || c.args[1] == 0 || c.args[1] > nr::MMU_BATCH {
                continue;
            }
            let first = payload[0];
            // A request into the hypervisor's half of the root must be refused: a batch
            // starting with one may not succeed at all.
            if (ROOT + 256 * 8..ROOT + 4096).contains(&first) {
                seen_refused_first = true;
                assert!(c.oracle.ok.is_none(), "{c:?}");
            }
            if let Some((lo, hi)) = c.oracle.ok {
                assert!(lo >= 1 && hi <= c.args[1]);
            }
        }
        assert!(seen_refused_first);
    }

    #[test]
    fn the_ops_mask_restricts_the_draw() {
        let mut e = env(0, 1);
        e.ops = 1 << Op::Timer as u8 | 1 << Op::Mmu as u8;
        let mut r = Rng::new(4);
        let objs = held();
        let mut seen = [false; 2];
        for _ in 0..2000 {
            let mut payload = vec![0u64; PAYLOAD_WORDS];
            let c = call(&mut r, &e, &objs, &mut payload);
            assert!(c.op == Op::Timer || c.op == Op::Mmu, "{:?}", c.op);
            seen[usize::from(c.op == Op::Mmu)] = true;
        }
        assert_eq!(seen, [true, true]);
        e.ops = 1 << Op::VcpuDown as u8;
        assert_eq!(
            call(&mut r, &e, &objs, &mut vec![0; PAYLOAD_WORDS]).op,
            Op::Null
        );
    }

    #[test]
    fn entry_state_respects_the_avoid_bits_and_never_sets_tf() {
        let mut e = env(0, 1);
        let mut r = Rng::new(3);
        let mut nt = false;
        for _ in 0..10_000 {
            let s = entry(&mut r, &e);
            assert_eq!(s.flags & flags::TF, 0);
            assert_eq!(canonical(s.rsp), s.rsp, "a non-canonical RSP");
            nt |= s.flags & flags::NT != 0;
        }
        assert!(nt);
        e.avoid = avoid::NT | avoid::FAR_TIMERS | avoid::POLL_SLEEP;
        let objs = held();
        let mut varied = entry(&mut r, &e);
        for _ in 0..50_000 {
            assert_eq!(entry(&mut r, &e).flags & flags::NT, 0);
            vary_entry(&mut r, &e, &mut varied);
            assert_eq!(varied.flags & (flags::NT | flags::TF), 0);
            let mut payload = vec![0u64; PAYLOAD_WORDS];
            let c = call(&mut r, &e, &objs, &mut payload);
            if c.nr == nr::SET_TIMER {
                assert!(c.args[0] <= e.now_ns + 5 * BLOCK_NS);
            }
            if c.nr == nr::SCHED_OP && c.args[0] == SchedOp::Poll as u64 {
                assert!(
                    !c.arm_timer && c.oracle.ok.is_none(),
                    "a poll that may sleep"
                );
            }
        }
    }
}
