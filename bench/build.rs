//! Compiles the benchmark's XDP programs (`bpf/bench.bpf.c`).

include!("../bpf/compile.rs");

fn main() {
    compile_bpf("../bpf/bench.bpf.c", "bench.bpf.o", None);
    println!("cargo:rerun-if-changed=../bpf/compile.rs");
}
