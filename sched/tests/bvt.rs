//! bvt's rules at their edges.

use sched::bvt::Bvt;
use sched::{DomainId, Policy, Topology, VcpuId};

/// A wake-up whose `now` was read on another CPU before the decision that unwarped the
/// vCPU (a waker's CPU stalled by the host under TCG) has not rested since the unwarp: its
/// time since is 0, not a wrapped difference (which overflowed in a debug build and, in
/// the hypervisor's release build, let the vCPU warp again at once; an audit, session 21).
#[test]
fn a_wake_stamped_before_the_unwarp_does_not_underflow() {
    let p = Bvt::new(&Topology::flat(2, 4, 4)).unwrap();
    p.add_domain(DomainId(0), &[("warp_us", 1000), ("warpl_us", 100), ("warpu_us", 1_000_000)])
        .unwrap();
    p.insert_vcpu(VcpuId(0), DomainId(0), 0).unwrap();
    p.wake(VcpuId(0), 1_000);
    assert_eq!(p.schedule(0, 1_000).next, Some(VcpuId(0)));
    // Its warp limit passes: this decision unwarps it at 10 ms.
    assert_eq!(p.schedule(0, 10_000_000).next, Some(VcpuId(0)));
    // It blocks.
    p.sleep(VcpuId(0), 10_000_100);
    p.schedule(0, 10_000_100);
    // A waker on CPU 1 read its clock at 9.9 ms, before the unwarp, and gets here now.
    p.wake(VcpuId(0), 9_900_000);
    assert_eq!(p.schedule(0, 10_000_200).next, Some(VcpuId(0)));
}
