//! Trace-driven replay (`schedsim --replay TRACE.json SPEC`): a hypervisor trace's arrivals
//! under any policy — "what would credit2 have done on exactly this run?".
//!
//! The trace (`scripts/run --trace FILE`, Chrome trace-event JSON: `"X"` run intervals with
//! `pid` = CPU and `tid` = domain × 1000 + vCPU, `"i"` instants named `wake`, `thread_name`
//! metadata naming each `tid` `<domain>.<vcpu>`) gives each vCPU its wake-ups and the CPU
//! time it ran after each: a *burst*. A vCPU with wake-ups in the trace is replayed: it
//! starts when its first run interval started and needs the CPU time it ran before its
//! first wake-up, then at each recorded wake-up it wakes needing that burst's CPU time, and
//! blocks when it has had it. If a burst is still unfinished when the next recorded wake-up
//! comes (the policy under test served it more slowly), the next burst's demand is added
//! and it runs on; but a vCPU of a `latency` domain skips the recorded wake-ups that passed
//! meanwhile and sleeps until the next one still ahead, as the workload skips the periods
//! it overran (`sched::sim`, `Kind::Replay`). Every other vCPU (one that never woke in the trace, a `cpu` hog, or a
//! `yield` domain that never sleeps: its trace has no wake-up but its start) runs the spec's
//! workload as usual. The spec names the domains (matched to the trace by
//! name), the policy, the CPUs and the interval. schedsim runs on the run's own clock, the
//! hypervisor's system time: its measured interval starts at the trace's `measure_start`
//! mark (the hypervisor's measured interval, `scripts/runner`'s trace), so both engines
//! measure the same stretch of the run however late Domain0 began measuring (on a loaded
//! host 300 ms after the warm-up), and each wake-up keeps its phase against the policy's
//! periods (rtds's end at multiples of the period since system time 0: [`clock_start`]).
//! A run that began measuring before the spec's warm-up ends is moved whole seconds later.
//! A trace without the mark (an older one) is shifted so that its first guest run
//! interval is time 0 (domains start together in both).
//!
//! The bursts carry what the hypervisor spent around each run (switch, hypercalls): replay
//! on the ideal machine, or on a profile whose switch and block costs are small beside them.
//!
//! The trace also marks each interrupt a CPU took 256 µs or more late (`late`, category
//! `host`: due at `ts`, `args.late_us` late, `args.of` the CPU's `timer` or another CPU's
//! `kick`). Those are the host's doing at their moments ([`HostStalls`]), which `schedsim
//! --costs-from RUN --stalls-from TRACE` plays out in place of lateness drawn at random
//! (with a replay or without): the policy meets the late timers and the stalls the run
//! met, where it met them.

use std::collections::BTreeMap;

/// One vCPU's recorded arrivals: `(time, CPU demand)` in ns, in time order, the first being
/// its start.
pub type Arrivals = Vec<(u64, u64)>;

/// Every replayed vCPU's arrivals, by `(domain name, vCPU index)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The arrivals.
    pub vcpus: BTreeMap<(String, u32), Arrivals>,
    /// The trace file (for messages).
    pub file: String,
    /// When the hypervisor's measured interval began (the trace's `measure_start`), on the
    /// arrivals' clock; `None` for a trace without the mark.
    pub measured_at: Option<u64>,
    /// The system time (ns since the hypervisor booted) at 0 on the arrivals' clock: the
    /// trace's first guest run ([`clock_start`]).
    pub origin: u64,
}

/// A CPU's stall: `(cpu, start, length)` in ns.
pub type Stall = (usize, u64, u64);

/// What the host did to each CPU as a trace marks it (`late`: an interrupt due at a time
/// and taken this late), marks that overlap on one CPU merged. Two kinds:
/// - a CPU's timer held (`of: timer`): its timer interrupt came late while the CPU ran
///   on. Under TCG the emulated APIC timer does this (latency.toml under rtds on 2 CPUs
///   on an idle host: 7.7% of slice ends over 256 µs late, 17% of each CPU's time inside
///   such a wait, while 0.8% of the IPIs sent to it came that late), so a slice end, tick
///   or sleeper's timer due inside one fires at its end, and nothing else waits;
/// - a CPU's stall (`of: kick`, an IPI taken late): the CPU did not run (the host did not
///   run its thread), so it does no work and takes nothing until the stall ends.
///
/// Only the part after an interrupt was due is seen: a stall that began earlier, or held
/// up no interrupt, is not in the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStalls {
    /// The stalls, on the clock of the trace's first guest run, in time order per CPU.
    pub stalls: Vec<Stall>,
    /// The spans in which a CPU's timer was held, the same way.
    pub timers: Vec<Stall>,
    /// When the hypervisor's measured interval began, on that clock (as
    /// [`Replay::measured_at`]).
    pub measured_at: Option<u64>,
    /// The system time at 0 on that clock (as [`Replay::origin`]).
    pub origin: u64,
}

/// Where schedsim's measured interval starts in a replay of a run (its arrivals, its host's
/// stalls), given the spec's warm-up (`warmup`, ns): at the run's own `measure_start`, as
/// the system time the trace gives it (`origin` + `measured_at`), so that schedsim's
/// clock reads the run's. A policy's clock has a phase: rtds's periods end at multiples
/// of the period since system time 0 (rt.c's `rt_update_deadline`), and a `latency`
/// domain wakes at its own start plus whole periods. Under rtds on 2 CPUs (latency.toml)
/// the latency domain's 500 µs server shared the hogs' 10 ms deadline once in every ten
/// wake-ups, whenever its wake-up fell in the last 500 µs before one, and waited behind the
/// hog that arrived first (rt.c's order among equal deadlines): 10% of its wake-ups in 9 of
/// 10 runs waited 256-512 µs, its p99. Replayed with `measure_start` put at the warm-up's
/// end, its wake-ups fell at another phase, seldom tied, and the p99 missed.
/// Later than the warm-up by whole seconds if the run began measuring before it; at the
/// warm-up's end for a trace without the mark, as before.
pub fn clock_start(warmup: u64, origin: u64, measured_at: Option<u64>) -> u64 {
    const SECOND: u64 = 1_000_000_000;
    let Some(m) = measured_at else { return warmup };
    let at = origin + m;
    at + warmup.saturating_sub(at).div_ceil(SECOND) * SECOND
}

impl HostStalls {
    /// Reads a trace file's stalls (`schedsim --stalls-from`).
    pub fn load(path: &str) -> Result<HostStalls, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
        Ok(Trace::parse(&text, path)?.host)
    }

    /// Where schedsim's measured interval starts for these stalls ([`clock_start`]).
    pub fn clock_start(&self, warmup: u64) -> u64 {
        clock_start(warmup, self.origin, self.measured_at)
    }

    /// The stalls and the held timers on schedsim's clock, shifted as [`Replay::aligned`]
    /// shifts arrivals (not at all without the measured interval's mark); the part of one
    /// before 0 is dropped.
    pub fn aligned(&self, t0: u64) -> (Vec<Stall>, Vec<Stall>) {
        let shift = |spans| Self::shifted(spans, self.measured_at, t0);
        (shift(&self.stalls), shift(&self.timers))
    }

    fn shifted(spans: &[Stall], measured_at: Option<u64>, t0: u64) -> Vec<Stall> {
        let (add, sub) = measured_at.map_or((0, 0), |m| (t0, m));
        spans
            .iter()
            .filter_map(|&(cpu, at, ns)| {
                let (start, end) =
                    ((at + add).saturating_sub(sub), (at + ns + add).checked_sub(sub)?);
                (end > start).then_some((cpu, start, end - start))
            })
            .collect()
    }

    /// Merges `(cpu, due, late)` marks into stalls per CPU.
    fn merged(mut marks: Vec<Stall>) -> Vec<Stall> {
        marks.sort_unstable();
        let mut out: Vec<Stall> = Vec::with_capacity(marks.len());
        for (cpu, at, ns) in marks {
            match out.last_mut() {
                Some(last) if last.0 == cpu && at <= last.1 + last.2 => {
                    last.2 = last.2.max(at + ns - last.1);
                }
                _ => out.push((cpu, at, ns)),
            }
        }
        out
    }
}

fn ns(v: &serde_json::Value) -> Option<u64> {
    v.as_f64().map(|us| (us * 1000.0).round() as u64)
}

/// What a trace holds for replay: each guest vCPU's run intervals and wake-ups (by `tid`),
/// names, and the host's stalls, on the clock of its first guest run (`origin`, µs of
/// system time in the file).
struct Trace {
    names: BTreeMap<u64, (String, u32)>,
    runs: BTreeMap<u64, Vec<(u64, u64)>>,
    wakes: BTreeMap<u64, Vec<u64>>,
    /// Where each vCPU's trace quota ran out (`full`), if it did.
    full: BTreeMap<u64, u64>,
    /// The measured interval's end (`measure_end`), if marked.
    measure_end: Option<u64>,
    origin: u64,
    host: HostStalls,
}

impl Trace {
    fn parse(text: &str, file: &str) -> Result<Trace, String> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!("{file}: not trace JSON ({e}); expected scripts/run --trace output")
        })?;
        let events = json["traceEvents"]
            .as_array()
            .ok_or(format!("{file}: no traceEvents array (expected scripts/run --trace output)"))?;
        let mut names: BTreeMap<u64, (String, u32)> = BTreeMap::new();
        for e in events.iter().filter(|e| e["ph"] == "M" && e["name"] == "thread_name") {
            let (Some(tid), Some(name)) = (e["tid"].as_u64(), e["args"]["name"].as_str()) else {
                continue;
            };
            if let Some((dom, idx)) = name.rsplit_once('.')
                && let Ok(idx) = idx.parse()
            {
                names.insert(tid, (dom.to_string(), idx));
            }
        }
        // Per tid: run intervals and wake-ups.
        let mut runs: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        let mut wakes: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut full: BTreeMap<u64, u64> = BTreeMap::new();
        let (mut measured_at, mut measure_end) = (None, None);
        let (mut kicks, mut timers): (Vec<Stall>, Vec<Stall>) = Default::default();
        for e in events {
            if e["ph"] == "i" && e["name"] == "measure_start" {
                measured_at = ns(&e["ts"]);
            }
            if e["ph"] == "i" && e["name"] == "measure_end" {
                measure_end = ns(&e["ts"]);
            }
            if e["ph"] == "i" && e["cat"] == "host" && e["name"] == "late" {
                let (Some(cpu), Some(ts), Some(late)) =
                    (e["pid"].as_u64(), ns(&e["ts"]), ns(&e["args"]["late_us"]))
                else {
                    return Err(format!(
                        "{file}: a late mark without pid, ts or args.late_us: {e}"
                    ));
                };
                match e["args"]["of"].as_str() {
                    Some("timer") => timers.push((cpu as usize, ts, late)),
                    Some("kick") => kicks.push((cpu as usize, ts, late)),
                    _ => {
                        return Err(format!(
                            "{file}: a late mark whose args.of is not `timer` or `kick`: {e}"
                        ));
                    }
                }
                continue;
            }
            let Some(tid) = e["tid"].as_u64() else { continue };
            if tid < 1000 {
                continue; // Domain0
            }
            match (e["ph"].as_str(), e["name"].as_str()) {
                (Some("X"), _) => {
                    let (Some(ts), Some(dur)) = (ns(&e["ts"]), ns(&e["dur"])) else {
                        return Err(format!("{file}: an X event without ts or dur: {e}"));
                    };
                    runs.entry(tid).or_default().push((ts, dur));
                }
                (Some("i"), Some("wake")) => {
                    let ts = ns(&e["ts"]).ok_or(format!("{file}: a wake without ts: {e}"))?;
                    wakes.entry(tid).or_default().push(ts);
                }
                (Some("i"), Some("full")) => {
                    let ts = ns(&e["ts"]).ok_or(format!("{file}: a full mark without ts: {e}"))?;
                    // The first mark counts (a quota's and a full buffer's can both be there).
                    full.entry(tid).and_modify(|t: &mut u64| *t = (*t).min(ts)).or_insert(ts);
                }
                _ => {}
            }
        }
        let origin = runs.values().flatten().map(|r| r.0).min().ok_or(format!(
            "{file}: no guest run intervals (expected scripts/run --trace output of a run)"
        ))?;
        let from_origin = |marks: Vec<Stall>| {
            let marks = marks
                .into_iter()
                .filter_map(|(cpu, ts, late)| Some((cpu, ts.checked_sub(origin)?, late)))
                .collect();
            HostStalls::merged(marks)
        };
        let host = HostStalls {
            stalls: from_origin(kicks),
            timers: from_origin(timers),
            measured_at: measured_at.map(|m: u64| m.saturating_sub(origin)),
            origin,
        };
        Ok(Trace { names, runs, wakes, full, measure_end, origin, host })
    }
}

impl Replay {
    /// Reads a trace file.
    pub fn load(path: &str) -> Result<Replay, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
        Replay::parse(&text, path)
    }

    /// Parses trace JSON (named `file` in errors).
    pub fn parse(text: &str, file: &str) -> Result<Replay, String> {
        let Trace { names, mut runs, wakes, full, measure_end, origin, host } =
            Trace::parse(text, file)?;
        let mut out = Replay {
            vcpus: BTreeMap::new(),
            file: file.into(),
            measured_at: host.measured_at,
            origin,
        };
        for (tid, mut ws) in wakes {
            let Some(mut rs) = runs.remove(&tid) else { continue };
            let name = names
                .get(&tid)
                .cloned()
                .ok_or(format!("{file}: tid {tid} has wake-ups but no thread_name"))?;
            // A trace its vCPU's quota cut before the interval's end holds only part of its
            // arrivals: replayed, it would sleep from there on, and the comparison with the
            // run would be of different workloads.
            if let Some(&cut) = full.get(&tid)
                && measure_end.is_none_or(|end| cut < end)
            {
                return Err(format!(
                    "{file}: {}.{}'s trace was cut at {:.3} s by the hypervisor's per-vCPU trace \
                     quota ({}), before the measured interval's end: its arrivals after that \
                     are unknown; replay a shorter run",
                    name.0,
                    name.1,
                    cut.saturating_sub(origin) as f64 / 1e9,
                    measure_end.map_or("no measure_end".into(), |end| format!(
                        "which ended {:.3} s later",
                        end.saturating_sub(cut) as f64 / 1e9
                    )),
                ));
            }
            ws.sort_unstable();
            rs.sort_unstable();
            let start = rs[0].0;
            let mut arrivals: Arrivals = vec![(start - origin, 0)];
            arrivals.extend(ws.iter().filter(|&&w| w >= start).map(|&w| (w - origin, 0)));
            // Each run interval's time goes to the last arrival at or before its start.
            let mut k = 0;
            for (ts, dur) in rs {
                while k + 1 < arrivals.len() && arrivals[k + 1].0 <= ts - origin {
                    k += 1;
                }
                arrivals[k].1 += dur;
            }
            for a in &mut arrivals {
                a.1 = a.1.max(1);
            }
            out.vcpus.insert(name, arrivals);
        }
        if out.vcpus.is_empty() {
            return Err(format!("{file}: no guest vCPU woke up in this trace: nothing to replay"));
        }
        Ok(out)
    }

    /// Where schedsim's measured interval starts for this replay ([`clock_start`]).
    pub fn clock_start(&self, warmup: u64) -> u64 {
        clock_start(warmup, self.origin, self.measured_at)
    }

    /// The arrivals of domain `name`'s vCPU `idx`, if replayed.
    pub fn arrivals(&self, name: &str, idx: u32) -> Option<&Arrivals> {
        self.vcpus.get(&(name.to_string(), idx))
    }

    /// The arrivals of domain `name`'s vCPU `idx` on schedsim's clock, whose measured
    /// interval starts at `t0` ([`Replay::clock_start`]): shifted so that the trace's
    /// `measure_start` falls at `t0`; of those that fall before 0, the last becomes the
    /// start (at 0, with its demand) and the others are dropped.
    pub fn aligned(&self, name: &str, idx: u32, t0: u64) -> Option<Arrivals> {
        let arrivals = self.arrivals(name, idx)?;
        let Some(m) = self.measured_at else { return Some(arrivals.clone()) };
        let shift = |t: u64| (t + t0).checked_sub(m);
        let first = arrivals.iter().rposition(|&(t, _)| shift(t).is_none_or(|s| s == 0));
        let mut out: Arrivals = Vec::with_capacity(arrivals.len());
        for (i, &(t, demand)) in arrivals.iter().enumerate().skip(first.unwrap_or(0)) {
            out.push((if Some(i) == first { 0 } else { shift(t)? }, demand));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace in which `lat0.0` runs at 10 µs, wakes at 20 µs and runs again at 21 µs, then
    /// `more` events (JSON objects, one per line).
    fn lat0_trace(more: &str) -> String {
        let head = r#"{"traceEvents":[
{"name":"thread_name","ph":"M","pid":0,"tid":1000,"args":{"name":"lat0.0"}},
{"name":"lat0.0","ph":"X","pid":0,"tid":1000,"ts":10.0,"dur":2.0},
{"name":"wake","ph":"i","s":"t","pid":0,"tid":1000,"ts":20.0},
{"name":"lat0.0","ph":"X","pid":0,"tid":1000,"ts":21.0,"dur":3.0},"#;
        format!("{head}{more}\n]}}")
    }

    /// With the trace's `measure_start` mark, the arrivals move so that the mark falls at
    /// schedsim's `t0`: the hypervisor began measuring 60 µs after the first guest run, the
    /// spec's warm-up is 20 µs, so every arrival moves 40 µs earlier; of those before 0 the
    /// last is the start.
    #[test]
    fn arrivals_align_with_the_measured_interval() {
        let trace = lat0_trace(
            r#"
{"name":"wake","ph":"i","s":"t","pid":0,"tid":1000,"ts":45.0},
{"name":"lat0.0","ph":"X","pid":0,"tid":1000,"ts":46.0,"dur":4.0},
{"name":"wake","ph":"i","s":"t","pid":0,"tid":1000,"ts":80.0},
{"name":"lat0.0","ph":"X","pid":0,"tid":1000,"ts":81.0,"dur":5.0},
{"name":"measure_start","cat":"interval","ph":"i","s":"g","pid":0,"tid":0,"ts":70.0}"#,
        );
        let r = Replay::parse(&trace, "t.json").unwrap();
        assert_eq!(r.measured_at, Some(60_000));
        // On the run's clock: its measured interval starts 70 µs after boot (its system
        // time); after a warm-up that ends later, whole seconds later.
        assert_eq!((r.origin, r.clock_start(50_000)), (10_000, 70_000));
        assert_eq!(r.clock_start(1_500_000_000), 2_000_070_000);
        assert_eq!(clock_start(50_000, 10_000, None), 50_000);
        assert_eq!(
            r.arrivals("lat0", 0).unwrap(),
            &vec![(0, 2_000), (10_000, 3_000), (35_000, 4_000), (70_000, 5_000)]
        );
        assert_eq!(r.aligned("lat0", 0, 20_000).unwrap(), vec![(0, 4_000), (30_000, 5_000)]);
        // A warm-up longer than the run's: everything moves later, nothing is dropped.
        assert_eq!(
            r.aligned("lat0", 0, 100_000).unwrap(),
            vec![(40_000, 2_000), (50_000, 3_000), (75_000, 4_000), (110_000, 5_000)]
        );
    }

    /// `late` marks become stalls per CPU, overlapping ones merged, on the clock of the
    /// first guest run, and shift with the measured interval as the arrivals do.
    #[test]
    fn a_trace_its_quota_cut_before_the_intervals_end_is_refused() {
        let with_full = |full_us: f64| {
            lat0_trace(&format!(
                r#"
{{"name":"wake","ph":"i","s":"t","pid":0,"tid":1000,"ts":45.0}},
{{"name":"lat0.0","ph":"X","pid":0,"tid":1000,"ts":46.0,"dur":4.0}},
{{"name":"full","cat":"quota","ph":"i","s":"t","pid":0,"tid":1000,"ts":{full_us}}},
{{"name":"measure_start","cat":"interval","ph":"i","s":"g","pid":0,"tid":0,"ts":40.0}},
{{"name":"measure_end","cat":"interval","ph":"i","s":"g","pid":0,"tid":0,"ts":100.0}}"#
            ))
        };
        let e = Replay::parse(&with_full(60.0), "t.json").err().unwrap();
        assert!(e.contains("lat0.0's trace was cut") && e.contains("quota"), "{e}");
        // Cut after the interval's end: nothing of the interval is missing.
        assert!(Replay::parse(&with_full(120.0), "t.json").is_ok());
        // Two marks (its quota's end and a full buffer's drop): the first is where it was cut.
        let two = with_full(120.0).replace(
            r#"{"name":"full""#,
            r#"{"name":"full","cat":"quota","ph":"i","s":"t","pid":1,"tid":1000,"ts":60.0},
{"name":"full""#,
        );
        assert!(two.find("\"ts\":60.0").unwrap() < two.find("\"ts\":120").unwrap());
        let e = Replay::parse(&two, "t.json").err().unwrap();
        assert!(e.contains("lat0.0's trace was cut"), "{e}");
    }

    #[test]
    fn late_marks_are_the_cpus_stalls() {
        let trace = lat0_trace(
            r#"
{"name":"late","cat":"host","ph":"i","s":"p","pid":1,"tid":0,"ts":30.0,"args":{"late_us":400.0,"of":"kick"}},
{"name":"late","cat":"host","ph":"i","s":"p","pid":1,"tid":0,"ts":100.0,"args":{"late_us":500.0,"of":"kick"}},
{"name":"late","cat":"host","ph":"i","s":"p","pid":0,"tid":0,"ts":100.0,"args":{"late_us":300.0,"of":"kick"}},
{"name":"late","cat":"host","ph":"i","s":"p","pid":1,"tid":0,"ts":1000.0,"args":{"late_us":256.0,"of":"kick"}},
{"name":"late","cat":"host","ph":"i","s":"p","pid":1,"tid":0,"ts":50.0,"args":{"late_us":20.0,"of":"timer"}},
{"name":"measure_start","cat":"interval","ph":"i","s":"g","pid":0,"tid":0,"ts":60.0}"#,
        );
        let host = Trace::parse(&trace, "t.json").unwrap().host;
        // CPU 1's first two marks overlap: one stall from 20 µs to 590 µs.
        assert_eq!(
            host.stalls,
            vec![(0, 90_000, 300_000), (1, 20_000, 570_000), (1, 990_000, 256_000)]
        );
        // A held timer is not a stall.
        assert_eq!(host.timers, vec![(1, 40_000, 20_000)]);
        assert_eq!(host.measured_at, Some(50_000));
        // The measured interval moves to 20 µs: 30 µs earlier; the part before 0 is dropped.
        assert_eq!(
            host.aligned(20_000),
            (
                vec![(0, 60_000, 300_000), (1, 0, 560_000), (1, 960_000, 256_000)],
                vec![(1, 10_000, 20_000)]
            )
        );
        let bad = trace.replace(r#""args":{"late_us":400.0,"#, r#""args":{"#);
        assert!(Trace::parse(&bad, "t.json").err().unwrap().contains("late mark without"));
        let bad = trace.replace(r#""of":"timer""#, r#""of":"tick""#);
        assert!(Trace::parse(&bad, "t.json").err().unwrap().contains("`timer` or `kick`"));
        // Without the mark nothing moves.
        let unmarked = HostStalls { measured_at: None, ..host.clone() };
        assert_eq!(unmarked.aligned(20_000), (host.stalls.clone(), host.timers.clone()));
    }

    #[test]
    fn bursts_are_the_run_time_between_wake_ups() {
        let trace = r#"{"traceEvents":[
{"name":"thread_name","ph":"M","pid":0,"tid":1000,"args":{"name":"lat0.0"}},
{"name":"thread_name","ph":"M","pid":0,"tid":2000,"args":{"name":"hog0.0"}},
{"name":"dom0.0","ph":"X","pid":0,"tid":0,"ts":1.0,"dur":5.0},
{"name":"hog0.0","ph":"X","pid":0,"tid":2000,"ts":10.0,"dur":100.0},
{"name":"lat0.0","ph":"X","pid":1,"tid":1000,"ts":12.0,"dur":3.0},
{"name":"wake","ph":"i","s":"t","pid":1,"tid":1000,"ts":50.0},
{"name":"lat0.0","ph":"X","pid":1,"tid":1000,"ts":51.0,"dur":2.0},
{"name":"lat0.0","ph":"X","pid":0,"tid":1000,"ts":60.0,"dur":4.5},
{"name":"wake","ph":"i","s":"t","pid":1,"tid":1000,"ts":100.0},
{"name":"wake","ph":"i","s":"t","pid":1,"tid":2000,"ts":100.0}
]}"#;
        let r = Replay::parse(trace, "t.json").unwrap();
        assert_eq!(
            r.arrivals("lat0", 0).unwrap(),
            &vec![(2_000, 3_000), (40_000, 6_500), (90_000, 1)]
        );
        // hog0 woke once but never ran after: its only arrival is its start.
        assert_eq!(r.arrivals("hog0", 0).unwrap(), &vec![(0, 100_000), (90_000, 1)]);
        assert_eq!(r.measured_at, None);
        // Without the measured interval's mark, aligning keeps the arrivals as they are.
        assert_eq!(r.aligned("lat0", 0, 500_000).as_ref(), r.arrivals("lat0", 0));
        assert!(Replay::parse("{}", "x.json").unwrap_err().contains("x.json"));
        assert!(Replay::parse("nope", "x.json").unwrap_err().contains("not trace JSON"));
    }
}
