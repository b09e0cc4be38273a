//! Test support for xdpvs: builders of well-formed frames ([`frames`]) and, with the
//! default feature `lab`, a LAN in network namespaces (`lab`) for the demo, the
//! end-to-end tests and the benchmark. The director's crates (`xdpvs-dataplane`,
//! `xdpvs-director`) use it only in their tests; the `xdpvs` binary links it for `xdpvs
//! demo` (the lab) and `xdpvs selfcheck` (the frames), its two commands that build test
//! traffic, so the demo and the self-check ship with the binary.
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

/// Whether this run is CI's (`CI` set, as CI sets it: `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A test that cannot run here (`why`: no root, no AF_XDP, a package missing). Under CI,
/// which runs as root after `.ci/setup` installed every package, that is a failure:
/// this panics. Elsewhere it says so on stderr, and the caller returns (skips).
pub fn cannot_run(what: &str, why: &str) {
    assert!(
        !in_ci(),
        "{what} cannot run under CI=true: {why} (CI runs as root after `bash .ci/setup`; a test there never skips)"
    );
    eprintln!("SKIP {what}: {why}");
}
