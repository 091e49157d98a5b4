//! The watchdog's rule: when a CPU counts as stuck in the hypervisor.
//!
//! The hypervisor runs with interrupts off and is not preemptible, so a CPU caught in a loop
//! there never takes its timer interrupt again and cannot notice it itself. Each CPU counts
//! its transitions (the entry code adds one on every entry from a guest and one on every
//! exit to it, and the idle loop one before and one after each `hlt`): an odd count means
//! "in the hypervisor, not halted". Every CPU, on its own timer, looks at the next CPU's
//! count (CPU n watches n + 1, the last watches CPU 0), so each CPU is watched by one other
//! at a cost that does not grow with the machine. A count that stays odd and unchanged for
//! the limit means that CPU has been in the hypervisor that long without leaving it once.
//!
//! What it cannot see: a machine with one CPU (nobody watches), every CPU stuck at once
//! (nobody is left to report), and an interrupt handler that hangs while its CPU was idle
//! (the count is even then).

/// How long a CPU may stay in the hypervisor before the watchdog ends the run, on hardware
/// and under KVM. Legitimately long stretches (building or tearing down a large domain,
/// holding the CPUs for a snapshot, the trace dump) count as progress as they go.
pub const STUCK_NS: u64 = 100_000_000;

/// The same under QEMU's TCG, where each emulated CPU is a host thread: a busy host can
/// leave one unscheduled for longer than [`STUCK_NS`] (a false alarm was seen with 4
/// emulated CPUs on a 2-core host at load 9), and emulated code runs tens of times slower.
/// A second still ends a stuck run long before any runner timeout.
pub const STUCK_NS_TCG: u64 = 1_000_000_000;

/// How often each CPU looks at its neighbour.
pub const PERIOD_NS: u64 = 20_000_000;

/// What one CPU remembers of the CPU it watches.
#[derive(Clone, Copy, Debug, Default)]
pub struct Watch {
    /// The count last seen, and when it was first seen at that value.
    last: Option<(u64, u64)>,
}

impl Watch {
    /// Takes a look at the watched CPU's `count` at `now_ns`; returns for how long it has
    /// been stuck, once that is at least `limit_ns`.
    pub fn observe(&mut self, count: u64, now_ns: u64, limit_ns: u64) -> Option<u64> {
        match self.last {
            Some((seen, since)) if seen == count => {
                let stuck = now_ns.saturating_sub(since);
                (count % 2 == 1 && stuck >= limit_ns).then_some(stuck)
            }
            _ => {
                self.last = Some((count, now_ns));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_odd_count_that_does_not_move_is_stuck_after_the_limit() {
        let mut w = Watch::default();
        assert_eq!(w.observe(7, 0, STUCK_NS), None);
        assert_eq!(w.observe(7, STUCK_NS - 1, STUCK_NS), None);
        assert_eq!(w.observe(7, STUCK_NS, STUCK_NS), Some(STUCK_NS));
    }

    #[test]
    fn a_cpu_in_a_guest_or_halted_is_never_stuck() {
        let mut w = Watch::default();
        assert_eq!(w.observe(8, 0, STUCK_NS), None);
        assert_eq!(w.observe(8, 10 * STUCK_NS, STUCK_NS), None);
    }

    #[test]
    fn any_movement_restarts_the_clock() {
        let mut w = Watch::default();
        w.observe(7, 0, STUCK_NS);
        assert_eq!(w.observe(9, STUCK_NS - 1, STUCK_NS), None);
        assert_eq!(w.observe(9, 2 * STUCK_NS - 2, STUCK_NS), None);
        assert_eq!(w.observe(9, 2 * STUCK_NS - 1, STUCK_NS), Some(STUCK_NS));
    }
}
