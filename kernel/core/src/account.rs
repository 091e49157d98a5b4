//! A vCPU's CPU and waiting time as they stood at an instant the reader chose, when the
//! account may have changed since (a live snapshot, `Sysctl::TakeSnapshotLive`, reads each
//! vCPU a little after its instant, while the other CPUs run on).
//!
//! The kernel keeps, besides the running totals, what they grow with since the last change
//! ([`Doing`]) and a copy of the account from just before that change ([`Past`]). An
//! instant after the last change extrapolates the current account; one before it, the copy:
//! exact when at most one change came after the instant, and otherwise short by less than
//! the time since it (the reader's delay).

/// What a vCPU's CPU and waiting time grow with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Doing {
    /// Neither (blocked, paused, dead, or not started).
    #[default]
    Neither,
    /// CPU time.
    Running,
    /// Waiting time (runnable, not running).
    Waiting,
}

/// An account: totals up to `since`, growing with `doing` from then on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Past {
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub doing: Doing,
    pub since: u64,
}

impl Past {
    /// `(cpu_ns, wait_ns)` at `t` (no growth before `since`).
    fn grown(&self, t: u64) -> (u64, u64) {
        let d = t.saturating_sub(self.since);
        match self.doing {
            Doing::Running => (self.cpu_ns + d, self.wait_ns),
            Doing::Waiting => (self.cpu_ns, self.wait_ns + d),
            Doing::Neither => (self.cpu_ns, self.wait_ns),
        }
    }
}

/// `(cpu_ns, wait_ns)` at `t`, from the account `now` (which began at `changed_at`) and the
/// one it replaced, `before`.
pub fn at(now: Past, changed_at: u64, before: Past, t: u64) -> (u64, u64) {
    if t >= changed_at {
        now.grown(t)
    } else {
        before.grown(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU waiting from 100, running from 150 (it waited 50), blocked at 400.
    fn history() -> [(u64, Past); 3] {
        let waiting = Past {
            cpu_ns: 0,
            wait_ns: 0,
            doing: Doing::Waiting,
            since: 100,
        };
        let running = Past {
            cpu_ns: 0,
            wait_ns: 50,
            doing: Doing::Running,
            since: 150,
        };
        let blocked = Past {
            cpu_ns: 250,
            wait_ns: 50,
            doing: Doing::Neither,
            since: 400,
        };
        [(100, waiting), (150, running), (400, blocked)]
    }

    #[test]
    fn an_instant_after_the_last_change_extrapolates_the_account() {
        let [_, (_, running), (at_block, blocked)] = history();
        assert_eq!(at(blocked, at_block, running, 500), (250, 50));
        assert_eq!(at(running, 150, Past::default(), 300), (150, 50));
    }

    #[test]
    fn an_instant_before_the_last_change_reads_the_account_it_replaced() {
        // The snapshot's instant is 300; the vCPU blocked at 400, before the reader got to
        // it. Without the copy, the reader would see 250 ns of CPU, 100 more than at 300.
        let [_, (_, running), (at_block, blocked)] = history();
        assert_eq!(at(blocked, at_block, running, 300), (150, 50));
        // And exactly at the change.
        assert_eq!(at(blocked, at_block, running, 400), (250, 50));
    }

    #[test]
    fn with_two_changes_after_the_instant_it_is_off_by_less_than_the_delay() {
        // Instant 120 (waiting, 20 ns so far); it ran at 150 and blocked at 400 before the
        // reader got to it. The copy is the running account from 150, which already holds
        // the 30 ns waited after 120: off by those, less than the reader's delay (280).
        let [_, (_, running), (at_block, blocked)] = history();
        assert_eq!(at(blocked, at_block, running, 120), (0, 50));
    }
}
