//! Hypercall error codes: negative values in RAX, with Xen's (POSIX) errno numbers.

use serde::{Deserialize, Serialize};

crate::numbered_enum! {
    /// Why a hypercall failed.
    #[derive(Serialize, Deserialize)]
    pub enum Errno: i64 {
        /// The caller lacks the privilege (a domctl from a domain other than Domain0).
        Perm = 1,
        /// No such domain.
        Srch = 3,
        /// Out of memory (frames or domain slots).
        NoMem = 12,
        /// A pointer or length outside the caller's own memory.
        Fault = 14,
        /// The object is busy (e.g. destroying a running domain's vCPU from itself).
        Busy = 16,
        /// An argument out of range or malformed.
        Inval = 22,
        /// No such hypercall or operation.
        NoSys = 38,
        /// The reply does not fit the buffer given.
        TooBig = 7,
        /// Over a rate quota (console output): try again later.
        Again = 11,
    }
}

impl Errno {
    /// The value a hypercall returns in RAX for this error.
    pub const fn to_ret(self) -> i64 {
        -(self as i64)
    }

    /// Decodes a negative return value.
    pub fn from_ret(ret: i64) -> Option<Errno> {
        Errno::from_raw(ret.checked_neg()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_through_return_values() {
        assert_eq!(Errno::Perm.to_ret(), -1);
        assert_eq!(Errno::from_ret(-22), Some(Errno::Inval));
        assert_eq!(Errno::from_ret(-999), None);
        assert_eq!(Errno::from_ret(0), None);
        assert_eq!(Errno::from_ret(7), None);
        assert_eq!(Errno::from_ret(i64::MIN), None);
        for e in Errno::ALL {
            assert_eq!(Errno::from_ret(e.to_ret()), Some(e));
        }
    }
}
