//! The `xdpvs` binary's library: ipvsadm grammar, control plane, director, lab.
#![forbid(unsafe_code)]

pub mod cli;
pub mod control;
pub mod demo;
pub mod director;
pub mod ipvsadm;
pub mod lab;
pub mod resolve;
pub mod selfcheck;

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
