// Shared by the build scripts that compile programs of `bpf/` (included with `include!`).

/// Compiles the BPF C file `src` (relative to the crate) into `$OUT_DIR/<obj>` with
/// libbpf-cargo (clang, target bpf).
fn compile_bpf(src: &str, obj: &str) {
    use std::env;
    use std::path::PathBuf;

    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join(src);
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join(obj);
    let mut args = vec!["-O2".to_string(), "-Wall".to_string()];
    // Debian keeps asm/types.h under the multiarch include directory.
    let multiarch = format!("/usr/include/{}-linux-gnu", env::consts::ARCH);
    if PathBuf::from(&multiarch).is_dir() {
        args.push(format!("-I{multiarch}"));
    }
    if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
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
