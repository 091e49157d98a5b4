//! A vCPU's run state and the rules that move it, kept apart from the locks and the policy
//! calls around them (`kernel/src/schedule` holds one per vCPU, under the vCPU's state lock,
//! and tells the policy what [`Tell`] says).
//!
//! Three causes can keep a vCPU off a CPU, and they are independent: its domain is paused
//! (by Domain0, at creation, or while it moves between CPU pools), it is blocked waiting for
//! an event or a timer, or it took itself down (`VcpuOp::Down`). Xen keeps them apart too:
//! the domain's `pause_count` beside each vCPU's `_VPF_blocked` and `_VPF_down` pause flags
//! (`xen/include/xen/sched.h`, `vcpu_runnable`), so that `domain_unpause` makes runnable only
//! what was runnable before the pause. Here a pause remembers whether the vCPU was asleep
//! ([`RunState::Paused`]'s `blocked`), a wake-up during the pause is kept in that flag, and
//! a vCPU that is down stays down through a pause and an unpause: only `VcpuOp::Up` brings
//! it back.
//!
//! ```text
//!              unpause                 pick / preempt
//!  Paused{blocked: false} ---------> Runnable <------> Running
//!     ^        |  ^ wake               ^   | pause        | block, down, pause
//!     | pause  |  |                wake|   v              v
//!     |  block v  |                    |  Paused{..}    Blocked / Down / Paused{false}
//!  Paused{blocked: true} <--pause-- Blocked
//!        unpause: back to Blocked
//!  any --kill--> Dead
//! ```

/// Where a vCPU stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Stopped by its domain's pause. `blocked`: it was asleep when paused, or went to sleep
    /// since, and no wake-up has come: the unpause leaves it asleep.
    Paused { blocked: bool },
    /// Taken down by its own domain (`VcpuOp::Down`): off the CPUs until `VcpuOp::Up`,
    /// whatever pauses and unpauses its domain goes through.
    Down,
    /// Waiting for a CPU (on the policy's queues).
    Runnable,
    /// On a CPU.
    Running,
    /// Asleep until an event or its timer.
    Blocked,
    /// Its domain has ended.
    Dead,
}

/// What the scheduling policy must hear about a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tell {
    /// Nothing: the policy already has it asleep, or never had it awake.
    Nothing,
    /// `Policy::wake`: it became runnable.
    Wake,
    /// `Policy::sleep`: it was runnable or running and is not any more.
    Sleep,
}

/// Why a vCPU leaves the runnable states (`schedule::stop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It blocks or polls (its own hypercall, or Domain0 waiting for a domain's end).
    Block,
    /// Its domain is paused.
    Pause,
    /// It takes itself down (`VcpuOp::Down`).
    Down,
    /// Its domain ends.
    Kill,
}

impl RunState {
    /// A vCPU is made at creation paused and runnable: the start of its domain is an
    /// unpause.
    pub const CREATED: RunState = RunState::Paused { blocked: false };

    /// Whether the vCPU is on the policy's queues or on a CPU (the policy has it awake).
    pub fn awake(self) -> bool {
        matches!(self, RunState::Runnable | RunState::Running)
    }

    /// The state after `why`, and what the policy hears; `None` when nothing changes.
    ///
    /// A block after a pause has stopped the vCPU (it was in its hypercall when paused)
    /// turns the pause into a paused sleep, so the unpause does not wake it; a pause does
    /// not touch a vCPU that is down or dead; nothing but a kill leaves `Down`; nothing
    /// leaves `Dead`.
    pub fn stop(self, why: Stop) -> Option<(RunState, Tell)> {
        let tell = if self.awake() {
            Tell::Sleep
        } else {
            Tell::Nothing
        };
        let next = match (self, why) {
            (RunState::Dead, _) => return None,
            (_, Stop::Kill) => RunState::Dead,
            (RunState::Down, _) => return None,
            (_, Stop::Down) => RunState::Down,
            (RunState::Paused { blocked: true }, _) => return None,
            (RunState::Paused { blocked: false }, Stop::Block) => {
                RunState::Paused { blocked: true }
            }
            (RunState::Paused { .. }, Stop::Pause) => return None,
            (RunState::Blocked, Stop::Pause) => RunState::Paused { blocked: true },
            (RunState::Blocked, Stop::Block) => return None,
            (RunState::Runnable | RunState::Running, Stop::Block) => RunState::Blocked,
            (RunState::Runnable | RunState::Running, Stop::Pause) => {
                RunState::Paused { blocked: false }
            }
        };
        Some((next, tell))
    }

    /// A wake-up (an event, its timer, the end of what Domain0 waited for). `None` if the
    /// vCPU was not asleep. A paused sleeper keeps the wake-up for its unpause.
    pub fn wake(self) -> Option<(RunState, Tell)> {
        match self {
            RunState::Blocked => Some((RunState::Runnable, Tell::Wake)),
            RunState::Paused { blocked: true } => {
                Some((RunState::Paused { blocked: false }, Tell::Nothing))
            }
            _ => None,
        }
    }

    /// Its domain is unpaused: what was runnable before the pause (or woke during it) is
    /// runnable again, a sleeper goes back to sleep. `None` if it was not paused.
    pub fn unpause(self) -> Option<(RunState, Tell)> {
        match self {
            RunState::Paused { blocked: false } => Some((RunState::Runnable, Tell::Wake)),
            RunState::Paused { blocked: true } => Some((RunState::Blocked, Tell::Nothing)),
            _ => None,
        }
    }

    /// `VcpuOp::Up` from another vCPU of its domain (`domain_paused`: that domain is paused
    /// now, so it comes up paused). `None` if it was not down.
    pub fn up(self, domain_paused: bool) -> Option<(RunState, Tell)> {
        match (self, domain_paused) {
            (RunState::Down, false) => Some((RunState::Runnable, Tell::Wake)),
            (RunState::Down, true) => Some((RunState::Paused { blocked: false }, Tell::Nothing)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RunState::*;
    use super::*;

    const ALL: [RunState; 7] = [
        Paused { blocked: false },
        Paused { blocked: true },
        Down,
        Runnable,
        Running,
        Blocked,
        Dead,
    ];

    #[test]
    fn a_sleeper_paused_and_unpaused_stays_asleep() {
        let (paused, tell) = Blocked.stop(Stop::Pause).unwrap();
        assert_eq!((paused, tell), (Paused { blocked: true }, Tell::Nothing));
        assert_eq!(paused.unpause(), Some((Blocked, Tell::Nothing)));
    }

    #[test]
    fn a_wake_up_during_the_pause_is_kept_for_the_unpause() {
        let (paused, _) = Blocked.stop(Stop::Pause).unwrap();
        let (woken, tell) = paused.wake().unwrap();
        assert_eq!(tell, Tell::Nothing, "no policy call while paused");
        assert_eq!(woken.unpause(), Some((Runnable, Tell::Wake)));
    }

    #[test]
    fn a_runner_paused_and_unpaused_runs_again() {
        for s in [Runnable, Running] {
            let (paused, tell) = s.stop(Stop::Pause).unwrap();
            assert_eq!((paused, tell), (Paused { blocked: false }, Tell::Sleep));
            assert_eq!(paused.unpause(), Some((Runnable, Tell::Wake)));
        }
    }

    #[test]
    fn a_block_after_the_pause_stopped_it_is_a_paused_sleep() {
        // Paused while in its block hypercall: the block that follows is not lost.
        let (paused, _) = Running.stop(Stop::Pause).unwrap();
        let (asleep, tell) = paused.stop(Stop::Block).unwrap();
        assert_eq!((asleep, tell), (Paused { blocked: true }, Tell::Nothing));
        assert_eq!(asleep.unpause(), Some((Blocked, Tell::Nothing)));
    }

    #[test]
    fn down_survives_pause_and_unpause_and_only_up_ends_it() {
        let (down, tell) = Running.stop(Stop::Down).unwrap();
        assert_eq!((down, tell), (Down, Tell::Sleep));
        assert_eq!(down.stop(Stop::Pause), None);
        assert_eq!(down.unpause(), None);
        assert_eq!(down.wake(), None);
        assert_eq!(down.up(false), Some((Runnable, Tell::Wake)));
        assert_eq!(
            down.up(true),
            Some((Paused { blocked: false }, Tell::Nothing))
        );
    }

    #[test]
    fn down_while_paused_stays_down_after_the_unpause() {
        // Paused while in its own `VcpuOp::Down`.
        let (paused, _) = Running.stop(Stop::Pause).unwrap();
        let (down, tell) = paused.stop(Stop::Down).unwrap();
        assert_eq!((down, tell), (Down, Tell::Nothing));
        assert_eq!(down.unpause(), None);
    }

    #[test]
    fn up_acts_only_on_down() {
        for s in ALL.into_iter().filter(|&s| s != Down) {
            assert_eq!(s.up(false), None, "{s:?}");
        }
    }

    #[test]
    fn the_policy_hears_sleep_exactly_when_an_awake_vcpu_stops() {
        for s in ALL {
            for why in [Stop::Block, Stop::Pause, Stop::Down, Stop::Kill] {
                if let Some((next, tell)) = s.stop(why) {
                    assert_eq!(tell == Tell::Sleep, s.awake(), "{s:?} {why:?}");
                    assert!(!next.awake(), "{s:?} {why:?} -> {next:?}");
                }
            }
        }
    }

    #[test]
    fn kill_ends_everything_and_nothing_leaves_dead() {
        for s in ALL.into_iter().filter(|&s| s != Dead) {
            assert_eq!(s.stop(Stop::Kill).map(|(n, _)| n), Some(Dead), "{s:?}");
        }
        for why in [Stop::Block, Stop::Pause, Stop::Down, Stop::Kill] {
            assert_eq!(Dead.stop(why), None);
        }
        assert_eq!(Dead.wake(), None);
        assert_eq!(Dead.unpause(), None);
        assert_eq!(Dead.up(false), None);
    }

    #[test]
    fn only_wake_unpause_and_up_make_a_vcpu_runnable_and_then_the_policy_hears_wake() {
        for s in ALL {
            for (next, tell) in [s.wake(), s.unpause(), s.up(false), s.up(true)]
                .into_iter()
                .flatten()
            {
                assert_eq!(next.awake(), tell == Tell::Wake, "{s:?} -> {next:?}");
            }
        }
    }
}
