//! Where each CPU sits — its socket (package), core and thread — read from its APIC id.
//!
//! An x86 APIC id is a packed bit field: the thread within its core in the low bits, then
//! the core within its package, then the package. CPUID says how wide each field is; this
//! module turns those widths into a place for every APIC id the MADT lists. It is logic
//! only (the CPUID values come in through a function), so `cargo test -p smp` runs it on
//! made-up processors; the hypervisor calls [`detect`] with [`crate::arch::cpuid`].
//!
//! The rules are Xen's (`xen/arch/x86/cpu/common.c`, `detect_extended_topology`, and
//! `detect_ht` with `num_cpu_cores` of `cpu/intel.c` / `x86_max_cores` of `cpu/amd.c`):
//! - **Extended topology leaf** (0x1F if it is implemented, else 0x0B — the SDM's advice;
//!   Xen reads 0x0B): implemented if sub-leaf 0 has a non-zero EBX and level type SMT (1).
//!   Sub-leaf 0's EAX[4:0] is the SMT width (`ht_mask_width`); every further sub-leaf up to
//!   the first of type 0 (invalid) widens the field below the package. Xen takes the core
//!   level's width (`core_plus_mask_width`) as the package shift, which counts each die of
//!   a multi-die package as a socket; the package shift here is the *last* valid level's
//!   (as Linux since 2022, "x86/topology: Fix multiple packages shown on a single-package
//!   system"). On a CPU without die or module levels the two agree.
//! - **Leaf 1 and 4** (no extended leaf): with HTT (CPUID.1:EDX[28]), EBX[23:16] counts the
//!   logical processors of a package; the package field is `get_count_order(count)` bits
//!   wide, the thread field `get_count_order(count / x86_max_cores)`, where `x86_max_cores`
//!   is CPUID.4:EAX[31:26] + 1 (Intel) or CPUID.80000008h:ECX[7:0] + 1 (AMD, Hygon), else 1.
//!   AMD's count is of logical processors, so there the thread field comes from TOPOEXT's
//!   leaf 8000001Eh (EBX[15:8] + 1 threads per core, Xen's `amd_get_topology`), and without
//!   TOPOEXT every logical processor counts as a core.
//!   Without HTT each CPU is a package of one (Xen's `phys_proc_id = apicid`).
//! - **Flat** when CPUID offers none of these (no leaf 1): one socket, every CPU its own core.
//!
//! Xen keeps the raw ids (`phys_proc_id`, `cpu_core_id`); [`layout`] numbers sockets and
//! cores densely from 0, in APIC id order, cores across the whole machine: the numbering
//! of `sched::Topology::places`, and the one QEMU's `-smp` order gives CPU indices.

use arrayvec::ArrayVec;

use crate::MAX_CPUS;
use crate::arch::Cpuid;

/// Extended topology level types (CPUID.0Bh/1Fh:ECX[15:8]).
const INVALID_TYPE: u32 = 0;
const SMT_TYPE: u32 = 1;
/// Sub-leaves read at most: the SDM defines SMT, core, module, tile and die levels; a CPU
/// that never reports the invalid type cannot keep this walk going.
const MAX_LEVELS: u32 = 8;

/// Where the widths came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// CPUID leaf 1Fh (V2 extended topology).
    Leaf1F,
    /// CPUID leaf 0Bh (extended topology).
    LeafB,
    /// CPUID leaf 1's logical count, with leaf 4 or 80000008h's core count.
    Leaf1,
    /// Nothing: one socket, every CPU its own core.
    Flat,
}

impl Source {
    /// Its name in the `boot` record and the log.
    pub fn name(self) -> &'static str {
        match self {
            Source::Leaf1F => "cpuid-0x1f",
            Source::LeafB => "cpuid-0xb",
            Source::Leaf1 => "cpuid-1",
            Source::Flat => "flat",
        }
    }
}

/// The widths of the APIC id's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widths {
    /// Bits below the core id: the thread within its core.
    pub smt_shift: u32,
    /// Bits below the package id (at least `smt_shift`; 32: every id in package 0).
    pub pkg_shift: u32,
    /// Which CPUID leaves said so.
    pub source: Source,
}

impl Widths {
    /// One socket, every APIC id its own core.
    pub const FLAT: Widths = Widths {
        smt_shift: 0,
        pkg_shift: 32,
        source: Source::Flat,
    };

    /// `apic_id`'s raw package id and raw core id (the core id keeps the package bits, so it
    /// is unique in the machine).
    pub fn split(&self, apic_id: u32) -> (u32, u32) {
        let shr = |s: u32| apic_id.checked_shr(s).unwrap_or(0);
        (shr(self.pkg_shift), shr(self.smt_shift))
    }
}

fn level_type(ecx: u32) -> u32 {
    (ecx >> 8) & 0xFF
}

fn shift(eax: u32) -> u32 {
    eax & 0x1F
}

/// Xen's `get_count_order`: the bits needed to number `n` things (`ceil(log2(n))`).
fn count_order(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

/// Reads the APIC id's field widths from the CPUID of the calling CPU, `cpuid(leaf,
/// subleaf)`. Every CPU of one machine gives the same answer.
pub fn detect(cpuid: impl Fn(u32, u32) -> Cpuid) -> Widths {
    let max_leaf = cpuid(0, 0).eax;
    for (leaf, source) in [(0x1F, Source::Leaf1F), (0x0B, Source::LeafB)] {
        if max_leaf >= leaf
            && let Some(widths) = extended(&cpuid, leaf, source)
        {
            return widths;
        }
    }
    if max_leaf >= 1 {
        legacy(&cpuid, max_leaf)
    } else {
        Widths::FLAT
    }
}

/// Xen's `detect_extended_topology` over `leaf` (0x0B or 0x1F), or `None` if the leaf is
/// not implemented or says nothing sensible.
fn extended(cpuid: &impl Fn(u32, u32) -> Cpuid, leaf: u32, source: Source) -> Option<Widths> {
    let r = cpuid(leaf, 0);
    // "Check if the cpuid leaf 0xb is actually implemented" (Xen).
    if r.ebx == 0 || level_type(r.ecx) != SMT_TYPE {
        return None;
    }
    let smt_shift = shift(r.eax);
    let mut pkg_shift = smt_shift;
    for sub in 1..MAX_LEVELS {
        let r = cpuid(leaf, sub);
        if level_type(r.ecx) == INVALID_TYPE {
            break;
        }
        pkg_shift = shift(r.eax);
    }
    (pkg_shift >= smt_shift).then_some(Widths {
        smt_shift,
        pkg_shift,
        source,
    })
}

/// Xen's `detect_ht`, with `x86_max_cores` from leaf 4 (Intel) or 80000008h (AMD).
fn legacy(cpuid: &impl Fn(u32, u32) -> Cpuid, max_leaf: u32) -> Widths {
    let l1 = cpuid(1, 0);
    let logical = (l1.ebx >> 16) & 0xFF;
    if l1.edx & (1 << 28) == 0 || logical <= 1 {
        // A package of one logical processor: the whole APIC id is the package.
        return Widths {
            smt_shift: 0,
            pkg_shift: 0,
            source: Source::Leaf1,
        };
    }
    let cores = max_cores(cpuid, max_leaf).clamp(1, logical);
    // AMD's core count (NC) counts logical processors; with TOPOEXT, leaf 8000001Eh says
    // how many threads share a core (Xen's `amd_get_topology`).
    let threads = amd_threads_per_core(cpuid)
        .unwrap_or(logical / cores)
        .clamp(1, logical);
    Widths {
        smt_shift: count_order(threads),
        pkg_shift: count_order(logical),
        source: Source::Leaf1,
    }
}

fn vendor_is(cpuid: &impl Fn(u32, u32) -> Cpuid, name: &[u8; 12]) -> bool {
    let v = cpuid(0, 0);
    v.ebx.to_le_bytes() == name[0..4]
        && v.edx.to_le_bytes() == name[4..8]
        && v.ecx.to_le_bytes() == name[8..12]
}

fn is_amd(cpuid: &impl Fn(u32, u32) -> Cpuid) -> bool {
    vendor_is(cpuid, b"AuthenticAMD") || vendor_is(cpuid, b"HygonGenuine")
}

/// Threads per core from AMD's leaf 8000001Eh EBX[15:8] + 1, if TOPOEXT
/// (CPUID.80000001h:ECX[22]) says the leaf is there.
fn amd_threads_per_core(cpuid: &impl Fn(u32, u32) -> Cpuid) -> Option<u32> {
    if !is_amd(cpuid)
        || cpuid(0x8000_0000, 0).eax < 0x8000_001E
        || cpuid(0x8000_0001, 0).ecx & (1 << 22) == 0
    {
        return None;
    }
    Some(((cpuid(0x8000_001E, 0).ebx >> 8) & 0xFF) + 1)
}

/// Cores per package: Xen's `num_cpu_cores` (Intel, leaf 4) or AMD's NC field.
fn max_cores(cpuid: &impl Fn(u32, u32) -> Cpuid, max_leaf: u32) -> u32 {
    if vendor_is(cpuid, b"GenuineIntel") && max_leaf >= 4 {
        let r = cpuid(4, 0);
        // EAX[4:0] is the cache type; 0 means leaf 4 describes nothing.
        return if r.eax & 0x1F != 0 {
            (r.eax >> 26) + 1
        } else {
            1
        };
    }
    if is_amd(cpuid) && cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        return (cpuid(0x8000_0008, 0).ecx & 0xFF) + 1;
    }
    1
}

/// One CPU's place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// Its APIC id.
    pub apic_id: u32,
    /// Its socket, numbered densely from 0 in APIC id order.
    pub socket: u16,
    /// Its core, numbered densely from 0 in APIC id order across the whole machine.
    pub core: u16,
}

/// The places of a machine's CPUs and its shape.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The widths used.
    pub widths: Widths,
    /// Each CPU's place, in the order the APIC ids were given (CPU index order).
    pub places: ArrayVec<Place, MAX_CPUS>,
    /// Sockets.
    pub sockets: u32,
    /// Cores in the socket with the most.
    pub cores_per_socket: u32,
    /// Threads in the core with the most.
    pub threads_per_core: u32,
}

/// The distinct values of `values`, sorted.
fn distinct(values: impl Iterator<Item = u32>) -> ArrayVec<u32, MAX_CPUS> {
    let mut all: ArrayVec<u32, MAX_CPUS> = values.collect();
    all.sort_unstable();
    let mut out = ArrayVec::new();
    for v in all {
        if out.last() != Some(&v) {
            out.push(v);
        }
    }
    out
}

fn rank(sorted: &[u32], v: u32) -> u16 {
    sorted.binary_search(&v).unwrap_or(0) as u16
}

/// Places every CPU, by its APIC id (at most [`MAX_CPUS`]; more are ignored).
pub fn layout(widths: Widths, apic_ids: &[u32]) -> Layout {
    let apic_ids = &apic_ids[..apic_ids.len().min(MAX_CPUS)];
    let pkgs = distinct(apic_ids.iter().map(|&a| widths.split(a).0));
    let cores = distinct(apic_ids.iter().map(|&a| widths.split(a).1));
    let places: ArrayVec<Place, MAX_CPUS> = apic_ids
        .iter()
        .map(|&apic_id| {
            let (pkg, core) = widths.split(apic_id);
            Place {
                apic_id,
                socket: rank(&pkgs, pkg),
                core: rank(&cores, core),
            }
        })
        .collect();
    let mut cores_in = [0u32; MAX_CPUS];
    for &core in &cores {
        let pkg = core
            .checked_shr(widths.pkg_shift.saturating_sub(widths.smt_shift))
            .unwrap_or(0);
        cores_in[usize::from(rank(&pkgs, pkg))] += 1;
    }
    let mut threads_in = [0u32; MAX_CPUS];
    for p in &places {
        threads_in[usize::from(p.core)] += 1;
    }
    Layout {
        widths,
        sockets: pkgs.len() as u32,
        cores_per_socket: cores_in.iter().copied().max().unwrap_or(0),
        threads_per_core: threads_in.iter().copied().max().unwrap_or(0),
        places,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A made-up CPUID: the listed (leaf, subleaf) answers, zero elsewhere.
    struct Fake(BTreeMap<(u32, u32), [u32; 4]>);

    impl Fake {
        fn new(vendor: &[u8; 12], max_leaf: u32) -> Fake {
            let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
            let mut m = BTreeMap::new();
            m.insert((0, 0), [max_leaf, w(0), w(8), w(4)]);
            Fake(m)
        }
        fn set(mut self, leaf: u32, sub: u32, r: [u32; 4]) -> Fake {
            self.0.insert((leaf, sub), r);
            self
        }
        fn cpuid(&self) -> impl Fn(u32, u32) -> Cpuid + '_ {
            |leaf, sub| {
                let [eax, ebx, ecx, edx] = self.0.get(&(leaf, sub)).copied().unwrap_or_default();
                Cpuid { eax, ebx, ecx, edx }
            }
        }
    }

    /// Leaf 0Bh as QEMU builds it (`cpu_x86_cpuid`, case 0xB) for `cores` × `threads` per
    /// socket: SMT level then core level, widths rounded up to powers of two.
    fn qemu_leaf_b(f: Fake, leaf: u32, cores: u32, threads: u32) -> Fake {
        let (t, c) = (count_order(threads), count_order(cores));
        f.set(leaf, 0, [t, threads, 1 << 8, 0])
            .set(leaf, 1, [t + c, cores * threads, (2 << 8) | 1, 0])
            .set(leaf, 2, [0, 0, 2, 0])
    }

    /// QEMU's APIC ids for `-smp sockets=S,cores=C,threads=T`, in CPU index order.
    fn qemu_ids(sockets: u32, cores: u32, threads: u32) -> Vec<u32> {
        let (t, c) = (count_order(threads), count_order(cores));
        let mut ids = Vec::new();
        for s in 0..sockets {
            for k in 0..cores {
                for h in 0..threads {
                    ids.push((s << (c + t)) | (k << t) | h);
                }
            }
        }
        ids
    }

    fn pairs(l: &Layout) -> Vec<(u16, u16)> {
        l.places.iter().map(|p| (p.socket, p.core)).collect()
    }

    #[test]
    fn qemu_two_sockets_of_two_cores_from_leaf_b() {
        let f = qemu_leaf_b(Fake::new(b"AuthenticAMD", 0x0D), 0x0B, 2, 1);
        let w = detect(f.cpuid());
        assert_eq!(
            w,
            Widths {
                smt_shift: 0,
                pkg_shift: 1,
                source: Source::LeafB
            }
        );
        let l = layout(w, &qemu_ids(2, 2, 1));
        assert_eq!(pairs(&l), [(0, 0), (0, 1), (1, 2), (1, 3)]);
        assert_eq!(
            (l.sockets, l.cores_per_socket, l.threads_per_core),
            (2, 2, 1)
        );
    }

    #[test]
    fn every_small_qemu_shape_is_numbered_as_smp_orders_cpus() {
        // sched::Topology::shaped's rule: CPU i is in socket i / (C × T), core i / T.
        for sockets in 1..=4 {
            for cores in 1..=9 {
                for threads in 1..=4 {
                    let f = qemu_leaf_b(Fake::new(b"AuthenticAMD", 0x0D), 0x0B, cores, threads);
                    let l = layout(detect(f.cpuid()), &qemu_ids(sockets, cores, threads));
                    let n = sockets * cores * threads;
                    let want: Vec<(u16, u16)> = (0..n)
                        .map(|i| ((i / (cores * threads)) as u16, (i / threads) as u16))
                        .collect();
                    assert_eq!(pairs(&l), want, "{sockets}x{cores}x{threads}");
                    assert_eq!(
                        (l.sockets, l.cores_per_socket, l.threads_per_core),
                        (sockets, cores, threads)
                    );
                }
            }
        }
    }

    #[test]
    fn non_power_of_two_cores_leave_holes_in_the_apic_ids() {
        // -smp 6,sockets=2,cores=3: APIC ids 0, 1, 2, 4, 5, 6.
        let f = qemu_leaf_b(Fake::new(b"GenuineIntel", 0x0D), 0x0B, 3, 1);
        let ids = qemu_ids(2, 3, 1);
        assert_eq!(ids, [0, 1, 2, 4, 5, 6]);
        let l = layout(detect(f.cpuid()), &ids);
        assert_eq!(pairs(&l), [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]);
        assert_eq!(
            (l.sockets, l.cores_per_socket, l.threads_per_core),
            (2, 3, 1)
        );
    }

    #[test]
    fn threads_share_a_core() {
        // -smp 12,sockets=2,cores=3,threads=2 (thread field 1 bit, core field 2 bits).
        let f = qemu_leaf_b(Fake::new(b"GenuineIntel", 0x0D), 0x0B, 3, 2);
        let l = layout(detect(f.cpuid()), &qemu_ids(2, 3, 2));
        let want: Vec<(u16, u16)> = (0..12).map(|i| ((i / 6) as u16, (i / 2) as u16)).collect();
        assert_eq!(pairs(&l), want);
        assert_eq!(
            (l.sockets, l.cores_per_socket, l.threads_per_core),
            (2, 3, 2)
        );
    }

    #[test]
    fn leaf_1f_wins_and_a_die_level_stays_inside_the_package() {
        // SMT 1 bit, core 3 bits, die 1 more bit: package = APIC id >> 5.
        let f = Fake::new(b"GenuineIntel", 0x1F)
            .set(0x1F, 0, [1, 2, 1 << 8, 0])
            .set(0x1F, 1, [4, 16, 2 << 8, 0])
            .set(0x1F, 2, [5, 32, 5 << 8, 0]);
        let f = qemu_leaf_b(f, 0x0B, 8, 2);
        let w = detect(f.cpuid());
        assert_eq!((w.smt_shift, w.pkg_shift, w.source), (1, 5, Source::Leaf1F));
        // Two dies of one package: one socket; ids 0x10, 0x11 are one core of die 1.
        let l = layout(w, &[0, 1, 0x10, 0x11, 0x20]);
        assert_eq!(pairs(&l), [(0, 0), (0, 0), (0, 1), (0, 1), (1, 2)]);
        assert_eq!(l.sockets, 2);
    }

    #[test]
    fn an_unimplemented_extended_leaf_falls_back_to_leaf_1_and_4() {
        // Leaf 0Bh present in range but all zero (not implemented): Intel, 8 logical per
        // package, leaf 4 says 4 cores: 1 thread bit, 3 package bits.
        let f = Fake::new(b"GenuineIntel", 0x0B)
            .set(1, 0, [0, 8 << 16, 0, 1 << 28])
            .set(4, 0, [(3 << 26) | 1, 0, 0, 0]);
        let w = detect(f.cpuid());
        assert_eq!((w.smt_shift, w.pkg_shift, w.source), (1, 3, Source::Leaf1));
        let l = layout(w, &[0, 1, 2, 3, 8, 9]);
        assert_eq!(pairs(&l), [(0, 0), (0, 0), (0, 1), (0, 1), (1, 2), (1, 2)]);
        // AMD: the core count from 80000008h.
        let f = Fake::new(b"AuthenticAMD", 0x0D)
            .set(1, 0, [0, 4 << 16, 0, 1 << 28])
            .set(0x8000_0000, 0, [0x8000_0008, 0, 0, 0])
            .set(0x8000_0008, 0, [0, 0, 3, 0]);
        let w = detect(f.cpuid());
        assert_eq!((w.smt_shift, w.pkg_shift, w.source), (0, 2, Source::Leaf1));
        // With TOPOEXT, 8000001Eh says two threads share each core.
        let f = f
            .set(0x8000_0000, 0, [0x8000_001E, 0, 0, 0])
            .set(0x8000_0001, 0, [0, 0, 1 << 22, 0])
            .set(0x8000_001E, 0, [0, 1 << 8, 0, 0]);
        let w = detect(f.cpuid());
        assert_eq!((w.smt_shift, w.pkg_shift), (1, 2));
        let l = layout(w, &[0, 1, 2, 3, 4]);
        assert_eq!(pairs(&l), [(0, 0), (0, 0), (0, 1), (0, 1), (1, 2)]);
    }

    #[test]
    fn without_htt_each_cpu_is_a_package_and_without_cpuid_flat() {
        let f = Fake::new(b"GenuineIntel", 0x02).set(1, 0, [0, 1 << 16, 0, 0]);
        let l = layout(detect(f.cpuid()), &[0, 1, 2]);
        assert_eq!(pairs(&l), [(0, 0), (1, 1), (2, 2)]);
        let l = layout(detect(Fake::new(b"GenuineIntel", 0).cpuid()), &[0, 1, 2]);
        assert_eq!(l.widths.source, Source::Flat);
        assert_eq!(pairs(&l), [(0, 0), (0, 1), (0, 2)]);
        assert_eq!(
            (l.sockets, l.cores_per_socket, l.threads_per_core),
            (1, 3, 1)
        );
    }

    #[test]
    fn a_level_walk_that_never_ends_is_cut_and_nonsense_is_refused() {
        // Every sub-leaf claims to be a core level: the walk stops at MAX_LEVELS.
        let mut f = Fake::new(b"GenuineIntel", 0x0B).set(0x0B, 0, [0, 1, 1 << 8, 0]);
        for sub in 1..100 {
            f = f.set(0x0B, sub, [sub.min(31), 1, 2 << 8, 0]);
        }
        assert_eq!(detect(f.cpuid()).pkg_shift, MAX_LEVELS - 1);
        // A package narrower than the thread field: not believed; leaf 1 decides.
        let f = Fake::new(b"GenuineIntel", 0x0B)
            .set(0x0B, 0, [3, 8, 1 << 8, 0])
            .set(0x0B, 1, [1, 8, 2 << 8, 0])
            .set(1, 0, [0, 1 << 16, 0, 0]);
        assert_eq!(detect(f.cpuid()).source, Source::Leaf1);
    }

    #[test]
    fn the_bootstrap_cpu_first_does_not_change_the_numbering() {
        // CPU indices follow the MADT with the BSP first; numbers follow APIC ids.
        let f = qemu_leaf_b(Fake::new(b"GenuineIntel", 0x0D), 0x0B, 2, 1);
        let l = layout(detect(f.cpuid()), &[2, 0, 1, 3]);
        assert_eq!(pairs(&l), [(1, 2), (0, 0), (0, 1), (1, 3)]);
    }
}
