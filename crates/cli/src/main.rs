//! `xdpvs`: an LVS director (direct routing, NAT and tunnelling) on AF_XDP.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    xdpvs::cli::main(std::env::args().collect())
}
