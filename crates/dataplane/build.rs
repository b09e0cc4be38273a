//! Compiles the XDP program in `bpf/` with libbpf-cargo (clang, target bpf).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../bpf/xdpvs.bpf.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("xdpvs.bpf.o");
    let mut args = vec!["-O2".to_string(), "-Wall".to_string()];
    // Debian keeps asm/types.h under the multiarch include directory.
    let multiarch = format!("/usr/include/{}-linux-gnu", env::consts::ARCH);
    if PathBuf::from(&multiarch).is_dir() {
        args.push(format!("-I{multiarch}"));
    }
    if let Err(e) = SkeletonBuilder::new()
        .source(&src)
        .obj(&out)
        .clang_args(args)
        .build()
    {
        panic!(
            "compiling {}: {e:#}\n(is clang installed? `bash .ci/setup` installs what the build needs)",
            src.display()
        );
    }
    println!("cargo:rerun-if-changed={}", src.display());
}
