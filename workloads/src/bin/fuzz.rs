//! `fuzz`: a seeded hypercall fuzzer in the Hyper-Cube style, a bystander that watches its
//! own state while fuzzers run, and a thrower of every exception a guest can raise.
//!
//! `mode` 0 (fuzz): each vCPU issues its share of `calls` hypercalls made by
//! `workloads::fuzz::generator` from the seed (every number and operation of the ABI, edge
//! arguments, wild pointers, buffers running off the end of mapped memory, the objects the
//! domain holds), each entered with random general registers, a random (canonical) RSP, XMM
//! registers and RFLAGS, through the assembly below, which
//! records every register after the `syscall` returns. Each result must be one its oracle
//! allows and the registers must come back as the ABI says (`workloads::fuzz`). Ports,
//! grant references, mappings and frames go into tables all vCPUs share, so the vCPUs of a
//! multi-vCPU domain race on them (closing a port another is sending on, unmapping what
//! another maps), and the domain's neighbours (ids one or two away) are the other side of
//! its grants and channels. Every few thousand calls, structured checks: an event upcall
//! from the timer VIRQ must arrive, a grant mapping it holds must still be readable, its
//! read-only data must be untouched. `work` += 1 per call. Upcalls stay masked while the
//! registers are random (a random RSP must not receive an upcall frame).
//!
//! `mode` 1 (bystander): fills a 64 KiB buffer and every general and XMM register with a
//! pattern from the seed, spins, yields, and checks that nothing changed; `work` += 1 per
//! clean round.
//!
//! `mode` 2 (exception): fuzzes `calls` calls as mode 0, then raises exception class
//! `exc` (see [`Exc`]; 255, the default, picks one from the seed and the domain id, so a
//! group of [`Exc::COUNT`] domains with consecutive ids raises each once). Expected fate:
//! killed. Surviving the exception shuts the domain down with `hostile::SURVIVED`.
//!
//! Every failure prints the campaign seed, the domain, the vCPU and the call index, which
//! with the spec reproduce the stream (timing and the neighbours' actions decide some
//! results). A domain that saw a result its oracle forbids shuts down with
//! `hostile::CHECK_FAILED` after printing the first [`MAX_REPORTS`] of them: at the end of
//! its calls, or without an end (`calls` = 0) within 1024 calls of the first; a bystander
//! that saw its state change does so at once.
//!
//! Arguments: `mode` (0), `seed` (1), `calls` (0 = forever; per domain, or rounds of a
//! bystander), `avoid` (0: bits of `workloads::fuzz::avoid`, known holes to steer around),
//! `exc` (255), `delay_ms` (0: wait this long before the first call, so that all of `work`
//! falls inside a measured interval that starts then), `ops` (0: a mask of
//! `workloads::fuzz::generator::Op`s to draw from, to narrow a failure down), `trace` (0:
//! print every call from this index on). At most `workloads::fuzz::MAX_VCPUS` vCPUs.
#![no_std]
#![no_main]

use core::arch::asm;
use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::hypercall as nr;
use abi::layout::{MAP_AREA, SHARED_INFO, STACK_TOP};
use abi::mm::pte;
use abi::shared::UpcallFrame;
use workloads::fuzz::generator::{self, Call, Effect, Env, Facts, OPS, Objects, Op};
use workloads::fuzz::{
    self, BLOCK_NS, Entry, GRANT_PAGES, MAX_VCPUS, Out, PAYLOAD_WORDS, Rng, SCRATCH_BYTES, reg,
};
use workloads::split::SharedPage;
use workloads::{entry, hostile, hypercall, pagetable, println, shared, time, upcall};

entry!(main);

/// Violations printed in full; later ones are only counted.
const MAX_REPORTS: u64 = 16;

/// What a fuzzed call enters with and leaves with, for one vCPU. The assembly addresses it
/// by offset (`offset_of!`), and after the `syscall`, when every register is the guest's
/// random state or the hypervisor's, RIP-relative, which is why there is one per vCPU and
/// one copy of the assembly per slot.
#[repr(C, align(64))]
struct Slot {
    /// Filled by the generator; the assembly writes the RSP and RFLAGS the call ran with
    /// into `entry.regs[RSP]` and `entry.flags`.
    entry: Entry,
    out: Out,
    /// The address right after the `syscall`.
    ret_rip: u64,
    /// Non-zero: an `UpcallFrame` whose RIP and RSP the assembly fills in (the call is
    /// `callback_return` to it).
    frame: u64,
    save_rbx: u64,
    save_rbp: u64,
    save_rsp: u64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            entry: Entry {
                regs: [0; 16],
                flags: 0,
                rsp: 0,
                xmm: [0; 32],
            },
            out: Out {
                regs: [0; 16],
                flags: 0,
                xmm: [0; 32],
            },
            ret_rip: 0,
            frame: 0,
            save_rbx: 0,
            save_rbp: 0,
            save_rsp: 0,
        }
    }
}

/// One vCPU's memory: its slot, the payload the generator fills and the hypervisor reads
/// (or writes: frame lists), and the scratch buffer the hypervisor may write. Only that
/// vCPU touches them, and never while a hypercall of its own is using them.
#[repr(C, align(4096))]
struct PerVcpu {
    payload: [u64; PAYLOAD_WORDS],
    scratch: [u8; SCRATCH_BYTES as usize],
    slot: Slot,
}

struct Mem([UnsafeCell<PerVcpu>; MAX_VCPUS]);

// SAFETY: vCPU `i` only ever touches element `i` (see `PerVcpu`).
unsafe impl Sync for Mem {}

static MEM: Mem = Mem([const {
    UnsafeCell::new(PerVcpu {
        payload: [0; PAYLOAD_WORDS],
        scratch: [0; SCRATCH_BYTES as usize],
        slot: Slot::new(),
    })
}; MAX_VCPUS]);

/// Pages granted to neighbours.
static GRANTS: [SharedPage; GRANT_PAGES] = [const { SharedPage::new() }; GRANT_PAGES];

unsafe extern "C" {
    /// The end of the image, page-aligned (link.ld): the page after it is not mapped.
    static __image_end: u8;
}

/// What a valid console write prints (read-only data).
static TEXT: &[u8; 64] = b"fuzz: a console line from the fuzzer, printed as it is written.\n";

/// The slot and buffers of vCPU `v`.
fn per_vcpu(v: usize) -> *mut PerVcpu {
    MEM.0[v].get()
}

/// Emits `fn $name(slot: *mut Slot)`: the fuzzed `syscall` of slot `$v`. It loads every
/// general register, RSP, XMM0-15 and RFLAGS from the slot, issues the call, and stores
/// every register back, RIP-relative (nothing else can be trusted then), before restoring
/// the caller's RBX, RBP, RSP and a clean RFLAGS.
macro_rules! fuzzed_syscall {
    ($name:ident, $v:expr) => {
        /// # Safety
        /// `slot` is slot `$v` of [`MEM`], used by this vCPU alone; the registers and
        /// memory the hypercall may write are the caller's to give (its payload and
        /// scratch buffers, its own mappings).
        #[inline(never)]
        unsafe fn $name(slot: *mut Slot) {
            // SAFETY: the caller's contract. The assembly restores RBX, RBP and RSP (which
            // cannot be declared clobbered) and leaves RFLAGS with DF clear; every other
            // register is declared clobbered. Between `popfq` and the restore of RSP it
            // touches memory only with plain aligned moves, so whatever flags it set
            // (DF, AC) change nothing, and the random RSP is never used as a stack.
            unsafe {
                asm!(
                    "mov [rdi + {save_rbx}], rbx",
                    "mov [rdi + {save_rbp}], rbp",
                    "mov [rdi + {save_rsp}], rsp",
                    "lea rax, [rip + 3f]",
                    "mov [rdi + {ret_rip}], rax",
                    "mov rax, [rdi + {rsp_in}]",
                    "test rax, rax",
                    "cmovz rax, rsp",
                    "mov [rdi + {regs_in} + 32], rax",
                    "mov rcx, [rdi + {frame}]",
                    "test rcx, rcx",
                    "jz 2f",
                    "mov [rcx + 88], rax",
                    "mov rax, [rdi + {ret_rip}]",
                    "mov [rcx + 80], rax",
                    "2:",
                    "movdqu xmm0, [rdi + {xmm_in}]",
                    "movdqu xmm1, [rdi + {xmm_in} + 16]",
                    "movdqu xmm2, [rdi + {xmm_in} + 32]",
                    "movdqu xmm3, [rdi + {xmm_in} + 48]",
                    "movdqu xmm4, [rdi + {xmm_in} + 64]",
                    "movdqu xmm5, [rdi + {xmm_in} + 80]",
                    "movdqu xmm6, [rdi + {xmm_in} + 96]",
                    "movdqu xmm7, [rdi + {xmm_in} + 112]",
                    "movdqu xmm8, [rdi + {xmm_in} + 128]",
                    "movdqu xmm9, [rdi + {xmm_in} + 144]",
                    "movdqu xmm10, [rdi + {xmm_in} + 160]",
                    "movdqu xmm11, [rdi + {xmm_in} + 176]",
                    "movdqu xmm12, [rdi + {xmm_in} + 192]",
                    "movdqu xmm13, [rdi + {xmm_in} + 208]",
                    "movdqu xmm14, [rdi + {xmm_in} + 224]",
                    "movdqu xmm15, [rdi + {xmm_in} + 240]",
                    "push qword ptr [rdi + {flags_in}]",
                    "popfq",
                    "pushfq",
                    "pop qword ptr [rdi + {flags_in}]",
                    "mov rax, [rdi + {regs_in}]",
                    "mov rcx, [rdi + {regs_in} + 8]",
                    "mov rdx, [rdi + {regs_in} + 16]",
                    "mov rbx, [rdi + {regs_in} + 24]",
                    "mov rbp, [rdi + {regs_in} + 40]",
                    "mov rsi, [rdi + {regs_in} + 48]",
                    "mov r8, [rdi + {regs_in} + 64]",
                    "mov r9, [rdi + {regs_in} + 72]",
                    "mov r10, [rdi + {regs_in} + 80]",
                    "mov r11, [rdi + {regs_in} + 88]",
                    "mov r12, [rdi + {regs_in} + 96]",
                    "mov r13, [rdi + {regs_in} + 104]",
                    "mov r14, [rdi + {regs_in} + 112]",
                    "mov r15, [rdi + {regs_in} + 120]",
                    "mov rsp, [rdi + {regs_in} + 32]",
                    "mov rdi, [rdi + {regs_in} + 56]",
                    "syscall",
                    "3:",
                    "mov [rip + {mem} + {out}], rax",
                    "mov [rip + {mem} + {out} + 8], rcx",
                    "mov [rip + {mem} + {out} + 16], rdx",
                    "mov [rip + {mem} + {out} + 24], rbx",
                    "mov [rip + {mem} + {out} + 32], rsp",
                    "mov [rip + {mem} + {out} + 40], rbp",
                    "mov [rip + {mem} + {out} + 48], rsi",
                    "mov [rip + {mem} + {out} + 56], rdi",
                    "mov [rip + {mem} + {out} + 64], r8",
                    "mov [rip + {mem} + {out} + 72], r9",
                    "mov [rip + {mem} + {out} + 80], r10",
                    "mov [rip + {mem} + {out} + 88], r11",
                    "mov [rip + {mem} + {out} + 96], r12",
                    "mov [rip + {mem} + {out} + 104], r13",
                    "mov [rip + {mem} + {out} + 112], r14",
                    "mov [rip + {mem} + {out} + 120], r15",
                    "movdqu [rip + {mem} + {xout}], xmm0",
                    "movdqu [rip + {mem} + {xout} + 16], xmm1",
                    "movdqu [rip + {mem} + {xout} + 32], xmm2",
                    "movdqu [rip + {mem} + {xout} + 48], xmm3",
                    "movdqu [rip + {mem} + {xout} + 64], xmm4",
                    "movdqu [rip + {mem} + {xout} + 80], xmm5",
                    "movdqu [rip + {mem} + {xout} + 96], xmm6",
                    "movdqu [rip + {mem} + {xout} + 112], xmm7",
                    "movdqu [rip + {mem} + {xout} + 128], xmm8",
                    "movdqu [rip + {mem} + {xout} + 144], xmm9",
                    "movdqu [rip + {mem} + {xout} + 160], xmm10",
                    "movdqu [rip + {mem} + {xout} + 176], xmm11",
                    "movdqu [rip + {mem} + {xout} + 192], xmm12",
                    "movdqu [rip + {mem} + {xout} + 208], xmm13",
                    "movdqu [rip + {mem} + {xout} + 224], xmm14",
                    "movdqu [rip + {mem} + {xout} + 240], xmm15",
                    "mov rsp, [rip + {mem} + {saved_rsp}]",
                    "pushfq",
                    "pop qword ptr [rip + {mem} + {fout}]",
                    "push 0x202",
                    "popfq",
                    "mov rbx, [rip + {mem} + {saved_rbx}]",
                    "mov rbp, [rip + {mem} + {saved_rbp}]",
                    mem = sym MEM,
                    out = const $v * size_of::<PerVcpu>() + SLOT + OUT + offset_of!(Out, regs),
                    xout = const $v * size_of::<PerVcpu>() + SLOT + OUT + offset_of!(Out, xmm),
                    fout = const $v * size_of::<PerVcpu>() + SLOT + OUT + offset_of!(Out, flags),
                    saved_rsp = const $v * size_of::<PerVcpu>() + SLOT + offset_of!(Slot, save_rsp),
                    saved_rbx = const $v * size_of::<PerVcpu>() + SLOT + offset_of!(Slot, save_rbx),
                    saved_rbp = const $v * size_of::<PerVcpu>() + SLOT + offset_of!(Slot, save_rbp),
                    save_rbx = const offset_of!(Slot, save_rbx),
                    save_rbp = const offset_of!(Slot, save_rbp),
                    save_rsp = const offset_of!(Slot, save_rsp),
                    ret_rip = const offset_of!(Slot, ret_rip),
                    regs_in = const IN + offset_of!(Entry, regs),
                    rsp_in = const IN + offset_of!(Entry, rsp),
                    flags_in = const IN + offset_of!(Entry, flags),
                    xmm_in = const IN + offset_of!(Entry, xmm),
                    frame = const offset_of!(Slot, frame),
                    inout("rdi") slot => _,
                    out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                    clobber_abi("C"),
                );
            }
        }
    };
}

/// Where the slot lies in [`PerVcpu`], and its parts in the slot.
const SLOT: usize = offset_of!(PerVcpu, slot);
const IN: usize = offset_of!(Slot, entry);
const OUT: usize = offset_of!(Slot, out);

fuzzed_syscall!(fuzzed_syscall_0, 0);
fuzzed_syscall!(fuzzed_syscall_1, 1);
fuzzed_syscall!(fuzzed_syscall_2, 2);
fuzzed_syscall!(fuzzed_syscall_3, 3);

/// Issues the call in vCPU `v`'s slot.
///
/// # Safety
/// As for the functions `fuzzed_syscall!` emits.
unsafe fn fuzzed_syscall(v: usize) {
    // SAFETY: `&raw mut` forms no reference; the contract is the caller's.
    unsafe {
        let slot = &raw mut (*per_vcpu(v)).slot;
        match v {
            0 => fuzzed_syscall_0(slot),
            1 => fuzzed_syscall_1(slot),
            2 => fuzzed_syscall_2(slot),
            _ => fuzzed_syscall_3(slot),
        }
    }
}

/// A table of small values (ports, references, handles, frames) that every vCPU of the
/// domain adds to, takes from and picks at random, racing. A slot holds value + 1; 0 is
/// empty.
struct Table<const N: usize>([AtomicU64; N]);

impl<const N: usize> Table<N> {
    const fn new() -> Self {
        Table([const { AtomicU64::new(0) }; N])
    }

    /// Adds `v`; false if the table is full.
    fn insert(&self, v: u64) -> bool {
        self.0.iter().any(|s| {
            s.compare_exchange(0, v + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Removes one `v`; false if it was not there.
    fn remove(&self, v: u64) -> bool {
        self.0.iter().any(|s| {
            s.compare_exchange(v + 1, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// How many values it holds.
    fn len(&self) -> usize {
        self.0
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// A value in the table, from a random slot on, if there is any.
    fn pick(&self, r: &mut Rng) -> Option<u64> {
        let start = r.below(N as u64) as usize;
        (0..N)
            .map(|i| self.0[(start + i) % N].load(Ordering::Acquire))
            .find(|&v| v != 0)
            .map(|v| v - 1)
    }
}

static PORTS: Table<64> = Table::new();
static GREFS: Table<32> = Table::new();
/// Handle | MAP_AREA page << 32 | writable << 48.
static HANDLES: Table<32> = Table::new();
static FRAMES: Table<128> = Table::new();

/// The domain's objects as the generator sees them.
struct Held;

impl Objects for Held {
    fn port(&self, r: &mut Rng) -> Option<u32> {
        PORTS.pick(r).map(|p| p as u32)
    }
    fn gref(&self, r: &mut Rng) -> Option<u32> {
        GREFS.pick(r).map(|g| g as u32)
    }
    fn handle(&self, r: &mut Rng) -> Option<u32> {
        HANDLES.pick(r).map(|h| h as u32)
    }
    fn frame(&self, r: &mut Rng) -> Option<u64> {
        FRAMES.pick(r)
    }
}

/// Calls each vCPU has made (a vCPU restarted at the entry after `vcpu_op Down` picks up
/// where it was).
static PROGRESS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// vCPUs done with their calls.
static DONE: AtomicU32 = AtomicU32::new(0);
/// Results the oracles refused, over all vCPUs.
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// Per op, over all vCPUs: calls, successes (errors are the difference), and the TSC ticks
/// spent in the `syscall` (preemptions included) by the calls timed, and how many.
static STATS: [[AtomicU64; 5]; OPS] = [const { [const { AtomicU64::new(0) }; 5] }; OPS];
/// Upcalls seen by the structured upcall check.
static UPCALLS_SEEN: AtomicU64 = AtomicU64::new(0);

/// The campaign's parameters.
#[derive(Clone, Copy)]
struct Campaign {
    seed: u64,
    calls: u64,
    avoid: u64,
    ops: u64,
    /// Print every call from this index on (0: none).
    trace: u64,
}

fn main(vcpu: usize) -> u64 {
    if vcpu >= MAX_VCPUS {
        workloads::rt::park(vcpu);
    }
    let c = Campaign {
        seed: shared::arg("seed", 1),
        calls: shared::arg("calls", 0),
        avoid: shared::arg("avoid", 0),
        ops: shared::arg("ops", 0),
        trace: shared::arg("trace", 0),
    };
    match shared::arg("mode", 0) {
        1 => bystander(vcpu, c.seed, shared::arg("calls", 0)),
        mode => {
            if vcpu == 0 {
                println!(
                    "fuzz: seed {} domain {} vcpus {} mode {mode} calls {} avoid {:#x}",
                    c.seed,
                    shared::domain_id(),
                    shared::vcpus(),
                    c.calls,
                    c.avoid
                );
            }
            let delay = shared::arg("delay_ms", 0);
            if delay > 0 && PROGRESS[vcpu].load(Ordering::Relaxed) == 0 {
                time::sleep_ns(delay * 1_000_000);
            }
            let code = campaign(vcpu, c);
            if code != 0 || mode != 2 || vcpu != 0 {
                return code;
            }
            raise(c.seed)
        }
    }
}

/// Clears every pending event bit of the domain (so that `block` sleeps again).
fn clear_pending() {
    for p in 0..abi::shared::MAX_PORTS as u32 {
        shared::take_event(p);
    }
}

/// The level-1 entry of `va`, read from the page-table window.
fn l1_entry(va: u64) -> Option<u64> {
    let table = pagetable::table_for(va, 1)?;
    pagetable::read_entry(table, pagetable::index_at(va, 1))
}

/// What the page tables say about the domain's memory.
fn facts(vcpu: usize) -> Facts {
    // Any page of the text: refused values only are ever written to its entry.
    let live_va = campaign as *const () as u64 & !0xfff;
    let stack_va = (STACK_TOP - vcpu as u64 * abi::layout::STACK_STRIDE - 8) & !0xfff;
    Facts {
        root: pagetable::root(),
        map_l1: pagetable::table_for(MAP_AREA, 1).unwrap_or(0),
        live_va,
        live_l1e: pagetable::entry_address(live_va, 1).unwrap_or(0),
        live_mfn: l1_entry(stack_va).map_or(0, |e| (e & pte::ADDRESS) >> 12),
        shared_mfn: l1_entry(SHARED_INFO).map_or(0, |e| (e & pte::ADDRESS) >> 12),
    }
}

/// Runs this vCPU's share of the campaign; vCPU 0 then waits for the others and reports.
/// Returns the exit code: 0, or `CHECK_FAILED` if any oracle was broken.
fn campaign(vcpu: usize, c: Campaign) -> u64 {
    let me = shared::domain_id();
    let vcpus = (shared::vcpus() as usize).min(MAX_VCPUS);
    let seed = fuzz::vcpu_seed(c.seed, me, vcpu as u32);
    let mut rng = Rng::new(seed);
    // SAFETY: only forms raw addresses.
    let (payload, scratch) = unsafe {
        let p = per_vcpu(vcpu);
        (&raw mut (*p).payload as u64, &raw mut (*p).scratch as u64)
    };
    let mut env = Env {
        domain: me,
        vcpus: vcpus as u32,
        vcpu: vcpu as u32,
        now_ns: 0,
        avoid: c.avoid,
        ops: c.ops,
        frames_limit: pagetable::frames_limit(),
        payload,
        scratch,
        text: TEXT.as_ptr() as u64,
        text_len: TEXT.len() as u64,
        image_end: &raw const __image_end as u64,
        grant_pages: core::array::from_fn(|i| GRANTS[i].va()),
        facts: facts(vcpu),
    };
    // Upcalls only while the registers are the program's own (`upcall_check`).
    shared::set_upcall_mask(vcpu, true);
    let text_sum = checksum(TEXT);
    let share = if c.calls == 0 {
        u64::MAX
    } else {
        c.calls / vcpus as u64 + u64::from((vcpu as u64) < c.calls % vcpus as u64)
    };
    // A vCPU restarted at the entry (should `Up` after `Down` do that) goes on from where
    // it was, with a stream of its own.
    let start = PROGRESS[vcpu].load(Ordering::Relaxed);
    if start > 0 {
        rng = Rng::new(fuzz::mix(seed ^ start));
    }
    for i in start..share {
        env.now_ns = time::now_ns();
        // SAFETY: this vCPU's payload and slot, no hypercall of ours in flight.
        let call = unsafe {
            let p = per_vcpu(vcpu);
            let call = generator::call(&mut rng, &env, &Held, &mut (*p).payload);
            if i % 4 == 0 || i == start {
                generator::entry_into(&mut rng, &env, &mut (*p).slot.entry);
            } else {
                generator::vary_entry(&mut rng, &env, &mut (*p).slot.entry);
            }
            call
        };
        if c.trace != 0 && i >= c.trace {
            println!(
                "fuzz: call #{i}: {} nr {:#x} args {:#x?}",
                call.op.name(),
                call.nr,
                call.args
            );
        }
        issue(vcpu, c.seed, i, &call);
        PROGRESS[vcpu].store(i + 1, Ordering::Relaxed);
        shared::add_work(vcpu, 1);
        structured(vcpu, vcpus, c.seed, i, text_sum);
        if c.calls == 0 && i % 1024 == 1023 && VIOLATIONS.load(Ordering::Relaxed) > 0 {
            // A campaign without an end reports its violations and stops here, so that the
            // run sees a failed domain.
            report(c.seed, me);
            hypercall::shutdown(hostile::CHECK_FAILED);
        }
    }
    DONE.fetch_add(1, Ordering::AcqRel);
    if vcpu != 0 {
        workloads::rt::park(vcpu);
    }
    // Bring back any vCPU that went down, until all are done.
    while DONE.load(Ordering::Acquire) < vcpus as u32 {
        for v in 1..vcpus {
            let _ = hypercall::vcpu_up(v);
        }
        hypercall::yield_now();
    }
    let _ = hypercall::set_callback(0);
    report(c.seed, me);
    if VIOLATIONS.load(Ordering::Relaxed) > 0 {
        hostile::CHECK_FAILED
    } else {
        0
    }
}

/// FNV-1a of `bytes`, read with volatile loads: the compiler may not assume that
/// read-only data stays as it was linked, since that is what this checks.
fn checksum(bytes: &[u8]) -> u64 {
    (0..bytes.len()).fold(0xcbf2_9ce4_8422_2325u64, |h, i| {
        // SAFETY: in bounds of a live slice.
        let b = unsafe { bytes.as_ptr().add(i).read_volatile() };
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Prints the campaign's figures: calls and successes per op.
fn report(seed: u64, me: u32) {
    let total: u64 = STATS.iter().map(|s| s[0].load(Ordering::Relaxed)).sum();
    let vcpus = (shared::vcpus() as usize).min(MAX_VCPUS);
    let ran: u64 = (0..vcpus).map(time::vcpu_time_ns).sum();
    println!(
        "fuzz: seed {seed} domain {me}: {total} calls, {} violations, {} upcalls checked; \
         {} ms of CPU, {} ns per call",
        VIOLATIONS.load(Ordering::Relaxed),
        UPCALLS_SEEN.load(Ordering::Relaxed),
        ran / 1_000_000,
        ran / total.max(1)
    );
    // Per-operation figures only for campaigns long enough to say something (a domain of
    // `fuzz-exceptions.toml` makes one call before it raises its exception).
    if total < 1000 {
        return;
    }
    for chunk in Op::ALL.chunks(6) {
        let mut line = [0u8; 250];
        let mut w = Writer {
            buf: &mut line,
            len: 0,
        };
        for op in chunk {
            let s = &STATS[*op as usize];
            let _ = core::fmt::write(
                &mut w,
                format_args!(
                    " {} {}/{} {}ns (max {}us)",
                    op.name(),
                    s[1].load(Ordering::Relaxed),
                    s[0].load(Ordering::Relaxed),
                    time::ticks_to_ns(s[2].load(Ordering::Relaxed))
                        / s[3].load(Ordering::Relaxed).max(1),
                    time::ticks_to_ns(s[4].load(Ordering::Relaxed)) / 1000
                ),
            );
        }
        let len = w.len;
        println!(
            "fuzz: ok/calls, ns in the syscall:{}",
            core::str::from_utf8(&line[..len]).unwrap_or("")
        );
    }
}

/// A fixed buffer to format into.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Issues one generated call with the entry state in the slot, checks the result and the
/// registers, and records what the call changed.
fn issue(vcpu: usize, seed: u64, index: u64, call: &Call) {
    // SAFETY: this vCPU's memory; no hypercall of ours is in flight. No reference into the
    // slot or payload lives across the call.
    let (payload_addr, slot) = unsafe {
        let p = per_vcpu(vcpu);
        (&raw mut (*p).payload as u64, &raw mut (*p).slot)
    };
    let is_return = call.op == Op::CallbackReturn;
    if is_return {
        // No upcall may be entered at once when the mask clears.
        let _ = hypercall::set_callback(0);
    }
    if call.arm_timer {
        let now = time::now_ns();
        let _ = hypercall::set_timer(if call.arm_past {
            now - 1
        } else {
            now + BLOCK_NS
        });
    }
    // SAFETY: as above.
    unsafe {
        let e = &mut (*slot).entry;
        e.regs[reg::RAX] = call.nr;
        e.regs[reg::RDI] = call.args[0];
        e.regs[reg::RSI] = call.args[1];
        e.regs[reg::RDX] = call.args[2];
        e.regs[reg::R10] = call.args[3];
        e.regs[reg::R8] = call.args[4];
        if is_return {
            // The frame returns to the real stack.
            e.rsp = 0;
            e.regs[reg::RDI] = payload_addr;
        }
        (*slot).frame = if is_return { payload_addr } else { 0 };
    }
    // Time one call in eight (reading the time costs about what a null call does).
    let timed = index.is_multiple_of(8);
    let t0 = if timed { time::rdtsc() } else { 0 };
    // SAFETY: this vCPU's slot; the call reads and writes only this vCPU's payload and
    // scratch buffers, its own frames (unused by Rust code) and what the hypervisor owns.
    unsafe { fuzzed_syscall(vcpu) };
    let stats = &STATS[call.op as usize];
    if timed {
        let dt = time::rdtsc() - t0;
        stats[2].fetch_add(dt, Ordering::Relaxed);
        stats[4].fetch_max(dt, Ordering::Relaxed);
        stats[3].fetch_add(1, Ordering::Relaxed);
    }
    stats[0].fetch_add(1, Ordering::Relaxed);
    // SAFETY: the call is over; nothing else writes the slot.
    let (entry, out, ret_rip) = unsafe { (&(*slot).entry, &(*slot).out, (*slot).ret_rip) };
    let ret = out.regs[reg::RAX] as i64;
    if is_return {
        shared::set_upcall_mask(vcpu, true);
        stats[1].fetch_add(1, Ordering::Relaxed);
        // SAFETY: the payload holds the frame the call returned to; the call is over.
        let w = unsafe { &(*per_vcpu(vcpu)).payload };
        let frame = UpcallFrame {
            rax: w[0],
            rcx: w[1],
            rdx: w[2],
            rsi: w[3],
            rdi: w[4],
            r8: w[5],
            r9: w[6],
            r10: w[7],
            r11: w[8],
            rflags: w[9],
            rip: w[10],
            rsp: w[11],
        };
        if let Err(w) = fuzz::check_callback_return(&frame, entry, out) {
            violation(seed, vcpu, index, call, entry, format_args!("{w}"));
        }
        return;
    }
    if ret >= 0 {
        stats[1].fetch_add(1, Ordering::Relaxed);
    }
    if let Err(w) = call.oracle.check(ret) {
        violation(
            seed,
            vcpu,
            index,
            call,
            entry,
            format_args!("returned {ret} ({w:?}); allowed {:?}", call.oracle),
        );
    }
    if let Err(w) = fuzz::check_return(entry, out, ret_rip) {
        violation(seed, vcpu, index, call, entry, format_args!("{w}"));
    }
    if ret >= 0 {
        effect(vcpu, call.effect, ret as u64);
    }
}

/// Prints a broken oracle (the first few in full) and counts it.
fn violation(
    seed: u64,
    vcpu: usize,
    index: u64,
    call: &Call,
    entry: &Entry,
    what: core::fmt::Arguments<'_>,
) {
    let n = VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    if n < MAX_REPORTS {
        println!(
            "fuzz: VIOLATION seed {seed} domain {} vcpu {vcpu} call #{index}: {} nr {:#x} args \
             {:x?} rflags {:#x} rsp {:#x}: {what}",
            shared::domain_id(),
            call.op.name(),
            call.nr,
            call.args,
            entry.flags,
            entry.regs[reg::RSP],
        );
    }
}

/// Records what a successful call changed; objects the tables cannot hold are released
/// at once.
fn effect(vcpu: usize, effect: Effect, value: u64) {
    match effect {
        Effect::None => {}
        Effect::NewPort => {
            if !PORTS.insert(value) {
                let _ = hypercall::evtchn_close(value as u32);
            }
        }
        Effect::ClosedPort(p) => {
            PORTS.remove(u64::from(p));
        }
        Effect::NewGref => {
            if !GREFS.insert(value) {
                let _ = hypercall::grant_end(value as u32);
            }
        }
        Effect::EndedGref(g) => {
            GREFS.remove(u64::from(g));
        }
        Effect::NewHandle { va, writable } => {
            let page = (va - MAP_AREA) >> 12;
            if !HANDLES.insert(value | page << 32 | u64::from(writable) << 48) {
                let _ = hypercall::grant_unmap(value as u32);
            }
        }
        Effect::Unmapped(h) => {
            // The table keys on the whole value: find the entry whose handle is `h`.
            for s in &HANDLES.0 {
                let v = s.load(Ordering::Acquire);
                if v != 0 && (v - 1) as u32 == h {
                    let _ = s.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }
        Effect::NewFrames | Effect::GaveBack => {
            // SAFETY: this vCPU's payload; the hypercall is over.
            let list = unsafe { &(*per_vcpu(vcpu)).payload };
            let n = (value as usize).min(PAYLOAD_WORDS);
            for &f in &list[..n] {
                if effect == Effect::GaveBack {
                    FRAMES.remove(f);
                } else if !FRAMES.insert(f) {
                    let _ = hypercall::decrease_reservation(&[f]);
                }
            }
        }
    }
}

/// Keeps some objects on offer to the neighbours (ids ± 1), so that their random maps,
/// copies and binds meet something: grants of its grant pages (references are handed out
/// lowest first, where the neighbours' guesses fall) and ports allocated for them.
fn offer(me: u32, index: u64) {
    let mut r = Rng::new(index);
    let mut tries = 0;
    while GREFS.len() < GRANT_PAGES && tries < 2 * GRANT_PAGES {
        tries += 1;
        let page = &GRANTS[r.below(GRANT_PAGES as u64) as usize];
        let to = if r.one_in(2) { me + 1 } else { me - 1 };
        if let Ok(gref) = hypercall::grant_access(page.va(), to, r.one_in(3))
            && !GREFS.insert(u64::from(gref))
        {
            let _ = hypercall::grant_end(gref);
        }
    }
    tries = 0;
    while PORTS.len() < 8 && tries < 16 {
        tries += 1;
        let to = if r.one_in(2) { me + 1 } else { me - 1 };
        if let Ok(port) = hypercall::evtchn_alloc_unbound(to)
            && !PORTS.insert(u64::from(port))
        {
            let _ = hypercall::evtchn_close(port);
        }
    }
}

/// The structured checks between random calls.
fn structured(vcpu: usize, vcpus: usize, seed: u64, index: u64, text_sum: u64) {
    if vcpu == 0 && index.is_multiple_of(256) {
        offer(shared::domain_id(), seed ^ index);
    }
    if index % 4096 == 4095 {
        clear_pending();
    }
    if index % 2048 == 1024 && checksum(TEXT) != text_sum {
        report_check(
            seed,
            vcpu,
            index,
            "the read-only text changed under the fuzzer",
        );
    }
    // With one vCPU nothing races these: what the tables say is so.
    if vcpus == 1 {
        if index % 1024 == 512 {
            touch_mapping(seed ^ index);
        }
        if index % 8192 == 4096 {
            upcall_check(seed, vcpu, index);
        }
    }
}

fn report_check(seed: u64, vcpu: usize, index: u64, what: &str) {
    let n = VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    if n < MAX_REPORTS {
        println!(
            "fuzz: VIOLATION seed {seed} domain {} vcpu {vcpu} after call #{index}: {what}",
            shared::domain_id()
        );
    }
}

/// Reads (and if writable, writes) one grant mapping the domain holds: it must still be
/// there, whatever the calls since did.
fn touch_mapping(seed: u64) {
    let mut r = Rng::new(seed);
    let Some(v) = HANDLES.pick(&mut r) else {
        return;
    };
    let va = MAP_AREA + ((v >> 32) & 0xffff) * 4096;
    let writable = v >> 48 & 1 != 0;
    let before = hostile::load(va);
    if writable {
        // SAFETY: `va` is a grant mapping this domain holds (nothing unmapped it: the
        // tables say so and nothing races them with one vCPU); no Rust data lives in
        // MAP_AREA, and the page is another domain's to change at any time (volatile).
        unsafe { (va as *mut u64).add(1).write_volatile(before ^ seed) };
    }
}

/// The port [`upcall_check`] waits on.
static UPCALL_PORT: AtomicU32 = AtomicU32::new(0);

/// The upcall handler of [`upcall_check`]: counts events on its port.
fn on_event(_vcpu: usize, port: u32) {
    if port == UPCALL_PORT.load(Ordering::Relaxed) {
        UPCALLS_SEEN.fetch_add(1, Ordering::Relaxed);
    }
}

/// An event upcall must arrive: the timer VIRQ bound to this vCPU, the timer armed, the
/// upcall unmasked, and a null call (whose exit delivers) in a loop, for up to 100 ms.
fn upcall_check(seed: u64, vcpu: usize, index: u64) {
    // The campaign may hold this vCPU's timer VIRQ already, or every port: close the ports
    // it holds (with one vCPU, the table knows them all) and try again.
    let port = match hypercall::evtchn_bind_virq_vcpu(nr::virq::TIMER, vcpu) {
        Ok(port) => port,
        Err(_) => {
            while let Some(p) = PORTS.pick(&mut Rng::new(index)) {
                let _ = hypercall::evtchn_close(p as u32);
                PORTS.remove(p);
            }
            match hypercall::evtchn_bind_virq_vcpu(nr::virq::TIMER, vcpu) {
                Ok(port) => port,
                Err(e) => {
                    report_check(
                        seed,
                        vcpu,
                        index,
                        "binding the timer VIRQ failed with every port closed",
                    );
                    let _ = e;
                    return;
                }
            }
        }
    };
    if upcall::register(on_event).is_err() {
        report_check(seed, vcpu, index, "set_callback of the upcall entry failed");
        let _ = hypercall::evtchn_close(port);
        return;
    }
    UPCALL_PORT.store(port, Ordering::Relaxed);
    shared::set_mask(port, false);
    let before = UPCALLS_SEEN.load(Ordering::Relaxed);
    // 100 ms of this vCPU's own time: time it spends descheduled does not count.
    let deadline = time::vcpu_time_ns(vcpu) + 100_000_000;
    let _ = hypercall::set_timer(time::now_ns() + 10_000);
    shared::set_upcall_mask(vcpu, false);
    loop {
        // Every return from a hypercall delivers a pending upcall.
        hypercall::null();
        if UPCALLS_SEEN.load(Ordering::Relaxed) != before || time::vcpu_time_ns(vcpu) > deadline {
            break;
        }
    }
    shared::set_upcall_mask(vcpu, true);
    let _ = hypercall::set_callback(0);
    let _ = hypercall::evtchn_close(port);
    if UPCALLS_SEEN.load(Ordering::Relaxed) == before {
        report_check(
            seed,
            vcpu,
            index,
            "no upcall within 100 ms of its own CPU time after the timer VIRQ's deadline",
        );
    }
}

/// `mode` 1: checks that its memory and registers never change and that it progresses.
fn bystander(vcpu: usize, seed: u64, rounds: u64) -> u64 {
    const WORDS: usize = 8192;
    #[repr(C, align(4096))]
    struct Area(UnsafeCell<[u64; WORDS]>);
    // SAFETY: each vCPU touches its own slice only.
    unsafe impl Sync for Area {}
    static AREA: Area = Area(UnsafeCell::new([0; WORDS]));

    let me = shared::domain_id();
    let vcpus = (shared::vcpus() as usize).clamp(1, MAX_VCPUS);
    let per = WORDS / vcpus;
    let base = fuzz::vcpu_seed(seed, me, vcpu as u32);
    let word = |i: usize| fuzz::mix(base ^ i as u64);
    let area = AREA.0.get() as *mut u64;
    for i in vcpu * per..(vcpu + 1) * per {
        // SAFETY: in bounds, this vCPU's slice.
        unsafe { area.add(i).write_volatile(word(i)) };
    }
    if vcpu == 0 {
        println!("fuzz: bystander seed {seed} domain {me} vcpus {vcpus}: watching 64 KiB");
    }
    let mut round = 0u64;
    loop {
        round += 1;
        let pattern = fuzz::mix(base ^ round << 32);
        let bad = all_registers_survive(pattern, 20_000);
        if bad != 0 {
            println!(
                "fuzz: BYSTANDER seed {seed} domain {me} vcpu {vcpu} round {round}: {} \
                 registers changed while it spun (bits {bad:#x}: rax..r15 then xmm0..15)",
                bad.count_ones()
            );
            return hostile::CHECK_FAILED;
        }
        if let Some((r, was, now)) = callee_saved_survive_yield(pattern) {
            println!(
                "fuzz: BYSTANDER seed {seed} domain {me} vcpu {vcpu} round {round}: {} went \
                 {was:#x} -> {now:#x} across sched_op(Yield)",
                reg::NAMES[r]
            );
            return hostile::CHECK_FAILED;
        }
        for i in vcpu * per..(vcpu + 1) * per {
            // SAFETY: as above.
            let got = unsafe { area.add(i).read_volatile() };
            if got != word(i) {
                println!(
                    "fuzz: BYSTANDER seed {seed} domain {me} vcpu {vcpu} round {round}: word \
                     {i} of its memory went {:#x} -> {got:#x}",
                    word(i)
                );
                return hostile::CHECK_FAILED;
            }
        }
        shared::add_work(vcpu, 1);
        if rounds != 0 && round >= rounds {
            if vcpu == 0 {
                return 0;
            }
            workloads::rt::park(vcpu);
        }
    }
}

/// Loads every general register but RSP and XMM0-15 with values derived from `pattern`,
/// spins `spins` times (preemption, interrupts and other domains happen meanwhile), and
/// returns a bit per register that changed (bit r for general register r in encoding order,
/// bit 16 + n for XMMn).
fn all_registers_survive(pattern: u64, spins: u64) -> u64 {
    #[repr(C, align(16))]
    struct Expected {
        regs: [u64; 16],
        xmm: [u64; 32],
        changed: [u8; 32],
        spins: u64,
    }
    let mut e = Expected {
        regs: core::array::from_fn(|i| fuzz::mix(pattern ^ i as u64)),
        xmm: core::array::from_fn(|i| fuzz::mix(pattern ^ (100 + i) as u64)),
        changed: [0; 32],
        spins: spins.max(1),
    };
    let at = &raw mut e;
    // SAFETY: reads and writes only `e` (through RAX, kept on the stack meanwhile) and the
    // stack below RSP; restores RBX and RBP; every other register is declared clobbered.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "push rax",
            "movdqa xmm0, [rax + 128]",
            "movdqa xmm1, [rax + 144]",
            "movdqa xmm2, [rax + 160]",
            "movdqa xmm3, [rax + 176]",
            "movdqa xmm4, [rax + 192]",
            "movdqa xmm5, [rax + 208]",
            "movdqa xmm6, [rax + 224]",
            "movdqa xmm7, [rax + 240]",
            "movdqa xmm8, [rax + 256]",
            "movdqa xmm9, [rax + 272]",
            "movdqa xmm10, [rax + 288]",
            "movdqa xmm11, [rax + 304]",
            "movdqa xmm12, [rax + 320]",
            "movdqa xmm13, [rax + 336]",
            "movdqa xmm14, [rax + 352]",
            "movdqa xmm15, [rax + 368]",
            "push qword ptr [rax + 416]",
            "mov rcx, [rax + 8]",
            "mov rdx, [rax + 16]",
            "mov rbx, [rax + 24]",
            "mov rbp, [rax + 40]",
            "mov rsi, [rax + 48]",
            "mov rdi, [rax + 56]",
            "mov r8, [rax + 64]",
            "mov r9, [rax + 72]",
            "mov r10, [rax + 80]",
            "mov r11, [rax + 88]",
            "mov r12, [rax + 96]",
            "mov r13, [rax + 104]",
            "mov r14, [rax + 112]",
            "mov r15, [rax + 120]",
            "mov rax, [rax]",
            "2:",
            "dec qword ptr [rsp]",
            "jnz 2b",
            // [rsp] is 0 now: keep RAX there, and the structure's address in RAX.
            "mov [rsp], rax",
            "mov rax, [rsp + 8]",
            "cmp rcx, [rax + 8]",
            "setne byte ptr [rax + 385]",
            "cmp rdx, [rax + 16]",
            "setne byte ptr [rax + 386]",
            "cmp rbx, [rax + 24]",
            "setne byte ptr [rax + 387]",
            "cmp rbp, [rax + 40]",
            "setne byte ptr [rax + 389]",
            "cmp rsi, [rax + 48]",
            "setne byte ptr [rax + 390]",
            "cmp rdi, [rax + 56]",
            "setne byte ptr [rax + 391]",
            "cmp r8, [rax + 64]",
            "setne byte ptr [rax + 392]",
            "cmp r9, [rax + 72]",
            "setne byte ptr [rax + 393]",
            "cmp r10, [rax + 80]",
            "setne byte ptr [rax + 394]",
            "cmp r11, [rax + 88]",
            "setne byte ptr [rax + 395]",
            "cmp r12, [rax + 96]",
            "setne byte ptr [rax + 396]",
            "cmp r13, [rax + 104]",
            "setne byte ptr [rax + 397]",
            "cmp r14, [rax + 112]",
            "setne byte ptr [rax + 398]",
            "cmp r15, [rax + 120]",
            "setne byte ptr [rax + 399]",
            "mov rbx, [rsp]",
            "cmp rbx, [rax]",
            "setne byte ptr [rax + 384]",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "pcmpeqd xmm\\n, [rax + 128 + 16 * \\n]",
            "pmovmskb ebx, xmm\\n",
            "cmp ebx, 0xffff",
            "setne byte ptr [rax + 400 + \\n]",
            ".endr",
            "add rsp, 16",
            "pop rbp",
            "pop rbx",
            inout("rax") at => _,
            out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
    e.changed
        .iter()
        .enumerate()
        .filter(|(i, c)| **c != 0 && *i != reg::RSP)
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// Loads RBX, RBP and R12-R15 with values from `pattern`, yields through the hypervisor
/// eight times, and returns the first of them (or RSP) that changed.
fn callee_saved_survive_yield(pattern: u64) -> Option<(usize, u64, u64)> {
    let want: [u64; 6] = core::array::from_fn(|i| fuzz::mix(pattern ^ (200 + i) as u64));
    let mut got = [0u64; 7];
    // SAFETY: the syscalls are `sched_op(Yield)`, which touch no guest memory; RBX and
    // RBP are restored; everything else the asm or the calls change is declared clobbered.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "push rsi",
            "mov rbx, [rdi]",
            "mov rbp, [rdi + 8]",
            "mov r12, [rdi + 16]",
            "mov r13, [rdi + 24]",
            "mov r14, [rdi + 32]",
            "mov r15, [rdi + 40]",
            "push 8",
            "2:",
            "mov eax, {sched_op}",
            "xor edi, edi",
            "syscall",
            "dec qword ptr [rsp]",
            "jnz 2b",
            "add rsp, 8",
            "mov rsi, [rsp]",
            "mov [rsi], rbx",
            "mov [rsi + 8], rbp",
            "mov [rsi + 16], r12",
            "mov [rsi + 24], r13",
            "mov [rsi + 32], r14",
            "mov [rsi + 40], r15",
            "mov [rsi + 48], rsp",
            "pop rsi",
            "pop rbp",
            "pop rbx",
            sched_op = const nr::SCHED_OP,
            inout("rdi") want.as_ptr() => _,
            inout("rsi") got.as_mut_ptr() => _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("C"),
        );
    }
    let regs = [reg::RBX, reg::RBP, reg::R12, reg::R13, reg::R14, reg::R15];
    regs.iter()
        .zip(want.iter().zip(&got))
        .find(|(_, (w, g))| w != g)
        .map(|(r, (w, g))| (*r, *w, *g))
}

abi::numbered_enum! {
    /// The exceptions and hostile acts of `mode` 2, each of which must end the domain; the
    /// number is the one argument `exc` names.
    enum Exc: u64 {
        Ud2 = 0,
        Int3 = 1,
        IntN = 2,
        DivideByZero = 3,
        DivideOverflow = 4,
        JumpNonCanonical = 5,
        JumpHypervisor = 6,
        JumpUnmapped = 7,
        ExecuteStack = 8,
        MisalignedStackSse = 9,
        PushNonCanonicalRsp = 10,
        PushHypervisorRsp = 11,
        TrapFlag = 12,
        TrapFlagSyscall = 13,
        TrapFlagMovSsSyscall = 14,
        Icebp = 15,
        BadCallbackReturn = 16,
        UpcallOnWildStack = 17,
        StackOverflow = 18,
        CompatSyscall = 19,
        Hlt = 20,
        Swapgs = 21,
        Sysret = 22,
        IretqToRing0 = 23,
        Wrmsr = 24,
        SyscallNonCanonicalRsp = 25,
    }
}

impl Exc {
    /// How many there are.
    const COUNT: u64 = Exc::ALL.len() as u64;

    /// The act `n` names, modulo [`Exc::COUNT`].
    fn from(n: u64) -> Exc {
        Exc::ALL[(n % Exc::COUNT) as usize]
    }
}

/// `mode` 2's end: raises the exception `exc` names (255: from the seed and the domain id).
fn raise(seed: u64) -> u64 {
    let me = u64::from(shared::domain_id());
    let pick = shared::arg("exc", 255);
    let exc = Exc::from(if pick == 255 {
        seed.wrapping_add(me)
    } else {
        pick
    });
    let vector = (seed.wrapping_add(me) % 256) as u8;
    println!("fuzz: seed {seed} domain {me} raises {exc:?} (int vector {vector}): expect killed");
    // SAFETY: for every arm, the act ends this domain (that is the point) or, if the
    // hypervisor wrongly lets it go on, returns here without having written anything but
    // registers and this vCPU's own stack.
    unsafe {
        match exc {
            Exc::Ud2 => asm!("ud2"),
            Exc::Int3 => asm!("int3"),
            Exc::IntN => int_n(vector),
            Exc::DivideByZero => {
                asm!("xor ecx, ecx", "div rcx", out("rax") _, out("rdx") _, out("rcx") _)
            }
            Exc::DivideOverflow => asm!(
                "mov rax, 0x8000000000000000",
                "cqo",
                "mov rcx, -1",
                "idiv rcx",
                out("rax") _, out("rdx") _, out("rcx") _
            ),
            Exc::JumpNonCanonical => asm!("mov rax, 0x0000800000000000", "jmp rax", out("rax") _),
            Exc::JumpHypervisor => asm!("mov rax, 0xffffffff80100000", "jmp rax", out("rax") _),
            Exc::JumpUnmapped => asm!("mov rax, 0x500000000000", "jmp rax", out("rax") _),
            Exc::ExecuteStack => {
                // A `ret` written on the (no-execute) stack, then jumped to.
                let code = [0xc3u8; 16];
                asm!("call {0}", in(reg) code.as_ptr(), clobber_abi("C"));
            }
            Exc::MisalignedStackSse => asm!(
                "push rbp",
                "mov rbp, rsp",
                "and rsp, -16",
                "sub rsp, 24",
                "movaps [rsp], xmm0",
                "mov rsp, rbp",
                "pop rbp",
                out("xmm0") _
            ),
            Exc::PushNonCanonicalRsp => asm!(
                "mov rax, rsp",
                "mov rsp, 0x0000800000000040",
                "push rax",
                "mov rsp, rax",
                out("rax") _
            ),
            Exc::PushHypervisorRsp => asm!(
                "mov rax, rsp",
                "mov rsp, 0xffffffff80100040",
                "push rax",
                "mov rsp, rax",
                out("rax") _
            ),
            Exc::TrapFlag => hostile::single_step(),
            Exc::TrapFlagSyscall => asm!(
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "syscall",
                "nop",
                "pushfq",
                "and qword ptr [rsp], -0x101",
                "popfq",
                in("rax") nr::NULL,
                out("rcx") _, out("r11") _,
            ),
            Exc::TrapFlagMovSsSyscall => asm!(
                "mov {ss:x}, ss",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "mov ss, {ss:x}",
                "syscall",
                "nop",
                "pushfq",
                "and qword ptr [rsp], -0x101",
                "popfq",
                ss = out(reg) _,
                in("rax") nr::NULL,
                out("rcx") _, out("r11") _,
            ),
            Exc::Icebp => asm!(".byte 0xf1"),
            Exc::BadCallbackReturn => {
                let _ = hypercall::raw(nr::CALLBACK_RETURN, 0xffff_8000_0000_0000, 0, 0, 0, 0);
            }
            Exc::UpcallOnWildStack => upcall_on_wild_stack(),
            Exc::StackOverflow => return recurse(1) | hostile::SURVIVED,
            Exc::CompatSyscall => asm!(
                // Far return into the 32-bit ring-3 code segment (STAR's user base), where
                // the bytes `0f 05 0f 0b` are `syscall; ud2` as they are in 64-bit mode.
                "lea rax, [rip + 2f]",
                "push {cs32}",
                "push rax",
                // retfq (REX.W far return).
                ".byte 0x48, 0xcb",
                "2:",
                "syscall",
                "ud2",
                cs32 = const 0x1b,
                out("rax") _, out("rcx") _, out("r11") _,
            ),
            Exc::Hlt => asm!("hlt"),
            Exc::Swapgs => asm!("swapgs"),
            Exc::Sysret => {
                asm!("lea rcx, [rip]", "mov r11, 0x202", "sysretq", out("rcx") _, out("r11") _)
            }
            Exc::IretqToRing0 => asm!(
                // A frame for ring 0: SS 0x10, RSP, RFLAGS, CS 0x08, RIP.
                "mov rax, rsp",
                "push 0x10",
                "push rax",
                "pushfq",
                "push 0x08",
                "lea rcx, [rip + 2f]",
                "push rcx",
                "iretq",
                "2:",
                "mov rsp, rax",
                out("rax") _, out("rcx") _
            ),
            Exc::Wrmsr => asm!("wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0, in("edx") 0),
            Exc::SyscallNonCanonicalRsp => asm!(
                // A null call with RSP non-canonical: the frame it would return to is not a
                // valid guest context.
                "mov r12, rsp",
                "mov rsp, 0x0000800000001000",
                "syscall",
                "mov rsp, r12",
                inlateout("rax") nr::NULL => _,
                out("rcx") _, out("r11") _, out("r12") _,
            ),
        }
    }
    hostile::survived("an exception that should have ended it")
}

// `int N` for every N: 256 entries of `int imm8` (cd NN, the two-byte form even for 3),
// `ret`, and a pad byte, 4 bytes apart.
core::arch::global_asm!(
    ".pushsection .text.fuzz_int_table, \"ax\", @progbits",
    ".globl fuzz_int_table",
    ".balign 4",
    "fuzz_int_table:",
    ".set n, 0",
    ".rept 256",
    ".byte 0xcd, n, 0xc3, 0x90",
    ".set n, n + 1",
    ".endr",
    ".popsection",
);

unsafe extern "C" {
    static fuzz_int_table: u8;
}

/// `int N` for a vector chosen at run time: through a table of 256 `int` instructions.
///
/// # Safety
/// Ends the domain, or returns having changed nothing.
unsafe fn int_n(vector: u8) {
    let entry = &raw const fuzz_int_table as u64 + u64::from(vector) * 4;
    // SAFETY: the entry is `int N; ret`, a leaf that changes nothing if it returns.
    unsafe { asm!("call {0}", in(reg) entry, clobber_abi("C")) };
}

/// Recurses until the stack runs into its guard page.
#[inline(never)]
#[allow(
    unconditional_recursion,
    reason = "the guard page ends it: that is the point"
)]
fn recurse(depth: u64) -> u64 {
    let pad = core::hint::black_box([depth; 64]);
    pad[depth as usize % 64] + recurse(depth + 1)
}

/// Registers an upcall, arms the timer VIRQ and spins with RSP pointing into the
/// hypervisor's half: the hypervisor cannot push the upcall frame, so it must kill us.
fn upcall_on_wild_stack() {
    let Ok(port) = hypercall::evtchn_bind_virq(nr::virq::TIMER) else {
        return;
    };
    let _ = upcall::register(on_event);
    shared::set_mask(port, false);
    shared::set_upcall_mask(0, false);
    // The timer is armed from inside the wild-stack window: armed before it, the event could
    // come (on the good stack, if this vCPU was preempted for a millisecond on the way) and
    // leave nothing to fire during the spin, which then ran for seconds unkilled (seen about
    // once in ten runs of fuzz/exceptions on 2 CPUs).
    let deadline = time::now_ns() + 1_000_000;
    // SAFETY: spins with a wild RSP until the upcall (or a bug) ends us; RSP is restored
    // after a bounded spin if neither happens. `syscall` does not touch the stack, and the
    // hypervisor keeps R12 (callee-saved) across it.
    unsafe {
        asm!(
            "mov r12, rsp",
            "mov rsp, 0xffff800000001000",
            "syscall",
            "mov rcx, 2000000000",
            "2:",
            "dec rcx",
            "jnz 2b",
            "mov rsp, r12",
            inlateout("rax") nr::SET_TIMER => _,
            in("rdi") deadline,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}
