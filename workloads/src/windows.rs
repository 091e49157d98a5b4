//! Results over time (spec `window_ms`, docs/DESIGN.md "Pools, timelines and time series"):
//! Domain0's bookkeeping of the `window` records, tested on the host.
//!
//! At each window boundary Domain0 takes one of the hypervisor's snapshots of every domain
//! at one instant (`sysctl TakeSnapshotLive`: the other CPUs run on, as holding them at
//! every boundary would charge the hold to the vCPUs it stopped; the interval's two ends
//! are `TakeSnapshot`s, with the CPUs held) and hands each domain's figures to
//! [`Windows::close`], which keeps the deltas against the boundary before. The
//! records are written only once the interval is over ([`Windows::records`]), so that
//! writing them does not disturb what they measure; `sched::spec::MAX_WINDOW_RECORDS`
//! bounds what is kept.
//!
//! The measured interval is cut at `t0 + k × window` ([`next_tick`]); a boundary Domain0
//! reaches late is taken when it is reached, and its record's `t_ns` says when: the windows
//! always tile the interval exactly, so each domain's windows sum to its `domain` record.

use alloc::string::String;
use alloc::vec::Vec;

use abi::control::DomainInfo;
use abi::tool::results::{Phase, Progress, Record, Window};

use crate::report::line;

/// What a window keeps of one domain's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Figures {
    cpu_ns: u64,
    wait_ns: u64,
    work: u64,
}

impl From<&DomainInfo> for Figures {
    fn from(i: &DomainInfo) -> Self {
        Figures {
            cpu_ns: i.cpu_ns,
            wait_ns: i.wait_ns,
            work: i.work,
        }
    }
}

/// The windows of one measured interval, for `domains` domains.
#[derive(Clone, Debug)]
pub struct Windows {
    /// Each domain's figures at the last boundary.
    last: Vec<Figures>,
    /// Each closed window: its end (from the start of the interval), then one delta per
    /// domain, in the order the domains were given.
    closed: Vec<(u64, Vec<Figures>)>,
}

impl Windows {
    /// Windows starting from every domain's figures at the start of the interval.
    pub fn new<'a>(start: impl IntoIterator<Item = &'a DomainInfo>) -> Self {
        Windows {
            last: start.into_iter().map(Figures::from).collect(),
            closed: Vec::new(),
        }
    }

    /// Closes the window ending `t_ns` into the interval, with every domain's figures then
    /// (in the same order as at the start; a figure that went backwards counts 0).
    pub fn close<'a>(&mut self, t_ns: u64, now: impl IntoIterator<Item = &'a DomainInfo>) {
        let deltas = self
            .last
            .iter_mut()
            .zip(now)
            .map(|(last, info)| {
                let f = Figures::from(info);
                let d = Figures {
                    cpu_ns: f.cpu_ns.saturating_sub(last.cpu_ns),
                    wait_ns: f.wait_ns.saturating_sub(last.wait_ns),
                    work: f.work.saturating_sub(last.work),
                };
                *last = f;
                d
            })
            .collect();
        self.closed.push((t_ns, deltas));
    }

    /// Windows closed so far.
    pub fn len(&self) -> usize {
        self.closed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
    }

    /// The `window` records' lines, window by window, each in domain order; `ids` gives
    /// each domain's id and name, in the same order.
    pub fn records<'a>(&'a self, ids: &'a [(u32, &'a str)]) -> impl Iterator<Item = String> + 'a {
        self.closed.iter().flat_map(move |(t_ns, deltas)| {
            ids.iter().zip(deltas).map(move |(&(id, name), d)| {
                line(&Record::Window(Window {
                    t_ns: *t_ns,
                    id,
                    name: name.into(),
                    cpu_ns: d.cpu_ns,
                    wait_ns: d.wait_ns,
                    work: d.work,
                }))
            })
        })
    }
}

/// The next instant after `now` at which Domain0 wakes during the interval from `t0` to
/// `end`: the next multiple of `step_ns` from `t0`, or `end`.
pub fn next_tick(t0: u64, end: u64, step_ns: u64, now: u64) -> u64 {
    if step_ns == 0 {
        return end;
    }
    let k = now.saturating_sub(t0) / step_ns + 1;
    t0.saturating_add(k.saturating_mul(step_ns)).min(end)
}

/// A `progress` record's line.
pub fn progress_record(phase: Phase, done: u64, total: u64) -> String {
    line(&Record::Progress(Progress { phase, done, total }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::control::{DomainExit, DomainState, SchedParams, WAKE_LAT_BUCKETS};

    fn info(cpu_ns: u64, wait_ns: u64, work: u64) -> DomainInfo {
        DomainInfo {
            domain: 1,
            state: DomainState::Alive,
            exit: DomainExit::Running,
            vcpus: 1,
            sched: SchedParams::default(),
            cpu_ns,
            wait_ns,
            work,
            wakeups: 0,
            wake_lat_p50_ns: 0,
            wake_lat_p99_ns: 0,
            wake_lat_max_ns: 0,
            switches: 0,
            migrations: 0,
            frames: 0,
            wake_lat_hist: [0; WAKE_LAT_BUCKETS],
            timer_deadline_ns: 0,
        }
    }

    fn parse(line: &str) -> Window {
        match serde_json::from_str(line) {
            Ok(Record::Window(w)) => w,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn windows_are_deltas_that_sum_to_the_interval() {
        let ids = [(5, "a0"), (6, "a1")];
        let start = [info(1_000, 10, 7), info(0, 0, 0)];
        let mut w = Windows::new(&start);
        assert!(w.is_empty());
        w.close(100, &[info(1_060, 30, 9), info(40, 5, 1)]);
        // A late boundary: its end is when it was taken.
        w.close(230, &[info(1_100, 30, 20), info(130, 5, 1)]);
        // A figure that goes backwards (never should) counts 0, not a wrapped count.
        w.close(250, &[info(1_090, 31, 20), info(150, 6, 3)]);
        assert_eq!(w.len(), 3);
        let got: Vec<Window> = w.records(&ids).map(|l| parse(&l)).collect();
        assert_eq!(got.len(), 6);
        assert_eq!(
            got.iter().map(|r| (r.t_ns, r.id)).collect::<Vec<_>>(),
            [(100, 5), (100, 6), (230, 5), (230, 6), (250, 5), (250, 6)]
        );
        assert_eq!((got[0].cpu_ns, got[0].wait_ns, got[0].work), (60, 20, 2));
        assert_eq!((got[3].cpu_ns, got[3].name.as_str()), (90, "a1"));
        assert_eq!(got[4].cpu_ns, 0);
        // Domain a1's windows sum to its figures over the interval.
        let a1 = got.iter().filter(|r| r.id == 6);
        assert_eq!(
            a1.fold((0, 0, 0), |s, r| (
                s.0 + r.cpu_ns,
                s.1 + r.wait_ns,
                s.2 + r.work
            )),
            (150, 6, 3)
        );
    }

    #[test]
    fn ticks_fall_on_multiples_of_the_step_and_stop_at_the_end() {
        assert_eq!(next_tick(1000, 1350, 100, 1000), 1100);
        assert_eq!(next_tick(1000, 1350, 100, 1099), 1100);
        assert_eq!(next_tick(1000, 1350, 100, 1100), 1200);
        // Woken late: the next boundary after now, not the missed one.
        assert_eq!(next_tick(1000, 1350, 100, 1234), 1300);
        assert_eq!(next_tick(1000, 1350, 100, 1320), 1350);
        assert_eq!(next_tick(1000, 1350, 100, 5000), 1350);
        assert_eq!(next_tick(1000, 1350, 0, 1100), 1350);
    }

    #[test]
    fn progress_records_read_back() {
        let l = progress_record(Phase::Create, 3, 128);
        assert_eq!(
            l,
            r#"{"kind":"progress","phase":"create","done":3,"total":128}"#
        );
    }
}
