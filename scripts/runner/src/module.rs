//! The boot module: a ustar archive of the guest images and the experiment plan.
//!
//! The hypervisor reads it from QEMU's `-initrd` (or GRUB's `module2`): Domain0's image
//! (`dom0`), one image per workload the experiment uses (named by the workload), and `plan`,
//! the spec expanded into one entry per domain (`abi::tool::plan`, postcard). Domain0 carries the
//! plan out; it never sees TOML.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use abi::control::SchedParams;
use abi::tool::plan::{self, EncodedSeq, Expect, Plan, PlannedDomain};
use sched::spec::{self, DomainPlan};

use crate::experiment::Experiment;

/// Where the guest images are: cargo's release directory.
pub fn images_dir() -> PathBuf {
    crate::artifacts::target_dir().join("release")
}

/// Every per-domain scheduling parameter the spec gives (`DomainPlan::all_params`): the
/// hypervisor gives its pool's policy those it declares (its defaults stand for the rest)
/// and keeps the others for a later pool or policy. The spec validator has checked them
/// against the control ABI's bounds.
fn sched_params(d: &DomainPlan) -> Result<SchedParams, String> {
    SchedParams::from_pairs(
        d.all_params
            .iter()
            .map(|(name, value)| (name.as_str(), *value)),
    )
    .map_err(|(name, e)| format!("domain {}: scheduling parameter `{name}`: {e}", d.name))
}

/// The timeline as Domain0 applies it: each event's domains as a run of plan indices (a
/// group's domains are consecutive), its parameters as the control ABI carries them.
fn planned_events(exp: &Experiment) -> Result<Vec<plan::PlannedEvent<'_>>, String> {
    use sched::timeline::{Op, Targets};
    let mut out = Vec::new();
    for step in &exp.timeline {
        let params = |kv: &[(String, u64)]| {
            SchedParams::from_pairs(kv.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(|(name, e)| format!("event[{}]: parameter `{name}`: {e}", step.index))
        };
        let op = match (&step.targets, &step.op) {
            (Targets::Pool(_), Op::Set(kv)) => plan::EventOp::SetGlobal(params(kv)?),
            (Targets::Domains(_), Op::Set(kv)) => plan::EventOp::Set(params(kv)?),
            (_, Op::Pause) => plan::EventOp::Pause,
            (_, Op::Unpause) => plan::EventOp::Unpause,
            (_, Op::Start) => plan::EventOp::Start,
            (_, Op::Destroy) => plan::EventOp::Destroy,
            (_, Op::MoveTo(_)) => plan::EventOp::MoveTo,
            (_, Op::Policy(_)) => plan::EventOp::SetPolicy,
        };
        // The pool the event names: its target, or where `move_to` sends its domains.
        let pool = match (&step.targets, &step.op) {
            (_, Op::MoveTo(p)) | (Targets::Pool(p), _) => *p as u32,
            _ => 0,
        };
        let policy = match &step.op {
            Op::Policy(name) => name.as_str(),
            _ => "",
        };
        let (first, count) = match &step.targets {
            Targets::Domains(ids) => {
                let first = ids.first().copied().unwrap_or(0);
                if ids.iter().enumerate().any(|(k, &d)| d != first + k as u32) {
                    return Err(format!(
                        "event[{}]: its domains are not consecutive",
                        step.index
                    ));
                }
                (first, ids.len() as u32)
            }
            Targets::Pool(_) => (0, 0),
        };
        out.push(plan::PlannedEvent {
            at_ms: step.at_ns / 1_000_000,
            target: &step.target,
            what: &step.what,
            op,
            first,
            count,
            pool,
            policy,
        });
    }
    Ok(out)
}

/// The plan's bytes for `exp`.
pub fn plan_bytes(exp: &Experiment) -> Result<Vec<u8>, String> {
    let mut domains = Vec::new();
    let mut args: Vec<(&str, u64)> = Vec::new();
    for d in &exp.plan {
        let start = args.len() as u32;
        args.extend(d.args.iter().map(|(k, v)| (k.as_str(), *v)));
        domains.push(PlannedDomain {
            name: &d.name,
            group: &d.group,
            workload: &d.workload,
            vcpus: d.vcpus,
            memory_kib: d.memory_kib.min(u64::from(u32::MAX)) as u32,
            sched: sched_params(d)?,
            weight: d.weight.min(u64::from(u32::MAX)) as u32,
            cap: d.cap.min(u64::from(u32::MAX)) as u32,
            expect: match d.expect {
                spec::Expect::Ok => Expect::Ok,
                spec::Expect::Killed => Expect::Killed,
            },
            pool: d.pool as u32,
            args_start: start,
            args_len: args.len() as u32 - start,
        });
    }
    let encode_err = |e: plan::CodecError| format!("cannot encode the plan: {e}");
    let events = planned_events(exp)?;
    let event_bytes = plan::encode_seq(&events).map_err(encode_err)?;
    let domain_bytes = plan::encode_seq(&domains).map_err(encode_err)?;
    let arg_bytes = plan::encode_seq(&args).map_err(encode_err)?;
    let plan = Plan {
        name: &exp.name,
        duration_ms: exp.duration_ms,
        warmup_ms: exp.warmup_ms,
        cpus: exp.cpus,
        shape: [exp.shape.0, exp.shape.1, exp.shape.2],
        // The first pool's: Domain0's, and the `run` record's.
        policy: exp.pool_plans.first().map_or(&exp.policy, |p| &p.policy),
        domains: EncodedSeq {
            count: domains.len() as u32,
            bytes: &domain_bytes,
        },
        args: EncodedSeq {
            count: args.len() as u32,
            bytes: &arg_bytes,
        },
        bench: exp.bench,
        churn: exp.churn.as_ref().map(|c| plan::Churn {
            lifetimes: c.lifetimes,
            run_ms: c.run_ms,
            check_every: c.check_every,
            seed: c.seed,
        }),
        window_ms: exp.window_ms,
        events: EncodedSeq {
            count: events.len() as u32,
            bytes: &event_bytes,
        },
        pools: if exp.pools {
            exp.pool_plans.len() as u32
        } else {
            0
        },
    };
    plan::encode(&plan).map_err(encode_err)
}

/// Writes the archive for `exp` to `out`, taking images from `images`.
pub fn write(exp: &Experiment, images: &Path, out: &Path) -> Result<(), String> {
    let mut names: BTreeSet<&str> = exp.plan.iter().map(|d| d.workload.as_str()).collect();
    names.insert(plan::DOM0_IMAGE);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file =
        std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut archive = tar::Builder::new(file);
    let mut add = |name: &str, data: &[u8]| -> Result<(), String> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, data)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))
    };
    let plan = plan_bytes(exp)?;
    if plan.len() as u64 > abi::layout::PLAN_LIMIT {
        return Err(format!(
            "the plan is {} bytes, more than the {} the hypervisor maps for Domain0",
            plan.len(),
            abi::layout::PLAN_LIMIT
        ));
    }
    add(plan::FILE, &plan)?;
    for name in names {
        let path = images.join(name);
        let data = std::fs::read(&path).map_err(|e| {
            format!("guest image {} is missing ({e}); build it with `cargo build --release -p workloads`", path.display())
        })?;
        check_image_span(name, &path, &data)?;
        add(name, &data)?;
    }
    archive
        .finish()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}

/// The spec validator sized every domain's memory for an image of at most
/// `sched::spec::image_bytes` (Domain0's: `DOM0_IMAGE_BYTES`): an image that spans more
/// would make that check wrong, so it is not booted.
fn check_image_span(name: &str, path: &Path, data: &[u8]) -> Result<(), String> {
    let bound = if name == plan::DOM0_IMAGE {
        spec::DOM0_IMAGE_BYTES
    } else {
        spec::image_bytes(name)
    };
    let span = elf_span(data).ok_or_else(|| format!("{} is not an ELF64 image", path.display()))?;
    if span > bound {
        return Err(format!(
            "guest image {} spans {} KiB in memory, more than the {} KiB the spec validator \
             assumes for `{name}`: raise its bound in sched::spec::image_bytes",
            path.display(),
            span.div_ceil(1024),
            bound >> 10
        ));
    }
    Ok(())
}

/// Bytes an ELF64 image spans once loaded: from the page of its lowest PT_LOAD segment to
/// the end of its highest (bss included), as the hypervisor counts it; `None` if it is not
/// a little-endian ELF64 file with loadable segments.
pub fn elf_span(data: &[u8]) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_LOAD: u32 = 1;
        if u32_at(ph)? != PT_LOAD {
            continue;
        }
        let (vaddr, memsz) = (u64_at(ph + 16)?, u64_at(ph + 40)?);
        lo = lo.min(vaddr & !0xfff);
        hi = hi.max(vaddr.checked_add(memsz)?);
    }
    (hi > 0).then(|| hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Overrides, load};

    #[test]
    fn plan_carries_every_domain_with_its_arguments() {
        let exp = load(None, &Overrides::default()).unwrap();
        let bytes = plan_bytes(&exp).unwrap();
        let plan = plan::decode(&bytes).unwrap();
        assert_eq!(plan.name, exp.name);
        assert_eq!(plan.domains.count as usize, exp.plan.len());
        let first = plan.domains().next().unwrap().unwrap();
        assert_eq!(first.name, exp.plan[0].name);
        assert_eq!(first.workload, exp.plan[0].workload);
        assert_eq!(u64::from(first.weight), exp.plan[0].weight);
        let given: Vec<_> = exp.plan[0]
            .all_params
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(first.sched.iter().collect::<Vec<_>>(), given);
        assert_eq!(plan.churn, None);
    }

    #[test]
    fn any_per_domain_parameter_a_policy_declares_reaches_the_plan() {
        // Not one of the names the hypervisor used to know: a new policy's own parameter.
        // Every parameter the spec gives travels (the hypervisor gives the domain's pool's
        // policy those it declares and keeps the rest for another pool or policy).
        let mut exp = load(None, &Overrides::default()).unwrap();
        exp.plan[0].all_params = vec![("weight".into(), 3), ("lag_limit_us".into(), 1500)];
        let bytes = plan_bytes(&exp).unwrap();
        let plan = plan::decode(&bytes).unwrap();
        let first = plan.domains().next().unwrap().unwrap();
        assert_eq!(first.sched.get("lag_limit_us"), Some(1500));
        assert_eq!(first.sched.get("weight"), Some(3));
        assert_eq!(first.sched.len(), 2);
        // Beyond the control ABI's bounds: an error naming the domain and the parameter.
        exp.plan[0].all_params = vec![("x".repeat(25), 1)];
        let err = plan_bytes(&exp).unwrap_err();
        assert!(
            err.contains(&exp.plan[0].name) && err.contains("is 25 bytes"),
            "{err}"
        );
    }

    #[test]
    fn plan_carries_the_churn() {
        let spec =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/churn.toml");
        let exp = load(Some(&spec), &Overrides::default()).unwrap();
        let churn = exp.churn.clone().expect("churn.toml has [churn]");
        let plan_bytes = plan_bytes(&exp).unwrap();
        let plan = plan::decode(&plan_bytes).unwrap();
        assert_eq!(
            plan.churn,
            Some(plan::Churn {
                lifetimes: churn.lifetimes,
                run_ms: churn.run_ms,
                check_every: churn.check_every,
                seed: churn.seed,
            })
        );
        assert_eq!(plan.domains.count as usize, exp.plan.len());
    }

    /// An ELF64 header and `loads` PT_LOAD program headers (vaddr, memsz).
    fn elf(loads: &[(u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(loads.len() as u16 + 1).to_le_bytes());
        // A non-loadable header first (PT_NOTE), which must not count.
        let mut note = vec![0u8; 56];
        note[..4].copy_from_slice(&4u32.to_le_bytes());
        note[16..24].copy_from_slice(&0x9000_0000u64.to_le_bytes());
        b.extend(note);
        for &(vaddr, memsz) in loads {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&1u32.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            b.extend(ph);
        }
        b
    }

    #[test]
    fn image_span_is_checked_against_the_validators_bound() {
        let small = elf(&[(0x40_0000, 0x1e4a), (0x40_3000, 0x130)]);
        assert_eq!(elf_span(&small), Some(0x3130));
        assert_eq!(elf_span(b"not an elf"), None);
        let path = Path::new("cpu");
        assert!(check_image_span("cpu", path, &small).is_ok());
        let big = elf(&[(0x40_0000, spec::image_bytes("cpu") + 1)]);
        let e = check_image_span("cpu", path, &big).unwrap_err();
        assert!(e.contains("sched::spec::image_bytes"), "{e}");
        // Domain0 has its own, larger bound.
        assert!(check_image_span("dom0", path, &big).is_ok());
    }

    #[test]
    fn the_built_images_fit_their_bounds() {
        // Only where the guests are built (scripts/test builds them before the QEMU cases).
        let dir = images_dir();
        for name in spec::WORKLOADS
            .iter()
            .map(|w| w.name)
            .chain([plan::DOM0_IMAGE])
        {
            if let Ok(data) = std::fs::read(dir.join(name)) {
                check_image_span(name, &dir.join(name), &data).unwrap();
            }
        }
    }
}
