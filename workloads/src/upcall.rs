//! Event upcalls on the guest side: the entry the hypervisor jumps to when an unmasked event
//! is pending for a vCPU (`abi::hypercall::SET_CALLBACK`), and the loop that dispatches the
//! pending ports to the program's handler, as a Xen guest's `evtchn_do_upcall` does.
//!
//! The hypervisor enters `domino_upcall_entry` with RSP (and RDI) pointing at an
//! [`abi::shared::UpcallFrame`] holding the interrupted context's caller-saved registers.
//! The entry calls [`dispatch`] (a System V function, so callee-saved registers survive it),
//! then hands the frame back with `callback_return`, which restores the interrupted context,
//! vector registers included.

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use abi::layout;
use abi::shared::{Counters, MAX_PORTS, MAX_VCPUS, UpcallFrame};

#[cfg(not(test))]
core::arch::global_asm!(
    ".pushsection .text.domino_upcall_entry, \"ax\", @progbits",
    ".globl domino_upcall_entry",
    ".type domino_upcall_entry, @function",
    "domino_upcall_entry:",
    // RSP is 16-byte aligned here, so the callee sees the alignment the ABI promises.
    "call {dispatch}",
    "mov rdi, rsp",
    "mov eax, {callback_return}",
    "syscall",
    "ud2",
    ".size domino_upcall_entry, . - domino_upcall_entry",
    ".popsection",
    dispatch = sym dispatch,
    callback_return = const abi::hypercall::CALLBACK_RETURN,
);

#[cfg(not(test))]
unsafe extern "C" {
    fn domino_upcall_entry();
}

/// The program's event handler, as a `fn(usize, u32)` address (0: none yet).
static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Upcalls entered so far, over all vCPUs.
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);

/// Registers `handler`, called as `handler(vcpu, port)` once for each pending unmasked port
/// (with the port's pending bit already cleared) from the upcall of the vCPU that takes it,
/// and registers the upcall entry for the calling vCPU. Every vCPU that should take upcalls
/// calls this (with the same handler).
pub fn register(handler: fn(usize, u32)) -> Result<u64, abi::error::Errno> {
    HANDLER.store(handler as usize, Ordering::Release);
    #[cfg(not(test))]
    return crate::hypercall::set_callback(domino_upcall_entry as *const () as u64);
    #[cfg(test)]
    Ok(0)
}

// Test builds leave out the entry that calls these (it is freestanding assembly).
#[cfg_attr(test, allow(dead_code))]
fn counters() -> *mut Counters {
    layout::COUNTERS as *mut Counters
}

/// The vCPU an upcall runs on, from its stack: vCPU `n`'s stack lies below
/// `STACK_TOP - n * STACK_STRIDE` (`abi::layout`), and the frame is on that stack.
fn vcpu_of(rsp: u64) -> usize {
    (layout::STACK_TOP.saturating_sub(rsp) / layout::STACK_STRIDE) as usize
}

/// The upcall proper: runs the handler for every pending unmasked port of this vCPU, until
/// no new event arrived meanwhile.
#[cfg_attr(test, allow(dead_code))]
extern "C" fn dispatch(frame: *mut UpcallFrame) {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    let vcpu = vcpu_of(frame as u64).min(MAX_VCPUS - 1);
    let handler = HANDLER.load(Ordering::Acquire);
    // SAFETY: the counters page is mapped read-write for the domain's whole life; the
    // hypervisor updates these fields with atomic operations, so atomic views are sound;
    // indices are in bounds (vcpu clamped above, words < MAX_PORTS / 64).
    let (pending_flag, sel) = unsafe {
        let ev = addr_of_mut!((*counters()).vcpu_events[vcpu]);
        (
            &*(addr_of_mut!((*ev).upcall_pending) as *const AtomicU8),
            &*(addr_of_mut!((*ev).pending_sel) as *const AtomicU64),
        )
    };
    while pending_flag.swap(0, Ordering::SeqCst) != 0 {
        let mut words = sel.swap(0, Ordering::SeqCst);
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            if w >= MAX_PORTS / 64 {
                continue;
            }
            // SAFETY: as above.
            let (pending, mask) = unsafe {
                (
                    &*(addr_of_mut!((*counters()).evtchn_pending[w]) as *const AtomicU64),
                    &*(addr_of_mut!((*counters()).evtchn_mask[w]) as *const AtomicU64),
                )
            };
            let mut bits = pending.load(Ordering::SeqCst) & !mask.load(Ordering::SeqCst);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let port = (w * 64) as u32 + b;
                if pending.fetch_and(!(1 << b), Ordering::SeqCst) & (1 << b) != 0 && handler != 0 {
                    // SAFETY: `HANDLER` only ever holds a `fn(usize, u32)` stored by `register`.
                    let f: fn(usize, u32) = unsafe { core::mem::transmute(handler) };
                    f(vcpu, port);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vcpu_is_found_from_its_stack() {
        assert_eq!(vcpu_of(layout::STACK_TOP - 8), 0);
        assert_eq!(vcpu_of(layout::STACK_TOP - layout::STACK_BYTES + 16), 0);
        assert_eq!(vcpu_of(layout::STACK_TOP - layout::STACK_STRIDE - 200), 1);
        assert_eq!(
            vcpu_of(layout::STACK_TOP - 3 * layout::STACK_STRIDE - 4096),
            3
        );
    }
}
