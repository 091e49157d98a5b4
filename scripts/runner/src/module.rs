//! The boot module: a ustar archive of the guest images and the experiment plan.
//!
//! The hypervisor reads it from QEMU's `-initrd` (or GRUB's `module2`): Domain0's image
//! (`dom0`), one image per workload the experiment uses (named by the workload), and `plan`,
//! the spec expanded into one entry per domain (`abi::plan`, postcard). Domain0 carries the
//! plan out; it never sees TOML.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use abi::control::SchedParams;
use abi::plan::{self, EncodedSeq, Expect, Plan, PlannedDomain};
use sched::spec::{self, DomainPlan};

use crate::experiment::Experiment;

/// Where the guest images are: cargo's release directory.
pub fn images_dir() -> PathBuf {
    crate::artifacts::target_dir().join("release")
}

/// The per-domain scheduling parameters: the spec's, else the policy's defaults.
fn sched_params(policy: &str, d: &DomainPlan) -> SchedParams {
    let info = sched::registry::info(policy).ok();
    let value = |name: &str| -> u64 {
        d.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .or_else(|| info.and_then(|i| i.domain_param(name)).map(|p| p.default))
            .unwrap_or(0)
    };
    SchedParams {
        weight: d.weight.min(u64::from(u32::MAX)) as u32,
        cap: d.cap.min(u64::from(u32::MAX)) as u32,
        warp_us: value("warp_us"),
        warpl_us: value("warpl_us"),
        warpu_us: value("warpu_us"),
    }
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
            sched: sched_params(&exp.policy, d),
            expect: match d.expect {
                spec::Expect::Ok => Expect::Ok,
                spec::Expect::Killed => Expect::Killed,
            },
            args_start: start,
            args_len: args.len() as u32 - start,
        });
    }
    let encode_err = |e: plan::CodecError| format!("cannot encode the plan: {e}");
    let domain_bytes = plan::encode_seq(&domains).map_err(encode_err)?;
    let arg_bytes = plan::encode_seq(&args).map_err(encode_err)?;
    let plan = Plan {
        name: &exp.name,
        duration_ms: exp.duration_ms,
        warmup_ms: exp.warmup_ms,
        cpus: exp.cpus,
        policy: &exp.policy,
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
    add(plan::FILE, &plan_bytes(exp)?)?;
    for name in names {
        let path = images.join(name);
        let data = std::fs::read(&path).map_err(|e| {
            format!("guest image {} is missing ({e}); build it with `cargo build --release -p workloads`", path.display())
        })?;
        add(name, &data)?;
    }
    archive
        .finish()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
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
        assert_eq!(first.sched.weight as u64, exp.plan[0].weight);
        assert_eq!(plan.churn, None);
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
}
