//! Test support for xdpvs, kept out of the product crates: builders of well-formed frames
//! ([`frames`]) and a LAN in network namespaces ([`lab`]) for the demo, the end-to-end
//! tests and the benchmark.
#![forbid(unsafe_code)]

pub mod frames;
pub mod lab;
