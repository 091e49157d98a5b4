//! The guest side of Domino: a small runtime for ring-3 domains, and the logic Domain0 runs.
//!
//! A guest program is a binary in `src/bin/` that says `workloads::entry!(main)` with
//! `fn main(vcpu: usize) -> u64`. The runtime gives it:
//! - the entry (`_start`, from [`entry!`]) and the shutdown that follows `main`'s return;
//! - hypercall wrappers ([`hypercall`]) and Domain0's typed control calls ([`control`]);
//! - `print!`/`println!` to the hypervisor console ([`console`]);
//! - the system time from the shared-info page, and sleeping on the one-shot timer ([`time`]);
//! - the domain's identity and arguments, and its `work` counters ([`shared`]);
//! - a panic handler that prints and shuts the domain down with `shutdown::CRASH`, and a global
//!   allocator whose heap a program hands over with [`rt::init_heap`] (Domain0 does).
//!
//! What is logic rather than hardware (Domain0's bookkeeping and results records, the unit of CPU
//! work) is in plain modules tested on the host with `cargo test -p workloads`; in test builds
//! the crate links `std` and leaves out everything that would clash with it (the memory
//! routines, the panic handler, the allocator).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod churn;
pub mod console;
pub mod control;
pub mod fuzz;
pub mod hostile;
pub mod hypercall;
#[cfg(any(feature = "linux", test))]
pub mod linux;
pub mod pagetable;
pub mod regs;
pub mod report;
pub mod rt;
pub mod shared;
pub mod split;
pub mod time;
pub mod timeline;
pub mod upcall;
pub mod windows;
pub mod work;
pub mod xtf;

// `memcpy` & co. and the unwinder symbols, from the `cmem` crate (shared with the
// hypervisor); left out of test builds, where libc and `std` have them.
#[cfg(not(test))]
cmem::export_c_symbols!();

/// Declares a guest program's entry: `workloads::entry!(main)` with
/// `fn main(vcpu: usize) -> u64`.
///
/// It defines `_start`, the ELF entry every vCPU starts at (README.md "Entry contract"):
/// RSP is that vCPU's stack top and RDI its index. `_start` calls `main(vcpu)` through
/// [`rt::run`], which shuts the domain down with the returned code (0 = clean exit); `_start`
/// itself never returns.
///
/// `workloads::entry!(start: f, prologue: ["push rax", ...])` is the raw form, for a program
/// that must see the registers it was started with: `_start` runs the prologue's assembly
/// lines first, then calls `extern "C" fn f(..) -> !` as above, with RBP and RSP as they are
/// for `main` and every other register as the prologue left it.
#[cfg(not(feature = "linux"))]
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!(start: __domino_entry);

        extern "C" fn __domino_entry(vcpu: usize) -> ! {
            let main: fn(usize) -> u64 = $main;
            $crate::rt::run(vcpu, main)
        }
    };
    (start: $entry:path $(, prologue: [$($line:literal),* $(,)?])? $(,)?) => {
        // The stack top is 16-byte aligned by contract; realign anyway, since the `call`
        // below must leave RSP = 8 (mod 16) at the callee's entry as the SysV ABI requires.
        // RBP = 0 ends frame-pointer walks here.
        ::core::arch::global_asm!(
            ".pushsection .text._start, \"ax\", @progbits",
            ".globl _start",
            ".type _start, @function",
            "_start:",
            $($($line,)*)?
            "xor ebp, ebp",
            "and rsp, -16",
            "call {entry}",
            "ud2",
            ".size _start, . - _start",
            ".popsection",
            entry = sym $entry,
        );
    };
}

/// `entry!` of the Linux back end (feature `linux`, [`linux`]): `_start` is the process's
/// entry, with RSP at `argc`; it hands that to [`linux::start`], which reads the arguments,
/// maps the shared pages and runs `main` for the vCPU `argv` names. The raw form has no Linux
/// build (the programs that use it are refused by the Linux engine).
#[cfg(feature = "linux")]
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        ::core::arch::global_asm!(
            ".pushsection .text._start, \"ax\", @progbits",
            ".globl _start",
            ".type _start, @function",
            "_start:",
            "xor ebp, ebp",
            "mov rdi, rsp",
            "and rsp, -16",
            "call {entry}",
            "ud2",
            ".size _start, . - _start",
            ".popsection",
            entry = sym __domino_entry,
        );

        extern "C" fn __domino_entry(sp: *const u64) -> ! {
            let main: fn(usize) -> u64 = $main;
            // SAFETY: `_start` passes the stack pointer the kernel started the process with.
            unsafe { $crate::linux::start(sp, main) }
        }
    };
}

/// Prints to the hypervisor console (which prefixes every line with the domain's name).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the hypervisor console, in one hypercall when it fits
/// [`console::LINE_BYTES`], so lines of different vCPUs do not interleave.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
