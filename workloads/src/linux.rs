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
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use abi::error::Errno;
use abi::layout;
use abi::shared::{Arg, MAX_ARGS, NAME_BYTES, SharedInfo};
use abi::tool::linux as contract;

/// Linux x86_64 system call numbers.
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const MMAP: u64 = 9;
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

pub fn evtchn_alloc_unbound(_remote: u32) -> Result<u32, Errno> {
    Ok(PIPE_PORT)
}

pub fn evtchn_bind(_remote: u32, _remote_port: u32) -> Result<u32, Errno> {
    Ok(PIPE_PORT)
}

/// Sends an event: the sender's clock, 8 bytes, over the pipe to the partner.
pub fn evtchn_send(_port: u32) -> Result<u64, Errno> {
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

/// Waits for the partner's event; records the time from its send as a wake-up. A closed or
/// missing pipe ends the process with code 2 (the partner is gone).
pub fn wait_event(_port: u32) {
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
