//! Turns the limits shared with the XDP program (`bpf/limits.h`) into Rust constants and,
//! with the `afxdp` feature, compiles the XDP steering program in `bpf/`.

#[cfg(feature = "afxdp")]
include!("../../bpf/compile.rs");

fn main() {
    shared_limits("../../bpf/limits.h");
    #[cfg(feature = "afxdp")]
    {
        compile_bpf(
            "../../bpf/xdpvs.bpf.c",
            "xdpvs.bpf.o",
            Some("xdpvs.skel.rs"),
        );
        println!("cargo:rerun-if-changed=../../bpf/compile.rs");
    }
}

/// Writes `$OUT_DIR/limits.rs` with one `pub const NAME: usize` per `#define XDPVS_NAME N`.
fn shared_limits(header: &str) {
    let text = std::fs::read_to_string(header).expect("bpf/limits.h is part of the source");
    let mut out = String::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if let (Some("#define"), Some(name), Some(value)) = (w.next(), w.next(), w.next()) {
            if let (Some(name), Ok(n)) = (name.strip_prefix("XDPVS_"), value.parse::<usize>()) {
                out.push_str(&format!(
                    "/// `XDPVS_{name}` of `bpf/limits.h`.\npub const {name}: usize = {n};\n"
                ));
            }
        }
    }
    assert!(
        out.contains("MAX_SERVICES"),
        "{header} defines no XDPVS_MAX_SERVICES"
    );
    let dest =
        std::path::Path::new(&std::env::var_os("OUT_DIR").expect("set by cargo")).join("limits.rs");
    std::fs::write(dest, out).expect("writing limits.rs");
    println!("cargo:rerun-if-changed={header}");
}
