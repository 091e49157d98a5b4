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
