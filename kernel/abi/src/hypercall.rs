//! Hypercall numbers and the calling convention.
//!
//! A guest enters the hypervisor with `syscall`: the number in RAX, arguments in RDI, RSI,
//! RDX, R10 and R8 (R10 instead of RCX, which `syscall` overwrites, as Linux does). The
//! result comes back in RAX: zero or a positive value on success, a negative
//! [`crate::error::Errno`] on failure. RCX and R11 are clobbered by the instruction; every
//! vector register (x87, SSE) is caller-saved, so the hypervisor saves FPU state only on
//! asynchronous entries and domain switches (DESIGN.md).

/// `console_write(ptr, len)`: writes bytes to the hypervisor console, as one line per `\n`,
/// prefixed with the domain's name.
pub const CONSOLE_WRITE: u64 = 0;
/// `sched_op(op, arg)`: one of [`SchedOp`].
pub const SCHED_OP: u64 = 1;
/// `set_timer(deadline_ns)`: arms this vCPU's one-shot timer at an absolute system time
/// (see [`crate::shared::TimeInfo`]); 0 cancels it. When it fires, a blocked vCPU wakes.
pub const SET_TIMER: u64 = 2;
/// `vcpu_op(op, vcpu)`: one of [`VcpuOp`], on a vCPU of the calling domain.
pub const VCPU_OP: u64 = 3;
/// `domctl(req_ptr, req_len, reply_ptr, reply_cap)`: a [`crate::control::Domctl`] request,
/// postcard-encoded; the [`crate::control::DomctlReply`] is written to the reply buffer and
/// its length returned. Domain0 only.
pub const DOMCTL: u64 = 4;
/// `sysctl(req_ptr, req_len, reply_ptr, reply_cap)`: as [`DOMCTL`] with
/// [`crate::control::Sysctl`]. Domain0 only.
pub const SYSCTL: u64 = 5;

/// `null()`: does nothing and returns 0: the cost of entering and leaving the hypervisor
/// (the paper's "null call"), measured by the benchmarks.
pub const NULL: u64 = 6;

/// `evtchn_op(op, a1, a2)`: one of [`EvtchnOp`] on the calling domain's event channels.
/// An event marks the port pending in the receiver's counters page and wakes its vCPU 0
/// (and a `block`ed vCPU returns at once while an unmasked event is pending).
pub const EVTCHN_OP: u64 = 7;

/// Operations of [`EVTCHN_OP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum EvtchnOp {
    /// `(remote_domain)`: allocates a port for `remote_domain` to bind to; returns the port.
    AllocUnbound = 0,
    /// `(remote_domain, remote_port)`: binds a new port to `remote_port` of
    /// `remote_domain`, which must have been allocated for us; returns the new port.
    BindInterdomain = 1,
    /// `(port)`: sends an event to the far end of `port`.
    Send = 2,
    /// `(port)`: closes `port`; the far end goes back to unbound.
    Close = 3,
    /// `(virq)`: binds a new port to virtual IRQ `virq` (see [`virq`]); returns the port.
    BindVirq = 4,
}

/// Virtual IRQs: events the hypervisor itself sends, once a domain binds a port to them.
pub mod virq {
    /// The domain's one-shot timer fired (`set_timer`).
    pub const TIMER: u32 = 0;
    /// Some domain ended (shut down, killed or destroyed); Domain0 only.
    pub const DOM_EXC: u32 = 1;
    /// How many there are.
    pub const COUNT: u32 = 2;
}

impl EvtchnOp {
    /// Decodes an operation number.
    pub fn from_raw(raw: u64) -> Option<EvtchnOp> {
        match raw {
            0 => Some(EvtchnOp::AllocUnbound),
            1 => Some(EvtchnOp::BindInterdomain),
            2 => Some(EvtchnOp::Send),
            3 => Some(EvtchnOp::Close),
            4 => Some(EvtchnOp::BindVirq),
            _ => None,
        }
    }
}

/// Operations of [`SCHED_OP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum SchedOp {
    /// Give up the CPU; stay runnable.
    Yield = 0,
    /// Sleep until the timer fires or an event arrives.
    Block = 1,
    /// End the calling domain with exit code `arg` (0 = clean exit).
    Shutdown = 2,
    /// `(ports_ptr, count)`: sleep until one of `count` (at most 64) event-channel ports,
    /// an array of `u32` in guest memory, is pending; returns at once if one is. Like
    /// `Block`, it may also return on the timer or another event: callers check and loop.
    Poll = 3,
}

impl SchedOp {
    /// Decodes an operation number.
    pub fn from_raw(raw: u64) -> Option<SchedOp> {
        match raw {
            0 => Some(SchedOp::Yield),
            1 => Some(SchedOp::Block),
            2 => Some(SchedOp::Shutdown),
            3 => Some(SchedOp::Poll),
            _ => None,
        }
    }
}

/// Operations of [`VCPU_OP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum VcpuOp {
    /// Start a vCPU of this domain that is down, at the domain's entry point.
    Up = 0,
    /// Take the calling vCPU down (it stops being scheduled until brought up again).
    Down = 1,
}

impl VcpuOp {
    /// Decodes an operation number.
    pub fn from_raw(raw: u64) -> Option<VcpuOp> {
        match raw {
            0 => Some(VcpuOp::Up),
            1 => Some(VcpuOp::Down),
            _ => None,
        }
    }
}

/// Shutdown codes a guest passes to [`SchedOp::Shutdown`] beyond 0 (clean exit).
pub mod shutdown {
    /// The guest runtime's panic handler.
    pub const CRASH: u64 = 1;
}
