//! The registry: every policy by name, and how to build one with its global parameters.
//!
//! To add a policy, add one [`Entry`] to [`ENTRIES`]; the spec parser, `schedsim`, the
//! benchmark and the error messages pick it up from here.

use alloc::boxed::Box;
use alloc::string::String;

use crate::{Error, Policy, PolicyInfo, Topology, bvt, credit, fifo, rr};

/// One registered policy: its description and its constructor.
pub struct Entry {
    /// Name and parameters.
    pub info: &'static PolicyInfo,
    /// Builds it with default parameters.
    pub new: fn(&Topology) -> Result<Box<dyn Policy>, Error>,
}

/// Every policy, in the order error messages list them.
pub static ENTRIES: &[Entry] = &[
    Entry { info: &rr::INFO, new: |t| Ok(Box::new(rr::RoundRobin::new(t)?)) },
    Entry { info: &credit::INFO, new: |t| Ok(Box::new(credit::Credit::new(t)?)) },
    Entry { info: &bvt::INFO, new: |t| Ok(Box::new(bvt::Bvt::new(t)?)) },
    Entry { info: &fifo::INFO, new: |t| Ok(Box::new(fifo::Fifo::new(t)?)) },
];

/// The descriptions alone, for listing.
pub static POLICIES: &[&PolicyInfo] = &[&rr::INFO, &credit::INFO, &bvt::INFO, &fifo::INFO];

/// The description of the policy called `name`.
pub fn info(name: &str) -> Result<&'static PolicyInfo, Error> {
    ENTRIES
        .iter()
        .find(|e| e.info.name == name)
        .map(|e| e.info)
        .ok_or_else(|| Error::UnknownPolicy { name: String::from(name) })
}

/// Builds the policy called `name` for `topo` and sets its global parameters. An unknown
/// name or parameter, or a value out of range, is an error that lists what is allowed.
pub fn build(
    name: &str,
    topo: &Topology,
    globals: &[(&str, u64)],
) -> Result<Box<dyn Policy>, Error> {
    let entry = ENTRIES
        .iter()
        .find(|e| e.info.name == name)
        .ok_or_else(|| Error::UnknownPolicy { name: String::from(name) })?;
    let policy = (entry.new)(topo)?;
    for (param, value) in globals {
        policy.set_global_param(param, *value)?;
    }
    Ok(policy)
}
