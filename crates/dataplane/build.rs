//! Compiles the XDP steering program in `bpf/`.

include!("../../bpf/compile.rs");

fn main() {
    compile_bpf("../../bpf/xdpvs.bpf.c", "xdpvs.bpf.o");
    println!("cargo:rerun-if-changed=../../bpf/compile.rs");
}
