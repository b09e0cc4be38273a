//! The `xdpvs` command line: subcommands and ipvsadm's grammar. Lives in the library so
//! that other binaries (the benchmark harness) can run the very same director.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{control, demo, director, ipvsadm, selfcheck};
use clap::{Parser, Subcommand};

/// An LVS Direct-Routing director in userspace on AF_XDP.
///
/// Run the director with `xdpvs run -i IFACE`, then configure it with ipvsadm's own
/// commands, e.g. `xdpvs -A -t 198.18.0.100:80 -s rr`, `xdpvs -a -t 198.18.0.100:80 -r
/// 198.18.0.11 -g`, `xdpvs -Ln`, `xdpvs -C`.
#[derive(Debug, Parser)]
#[command(
    name = "xdpvs",
    version,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    ipvs: ipvsadm::IpvsArgs,
    /// Control socket of the director to talk to.
    #[arg(long, env = "XDPVS_SOCKET", default_value = control::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the director on an interface (foreground; stops on SIGINT/SIGTERM).
    Run(director::RunArgs),
    /// Build a lab in network namespaces (client, director, three real servers), run the
    /// director, configure it with ipvsadm commands and send it HTTP requests (root).
    Demo(demo::DemoArgs),
    /// Run the packet pipeline over built-in frames and check every outcome (no NIC,
    /// no root needed).
    Selfcheck(selfcheck::Args),
}

/// Runs `xdpvs` with `raw` as its command line (`raw[0]` is the program name).
pub fn main(raw: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(&raw) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let result = match &cli.command {
        Some(Command::Run(args)) => director::run(args, &cli.socket),
        Some(Command::Selfcheck(args)) => selfcheck::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        None => return ipvsadm_command(&cli, &raw[1..]),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpvs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks an ipvsadm command locally, then has the director execute it.
fn ipvsadm_command(cli: &Cli, raw: &[String]) -> ExitCode {
    if let Err(e) = cli.ipvs.request() {
        eprintln!("xdpvs: {e}");
        return ExitCode::from(2);
    }
    // The director parses the same arguments; --socket is ours, not its.
    let mut args = Vec::new();
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            it.next();
        } else if !a.starts_with("--socket=") {
            args.push(a.clone());
        }
    }
    match control::send(&cli.socket, &args) {
        Ok((true, out)) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Ok((false, err)) => {
            eprint!("xdpvs: {err}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xdpvs: {e}");
            ExitCode::FAILURE
        }
    }
}
