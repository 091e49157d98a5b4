//! Time: the hypervisor's system clock read without a hypercall, and sleeping on the timer.
//!
//! As in Xen's `vcpu_time_info`, the shared-info page carries a TSC timestamp, the system time
//! at that moment and the TSC rate; the guest extrapolates with `rdtsc`. The hypervisor makes
//! `version` odd while it rewrites the fields, so a reader retries until it sees the same even
//! version before and after reading them.

use core::ptr::addr_of;
use core::sync::atomic::{Ordering, compiler_fence};

use abi::shared::TimeInfo;

#[cfg(not(feature = "linux"))]
use crate::hypercall;

/// The system time at TSC value `tsc`, in ns: `system_time_ns + (tsc - tsc_timestamp) *
/// tsc_mul / 2^32`. A TSC slightly behind the timestamp (read on another CPU) extrapolates
/// backwards rather than wrapping; the result saturates at 0.
pub fn ns_at(tsc: u64, t: &TimeInfo) -> u64 {
    let delta = i128::from(tsc) - i128::from(t.tsc_timestamp);
    let ns = i128::from(t.system_time_ns) + ((delta * i128::from(t.tsc_mul)) >> 32);
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

/// Reads the CPU's time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only writes EDX:EAX; ring 3 may execute it (the hypervisor leaves
    // CR4.TSD clear, README.md "Entry contract").
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Wall-clock time: nanoseconds since the Unix epoch (UTC), to the second of the
/// hypervisor's real-time clock reading at boot.
pub fn wallclock_ns() -> u64 {
    // SAFETY: the page is mapped for the domain's whole life (entry contract); the field is
    // aligned and written once, before the domain starts.
    let at_boot =
        unsafe { addr_of!((*crate::shared::info()).wallclock_at_boot_ns).read_volatile() };
    at_boot + now_ns()
}

/// vCPU `vcpu`'s own virtual time: the CPU time it has had, in ns.
pub fn vcpu_time_ns(vcpu: usize) -> u64 {
    assert!(vcpu < abi::shared::MAX_VCPUS, "vCPU index out of range");
    // SAFETY: only computes the slot's address inside the mapped page (index checked).
    let t = unsafe { addr_of!((*crate::shared::info()).vcpu_time[vcpu]) };
    // SAFETY: only computes the field's address, as above.
    let version = unsafe { addr_of!((*t).version) };
    read_consistent(version, || {
        // SAFETY: the fields are mapped and aligned; volatile reads because the hypervisor
        // rewrites them.
        let (running, ran, since) = unsafe {
            (
                addr_of!((*t).running).read_volatile(),
                addr_of!((*t).ran_ns).read_volatile(),
                addr_of!((*t).since_ns).read_volatile(),
            )
        };
        if running != 0 {
            ran + now_ns().saturating_sub(since)
        } else {
            ran
        }
    })
}

/// A TSC interval in nanoseconds, with the shared-info page's scale.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: the page is mapped for the domain's whole life (entry contract); the field is
    // aligned and read with a volatile load.
    let mul = unsafe { addr_of!((*crate::shared::info()).time.tsc_mul).read_volatile() };
    ((u128::from(ticks) * u128::from(mul)) >> 32) as u64
}

/// The current system time in ns.
#[cfg(not(feature = "linux"))]
pub fn now_ns() -> u64 {
    // SAFETY: only computes the field's address; the page is mapped for the domain's whole
    // life (entry contract).
    let t = unsafe { addr_of!((*crate::shared::info()).time) };
    // SAFETY: only computes the field's address, as above.
    let version = unsafe { addr_of!((*t).version) };
    read_consistent(version, || {
        // SAFETY: the fields are mapped and aligned; volatile reads because the hypervisor
        // rewrites them.
        let snapshot = unsafe {
            TimeInfo {
                version: 0,
                pad: 0,
                tsc_timestamp: addr_of!((*t).tsc_timestamp).read_volatile(),
                system_time_ns: addr_of!((*t).system_time_ns).read_volatile(),
                tsc_mul: addr_of!((*t).tsc_mul).read_volatile(),
            }
        };
        ns_at(rdtsc(), &snapshot)
    })
}

/// Runs `read` until it ran while the hypervisor-written `version` stayed the same even
/// number (the hypervisor makes it odd while it rewrites the fields `read` looks at), and
/// returns that result: the reader's half of the version protocol of the module docs.
fn read_consistent<T>(version: *const u32, read: impl Fn() -> T) -> T {
    loop {
        // SAFETY: callers pass the address of a mapped, aligned version field in the
        // shared-info page; volatile, because the hypervisor rewrites it.
        let before = unsafe { version.read_volatile() };
        if before & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        // x86 does not reorder loads with loads; the fences stop the compiler doing so.
        compiler_fence(Ordering::Acquire);
        let value = read();
        compiler_fence(Ordering::Acquire);
        // SAFETY: as above.
        if unsafe { version.read_volatile() } == before {
            return value;
        }
    }
}

/// Blocks until the system time is at least `deadline_ns`, on this vCPU's one-shot timer.
#[cfg(not(feature = "linux"))]
pub fn sleep_until(deadline_ns: u64) {
    while now_ns() < deadline_ns {
        // An error (none is expected) would make `block` return at once: the loop then spins
        // until the deadline, which is late-safe if wasteful.
        let _ = hypercall::set_timer(deadline_ns);
        hypercall::block();
    }
}

/// Blocks for `ns` nanoseconds from now.
pub fn sleep_ns(ns: u64) {
    sleep_until(now_ns().saturating_add(ns));
}

/// Runs on the CPU until the system time reaches `deadline_ns`, calling `unit` repeatedly;
/// returns how many times it ran. Time the vCPU spends descheduled counts towards the
/// deadline, as wall-clock work would.
pub fn spin_until(deadline_ns: u64, mut unit: impl FnMut()) -> u64 {
    let mut units = 0;
    while now_ns() < deadline_ns {
        unit();
        units += 1;
    }
    units
}

// The Linux back end (feature `linux`): CLOCK_MONOTONIC and clock_nanosleep.
#[cfg(feature = "linux")]
pub use crate::linux::{now_ns, sleep_until};

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tsc_timestamp: u64, system_time_ns: u64, tsc_mul: u64) -> TimeInfo {
        TimeInfo {
            version: 2,
            pad: 0,
            tsc_timestamp,
            system_time_ns,
            tsc_mul,
        }
    }

    #[test]
    fn extrapolates_from_the_timestamp() {
        // 2 GHz TSC: 0.5 ns per tick = 2^31 in 32.32 fixed point.
        let t = info(1_000, 5_000, 1 << 31);
        assert_eq!(ns_at(1_000, &t), 5_000);
        assert_eq!(ns_at(3_000, &t), 6_000);
        // A TSC read a little behind the timestamp goes back in time, not to 2^64.
        assert_eq!(ns_at(800, &t), 4_900);
        assert_eq!(ns_at(0, &info(1 << 40, 0, 1 << 32)), 0);
    }

    #[test]
    fn large_values_do_not_overflow() {
        // One hour at 3 GHz, with a multiplier of ~0.333 ns per tick.
        let mul = (1u64 << 32) / 3;
        let t = info(0, 0, mul);
        let ns = ns_at(3_000_000_000 * 3600, &t);
        let hour = 3_600_000_000_000u64;
        assert!(hour - ns < hour / 1_000_000, "{ns}");
    }
}
