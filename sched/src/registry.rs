//! The registry: every policy by name, and how to build one with its global parameters.
//!
//! There is one list, [`ENTRIES`], written by the `register!` list in `lib.rs`, which also
//! declares each policy's module: adding `stride::Stride,` there is the whole registration.
//! The spec parser, `schedsim` (and its `--list-policies`), the benchmark, the hypervisor's
//! `sched=` option, the error messages, the property tests, the experiment checks, the
//! sweeps and the plots all take their policies from here.

use alloc::boxed::Box;
use alloc::string::String;

use crate::{Error, Policy, PolicyInfo, Topology};

/// One registered policy: its description and its constructor.
pub struct Entry {
    /// Name and parameters.
    pub info: &'static PolicyInfo,
    /// Builds it with default parameters.
    pub new: fn(&Topology) -> Result<Box<dyn Policy>, Error>,
}

/// Declares the policy modules and the table of [`ENTRIES`] (used once, in `lib.rs`).
macro_rules! register {
    ($($module:ident :: $ty:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// The table behind [`registry::ENTRIES`].
        const POLICY_ENTRIES: &[registry::Entry] = &[$(
            registry::Entry {
                info: &$module::INFO,
                new: |topo| Ok(alloc::boxed::Box::new($module::$ty::new(topo)?)),
            },
        )*];
    };
}
pub(crate) use register;

/// Every policy, in the order error messages and listings show them.
pub static ENTRIES: &[Entry] = crate::POLICY_ENTRIES;

/// Every policy's description, in [`ENTRIES`] order.
pub fn policies() -> impl Iterator<Item = &'static PolicyInfo> {
    ENTRIES.iter().map(|e| e.info)
}

/// Every policy's name, in [`ENTRIES`] order.
pub fn names() -> impl Iterator<Item = &'static str> {
    policies().map(|p| p.name)
}

/// The entry of the policy called `name`.
pub fn entry(name: &str) -> Result<&'static Entry, Error> {
    ENTRIES
        .iter()
        .find(|e| e.info.name == name)
        .ok_or_else(|| Error::UnknownPolicy { name: String::from(name) })
}

/// The description of the policy called `name`.
pub fn info(name: &str) -> Result<&'static PolicyInfo, Error> {
    entry(name).map(|e| e.info)
}

/// Builds the policy called `name` for `topo` and sets its global parameters. An unknown
/// name or parameter, or a value out of range, is an error that lists what is allowed.
pub fn build(
    name: &str,
    topo: &Topology,
    globals: &[(&str, u64)],
) -> Result<Box<dyn Policy>, Error> {
    let policy = (entry(name)?.new)(topo)?;
    for (param, value) in globals {
        policy.set_global_param(param, *value)?;
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_builds_under_its_own_name() {
        let topo = Topology::flat(2, 4, 4);
        let mut seen = alloc::vec::Vec::new();
        for e in ENTRIES {
            assert!(!seen.contains(&e.info.name), "{} registered twice", e.info.name);
            seen.push(e.info.name);
            let p = build(e.info.name, &topo, &[]).unwrap();
            assert_eq!(p.info().name, e.info.name, "the entry builds another policy");
        }
        assert!(matches!(info("nope"), Err(Error::UnknownPolicy { .. })));
    }

    #[test]
    fn every_policys_domain_params_fit_the_hypervisors_control_abi() {
        for info in policies() {
            if let Err(e) = crate::limits::domain_params_fit(info) {
                panic!("{e}");
            }
        }
        const MANY: [crate::ParamSpec; crate::limits::MAX_DOMAIN_PARAMS + 1] =
            [WEIGHT; crate::limits::MAX_DOMAIN_PARAMS + 1];
        const LONG: [crate::ParamSpec; 1] =
            [crate::ParamSpec { name: "a_name_well_over_24_bytes", ..WEIGHT }];
        let msg = |domain_params: &'static [crate::ParamSpec]| {
            let info = PolicyInfo {
                name: "x",
                summary: "",
                domain_params,
                global_params: &[],
                preempts: true,
                timed: false,
            };
            crate::limits::domain_params_fit(&info).unwrap_err().to_string()
        };
        assert_eq!(
            msg(&MANY),
            "policy `x` declares 9 per-domain parameters; allowed: at most 8 (what the \
             hypervisor's control ABI carries per domain)"
        );
        assert!(msg(&LONG).contains("`a_name_well_over_24_bytes` is 25 bytes long"));
    }

    const WEIGHT: crate::ParamSpec =
        crate::ParamSpec { name: "weight", default: 1, min: 1, max: 2, doc: "", choices: &[] };
}
