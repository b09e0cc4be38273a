// Shared by the build scripts that compile programs of `bpf/` (included with `include!`).

/// Compiles the BPF C file `src` (relative to the crate) into `$OUT_DIR/<obj>` with
/// libbpf-cargo (clang, target bpf) and, if `skel` is given, generates its typed skeleton
/// (maps, programs, and the C structs as Rust types) into `$OUT_DIR/<skel>`.
fn compile_bpf(src: &str, obj: &str, skel: Option<&str>) {
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
    let mut builder = libbpf_cargo::SkeletonBuilder::new();
    builder.source(&src).obj(&out).clang_args(args);
    let built = match skel {
        Some(skel) => builder.build_and_generate(out.with_file_name(skel)),
        None => builder.build(),
    };
    if let Err(e) = built {
        panic!(
            "compiling {}: {e:#}\n(is clang installed? `bash .ci/setup` installs what the build needs)",
            src.display()
        );
    }
    println!("cargo:rerun-if-changed={}", src.display());
}
