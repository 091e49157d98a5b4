//! The host under the emulated machine: how many cores it has and how much other work ran
//! on them during the run, so that a run's figures can be read against what QEMU had.
//!
//! QEMU runs each emulated CPU as a host thread (TCG and KVM alike). With more emulated CPUs
//! than host cores, or a host busy with other work, those threads wait for a core, and the
//! guest cannot tell: the virtual clock goes on while a vCPU thread is descheduled, so one
//! guest run that the hypervisor asked to last 1 ms can last 5 or 10. Every policy charges
//! that time to the domain that was running, which then waits while the others catch up.
//! Long-run shares survive it; shares over short windows, high consolidation (1024 domains
//! in a 1 s interval) and wake-up latencies do not. The runner cannot remove that noise; it
//! says when it was there, on the console and in the `exit` record (`host_cores`,
//! `host_other_load`).

use std::fs;
use std::time::Duration;

/// The kernel's clock tick for `/proc/stat` and `/proc/self/stat` (`USER_HZ`), 100 on
/// every Linux architecture that has it fixed, x86 included.
const USER_HZ: f64 = 100.0;

/// CPU time on the host so far, in ticks: all of it (`/proc/stat`'s first line, busy
/// columns) and the runner's own with its reaped children's (QEMU, once waited for).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ticks {
    busy: u64,
    ours: u64,
}

impl Ticks {
    /// `None` where `/proc` cannot be read (then nothing is said).
    pub fn now() -> Option<Ticks> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let own = fs::read_to_string("/proc/self/stat").ok()?;
        Some(Ticks {
            busy: busy_ticks(stat.lines().next()?)?,
            ours: own_ticks(&own)?,
        })
    }

    /// The other host work between `self` and `later`, in cores busy on average over
    /// `wall`: all busy time less the runner's and QEMU's.
    pub fn other_load(&self, later: &Ticks, wall: Duration) -> f64 {
        let busy = later.busy.saturating_sub(self.busy);
        let ours = later.ours.saturating_sub(self.ours);
        let secs = wall.as_secs_f64().max(1e-3);
        busy.saturating_sub(ours) as f64 / USER_HZ / secs
    }
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: the busy columns summed
/// (idle and iowait left out; guest time is already inside user).
fn busy_ticks(cpu_line: &str) -> Option<u64> {
    let mut f = cpu_line.split_whitespace();
    (f.next()? == "cpu").then_some(())?;
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = v[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// `/proc/self/stat`'s utime, stime, cutime and cstime (fields 14 to 17), summed. The
/// command name (field 2) may hold spaces, so fields are counted after its `)`.
fn own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    (14..=17).map(|n| f.get(n - 3)?.parse::<u64>().ok()).sum()
}

/// The host's cores.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// What to tell the reader when the emulated CPUs had fewer host cores than they needed
/// (more of them than cores, or other work on the host taking half a core or more), or
/// `None` when each could have had a core of its own.
pub fn contention(cores: u32, emulated_cpus: u32, other_load: f64) -> Option<String> {
    let over = emulated_cpus > cores;
    let busy = other_load >= 0.5 && f64::from(emulated_cpus) + other_load > f64::from(cores);
    if !over && !busy {
        return None;
    }
    let mut why = Vec::new();
    if over {
        why.push(format!(
            "{emulated_cpus} emulated CPUs on {cores} host cores"
        ));
    }
    if other_load >= 0.5 {
        why.push(format!("other host work took {other_load:.1} cores"));
    }
    Some(format!(
        "{}: QEMU's CPU threads waited for host cores, which stretches guest runs; shares \
         over short windows and wake-up latencies carry that noise (compare runs with at \
         most one emulated CPU per idle host core)",
        why.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_per_emulated_cpu_and_a_quiet_host_is_no_contention() {
        assert_eq!(contention(2, 2, 0.2), None);
        assert_eq!(
            contention(2, 1, 0.9),
            None,
            "one core spare for the other work"
        );
    }

    #[test]
    fn more_cpus_than_cores_or_a_busy_host_is_said() {
        let note = contention(2, 4, 0.1).expect("4 CPUs on 2 cores");
        assert!(
            note.starts_with("4 emulated CPUs on 2 host cores:"),
            "{note}"
        );
        let note = contention(2, 2, 3.0).expect("a busy host");
        assert!(
            note.starts_with("other host work took 3.0 cores:"),
            "{note}"
        );
        let note = contention(2, 3, 1.0).unwrap();
        assert!(
            note.starts_with("3 emulated CPUs on 2 host cores, other host work"),
            "{note}"
        );
    }

    #[test]
    fn proc_lines_parse_and_other_load_leaves_ours_out() {
        let line = "cpu  100 5 50 9000 10 3 2 0 0 0";
        assert_eq!(busy_ticks(line), Some(160));
        assert_eq!(busy_ticks("intr 1 2 3"), None);
        // A command name with spaces and a parenthesis.
        let stat = "42 (run (x) y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 20 0 0";
        // fields 14..17 = 11 12 13 14
        assert_eq!(own_ticks(stat), Some(50));
        let a = Ticks {
            busy: 1000,
            ours: 100,
        };
        let b = Ticks {
            busy: 1500,
            ours: 400,
        };
        // 500 busy ticks, 300 of them ours: 200 ticks = 2 s of other work over 2 s.
        let load = a.other_load(&b, Duration::from_secs(2));
        assert!((load - 1.0).abs() < 1e-9, "{load}");
        assert!(Ticks::now().is_some(), "this host has /proc");
    }
}
