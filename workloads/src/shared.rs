//! The shared-info page (read-only: who this domain is, its arguments, the time) and the
//! counters page (written here: the `work` each vCPU reports).
//!
//! The hypervisor maps both at fixed addresses (`abi::layout`) before the first vCPU starts.
//! It keeps updating the time fields while the guest reads them, so the runtime never forms a
//! reference to the whole page: the fields that change are read with volatile loads
//! ([`crate::time`]), and only the fields fixed at creation (id, name, arguments) are
//! borrowed.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout;
use abi::shared::{self as page, Arg, Counters, MAX_ARGS, NAME_BYTES, SharedInfo};

/// The shared-info page.
pub(crate) fn info() -> *const SharedInfo {
    layout::SHARED_INFO as *const SharedInfo
}

fn counters() -> *mut Counters {
    layout::COUNTERS as *mut Counters
}

/// This domain's id (Domain0 is 0).
pub fn domain_id() -> u32 {
    // SAFETY: the page is mapped for the domain's whole life (entry contract); the field is
    // aligned, and the volatile read does not assume it is unchanging.
    unsafe { addr_of!((*info()).domain_id).read_volatile() }
}

/// How many vCPUs this domain has.
pub fn vcpus() -> u32 {
    // SAFETY: as for `domain_id`.
    unsafe { addr_of!((*info()).vcpus).read_volatile() }
}

/// Bytes of the experiment plan at `layout::PLAN` (Domain0 only; 0 elsewhere).
pub fn plan_bytes() -> u64 {
    // SAFETY: as for `domain_id`.
    unsafe { addr_of!((*info()).plan_bytes).read_volatile() }
}

fn name_bytes() -> &'static [u8; NAME_BYTES] {
    // SAFETY: the page is mapped read-only for the domain's whole life and the hypervisor
    // writes the name once, before the domain starts, so a shared borrow is sound.
    unsafe { &*addr_of!((*info()).name) }
}

/// This domain's name (`w3`); empty if the hypervisor gave bytes that are not UTF-8.
pub fn name() -> &'static str {
    let bytes = name_bytes();
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
    core::str::from_utf8(&bytes[..len]).unwrap_or("")
}

/// The workload arguments, as the hypervisor copied them from the spec.
pub fn args() -> &'static [Arg; MAX_ARGS] {
    // SAFETY: as for `name_bytes`: written once before the domain starts.
    unsafe { &*addr_of!((*info()).args) }
}

/// The argument `name`, or `default` when the spec does not give it.
pub fn arg(name: &str, default: u64) -> u64 {
    page::find_arg(args(), name).unwrap_or(default)
}

/// Adds `n` to vCPU `vcpu`'s `work` counter, which the hypervisor reads for `GetInfo`.
///
/// Each vCPU owns its slot, so a read-modify-write needs no atomic; the aligned 8-byte store
/// is never torn for the hypervisor reading it.
pub fn add_work(vcpu: usize, n: u64) {
    assert!(vcpu < abi::shared::MAX_VCPUS, "vCPU index out of range");
    // SAFETY: the counters page is mapped read-write for the domain's whole life; the slot is
    // in bounds (checked above), aligned, and only this vCPU writes it.
    unsafe {
        let slot = addr_of_mut!((*counters()).work[vcpu]);
        slot.write_volatile(slot.read_volatile().wrapping_add(n));
    }
}

/// The counters page's two bitmaps of event-channel ports.
#[derive(Clone, Copy)]
enum Ports {
    Pending,
    Masked,
}

/// `port`'s word in the counters page's bitmap `ports`, as an atomic, and its bit there.
fn port_bit(ports: Ports, port: u32) -> (&'static AtomicU64, u64) {
    assert!(
        (port as usize) < abi::shared::MAX_PORTS,
        "port out of range"
    );
    let i = port as usize / 64;
    // SAFETY: the counters page is mapped read-write for the domain's whole life; the word is
    // in bounds (checked above) and 8-byte aligned; the hypervisor sets bits in it with
    // atomic operations too, so an atomic view of it is sound.
    let word = unsafe {
        let word = match ports {
            Ports::Pending => addr_of_mut!((*counters()).evtchn_pending[i]),
            Ports::Masked => addr_of_mut!((*counters()).evtchn_mask[i]),
        };
        &*(word as *const AtomicU64)
    };
    (word, 1 << (port % 64))
}

/// Whether `port`'s pending bit is set (it stays set).
pub fn pending(port: u32) -> bool {
    let (word, bit) = port_bit(Ports::Pending, port);
    word.load(Ordering::SeqCst) & bit != 0
}

/// Atomically clears `port`'s pending bit; returns whether it was set.
pub fn take_event(port: u32) -> bool {
    let (word, bit) = port_bit(Ports::Pending, port);
    word.fetch_and(!bit, Ordering::SeqCst) & bit != 0
}

/// Masks (`true`) or unmasks `port` in the counters page: an event on a masked port stays
/// pending but neither wakes a `block` nor enters an upcall. Unmasking this way does not
/// notify an event already pending (`hypercall::evtchn_unmask` does).
pub fn set_mask(port: u32, masked: bool) {
    let (word, bit) = port_bit(Ports::Masked, port);
    if masked {
        word.fetch_or(bit, Ordering::SeqCst);
    } else {
        word.fetch_and(!bit, Ordering::SeqCst);
    }
}

/// Sets or clears vCPU `vcpu`'s upcall mask in the counters page, as a Xen guest does with
/// `evtchn_upcall_mask`: masked, no upcall is entered (the hypervisor still marks events).
/// Cleared on the calling vCPU with an upcall due (`upcall_pending` set while masked), it
/// makes a hypercall so that the upcall is entered on its way back, as Xen's
/// `xen_restore_fl` does: the hypervisor interrupts the vCPU only when the flag is set anew
/// (`abi::hypercall::EVTCHN_OP`).
pub fn set_upcall_mask(vcpu: usize, masked: bool) {
    assert!(vcpu < abi::shared::MAX_VCPUS, "vCPU index out of range");
    // SAFETY: the counters page is mapped read-write for the domain's whole life; the bytes
    // are in bounds (checked above) and the hypervisor accesses them atomically too.
    let (mask, pending) = unsafe {
        let ev = addr_of_mut!((*counters()).vcpu_events[vcpu]);
        (
            &*(addr_of_mut!((*ev).upcall_mask) as *const core::sync::atomic::AtomicU8),
            &*(addr_of_mut!((*ev).upcall_pending) as *const core::sync::atomic::AtomicU8),
        )
    };
    mask.store(u8::from(masked), Ordering::SeqCst);
    #[cfg(not(feature = "linux"))]
    if !masked && pending.load(Ordering::SeqCst) != 0 {
        crate::hypercall::null();
    }
    #[cfg(feature = "linux")]
    let _ = pending;
}

/// Waits (blocked in the hypervisor) until an event arrives on `port`, and consumes it.
#[cfg(not(feature = "linux"))]
pub fn wait_event(port: u32) {
    while !take_event(port) {
        crate::hypercall::block();
    }
}

/// vCPU `vcpu`'s `work` so far.
pub fn work(vcpu: usize) -> u64 {
    assert!(vcpu < abi::shared::MAX_VCPUS, "vCPU index out of range");
    // SAFETY: as for `add_work`.
    unsafe { addr_of!((*counters()).work[vcpu]).read_volatile() }
}

// The Linux back end (feature `linux`): the event arrives over a pipe.
#[cfg(feature = "linux")]
pub use crate::linux::wait_event;
