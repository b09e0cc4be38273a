//! `xdpvs`: an LVS director (direct routing and NAT) on AF_XDP.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    xdpvs::cli::main(std::env::args().collect())
}
