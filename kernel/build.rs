//! Links the hypervisor binary as a freestanding higher-half ELF with `linker.ld`.
//!
//! Only the stable host toolchain exists on the build machines, so the kernel is an ordinary
//! `x86_64-unknown-linux-gnu` binary with `#![no_std]`/`#![no_main]`, linked statically,
//! without the C runtime, at the addresses the linker script gives.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    // The linker's map, beside the binary (OUT_DIR is target/<profile>/build/kernel-*/out):
    // scripts/runner/src/bin/hot-text.rs reads which input sections each pattern of the
    // hot list in linker.ld took.
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let map = std::path::Path::new(&out).join("../../../domino.map");
    for arg in [
        format!("-Wl,-Map={}", map.display()),
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
