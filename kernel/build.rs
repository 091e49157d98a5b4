//! Links the hypervisor binary as a freestanding higher-half ELF with `linker.ld`.
//!
//! Only the stable host toolchain exists on the build machines, so the kernel is an ordinary
//! `x86_64-unknown-linux-gnu` binary with `#![no_std]`/`#![no_main]`, linked statically,
//! without the C runtime, at the addresses the linker script gives.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    for arg in [
        format!("-T{dir}/linker.ld"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=0x1000".into(),
        "-Wl,--no-dynamic-linker".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
