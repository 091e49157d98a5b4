//! The runtime's Linux back end (feature `linux`): the same guest programs as Linux processes,
//! for the Linux engine (`scripts/run --engine linux`, `scripts/linux-init`).
//!
//! The programs stay `#![no_std]` static ELF files linked by `link.ld`; Linux runs them as
//! they are. What a hypercall does under Domino is a Linux system call here, made with the
//! `syscall` instruction (no libc):
//!
//! | runtime | Domino | Linux |
//! |---|---|---|
//! | `entry!` | every vCPU enters `_start` with its index | one process per vCPU; `_start` reads `argv` (`abi::tool::linux`) |
//! | `shared::*` | the shared-info and counters pages | the same layout: a private page at `layout::SHARED_INFO` filled from `argv`, and the counters file (`COUNTERS_FD`) mapped shared at `layout::COUNTERS` |
//! | `time::now_ns` | shared-info time + `rdtsc` | `clock_gettime(CLOCK_MONOTONIC)` |
//! | `time::sleep_until` | `set_timer` + `block` | `clock_nanosleep(TIMER_ABSTIME)`; lateness recorded as a wake-up |
//! | `yield_now` | `sched_op(Yield)` | `sched_yield` |
//! | `block`, `park` | `sched_op(Block)`, `vcpu_op(Down)` | `pause` |
//! | `shutdown(code)` | ends the domain | `exit_group(code)`; `/init` ends the domain's other processes |
//! | `evtchn_alloc_unbound`, `evtchn_bind` | a port | port 1: the pipes `/init` set up (`SEND_FD`, `RECV_FD`) |
//! | `evtchn_send`, `shared::wait_event` | event channel | 8 bytes (the sender's clock) over the pipe; the reader records now - sent as a wake-up |
//! | `console_write` | hypervisor console | `write(1)`, the serial console |
//!
//! A wake-up is measured by the program itself, as Domino's guests see it: from the instant it
//! should have run (a timer's deadline, an event's send) to when it runs.

use core::arch::asm;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};

use abi::error::Errno;
use abi::layout;
use abi::shared::{Arg, Counters, MAX_ARGS, NAME_BYTES, SharedInfo};
use abi::tool::linux::{self as contract, Port};

/// Linux x86_64 system call numbers.
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const OPEN: u64 = 2;
    pub const MMAP: u64 = 9;
    pub const MUNMAP: u64 = 11;
    pub const PREAD64: u64 = 17;
    pub const PWRITE64: u64 = 18;
    pub const FCNTL: u64 = 72;
    pub const FUTEX: u64 = 202;
    pub const SCHED_YIELD: u64 = 24;
    pub const PAUSE: u64 = 34;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const CLOCK_NANOSLEEP: u64 = 230;
    pub const EXIT_GROUP: u64 = 231;
}

const CLOCK_MONOTONIC: u64 = 1;
const TIMER_ABSTIME: u64 = 1;
const EINTR: i64 = 4;
const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const MAP_SHARED: u64 = 1;
const MAP_PRIVATE: u64 = 2;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const O_RDWR: u64 = 2;
const O_CLOEXEC: u64 = 0o2000000;
const F_GETFD: u64 = 1;
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;

/// A Linux system call; returns RAX (a negative errno on failure).
///
/// # Safety
/// The call must not break memory safety: pointers it passes must be valid for what the
/// kernel does with them, and a mapping must not replace memory Rust is using.
unsafe fn syscall(number: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers RCX and R11 only.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The wake-up page of the counters file (null until `start` maps it).
static STATS: AtomicPtr<AtomicU64> = AtomicPtr::new(core::ptr::null_mut());

/// The process's entry, from `entry!`'s `_start` with the initial stack pointer: reads the
/// arguments, lays out the shared-info and counters pages, runs `main` and exits with its code.
///
/// # Safety
/// `sp` is the stack pointer the kernel started the process with: argc, then argc pointers
/// to NUL-terminated strings (System V ABI, process initialisation), which live as long as
/// the process; and nothing else of the program runs yet.
pub unsafe fn start(sp: *const u64, main: fn(usize) -> u64) -> ! {
    // SAFETY: the caller's promise.
    let argc = unsafe { sp.read() } as usize;
    // SAFETY: one page at SHARED_INFO, private and anonymous: nothing of ours lives there
    // (the image ends below IMAGE_LIMIT = SHARED_INFO).
    let info = unsafe {
        syscall(
            nr::MMAP,
            layout::SHARED_INFO,
            contract::PAGE as u64,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
        )
    };
    if info != layout::SHARED_INFO as i64 {
        exit(1);
    }
    let info = layout::SHARED_INFO as *mut SharedInfo;
    let mut vcpu = 0usize;
    let mut args = 0usize;
    for i in 1..argc {
        // SAFETY: argv[i] for i < argc is a valid C string (the caller's promise).
        let word = unsafe { c_str(sp.add(1 + i).read() as *const u8) };
        let Some(eq) = word.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        let number = parse_u64(value);
        // SAFETY: `info` is the page mapped above, private to this process and large
        // enough for a SharedInfo (it is one page under Domino too); fields are written
        // through raw pointers before any reference to the page exists.
        unsafe {
            match key {
                b"vcpu" => vcpu = number as usize,
                b"id" => addr_of_mut!((*info).domain_id).write(number as u32),
                b"vcpus" => addr_of_mut!((*info).vcpus).write(number as u32),
                b"name" => {
                    let n = value.len().min(NAME_BYTES);
                    let name = addr_of_mut!((*info).name).cast::<u8>();
                    core::ptr::copy_nonoverlapping(value.as_ptr(), name, n);
                }
                _ if args < MAX_ARGS && key.len() <= 16 => {
                    let mut arg = Arg {
                        name: [0; 16],
                        value: number,
                    };
                    arg.name[..key.len()].copy_from_slice(key);
                    addr_of_mut!((*info).args[args]).write(arg);
                    args += 1;
                }
                _ => {}
            }
        }
    }
    // The counters file, shared with /init and the domain's other processes; run by hand
    // (no file), a private page stands in.
    // SAFETY: FILE_BYTES at COUNTERS, where nothing of ours lives (above SHARED_INFO's page).
    let mapped = unsafe {
        syscall_mmap(
            layout::COUNTERS,
            contract::FILE_BYTES as u64,
            MAP_SHARED | MAP_FIXED,
            contract::COUNTERS_FD as u64,
        )
    };
    if mapped != layout::COUNTERS as i64 {
        // SAFETY: as above, anonymous.
        let anon = unsafe {
            syscall_mmap(
                layout::COUNTERS,
                contract::FILE_BYTES as u64,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                u64::MAX,
            )
        };
        if anon != layout::COUNTERS as i64 {
            exit(1);
        }
    }
    STATS.store(
        (layout::COUNTERS as usize + contract::STATS_OFFSET) as *mut AtomicU64,
        Ordering::Release,
    );
    // A `ping` domain's events go over the pipes `/init` gave it; every other domain's over
    // the domains' files (shared memory and futexes).
    // SAFETY: F_GETFD takes no pointer.
    let pipes = unsafe { syscall(nr::FCNTL, contract::SEND_FD as u64, F_GETFD, 0, 0) } >= 0;
    PIPES.store(pipes, Ordering::Relaxed);
    exit(main(vcpu))
}

/// `mmap` with PROT_READ | PROT_WRITE at offset 0.
///
/// # Safety
/// As [`syscall`]: the range must hold nothing Rust uses.
unsafe fn syscall_mmap(addr: u64, len: u64, flags: u64, fd: u64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the range; R8 = fd, R9 = offset 0.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr::MMAP as i64 => ret,
            in("rdi") addr,
            in("rsi") len,
            in("rdx") PROT_READ | PROT_WRITE,
            in("r10") flags,
            in("r8") fd,
            in("r9") 0u64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The bytes of a C string.
///
/// # Safety
/// `p` points to a NUL-terminated string that lives for the rest of the process.
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    let mut len = 0;
    // SAFETY: the caller's promise: every byte up to the NUL is readable. Volatile, so that
    // the loop is not turned into a call of libc's `strlen`, which these images lack.
    while unsafe { p.add(len).read_volatile() } != 0 {
        len += 1;
    }
    // SAFETY: as above.
    unsafe { core::slice::from_raw_parts(p, len) }
}

/// A decimal (or `0x` hexadecimal) number; 0 for anything else.
fn parse_u64(s: &[u8]) -> u64 {
    let (digits, radix) = match s.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    let mut n: u64 = 0;
    for &b in digits {
        let Some(d) = (b as char).to_digit(radix) else {
            return 0;
        };
        n = n.wrapping_mul(u64::from(radix)).wrapping_add(u64::from(d));
    }
    n
}

/// Ends the process (every thread) with `code`.
pub fn exit(code: u64) -> ! {
    loop {
        // SAFETY: exit_group takes no pointer and does not return.
        unsafe { syscall(nr::EXIT_GROUP, code, 0, 0, 0) };
    }
}

/// `shutdown`: the process ends; `/init` ends the domain's others.
pub fn shutdown(code: u64) -> ! {
    exit(code)
}

pub fn yield_now() {
    // SAFETY: no pointer.
    unsafe { syscall(nr::SCHED_YIELD, 0, 0, 0, 0) };
}

/// `block`: sleeps until a signal (nothing else wakes a Linux process that has no timer or
/// event of its own here; `time::sleep_until` and `wait_event` have their own).
pub fn block() {
    // SAFETY: no pointer.
    unsafe { syscall(nr::PAUSE, 0, 0, 0, 0) };
}

/// A process cannot take its vCPU down: refused, so `rt::park` blocks instead.
pub fn vcpu_down(_vcpu: usize) -> Result<u64, Errno> {
    Err(Errno::NoSys)
}

pub fn console_write(bytes: &[u8]) -> Result<u64, Errno> {
    // SAFETY: the kernel only reads `bytes`, a live slice.
    let n = unsafe { syscall(nr::WRITE, 1, bytes.as_ptr() as u64, bytes.len() as u64, 0) };
    if n < 0 {
        Err(Errno::Fault)
    } else {
        Ok(n as u64)
    }
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

pub fn now_ns() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a live, writable timespec.
    unsafe {
        syscall(
            nr::CLOCK_GETTIME,
            CLOCK_MONOTONIC,
            &mut ts as *mut Timespec as u64,
            0,
            0,
        )
    };
    (ts.sec as u64) * 1_000_000_000 + ts.nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns`; if it had to sleep, records how late
/// it woke as a wake-up.
pub fn sleep_until(deadline_ns: u64) {
    let mut slept = false;
    while now_ns() < deadline_ns {
        let ts = Timespec {
            sec: (deadline_ns / 1_000_000_000) as i64,
            nsec: (deadline_ns % 1_000_000_000) as i64,
        };
        // SAFETY: `ts` is a live timespec; the kernel only reads it (TIMER_ABSTIME).
        unsafe {
            syscall(
                nr::CLOCK_NANOSLEEP,
                CLOCK_MONOTONIC,
                TIMER_ABSTIME,
                &ts as *const Timespec as u64,
                0,
            )
        };
        slept = true;
    }
    if slept {
        record_wake(deadline_ns, now_ns());
    }
}

/// Counts one wake-up, due at `due_ns` and running at `now_ns`, in the wake-up page, unless
/// it was due before the page's epoch (`abi::tool::linux::EPOCH_NS`).
pub fn record_wake(due_ns: u64, now_ns: u64) {
    let stats = STATS.load(Ordering::Acquire);
    if stats.is_null() {
        return;
    }
    let ns = now_ns.saturating_sub(due_ns);
    // SAFETY: STATS points to the wake-up page, FILE_BYTES - STATS_OFFSET bytes of u64
    // words, mapped for the process's life; every index below is within HIST + HIST_BUCKETS
    // words (2,112 bytes of the page's 4,096).
    let word = |i: usize| unsafe { &*stats.add(i) };
    if due_ns < word(contract::EPOCH_NS).load(Ordering::Relaxed) {
        return;
    }
    word(contract::WAKEUPS).fetch_add(1, Ordering::Relaxed);
    word(contract::WAKE_MAX_NS).fetch_max(ns, Ordering::Relaxed);
    word(contract::HIST + contract::bucket(ns)).fetch_add(1, Ordering::Relaxed);
}

/// The event "port" a `ping` domain uses: the pipes `/init` set up.
const PIPE_PORT: u32 = 1;

/// Whether this domain's events go over pipes (`ping`) rather than the domains' files.
static PIPES: AtomicBool = AtomicBool::new(false);

pub fn evtchn_alloc_unbound(remote: u32) -> Result<u32, Errno> {
    if PIPES.load(Ordering::Relaxed) {
        return Ok(PIPE_PORT);
    }
    let me = Peer::of(my_id())?;
    me.claim_port(Port::Unbound { remote })
}

pub fn evtchn_bind(remote: u32, remote_port: u32) -> Result<u32, Errno> {
    if PIPES.load(Ordering::Relaxed) {
        return Ok(PIPE_PORT);
    }
    let id = my_id();
    if remote == id || remote_port == 0 || remote_port as usize >= contract::MAX_LINUX_PORTS {
        return Err(Errno::Inval);
    }
    let peer = Peer::of(remote)?;
    let theirs = peer.table(contract::PORTS + remote_port as usize);
    if contract::port_of(theirs.load(Ordering::SeqCst)) != (Port::Unbound { remote: id }) {
        return Err(Errno::Inval);
    }
    let me = Peer::of(id)?;
    let port = me.claim_port(Port::Bound {
        remote,
        remote_port,
    })?;
    let unbound = contract::port_entry(Port::Unbound { remote: id });
    let bound = contract::port_entry(Port::Bound {
        remote: id,
        remote_port: port,
    });
    if theirs
        .compare_exchange(unbound, bound, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        me.table(contract::PORTS + port as usize)
            .store(0, Ordering::SeqCst);
        return Err(Errno::Inval);
    }
    Ok(port)
}

/// Sends an event: over the pipe (`ping`: the sender's clock, 8 bytes), or by setting the
/// bound port's pending bit in the receiver's counters page and waking its futex.
pub fn evtchn_send(port: u32) -> Result<u64, Errno> {
    if !PIPES.load(Ordering::Relaxed) {
        return send_shared(port);
    }
    let sent = now_ns().to_ne_bytes();
    loop {
        // SAFETY: the kernel only reads `sent`.
        let n = unsafe {
            syscall(
                nr::WRITE,
                contract::SEND_FD as u64,
                sent.as_ptr() as u64,
                8,
                0,
            )
        };
        match n {
            8 => return Ok(0),
            n if n == -EINTR => continue,
            _ => return Err(Errno::Inval),
        }
    }
}

/// Waits for an event on `port` and consumes it; records the time from its send as a
/// wake-up when it had to sleep. Over a pipe, a closed or missing pipe ends the process with
/// code 2 (the partner is gone).
pub fn wait_event(port: u32) {
    if !PIPES.load(Ordering::Relaxed) {
        wait_shared(&[port], true);
        return;
    }
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        // SAFETY: the kernel writes at most 8 - got bytes into `buf[got..]`.
        let n = unsafe {
            syscall(
                nr::READ,
                contract::RECV_FD as u64,
                buf[got..].as_mut_ptr() as u64,
                (8 - got) as u64,
                0,
            )
        };
        match n {
            n if n > 0 => got += n as usize,
            n if n == -EINTR => {}
            _ => exit(2),
        }
    }
    record_wake(u64::from_ne_bytes(buf), now_ns());
}

/// `sched_op(Poll)`: sleeps until one of `ports` is pending (without consuming it); 1 if one
/// was at once.
pub fn poll(ports: &[u32]) -> Result<u64, Errno> {
    if PIPES.load(Ordering::Relaxed) {
        return Err(Errno::NoSys);
    }
    Ok(u64::from(wait_shared(ports, false)))
}

// ---------------------------------------------------------------------------------------
// Split devices: the domains' files (`abi::tool::linux`, "Split devices").

/// Most domain ids a program can reach (the split devices' domains are few).
const MAX_DOMAINS: usize = 1024;
/// Bytes of a domain's file mapped to reach its counters and table: its first three pages.
const HEAD_BYTES: usize = contract::GRANT_OFFSET;

/// The domains' files this process has opened: descriptor and the mapping of the head.
static PEER_FD: [AtomicI32; MAX_DOMAINS] = [const { AtomicI32::new(-1) }; MAX_DOMAINS];
static PEER_HEAD: [AtomicPtr<u8>; MAX_DOMAINS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_DOMAINS];
/// The pages mapped by `grant_map`, by handle - 1 (0 = free).
static MAPPED: [AtomicU64; MAX_MAPPINGS] = [const { AtomicU64::new(0) }; MAX_MAPPINGS];
const MAX_MAPPINGS: usize = 64;

fn my_id() -> u32 {
    // SAFETY: `start` wrote the page before `main` ran; the id is not changed after.
    unsafe { (*(layout::SHARED_INFO as *const SharedInfo)).domain_id }
}

/// A domain's file, opened and its head mapped.
#[derive(Clone, Copy)]
struct Peer {
    fd: i32,
    head: *mut u8,
}

impl Peer {
    /// Domain `id`'s file: opened and mapped on first use. `Inval` for a domain that has no
    /// file (or an id beyond [`MAX_DOMAINS`]).
    fn of(id: u32) -> Result<Peer, Errno> {
        let i = id as usize;
        if i >= MAX_DOMAINS {
            return Err(Errno::Inval);
        }
        let head = PEER_HEAD[i].load(Ordering::Acquire);
        if !head.is_null() {
            return Ok(Peer {
                fd: PEER_FD[i].load(Ordering::Relaxed),
                head,
            });
        }
        let mut path = [0u8; 40];
        let dir = contract::DOMAIN_DIR.as_bytes();
        path[..dir.len()].copy_from_slice(dir);
        path[dir.len()] = b'/';
        let n = write_decimal(&mut path[dir.len() + 1..], u64::from(id));
        path[dir.len() + 1 + n] = 0;
        // SAFETY: `path` is a NUL-terminated string the kernel only reads.
        let fd = unsafe { syscall(nr::OPEN, path.as_ptr() as u64, O_RDWR | O_CLOEXEC, 0, 0) };
        if fd < 0 {
            return Err(Errno::Inval);
        }
        // SAFETY: a new mapping where the kernel chooses: it replaces nothing of ours.
        let p = unsafe { syscall_mmap(0, HEAD_BYTES as u64, MAP_SHARED, fd as u64) };
        if p < 0 {
            return Err(Errno::NoMem);
        }
        // This process is one thread: no other call races for the slot.
        PEER_FD[i].store(fd as i32, Ordering::Relaxed);
        PEER_HEAD[i].store(p as *mut u8, Ordering::Release);
        Ok(Peer {
            fd: fd as i32,
            head: p as *mut u8,
        })
    }

    /// Word `i` of the table page.
    fn table(&self, i: usize) -> &'static AtomicU64 {
        assert!(i < contract::PAGE / 8);
        // SAFETY: `head` maps HEAD_BYTES of the file for the process's life; the table page
        // is its third page; words of the shared file are only used atomically.
        unsafe { &*(self.head.add(contract::TABLE_OFFSET) as *const AtomicU64).add(i) }
    }

    /// The counters page's pending word of `port`, and its bit.
    fn pending(&self, port: u32) -> (&'static AtomicU64, u64) {
        let off = core::mem::offset_of!(Counters, evtchn_pending) + (port as usize / 64) * 8;
        assert!(off + 8 <= contract::PAGE);
        // SAFETY: as in `table`; the counters page is the file's first page.
        let word = unsafe { &*(self.head.add(off) as *const AtomicU64) };
        (word, 1 << (port % 64))
    }

    /// Claims the lowest free port (from 1) with entry `p`.
    fn claim_port(&self, p: Port) -> Result<u32, Errno> {
        let entry = contract::port_entry(p);
        (1..contract::MAX_LINUX_PORTS)
            .find(|&port| {
                self.table(contract::PORTS + port)
                    .compare_exchange(0, entry, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .map(|port| port as u32)
            .ok_or(Errno::NoMem)
    }

    /// Grant `gref` of this domain, if it is made to `grantee`: its byte offset in the file
    /// and whether it is read-only.
    fn grant(&self, gref: u32, grantee: u32) -> Result<(u64, bool), Errno> {
        if gref == 0 || gref as usize > contract::MAX_GRANTS {
            return Err(Errno::Inval);
        }
        match contract::grant_of(
            self.table(contract::GRANTS + gref as usize - 1)
                .load(Ordering::SeqCst),
        ) {
            Some((to, readonly)) if to == grantee => Ok((
                (contract::GRANT_OFFSET + (gref as usize - 1) * contract::PAGE) as u64,
                readonly,
            )),
            _ => Err(Errno::Perm),
        }
    }
}

/// Writes `n` in decimal into `out`; returns the digits written.
fn write_decimal(out: &mut [u8], mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

fn futex(word: &AtomicU64, op: u64, value: u32) {
    let addr = word as *const AtomicU64 as u64;
    // SAFETY: the futex word is the low half of a live, aligned u64 of a shared mapping
    // (little-endian); FUTEX_WAIT and FUTEX_WAKE take no other pointer (no timeout).
    unsafe { syscall(nr::FUTEX, addr, op, u64::from(value), 0) };
}

fn send_shared(port: u32) -> Result<u64, Errno> {
    let me = Peer::of(my_id())?;
    if port == 0 || port as usize >= contract::MAX_LINUX_PORTS {
        return Err(Errno::Inval);
    }
    let Port::Bound {
        remote,
        remote_port,
    } = contract::port_of(
        me.table(contract::PORTS + port as usize)
            .load(Ordering::SeqCst),
    )
    else {
        return Err(Errno::Inval);
    };
    let peer = Peer::of(remote)?;
    let (word, bit) = peer.pending(remote_port);
    word.fetch_or(bit, Ordering::SeqCst);
    peer.table(contract::EVENT_SENT_NS)
        .store(now_ns(), Ordering::SeqCst);
    let seq = peer.table(contract::EVENT_SEQ);
    seq.fetch_add(1, Ordering::SeqCst);
    futex(seq, FUTEX_WAKE, i32::MAX as u32);
    Ok(0)
}

/// Waits until one of `ports` is pending; consumes it if `take`. Returns whether one was at
/// once; a wait that slept is recorded as a wake-up from the last send.
fn wait_shared(ports: &[u32], take: bool) -> bool {
    let Ok(me) = Peer::of(my_id()) else { exit(2) };
    let seq = me.table(contract::EVENT_SEQ);
    let mut slept = false;
    loop {
        let seen = seq.load(Ordering::SeqCst) as u32;
        let hit = ports.iter().any(|&p| {
            let (word, bit) = me.pending(p);
            if take {
                word.fetch_and(!bit, Ordering::SeqCst) & bit != 0
            } else {
                word.load(Ordering::SeqCst) & bit != 0
            }
        });
        if hit {
            if slept {
                let sent = me.table(contract::EVENT_SENT_NS).load(Ordering::SeqCst);
                record_wake(sent, now_ns());
            }
            return !slept;
        }
        futex(seq, FUTEX_WAIT, seen);
        slept = true;
    }
}

/// Grants domain `grantee` this process's page at `va`: the page becomes a shared mapping of
/// the next free grant page of the domain's file, its contents kept.
pub fn grant_access(va: u64, grantee: u32, readonly: bool) -> Result<u32, Errno> {
    if !va.is_multiple_of(contract::PAGE as u64) || va >= layout::SHARED_INFO {
        return Err(Errno::Inval);
    }
    let me = Peer::of(my_id())?;
    let entry = contract::grant_entry(grantee, readonly);
    let gref = (1..=contract::MAX_GRANTS)
        .find(|&r| {
            me.table(contract::GRANTS + r - 1)
                .compare_exchange(0, entry, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
        .ok_or(Errno::NoMem)? as u32;
    let offset = (contract::GRANT_OFFSET + (gref as usize - 1) * contract::PAGE) as u64;
    // SAFETY: the kernel reads the page at `va`, a page of this program's image (below
    // SHARED_INFO) that the caller owns.
    let n = unsafe {
        syscall_6(
            nr::PWRITE64,
            [me.fd as u64, va, contract::PAGE as u64, offset, 0, 0],
        )
    };
    if n != contract::PAGE as i64 {
        return Err(Errno::Fault);
    }
    // SAFETY: the page at `va` is replaced by a shared mapping holding what it held (written
    // just above); this process is one thread, so nothing used it in between.
    let p = unsafe {
        syscall_6(
            nr::MMAP,
            [
                va,
                contract::PAGE as u64,
                PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_FIXED,
                me.fd as u64,
                offset,
            ],
        )
    };
    if p != va as i64 {
        return Err(Errno::NoMem);
    }
    Ok(gref)
}

/// Maps the page `granter` granted as `gref` at `va` (a page of `layout::MAP_AREA`).
///
/// # Safety
/// As the hypervisor's `grant_map`: the page is shared memory, used atomically.
pub unsafe fn grant_map(granter: u32, gref: u32, va: u64, readonly: bool) -> Result<u32, Errno> {
    if !(layout::MAP_AREA..layout::MAP_AREA + layout::MAP_AREA_BYTES).contains(&va)
        || !va.is_multiple_of(contract::PAGE as u64)
    {
        return Err(Errno::Inval);
    }
    let peer = Peer::of(granter)?;
    let (offset, granted_readonly) = peer.grant(gref, my_id())?;
    if granted_readonly && !readonly {
        return Err(Errno::Perm);
    }
    let slot = MAPPED
        .iter()
        .position(|m| {
            m.compare_exchange(0, va, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
        .ok_or(Errno::NoMem)?;
    let prot = if readonly {
        PROT_READ
    } else {
        PROT_READ | PROT_WRITE
    };
    // SAFETY: `va` is a page of MAP_AREA, which holds nothing but such mappings (the
    // caller's promise).
    let p = unsafe {
        syscall_6(
            nr::MMAP,
            [
                va,
                contract::PAGE as u64,
                prot,
                MAP_SHARED | MAP_FIXED,
                peer.fd as u64,
                offset,
            ],
        )
    };
    if p != va as i64 {
        MAPPED[slot].store(0, Ordering::SeqCst);
        return Err(Errno::NoMem);
    }
    Ok(slot as u32 + 1)
}

/// Undoes a [`grant_map`].
pub fn grant_unmap(handle: u32) -> Result<u64, Errno> {
    let slot = (handle as usize)
        .checked_sub(1)
        .filter(|&s| s < MAX_MAPPINGS)
        .ok_or(Errno::Inval)?;
    let va = MAPPED[slot].swap(0, Ordering::SeqCst);
    if va == 0 {
        return Err(Errno::Inval);
    }
    // SAFETY: `va` is the page `grant_map` mapped; its `Mapping` is being dropped, so no
    // reference into it remains.
    unsafe { syscall(nr::MUNMAP, va, contract::PAGE as u64, 0, 0) };
    Ok(0)
}

/// Copies out of the page `granter` granted as `gref`, from `offset`, into `buf`.
pub fn grant_copy_from(granter: u32, gref: u32, offset: u32, buf: &mut [u8]) -> Result<u64, Errno> {
    // SAFETY: the kernel writes `buf`, borrowed mutably for the call.
    unsafe {
        grant_io(
            nr::PREAD64,
            granter,
            gref,
            offset,
            buf.as_mut_ptr() as u64,
            buf.len(),
        )
    }
}

/// Copies `buf` into the page `granter` granted as `gref` (read-write), at `offset`.
pub fn grant_copy_to(granter: u32, gref: u32, offset: u32, buf: &[u8]) -> Result<u64, Errno> {
    // SAFETY: the kernel only reads `buf`.
    unsafe {
        grant_io(
            nr::PWRITE64,
            granter,
            gref,
            offset,
            buf.as_ptr() as u64,
            buf.len(),
        )
    }
}

/// A grant copy as one `pread64` or `pwrite64` (`call`) of `len` bytes at `buf` against the
/// granter's shared memory file, at the grant's page and `offset`; a write needs a
/// read-write grant.
///
/// # Safety
/// `buf` is valid for `len` bytes: written by a `PREAD64`, read by a `PWRITE64`.
unsafe fn grant_io(
    call: u64,
    granter: u32,
    gref: u32,
    offset: u32,
    buf: u64,
    len: usize,
) -> Result<u64, Errno> {
    let peer = Peer::of(granter)?;
    let (at, readonly) = peer.grant(gref, my_id())?;
    if readonly && call == nr::PWRITE64 {
        return Err(Errno::Perm);
    }
    if offset as usize + len > contract::PAGE {
        return Err(Errno::Inval);
    }
    // SAFETY: per this function's contract.
    let n = unsafe {
        syscall_6(
            call,
            [
                peer.fd as u64,
                buf,
                len as u64,
                at + u64::from(offset),
                0,
                0,
            ],
        )
    };
    if n != len as i64 {
        return Err(Errno::Fault);
    }
    Ok(0)
}

/// A system call of six arguments.
///
/// # Safety
/// As [`syscall`].
unsafe fn syscall_6(number: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number as i64 => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

// The Linux back end lays the Domino pages out in one page each.
const _: () = assert!(core::mem::size_of::<SharedInfo>() <= contract::PAGE);
const _: () = assert!(core::mem::size_of::<abi::shared::Counters>() <= contract::STATS_OFFSET);

#[cfg(test)]
mod tests {
    use super::parse_u64;

    #[test]
    fn numbers_from_argv() {
        assert_eq!(parse_u64(b"8192"), 8192);
        assert_eq!(parse_u64(b"0x10"), 16);
        assert_eq!(parse_u64(b"12a"), 0);
        assert_eq!(parse_u64(b""), 0);
    }
}
