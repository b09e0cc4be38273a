//! `xdpvs`: an LVS Direct-Routing director on AF_XDP.
#![forbid(unsafe_code)]

mod selfcheck;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// An LVS Direct-Routing director in userspace on AF_XDP.
///
/// Clients send to a virtual IP; xdpvs picks a real server with an IPVS scheduler,
/// remembers the choice per connection, rewrites only the Ethernet addresses and sends
/// the frame on. Real servers answer clients directly.
#[derive(Debug, Parser)]
#[command(name = "xdpvs", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the packet pipeline over built-in frames and check every outcome (no NIC,
    /// no root needed).
    Selfcheck(selfcheck::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Selfcheck(args) => selfcheck::run(&args),
    }
}
