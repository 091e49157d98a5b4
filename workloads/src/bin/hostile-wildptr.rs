//! `hostile-wildptr`: passes wild pointers and forbidden requests to hypercalls. Each must
//! fail with the right error and nothing else:
//! - `console_write` of hypervisor memory, of an unmapped address and of a range that wraps
//!   around the address space: `Errno::Fault` (`Inval` also accepted for the last); of 1 TiB
//!   from its own image: `Fault`, `Inval`, `TooBig`, or a short write of its own bytes;
//! - `domctl` with a request pointer into the hypervisor: `Perm` (or `Fault`);
//! - a well-formed `domctl` (`GetInfo` of Domain0) and `sysctl` (`GetPolicy`, and
//!   `Shutdown { code: 1 }`, which would end the run as failed if obeyed): `Perm`.
//!
//! It prints each result. If all were right it touches an unmapped address so that the
//! hypervisor kills it (expected fate: killed); with argument `clean` = 1 it shuts down with
//! code 0 instead (expected fate: ok). If any check failed it shuts down with
//! `hostile::CHECK_FAILED` (Domain0 reports `killed: crashed (shutdown code 3)`), which
//! matches neither expectation. vCPU 0 acts; other vCPUs park.
#![no_std]
#![no_main]

use abi::control::{self, Domctl, Sysctl};
use abi::error::Errno;
use abi::hypercall::{CONSOLE_WRITE, DOMCTL};
use workloads::hypercall::{self, raw, result};
use workloads::{entry, hostile, println, rt, shared};

entry!(main);

const HYPERVISOR: u64 = 0xffff_ffff_8010_0000;
const UNMAPPED: u64 = 0x3000_0000;

/// Prints one check's outcome; returns whether it was among the acceptable errors.
fn expect(what: &str, got: Result<u64, Errno>, allowed: &[Errno]) -> bool {
    let ok = matches!(got, Err(e) if allowed.contains(&e));
    println!(
        "{}: {what}: got {got:?}, want {allowed:?}",
        if ok { "ok" } else { "WRONG" }
    );
    ok
}

fn console_write_raw(ptr: u64, len: u64) -> Result<u64, Errno> {
    // SAFETY: console_write only reads guest memory; nothing of ours is written.
    result(unsafe { raw(CONSOLE_WRITE, ptr, len, 0, 0, 0) })
}

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    use Errno::{Fault, Inval, Perm, Srch, TooBig};
    let mut all = true;
    all &= expect(
        "console_write of hypervisor memory",
        console_write_raw(HYPERVISOR, 64),
        &[Fault],
    );
    all &= expect(
        "console_write of an unmapped address",
        console_write_raw(UNMAPPED, 64),
        &[Fault],
    );
    all &= expect(
        "console_write of a range wrapping around",
        console_write_raw(u64::MAX - 15, 64),
        &[Fault, Inval],
    );
    // The range runs far past our memory. Refusing it is right; so is a short write of
    // bytes that are ours (the hypervisor copies in chunks, like POSIX `write`).
    let huge = console_write_raw(abi::layout::IMAGE_BASE, 1 << 40);
    all &= match huge {
        Ok(n) if n < 1 << 20 => {
            println!("ok: console_write of 1 TiB from our image: short write of {n} bytes");
            true
        }
        got => expect(
            "console_write of 1 TiB from our image",
            got,
            &[Fault, Inval, TooBig],
        ),
    };

    let mut reply = [0u8; 256];
    // SAFETY: the only memory the hypervisor may write is `reply`, ours and borrowed mutably.
    let bad_request = result(unsafe {
        raw(
            DOMCTL,
            HYPERVISOR,
            64,
            reply.as_mut_ptr() as u64,
            reply.len() as u64,
            0,
        )
    });
    all &= expect(
        "domctl with a hypervisor pointer",
        bad_request,
        &[Perm, Fault],
    );

    let mut req = [0u8; 64];
    let as_u64 = |r: Result<usize, Errno>| r.map(|n| n as u64);
    let n = control::encode(&Domctl::GetInfo { domain: 0 }, &mut req).unwrap_or(0);
    all &= expect(
        "domctl GetInfo from an unprivileged domain",
        as_u64(hypercall::domctl(&req[..n], &mut reply)),
        &[Perm],
    );
    let n = control::encode(&Sysctl::GetPolicy, &mut req).unwrap_or(0);
    all &= expect(
        "sysctl GetPolicy from an unprivileged domain",
        as_u64(hypercall::sysctl(&req[..n], &mut reply)),
        &[Perm],
    );
    let n = control::encode(&Sysctl::Shutdown { code: 1 }, &mut req).unwrap_or(0);
    all &= expect(
        "sysctl Shutdown from an unprivileged domain",
        as_u64(hypercall::sysctl(&req[..n], &mut reply)),
        &[Perm],
    );

    all &= expect(
        "event send on a port never allocated",
        hypercall::evtchn_send(999),
        &[Inval],
    );
    all &= expect(
        "event bind to a domain that does not exist",
        hypercall::evtchn_bind(60_000, 1).map(u64::from),
        &[Srch],
    );
    all &= expect("close of port 0", hypercall::evtchn_close(0), &[Inval]);

    if !all {
        println!("some hypercalls accepted what they must refuse");
        return hostile::CHECK_FAILED;
    }
    if shared::arg("clean", 0) != 0 {
        println!("every check passed; shutting down cleanly");
        return 0;
    }
    println!("every check passed; now touching {UNMAPPED:#x} to be killed");
    hostile::load(UNMAPPED);
    hostile::survived("a read of an unmapped address")
}
