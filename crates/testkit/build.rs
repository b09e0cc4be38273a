//! With the `lab` feature, compiles the lab's tc program (`bpf/lab.bpf.c`).

#[cfg(feature = "lab")]
include!("../../bpf/compile.rs");

fn main() {
    #[cfg(feature = "lab")]
    {
        compile_bpf("../../bpf/lab.bpf.c", "lab.bpf.o", None);
        compile_bpf("../../bpf/lab_decap.bpf.c", "lab_decap.bpf.o", None);
        println!("cargo:rerun-if-changed=../../bpf/compile.rs");
    }
}
