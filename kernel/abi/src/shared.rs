//! Pages shared between the hypervisor and a guest.
//!
//! The shared-info page is written by the hypervisor and mapped read-only into the guest; the
//! counters page is written by the guest and read by the hypervisor (the `work` a workload
//! reports). Both are `#[repr(C)]` with fixed offsets; the guest reads fields with volatile
//! loads.

/// Longest domain or image name, in bytes.
pub const NAME_BYTES: usize = 32;
/// Most workload arguments passed to a domain.
pub const MAX_ARGS: usize = 8;
/// Most vCPUs per domain.
pub const MAX_VCPUS: usize = 64;
/// Event-channel ports per domain (port 0 is never allocated).
pub const MAX_PORTS: usize = 1024;
/// Most page tables listed in [`MemoryInfo::pt_window`].
pub const PT_WINDOW_SLOTS: usize = 64;

/// The hypervisor's clock as a guest computes it without a hypercall, in the manner of
/// Xen's `vcpu_time_info`: `system_time_ns + ((rdtsc() - tsc_timestamp) * tsc_mul) >> 32`.
/// The hypervisor makes `version` odd while it updates the fields and even after; a reader
/// retries while the version is odd or changed under it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeInfo {
    pub version: u32,
    pub pad: u32,
    pub tsc_timestamp: u64,
    pub system_time_ns: u64,
    /// Nanoseconds per TSC tick, as a 32.32 fixed-point number.
    pub tsc_mul: u64,
}

/// One workload argument: a name (`period_us`) and its value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Arg {
    pub name: [u8; 16],
    pub value: u64,
}

/// The read-only page at [`crate::layout::SHARED_INFO`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SharedInfo {
    pub domain_id: u32,
    pub vcpus: u32,
    /// NUL-padded domain name.
    pub name: [u8; NAME_BYTES],
    pub time: TimeInfo,
    /// Workload arguments from the spec (`[domain.args]`), unused slots with empty names.
    pub args: [Arg; MAX_ARGS],
    /// Bytes of the plan at [`crate::layout::PLAN`] (Domain0 only; 0 elsewhere).
    pub plan_bytes: u64,
    /// Wall-clock time at system time 0: nanoseconds since the Unix epoch (UTC), from the
    /// real-time clock at boot (to the second). Wall time = this + system time.
    pub wallclock_at_boot_ns: u64,
    /// Each vCPU's own virtual time: the CPU time it has had (see [`VcpuTime`]).
    pub vcpu_time: [VcpuTime; MAX_VCPUS],
    /// The domain's page tables and memory limit.
    pub memory: MemoryInfo,
}

/// Where a guest finds its page tables (Xen's `start_info` `pt_base` and friends).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemoryInfo {
    /// Machine address of the level-4 table (what CR3 holds while the domain runs).
    pub pt_root: u64,
    /// The most frames the domain may hold (`memory_kib` / 4).
    pub frames_limit: u64,
    /// How many entries of `pt_window` are used.
    pub pt_count: u64,
    /// Machine addresses of the page tables built at creation: table `i` is mapped
    /// read-only at `layout::PT_WINDOW + i * 4096`. Tables the guest adds later it maps
    /// itself (read-only mappings of page tables are allowed).
    pub pt_window: [u64; PT_WINDOW_SLOTS],
}

/// A vCPU's event-notification state in the counters page (Xen's `vcpu_info`): the
/// hypervisor sets `upcall_pending` and a bit of `pending_sel` (bit `w` for pending word `w`)
/// when it notifies the vCPU; the guest clears them as it handles events. While
/// `upcall_mask` is non-zero no upcall is entered (the hypervisor sets it on entering one;
/// `callback_return` clears it). The vCPU's CPU is interrupted only when `upcall_pending` goes
/// from clear to set: a guest that clears `upcall_mask` itself checks `upcall_pending` and
/// makes a hypercall if it is set (`crate::hypercall::EVTCHN_OP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuEvents {
    pub upcall_pending: u8,
    pub upcall_mask: u8,
    pub pad: [u8; 6],
    pub pending_sel: u64,
}

/// What the hypervisor pushes on the guest stack when it enters an upcall (Xen's bounce
/// frame, here with every caller-saved register): the upcall starts with RSP pointing at
/// it, 16-byte aligned, 128 bytes (the red zone) below the interrupted RSP. It hands its
/// address to `callback_return`. Callee-saved registers are as they were, so an upcall
/// written in Rust only needs to save the vector registers if it uses them: the hypervisor
/// restores those of an interrupted context itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpcallFrame {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub rflags: u64,
    pub rip: u64,
    pub rsp: u64,
}

/// A vCPU's virtual time, updated by the hypervisor when the vCPU starts and stops running,
/// under the same odd/even `version` protocol as [`TimeInfo`]. Its virtual time now is
/// `ran_ns`, plus `now - since_ns` while `running` is non-zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuTime {
    pub version: u32,
    pub running: u32,
    pub ran_ns: u64,
    pub since_ns: u64,
}

/// The guest-writable page at [`crate::layout::COUNTERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    /// The workload's own progress count (units of work done), per vCPU.
    pub work: [u64; MAX_VCPUS],
    /// Event-channel pending bits, one per port: set by the hypervisor when an event is
    /// sent to the port, cleared by the guest (both with locked bit operations).
    pub evtchn_pending: [u64; MAX_PORTS / 64],
    /// Event-channel mask bits, one per port, set and cleared by the guest: an event on a
    /// masked port stays pending but does not wake the domain.
    pub evtchn_mask: [u64; MAX_PORTS / 64],
    /// Each vCPU's notification state.
    pub vcpu_events: [VcpuEvents; MAX_VCPUS],
}

/// Looks an argument up by name in a shared-info argument list.
pub fn find_arg(args: &[Arg], name: &str) -> Option<u64> {
    args.iter()
        .find(|a| name_eq(&a.name, name))
        .map(|a| a.value)
}

/// Whether a NUL-padded byte name equals `name`.
pub fn name_eq(bytes: &[u8], name: &str) -> bool {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..len] == name.as_bytes()
}

/// Copies `name` into a NUL-padded array, truncated to fit.
pub fn name_bytes<const N: usize>(name: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let len = name.len().min(N);
    out[..len].copy_from_slice(&name.as_bytes()[..len]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_found_by_name() {
        let args = [
            Arg {
                name: name_bytes("period_us"),
                value: 1000,
            },
            Arg {
                name: name_bytes("run_us"),
                value: 50,
            },
            Arg::default(),
        ];
        assert_eq!(find_arg(&args, "run_us"), Some(50));
        assert_eq!(find_arg(&args, "period"), None);
    }

    #[test]
    fn long_names_are_truncated() {
        let b: [u8; 4] = name_bytes("abcdef");
        assert_eq!(&b, b"abcd");
        assert!(name_eq(&b, "abcd"));
    }
}
