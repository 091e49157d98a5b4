//! `--trace FILE`: the hypervisor's scheduling events (`@trace` lines, `abi::tool::console`) as
//! Chrome/Perfetto trace-event JSON (docs/DESIGN.md "Results"), the same shape `schedsim --trace`
//! writes: `pid` = physical CPU, `tid` = domain × 1000 + vCPU, an `"X"` event per run
//! interval (with why it ended in `args.end`), an instant `"i"` per wake-up, and two global
//! instants (`"s":"g"`, category `interval`) `measure_start` and `measure_end` marking the
//! measured interval of the run record (`schedsim --replay` aligns its interval with them).
//! Each interrupt a CPU took 256 µs or more late is a CPU-scoped instant (`"s":"p"`,
//! category `host`) named `late`, at the time it was due, with how late in `args.late_us`
//! and which in `args.of` (`timer`: the CPU's timer, `kick`: another CPU's IPI), which
//! `schedsim` plays out at these moments. A vCPU whose trace quota ran out has an instant
//! `full` (category `quota`) where it did: none of its events after it are in the trace.
//! Timestamps are in µs of system time, the clock of the results' `start_ns`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use abi::tool::console::{LateOf, TraceEvent};
use abi::tool::results::{Record, Records};

/// One parsed trace line: a vCPU's event (`CPU TS_NS EVENT DOMAIN VCPU`), or a `late`
/// mark (`CPU TS_NS late NS OF`: `late`, `domain` and `vcpu` unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Event {
    cpu: u32,
    ts_ns: u64,
    event: TraceEvent,
    domain: u32,
    vcpu: u32,
    late: Option<(u64, LateOf)>,
}

fn parse(line: &str) -> Option<Event> {
    let mut f = line.split_ascii_whitespace();
    let (cpu, ts_ns) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    let event = TraceEvent::from_name(f.next()?)?;
    let mut e = Event {
        cpu,
        ts_ns,
        event,
        domain: 0,
        vcpu: 0,
        late: None,
    };
    if event == TraceEvent::Late {
        e.late = Some((f.next()?.parse().ok()?, LateOf::from_name(f.next()?)?));
    } else {
        e.domain = f.next()?.parse().ok()?;
        e.vcpu = f.next()?.parse().ok()?;
    }
    f.next().is_none().then_some(e)
}

fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Builds the trace JSON from the `@trace` lines and the results records (for names).
/// Lines that do not parse are counted in the returned number, not fatal.
pub fn to_chrome(lines: &[String], records: &[Record]) -> (String, usize) {
    let mut bad = 0;
    let mut per_cpu: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    for line in lines {
        match parse(line) {
            Some(e) => per_cpu.entry(e.cpu).or_default().push(e),
            None => bad += 1,
        }
    }
    let names: BTreeMap<u32, &str> = records.domains().map(|d| (d.id, d.name.as_str())).collect();
    let name = |domain: u32| {
        names
            .get(&domain)
            .copied()
            .unwrap_or(if domain == 0 { "dom0" } else { "?" })
    };
    let mut out = String::from("{\"traceEvents\":[\n");
    let mut threads = BTreeMap::new();
    for (cpu, events) in &mut per_cpu {
        events.sort_by_key(|e| e.ts_ns);
        // The vCPU running on this CPU and since when.
        let mut running: Option<Event> = None;
        for e in events.iter() {
            if let Some((late, of)) = e.late {
                let _ = writeln!(
                    out,
                    "{{\"name\":\"late\",\"cat\":\"host\",\"ph\":\"i\",\"s\":\"p\",\"pid\":{cpu},\"tid\":0,\"ts\":{},\"args\":{{\"late_us\":{},\"of\":\"{}\"}}}},",
                    us(e.ts_ns),
                    us(late),
                    of.name()
                );
                continue;
            }
            let tid = u64::from(e.domain) * 1000 + u64::from(e.vcpu);
            threads.insert((*cpu, tid), format!("{}.{}", name(e.domain), e.vcpu));
            match e.event {
                TraceEvent::Run => running = Some(*e),
                TraceEvent::Wake
                | TraceEvent::Boost
                | TraceEvent::Under
                | TraceEvent::Over
                | TraceEvent::Full => {
                    let _ = writeln!(
                        out,
                        "{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"i\",\"s\":\"t\",\"pid\":{cpu},\"tid\":{tid},\"ts\":{}}},",
                        e.event.name(),
                        match e.event {
                            TraceEvent::Wake => "wake",
                            TraceEvent::Full => "quota",
                            _ => "priority",
                        },
                        us(e.ts_ns)
                    );
                }
                end => {
                    if let Some(start) = running
                        .take()
                        .filter(|s| s.domain == e.domain && s.vcpu == e.vcpu)
                    {
                        let _ = writeln!(
                            out,
                            "{{\"name\":\"{}.{}\",\"ph\":\"X\",\"pid\":{cpu},\"tid\":{tid},\"ts\":{},\"dur\":{},\"args\":{{\"end\":\"{}\"}}}},",
                            name(e.domain),
                            e.vcpu,
                            us(start.ts_ns),
                            us(e.ts_ns - start.ts_ns),
                            end.name()
                        );
                    }
                }
            }
        }
    }
    for ((cpu, tid), thread) in &threads {
        let _ = writeln!(
            out,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{cpu},\"tid\":{tid},\"args\":{{\"name\":\"{thread}\"}}}},"
        );
    }
    for cpu in per_cpu.keys() {
        let _ = writeln!(
            out,
            "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{cpu},\"args\":{{\"name\":\"CPU {cpu}\"}}}},"
        );
    }
    // The measured interval, as global instants on CPU 0's row.
    if let Some((start, duration)) = records
        .run()
        .and_then(|r| r.start_ns.map(|s| (s, r.duration_ns)))
    {
        for (what, ts) in [("measure_start", start), ("measure_end", start + duration)] {
            let _ = writeln!(
                out,
                "{{\"name\":\"{what}\",\"cat\":\"interval\",\"ph\":\"i\",\"s\":\"g\",\"pid\":0,\"tid\":0,\"ts\":{}}},",
                us(ts)
            );
        }
    }
    out += "{\"name\":\"end\",\"ph\":\"M\",\"pid\":0,\"args\":{}}\n]}\n";
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn domain(id: u32, name: &str) -> Record {
        let line = format!(
            r#"{{"kind":"domain","id":{id},"name":"{name}","group":"g","workload":"cpu","vcpus":1,"weight":256,"cap":0,"cpu_ns":0,"wait_ns":0,"work":0,"wakeups":0,"wake_lat_p50_ns":0,"wake_lat_p99_ns":0,"wake_lat_max_ns":0,"switches":0,"migrations":0,"exit":"ok"}}"#
        );
        runner::parse_record(&line).unwrap()
    }

    #[test]
    fn a_full_quota_is_an_instant_of_its_vcpu() {
        let lines: Vec<String> = ["0 1000 run 1 0", "0 2000 full 1 0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (text, bad) = to_chrome(&lines, &[domain(1, "lat0")]);
        assert_eq!(bad, 0);
        let v: Value = serde_json::from_str(&text).unwrap();
        let full: Vec<&Value> = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "full")
            .collect();
        assert_eq!(full.len(), 1);
        assert_eq!(
            (
                full[0]["ph"].as_str(),
                full[0]["cat"].as_str(),
                full[0]["tid"].as_u64()
            ),
            (Some("i"), Some("quota"), Some(1000))
        );
    }

    #[test]
    fn runs_become_intervals_and_wakes_instants() {
        let lines: Vec<String> = [
            "0 1000 wake 1 0",
            "0 2000 run 1 0",
            "1 2500 run 2 0",
            "0 3000 over 1 0",
            "0 5000 block 1 0",
            "1 9000 preempt 2 0",
            "garbage",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let records = [domain(1, "lat0"), domain(2, "w0")];
        let (text, bad) = to_chrome(&lines, &records);
        assert_eq!(bad, 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        let x: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 2);
        assert_eq!(
            (
                x[0]["name"].as_str(),
                x[0]["tid"].as_u64(),
                x[0]["ts"].as_f64(),
                x[0]["dur"].as_f64()
            ),
            (Some("lat0.0"), Some(1000), Some(2.0), Some(3.0))
        );
        assert_eq!(x[0]["args"]["end"], "block");
        assert_eq!(
            (x[1]["pid"].as_u64(), x[1]["dur"].as_f64()),
            (Some(1), Some(6.5))
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e["ph"] == "i" && e["name"] == "wake")
                .count(),
            1
        );
        assert_eq!(events.iter().filter(|e| e["cat"] == "priority").count(), 1);
        // A priority change in the middle of a run does not end it.
        assert_eq!(x[0]["dur"].as_f64(), Some(3.0));
        // No run record: no measured interval to mark.
        assert_eq!(events.iter().filter(|e| e["cat"] == "interval").count(), 0);
    }

    #[test]
    fn late_marks_become_cpu_instants() {
        let lines: Vec<String> = [
            "1 2000 run 1 0",
            "1 3000 late 2500000 timer",
            "1 9000000 block 1 0",
            "1 4000 late 7 8",
            "0 5000 late 300000 kick",
            "0 6000 late 300000 tick",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (text, bad) = to_chrome(&lines, &[domain(1, "lat0")]);
        // A late mark with a domain and vCPU is not one, nor one of another interrupt.
        assert_eq!(bad, 2);
        let v: Value = serde_json::from_str(&text).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        let late: Vec<&Value> = events.iter().filter(|e| e["name"] == "late").collect();
        assert_eq!(late.len(), 2);
        assert_eq!(
            (late[0]["args"]["of"].as_str(), late[0]["pid"].as_u64()),
            (Some("kick"), Some(0))
        );
        let late = &late[1..];
        assert_eq!(late[0]["args"]["of"], "timer");
        assert_eq!(
            (
                late[0]["cat"].as_str(),
                late[0]["s"].as_str(),
                late[0]["pid"].as_u64()
            ),
            (Some("host"), Some("p"), Some(1))
        );
        assert_eq!(
            (late[0]["ts"].as_f64(), late[0]["args"]["late_us"].as_f64()),
            (Some(3.0), Some(2500.0))
        );
        // The run it fell in is whole, and no thread is named for the mark.
        let x: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!((x.len(), x[0]["dur"].as_f64()), (1, Some(8998.0)));
        assert_eq!(
            events.iter().filter(|e| e["name"] == "thread_name").count(),
            1
        );
    }

    #[test]
    fn the_measured_interval_is_marked() {
        let run = runner::parse_record(
            r#"{"kind":"run","name":"t","engine":"domino","policy":"bvt","cpus":1,"domains":1,"start_ns":1500,"duration_ns":4000,"idle_ns":0}"#,
        )
        .unwrap();
        let lines = vec!["0 1000 run 1 0".to_string(), "0 9000 block 1 0".to_string()];
        let (text, _) = to_chrome(&lines, &[domain(1, "lat0"), run]);
        let v: Value = serde_json::from_str(&text).unwrap();
        let marks: Vec<(&str, f64)> = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["cat"] == "interval" && e["ph"] == "i" && e["s"] == "g")
            .map(|e| (e["name"].as_str().unwrap(), e["ts"].as_f64().unwrap()))
            .collect();
        assert_eq!(marks, vec![("measure_start", 1.5), ("measure_end", 5.5)]);
    }
}
