//! The hypervisor command line: space-separated `key=value` words.
//!
//! Every key is known and every value checked: a typo must stop the boot with a message that
//! names the word and what is allowed, never be silently ignored (the runner turns that stop
//! into exit status 2).

use core::fmt;

use arrayvec::ArrayVec;

/// Most `sched.NAME=VALUE` words kept (and most knobs of one pool).
pub const MAX_SCHED_PARAMS: usize = 8;

/// Most CPU pools the command line declares (`sched::pools::MAX_POOLS` bounds them again).
pub const MAX_BOOT_POOLS: usize = 8;

/// Highest CPU number a pool's `cpus` may name, plus one.
pub const MAX_POOL_CPUS: usize = 256;

/// A CPU pool from `pool.NAME.policy`, `pool.NAME.cpus` and `pool.NAME.KNOB` words, as Xen's
/// `xl cpupool-create` takes them (name, scheduler, cpus), built before Domain0 starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPool<'a> {
    pub name: &'a str,
    /// Its policy (`None`: the `sched` word's).
    pub policy: Option<&'a str>,
    /// Its CPUs, ascending, each once.
    pub cpus: ArrayVec<u16, MAX_POOL_CPUS>,
    /// Its global knobs (checked by the policy).
    pub knobs: ArrayVec<(&'a str, u64), MAX_SCHED_PARAMS>,
}

/// Most verbose log level printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// A deliberate misbehaviour for testing the failure paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Normal run.
    None,
    /// Take an unexpected exception after the descriptor tables are up.
    Fault,
    /// Execute x87 and SSE instructions right after early set-up, then exit with success:
    /// the accelerator probe of docs/DESIGN.md (a broken nested KVM hangs here).
    Probe,
    /// CPU 1 stays in the hypervisor for good once the experiment has started: the
    /// watchdog must notice and end the run with a failure.
    Hang,
    /// Every event-channel send lingers 200 µs between finding its peer and delivering to
    /// it, and then checks that the peer was not freed meanwhile (a domain destroyed on
    /// another CPU is dropped only a grace period later, `arch::rcu`): what `churn` runs
    /// with to show that rule holds.
    SlowSend,
    /// Every timer wake-up is followed by 300 µs with interrupts off on the CPU that fired
    /// it, as when the host deschedules an emulated CPU there: the woken vCPU runs on
    /// another CPU meanwhile (`schedule::run_timers`). What the `latency/slow-timer-wake`
    /// check runs with.
    SlowTimerWake,
    /// Every firing of a vCPU's timer lingers 1 ms with interrupts off between its two
    /// steps (the timer event sent, the timer marked fired), as when the host deschedules
    /// an emulated CPU there; the vCPU meanwhile runs on another CPU and blocks
    /// (`schedule::run_timers`). What the `latency/slow-timer-fire` check runs with.
    SlowTimerFire,
    /// Domain0's wait for a domain's end (`Domctl::Wait`) lingers 3 ms with interrupts
    /// off between registering as a waiter and blocking, as when the host deschedules an
    /// emulated CPU there; the domain ends on another CPU meanwhile
    /// (`pv::control::domctl`). What the `churn/slow-wait` check runs with.
    SlowWait,
    /// Every `SchedOp::Poll` lingers 200 µs with interrupts off once it has marked its vCPU
    /// polling and before it looks at its ports, as when the host deschedules an emulated
    /// CPU there; another vCPU's events meanwhile wake it (`pv::hypercall::sched_op`).
    /// What the `sched/slow-poll` check runs with.
    SlowPoll,
    /// Every event sent to an unmasked port lingers 500 µs with interrupts off between
    /// marking the port pending and telling the vCPU it notifies (its upcall flag, a
    /// wake-up), as when the host deschedules an emulated CPU there; the vCPU meanwhile
    /// sees the port pending and blocks on another CPU (`domain::event_channel`). What the
    /// `sched/slow-deliver` check runs with.
    SlowDeliver,
    /// The serial port takes bytes as a 115200-baud UART would, ~87 µs each, a 16-byte FIFO
    /// at a time (QEMU's takes them at once): what a console write costs on hardware
    /// (`console.rs`). What the `isolation/slow-uart` check runs with.
    SlowUart,
    /// Every look-up in the domain table by a guest holds its read lock 5 ms with interrupts
    /// off,
    /// as when the host deschedules an emulated CPU there; a guest's vCPUs look up back to
    /// back while Domain0 destroys domains (`domain::domain`). What the
    /// `isolation/slow-lookup` check runs with.
    SlowLookup,
    /// An event-channel close made by a domain's vCPU 1 lingers 20 ms with interrupts off
    /// between looking at its end and changing both ends, as when the host deschedules an
    /// emulated CPU there; the two domains close the other end and bind anew meanwhile
    /// (`domain::event_channel`). What the `isolation/slow-close` check runs with.
    SlowClose,
    /// A held snapshot (`Sysctl::TakeSnapshot`, `TakeSnapshotStart`) reads the domains 50 ms
    /// longer, the other CPUs held meanwhile, as 1024 domains' figures take under TCG, and
    /// each other CPU stops for it 50 ms late, as one whose thread the host descheduled.
    /// What the `snapshot/slow-snapshot` check runs with.
    SlowSnapshot,
    /// A vCPU's switch-out lingers 200 µs between reading its run state and changing its
    /// account (`schedule::account_out`), as when the host deschedules an emulated CPU
    /// there, while Domain0 pauses and unpauses it. What the `sched/slow-switch-out` check
    /// runs with.
    SlowSwitchOut,
}

/// Everything the command line can set, with the defaults of a plain boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions<'a> {
    pub loglevel: LogLevel,
    /// The scheduling policy's name, one of the names the caller allows.
    pub sched: &'a str,
    pub selftest: SelfTest,
    /// Record a scheduling trace (`trace=on`), written out at shutdown.
    pub trace: bool,
    /// The policy's global parameters, from `sched.NAME=VALUE` words (checked by the policy).
    pub sched_params: ArrayVec<(&'a str, u64), MAX_SCHED_PARAMS>,
    /// CPU pools, in the order their first word names them; the first holds Domain0. None:
    /// one pool of every CPU under `sched` with `sched_params`.
    pub pools: ArrayVec<BootPool<'a>, MAX_BOOT_POOLS>,
    /// Load the read-only segments of a guest image once and map them into every domain
    /// built from it (`share_images=on`, the default), or give each domain its own copy.
    pub share_images: bool,
}

/// What was wrong with the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// A word without `=`.
    NotKeyValue { word: &'a str },
    /// A key nobody knows.
    UnknownKey { key: &'a str },
    /// A known key with a value outside its allowed set.
    BadValue {
        key: &'a str,
        value: &'a str,
        allowed: &'a [&'a str],
    },
    /// A `sched.NAME` value that is not a non-negative integer, or too many of them.
    BadSchedParam { key: &'a str, value: &'a str },
    /// A `pool.NAME.…` word that is wrong (`why` says how).
    BadPool { key: &'a str, why: &'static str },
}

/// The keys the command line knows, for error messages.
pub const KEYS: &[&str] = &[
    "loglevel",
    "pool.<name>.policy",
    "pool.<name>.cpus",
    "pool.<name>.<param>",
    "sched",
    "sched.<param>",
    "selftest",
    "share_images",
    "trace",
];
const ON_OFF: &[&str] = &["on", "off"];
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const SELF_TESTS: &[&str] = &[
    "none",
    "fault",
    "probe",
    "hang",
    "slow-send",
    "slow-timer-wake",
    "slow-timer-fire",
    "slow-wait",
    "slow-poll",
    "slow-deliver",
    "slow-uart",
    "slow-lookup",
    "slow-close",
    "slow-snapshot",
    "slow-switch-out",
];

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::NotKeyValue { word } => {
                write!(f, "command line word `{word}` is not key=value")
            }
            CmdlineError::UnknownKey { key } => {
                write!(
                    f,
                    "unknown command line key `{key}`; known keys: {}",
                    List(KEYS)
                )
            }
            CmdlineError::BadSchedParam { key, value } => write!(
                f,
                "bad value `{value}` for `{key}`; allowed: an integer (at most {MAX_SCHED_PARAMS} sched.<param> words)"
            ),
            CmdlineError::BadPool { key, why } => write!(f, "command line key `{key}`: {why}"),
            CmdlineError::BadValue {
                key,
                value,
                allowed,
            } => write!(
                f,
                "bad value `{value}` for command line key `{key}`; allowed: {}",
                List(allowed)
            ),
        }
    }
}

/// Formats a list of words as `a, b, c`.
struct List<'a>(&'a [&'a str]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, word) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(word)?;
        }
        Ok(())
    }
}

/// Parses `line`; `policies` are the scheduler names the hypervisor was built with, the
/// first being the default.
pub fn parse<'a>(
    line: &'a str,
    policies: &'a [&'a str],
) -> Result<BootOptions<'a>, CmdlineError<'a>> {
    let mut options = BootOptions {
        loglevel: LogLevel::Info,
        sched: policies.first().copied().unwrap_or(""),
        selftest: SelfTest::None,
        trace: false,
        sched_params: ArrayVec::new(),
        pools: ArrayVec::new(),
        share_images: true,
    };
    for word in line.split_ascii_whitespace() {
        let (key, value) = word
            .split_once('=')
            .ok_or(CmdlineError::NotKeyValue { word })?;
        let bad = |allowed| CmdlineError::BadValue {
            key,
            value,
            allowed,
        };
        match key {
            "loglevel" => {
                options.loglevel = match value {
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => return Err(bad(LOG_LEVELS)),
                }
            }
            "sched" => {
                options.sched = policies
                    .iter()
                    .copied()
                    .find(|p| *p == value)
                    .ok_or(bad(policies))?;
            }
            "trace" => {
                options.trace = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad(ON_OFF)),
                }
            }
            "share_images" => {
                options.share_images = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad(ON_OFF)),
                }
            }
            "selftest" => {
                options.selftest = match value {
                    "none" => SelfTest::None,
                    "fault" => SelfTest::Fault,
                    "probe" => SelfTest::Probe,
                    "hang" => SelfTest::Hang,
                    "slow-send" => SelfTest::SlowSend,
                    "slow-timer-wake" => SelfTest::SlowTimerWake,
                    "slow-timer-fire" => SelfTest::SlowTimerFire,
                    "slow-wait" => SelfTest::SlowWait,
                    "slow-poll" => SelfTest::SlowPoll,
                    "slow-deliver" => SelfTest::SlowDeliver,
                    "slow-uart" => SelfTest::SlowUart,
                    "slow-lookup" => SelfTest::SlowLookup,
                    "slow-close" => SelfTest::SlowClose,
                    "slow-snapshot" => SelfTest::SlowSnapshot,
                    "slow-switch-out" => SelfTest::SlowSwitchOut,
                    _ => return Err(bad(SELF_TESTS)),
                }
            }
            _ if key.starts_with("sched.") && key.len() > "sched.".len() => {
                let param = &key["sched.".len()..];
                let number = value
                    .parse::<u64>()
                    .map_err(|_| CmdlineError::BadSchedParam { key, value })?;
                options
                    .sched_params
                    .try_push((param, number))
                    .map_err(|_| CmdlineError::BadSchedParam { key, value })?;
            }
            _ if key.starts_with("pool.") => pool_word(&mut options.pools, key, value, policies)?,
            _ => return Err(CmdlineError::UnknownKey { key }),
        }
    }
    if let Some(p) = options.pools.iter().find(|p| p.cpus.is_empty()) {
        return Err(CmdlineError::BadPool {
            key: p.name,
            why: "a pool needs a `pool.<name>.cpus` word (e.g. pool.rt.cpus=2-3)",
        });
    }
    Ok(options)
}

/// One `pool.NAME.FIELD=VALUE` word: declares pool NAME on first sight.
fn pool_word<'a>(
    pools: &mut ArrayVec<BootPool<'a>, MAX_BOOT_POOLS>,
    key: &'a str,
    value: &'a str,
    policies: &'a [&'a str],
) -> Result<(), CmdlineError<'a>> {
    let bad = |why| CmdlineError::BadPool { key, why };
    // The field is after the last dot: a pool's name may hold dots, a field never does.
    let (name, field) = key["pool.".len()..]
        .rsplit_once('.')
        .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        .ok_or(bad(
            "the form is pool.<name>.policy, pool.<name>.cpus or pool.<name>.<param>",
        ))?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(bad("a pool name is letters, digits, `_`, `-` and `.`"));
    }
    let i = match pools.iter().position(|p| p.name == name) {
        Some(i) => i,
        None => {
            pools
                .try_push(BootPool {
                    name,
                    policy: None,
                    cpus: ArrayVec::new(),
                    knobs: ArrayVec::new(),
                })
                .map_err(|_| bad("too many pools (at most 8)"))?;
            pools.len() - 1
        }
    };
    let pool = &mut pools[i];
    match field {
        "policy" => {
            pool.policy = Some(policies.iter().copied().find(|p| *p == value).ok_or(
                CmdlineError::BadValue {
                    key,
                    value,
                    allowed: policies,
                },
            )?);
        }
        "cpus" => {
            pool.cpus = cpu_list(value).ok_or(bad(
                "a CPU list is numbers and ranges below 256, ascending, e.g. 0,2-3",
            ))?
        }
        param => {
            let number = value
                .parse::<u64>()
                .map_err(|_| CmdlineError::BadSchedParam { key, value })?;
            pool.knobs
                .try_push((param, number))
                .map_err(|_| CmdlineError::BadSchedParam { key, value })?;
        }
    }
    Ok(())
}

/// `0,2-3` as CPUs 0, 2 and 3: ascending, each once, each below [`MAX_POOL_CPUS`].
fn cpu_list(text: &str) -> Option<ArrayVec<u16, MAX_POOL_CPUS>> {
    let mut cpus = ArrayVec::<u16, MAX_POOL_CPUS>::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?),
            None => {
                let c = part.parse::<u16>().ok()?;
                (c, c)
            }
        };
        if lo > hi || usize::from(hi) >= MAX_POOL_CPUS || cpus.last().is_some_and(|&l| l >= lo) {
            return None;
        }
        for c in lo..=hi {
            cpus.push(c);
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    const POLICIES: &[&str] = &["credit", "rr", "bvt"];

    #[test]
    fn empty_line_gives_defaults() {
        let o = parse("  ", POLICIES).unwrap();
        assert_eq!(o.loglevel, LogLevel::Info);
        assert_eq!(o.sched, "credit");
        assert_eq!(o.selftest, SelfTest::None);
        assert!(o.share_images, "sharing image frames is the default");
    }

    #[test]
    fn every_key_is_read() {
        let o = parse(
            "sched=bvt loglevel=debug  selftest=fault share_images=off",
            POLICIES,
        )
        .unwrap();
        assert_eq!(
            o,
            BootOptions {
                loglevel: LogLevel::Debug,
                sched: "bvt",
                selftest: SelfTest::Fault,
                trace: false,
                sched_params: ArrayVec::new(),
                pools: ArrayVec::new(),
                share_images: false,
            }
        );
        // Every self-test by its name (the list the error message offers).
        let all = [
            SelfTest::None,
            SelfTest::Fault,
            SelfTest::Probe,
            SelfTest::Hang,
            SelfTest::SlowSend,
            SelfTest::SlowTimerWake,
            SelfTest::SlowTimerFire,
            SelfTest::SlowWait,
            SelfTest::SlowPoll,
            SelfTest::SlowDeliver,
            SelfTest::SlowUart,
            SelfTest::SlowLookup,
            SelfTest::SlowClose,
            SelfTest::SlowSnapshot,
            SelfTest::SlowSwitchOut,
        ];
        assert_eq!(all.len(), SELF_TESTS.len());
        for (name, want) in SELF_TESTS.iter().zip(all) {
            let word = std::format!("selftest={name}");
            assert_eq!(parse(&word, POLICIES).unwrap().selftest, want, "{word}");
        }
    }

    #[test]
    fn trace_is_on_or_off() {
        assert!(parse("trace=on", POLICIES).unwrap().trace);
        assert!(!parse("trace=on trace=off", POLICIES).unwrap().trace);
        let msg = parse("trace=yes", POLICIES).unwrap_err().to_string();
        assert!(msg.contains("on, off"), "{msg}");
    }

    #[test]
    fn share_images_is_on_or_off() {
        assert!(parse("share_images=on", POLICIES).unwrap().share_images);
        let msg = parse("share_images=no", POLICIES).unwrap_err().to_string();
        assert!(
            msg.contains("share_images") && msg.contains("on, off"),
            "{msg}"
        );
    }

    #[test]
    fn later_words_win() {
        assert_eq!(parse("sched=rr sched=bvt", POLICIES).unwrap().sched, "bvt");
    }

    #[test]
    fn unknown_key_names_it_and_the_known_ones() {
        let err = parse("loglevel=info bogus=1", POLICIES).unwrap_err();
        assert_eq!(err, CmdlineError::UnknownKey { key: "bogus" });
        let msg = err.to_string();
        assert!(
            msg.contains("`bogus`")
                && msg.contains("loglevel, pool.<name>.policy")
                && msg.contains("sched.<param>, selftest, share_images, trace"),
            "{msg}"
        );
    }

    #[test]
    fn bad_value_lists_the_allowed_ones() {
        let msg = parse("sched=fifo", POLICIES).unwrap_err().to_string();
        assert!(
            msg.contains("`fifo`") && msg.contains("credit, rr, bvt"),
            "{msg}"
        );
        let msg = parse("loglevel=loud", POLICIES).unwrap_err().to_string();
        assert!(msg.contains("error, warn, info, debug, trace"), "{msg}");
    }

    #[test]
    fn sched_params_are_collected_as_integers() {
        let o = parse(
            "sched=credit sched.tslice_ms=5 sched.ratelimit_us=0",
            POLICIES,
        )
        .unwrap();
        assert_eq!(
            o.sched_params.as_slice(),
            [("tslice_ms", 5), ("ratelimit_us", 0)]
        );
        let msg = parse("sched.tslice_ms=fast", POLICIES)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`fast`") && msg.contains("sched.tslice_ms"),
            "{msg}"
        );
        assert_eq!(
            parse("sched.=1", POLICIES).unwrap_err(),
            CmdlineError::UnknownKey { key: "sched." }
        );
    }

    #[test]
    fn word_without_equals_is_refused() {
        assert_eq!(
            parse("quiet", POLICIES).unwrap_err(),
            CmdlineError::NotKeyValue { word: "quiet" }
        );
    }

    #[test]
    fn pools_are_declared_by_their_words_in_order() {
        let o = parse(
            "sched=credit pool.main.cpus=0-1 pool.rt.policy=rr pool.rt.cpus=2,3 pool.main.tslice_ms=5",
            POLICIES,
        )
        .unwrap();
        assert_eq!(o.pools.len(), 2);
        assert_eq!(o.pools[0].name, "main");
        assert_eq!(o.pools[0].policy, None);
        assert_eq!(o.pools[0].cpus.as_slice(), [0, 1]);
        assert_eq!(o.pools[0].knobs.as_slice(), [("tslice_ms", 5)]);
        assert_eq!(o.pools[1].policy, Some("rr"));
        assert_eq!(o.pools[1].cpus.as_slice(), [2, 3]);
        assert!(parse("sched=rr", POLICIES).unwrap().pools.is_empty());
    }

    #[test]
    fn bad_pool_words_are_named() {
        for (line, says) in [
            ("pool.rt.policy=rr", "needs a `pool.<name>.cpus`"),
            ("pool.rt.cpus=3-2", "ascending"),
            ("pool.rt.cpus=0,0", "ascending"),
            ("pool.rt.cpus=x", "a CPU list"),
            ("pool.rt.cpus=300", "below 256"),
            ("pool..cpus=1", "the form is"),
            ("pool.rt=1", "the form is"),
            ("pool.r:t.cpus=1", "a pool name is"),
            ("pool.a.b.cpus=1 pool.a.b.policy=fifo", "credit, rr, bvt"),
            ("pool.rt.cpus=1 pool.rt.policy=fifo", "credit, rr, bvt"),
            ("pool.rt.cpus=1 pool.rt.tslice_ms=x", "pool.rt.tslice_ms"),
        ] {
            let msg = parse(line, POLICIES).unwrap_err().to_string();
            assert!(msg.contains(says), "{line}: {msg}");
        }
    }
}
