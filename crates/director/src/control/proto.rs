//! The control protocol between `xdpvs` commands and a running director.
//!
//! The client parses ipvsadm's grammar once into a typed [`Request`] and sends it; the
//! director executes it and answers with a typed [`Reply`] or a [`ControlError`]; the client
//! renders the answer. On the wire, one request per connection, in each direction a single
//! message: a 4-byte big-endian length, then that many bytes of JSON ([`Envelope`]), at
//! most [`MAX_MESSAGE`] bytes. A message of another [`VERSION`] is refused with an error
//! that says so.

use std::io::{self, Read, Write};
use std::net::IpAddr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use xdpvs_sched::{ConfigError, Method, Persistence, SchedFlags, SchedKind, ServiceKey};

pub use crate::health::spec::{CheckSpec, HttpCheck, Millis, OnFailure, Probe, Quorum, Script};

/// Version of the protocol; both ends must speak the same.
pub const VERSION: u32 = 7;
/// The largest message either end accepts.
pub const MAX_MESSAGE: usize = 1 << 20;

/// What a client asks of the director.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `-A`: add a virtual service.
    AddService {
        /// Protocol, VIP, port.
        key: ServiceKey,
        /// Scheduler.
        scheduler: SchedKind,
        /// Persistence (`-p`, `-M`).
        persistence: Option<Persistence>,
        /// The sorry server (`--sorry-server`): gets the service's new connections while
        /// no real server is up with a weight above 0 (keepalived's `sorry_server`).
        sorry: Option<IpAddr>,
        /// Scheduler flags (`-b`).
        #[serde(default)]
        flags: SchedFlags,
        /// The quorum (keepalived `quorum`, `hysteresis`, `quorum_up`, `quorum_down`,
        /// `omega`; `--quorum` and its options).
        #[serde(default)]
        quorum: Quorum,
    },
    /// `-E`: edit a virtual service. As with ipvsadm, the scheduler and the persistence
    /// are replaced: `-E` without `-s` sets wlc, without `-p` turns persistence off.
    EditService {
        /// Protocol, VIP, port.
        key: ServiceKey,
        /// Scheduler.
        scheduler: SchedKind,
        /// Persistence.
        persistence: Option<Persistence>,
        /// The sorry server (replaced too: `-E` without `--sorry-server` drops it).
        sorry: Option<IpAddr>,
        /// Scheduler flags (replaced too, as ipvsadm's `-E`).
        #[serde(default)]
        flags: SchedFlags,
        /// The quorum (keepalived `quorum`, `hysteresis`, `quorum_up`, `quorum_down`,
        /// `omega`; `--quorum` and its options).
        #[serde(default)]
        quorum: Quorum,
    },
    /// `-D`: delete a virtual service and its real servers.
    DeleteService {
        /// Protocol, VIP, port.
        key: ServiceKey,
    },
    /// `-C`: clear the whole table.
    Clear,
    /// `-a`: add a real server.
    AddReal {
        /// The service.
        key: ServiceKey,
        /// Real server address.
        addr: IpAddr,
        /// The port it serves on (0: the service's; another only with NAT).
        #[serde(default)]
        port: u16,
        /// How packets reach it (`-g`, `-m`).
        #[serde(default)]
        method: Method,
        /// Weight (0 = quiescent).
        weight: u16,
        /// Its health check (`--check ...`), if any.
        check: Option<CheckSpec>,
    },
    /// `-e`: edit a real server (its weight: ipvsadm's default 1 when `-w` is not given;
    /// its method: ipvsadm's default `-g` when none is given).
    EditReal {
        /// The service.
        key: ServiceKey,
        /// Real server address.
        addr: IpAddr,
        /// The port it serves on (0: the service's).
        #[serde(default)]
        port: u16,
        /// How packets reach it.
        #[serde(default)]
        method: Method,
        /// Weight.
        weight: u16,
        /// What happens to its health check.
        check: CheckEdit,
    },
    /// `-d`: delete a real server.
    DeleteReal {
        /// The service.
        key: ServiceKey,
        /// Real server address.
        addr: IpAddr,
    },
    /// `-L`/`-S`: the table, or one service of it.
    List {
        /// Only this service (`-L -t VIP:PORT`).
        service: Option<ServiceKey>,
    },
    /// `--set TCP TCPFIN UDP`: idle timeouts in seconds; 0 leaves one unchanged.
    SetTimeouts(TimeoutSet),
    /// keepalived's `lvs_sync_daemon`: the sync daemon, whose role follows a VRRP
    /// instance (master while this host holds the instance's addresses, backup
    /// otherwise; both roles when no instance is named). A later one with other settings
    /// restarts it; a file without one leaves it.
    SyncDaemon {
        /// Where and how.
        settings: DaemonSettings,
        /// The VRRP instance named.
        instance: Option<String>,
        /// Its `virtual_ipaddress`es.
        vips: Vec<IpAddr>,
    },
    /// ipvsadm's `--start-daemon master|backup` with its options.
    StartDaemon {
        /// `master` or `backup`.
        role: DaemonRole,
        /// Where and how.
        settings: DaemonSettings,
    },
    /// ipvsadm's `--stop-daemon master|backup`.
    StopDaemon {
        /// `master` or `backup`.
        role: DaemonRole,
    },
    /// The VIPs keepalived's VRRP moves between directors (its `vrrp_instance`s'
    /// `virtual_ipaddress`): each is served only while this host holds it on an
    /// interface (with `run --vrrp-vip`'s, which always follow).
    Follow {
        /// The VIPs.
        vips: Vec<IpAddr>,
    },
    /// `-L --timeout`.
    GetTimeouts,
    /// `-L --daemon`: the sync daemon's roles and settings.
    GetDaemon,
    /// `-Z`: zero the counters and rates of every service, or of one and its real servers.
    Zero {
        /// Only this service.
        service: Option<ServiceKey>,
    },
    /// `-L -c`: the connection table. Answered with any number of
    /// [`Reply::Connections`] messages, then [`Reply::Done`] (or an error).
    Connections,
    /// `-R`: changes applied as one, all or nothing.
    Batch(Vec<Request>),
    /// `xdpvs check`: probe every VIP and real server for LVS-DR's usual mistakes.
    Check,
    /// `xdpvs explain`: where a client's flow to a service goes, and why, from the
    /// workers' own tables and schedulers.
    Explain {
        /// The service.
        key: ServiceKey,
        /// The client's address and port.
        client: std::net::SocketAddr,
    },
    /// `xdpvs drain`: withdraw the VIPs (`run --announce`), forward the flows that still
    /// arrive until they go idle or the grace time passes, then stop. Answered by the
    /// running director's control loop at once, with [`Reply::Draining`].
    Drain {
        /// Seconds to forward at most (default: the director's `--drain-grace`).
        grace: Option<u32>,
        /// Stop even a director that does not `--announce` (the only one: its clients
        /// lose the service).
        #[serde(default)]
        confirmed: bool,
    },
}

impl Request {
    /// The request and what it concerns, in one line (for the event log): `-e (edit a
    /// real server) TCP 198.18.0.100:80 198.18.0.11 weight 0`.
    pub fn summary(&self) -> String {
        match self {
            Request::AddService { key, .. }
            | Request::EditService { key, .. }
            | Request::DeleteService { key } => format!("{} {key}", self.name()),
            Request::AddReal {
                key, addr, weight, ..
            }
            | Request::EditReal {
                key, addr, weight, ..
            } => format!("{} {key} {addr} weight {weight}", self.name()),
            Request::DeleteReal { key, addr } => format!("{} {key} {addr}", self.name()),
            Request::Batch(reqs) => format!("a batch of {} changes (a restore)", reqs.len()),
            _ => self.name().to_string(),
        }
    }

    /// What the request is, in the words of the command that sends it (for messages).
    pub fn name(&self) -> &'static str {
        match self {
            Request::AddService { .. } => "-A (add a service)",
            Request::EditService { .. } => "-E (edit a service)",
            Request::DeleteService { .. } => "-D (delete a service)",
            Request::Clear => "-C (clear)",
            Request::AddReal { .. } => "-a (add a real server)",
            Request::EditReal { .. } => "-e (edit a real server)",
            Request::DeleteReal { .. } => "-d (delete a real server)",
            Request::List { .. } => "-L (list)",
            Request::SetTimeouts(_) => "--set (timeouts)",
            Request::Follow { .. } => "vrrp_instance (VIPs that follow VRRP)",
            Request::SyncDaemon { .. } => "lvs_sync_daemon",
            Request::StartDaemon { .. } => "--start-daemon",
            Request::StopDaemon { .. } => "--stop-daemon",
            Request::GetTimeouts => "-L --timeout",
            Request::GetDaemon => "-L --daemon",
            Request::Zero { .. } => "-Z (zero counters)",
            Request::Connections => "-L -c (connections)",
            Request::Batch(_) => "-R (restore)",
            Request::Check => "xdpvs check",
            Request::Explain { .. } => "xdpvs explain",
            Request::Drain { .. } => "xdpvs drain",
        }
    }
}

/// What `-e` does to a real server's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckEdit {
    /// No `--check` given: the check stays as it is.
    Keep,
    /// `--check tcp|http...`: this check from now on (its state starts afresh when it
    /// differs from the one in force).
    Set(Box<CheckSpec>),
    /// `--check none`: no check any more.
    Remove,
}

/// ipvsadm's three timeouts, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutSet {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after the client's FIN.
    pub tcpfin: u32,
    /// UDP flows.
    pub udp: u32,
}

/// The director's switches named after the IPVS sysctls they mirror (`xdpvs run`'s
/// options), as `-L --timeout --json` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    /// `conn_reuse_mode` (0 to 3).
    pub conn_reuse_mode: u8,
    /// `expire_nodest_conn`.
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template`.
    pub expire_quiescent_template: bool,
    /// `sloppy_tcp`.
    pub sloppy_tcp: bool,
}

/// ipvsadm's `--stats` counters, summed over workers, since the last `-Z`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in (client to real server, through the director).
    pub inpkts: u64,
    /// Packets out: always 0 in direct routing (replies do not cross the director).
    pub outpkts: u64,
    /// Bytes in (IP packet lengths).
    pub inbytes: u64,
    /// Bytes out: always 0 in direct routing.
    pub outbytes: u64,
}

impl Counters {
    /// These counters less `base` (counters only grow; a slot restarted reads from 0).
    pub fn since(&self, base: &Counters) -> Counters {
        Counters {
            conns: self.conns.saturating_sub(base.conns),
            inpkts: self.inpkts.saturating_sub(base.inpkts),
            outpkts: self.outpkts.saturating_sub(base.outpkts),
            inbytes: self.inbytes.saturating_sub(base.inbytes),
            outbytes: self.outbytes.saturating_sub(base.outbytes),
        }
    }
}

/// ipvsadm's `--rate` figures, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets in per second.
    pub inpps: u64,
    /// Packets out per second (0 in direct routing).
    pub outpps: u64,
    /// Bytes in per second.
    pub inbps: u64,
    /// Bytes out per second (0 in direct routing).
    pub outbps: u64,
}

/// One real server in a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealRow {
    /// Address.
    pub addr: IpAddr,
    /// The port it serves on.
    pub port: u16,
    /// How packets reach it (`Route`, `Masq`).
    pub method: Method,
    /// Weight, as configured.
    pub weight: u16,
    /// The weight the scheduler uses now: 0 while its check fails (inhibited or
    /// removed) or its MAC is unresolved; a dynamic checker's weight.
    #[serde(default)]
    pub effective: u16,
    /// ActiveConn, summed over workers.
    pub active: u64,
    /// InActConn, summed over workers.
    pub inactive: u64,
    /// PersistConn: persistence templates pointing at it, summed over workers.
    pub persistent: u64,
    /// Whether its MAC is resolved (no traffic goes to it until it is).
    pub resolved: bool,
    /// Its health check, if it has one.
    pub check: Option<CheckSpec>,
    /// What its check found, if it has one.
    pub health: Option<HealthRow>,
    /// The service's sorry server, listed while it stands in for the real servers.
    pub sorry: bool,
    /// Counters.
    pub stats: Counters,
    /// Rates.
    pub rates: Rates,
}

/// What a real server's health check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRow {
    /// Passing (true) or failed (false: inhibited or removed, as its check says).
    pub up: bool,
    /// The last result in words (`ok`, `connect to ...: Connection refused`).
    pub last: String,
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Times it went down or up.
    pub transitions: u64,
    /// How long the last check took, in microseconds.
    pub latency_us: u64,
    /// The weight its dynamic checkers set (keepalived `misc_dynamic`, `FILE_CHECK`'s
    /// `dynamic`), if any.
    #[serde(default)]
    pub weight: Option<u16>,
    /// When the last result came, in whole seconds since the Unix epoch (0: none yet).
    #[serde(default)]
    pub checked_at: u64,
    /// When it last went down or up, in whole seconds since the Unix epoch (0: never).
    #[serde(default)]
    pub changed_at: u64,
}

/// One virtual service in a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// Protocol, VIP, port.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedKind,
    /// Scheduler flags (`-b`).
    #[serde(default)]
    pub flags: SchedFlags,
    /// Persistence.
    pub persistence: Option<Persistence>,
    /// Its sorry server, if it has one.
    pub sorry: Option<IpAddr>,
    /// Its quorum.
    #[serde(default)]
    pub quorum: Quorum,
    /// Whether it holds its quorum.
    #[serde(default = "yes")]
    pub quorum_held: bool,
    /// Real servers, sorted by address.
    pub reals: Vec<RealRow>,
    /// Counters.
    pub stats: Counters,
    /// Rates.
    pub rates: Rates,
}

fn yes() -> bool {
    true
}

pub use crate::sync::Role as DaemonRole;

/// Where and how a sync daemon role runs (ipvsadm's `--start-daemon` options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSettings {
    /// `--mcast-interface`.
    pub iface: String,
    /// `--syncid`.
    pub syncid: u8,
    /// `--sync-maxlen`.
    pub maxlen: u16,
    /// `--mcast-group`.
    pub group: std::net::Ipv4Addr,
    /// `--mcast-port`.
    pub port: u16,
    /// `--mcast-ttl`.
    pub ttl: u8,
}

impl DaemonSettings {
    /// IPVS's defaults on `iface`.
    pub fn on(iface: &str) -> DaemonSettings {
        DaemonSettings {
            iface: iface.to_string(),
            syncid: 0,
            maxlen: 1472,
            group: std::net::Ipv4Addr::new(224, 0, 0, 81),
            port: 8848,
            ttl: 1,
        }
    }
}

/// A role of the sync daemon that runs, its settings, and what the daemon did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRow {
    /// `master` or `backup`.
    pub role: DaemonRole,
    /// `--mcast-interface`.
    pub iface: String,
    /// `--syncid`.
    pub syncid: u8,
    /// `--sync-maxlen`.
    pub maxlen: usize,
    /// `--mcast-group`.
    pub group: std::net::Ipv4Addr,
    /// `--mcast-port`.
    pub port: u16,
    /// `--mcast-ttl`.
    pub ttl: u8,
    /// The VRRP instance its role follows (keepalived's `lvs_sync_daemon`).
    pub follows: Option<String>,
    /// The daemon's (both roles'): messages sent and received, connections sent and
    /// received, messages dropped (malformed or another version, another sync id),
    /// connections not installed (no such service or real server here).
    pub counts: [u64; 7],
}

/// The virtual server table, as `-L` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Connection-table capacity over all workers (ipvsadm's "size").
    pub size: usize,
    /// Services, in configuration order.
    pub services: Vec<ServiceRow>,
    /// The VIPs that follow VRRP, and whether this director serves each now (it holds
    /// the address: VRRP master).
    #[serde(default)]
    pub vrrp: Vec<(IpAddr, bool)>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The change was applied.
    Done,
    /// The table.
    Table(Table),
    /// The timeouts in force, and the switches named after IPVS's sysctls.
    Timeouts(TimeoutSet, Sysctl),
    /// The sync daemon's roles that run.
    Daemon(Vec<DaemonRow>),
    /// A piece of the connection table (more follow until [`Reply::Done`]).
    Connections(Vec<ConnRow>),
    /// What `xdpvs check` found.
    Check(super::check::CheckReport),
    /// Where a flow goes, and why.
    Explain(Explanation),
    /// The director drains, then stops.
    Draining {
        /// Whether it withdrew VIPs (it runs with `--announce`).
        announced: bool,
        /// The most it forwards for, in seconds.
        grace_s: u64,
    },
}

impl Reply {
    /// What kind of answer it is (for a message about an answer not expected).
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Done => "done",
            Reply::Table(_) => "a table",
            Reply::Timeouts(..) => "timeouts",
            Reply::Daemon(_) => "the sync daemon",
            Reply::Connections(_) => "connections",
            Reply::Check(_) => "a check report",
            Reply::Explain(_) => "an explanation",
            Reply::Draining { .. } => "draining",
        }
    }
}

/// Why a worker sends a flow where it does (`xdpvs explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The flow has a connection-table entry.
    Connection,
    /// No entry: the client's persistence template.
    Template,
    /// No entry, no template: the scheduler's pick for a new connection now.
    Scheduled,
    /// As `Scheduled`, past a template whose real server no longer takes anybody new.
    StaleTemplate,
    /// No entry, the table full lately: the stateless hash.
    Stateless,
    /// No real server can take a new connection (none up with a weight above 0).
    NoRealServer,
}

/// A real server as a worker's scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedReal {
    /// Its address.
    pub addr: IpAddr,
    /// Its weight.
    pub weight: u16,
    /// Whether its MAC is resolved (no new connections until it is).
    pub resolved: bool,
    /// In service by its health check (or it has none).
    pub up: bool,
    /// ActiveConn on this worker.
    pub active: u64,
    /// InActConn on this worker.
    pub inactive: u64,
}

/// One worker's answer to `xdpvs explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerAnswer {
    /// The worker (its queue).
    pub worker: usize,
    /// The real server the flow goes to (none: nowhere).
    pub real: Option<IpAddr>,
    /// That real server was removed from the configuration and drains its connections.
    pub draining: bool,
    /// Why.
    pub reason: Reason,
    /// The entry's state (ipvsadm's name), for a connection.
    pub state: Option<String>,
    /// Seconds left on the entry or template.
    pub expires_in: Option<u64>,
    /// For a connection: a new one (a SYN) from the same port would be scheduled afresh
    /// rather than continue the entry (`conn_reuse_mode`, or its real server is out of
    /// service).
    #[serde(default)]
    pub syn_reschedules: bool,
    /// The service's real servers as this worker's scheduler sees them.
    pub reals: Vec<SchedReal>,
}

/// Where a flow goes, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The service.
    pub service: ServiceKey,
    /// The client.
    pub client: std::net::SocketAddr,
    /// The service's scheduler.
    pub scheduler: SchedKind,
    /// Its persistence.
    pub persistence: Option<Persistence>,
    /// Each worker's answer. The flow's packets reach one worker only (the NIC's RSS
    /// chooses it from the addresses and ports): a worker with an entry or a template
    /// for it is where it is; otherwise any of them may get its first packet.
    pub workers: Vec<WorkerAnswer>,
}

/// One entry of the connection table, as `-L -c` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRow {
    /// TCP or UDP.
    pub proto: xdpvs_sched::Protocol,
    /// Seconds left before it expires if nothing is seen on it.
    pub expires: u64,
    /// ipvsadm's state name (`ESTABLISHED`, `SYN_RECV`, `UDP`; `NONE` for a template).
    pub state: String,
    /// Client address and port (a template: the masked client, port 0).
    pub source: std::net::SocketAddr,
    /// VIP and port.
    pub virtual_addr: std::net::SocketAddr,
    /// Real server and port.
    pub destination: std::net::SocketAddr,
    /// A persistence template rather than a connection.
    pub template: bool,
}

/// How many [`ConnRow`]s go in one message at most (well under [`MAX_MESSAGE`]).
pub const CONN_ROWS_PER_MESSAGE: usize = 2048;

/// Why a request failed. Crosses the control socket, so it carries data, not sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControlError {
    /// `-A` of a service that exists.
    #[error("service {0} already exists")]
    ServiceExists(ServiceKey),
    /// A service that does not exist.
    #[error("no such service: {0}")]
    NoSuchService(ServiceKey),
    /// `-a` of a real server that exists.
    #[error("real server {addr} already exists in service {service}")]
    RealExists {
        /// The service.
        service: ServiceKey,
        /// The real server.
        addr: IpAddr,
    },
    /// A real server that does not exist.
    #[error("no such real server {addr} in service {service}")]
    NoSuchReal {
        /// The service.
        service: ServiceKey,
        /// The real server.
        addr: IpAddr,
    },
    /// The configuration would be invalid or over a limit.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A real server that cannot be reached by direct routing.
    #[error("real server {addr}: {why}")]
    BadReal {
        /// The real server.
        addr: IpAddr,
        /// Why it cannot be one.
        why: String,
    },
    /// An address that cannot be a VIP: a host holds it.
    #[error("service {service}: quorum: {why}")]
    BadQuorum {
        /// The service.
        service: ServiceKey,
        /// Why.
        why: String,
    },
    /// A VIP that cannot be served.
    #[error("VIP {vip}: {why}")]
    BadVip {
        /// The VIP.
        vip: IpAddr,
        /// Why it cannot be one, and what to do.
        why: String,
    },
    /// A change asked through the read-only socket.
    #[error("{0}: this control socket answers questions only (-L, --timeout, -c, check, explain); make changes through the director's own socket (--socket)")]
    ReadOnly(String),
    /// `xdpvs drain` of a director that does not `--announce`, without `--yes`.
    #[error("this director does not --announce: no router moves its clients to another, so draining it stops the service; to take a real server out instead: xdpvs -e -t VIP:PORT -r RIP -w 0 (or -d); to stop this director anyway: xdpvs drain --yes")]
    OnlyDirector,
    /// One request of a batch failed; nothing of the batch was applied.
    #[error("request {index} of the batch: {error}")]
    InBatch {
        /// Its position, from 1.
        index: usize,
        /// What went wrong.
        error: Box<ControlError>,
    },
    /// A request that may not be part of a batch.
    #[error("{0} cannot be part of a restore")]
    NotInBatch(String),
    /// The dataplane refused the change; it was rolled back everywhere.
    #[error("{0}; the change was rolled back and nothing changed")]
    RolledBack(String),
    /// The dataplane could not answer (a listing).
    #[error("{0}")]
    Dataplane(String),
    /// The dataplane failed in a way that cannot be undone: the director stops.
    #[error("{0}; the director is stopping: restart it and apply the configuration again")]
    Fatal(String),
    /// `--start-daemon` of a role that runs (ipvsadm: "Daemon has already run").
    #[error("the {0} sync daemon is already running: --stop-daemon {0} first")]
    DaemonRunning(DaemonRole),
    /// `--stop-daemon` of a role that does not run (ipvsadm: "No daemon is running").
    #[error("no {0} sync daemon is running")]
    NoDaemon(DaemonRole),
    /// The sync daemon could not start.
    #[error("{0}")]
    Daemon(String),
    /// The message could not be read as a request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Every client slot of the control socket is taken.
    #[error("the director is serving {0} clients already, its limit: try again when one is done (a stuck client is cut off after its timeout)")]
    Busy(usize),
    /// The director is stopping: the change was not applied.
    #[error("the director is stopping: nothing was applied")]
    Stopping,
    /// The two ends speak different protocol versions.
    #[error("protocol version {got} is not the director's {want}: use the same xdpvs for the director and its commands")]
    Version {
        /// What the message said.
        got: u32,
        /// What the director speaks.
        want: u32,
    },
}

/// A message on the wire: the version and the payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`VERSION`].
    pub version: u32,
    /// The request or the answer.
    pub body: T,
}

/// The director's answer.
pub type Answer = Result<Reply, ControlError>;

/// Why a message could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A length over [`MAX_MESSAGE`].
    #[error("message of {0} bytes is over the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    /// Not the JSON expected.
    #[error("unreadable message: {0}")]
    Json(serde_json::Error),
    /// Another protocol version.
    #[error("protocol version {0} is not {VERSION}")]
    Version(u32),
}

/// Writes one message.
pub fn write_message<T: Serialize>(w: &mut impl Write, body: &T) -> Result<(), WireError> {
    let bytes = serde_json::to_vec(&Envelope {
        version: VERSION,
        body,
    })
    .map_err(WireError::Json)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads one message (at most [`MAX_MESSAGE`] bytes; nothing larger is buffered).
pub fn read_message<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::TooLarge(len));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    // The version first, so that a newer client's request is refused for what it is.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(&bytes).map_err(WireError::Json)?;
    if v.version != VERSION {
        return Err(WireError::Version(v.version));
    }
    let e: Envelope<T> = serde_json::from_slice(&bytes).map_err(WireError::Json)?;
    Ok(e.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use xdpvs_sched::Protocol;

    fn key() -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port: 80,
        }
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let req = Request::AddService {
            quorum: Default::default(),
            key: key(),
            scheduler: SchedKind::Wrr,
            persistence: Some(
                Persistence::new(
                    std::time::Duration::from_secs(60),
                    Ipv4Addr::new(255, 255, 255, 0),
                )
                .expect("valid"),
            ),
            sorry: Some(Ipv4Addr::new(198, 18, 0, 50).into()),
            flags: Default::default(),
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &req).expect("written");
        assert_eq!(read_message::<Request>(&mut &buf[..]).expect("read"), req);
        let answer: Answer = Err(ControlError::NoSuchReal {
            service: key(),
            addr: Ipv4Addr::new(198, 18, 0, 11).into(),
        });
        let mut buf = Vec::new();
        write_message(&mut buf, &answer).expect("written");
        assert_eq!(read_message::<Answer>(&mut &buf[..]).expect("read"), answer);
    }

    #[test]
    fn bad_messages_are_errors_not_crashes() {
        let huge = ((MAX_MESSAGE + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_message::<Request>(&mut &huge[..]),
            Err(WireError::TooLarge(_))
        ));
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{oops");
        assert!(matches!(
            read_message::<Request>(&mut &junk[..]),
            Err(WireError::Json(_))
        ));
        let body = br#"{"version":99,"body":"List"}"#;
        let mut other = (body.len() as u32).to_be_bytes().to_vec();
        other.extend_from_slice(body);
        assert!(matches!(
            read_message::<Request>(&mut &other[..]),
            Err(WireError::Version(99))
        ));
        let short = [0u8, 0, 0, 9, b'{'];
        assert!(matches!(
            read_message::<Request>(&mut &short[..]),
            Err(WireError::Io(_))
        ));
    }
}
