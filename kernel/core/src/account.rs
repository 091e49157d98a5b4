//! A vCPU's CPU and waiting time: what the scheduler tells it ([`Account::run`],
//! [`Account::leave`], [`Account::wake`], [`Account::stop`]), and what it was at an instant
//! the reader chose, when the account may have changed since (a live snapshot,
//! `Sysctl::TakeSnapshotLive`, reads each vCPU a little after its instant, while the other
//! CPUs run on).
//!
//! The one rule: a vCPU is on a CPU from its switch-in to its switch-out, and all of that
//! is CPU time, whatever its run state did meanwhile. A vCPU blocks (or is paused) while it
//! runs and may be woken before its CPU's next decision takes it off: it was never off the
//! CPU, so it waited for nothing then. If the decision picks it again it runs on; if not, it
//! waits from the switch-out. (It once waited from the wake-up: the time between counted as
//! CPU and as waiting both, and a vCPU woken so and then switched out counted nothing while
//! it waited, then the whole wait at its switch-in, which put more CPU and waiting time in
//! one `window` than the window was long: `windows/128x4/credit`, session 22's CI.)
//!
//! Besides the totals, the account keeps what they grow with since the last change
//! ([`Doing`]) and a copy of itself from just before that change ([`Past`]). An instant
//! after the last change extrapolates the current account; one before it, the copy: exact
//! when at most one change came after the instant, and otherwise over by less than the
//! time since it (the reader's delay): the copy holds what grew between the instant and
//! the change before last.

/// What a vCPU's CPU and waiting time grow with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Doing {
    /// Neither (blocked, paused, dead, or not started).
    #[default]
    Neither,
    /// CPU time: it is on a CPU.
    Running,
    /// Waiting time: runnable, not on a CPU.
    Waiting,
}

/// An account: totals up to `since`, growing with `doing` from then on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Past {
    cpu_ns: u64,
    wait_ns: u64,
    doing: Doing,
    since: u64,
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

/// How many of a domain's vCPUs were running and how many waiting at an instant: what its
/// CPU and waiting time grow by per ns while nothing changes (a held snapshot carries its
/// figures forward with it: `Sysctl::TakeSnapshotStart`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Growth {
    pub running: u64,
    pub waiting: u64,
}

impl Growth {
    /// Counts one vCPU's account as read at `t`.
    pub fn count(&mut self, account: &Account, t: u64) {
        match account.doing_at(t) {
            Doing::Running => self.running += 1,
            Doing::Waiting => self.waiting += 1,
            Doing::Neither => {}
        }
    }

    /// `(cpu_ns, wait_ns)` carried `ns` forward, nothing having changed meanwhile.
    pub fn carry(&self, (cpu_ns, wait_ns): (u64, u64), ns: u64) -> (u64, u64) {
        (cpu_ns + self.running * ns, wait_ns + self.waiting * ns)
    }
}

/// One vCPU's account. Callers serialise the calls (the kernel holds the vCPU's figures'
/// lock) and pass the time each was read at; a time older than the last change (read on
/// another CPU before it took the lock) counts as that change's, so the totals never shrink
/// and never grow faster than the clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// The account now: totals up to its last change, and what they grow with since.
    now: Past,
    /// The account just before that change.
    before: Past,
}

impl Account {
    /// CPU time up to the last change: a running vCPU's current run is not in it until it
    /// leaves its CPU.
    pub fn cpu_ns(&self) -> u64 {
        self.now.cpu_ns
    }

    /// When the account last changed: a running vCPU's run counts from here (a switch-in
    /// timed before the last change counts from that change).
    pub fn since(&self) -> u64 {
        self.now.since
    }

    /// Switched in (or picked again where it runs, which changes nothing): CPU time from
    /// `now`, and the wait, if it waited, ends.
    pub fn run(&mut self, now: u64) {
        if self.now.doing != Doing::Running {
            self.change(now, Doing::Running);
        }
    }

    /// Switched out at `now`, still `runnable` (preempted, yielded, or woken since its block)
    /// or not. Returns how long the run was.
    pub fn leave(&mut self, now: u64, runnable: bool) -> u64 {
        let ran = match self.now.doing {
            Doing::Running => now.saturating_sub(self.now.since),
            _ => 0,
        };
        self.change(
            now,
            if runnable {
                Doing::Waiting
            } else {
                Doing::Neither
            },
        );
        ran
    }

    /// Became runnable (woken, unpaused, brought up): it waits from `now`, unless it is still
    /// on its CPU, where it runs on until its switch-out says what it does next.
    pub fn wake(&mut self, now: u64) {
        if self.now.doing == Doing::Neither {
            self.change(now, Doing::Waiting);
        }
    }

    /// Stopped being runnable (blocked, paused, down, killed): a wait ends at `now`; on a
    /// CPU it runs on until its switch-out.
    pub fn stop(&mut self, now: u64) {
        if self.now.doing == Doing::Waiting {
            self.change(now, Doing::Neither);
        }
    }

    /// What the account grew with at `t` (as [`Account::at`] reads it).
    pub fn doing_at(&self, t: u64) -> Doing {
        if t >= self.now.since {
            self.now.doing
        } else {
            self.before.doing
        }
    }

    /// `(cpu_ns, wait_ns)` as they stood at `t`.
    pub fn at(&self, t: u64) -> (u64, u64) {
        if t >= self.now.since {
            self.now.grown(t)
        } else {
            self.before.grown(t)
        }
    }

    fn change(&mut self, now: u64, doing: Doing) {
        let now = now.max(self.now.since);
        let (cpu_ns, wait_ns) = self.now.grown(now);
        self.before = self.now;
        self.now = Past {
            cpu_ns,
            wait_ns,
            doing,
            since: now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU waiting from 100, running from 150 (it waited 50), blocked at 400.
    fn history() -> Account {
        let mut a = Account::default();
        a.wake(100);
        a.run(150);
        a.stop(400);
        assert_eq!(a.leave(400, false), 250);
        a
    }

    #[test]
    fn an_instant_after_the_last_change_extrapolates_the_account() {
        let a = history();
        assert_eq!(a.at(500), (250, 50));
        let mut running = Account::default();
        running.wake(100);
        running.run(150);
        assert_eq!(running.at(300), (150, 50));
    }

    #[test]
    fn an_instant_before_the_last_change_reads_the_account_it_replaced() {
        // The snapshot's instant is 300; the vCPU blocked at 400, before the reader got to
        // it. Without the copy, the reader would see 250 ns of CPU, 100 more than at 300.
        let a = history();
        assert_eq!(a.at(300), (150, 50));
        // And exactly at the change.
        assert_eq!(a.at(400), (250, 50));
    }

    #[test]
    fn with_two_changes_after_the_instant_it_is_off_by_less_than_the_delay() {
        // Instant 120 (waiting, 20 ns so far); it ran at 150 and blocked at 400 before the
        // reader got to it. The copy is the running account from 150, which already holds
        // the 30 ns waited after 120: off by those, less than the reader's delay (280).
        assert_eq!(history().at(120), (0, 50));
    }

    #[test]
    fn a_vcpu_woken_before_its_switch_out_waits_from_the_switch_out() {
        // Running from 0, blocks at 100, woken at 120 while still on its CPU, switched out
        // at 130, in again at 200.
        let mut a = Account::default();
        a.wake(0);
        a.run(0);
        a.stop(100);
        a.wake(120);
        assert_eq!(a.at(125), (125, 0), "on its CPU, it runs");
        assert_eq!(a.leave(130, true), 130);
        assert_eq!(a.at(160), (130, 30), "a live snapshot sees the wait grow");
        a.run(200);
        assert_eq!(a.at(200), (130, 70));
        // Picked again where it runs instead: no wait at all.
        let mut b = Account::default();
        b.wake(0);
        b.run(0);
        b.stop(100);
        b.wake(120);
        b.run(130);
        assert_eq!(b.at(150), (150, 0));
    }

    use crate::test_rng::Rng;

    /// Where the vCPU really is, and the CPU and waiting time that follow from it.
    #[derive(Clone, Copy, Default)]
    struct Truth {
        on_cpu: bool,
        runnable: bool,
        cpu_ns: u64,
        wait_ns: u64,
        at: u64,
    }

    impl Truth {
        fn advance(&mut self, t: u64) {
            let d = t - self.at;
            if self.on_cpu {
                self.cpu_ns += d;
            } else if self.runnable {
                self.wait_ns += d;
            }
            self.at = t;
        }
    }

    /// Every sequence the scheduler can make (switch-in of a runnable vCPU, switch-out, a
    /// wake-up of a sleeper, a stop of a runnable vCPU on or off its CPU, a pick again where
    /// it runs), with a reader at every instant between two calls: the account read after
    /// the next call agrees with where the vCPU was, to the nanosecond.
    #[test]
    fn the_account_follows_where_the_vcpu_is_through_any_sequence() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let (mut a, mut truth, mut t) = (Account::default(), Truth::default(), 0u64);
            let mut ran_from = 0;
            for _ in 0..200 {
                let read_at = t + rng.next() % 50;
                let before_read = truth_at(truth, read_at);
                t = read_at + rng.next() % 50;
                truth.advance(t);
                match rng.next() % 4 {
                    0 if !truth.on_cpu && truth.runnable => {
                        (truth.on_cpu, ran_from) = (true, t);
                        a.run(t);
                    }
                    0 if truth.on_cpu && truth.runnable => a.run(t), // picked again
                    1 if truth.on_cpu => {
                        truth.on_cpu = false;
                        assert_eq!(a.leave(t, truth.runnable), t - ran_from, "the run's length");
                    }
                    2 if !truth.runnable => {
                        truth.runnable = true;
                        a.wake(t);
                    }
                    3 if truth.runnable => {
                        truth.runnable = false;
                        a.stop(t);
                    }
                    _ => continue,
                }
                assert_eq!(
                    a.at(read_at),
                    before_read,
                    "read at {read_at}, after the call at {t}"
                );
                assert_eq!(a.at(t), (truth.cpu_ns, truth.wait_ns), "at the call, {t}");
                // What it grows with from the call on, carried 10 ns: the truth 10 ns on.
                let mut g = Growth::default();
                g.count(&a, t);
                assert_eq!(
                    g.carry(a.at(t), 10),
                    truth_at(truth, t + 10),
                    "carried from {t}"
                );
            }
        }
    }

    /// Each call's time read on another CPU, before it took the lock, may be older than the
    /// account's last change (a decision on CPU B that began before CPU A switched the vCPU
    /// out, then picked it): however the calls' times run backwards, CPU and waiting time
    /// together never exceed the time gone by, and what is settled never shrinks. Taken as
    /// given, such a switch-in counted the time between the two CPUs' clocks as CPU time on
    /// both. (A reading extrapolated past a stale call can shrink by the staleness: a
    /// snapshot at 100 of a vCPU running, which then leaves at 90.)
    #[test]
    fn a_call_timed_before_the_last_change_counts_nothing_twice() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let (mut a, mut latest, mut settled) = (Account::default(), 0u64, 0u64);
            let mut on_cpu = false;
            for _ in 0..200 {
                latest += rng.next() % 50;
                let t = latest.saturating_sub(rng.next() % 80); // up to 80 ns stale
                match rng.next() % 3 {
                    0 if !on_cpu => {
                        a.wake(t);
                        a.run(t);
                        on_cpu = true;
                    }
                    1 if on_cpu => {
                        a.leave(t, rng.next() & 1 == 0);
                        on_cpu = false;
                    }
                    _ => a.stop(t),
                }
                let (cpu, wait) = a.at(latest);
                assert!(cpu + wait <= latest, "{cpu} + {wait} ns in {latest} ns");
                assert!(a.cpu_ns() >= settled, "the settled CPU time shrank");
                settled = a.cpu_ns();
            }
        }
    }

    /// The truth at `t`, from where it stood at its last step.
    fn truth_at(mut truth: Truth, t: u64) -> (u64, u64) {
        truth.advance(t);
        (truth.cpu_ns, truth.wait_ns)
    }
}
