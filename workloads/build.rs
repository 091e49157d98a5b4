//! Links every guest program as a static, non-PIE ELF at `abi::layout::IMAGE_BASE` with
//! `link.ld`, without the C runtime (the runtime's `entry!` provides `_start`).
//!
//! Only the stable host toolchain exists on the build machines, so guests are ordinary
//! `x86_64-unknown-linux-gnu` binaries with `#![no_std]`/`#![no_main]`; the arguments apply
//! to the binaries only, so the library's host tests link normally.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        format!("-T{dir}/link.ld"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=0x1000".into(),
        "-Wl,--no-dynamic-linker".into(),
        // Images go into the boot module: keep the symbol table (to resolve a killed
        // guest's rip) but not the DWARF, which is 50 times the code.
        "-Wl,--strip-debug".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
