//! Domino, the hypervisor image.
//!
//! The boot code in `arch` enters [`kernel_entry`] on the bootstrap CPU in long mode, on the
//! boot stack, with interrupts off. From there: console, boot information, command line,
//! memory, descriptor tables, CPU discovery and start-up, then the run itself.
#![no_std]
#![no_main]
// A hypercall runs with the guest's MXCSR and x87 control word in force (they are
// callee-saved in the hypercall ABI, so the entry leaves them): a guest that unmasks
// floating-point exceptions would turn any float operation here into a #XM in ring 0.
// So the hypervisor does no floating-point arithmetic at all.
#![deny(clippy::float_arithmetic)]

extern crate alloc;

mod arch;
mod console;
mod domain;
mod mm;
mod pv;
mod schedule;
mod selftest;
mod time;
mod trap;

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use abi::tool::console::ExitCode;
use abi::tool::results::{Apic, Boot, Record};
use kerncore::cmdline::{self, LogLevel, SelfTest};

/// Set once the bootstrap CPU has its per-CPU area; APs install theirs before logging.
static PERCPU_READY: AtomicBool = AtomicBool::new(false);

/// `selftest=hang`: CPU 1 hangs in the hypervisor once the experiment runs.
static SELFTEST_HANG: AtomicBool = AtomicBool::new(false);

/// Application processors that finished their own set-up.
static APS_READY: AtomicUsize = AtomicUsize::new(0);

/// Where each CPU sits, as the bootstrap CPU found it (before the APs start).
static CPU_LAYOUT: spin::Once<smp::cpu_topology::Layout> = spin::Once::new();

/// APs whose own CPUID disagrees with the place the bootstrap CPU gave them.
static MISPLACED_CPUS: AtomicUsize = AtomicUsize::new(0);

/// The index of the CPU running this code (0 on the bootstrap CPU).
pub fn cpu_index() -> usize {
    if PERCPU_READY.load(Ordering::Relaxed) {
        smp::percpu::cpu_index()
    } else {
        0
    }
}

/// Tells the watchdog this CPU is busy on purpose (feeding the serial port), once per-CPU
/// state exists: before that there is no watchdog either.
pub fn touch_watchdog() {
    if PERCPU_READY.load(Ordering::Relaxed) {
        arch::percpu::touch_watchdog();
    }
}

/// The set-up every CPU does for itself: descriptor tables, `syscall`, local APIC, timer.
fn init_this_cpu(cpu_index: usize) {
    let gdt = arch::percpu::install(cpu_index, smp::arch::cpuid_apic_id());
    arch::gdt::init_this_cpu(arch::percpu::kernel_stack_top(), gdt);
    arch::trap::load_idt();
    arch::entry::init_syscall();
    let protections = arch::cpu::protect_this_cpu();
    if cpu_index == 0 {
        log::info!("guest isolation: {protections:?}");
    }
}

/// The Rust entry of every application processor, called by the `smp` trampoline.
extern "C" fn ap_entry(cpu_index: usize) -> ! {
    init_this_cpu(cpu_index);
    arch::platform::init_this_ap();
    check_place(cpu_index);
    log::debug!("CPU {cpu_index} (APIC id {}) ready", smp::apic::id());
    APS_READY.fetch_add(1, Ordering::AcqRel);
    if cpu_index == 1 && SELFTEST_HANG.load(Ordering::Acquire) {
        selftest::hang();
    }
    arch::entry::go_idle()
}

/// Checks, on an AP, that its own CPUID agrees with the place the bootstrap CPU gave it
/// from the MADT: the same APIC id and the same field widths (so the same socket and core).
fn check_place(cpu_index: usize) {
    let Some(layout) = CPU_LAYOUT.get() else {
        return;
    };
    let (apic_id, widths) = arch::platform::this_cpu_topology();
    match layout.places.get(cpu_index) {
        Some(p) if p.apic_id == apic_id && widths == layout.widths => log::debug!(
            "CPU {cpu_index} (APIC id {apic_id}): socket {}, core {}",
            p.socket,
            p.core
        ),
        place => {
            MISPLACED_CPUS.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "CPU {cpu_index}: its CPUID says APIC id {apic_id}, widths {widths:?}; the \
                 bootstrap CPU placed it at {place:?} with {:?}",
                layout.widths
            );
        }
    }
}

/// The Rust entry of the bootstrap CPU, called by the boot code (`arch/x86_64/boot.rs`).
#[unsafe(no_mangle)]
extern "C" fn kernel_entry() -> ! {
    arch::boot::save_boot_facts();
    console::init();
    let info = match arch::bootinfo::read() {
        Ok(info) => info,
        Err(e) => {
            log::error!("cannot read the boot information: {e}");
            arch::exit(ExitCode::Failure);
        }
    };
    // The policies this build knows, Xen's default (credit) first.
    let mut policies: arrayvec::ArrayVec<&str, 16> = sched::registry::names().collect();
    if let Some(i) = policies.iter().position(|p| *p == "credit") {
        policies[..=i].rotate_right(1);
    }
    let options = match cmdline::parse(&info.cmdline, &policies) {
        Ok(options) => options,
        Err(e) => {
            log::error!("{e}");
            arch::exit(ExitCode::BadInput);
        }
    };
    console::set_level(match options.loglevel {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    log::info!(
        "Domino booting by {} on {}; command line `{}`",
        info.protocol,
        arch::cpu::accelerator(),
        info.cmdline
    );
    if options.selftest == SelfTest::Probe {
        log::info!("probe: x87 and SSE give {}", selftest::fpu_and_sse());
        arch::exit(ExitCode::Success);
    }

    let memory = arch::bootmem::BootMemory::claim(&info);
    if let Some(module) = memory.module() {
        domain::boot_module::init(module);
    }
    let mem = mm::frames::init(memory);
    log::info!(
        "memory: {} MiB usable, {} MiB heap, {} free frames",
        mem.usable_bytes >> 20,
        mem.heap_bytes >> 20,
        mem.frames
    );
    init_this_cpu(0);
    PERCPU_READY.store(true, Ordering::Relaxed);
    if options.selftest == SelfTest::Fault {
        log::info!("self-test: taking a page fault on purpose");
        selftest::page_fault();
    }
    SELFTEST_HANG.store(options.selftest == SelfTest::Hang, Ordering::Release);
    domain::event_channel::set_slow_send(options.selftest == SelfTest::SlowSend);
    time::set_self_test(options.selftest);

    let topology = match arch::platform::discover(&info) {
        Ok(t) => t,
        Err(arch::platform::DiscoverError::NoRsdp) => {
            log::error!("the boot loader gave no ACPI RSDP: cannot find the CPUs");
            arch::exit(ExitCode::Failure);
        }
        Err(arch::platform::DiscoverError::Acpi(e)) => {
            log::error!("cannot read the ACPI MADT: {e:?}");
            arch::exit(ExitCode::Failure);
        }
    };
    if topology.has_8259 {
        arch::cpu::mask_8259();
    }
    let apic_mode = arch::platform::init_apic(&topology);
    let tsc_hz = match arch::platform::calibrate_tsc(&topology) {
        Ok(hz) => hz,
        Err(smp::time::CalibrationError::Unstable { median_hz }) => {
            log::warn!("TSC calibration unstable; using the median, {median_hz} Hz");
            smp::time::set_tsc_hz(median_hz);
            median_hz
        }
        Err(e) => {
            log::error!("cannot calibrate the TSC: {e:?}");
            arch::exit(ExitCode::Failure);
        }
    };
    time::init_wallclock();
    let timer_mode = arch::platform::init_timer();
    log::info!(
        "{} CPUs in the MADT, local APIC in {} mode, TSC {} MHz, timer {:?}",
        topology.cpus.len(),
        apic_mode.as_str(),
        tsc_hz / 1_000_000,
        timer_mode
    );

    // The policy is built before the APs start, so each CPU's place comes from its MADT
    // APIC id and the bootstrap CPU's CPUID; each AP checks it on arrival (`check_place`).
    let layout = CPU_LAYOUT.call_once(|| arch::platform::cpu_layout(&topology));
    log::info!(
        "CPU topology ({}): {} socket(s) × {} core(s) × {} thread(s); [APIC id, socket, core]: {:?}",
        layout.widths.source.name(),
        layout.sockets,
        layout.cores_per_socket,
        layout.threads_per_core,
        PlacesLog(&layout.places)
    );
    let mut sched_topology = sched::Topology::flat(
        topology.cpus.len(),
        domain::MAX_VCPUS_TOTAL,
        domain::MAX_DOMAINS,
    );
    for (slot, p) in sched_topology.places.iter_mut().zip(&layout.places) {
        *slot = sched::CpuPlace {
            socket: p.socket,
            core: p.core,
        };
    }
    // The CPU pools, each with its policy instance (one pool of every CPU when the command
    // line names none), built before the APs start so every CPU finds its pool.
    let all_cpus: alloc::vec::Vec<usize> = (0..topology.cpus.len()).collect();
    let boot_pools: alloc::vec::Vec<schedule::cpupool::BootPool<'_>> = if options.pools.is_empty() {
        alloc::vec![schedule::cpupool::BootPool {
            name: "default",
            policy: options.sched,
            cpus: all_cpus,
            knobs: options.sched_params.to_vec(),
        }]
    } else {
        options
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| schedule::cpupool::BootPool {
                name: p.name,
                policy: p.policy.unwrap_or(options.sched),
                cpus: p.cpus.iter().map(|&c| usize::from(c)).collect(),
                // `sched.<param>` words are the first pool's knobs, under its own.
                knobs: if i == 0 {
                    options
                        .sched_params
                        .iter()
                        .chain(&p.knobs)
                        .copied()
                        .collect()
                } else {
                    p.knobs.to_vec()
                },
            })
            .collect()
    };
    schedule::init(topology.cpus.len());
    // What a CPU asked for a TLB flush (`Domain::flush_tlbs`) runs.
    smp::ipi::set_tlb_flush(x86_64::instructions::tlb::flush_all);
    arch::rcu::set_hooks(arch::rcu::Hooks {
        on_control_path: || schedule::with_current(|_, d| d.privileged) != Some(false),
        emergency_console: console::emergency,
    });
    if let Err(e) = schedule::cpupool::init(sched_topology, &boot_pools) {
        log::error!("cannot build the CPU pools and their policies: {e}");
        arch::exit(ExitCode::BadInput);
    }
    for p in &boot_pools {
        log::info!("pool {}: {} on CPUs {:?}", p.name, p.policy, p.cpus);
    }
    mm::shared_image::set_enabled(options.share_images);
    if options.trace {
        schedule::trace::enable(topology.cpus.len());
        schedule::cpupool::enable_trace();
    }

    let online = match arch::platform::start_aps(&topology, ap_entry) {
        Ok(set) => set,
        Err(e) => {
            log::error!("cannot start the other CPUs: {e:?}");
            arch::exit(ExitCode::Failure);
        }
    };
    // `start_aps` returns once each AP has left the trampoline; wait for their own set-up.
    while APS_READY.load(Ordering::Acquire) + 1 < online.len() {
        smp::ipi::handle_call_function_ipi();
        core::hint::spin_loop();
    }
    let boot_ns = time::now_ns();
    log::info!(
        "{} of {} CPUs online after {} µs",
        online.len(),
        topology.cpus.len(),
        boot_ns / 1000
    );

    let misplaced = MISPLACED_CPUS.load(Ordering::Relaxed);
    if misplaced > 0 {
        log::warn!("{misplaced} CPU(s) disagree with their place in the CPU topology");
    }

    // The spec validator's model of the heap (sched::limits) must not be below what bring-up
    // took; say so loudly if it is, since specs it accepts could then fail after boot.
    let heap_used = mm::frames::heap_used() as u64;
    let heap_model = sched::limits::heap_demand(
        &sched::limits::Demand {
            cpus: online.len() as u64,
            trace: options.trace,
            ..sched::limits::Demand::default()
        },
        mem.usable_bytes >> 20,
    );
    log::info!(
        "heap: {} KiB used after bring-up, {} KiB in sched::limits' model",
        heap_used >> 10,
        heap_model >> 10
    );
    if heap_used > heap_model {
        log::warn!("heap: bring-up took more than sched::limits models; raise its figures");
    }

    let apic = match apic_mode {
        smp::apic::Mode::X2Apic => Some(Apic::X2apic),
        smp::apic::Mode::XApic => Some(Apic::Xapic),
        smp::apic::Mode::Off => None,
    };
    match apic {
        Some(apic) => console::write_record(&Record::Boot(Boot {
            cpus_online: online.len() as u32,
            cpus_found: topology.cpus.len() as u32,
            apic,
            boot_ns,
            accel: arch::cpu::accelerator().into(),
            protocol: info.protocol.into(),
            memory_bytes: mem.usable_bytes,
            topology: Some(layout.widths.source.name().into()),
            sockets: Some(layout.sockets),
            cores: Some(layout.cores_per_socket),
            threads: Some(layout.threads_per_core),
            places: Some(
                layout
                    .places
                    .iter()
                    .map(|p| [p.apic_id, u32::from(p.socket), u32::from(p.core)])
                    .collect(),
            ),
            heap_bytes: Some(heap_used),
            heap_model_bytes: Some(heap_model),
        })),
        // The runner fails a run without a boot record.
        None => log::error!("the local APIC is off after bring-up: no boot record"),
    }

    match (
        domain::boot_module::file(abi::tool::plan::DOM0_IMAGE),
        domain::boot_module::file(abi::tool::plan::FILE),
    ) {
        (Some(image), Some(plan)) => {
            if let Err(e) = pv::control::start_domain0(image, plan) {
                log::error!("cannot build Domain0: {e}");
                arch::exit(ExitCode::Failure);
            }
        }
        _ => {
            log::info!("no experiment in the boot module: boot only");
            arch::exit(ExitCode::Success);
        }
    }
    schedule::arm_watchdog();
    arch::entry::go_idle()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::emergency();
    log::error!("hypervisor panic: {info}");
    arch::exit(ExitCode::Failure)
}

/// The places as `[APIC id, socket, core]` triples, for the boot log.
struct PlacesLog<'a>(&'a [smp::cpu_topology::Place]);

impl core::fmt::Debug for PlacesLog<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|p| [p.apic_id, u32::from(p.socket), u32::from(p.core)]),
            )
            .finish()
    }
}
