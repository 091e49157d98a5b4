//! Hypercall numbers and the calling convention.
//!
//! A guest enters the hypervisor with `syscall`: the number in RAX, arguments in RDI, RSI,
//! RDX, R10 and R8 (R10 instead of RCX, which `syscall` overwrites, as Linux does). The
//! result comes back in RAX: zero or a positive value on success, a negative
//! [`crate::error::Errno`] on failure. RCX and R11 are clobbered by the instruction; every
//! vector register (x87, SSE) is caller-saved, so the hypervisor saves FPU state only on
//! asynchronous entries and domain switches (docs/DESIGN.md).

/// `console_write(ptr, len)`: writes bytes to the hypervisor console, as one line per `\n`,
/// prefixed with the domain's name. At most [`CONSOLE_CHUNK`] bytes a call; returns how many
/// were written. Each line costs the serial port [`console_line_cost`] bytes (its text as
/// shown, [`console_text`], the log prefix and the name), and one call writes at most
/// [`CONSOLE_CALL_BYTES`] of them: the lines that fit are written (a short write; a first
/// line that alone does not fit is cut, its head written as a line of its own). An
/// unprivileged domain's output is also rate-limited at the same cost: if not even the first
/// line fits its quota, the call fails with `Errno::Again`.
pub const CONSOLE_WRITE: u64 = 0;

/// Bytes one `console_write` takes from the guest at most.
pub const CONSOLE_CHUNK: usize = 256;

/// Serial bytes one `console_write` may cost at most (every line it writes, at
/// [`console_line_cost`]): ~45 ms of the serial port's time at 115200 baud, ~87 us a byte
/// (256 empty lines a call once cost ~11 KB, ~1 s of a real UART). The call copies its
/// lines into the hypervisor's console ring, which the port is fed from as it has room
/// (Xen's `guest_console_write` and serial transmit buffer): it costs the caller a copy,
/// and this bounds how far one call can put the port behind.
pub const CONSOLE_CALL_BYTES: usize = 512;

/// Serial bytes the hypervisor's log adds to each line a domain writes, besides the
/// domain's name and the text: `[sssss.uuuuuu] cpuN INFO  [`, `] ` and the `\n` (one
/// byte more from CPU 10 on, and past 99,999 s of uptime: the bound is that close).
pub const CONSOLE_LINE_OVERHEAD: usize = 30;

/// What a line of `name_len` bytes' domain, showing `shown` bytes of text
/// ([`console_text_len`]), costs the serial port.
pub const fn console_line_cost(name_len: usize, shown: usize) -> usize {
    CONSOLE_LINE_OVERHEAD + name_len + shown
}

// A whole line of printable text always fits one call.
const _: () =
    assert!(console_line_cost(crate::shared::NAME_BYTES, CONSOLE_CHUNK) <= CONSOLE_CALL_BYTES);

/// Writes guest console text (one line, without its `\n`) as the hypervisor shows it: valid
/// UTF-8 as it is, each invalid sequence as U+FFFD, and every control character but tab
/// (C0, DEL and C1: ESC, CSI, OSC, `\r`, backspace...) as `\xNN`, so a guest cannot move
/// the cursor, retitle, recolour or clear the terminal of whoever reads the console, nor
/// overwrite a line with `\r` to forge another's (ECMA-48's control functions; Xen's
/// `guest_console_write` keeps only printable characters too).
pub fn console_text(out: &mut impl core::fmt::Write, text: &[u8]) -> core::fmt::Result {
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                write!(out, "\\x{:02x}", c as u32)?;
            } else {
                out.write_char(c)?;
            }
        }
        if !chunk.invalid().is_empty() {
            out.write_char('\u{fffd}')?;
        }
    }
    Ok(())
}

/// The bytes [`console_text`] writes for `text`.
pub fn console_text_len(text: &[u8]) -> usize {
    struct Count(usize);
    impl core::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = console_text(&mut n, text);
    n.0
}
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
/// An event marks the port pending in the receiver's counters page and, unless the port is
/// masked, notifies the vCPU the port is bound to (vCPU 0 unless `BindVcpu` said otherwise):
/// it sets that vCPU's `upcall_pending` and its word's bit in `pending_sel`
/// ([`crate::shared::VcpuEvents`]), wakes it if it is blocked, and enters its upcall if it
/// registered one. An event on a port already pending is merged with the one pending there
/// and does none of this (Xen's 2-level event channels): the guest clears a port's pending bit
/// before it handles the port. The CPU a vCPU runs on is interrupted for its upcall only when
/// `upcall_pending` goes from clear to set: a guest that clears `upcall_mask` itself (rather
/// than by `callback_return`) looks at `upcall_pending` next and, if set, makes a hypercall
/// (`null`) to have the upcall entered on its way back, as Xen's guests force their callback.
/// A vCPU's `block` returns at once while an unmasked event is pending on a port that
/// notifies it, and sets its `upcall_pending` if the sender has not yet, so that the upcall
/// is entered on the way back.
pub const EVTCHN_OP: u64 = 7;

/// `set_callback(entry)`: registers the calling vCPU's event upcall, the guest function the
/// hypervisor enters on its way back to the guest while an unmasked event is pending for
/// this vCPU (Xen's event callback); 0 unregisters it. See [`crate::shared::UpcallFrame`].
pub const SET_CALLBACK: u64 = 8;
/// `callback_return(frame)`: ends an upcall: the registers saved in the
/// [`crate::shared::UpcallFrame`] at guest address `frame` are restored (along with the
/// vector registers of an interrupted context) and the vCPU's upcall mask is cleared (Xen's
/// `iret` hypercall). If another event is pending, the upcall is entered again at once.
pub const CALLBACK_RETURN: u64 = 9;
/// `grant_op(op, a1, a2, a3, a4)`: one of [`GrantOp`] on grant tables.
pub const GRANT_OP: u64 = 10;
/// `mmu_update(reqs_ptr, count)`: applies `count` (at most [`MMU_BATCH`])
/// [`crate::mm::MmuUpdate`]s in order, each validated; returns how many were applied, or
/// the error of the first refused one (those before it stay applied). TLBs are flushed
/// wherever the domain runs before it returns.
///
/// A long batch is preempted and continued, as Xen's `do_mmu_update` does with
/// `hypercall_create_continuation`: once a call has run for [`HYPERCALL_SLICE_NS`], the
/// hypervisor flushes what must be flushed and goes back to the guest with its RIP on the
/// `syscall` again, `reqs_ptr` moved past the updates done, and `count` rewritten as
/// [`MMU_UPDATE_PREEMPTED`] | done << 32 | left. Interrupts and event upcalls are taken in
/// between, then the `syscall` runs again and carries on; the guest sees one call, which
/// returns the total applied with RDI and RSI as it passed them (an upcall taken in between
/// sees the rewritten ones in the interrupted context). A `count` a guest writes in that form is taken as such (it
/// only adds to what its own call reports).
pub const MMU_UPDATE: u64 = 11;
/// Marks an [`MMU_UPDATE`] `count` rewritten by a preemption (Xen's `MMU_UPDATE_PREEMPTED`):
/// bits 32..48 hold the updates already done, bits 0..32 those left.
pub const MMU_UPDATE_PREEMPTED: u64 = 1 << 63;
/// How long one hypercall runs before a long one is preempted and continued.
pub const HYPERCALL_SLICE_NS: u64 = 1_000_000;
/// `update_va_mapping(va, pte)`: sets the level-1 entry that maps `va` in the caller's
/// address space to `pte`, validated as an `mmu_update` of that entry, and flushes `va`
/// from the TLBs that may hold it.
pub const UPDATE_VA_MAPPING: u64 = 12;
/// `memory_op(op, list_ptr, count)`: one of [`MemoryOp`] (memory reservation).
///
/// `IncreaseReservation` and `DecreaseReservation` are preempted and continued as
/// [`MMU_UPDATE`] is (Xen's `do_memory_op`, which keeps its progress in the command's bits
/// above `MEMOP_EXTENT_SHIFT`): once a call has run for [`HYPERCALL_SLICE_NS`], the
/// hypervisor goes back to the guest with its RIP on the `syscall` again and `op` rewritten as
/// [`MEMORY_OP_PREEMPTED`] | done << 32 | op, `list_ptr` and `count` as they were; the
/// interrupts and upcalls due are taken, then the call carries on from entry `done`. The
/// guest sees one call, which returns the total done with RDI as it passed it (an upcall
/// taken in between sees the rewritten `op` in the interrupted context). An `op` a guest
/// writes in that form is taken as such if `done` is between 1 and `count` - 1 (it only
/// adds to what its own call reports), and refused with `NoSys` otherwise.
pub const MEMORY_OP: u64 = 13;
/// Marks a [`MEMORY_OP`] `op` rewritten by a preemption: bits 32..63 hold the entries
/// already done, bits 0..32 the operation.
pub const MEMORY_OP_PREEMPTED: u64 = 1 << 63;
/// How many hypercall numbers there are (0 to `NR_HYPERCALLS - 1`); any other gets
/// `Errno::NoSys`.
pub const NR_HYPERCALLS: u64 = 14;

/// Most updates in one [`MMU_UPDATE`] call.
pub const MMU_BATCH: u64 = 512;

crate::numbered_enum! {
    /// Operations of [`GRANT_OP`]. Grant references are small integers handed out lowest first
    /// from 1 (0 is never a valid reference), so a fresh domain's first grant is reference 1.
    pub enum GrantOp: u64 {
        /// `(va, grantee, readonly)`: grants `grantee` access to the caller's page at `va` (a
        /// data page the caller owns); `readonly` non-zero allows only read-only mappings and
        /// copies from it. Returns the grant reference.
        Grant = 0,
        /// `(gref)`: revokes a grant. Fails with `Busy` while the grantee has it mapped (Xen's
        /// rule: the granter retries after the grantee unmaps); the frame stays the granter's.
        End = 1,
        /// `(granter, gref, va, readonly)`: maps the granted frame at the caller's `va`, which
        /// must be an unused page of [`crate::layout::MAP_AREA`]; read-only if `readonly` is
        /// non-zero (required for a read-only grant). Returns a handle for `Unmap`.
        Map = 2,
        /// `(handle)`: undoes a `Map`; a second unmap of the same handle fails with `Inval`.
        Unmap = 3,
        /// `(copy_ptr)`: copies between a granted frame and the caller's memory, as described
        /// by the [`crate::mm::GrantCopy`] at `copy_ptr`. Returns the bytes copied.
        Copy = 4,
    }
}

crate::numbered_enum! {
    /// Operations of [`MEMORY_OP`]. Frames are named by machine frame number (physical address
    /// / 4096), as in Xen's PV interface.
    pub enum MemoryOp: u64 {
        /// `(list_ptr, count)`: takes `count` more zeroed frames, within the domain's
        /// `memory_kib`; their frame numbers are written to the `u64` array at `list_ptr`.
        /// Returns how many were taken (fewer if the limit or the machine ran out, and at most
        /// [`MMU_BATCH`] a call, so that one call's work is bounded; ask again for the rest).
        /// Preempted and continued after [`HYPERCALL_SLICE_NS`] ([`MEMORY_OP`]).
        IncreaseReservation = 0,
        /// `(list_ptr, count)`: gives back the `count` frames listed; each must be the
        /// caller's and mapped nowhere. Returns how many were given back before the first
        /// refused one (or the error, if the first is refused); at most [`MMU_BATCH`] a call.
        /// Preempted and continued after [`HYPERCALL_SLICE_NS`] ([`MEMORY_OP`]).
        DecreaseReservation = 1,
        /// `()`: frames the domain holds now, page tables and hypervisor-written pages included.
        CurrentReservation = 2,
        /// `()`: the most frames it may hold (`memory_kib` / 4).
        MaximumReservation = 3,
    }
}

crate::numbered_enum! {
    /// Operations of [`EVTCHN_OP`].
    pub enum EvtchnOp: u64 {
        /// `(remote_domain)`: allocates a port for `remote_domain` to bind to; returns the port.
        AllocUnbound = 0,
        /// `(remote_domain, remote_port)`: binds a new port to `remote_port` of
        /// `remote_domain`, which must have been allocated for us; returns the new port.
        BindInterdomain = 1,
        /// `(port)`: sends an event to the far end of `port`.
        Send = 2,
        /// `(port)`: closes `port`; the far end goes back to unbound.
        Close = 3,
        /// `(virq, vcpu)`: binds a new port to virtual IRQ `virq` (see [`virq`]) of vCPU
        /// `vcpu` (the timer is per vCPU; `DOM_EXC` goes to vCPU 0 whatever is named); returns
        /// the port, which notifies `vcpu`.
        BindVirq = 4,
        /// `(port, vcpu)`: events on `port` notify (wake, or upcall) vCPU `vcpu` of the calling
        /// domain from now on, instead of vCPU 0.
        BindVcpu = 5,
        /// `(port)`: clears the port's mask bit and, if it is pending, notifies its vCPU as a
        /// new event would (Xen's `EVTCHNOP_unmask`). Clearing the bit in the counters page by
        /// hand also unmasks, but does not notify.
        Unmask = 6,
    }
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

crate::numbered_enum! {
    /// Operations of [`SCHED_OP`].
    pub enum SchedOp: u64 {
        /// Give up the CPU; stay runnable.
        Yield = 0,
        /// Sleep until the timer fires or an event for this vCPU arrives (returns at once while
        /// an unmasked event is pending on a port that notifies this vCPU).
        Block = 1,
        /// End the calling domain with exit code `arg` (0 = clean exit).
        Shutdown = 2,
        /// `(ports_ptr, count)`: sleep until one of `count` (at most 64) event-channel ports,
        /// an array of `u32` in guest memory, is pending; returns at once if one is. Like
        /// `Block`, it may also return on the timer or another event: callers check and loop.
        Poll = 3,
    }
}

crate::numbered_enum! {
    /// Operations of [`VCPU_OP`].
    pub enum VcpuOp: u64 {
        /// Start a vCPU of this domain that is down: one that never ran starts at the domain's
        /// entry point; one that went down with `Down` resumes where it called it (its `Down`
        /// returns 0). A vCPU that is up already is left as it is. Only `Down` is undone:
        /// while Domain0 has the domain paused, a vCPU brought up starts at its unpause.
        Up = 0,
        /// Take the calling vCPU down (it stops being scheduled until brought up again; its
        /// domain's pauses and unpauses leave it down, as a blocked vCPU stays blocked).
        Down = 1,
    }
}

/// Shutdown codes a guest passes to [`SchedOp::Shutdown`] beyond 0 (clean exit).
pub mod shutdown {
    /// The guest runtime's panic handler.
    pub const CRASH: u64 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Debug;

    /// The numbers of a multiplexed call's operations run from 0 without a gap (the
    /// hypervisor refuses the first number past them: `hostile-pt` probes it), and each
    /// decodes to its operation.
    fn dense<T: Copy + PartialEq + Debug>(
        all: &[T],
        number: fn(T) -> u64,
        decode: fn(u64) -> Option<T>,
    ) {
        for (i, &op) in all.iter().enumerate() {
            assert_eq!(number(op), i as u64, "{op:?}");
            assert_eq!(decode(i as u64), Some(op));
        }
        assert_eq!(decode(all.len() as u64), None);
        assert_eq!(decode(1 << 32), None);
        assert_eq!(decode(u64::MAX), None);
    }

    #[test]
    fn operation_numbers_are_dense_and_decode() {
        dense(&GrantOp::ALL, |op| op as u64, GrantOp::from_raw);
        dense(&MemoryOp::ALL, |op| op as u64, MemoryOp::from_raw);
        dense(&EvtchnOp::ALL, |op| op as u64, EvtchnOp::from_raw);
        dense(&SchedOp::ALL, |op| op as u64, SchedOp::from_raw);
        dense(&VcpuOp::ALL, |op| op as u64, VcpuOp::from_raw);
    }
}

#[cfg(test)]
mod console_tests {
    extern crate std;
    use std::string::String;

    use super::*;

    fn shown(text: &[u8]) -> String {
        let mut s = String::new();
        console_text(&mut s, text).unwrap();
        assert_eq!(console_text_len(text), s.len());
        s
    }

    #[test]
    fn controls_are_shown_escaped_and_printable_text_as_it_is() {
        assert_eq!(shown(b"plain \t text, caf\xc3\xa9"), "plain \t text, café");
        assert_eq!(
            shown(b"\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        // CSI as a C1 character (U+009B), a carriage return and DEL.
        assert_eq!(shown(b"a\xc2\x9b31mb\rc\x7f"), "a\\x9b31mb\\x0dc\\x7f");
        // A raw 8-bit C1 byte is not UTF-8.
        assert_eq!(shown(b"x\x9by"), "x\u{fffd}y");
    }
}
