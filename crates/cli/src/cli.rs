//! The `xdpvs` command line: subcommands and ipvsadm's grammar. Lives in the library so
//! that other binaries (the benchmark harness) can run the very same director.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use xdpvs_director::control::proto::{ControlError, Reply, Request};
use xdpvs_director::control::{client, DEFAULT_SOCKET};
use xdpvs_director::RunOptions;

use crate::ask::{ask_at, fail};
use crate::ipvsadm::Action;
use crate::{check, demo, explain, format, ipvsadm, rssetup, selfcheck};

/// An LVS director (direct routing, NAT and tunnelling) in userspace on AF_XDP.
///
/// Run the director with `xdpvs run -i IFACE`, then configure it with ipvsadm's own
/// commands, e.g. `xdpvs -A -t 198.18.0.100:80 -s rr`, `xdpvs -a -t 198.18.0.100:80 -r
/// 198.18.0.11 -g`, `xdpvs -Ln`, `xdpvs -C`.
#[derive(Debug, Parser)]
#[command(name = "xdpvs", version, disable_version_flag = true)]
struct Cli {
    /// Print the version (`-v`, in ipvsadm's form).
    #[arg(short = 'v', short_alias = 'V', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    ipvs: ipvsadm::IpvsArgs,
    /// Control socket of the director to talk to (before or after a subcommand).
    #[arg(long, env = "XDPVS_SOCKET", default_value = DEFAULT_SOCKET, global = true, help_heading = "Global options")]
    socket: PathBuf,
    /// More log output (once: debug, twice: trace); RUST_LOG overrides.
    #[arg(long = "verbose", action = ArgAction::Count, global = true, help_heading = "Global options")]
    verbose: u8,
    /// Less log output (-q: warnings and errors only).
    #[arg(short = 'q', long = "quiet", action = ArgAction::Count, global = true, help_heading = "Global options")]
    quiet: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the director on an interface (foreground; stops on SIGINT, and on SIGTERM —
    /// after draining, with --announce).
    Run(Box<RunArgs>),
    /// Build a lab in network namespaces (client, director, three real servers), run the
    /// director, configure it with ipvsadm commands and send it HTTP requests (root).
    Demo(demo::DemoArgs),
    /// Run the packet pipeline over built-in frames and check every outcome (no NIC,
    /// no root needed).
    Selfcheck(selfcheck::Args),
    /// On a real server: put the VIP on lo and stop the host answering ARP for it
    /// (`--apply`), or print the commands (`--print`); `--undo` reverts an earlier apply.
    #[command(name = "rs-setup")]
    RsSetup(rssetup::Args),
    /// On the director: probe every VIP (who answers ARP for it) and every real server
    /// (MAC resolved, takes traffic for the VIP, port open); a checklist with the fix for
    /// each failure, exit status 1 if anything failed.
    Check(check::Args),
    /// On the director: where a client's flow to a service goes and why (its connection,
    /// its persistence template, or the scheduler's pick now), from the workers' tables.
    Explain(explain::Args),
    /// On the director: withdraw its VIPs (`run --announce`), forward the flows that
    /// still arrive until none has for 2 s or the grace time passes, then stop; waits
    /// until the director has stopped.
    Drain(DrainArgs),
    /// Check a --keepalived or --restore file without a director (no root): read and
    /// apply it to an empty table as `run` would, print that table in `-S` form, exit 0;
    /// or print the line `run` would fail with, exit 1 (as `keepalived -t`).
    #[command(name = "config-test")]
    ConfigTest(TableArgs),
    /// Print the man page xdpvs(8) (roff), e.g. `xdpvs manpage > xdpvs.8`; with `--all
    /// DIR`, write it and a page per subcommand (xdpvs-run.8, ...) into DIR, e.g.
    /// /usr/local/share/man/man8.
    Manpage {
        /// Write every page into this directory.
        #[arg(long, value_name = "DIR")]
        all: Option<PathBuf>,
    },
    /// Print shell completions, e.g. `xdpvs completions bash > /etc/bash_completion.d/xdpvs`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `xdpvs run`'s options: the director's, and a table to start with.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    opts: RunOptions,
    #[command(flatten)]
    table: TableArgs,
}

/// A table to start with: `run`'s, and what `config-test` checks.
#[derive(Debug, clap::Args)]
struct TableArgs {
    /// Start with this table, in ipvsadm-save format (what `xdpvs -S -n` printed), applied
    /// as one change before the control socket opens; read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// Start with the LVS sections of this keepalived.conf (virtual_server and
    /// virtual_server_group blocks: schedulers, persistence, real servers, weights,
    /// TCP_CHECK/HTTP_GET health checks, sorry servers; includes, conditional lines and
    /// parameters as keepalived reads them); read again on SIGHUP. VRRP and global
    /// sections are skipped.
    #[arg(long, value_name = "FILE", conflicts_with = "restore")]
    keepalived: Option<PathBuf>,
    /// keepalived's config id (its `-i`): which conditional lines (`@ID`, `@^ID`) of the
    /// keepalived.conf apply (default: the host name up to its first dot, as keepalived).
    #[arg(long, value_name = "ID", requires = "keepalived")]
    config_id: Option<String>,
}

/// How `--restore` or `--keepalived` is read (again on SIGHUP), if one is given.
fn source(t: &TableArgs) -> Option<xdpvs_director::Source<'_>> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    match (&t.restore, &t.keepalived) {
        (Some(path), _) => Some(xdpvs_director::Source {
            name: path.display().to_string(),
            load: Box::new(move || {
                ipvsadm::parse_restore(&read(path)?)
                    .map(|lined| {
                        lined
                            .into_iter()
                            .map(|(l, r)| (xdpvs_director::writer::Place::line(l), r))
                            .collect()
                    })
                    .map_err(|e| match e {
                        ipvsadm::RestoreError::Line { line, error } => {
                            format!("{}:{line}: {error}", path.display())
                        }
                    })
            }),
        }),
        (None, Some(path)) => Some(xdpvs_director::Source {
            name: path.display().to_string(),
            load: Box::new(move || {
                let id = t
                    .config_id
                    .clone()
                    .unwrap_or_else(xdpvs_director::keepalived::pre::default_config_id);
                let got =
                    xdpvs_director::keepalived::parse_file(path, &id).map_err(|e| e.at(path))?;
                for note in &got.notes {
                    tracing::info!("{}: {note}", path.display());
                }
                Ok(got.lines.into_iter().zip(got.requests).collect())
            }),
        }),
        (None, None) => None,
    }
}

/// `xdpvs config-test`: the file applied offline; its table in `-S -n` form on stdout.
fn config_test(t: &TableArgs) -> ExitCode {
    let Some(source) = source(t) else {
        return fail("config-test: give --keepalived FILE or --restore FILE", 2);
    };
    match (source.load)()
        .and_then(|lined| xdpvs_director::control::offline::apply(&source.name, lined))
    {
        Ok(table) => {
            let numeric = crate::names::Naming::numeric();
            print!("{}", format::format_rules(&table, false, &numeric));
            eprintln!(
                "xdpvs: {}: {} service(s), {} real server(s): the configuration is valid",
                source.name,
                table.services.len(),
                table.services.iter().map(|s| s.reals.len()).sum::<usize>()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdpvs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `xdpvs drain`'s options.
#[derive(Debug, clap::Args)]
struct DrainArgs {
    /// The most seconds to forward for (default: the director's --drain-grace).
    #[arg(long, value_name = "SECS")]
    grace: Option<u32>,
    /// Return at once instead of waiting for the director to stop.
    #[arg(long)]
    no_wait: bool,
    /// Drain a director that does not --announce, too: it is then the only one, and it
    /// stops serving (its clients lose the service).
    #[arg(long)]
    yes: bool,
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
            } else if e.kind() == ErrorKind::UnknownArgument {
                // ipvsadm's words and status (popt's "unknown option", main's -1).
                let arg = e
                    .get(clap::error::ContextKind::InvalidArg)
                    .map_or_else(|| "?".to_string(), |a| a.to_string());
                eprintln!("xdpvs: {arg}: unknown option");
                return ExitCode::from(crate::ask::IPVSADM_FAILED);
            } else {
                // One line, as every other error of xdpvs.
                eprintln!("xdpvs: {}", ipvsadm::error_line(&e));
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    if cli.version {
        println!("{}", version_line());
        return ExitCode::SUCCESS;
    }
    if cli.command.is_some() && cli.ipvs.any() {
        return fail(
            "ipvsadm's options go without a subcommand: `xdpvs -A ...`, or `xdpvs SUBCOMMAND ...` alone",
            2,
        );
    }
    init_logging(cli.verbose, cli.quiet);
    let result = match &cli.command {
        Some(Command::Run(args)) => run(args, &cli),
        Some(Command::Selfcheck(args)) => selfcheck::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::RsSetup(args)) => {
            return rssetup::run(args).unwrap_or_else(|e| {
                eprintln!("xdpvs: {e:#}");
                ExitCode::FAILURE
            })
        }
        Some(Command::Check(args)) => return check::run(&cli.socket, args),
        Some(Command::Explain(args)) => return explain::run(&cli.socket, args),
        Some(Command::Drain(args)) => return drain(&cli.socket, args),
        Some(Command::ConfigTest(args)) => return config_test(args),
        Some(Command::Manpage { all }) => manpage(all.as_deref()),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(*shell, &mut Cli::command(), "xdpvs", &mut std::io::stdout());
            Ok(())
        }
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

/// `-v` in ipvsadm's form (`ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS
/// v1.2.1)`): xdpvs's version, what parses its command line, and the IPVS interface
/// whose behaviour it follows.
pub fn version_line() -> String {
    format!(
        "xdpvs v{} (compiled with clap and IPVS v1.2.1)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The sections of xdpvs(8) that `--help` does not have.
const MAN_SECTIONS: &str = r#".SH "EXIT STATUS"
0 on success. As ipvsadm: 2 for an option misused, 255 for a command line without a
command or with an unknown option, and for what ipvsadm's kernel refuses (Service already
exists, No such service, Service not defined, Destination already exists, No such
destination). 1 for every other failure (xdpvs's own refusals, a director that cannot be
reached, a start-up problem).
.SH SIGNALS
.TP
SIGTERM
Stop; with \-\-announce, drain first (VIPs withdrawn, flows forwarded until idle or
\-\-drain\-grace).
.TP
SIGINT
Stop at once.
.TP
SIGHUP
Read the \-\-restore or \-\-keepalived file again and apply the difference as one change.
.SH FILES
.TP
/run/xdpvs/xdpvs.sock
The control socket (\-\-socket, XDPVS_SOCKET).
.TP
/etc/xdpvs/rules
A table in ipvsadm\-save format, for \-\-restore.
.TP
/var/lib/xdpvs
What rs\-setup \-\-apply changed, for \-\-undo.
.SH EXAMPLES
.nf
xdpvs run \-i eth0 \-\-restore /etc/xdpvs/rules \-\-metrics 127.0.0.1:9100
xdpvs \-A \-t 198.18.0.100:80 \-s wrr
xdpvs \-a \-t 198.18.0.100:80 \-r 198.18.0.11 \-g \-w 3 \-\-check http:/health
xdpvs \-Ln \-\-stats
xdpvs \-S \-n > /etc/xdpvs/rules
xdpvs check
xdpvs explain \-t 198.18.0.100:80 \-\-client 198.18.0.2:40000
.fi
.SH "SEE ALSO"
xdpvs\-run(8), xdpvs\-check(8), xdpvs\-explain(8), xdpvs\-rs\-setup(8), xdpvs\-drain(8),
xdpvs\-demo(8), xdpvs\-selfcheck(8); docs/OPERATIONS.md in the source.
"#;

/// `xdpvs manpage`: xdpvs(8), from the same clap definitions as `--help`, and its own
/// sections; with `--all DIR`, that page and one per subcommand, written into DIR.
fn manpage(all: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let cmd = Cli::command().name("xdpvs");
    let page = |cmd: &clap::Command, out: &mut dyn std::io::Write| -> anyhow::Result<()> {
        clap_mangen::Man::new(cmd.clone())
            .section("8")
            .render(out)?;
        Ok(())
    };
    let mut main = Vec::new();
    page(&cmd, &mut main)?;
    // The subcommands, each with its options (xdpvs-run is the director).
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(main, ".SH \"XDPVS {}\"", sub.get_name().to_uppercase())?;
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut main)?;
    }
    main.extend_from_slice(MAN_SECTIONS.as_bytes());
    let Some(dir) = all else {
        std::io::stdout().lock().write_all(&main)?;
        return Ok(());
    };
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    };
    write("xdpvs.8", &main)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("xdpvs-{}", sub.get_name());
        let mut out = Vec::new();
        page(&sub.clone().display_name(name.clone()), &mut out)?;
        writeln!(out, ".SH \"SEE ALSO\"\nxdpvs(8)")?;
        write(&format!("{name}.8"), &out)?;
    }
    Ok(())
}

/// `xdpvs run`: the director until SIGINT or SIGTERM.
fn run(args: &RunArgs, cli: &Cli) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    let signals = [
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ];
    for (sig, flag) in signals {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .map_err(|e| anyhow::Error::new(e).context("installing signal handlers"))?;
    }
    let source = source(&args.table);
    // The director's errors name what failed; `{:#}` prints each cause once after it.
    let stop = xdpvs_director::Stop {
        now: &stop,
        drain: &term,
        reload: &hup,
    };
    xdpvs_director::run(&args.opts, &cli.socket, stop, source)?;
    tracing::info!("stopped");
    Ok(())
}

/// `xdpvs drain`: asks the director to drain, then (unless `--no-wait`) waits until its
/// control socket stops answering.
fn drain(socket: &std::path::Path, args: &DrainArgs) -> ExitCode {
    let req = Request::Drain {
        grace: args.grace,
        confirmed: args.yes,
    };
    let (announced, grace_s) = match ask_at(socket, &req) {
        Ok(Reply::Draining { announced, grace_s }) => (announced, grace_s),
        Ok(other) => return fail(format!("the director answered {} to xdpvs drain: use the same xdpvs for the director and its commands", other.name()), 1),
        Err(code) => return code,
    };
    if announced {
        println!("draining: VIPs withdrawn; forwarding until no flow has arrived for 2 s, {grace_s} s at most");
    } else {
        println!("draining (the director does not --announce: nothing withdrawn); forwarding until no flow has arrived for 2 s, {grace_s} s at most");
    }
    if args.no_wait {
        return ExitCode::SUCCESS;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(grace_s + 15);
    while std::time::Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_err() {
            println!("stopped");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fail(
        format!(
            "the director still answers at {} {} s after draining began",
            socket.display(),
            grace_s + 15
        ),
        1,
    )
}

/// How listings write addresses and ports: by name without `-n`, as ipvsadm.
fn naming(cli: &Cli) -> crate::names::Naming {
    if cli.ipvs.numeric {
        crate::names::Naming::numeric()
    } else {
        crate::names::Naming::from_files()
    }
}

/// Has the director answer `req`.
fn ask(cli: &Cli, req: &Request) -> Result<Reply, ExitCode> {
    ask_at(&cli.socket, req)
}

/// Parses an ipvsadm command line, has the director execute it and prints the answer.
fn ipvsadm_command(cli: &Cli) -> ExitCode {
    let action = match cli.ipvs.action() {
        Ok(a) => {
            for w in cli.ipvs.warnings() {
                eprintln!("xdpvs: warning: {w}");
            }
            a
        }
        // As ipvsadm's "Try `ipvsadm -h'..." exit.
        Err(e @ ipvsadm::UsageError::NoCommand) => return fail(e, crate::ask::IPVSADM_FAILED),
        Err(e) => return fail(e, 2),
    };
    let result = match action {
        Action::Change(req) => match client::request(&cli.socket, &req) {
            Ok(Ok(_)) => Ok(String::new()),
            Ok(Err(e)) => Err(crate::ask::refused(&req, e)),
            Err(e) => Err(fail(e, 1)),
        },
        Action::Zero(service) => ask(cli, &Request::Zero { service }).map(|_| String::new()),
        Action::List {
            service,
            kind,
            exact,
            json,
        } => ask(cli, &Request::List { service }).map(|r| match r {
            Reply::Table(t) if json => format::json_table(&t),
            Reply::Table(t) => {
                for n in format::list_notes(&t) {
                    eprintln!("xdpvs: {n}");
                }
                format::format_list(&t, service.is_none(), kind, exact, &naming(cli))
            }
            _ => String::new(),
        }),
        Action::Save { ipvsadm_only } => {
            ask(cli, &Request::List { service: None }).map(|r| match r {
                Reply::Table(t) => format::format_rules(&t, ipvsadm_only, &naming(cli)),
                _ => String::new(),
            })
        }
        Action::Timeouts { json } => ask(cli, &Request::GetTimeouts).map(|r| match r {
            Reply::Timeouts(t, sysctl) if json => format::json_timeouts(&t, &sysctl),
            Reply::Timeouts(t, _) => format::format_timeouts(&t),
            _ => String::new(),
        }),
        Action::Daemon { json } => ask(cli, &Request::GetDaemon).map(|r| match r {
            Reply::Daemon(d) if json => format::json_daemon(&d),
            Reply::Daemon(d) => format::format_daemon(&d),
            _ => String::new(),
        }),
        Action::Connections {
            persistent_conn,
            json,
        } => connections(cli, persistent_conn, json),
        Action::Restore => restore(cli),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `-L -c`: the connection table, printed as its pieces arrive (a table of millions of
/// connections is never held whole).
fn connections(cli: &Cli, persistent_conn: bool, json: bool) -> Result<String, ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let head = if json {
        "{\"connections\": [".to_string()
    } else {
        format::connections_title(persistent_conn)
    };
    let _ = out.write_all(head.as_bytes());
    let names = naming(cli);
    let answer = client::request_pieces(&cli.socket, &Request::Connections, |piece| {
        if let Reply::Connections(rows) = piece {
            for r in &rows {
                let line = if json {
                    let sep = if first { "\n  " } else { ",\n  " };
                    format!("{sep}{}", format::json_connection(r))
                } else {
                    format::connection_line(r, &names)
                };
                first = false;
                let _ = out.write_all(line.as_bytes());
            }
        }
    });
    if json {
        let _ = out.write_all(b"\n]}\n");
    }
    let _ = out.flush();
    match answer {
        Ok(Ok(_)) => Ok(String::new()),
        Ok(Err(e)) => Err(fail(e, 1)),
        Err(e) => Err(fail(e, 1)),
    }
}

/// `-R`: the commands on standard input, sent as one change; an error names its line.
fn restore(cli: &Cli) -> Result<String, ExitCode> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| fail(format!("reading standard input: {e}"), 1))?;
    let lines = ipvsadm::parse_restore(&text).map_err(|e| fail(e, 2))?;
    let (numbers, reqs): (Vec<usize>, Vec<Request>) = lines.into_iter().unzip();
    match client::request(&cli.socket, &Request::Batch(reqs.clone())) {
        Ok(Ok(_)) => Ok(String::new()),
        Ok(Err(ControlError::InBatch { index, error })) => {
            let line = numbers.get(index.wrapping_sub(1)).copied().unwrap_or(0);
            let said = reqs
                .get(index.wrapping_sub(1))
                .and_then(|r| crate::ask::ipvsadm_words(r, &error));
            let (what, code) = match said {
                Some(words) => (words, crate::ask::IPVSADM_FAILED),
                None => (error.to_string(), 1),
            };
            Err(fail(
                format!("line {line}: {what}; nothing of the restore was applied"),
                code,
            ))
        }
        Ok(Err(e)) => Err(fail(e, 1)),
        Err(e) => Err(fail(e, 1)),
    }
}
