//! Test support for xdpvs, kept out of the product crates: builders of well-formed frames
//! ([`frames`]) and, with the default feature `lab`, a LAN in network namespaces (`lab`)
//! for the demo, the end-to-end tests and the benchmark.
#![forbid(unsafe_code)]

pub mod frames;
#[cfg(feature = "lab")]
pub mod lab;

/// Whether this process runs as root (effective uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
