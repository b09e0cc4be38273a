//! The `xdpvs` command line: subcommands and ipvsadm's grammar. Lives in the library so
//! that other binaries (the benchmark harness) can run the very same director.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{ArgAction, Parser, Subcommand};
use xdpvs_director::control::{client, proto::Reply, DEFAULT_SOCKET};
use xdpvs_director::RunOptions;

use crate::{demo, ipvsadm, selfcheck};

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
    #[arg(long, env = "XDPVS_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q: warnings and errors only).
    #[arg(short = 'q', long = "quiet", action = ArgAction::Count, global = true)]
    quiet: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the director on an interface (foreground; stops on SIGINT/SIGTERM).
    Run(RunOptions),
    /// Build a lab in network namespaces (client, director, three real servers), run the
    /// director, configure it with ipvsadm commands and send it HTTP requests (root).
    Demo(demo::DemoArgs),
    /// Run the packet pipeline over built-in frames and check every outcome (no NIC,
    /// no root needed).
    Selfcheck(selfcheck::Args),
}

/// Logs to standard error with timestamps, at info by default.
fn init_logging(verbose: u8, quiet: u8) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Runs `xdpvs` with `raw` as its command line (`raw[0]` is the program name).
pub fn main(raw: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(&raw) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
            } else {
                // One line, as every other error of xdpvs.
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("invalid command line");
                eprintln!("xdpvs: {}", first.trim_start_matches("error: "));
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let result = match &cli.command {
        Some(Command::Run(opts)) => run(opts, &cli),
        Some(Command::Selfcheck(args)) => selfcheck::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        None => return ipvsadm_command(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpvs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `xdpvs run`: the director until SIGINT or SIGTERM.
fn run(opts: &RunOptions, cli: &Cli) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| anyhow::anyhow!("{}", xdpvs_director::RunError::Signals(e)))?;
    }
    // The director's errors say everything in their one line (their sources are in it).
    xdpvs_director::run(opts, &cli.socket, &stop).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Parses an ipvsadm command into a request, has the director execute it and prints
/// the answer.
fn ipvsadm_command(cli: &Cli) -> ExitCode {
    let req = match cli.ipvs.request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xdpvs: {e}");
            return ExitCode::from(2);
        }
    };
    match client::request(&cli.socket, &req) {
        Ok(Ok(Reply::Done)) => ExitCode::SUCCESS,
        Ok(Ok(Reply::Table(t))) => {
            print!("{}", ipvsadm::format_list(&t));
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("xdpvs: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xdpvs: {e}");
            ExitCode::FAILURE
        }
    }
}
