//! Builds the relay's kernel fast path (`bpf/relay.bpf.c`) with clang.
//!
//! The program is C because a tc program is kernel code that only a BPF
//! back end compiles: Rust's (aya-ebpf) needs a nightly toolchain and
//! bpf-linker, clang needs a Debian package. Without clang the daemon is
//! built without the fast path (clang missing or failing, libbpf-dev
//! missing): an empty object is embedded, and asking
//! for the fast path (`media.fast_path`) is refused at start with the
//! reason. `CLANG` names another clang.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "bpf/relay.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // Built again when clang or libbpf-dev is installed or upgraded (a
    // path that does not exist counts as changed on every build).
    let installed = if clang.contains('/') {
        clang.clone()
    } else {
        format!("/usr/bin/{clang}")
    };
    println!("cargo:rerun-if-changed={installed}");
    println!("cargo:rerun-if-changed=/usr/include/bpf/bpf_helpers.h");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("relay.bpf.o");
    // The multiarch directory holds <asm/types.h>, which the BPF target
    // does not look in by itself.
    let multiarch = format!(
        "-I/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    let built = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(&multiarch)
        .args(["-c", source, "-o"])
        .arg(&out)
        .status();
    let failure = match built {
        Ok(status) if status.success() => return,
        Ok(status) => format!("{clang} failed ({status})"),
        Err(e) => format!("{clang} cannot run ({e})"),
    };
    println!(
        "cargo:warning=no kernel fast path in this build: {failure}; \
         install clang and libbpf-dev to build it"
    );

    if let Err(e) = std::fs::write(&out, b"") {
        panic!("cannot write {}: {e}", out.display());
    }
}
