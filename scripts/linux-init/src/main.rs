//! `/init` of the Linux engine (`scripts/run --engine linux`): PID 1 of a Linux guest booted
//! from an initramfs that holds this program, the plan (`/plan`, `abi::tool::plan`) and the
//! workloads' Linux builds (`/bin/NAME`). It does what Domain0 does under Domino:
//!
//! 1. mounts /proc, /sys, /dev and cgroup2, prints a `boot` record;
//! 2. makes a cgroup per domain under `/sys/fs/cgroup/domains` (controller `cpu`) with
//!    `cpu.weight` and `cpu.max` from the plan (`linux_init::cpu_weights`, `cpu_max`), a
//!    domain file in the tmpfs at `/run/domains` (counters, and the event ports and grants
//!    of `blk` and `net`: `abi::tool::linux`) and, for `ping` pairs, two pipes;
//!    starts one process per vCPU and moves it into its cgroup while `domains` is frozen,
//!    then thaws it: they start together (each ran for a moment before it was moved);
//! 3. waits `warmup_ms`, takes snapshot 0, waits `duration_ms`, takes snapshot 1. A snapshot
//!    freezes `domains` (no domain runs while its figures are read), reads every domain's
//!    `cpu.stat` usage, each process's `/proc/PID/schedstat` (wait time, time slices) and
//!    `/proc/PID/sched` (migrations), the work and wake-up counts from the counters file,
//!    and thaws. The interval runs from the thaw after snapshot 0 to the freeze of snapshot 1;
//!    the wake-up figures start afresh at snapshot 0 (`abi::tool::linux::EPOCH_NS`);
//! 4. ends every domain (`cgroup.kill`), prints the `run` and `domain` records, and exits the
//!    machine through QEMU's `isa-debug-exit` with 0 (every domain ended as expected) or 1.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use abi::tool::console::{DEBUG_EXIT_PORT, ExitCode, RECORD_PREFIX};
use abi::tool::linux as contract;
use abi::tool::plan::{self, Expect};
use abi::tool::results::{self, Apic, Boot, Engine, Outcome, Record};

const CGROUP: &str = "/sys/fs/cgroup";
const DOMAINS: &str = "/sys/fs/cgroup/domains";

fn main() {
    let code = match run() {
        Ok(true) => ExitCode::Success,
        Ok(false) => ExitCode::Failure,
        Err(e) => {
            println!("linux-init: error: {e}");
            ExitCode::Failure
        }
    };
    exit_machine(code)
}

/// One planned domain, running.
struct Domain {
    id: u32,
    name: String,
    group: String,
    workload: String,
    vcpus: u32,
    weight: u64,
    cap: u64,
    expect: Expect,
    cgroup: String,
    /// The counters file, mapped shared (FILE_BYTES).
    counters: *mut u64,
    procs: Vec<Child>,
    /// How the domain ended, if one of its processes has: as under Domino, where the first
    /// vCPU to shut down ends the whole domain, `/init` then ends the others.
    ended: Option<Outcome>,
}

/// One domain's figures at a snapshot.
#[derive(Default, Clone, Copy)]
struct Figures {
    cpu_ns: u64,
    wait_ns: u64,
    slices: u64,
    migrations: u64,
    work: u64,
    wakeups: u64,
}

impl Domain {
    /// Word `i` of the counters file.
    fn word(&self, i: usize) -> u64 {
        assert!(i < contract::FILE_BYTES / 8);
        // SAFETY: `counters` maps FILE_BYTES of the domain file for init's whole life, aligned; the
        // workloads write these words with atomic or aligned 8-byte stores.
        unsafe { std::ptr::read_volatile(self.counters.add(i)) }
    }

    /// Starts the wake-up page afresh at CLOCK_MONOTONIC `epoch_ns` (the domain is frozen).
    fn reset_wakeups(&self, epoch_ns: u64) {
        for i in 0..contract::HIST + contract::HIST_BUCKETS {
            let value = if i == contract::EPOCH_NS { epoch_ns } else { 0 };
            // SAFETY: as in `word`; the domain's processes are frozen, so nothing races.
            unsafe {
                std::ptr::write_volatile(self.counters.add(contract::STATS_OFFSET / 8 + i), value)
            };
        }
    }

    fn figures(&self) -> Figures {
        let mut f = Figures {
            cpu_ns: fs::read_to_string(format!("{}/cpu.stat", self.cgroup))
                .ok()
                .and_then(|s| linux_init::usage_usec(&s))
                .unwrap_or(0)
                * 1000,
            ..Figures::default()
        };
        for p in &self.procs {
            let pid = p.id();
            if let Some([_, wait, slices]) = fs::read_to_string(format!("/proc/{pid}/schedstat"))
                .ok()
                .and_then(|s| linux_init::schedstat(&s))
            {
                f.wait_ns += wait;
                f.slices += slices;
            }
            f.migrations += fs::read_to_string(format!("/proc/{pid}/sched"))
                .ok()
                .and_then(|s| linux_init::nr_migrations(&s))
                .unwrap_or(0);
        }
        f.work = (0..self.vcpus as usize).map(|v| self.word(v)).sum();
        f.wakeups = self.word(contract::STATS_OFFSET / 8 + contract::WAKEUPS);
        f
    }

    fn stats(&self) -> Vec<u64> {
        (0..contract::HIST + contract::HIST_BUCKETS)
            .map(|i| self.word(contract::STATS_OFFSET / 8 + i))
            .collect()
    }
}

fn emit(r: &Record) {
    let json = serde_json::to_string(r).expect("records serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{RECORD_PREFIX}{json}");
    let _ = out.flush();
}

fn write(path: &str, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing `{value}` to {path}: {e}"))
}

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (s, t, f) = (c(source), c(target), c(fstype));
    // SAFETY: three live C strings and no data; mount only reads them.
    unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
}

/// CLOCK_MONOTONIC, the workloads' clock.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// The hypervisor leaf of CPUID, as the hypervisor's boot record names it.
fn accel() -> String {
    // SAFETY: CPUID is available on every x86_64 CPU; leaf 0x40000000 is the hypervisor's.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid(0x4000_0000) };
    let mut id = Vec::new();
    for w in [r.ebx, r.ecx, r.edx] {
        id.extend_from_slice(&w.to_le_bytes());
    }
    let id = String::from_utf8_lossy(&id).trim_matches('\0').to_string();
    match id.as_str() {
        "TCGTCGTCGTCG" => "tcg".into(),
        s if s.starts_with("KVMKVMKVM") => "kvm".into(),
        "" => "none".into(),
        other => other.to_lowercase(),
    }
}

fn boot_record() -> Boot {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let uptime_s: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0.0);
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Boot {
        cpus_online: cpus,
        cpus_found: cpus,
        apic: if cpuinfo.split_whitespace().any(|f| f == "x2apic") {
            Apic::X2apic
        } else {
            Apic::Xapic
        },
        boot_ns: (uptime_s * 1e9) as u64,
        accel: accel(),
        protocol: "linux".into(),
        memory_bytes: mem_kib * 1024,
        topology: None,
        sockets: None,
        cores: None,
        threads: None,
        places: None,
        heap_bytes: None,
        heap_model_bytes: None,
    }
}

/// Freezes or thaws every domain; a freeze waits until the kernel reports them frozen.
fn freeze(on: bool) -> Result<(), String> {
    write(
        &format!("{DOMAINS}/cgroup.freeze"),
        if on { "1" } else { "0" },
    )?;
    if on {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(format!("{DOMAINS}/cgroup.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == "frozen 1")
        {
            if Instant::now() > deadline {
                return Err("the domains did not freeze within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

fn idle_ns() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| linux_init::idle_ns(&s, hz))
        .unwrap_or(0)
}

/// Domain `id`'s file in the tmpfs at `DOMAIN_DIR` (`abi::tool::linux`): its counters and
/// wake-up pages, its table and grant pages; the other domains open it by name (split
/// devices). Returns the descriptor and init's mapping of the first FILE_BYTES.
fn domain_file(id: u32) -> Result<(OwnedFd, *mut u64), String> {
    let path = format!("{}/{id}", contract::DOMAIN_DIR);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    file.set_len(contract::DOMAIN_FILE_BYTES as u64)
        .map_err(|e| format!("{path}: setting its length: {e}"))?;
    let fd = OwnedFd::from(file);
    // SAFETY: a fresh shared mapping of the file's head, chosen by the kernel; it stays mapped
    // for init's life (never unmapped), so the pointer stays valid.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            contract::FILE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap {path}: {}", std::io::Error::last_os_error()));
    }
    Ok((fd, p as *mut u64))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh descriptors nobody else owns.
    Ok(unsafe {
        (
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    })
}

/// Reaps the domain's processes that have ended; the first ending is the domain's, and the
/// domain's other processes are ended with it (`cgroup.kill`).
fn reap(d: &mut Domain) {
    for p in &mut d.procs {
        if let Ok(Some(status)) = p.try_wait()
            && d.ended.is_none()
        {
            d.ended = Some(linux_init::outcome(status.code(), status.signal()));
            let _ = write(&format!("{}/cgroup.kill", d.cgroup), "1");
        }
    }
}

/// Sleeps until `deadline`, reaping the domains' processes as they end (SIGCHLD, blocked
/// since `run` began, wakes it).
fn wait_until(deadline: Instant, domains: &mut [Domain]) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: a live signal set and timespec; no siginfo is asked for.
        let woke = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout)
        };
        if woke == libc::SIGCHLD {
            for d in domains.iter_mut() {
                reap(d);
            }
        }
    }
}

fn run() -> Result<bool, String> {
    // SIGCHLD is taken with sigtimedwait (`wait_until`); the children get an empty signal
    // mask from `Command`.
    // SAFETY: a live signal set; blocking SIGCHLD in this single-threaded process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("cgroup2", CGROUP, "cgroup2");
    mount("tmpfs", contract::DOMAIN_DIR, "tmpfs");
    // Hold descriptors 3..=5, so that no file of init's lands there and a child's dup2 onto
    // them always makes a fresh descriptor without close-on-exec.
    let _held: Vec<fs::File> = (0..3)
        .filter_map(|_| fs::File::open("/proc/self/stat").ok())
        .collect();

    let start = Instant::now();
    emit(&Record::Boot(boot_record()));
    // The clock every figure here is read with (README "Linux as a baseline": clock).
    let clocksource =
        fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    println!("linux-init: clocksource {}", clocksource.trim());

    let bytes = fs::read("/plan").map_err(|e| format!("/plan: {e}"))?;
    let plan = plan::decode(&bytes).map_err(|e| format!("/plan: {e}"))?;
    let planned: Vec<plan::PlannedDomain<'_>> = plan
        .domains()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("/plan: a domain: {e}"))?;
    for d in &planned {
        if !linux_init::LINUX_WORKLOADS.contains(&d.workload) {
            return Err(format!(
                "domain {}: workload `{}` has no Linux build",
                d.name, d.workload
            ));
        }
    }

    write(&format!("{CGROUP}/cgroup.subtree_control"), "+cpu")?;
    fs::create_dir_all(DOMAINS).map_err(|e| format!("{DOMAINS}: {e}"))?;
    write(&format!("{DOMAINS}/cgroup.subtree_control"), "+cpu")?;
    freeze(true)?;

    let weights = linux_init::cpu_weights(
        &planned
            .iter()
            .map(|d| u64::from(d.weight))
            .collect::<Vec<_>>(),
    );
    let roles: Vec<linux_init::PingRole> = planned
        .iter()
        .enumerate()
        .filter(|(_, d)| d.workload == "ping")
        .map(|(index, d)| {
            let arg = |k: &str, default| {
                plan.args_of(d)
                    .find(|(n, _)| *n == k)
                    .map_or(default, |(_, v)| v)
            };
            linux_init::PingRole {
                index,
                role: arg("role", 0),
                pairs: arg("pairs", 1),
            }
        })
        .collect();
    // (send, receive) ends per plan index.
    let mut pipes: Vec<Option<(OwnedFd, OwnedFd)>> = planned.iter().map(|_| None).collect();
    for (pinger, ponger) in linux_init::ping_pairs(&roles) {
        let (to_ponger_r, to_ponger_w) = pipe()?;
        let (to_pinger_r, to_pinger_w) = pipe()?;
        pipes[pinger] = Some((to_ponger_w, to_pinger_r));
        pipes[ponger] = Some((to_pinger_w, to_ponger_r));
    }

    let mut domains = Vec::new();
    let mut files = Vec::new();
    for (i, d) in planned.iter().enumerate() {
        let id = i as u32 + 1;
        let cgroup = format!("{DOMAINS}/{}", d.name);
        fs::create_dir_all(&cgroup).map_err(|e| format!("{cgroup}: {e}"))?;
        write(&format!("{cgroup}/cpu.weight"), &weights[i].to_string())?;
        write(
            &format!("{cgroup}/cpu.max"),
            &linux_init::cpu_max(u64::from(d.cap)),
        )?;
        let (fd, counters) = domain_file(id)?;
        let procs_file = fs::OpenOptions::new()
            .write(true)
            .open(format!("{cgroup}/cgroup.procs"))
            .map_err(|e| format!("{cgroup}/cgroup.procs: {e}"))?;
        let args: Vec<(&str, u64)> = plan.args_of(d).collect();
        let mut procs = Vec::new();
        for vcpu in 0..d.vcpus {
            let mut cmd = Command::new(format!("/bin/{}", d.workload));
            cmd.args(linux_init::argv(id, vcpu, d.vcpus, d.name, &args));
            let counters_fd = fd.as_raw_fd();
            let ends = pipes[i]
                .as_ref()
                .map(|(s, r)| (s.as_raw_fd(), r.as_raw_fd()));
            // SAFETY: between fork and exec the child only calls dup2, which is
            // async-signal-safe, on descriptors the parent keeps open.
            unsafe {
                cmd.pre_exec(move || {
                    let dup = |from: i32, to: i32| {
                        if libc::dup2(from, to) < 0 {
                            Err(std::io::Error::last_os_error())
                        } else {
                            Ok(())
                        }
                    };
                    dup(counters_fd, contract::COUNTERS_FD)?;
                    if let Some((send, recv)) = ends {
                        dup(send, contract::SEND_FD)?;
                        dup(recv, contract::RECV_FD)?;
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("domain {}: starting /bin/{}: {e}", d.name, d.workload))?;
            // Into the domain's cgroup, frozen: spawn returns once the program is exec'd (a
            // child frozen before its exec would block spawn), so each process has run for
            // a moment in init's cgroup; the warm-up absorbs that.
            (&procs_file)
                .write_all(child.id().to_string().as_bytes())
                .map_err(|e| format!("{cgroup}/cgroup.procs: {e}"))?;
            procs.push(child);
        }
        files.push((fd, procs_file));
        domains.push(Domain {
            id,
            name: d.name.to_string(),
            group: d.group.to_string(),
            workload: d.workload.to_string(),
            vcpus: d.vcpus,
            weight: u64::from(d.weight),
            cap: u64::from(d.cap),
            expect: d.expect,
            cgroup,
            counters,
            procs,
            ended: None,
        });
    }
    drop(pipes); // the children hold their ends
    let created = now_ns(start);
    freeze(false)?;
    println!(
        "linux-init: {} domains ({} processes) started in {:.1} ms",
        domains.len(),
        domains.iter().map(|d| d.procs.len()).sum::<usize>(),
        (now_ns(start) - created) as f64 / 1e6
    );

    wait_until(
        Instant::now() + Duration::from_millis(plan.warmup_ms),
        &mut domains,
    );
    freeze(true)?;
    let before: Vec<Figures> = domains.iter().map(Domain::figures).collect();
    let epoch = monotonic_ns();
    for d in &domains {
        d.reset_wakeups(epoch);
    }
    freeze(false)?;
    let t0 = Instant::now();
    let idle0 = idle_ns();
    wait_until(t0 + Duration::from_millis(plan.duration_ms), &mut domains);
    write(&format!("{DOMAINS}/cgroup.freeze"), "1")?;
    let duration_ns = t0.elapsed().as_nanos() as u64;
    let idle1 = idle_ns();
    freeze(true)?;
    let after: Vec<Figures> = domains.iter().map(Domain::figures).collect();

    let mut ok = true;
    let mut records = Vec::new();
    for ((d, b), a) in domains.iter_mut().zip(&before).zip(&after) {
        reap(d);
        let exit = d.ended.clone().unwrap_or(Outcome::Ok);
        let expected = match d.expect {
            Expect::Ok => exit.is_ok(),
            Expect::Killed => !exit.is_ok(),
        };
        if !expected {
            println!("linux-init: FAIL: domain {} ended {exit}", d.name);
            ok = false;
        }
        let stats = d.stats();
        let (p50, p99, max) = linux_init::wake_latencies(&stats);
        records.push(Record::Domain(results::Domain {
            id: d.id,
            name: d.name.clone(),
            group: d.group.clone(),
            workload: d.workload.clone(),
            vcpus: d.vcpus,
            weight: d.weight,
            cap: d.cap,
            cpu_ns: a.cpu_ns.saturating_sub(b.cpu_ns),
            wait_ns: a.wait_ns.saturating_sub(b.wait_ns),
            work: a.work.wrapping_sub(b.work),
            wakeups: a.wakeups, // the page started afresh at snapshot 0
            wake_lat_p50_ns: p50,
            wake_lat_p99_ns: p99,
            wake_lat_max_ns: max,
            switches: a.slices.saturating_sub(b.slices),
            migrations: a.migrations.saturating_sub(b.migrations),
            exit,
            pool: None,
            wake_lat_hist: Some(linux_init::wake_lat_hist(&stats)),
            timer_deadline_ns: None,
        }));
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // No figure of the hypervisor's (its start, Domain0's time, the lateness histograms).
    emit(&Record::Run(results::Run {
        sockets: Some(plan.shape[0]),
        cores: Some(plan.shape[1]),
        threads: Some(plan.shape[2]),
        ..results::Run::new(
            plan.name,
            Engine::Linux,
            linux_init::fair_policy(release.trim()),
            plan.cpus,
            domains.len() as u64,
            duration_ns,
            idle1.saturating_sub(idle0),
        )
    }));
    for r in &records {
        emit(r);
    }

    // End every domain and reap its processes.
    let _ = write(&format!("{DOMAINS}/cgroup.kill"), "1");
    for d in &mut domains {
        for p in &mut d.procs {
            let _ = p.wait();
        }
    }
    drop(files);
    println!(
        "linux-init: {} ({}, kernel {})",
        if ok { "PASS" } else { "FAIL" },
        linux_init::fair_policy(release.trim()),
        release.trim()
    );
    Ok(ok)
}

/// Ends the machine with `code`: QEMU's `isa-debug-exit` makes QEMU exit with
/// `(code << 1) | 1`, as the hypervisor does; without the port, a power-off.
fn exit_machine(code: ExitCode) -> ! {
    let _ = std::io::stdout().flush();
    let port = DEBUG_EXIT_PORT;
    // SAFETY: init is root; ioperm only grants this process access to the exit port.
    if unsafe { libc::ioperm(u64::from(port), 4, 1) } == 0 {
        // SAFETY: the port is QEMU's exit device (ioperm granted it); writing ends the VM.
        unsafe {
            std::arch::asm!("out dx, eax", in("dx") port, in("eax") code as u32, options(nomem, nostack));
        }
    }
    // SAFETY: sync and power-off have no memory effects on this process.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(1)
}
