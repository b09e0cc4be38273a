//! ipvsadm's command grammar and its listing and save formats.
//!
//! `xdpvs -A -t 198.18.0.100:80 -s rr`, `xdpvs -a -t 198.18.0.100:80 -r 198.18.0.11 -g -w 2`,
//! `xdpvs -Ln`, `xdpvs -S -n`, `xdpvs -R < rules`, `xdpvs --set 900 120 300` work as with
//! ipvsadm: the same options, the same checks of which options go with which command
//! (ipvsadm's table of commands and options), the same defaults (`-E` resets the
//! scheduler to wlc and turns persistence off unless given; `-e` sets weight 1 unless
//! `-w` says otherwise) and the same output layouts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use xdpvs_director::control::proto::{
    CheckEdit, CheckSpec, DaemonRole, DaemonSettings, Millis, OnFailure, Probe, Quorum, Request,
    Script, TimeoutSet,
};
use xdpvs_director::health::spec::{parse_checker, parse_digest, Also};

pub use crate::format::{format_list, format_rules, format_timeouts, ListKind};
pub use crate::quoting::{restore_quote, restore_words};
use xdpvs_sched::{
    ConfigError, Method, Persistence, Protocol, SchedFlags, SchedKind, ServiceKey, TunCsum,
    TunKind, Tunnel,
};

/// ipvsadm's largest timeout (31 days), for `-p` and `--set`.
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// A real server as `-r` names it: an address and, optionally, a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealAddr {
    /// Address.
    pub addr: IpAddr,
    /// Port, if given (it must be the virtual port: DR cannot map ports).
    pub port: Option<u16>,
}

pub(crate) fn parse_service_addr(s: &str) -> Result<SocketAddr, String> {
    crate::names::host_port(s).ok_or_else(|| {
        format!("illegal virtual server address[:port] '{s}': use an address (or host name) and a port (or service name), e.g. 198.18.0.100:80 or [2001:2::100]:80")
    })
}

fn parse_real(s: &str) -> Result<RealAddr, String> {
    if let Some(a) = crate::names::host_port(s) {
        return Ok(RealAddr {
            addr: a.ip(),
            port: Some(a.port()),
        });
    }
    crate::names::host(s)
        .map(|addr| RealAddr { addr, port: None })
        .ok_or_else(|| {
            format!(
                "illegal real server address[:port] '{s}': use an address, e.g. 198.18.0.11, 2001:2::11 or [2001:2::11]:80"
            )
        })
}

fn parse_weight(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("illegal weight '{s}': use a whole number from 0 to 65535"))
}

fn parse_tun_type(s: &str) -> Result<TunKind, String> {
    TunKind::parse(s)
        .ok_or_else(|| format!("illegal tunnel type specified '{s}': use one of ipip, gue, gre"))
}

fn parse_tun_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("illegal tunnel port specified '{s}': use a port from 1 to 65535"))
}

fn parse_on_failure(s: &str) -> Result<OnFailure, String> {
    match s {
        "inhibit" => Ok(OnFailure::Inhibit),
        "remove" => Ok(OnFailure::Remove),
        _ => Err(format!("illegal --on-failure '{s}': use inhibit or remove")),
    }
}

/// A value parser that parses with `parse` (its error word for word) and offers `values`
/// to shell completions.
#[derive(Clone, Debug)]
pub struct Offered<T: Clone + Send + Sync + 'static> {
    parse: fn(&str) -> Result<T, String>,
    values: &'static [&'static str],
}

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Offered<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.parse)(&text).map_err(|why| {
            let name = arg.map_or_else(|| "value".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{text}' for '{name}': {why}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.values
                .iter()
                .map(|v| clap::builder::PossibleValue::new(*v)),
        ))
    }
}

/// `-s`: ipvsadm's scheduler names, offered to completions.
pub fn scheduler_parser() -> Offered<SchedKind> {
    const NAMES: &[&str] = &[
        "rr", "wrr", "lc", "wlc", "sh", "mh", "dh", "sed", "nq", "lblc", "lblcr", "fo", "ovf",
        "twos",
    ];
    Offered {
        parse: |s| s.parse::<SchedKind>().map_err(|e| e.to_string()),
        values: NAMES,
    }
}

fn on_failure_parser() -> Offered<OnFailure> {
    Offered {
        parse: parse_on_failure,
        values: &["inhibit", "remove"],
    }
}

fn parse_timeout(s: &str, min: u32) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|t| (min..=MAX_TIMEOUT).contains(t))
        .ok_or_else(|| {
            format!("invalid timeout value `{s}' specified: use {min} to {MAX_TIMEOUT} seconds")
        })
}

fn parse_persistence_timeout(s: &str) -> Result<u32, String> {
    parse_timeout(s, 1)
}

fn parse_set_timeout(s: &str) -> Result<u32, String> {
    parse_timeout(s, 0)
}

/// Refuses a real (or sorry) server of the other address family than the service's, as
/// IPVS does for direct routing.
fn same_family(key: &ServiceKey, addr: IpAddr) -> Result<(), UsageError> {
    if addr.is_ipv6() == key.is_ipv6() {
        Ok(())
    } else {
        Err(ConfigError::FamilyMismatch {
            service: *key,
            real: addr,
        }
        .into())
    }
}

/// `-M` as given: a dotted netmask or a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netmask {
    /// `255.255.255.0` (IPv4 services).
    Dotted(Ipv4Addr),
    /// `24` (IPv4) or `64` (IPv6: ipvsadm takes only a prefix length there).
    Prefix(u8),
}

/// `-M`: a dotted netmask (255.255.255.0) or a prefix length (24, or 64 for IPv6).
fn parse_netmask(s: &str) -> Result<Netmask, String> {
    if let Ok(m) = s.parse::<Ipv4Addr>() {
        return Ok(Netmask::Dotted(m));
    }
    s.parse::<u8>()
        .ok()
        .filter(|&p| p <= 128)
        .map(Netmask::Prefix)
        .ok_or_else(|| format!("illegal virtual server persistent mask '{s}': use a netmask like 255.255.255.0 or a prefix length like 24 (IPv4) or 64 (IPv6)"))
}

/// ipvsadm-style options (given without a subcommand).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "ipvsadm commands (sent to a running director)")]
pub struct IpvsArgs {
    /// Add a virtual service.
    #[arg(short = 'A', long = "add-service")]
    pub add_service: bool,
    /// Edit a virtual service (its scheduler and persistence are replaced, as in ipvsadm).
    #[arg(short = 'E', long = "edit-service")]
    pub edit_service: bool,
    /// Delete a virtual service and its real servers.
    #[arg(short = 'D', long = "delete-service")]
    pub delete_service: bool,
    /// Clear the whole table.
    #[arg(short = 'C', long = "clear")]
    pub clear: bool,
    /// Add a real server to a virtual service.
    #[arg(short = 'a', long = "add-server")]
    pub add_server: bool,
    /// Edit a real server (weight 1 unless -w is given, as in ipvsadm).
    #[arg(short = 'e', long = "edit-server")]
    pub edit_server: bool,
    /// Delete a real server.
    #[arg(short = 'd', long = "delete-server")]
    pub delete_server: bool,
    /// List the table (or one service with -t/-u).
    #[arg(short = 'L', visible_short_alias = 'l', long = "list")]
    pub list: bool,
    /// Zero the packet, byte and rate counters.
    #[arg(short = 'Z', long = "zero")]
    pub zero: bool,
    /// Print the table as ipvsadm commands (ipvsadm-save format).
    #[arg(short = 'S', long = "save")]
    pub save: bool,
    /// Read commands in ipvsadm-save format from standard input and apply them as one
    /// change, all or nothing.
    #[arg(short = 'R', long = "restore")]
    pub restore: bool,
    /// Set the TCP, TCP-FIN and UDP idle timeouts in seconds (0 leaves one unchanged).
    #[arg(long = "set", num_args = 3, value_names = ["TCP", "TCPFIN", "UDP"], value_parser = parse_set_timeout)]
    pub set: Option<Vec<u32>>,
    /// TCP service VIP:PORT.
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT", value_parser = parse_service_addr)]
    pub tcp: Option<SocketAddr>,
    /// UDP service VIP:PORT.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT", value_parser = parse_service_addr)]
    pub udp: Option<SocketAddr>,
    /// Scheduler: rr, wrr, lc, wlc (default), sh, mh, dh, sed, nq, lblc, lblcr, fo, ovf,
    /// twos.
    #[arg(short = 's', long = "scheduler", value_parser = scheduler_parser(), hide_possible_values = true)]
    pub scheduler: Option<SchedKind>,
    /// Persistent service, with an optional timeout in seconds (default 360, IPVS's
    /// IPVS_SVC_PERSISTENT_TIMEOUT, as ipvsadm; at most
    /// 2678400).
    #[arg(short = 'p', long = "persistent", value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "360", value_parser = parse_persistence_timeout)]
    pub persistent: Option<u32>,
    /// Persistence granularity: a netmask or a prefix length (default 255.255.255.255;
    /// for IPv6 a prefix length, default 128).
    #[arg(short = 'M', long = "netmask", value_parser = parse_netmask)]
    pub netmask: Option<Netmask>,
    /// Real server address RIP[:PORT].
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]", value_parser = parse_real)]
    pub real: Option<RealAddr>,
    /// Direct routing (the default): the real server holds the VIP on its loopback.
    #[arg(short = 'g', long = "gatewaying")]
    pub gatewaying: bool,
    /// Masquerading (NAT): addresses and ports rewritten both ways; the real server's
    /// gateway is the director. The only method that maps ports (-r RIP:PORT).
    #[arg(short = 'm', long = "masquerading")]
    pub masquerading: bool,
    /// Tunnelling (IPIP, GUE or GRE: --tun-type): the packet is encapsulated to the real
    /// server, which may be routed, decapsulates it and answers the client itself.
    #[arg(short = 'i', long = "ipip")]
    pub ipip: bool,
    /// The tunnel's encapsulation: ipip (the default), gue or gre.
    #[arg(long = "tun-type", value_name = "ipip|gue|gre", value_parser = parse_tun_type)]
    pub tun_type: Option<TunKind>,
    /// GUE's UDP destination port on the real server (required with --tun-type gue).
    #[arg(long = "tun-port", value_name = "PORT", value_parser = parse_tun_port)]
    pub tun_port: Option<u16>,
    /// Tunnel encapsulation without checksum (the default; GUE, GRE).
    #[arg(long = "tun-nocsum")]
    pub tun_nocsum: bool,
    /// Tunnel encapsulation with checksum (GUE: UDP checksum; GRE: checksum field).
    #[arg(long = "tun-csum")]
    pub tun_csum: bool,
    /// Tunnel encapsulation with remote checksum offload (GUE).
    #[arg(long = "tun-remcsum")]
    pub tun_remcsum: bool,
    /// -L: a TunnelInfo column (ipip, gue:PORT:-c, gre:+c).
    #[arg(long = "tun-info")]
    pub tun_info: bool,
    /// Weight of the real server, 0..65535 (0 = quiescent).
    #[arg(short = 'w', long = "weight", value_parser = parse_weight)]
    pub weight: Option<u16>,
    /// Numeric output; without it, -L and -S name addresses and ports found in /etc/hosts
    /// and /etc/services (no DNS).
    #[arg(short = 'n', long = "numeric")]
    pub numeric: bool,
    /// List connections (-L -c).
    #[arg(short = 'c', long = "connection")]
    pub connection: bool,
    /// List the timeouts (-L --timeout).
    #[arg(long = "timeout")]
    pub timeout: bool,
    /// List with statistics.
    #[arg(long = "stats")]
    pub stats: bool,
    /// List with rates.
    #[arg(long = "rate")]
    pub rate: bool,
    /// List persistent connection counts, or templates with -c.
    #[arg(long = "persistent-conn")]
    pub persistent_conn: bool,
    /// Exact numbers in --stats and --rate.
    #[arg(short = 'X', long = "exact")]
    pub exact: bool,
    /// List in configuration order (xdpvs lists sorted, as ipvsadm does, either way).
    #[arg(long = "nosort")]
    pub nosort: bool,
    /// Sorted listing (the default; accepted for compatibility).
    #[arg(long = "sort")]
    pub sort: bool,
    /// Print a listing (-L, --stats, --rate, -c, --timeout) as JSON, for scripts (schema
    /// in docs/OPERATIONS.md).
    #[arg(long = "json")]
    pub json: bool,
    /// With -S: only what ipvsadm -R reads (no --check..., no --sorry-server), for a file
    /// ipvsadm restores.
    #[arg(long = "ipvsadm")]
    pub ipvsadm_only: bool,
    /// Health check of the real server (-a/-e), keepalived's checkers: tcp, ping,
    /// http[s][:/PATH[:STATUS]], smtp, dns, udp, misc:COMMAND, file:PATH, each with
    /// ,OPTION=VALUE options (docs/OPERATIONS.md); repeat it for several checkers (all
    /// must pass); none (-e) removes it. Without it, -e keeps the check in force.
    #[arg(
        long = "check",
        value_name = "KIND[:ARG][,OPTION=VALUE...]|none",
        help_heading = "health checks (xdpvs)"
    )]
    pub check: Vec<String>,
    /// Port the check connects to (default: the service's port).
    #[arg(
        long = "check-port",
        value_name = "PORT",
        help_heading = "health checks (xdpvs)"
    )]
    pub check_port: Option<u16>,
    /// Seconds between checks (keepalived delay_loop; default 5).
    #[arg(long = "check-interval", value_name = "SECS", value_parser = Millis::parse_secs, help_heading = "health checks (xdpvs)")]
    pub check_interval: Option<Millis>,
    /// Seconds a check may take (keepalived connect_timeout; default 5).
    #[arg(long = "check-timeout", value_name = "SECS", value_parser = Millis::parse_secs, help_heading = "health checks (xdpvs)")]
    pub check_timeout: Option<Millis>,
    /// Seconds before retrying a failed check (keepalived delay_before_retry; default 1).
    #[arg(long = "check-retry-delay", value_name = "SECS", value_parser = Millis::parse_secs, help_heading = "health checks (xdpvs)")]
    pub check_retry_delay: Option<Millis>,
    /// Failures in a row that take a real server out (keepalived retry + 1; default 2).
    #[arg(long = "fall", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100), help_heading = "health checks (xdpvs)")]
    pub fall: Option<u32>,
    /// Successes in a row that bring it back (default 1).
    #[arg(long = "rise", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100), help_heading = "health checks (xdpvs)")]
    pub rise: Option<u32>,
    /// What a failed real server gets: inhibit (weight 0, the default; keepalived
    /// inhibit_on_failure) or remove (its connections drain as with -d).
    #[arg(long = "on-failure", value_name = "inhibit|remove", value_parser = on_failure_parser(), hide_possible_values = true, help_heading = "health checks (xdpvs)")]
    pub on_failure: Option<OnFailure>,
    /// MD5 of the body an HTTP check expects (keepalived digest).
    #[arg(long = "check-digest", value_name = "MD5", value_parser = parse_digest, help_heading = "health checks (xdpvs)")]
    pub check_digest: Option<String>,
    /// Host header of an HTTP check (keepalived virtualhost; default RIP:PORT).
    #[arg(
        long = "check-host",
        value_name = "HOST",
        help_heading = "health checks (xdpvs)"
    )]
    pub check_host: Option<String>,
    /// The real server starts down until its check first passes (keepalived alpha).
    #[arg(long = "check-alpha", help_heading = "health checks (xdpvs)")]
    pub check_alpha: bool,
    /// TCP/HTTP/HTTPS/SMTP checks also send a SYN for VIP:PORT to the real server's MAC,
    /// the way clients' packets go (a DR real server without the VIP fails it).
    #[arg(long = "check-forwarding", help_heading = "health checks (xdpvs)")]
    pub check_forwarding: bool,
    /// Address checked instead of the real server's (keepalived connect_ip).
    #[arg(
        long = "check-ip",
        value_name = "ADDR",
        help_heading = "health checks (xdpvs)"
    )]
    pub check_ip: Option<IpAddr>,
    /// Address the checks come from (keepalived bindto).
    #[arg(
        long = "check-bind",
        value_name = "ADDR",
        help_heading = "health checks (xdpvs)"
    )]
    pub check_bind: Option<IpAddr>,
    /// Port the checks come from (keepalived bind_port).
    #[arg(
        long = "check-bind-port",
        value_name = "PORT",
        help_heading = "health checks (xdpvs)"
    )]
    pub check_bind_port: Option<u16>,
    /// Interface the checks leave from (keepalived bind_if).
    #[arg(
        long = "check-bind-if",
        value_name = "IFACE",
        help_heading = "health checks (xdpvs)"
    )]
    pub check_bind_if: Option<String>,
    /// Command run when the check brings the real server up (keepalived notify_up).
    #[arg(
        long = "notify-up",
        value_name = "COMMAND",
        help_heading = "health checks (xdpvs)"
    )]
    pub notify_up: Option<String>,
    /// Command run when the check takes it down (keepalived notify_down).
    #[arg(
        long = "notify-down",
        value_name = "COMMAND",
        help_heading = "health checks (xdpvs)"
    )]
    pub notify_down: Option<String>,
    /// User (USER or USER:GROUP) the notify and quorum commands run as (default root).
    #[arg(
        long = "script-user",
        value_name = "USER[:GROUP]",
        help_heading = "health checks (xdpvs)"
    )]
    pub script_user: Option<String>,
    /// Weight of the real servers that are up a service needs (-A/-E; keepalived quorum,
    /// default 1): below it, the sorry server stands in.
    #[arg(
        long = "quorum",
        value_name = "WEIGHT",
        help_heading = "health checks (xdpvs)"
    )]
    pub quorum: Option<u32>,
    /// Quorum lost below quorum - N, gained at quorum + N (keepalived hysteresis).
    #[arg(
        long = "hysteresis",
        value_name = "N",
        help_heading = "health checks (xdpvs)"
    )]
    pub hysteresis: Option<u32>,
    /// Command run when the service gains its quorum (keepalived quorum_up).
    #[arg(
        long = "quorum-up",
        value_name = "COMMAND",
        help_heading = "health checks (xdpvs)"
    )]
    pub quorum_up: Option<String>,
    /// Command run when it loses it (keepalived quorum_down).
    #[arg(
        long = "quorum-down",
        value_name = "COMMAND",
        help_heading = "health checks (xdpvs)"
    )]
    pub quorum_down: Option<String>,
    /// When the director stops, run the quorum-down and notify-down commands of what is up
    /// (keepalived omega).
    #[arg(long = "omega", help_heading = "health checks (xdpvs)")]
    pub omega: bool,
    /// Sorry server of the service (-A/-E): gets new connections while no real server
    /// is up with a weight above 0 (keepalived sorry_server).
    #[arg(long = "sorry-server", value_name = "ADDR", value_parser = parse_real, help_heading = "health checks (xdpvs)")]
    pub sorry_server: Option<RealAddr>,

    // ipvsadm options xdpvs does not support: accepted by the parser so that the answer
    // is one line saying so.
    #[arg(short = 'f', long = "fwmark-service", hide = true)]
    fwmark: Option<String>,
    #[arg(short = '6', long = "ipv6", hide = true)]
    ipv6: bool,
    #[arg(long = "sctp-service", hide = true)]
    sctp: Option<String>,
    #[arg(long = "pe", hide = true)]
    pe: Option<String>,
    #[arg(short = 'o', long = "ops", hide = true)]
    ops: bool,
    #[arg(short = 'x', long = "u-threshold", hide = true)]
    u_threshold: Option<String>,
    #[arg(short = 'y', long = "l-threshold", hide = true)]
    l_threshold: Option<String>,
    #[arg(long = "thresholds", hide = true)]
    thresholds: bool,
    /// Starts a role of the connection sync daemon (IPVS's sync protocol version 1):
    /// `master` sends this director's connections, `backup` installs other directors';
    /// both may run. With --mcast-interface.
    #[arg(long = "start-daemon", value_name = "master|backup")]
    start_daemon: Option<String>,
    /// Stops a role of the sync daemon.
    #[arg(long = "stop-daemon", value_name = "master|backup")]
    stop_daemon: Option<String>,
    /// The sync daemon's interface (it needs an IPv4 address there).
    #[arg(long = "mcast-interface", value_name = "IFACE")]
    mcast_interface: Option<String>,
    /// The sync id sent, and the only one taken unless 0 (default 0).
    #[arg(long = "syncid", value_name = "N")]
    syncid: Option<String>,
    /// With -L: the sync daemon's roles.
    #[arg(long = "daemon")]
    daemon: bool,
    /// The sync messages' IPv4 multicast group (default 224.0.0.81).
    #[arg(long = "mcast-group", value_name = "ADDR")]
    mcast_group: Option<String>,
    /// Their UDP port (default 8848).
    #[arg(long = "mcast-port", value_name = "PORT")]
    mcast_port: Option<String>,
    /// Their multicast TTL (default 1).
    #[arg(long = "mcast-ttl", value_name = "N")]
    mcast_ttl: Option<String>,
    /// The largest sync message in bytes (default 1472).
    #[arg(long = "sync-maxlen", value_name = "BYTES")]
    sync_maxlen: Option<String>,
    /// Scheduler flags, comma-separated: sh-fallback, sh-port (with -s sh), mh-fallback,
    /// mh-port (with -s mh), flag-1, flag-2, flag-3.
    #[arg(short = 'b', long = "sched-flags", value_name = "FLAGS")]
    sched_flags: Option<String>,
}

/// ipvsadm's commands, by its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `-A`
    AddService,
    /// `-E`
    EditService,
    /// `-D`
    DeleteService,
    /// `-C`
    Flush,
    /// `-L`
    List,
    /// `-a`
    AddServer,
    /// `-d`
    DeleteServer,
    /// `-e`
    EditServer,
    /// `--set`
    Set,
    /// `-R`
    Restore,
    /// `-S`
    Save,
    /// `-Z`
    Zero,
    /// `--start-daemon`
    StartDaemon,
    /// `--stop-daemon`
    StopDaemon,
}

impl Cmd {
    /// ipvsadm's name of the command, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::AddService => "add-service",
            Cmd::EditService => "edit-service",
            Cmd::DeleteService => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddServer => "add-server",
            Cmd::DeleteServer => "delete-server",
            Cmd::EditServer => "edit-server",
            Cmd::Set => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
        }
    }
}

/// ipvsadm's options, by its names, for the table of what goes with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    Timeout,
    Stats,
    Rate,
    PersistentConn,
    NoSort,
    Exact,
    Json,
    Check,
    CheckOption,
    Sorry,
    IpvsadmOnly,
    SchedFlags,
    TunOption,
    TunInfo,
    Quorum,
    ScriptUser,
    McastInterface,
    SyncId,
    McastOption,
}

const OPTS: [Opt; 28] = [
    Opt::Numeric,
    Opt::Connection,
    Opt::Service,
    Opt::Scheduler,
    Opt::Persistent,
    Opt::Netmask,
    Opt::Server,
    Opt::Forward,
    Opt::Weight,
    Opt::Timeout,
    Opt::Stats,
    Opt::Rate,
    Opt::PersistentConn,
    Opt::NoSort,
    Opt::Exact,
    Opt::Json,
    Opt::Check,
    Opt::CheckOption,
    Opt::Sorry,
    Opt::IpvsadmOnly,
    Opt::SchedFlags,
    Opt::TunOption,
    Opt::TunInfo,
    Opt::Quorum,
    Opt::ScriptUser,
    Opt::McastInterface,
    Opt::SyncId,
    Opt::McastOption,
];

impl Opt {
    fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Connection => "connection",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::Timeout => "timeout",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::PersistentConn => "persistent-conn",
            Opt::NoSort => "nosort",
            Opt::Exact => "exact",
            Opt::Json => "json",
            Opt::Check => "check",
            Opt::CheckOption => "check-*/fall/rise/on-failure",
            Opt::Sorry => "sorry-server",
            Opt::IpvsadmOnly => "ipvsadm",
            Opt::SchedFlags => "sched-flags",
            Opt::TunOption => "tun-type/tun-port/tun-*csum",
            Opt::TunInfo => "tun-info",
            Opt::Quorum => "quorum/hysteresis/quorum-up/quorum-down/omega",
            Opt::ScriptUser => "script-user",
            Opt::McastInterface => "mcast-interface",
            Opt::SyncId => "syncid",
            Opt::McastOption => "mcast-group/mcast-port/mcast-ttl/sync-maxlen",
        }
    }
}

/// How an option goes with a command (ipvsadm's table: `+`, `x`, `1`, ` `).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Required,
    Illegal,
    Exclusive,
    Optional,
}

fn rule(cmd: Cmd, opt: Opt) -> Rule {
    use Opt::*;
    use Rule::*;
    match cmd {
        Cmd::AddService | Cmd::EditService => match opt {
            Service => Required,
            Scheduler | Persistent | Netmask | Sorry | SchedFlags | Quorum | ScriptUser => Optional,
            _ => Illegal,
        },
        Cmd::DeleteService => match opt {
            Service => Required,
            _ => Illegal,
        },
        Cmd::Flush | Cmd::Set | Cmd::Restore => Illegal,
        Cmd::List => match opt {
            Numeric | Stats | Rate | PersistentConn | NoSort | Exact | Json | TunInfo => Optional,
            Connection | Service | Timeout => Exclusive,
            _ => Illegal,
        },
        Cmd::AddServer | Cmd::EditServer => match opt {
            Service | Server => Required,
            Forward | Weight | Check | CheckOption | TunOption | ScriptUser => Optional,
            _ => Illegal,
        },
        Cmd::DeleteServer => match opt {
            Service | Server => Required,
            _ => Illegal,
        },
        Cmd::Save => match opt {
            Numeric | IpvsadmOnly => Optional,
            _ => Illegal,
        },
        Cmd::Zero => match opt {
            Service => Optional,
            _ => Illegal,
        },
        Cmd::StartDaemon => match opt {
            McastInterface => Required,
            SyncId | McastOption => Optional,
            _ => Illegal,
        },
        Cmd::StopDaemon => match opt {
            SyncId => Optional,
            _ => Illegal,
        },
    }
}

/// Why a command line is not a request. Each message says what to change; the wording
/// follows ipvsadm's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An ipvsadm option xdpvs does not implement.
    #[error("{flag} ({what}) is not supported: {why}")]
    Unsupported {
        /// The option.
        flag: &'static str,
        /// What it asks for.
        what: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// More than one command.
    #[error("multiple commands specified")]
    MultipleCommands,
    /// An option a command needs.
    #[error("You need to supply the '{option}' option for the '{command}' command")]
    Missing {
        /// The option.
        option: &'static str,
        /// The command.
        command: &'static str,
    },
    /// An option a command does not take.
    #[error("Illegal '{option}' option with the '{command}' command")]
    Illegal {
        /// The option.
        option: &'static str,
        /// The command.
        command: &'static str,
    },
    /// Two options of which a command takes one.
    #[error(
        "The option '{option}' conflicts with the '{other}' option in the '{command}' command"
    )]
    Conflict {
        /// The option.
        option: &'static str,
        /// The other.
        other: &'static str,
        /// The command.
        command: &'static str,
    },
    /// Listing options that do not go together.
    #[error("options conflicts in the list command")]
    ListConflict,
    /// Both `-t` and `-u`.
    #[error("give either -t or -u, not both")]
    TwoServices,
    /// Port 0.
    #[error("Zero port specified for service {0}: all-ports services are not supported; give the service's port")]
    ZeroPort(SocketAddr),
    /// `-r RIP:PORT` with another port than the service's.
    #[error("real server port {real} differs from the virtual port {virt}: direct routing cannot map ports (the real server must serve on {virt})")]
    PortMapping {
        /// The real server's port.
        real: u16,
        /// The service's.
        virt: u16,
    },
    /// Two of `-g`, `-m` and `-i` on one line.
    #[error("multiple forwarding methods given: use one of -g (direct routing), -m (NAT) or -i (tunnelling)")]
    TwoMethods,
    /// A tunnel option without `-i`.
    #[error("Tunnel options conflict with forward method: --tun-type, --tun-port and --tun-*csum go with -i")]
    TunnelOptions,
    /// A tunnel option its tunnel type does not take.
    #[error("Illegal '{option}' option with the '{kind}' tunnel type")]
    TunnelOption {
        /// The option.
        option: &'static str,
        /// The tunnel type.
        kind: &'static str,
    },
    /// GUE without its port.
    #[error("You need to supply the 'tun-port' option for the '{kind}' tunnel type")]
    TunnelPort {
        /// The tunnel type.
        kind: &'static str,
    },
    /// Two checksum options.
    #[error(
        "The option '{option}' conflicts with the '{other}' option in the '{kind}' tunnel type"
    )]
    TunnelCsums {
        /// The option.
        option: &'static str,
        /// The other.
        other: &'static str,
        /// The tunnel type.
        kind: &'static str,
    },
    /// `-M` without `-p`.
    #[error("illegal ipv6 netmask specified: an IPv6 service's -M is a prefix length from 1 to 128, e.g. -M 64")]
    Ipv6Netmask,
    /// Bad persistence.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A health-check option without `--check`.
    #[error("--check-port, --check-interval, --check-timeout, --check-retry-delay, --fall, --rise, --on-failure, --check-digest, --check-host, --check-alpha, --check-forwarding, --check-ip, --check-bind*, --notify-up and --notify-down describe a check: give --check too (e.g. --check tcp)")]
    CheckOptionWithoutCheck,
    /// `--check-digest`/`--check-host` with a TCP check, or options with `--check none`.
    #[error("{0}")]
    BadCheck(String),
    /// `-b` with a flag ipvsadm does not know, or one of another scheduler.
    #[error("{0}")]
    SchedFlags(String),
    /// A sync daemon option's value.
    #[error("{0}")]
    Daemon(String),
    /// No command.
    #[error("no command given: use one of -A -E -D -C -a -e -d -L -S -R -Z --set --start-daemon --stop-daemon (see --help)")]
    NoCommand,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A change to send to the director.
    Change(Box<Request>),
    /// `-L` (or a bare `xdpvs`): the table, or one service.
    List {
        /// Only this service.
        service: Option<ServiceKey>,
        /// Which layout.
        kind: ListKind,
        /// `--exact`.
        exact: bool,
        /// `--json`.
        json: bool,
    },
    /// `-L --daemon`: the sync daemon.
    Daemon {
        /// `--json`.
        json: bool,
    },
    /// `-L --timeout`.
    Timeouts {
        /// `--json`.
        json: bool,
    },
    /// `-L -c`: the connection table.
    Connections {
        /// `--persistent-conn` (ipvsadm's title with the persistence-engine columns).
        persistent_conn: bool,
        /// `--json`.
        json: bool,
    },
    /// `-Z`: zero the counters of every service or of one.
    Zero(Option<ServiceKey>),
    /// `-S`: the table as commands (`--ipvsadm`: only what ipvsadm reads).
    Save {
        /// Leave out xdpvs's own options.
        ipvsadm_only: bool,
    },
    /// `-R`: commands from standard input.
    Restore,
}

/// `--start-daemon`/`--stop-daemon`'s role.
fn daemon_role(word: Option<&str>, option: &str) -> Result<DaemonRole, UsageError> {
    match word.unwrap_or_default() {
        "master" => Ok(DaemonRole::Master),
        "backup" => Ok(DaemonRole::Backup),
        w => Err(UsageError::Daemon(format!(
            "illegal {option} parameter specified: '{w}' is not master or backup"
        ))),
    }
}

/// A sync daemon option's number within `lo..=hi`.
fn daemon_number<T: TryFrom<u64>>(
    v: Option<&str>,
    option: &str,
    (lo, hi, default): (u64, u64, T),
) -> Result<T, UsageError> {
    let Some(v) = v else { return Ok(default) };
    v.parse::<u64>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            UsageError::Daemon(format!(
                "illegal {option} specified: '{v}' is not {lo} to {hi}"
            ))
        })
}

impl IpvsArgs {
    /// `--start-daemon`'s options, IPVS's defaults for those not given.
    fn daemon_settings(&self) -> Result<DaemonSettings, UsageError> {
        let d = DaemonSettings::on(self.mcast_interface.as_deref().unwrap_or_default());
        let group = match self.mcast_group.as_deref() {
            None => d.group,
            Some(g) => match g.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) if a.is_multicast() => a,
                Ok(std::net::IpAddr::V6(_)) => {
                    return Err(UsageError::Daemon(format!(
                        "--mcast-group {g}: xdpvs's sync daemon is IPv4: give an IPv4 multicast group (default 224.0.0.81)"
                    )))
                }
                _ => {
                    return Err(UsageError::Daemon(format!(
                        "illegal mcast-group specified: '{g}' is not an IPv4 multicast address"
                    )))
                }
            },
        };
        Ok(DaemonSettings {
            syncid: daemon_number(self.syncid.as_deref(), "syncid", (0, 255, d.syncid))?,
            maxlen: daemon_number(
                self.sync_maxlen.as_deref(),
                "sync-maxlen",
                (80, 65507, d.maxlen),
            )?,
            group,
            port: daemon_number(self.mcast_port.as_deref(), "mcast-port", (1, 65535, d.port))?,
            ttl: daemon_number(self.mcast_ttl.as_deref(), "mcast-ttl", (1, 255, d.ttl))?,
            iface: d.iface,
        })
    }

    fn command(&self) -> Result<Option<Cmd>, UsageError> {
        let all = [
            (self.add_service, Cmd::AddService),
            (self.edit_service, Cmd::EditService),
            (self.delete_service, Cmd::DeleteService),
            (self.clear, Cmd::Flush),
            (self.list, Cmd::List),
            (self.add_server, Cmd::AddServer),
            (self.delete_server, Cmd::DeleteServer),
            (self.edit_server, Cmd::EditServer),
            (self.set.is_some(), Cmd::Set),
            (self.restore, Cmd::Restore),
            (self.save, Cmd::Save),
            (self.zero, Cmd::Zero),
            (self.start_daemon.is_some(), Cmd::StartDaemon),
            (self.stop_daemon.is_some(), Cmd::StopDaemon),
        ];
        let mut given = all.iter().filter(|(on, _)| *on).map(|&(_, c)| c);
        let first = given.next();
        if given.next().is_some() {
            return Err(UsageError::MultipleCommands);
        }
        Ok(first)
    }

    fn present(&self) -> Vec<Opt> {
        OPTS.into_iter()
            .filter(|o| match o {
                Opt::Numeric => self.numeric,
                Opt::Connection => self.connection,
                Opt::Service => self.tcp.is_some() || self.udp.is_some(),
                Opt::Scheduler => self.scheduler.is_some(),
                Opt::Persistent => self.persistent.is_some(),
                Opt::Netmask => self.netmask.is_some(),
                Opt::Server => self.real.is_some(),
                Opt::Forward => self.gatewaying || self.masquerading || self.ipip,
                Opt::Weight => self.weight.is_some(),
                Opt::Timeout => self.timeout,
                Opt::Stats => self.stats,
                Opt::Rate => self.rate,
                Opt::PersistentConn => self.persistent_conn,
                Opt::NoSort => self.nosort,
                Opt::Exact => self.exact,
                Opt::Json => self.json,
                Opt::Check => !self.check.is_empty(),
                Opt::CheckOption => {
                    self.check_port.is_some()
                        || self.check_interval.is_some()
                        || self.check_timeout.is_some()
                        || self.check_retry_delay.is_some()
                        || self.fall.is_some()
                        || self.rise.is_some()
                        || self.on_failure.is_some()
                        || self.check_digest.is_some()
                        || self.check_host.is_some()
                        || self.check_alpha
                        || self.check_forwarding
                        || self.check_ip.is_some()
                        || self.check_bind.is_some()
                        || self.check_bind_port.is_some()
                        || self.check_bind_if.is_some()
                        || self.notify_up.is_some()
                        || self.notify_down.is_some()
                }
                Opt::Quorum => {
                    self.quorum.is_some()
                        || self.hysteresis.is_some()
                        || self.quorum_up.is_some()
                        || self.quorum_down.is_some()
                        || self.omega
                }
                Opt::ScriptUser => self.script_user.is_some(),
                Opt::McastInterface => self.mcast_interface.is_some(),
                Opt::SyncId => self.syncid.is_some(),
                Opt::McastOption => {
                    self.mcast_group.is_some()
                        || self.mcast_port.is_some()
                        || self.mcast_ttl.is_some()
                        || self.sync_maxlen.is_some()
                }
                Opt::Sorry => self.sorry_server.is_some(),
                Opt::IpvsadmOnly => self.ipvsadm_only,
                Opt::SchedFlags => self.sched_flags.is_some(),
                Opt::TunOption => {
                    self.tun_type.is_some()
                        || self.tun_port.is_some()
                        || self.tun_nocsum
                        || self.tun_csum
                        || self.tun_remcsum
                }
                Opt::TunInfo => self.tun_info,
            })
            .collect()
    }

    fn unsupported(&self) -> Result<(), UsageError> {
        let checks: [(bool, &'static str, &'static str, &'static str); 8] = [
            (
                self.fwmark.is_some(),
                "-f",
                "firewall-mark services",
                "give the service as -t/-u VIP:PORT",
            ),
            (
                self.ipv6,
                "-6",
                "IPv6 firewall-mark services",
                "give an IPv6 service as -t/-u [VIP]:PORT",
            ),
            (
                self.sctp.is_some(),
                "--sctp-service",
                "SCTP services",
                "xdpvs serves TCP and UDP",
            ),
            (
                self.pe.is_some(),
                "--pe",
                "persistence engines",
                "use -p and -M",
            ),
            (
                self.ops,
                "-o",
                "one-packet scheduling",
                "UDP flows are scheduled per flow",
            ),
            (
                self.u_threshold.is_some(),
                "-x",
                "connection thresholds",
                "use -w 0 to drain a real server",
            ),
            (
                self.l_threshold.is_some(),
                "-y",
                "connection thresholds",
                "use -w 0 to drain a real server",
            ),
            (
                self.thresholds,
                "--thresholds",
                "connection thresholds",
                "use -w 0 to drain a real server",
            ),
        ];
        match checks.iter().find(|c| c.0) {
            Some(&(_, flag, what, why)) => Err(UsageError::Unsupported { flag, what, why }),
            None => Ok(()),
        }
    }

    fn check(&self, cmd: Cmd) -> Result<(), UsageError> {
        let present = self.present();
        let mut exclusive: Option<Opt> = None;
        for o in OPTS {
            let on = present.contains(&o);
            match (rule(cmd, o), on) {
                (Rule::Required, false) => {
                    return Err(UsageError::Missing {
                        option: o.name(),
                        command: cmd.name(),
                    })
                }
                (Rule::Illegal, true) => {
                    return Err(UsageError::Illegal {
                        option: o.name(),
                        command: cmd.name(),
                    })
                }
                (Rule::Exclusive, true) => {
                    if let Some(other) = exclusive {
                        return Err(UsageError::Conflict {
                            option: o.name(),
                            other: other.name(),
                            command: cmd.name(),
                        });
                    }
                    exclusive = Some(o);
                }
                _ => {}
            }
        }
        if cmd == Cmd::List
            && ((self.connection || self.timeout) && (self.stats || self.rate)
                || self.timeout && self.persistent_conn)
        {
            return Err(UsageError::ListConflict);
        }
        Ok(())
    }

    fn service(&self) -> Result<ServiceKey, UsageError> {
        let (proto, a) = match (self.tcp, self.udp) {
            (Some(a), None) => (Protocol::Tcp, a),
            (None, Some(a)) => (Protocol::Udp, a),
            (Some(_), Some(_)) => return Err(UsageError::TwoServices),
            (None, None) => {
                return Err(UsageError::Missing {
                    option: Opt::Service.name(),
                    command: "this",
                })
            }
        };
        if a.port() == 0 {
            return Err(UsageError::ZeroPort(a));
        }
        Ok(ServiceKey {
            proto,
            vip: a.ip(),
            port: a.port(),
        })
    }

    fn persistence(&self, key: &ServiceKey) -> Result<Option<Persistence>, UsageError> {
        let t = match (self.persistent, self.netmask) {
            // As ipvsadm: -M without -p makes no persistence (see `warnings`).
            (None, _) => return Ok(None),
            (Some(t), _) => Duration::from_secs(u64::from(t)),
        };
        let p = match (key.is_ipv6(), self.netmask) {
            (false, None) => Persistence::new(t, Ipv4Addr::BROADCAST)?,
            (false, Some(Netmask::Dotted(m))) => Persistence::new(t, m)?,
            (false, Some(Netmask::Prefix(p))) if p <= 32 => {
                Persistence::new(t, Ipv4Addr::from(xdpvs_sched::model::prefix_mask(p)))?
            }
            (false, Some(Netmask::Prefix(p))) => return Err(ConfigError::BadPrefix(p).into()),
            (true, None) => Persistence::with_prefix(t, 128)?,
            (true, Some(Netmask::Prefix(p))) => Persistence::with_prefix(t, p)?,
            (true, Some(Netmask::Dotted(_))) => return Err(UsageError::Ipv6Netmask),
        };
        Ok(Some(p))
    }

    fn real(&self, key: &ServiceKey) -> Result<RealAddr, UsageError> {
        let r = self.real.ok_or(UsageError::Missing {
            option: Opt::Server.name(),
            command: "this",
        })?;
        same_family(key, r.addr)?;
        Ok(r)
    }

    /// The forwarding method on the line (`-g` when none: ipvsadm's default, for `-e`
    /// too), with the tunnel's options checked as ipvsadm checks them.
    fn method(&self) -> Result<Method, UsageError> {
        let given = [self.gatewaying, self.masquerading, self.ipip];
        if given.iter().filter(|&&g| g).count() > 1 {
            return Err(UsageError::TwoMethods);
        }
        let csums = [
            (self.tun_nocsum, TunCsum::No),
            (self.tun_csum, TunCsum::Csum),
            (self.tun_remcsum, TunCsum::Remote),
        ];
        let mut csum = csums.iter().filter(|c| c.0).map(|c| c.1);
        let first = csum.next();
        if !self.ipip {
            if self.tun_type.is_some() || self.tun_port.is_some() || first.is_some() {
                return Err(UsageError::TunnelOptions);
            }
            return Ok(if self.masquerading {
                Method::Masq
            } else {
                Method::Route
            });
        }
        let kind = self.tun_type.unwrap_or_default();
        let illegal = |option: &'static str| {
            Err(UsageError::TunnelOption {
                option,
                kind: kind.name(),
            })
        };
        let csum_word = |c: TunCsum| &c.option()[2..];
        match kind {
            TunKind::Ipip if self.tun_port.is_some() => return illegal("tun-port"),
            TunKind::Ipip if first.is_some() => {
                return illegal(csum_word(first.unwrap_or_default()))
            }
            TunKind::Gre if self.tun_port.is_some() => return illegal("tun-port"),
            TunKind::Gre if self.tun_remcsum => return illegal("tun-remcsum"),
            TunKind::Gue if self.tun_port.is_none() => {
                return Err(UsageError::TunnelPort { kind: kind.name() })
            }
            _ => {}
        }
        if let (Some(a), Some(b)) = (first, csum.next()) {
            return Err(UsageError::TunnelCsums {
                option: csum_word(b),
                other: csum_word(a),
                kind: kind.name(),
            });
        }
        Ok(Method::Tunnel(Tunnel {
            kind,
            port: self.tun_port.unwrap_or(0),
            csum: first.unwrap_or_default(),
        }))
    }

    /// The port the real server serves on (0: the service's). Another port than the
    /// service's is NAT's only: with direct routing it is ignored, as ipvsadm does (see
    /// `warnings`).
    fn real_port(r: &RealAddr, key: &ServiceKey, method: Method) -> u16 {
        match r.port {
            Some(p) if p != key.port && method.maps_ports() => p,
            _ => 0,
        }
    }

    /// What ipvsadm accepts silently on this line but does not do, to say on stderr.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let virt = self.tcp.or(self.udp).map(|a| a.port());
        if let (Some(r), Some(virt)) = (self.real, virt) {
            let maps = self.method().is_ok_and(Method::maps_ports);
            if let Some(p) = r.port.filter(|&p| p != virt && !maps) {
                w.push(format!(
                    "real server port {p} is ignored: direct routing cannot map ports, the real server is reached on the virtual port {virt} (as ipvsadm does)"
                ));
            }
        }
        if self.netmask.is_some() && self.persistent.is_none() {
            w.push(
                "-M without -p: the service is not persistent and the netmask is ignored (as ipvsadm does)"
                    .into(),
            );
        }
        w
    }

    /// The health check the line describes: `Ok(None)` without `--check` (and without
    /// check options), `Ok(Some(None))` for `--check none`.
    fn check_spec(&self) -> Result<Option<Option<CheckSpec>>, UsageError> {
        let options = self.present().contains(&Opt::CheckOption);
        let bad = |s: &str| Err(UsageError::BadCheck(s.into()));
        if self.check.is_empty() {
            return if options {
                Err(UsageError::CheckOptionWithoutCheck)
            } else {
                Ok(None)
            };
        }
        if self.check.iter().any(|w| w == "none") {
            return if options || self.check.len() > 1 {
                bad("--check none removes the check: give no other check option")
            } else {
                Ok(Some(None))
            };
        }
        let mut checkers = self
            .check
            .iter()
            .map(|w| parse_checker(w))
            .collect::<Result<Vec<Also>, String>>()
            .map_err(UsageError::BadCheck)?;
        // The first checker's port= and ip= are the check's own (--check-port, --check-ip).
        let first = checkers.remove(0);
        if first.port.is_some() && self.check_port.is_some()
            || first.ip.is_some() && self.check_ip.is_some()
        {
            return bad("the first --check's port= or ip= and --check-port or --check-ip say the same: give one");
        }
        let (first_port, first_ip) = (first.port.or(self.check_port), first.ip.or(self.check_ip));
        let mut probes: Vec<Probe> = std::iter::once(first.probe)
            .chain(checkers.iter().map(|a| a.probe.clone()))
            .collect();
        // --check-digest and --check-host: of the first HTTP check.
        if self.check_digest.is_some() || self.check_host.is_some() {
            let Some(Probe::Http(h)) = probes.iter_mut().find(|p| matches!(p, Probe::Http(_)))
            else {
                return bad(
                    "--check-digest and --check-host go with an HTTP check (--check http:/PATH)",
                );
            };
            if self.check_digest.is_some() {
                h.digest.clone_from(&self.check_digest);
            }
            if self.check_host.is_some() {
                h.host.clone_from(&self.check_host);
            }
        }
        if !probes.iter().any(Probe::has_port) && first_port.is_some() {
            return bad("--check-port goes with a check that connects to a port: an echo request, a program or a file has none");
        }
        if self.check_forwarding && !probes.iter().any(Probe::is_tcp) {
            return bad("--check-forwarding goes with a tcp, http, https or smtp check (a SYN to the VIP's port)");
        }
        let mut c = CheckSpec::new(probes.remove(0));
        c.also = probes
            .into_iter()
            .zip(checkers)
            .map(|(probe, a)| Also { probe, ..a })
            .collect();
        c.port = first_port;
        c.interval = self.check_interval.unwrap_or(c.interval);
        c.timeout = self.check_timeout.unwrap_or(c.timeout);
        c.retry_delay = self.check_retry_delay.unwrap_or(c.retry_delay);
        c.fall = self.fall.unwrap_or(c.fall);
        c.rise = self.rise.unwrap_or(c.rise);
        c.on_failure = self.on_failure.unwrap_or(c.on_failure);
        c.alpha = self.check_alpha;
        c.forwarding = self.check_forwarding;
        c.notify_up = self.script(&self.notify_up);
        c.notify_down = self.script(&self.notify_down);
        c.connect_ip = first_ip;
        c.bindto = self.check_bind;
        c.bind_port = self.check_bind_port;
        c.bind_if.clone_from(&self.check_bind_if);
        Ok(Some(Some(c)))
    }

    /// A command given on the line, run as `--script-user`.
    fn script(&self, command: &Option<String>) -> Option<Script> {
        command.as_ref().map(|command| Script {
            command: command.clone(),
            user: self.script_user.clone(),
        })
    }

    /// The quorum of `-A`/`-E`.
    fn quorum(&self) -> Quorum {
        let d = Quorum::default();
        Quorum {
            quorum: self.quorum.unwrap_or(d.quorum),
            hysteresis: self.hysteresis.unwrap_or(d.hysteresis),
            up: self.script(&self.quorum_up),
            down: self.script(&self.quorum_down),
            omega: self.omega,
        }
    }

    /// The sorry server of `-A`/`-E`.
    fn sorry(&self, key: &ServiceKey) -> Result<Option<IpAddr>, UsageError> {
        match self.sorry_server {
            None => Ok(None),
            Some(r) => match r.port.filter(|&p| p != key.port) {
                Some(p) => Err(UsageError::PortMapping {
                    real: p,
                    virt: key.port,
                }),
                None => {
                    same_family(key, r.addr)?;
                    Ok(Some(r.addr))
                }
            },
        }
    }

    /// Whether any ipvsadm option is on the line.
    pub fn any(&self) -> bool {
        self.command().ok().flatten().is_some() || !self.present().is_empty()
    }

    /// Checks the line as ipvsadm does and says what it asks for. A line with no
    /// ipvsadm option at all lists the table, as a bare `ipvsadm` does.
    pub fn action(&self) -> Result<Action, UsageError> {
        self.unsupported()?;
        let Some(cmd) = self.command()? else {
            return if self.present().is_empty() {
                Ok(Action::List {
                    service: None,
                    kind: ListKind::Plain,
                    exact: false,
                    json: false,
                })
            } else {
                Err(UsageError::NoCommand)
            };
        };
        self.check(cmd)?;
        let change = |r| Ok(Action::Change(Box::new(r)));
        match cmd {
            Cmd::AddService | Cmd::EditService => {
                let key = self.service()?;
                let (scheduler, persistence) =
                    (self.scheduler.unwrap_or_default(), self.persistence(&key)?);
                let sorry = self.sorry(&key)?;
                let flags = match &self.sched_flags {
                    Some(words) => {
                        SchedFlags::parse(words, scheduler).map_err(UsageError::SchedFlags)?
                    }
                    None => SchedFlags::NONE,
                };
                let quorum = self.quorum();
                change(if cmd == Cmd::AddService {
                    Request::AddService {
                        key,
                        scheduler,
                        persistence,
                        sorry,
                        flags,
                        quorum,
                    }
                } else {
                    Request::EditService {
                        key,
                        scheduler,
                        persistence,
                        sorry,
                        flags,
                        quorum,
                    }
                })
            }
            Cmd::DeleteService => change(Request::DeleteService {
                key: self.service()?,
            }),
            Cmd::Flush => change(Request::Clear),
            Cmd::AddServer | Cmd::EditServer | Cmd::DeleteServer => {
                let key = self.service()?;
                let real = self.real(&key)?;
                let addr = real.addr;
                let method = self.method()?;
                let port = Self::real_port(&real, &key, method);
                let weight = self.weight.unwrap_or(1);
                let check = self.check_spec()?;
                change(match cmd {
                    Cmd::AddServer => Request::AddReal {
                        key,
                        addr,
                        port,
                        method,
                        weight,
                        check: check.flatten(),
                    },
                    Cmd::EditServer => Request::EditReal {
                        key,
                        addr,
                        port,
                        method,
                        weight,
                        check: match check {
                            None => CheckEdit::Keep,
                            Some(None) => CheckEdit::Remove,
                            Some(Some(c)) => CheckEdit::Set(Box::new(c)),
                        },
                    },
                    _ => Request::DeleteReal { key, addr },
                })
            }
            Cmd::Set => {
                let v = self.set.as_deref().unwrap_or_default();
                change(Request::SetTimeouts(TimeoutSet {
                    tcp: v.first().copied().unwrap_or(0),
                    tcpfin: v.get(1).copied().unwrap_or(0),
                    udp: v.get(2).copied().unwrap_or(0),
                }))
            }
            Cmd::List => {
                let json = self.json;
                if self.timeout {
                    return Ok(Action::Timeouts { json });
                }
                if self.daemon {
                    return Ok(Action::Daemon { json });
                }
                if self.connection {
                    return Ok(Action::Connections {
                        persistent_conn: self.persistent_conn,
                        json,
                    });
                }
                // As ipvsadm: --stats wins over --rate, which wins over --persistent-conn.
                let kind = if self.stats {
                    ListKind::Stats
                } else if self.rate {
                    ListKind::Rate
                } else if self.persistent_conn {
                    ListKind::PersistentConn
                } else if self.tun_info {
                    ListKind::TunInfo
                } else {
                    ListKind::Plain
                };
                Ok(Action::List {
                    service: if self.tcp.is_some() || self.udp.is_some() {
                        Some(self.service()?)
                    } else {
                        None
                    },
                    kind,
                    exact: self.exact,
                    json,
                })
            }
            Cmd::Save => Ok(Action::Save {
                ipvsadm_only: self.ipvsadm_only,
            }),
            Cmd::Restore => Ok(Action::Restore),
            Cmd::StartDaemon => change(Request::StartDaemon {
                role: daemon_role(self.start_daemon.as_deref(), "start-daemon")?,
                settings: self.daemon_settings()?,
            }),
            Cmd::StopDaemon => change(Request::StopDaemon {
                role: daemon_role(self.stop_daemon.as_deref(), "stop-daemon")?,
            }),
            Cmd::Zero => Ok(Action::Zero(if self.tcp.is_some() || self.udp.is_some() {
                Some(self.service()?)
            } else {
                None
            })),
        }
    }
}

/// A command-line error as one line, without clap's "error: " and its help hints.
pub fn error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ")
        .to_string()
}

/// Why a restore could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A line that is not an ipvsadm command.
    #[error("line {line}: {error}")]
    Line {
        /// Its number, from 1.
        line: usize,
        /// What is wrong with it.
        error: String,
    },
}

/// Parses ipvsadm-save/ipvsadm-restore input: one command per line (blank lines and
/// `#` comments skipped). As ipvsadm's restore does, the word `ipvsadm` is dropped
/// wherever it stands (`ipvsadm -A -t ...` lines, as scripts write them). Returns each
/// change with its line number.
pub fn parse_restore(text: &str) -> Result<Vec<(usize, Request)>, RestoreError> {
    #[derive(clap::Parser)]
    #[command(
        no_binary_name = true,
        disable_help_flag = true,
        disable_version_flag = true
    )]
    struct Line {
        #[command(flatten)]
        a: IpvsArgs,
    }
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |error: String| RestoreError::Line { line, error };
        let words = restore_words(raw).map_err(err)?;
        let words: Vec<&str> = words
            .iter()
            .map(String::as_str)
            .filter(|w| *w != "ipvsadm")
            .collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let parsed =
            <Line as clap::Parser>::try_parse_from(&words).map_err(|e| err(error_line(&e)))?;
        match parsed.a.action().map_err(|e| err(e.to_string()))? {
            Action::Change(r) => out.push((line, *r)),
            _ => {
                return Err(err(
                    "only -A -E -D -C -a -e -d and --set belong in a restore".into(),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
