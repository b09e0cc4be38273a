//! IPVS's sync daemon: in the master role the workers' new and changed connections are
//! multicast as IPVS's sync protocol (version 1) on the sync interface; in the backup
//! role what other directors (xdpvs or kernel IPVS) multicast is handed to the workers to
//! install. Either role, or both at once, started and stopped at run time. Each role is
//! a thread off the workers' cores: the sender batches records into messages of at most
//! `maxlen` bytes (sent when full, or 20 ms after the first record), the receiver reads,
//! checks and dispatches them. Neither ever makes a worker wait: both sides of each
//! channel are bounded and a full one drops and counts.
//!
//! Where a received connection goes: with one worker, to it; with several, to every
//! worker (the flow's next packets land on the queue the NIC's RSS picks, which this
//! director cannot compute for a flow it has not seen; the copies on the other workers
//! are never used and expire with their timeout).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};
use xdpvs_sched::sync::{self, SyncConn, Writer};

/// Whether this director could install a received connection (it has the service and
/// the real server): what is not is counted and goes no further. Asked once a message
/// for a check of the configuration in force then.
pub type Known = Arc<dyn Fn() -> Box<dyn Fn(&SyncConn) -> bool> + Send + Sync>;

/// Where and how the daemon synchronises (ipvsadm's `--start-daemon` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The interface the messages go out of and come in on (`--mcast-interface`).
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// Its IPv4 address (the messages' source).
    pub addr: Ipv4Addr,
    /// The sync id sent, and the one accepted (0 accepts any), as IPVS's `--syncid`.
    pub syncid: u8,
    /// The multicast group (`--mcast-group`, default 224.0.0.81).
    pub group: Ipv4Addr,
    /// The UDP port (`--mcast-port`, default 8848).
    pub port: u16,
    /// The multicast TTL (`--mcast-ttl`, default 1).
    pub ttl: u8,
    /// The largest message (`--sync-maxlen`, default 1472).
    pub maxlen: usize,
}

/// What the daemon did, for logs and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Connections sent.
    pub sent_conns: AtomicU64,
    /// Messages received and taken.
    pub received: AtomicU64,
    /// Connections received and handed to the workers.
    pub received_conns: AtomicU64,
    /// Messages dropped: malformed, or another version.
    pub malformed: AtomicU64,
    /// Messages dropped: another sync id.
    pub foreign: AtomicU64,
    /// Connections not handed over: a worker's inbox full.
    pub inbox_full: AtomicU64,
    /// Connections not handed over: no such service or real server here.
    pub unknown: AtomicU64,
}

/// A role of the sync daemon (ipvsadm's `--start-daemon master|backup`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// Sends this director's connections.
    Master,
    /// Installs other directors' connections.
    Backup,
}

impl Role {
    /// ipvsadm's word.
    pub fn word(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// Why a role could not start or stop (ipvsadm's messages where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// `--start-daemon` of a role that runs.
    #[error("the {0} sync daemon is already running: --stop-daemon {0} first")]
    Running(Role),
    /// `--stop-daemon` of a role that does not run.
    #[error("no {0} sync daemon is running")]
    NotRunning(Role),
    /// Its interface.
    #[error("--mcast-interface {iface}: {why}")]
    Interface {
        /// The interface.
        iface: String,
        /// What is wrong with it.
        why: String,
    },
    /// Its sockets or thread.
    #[error("starting the {role} sync daemon on {iface}: {why}")]
    Start {
        /// The role.
        role: Role,
        /// The interface.
        iface: String,
        /// The system's error.
        why: String,
    },
}

/// A role that runs: its thread stops when the flag is set.
#[derive(Debug)]
struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    config: SyncConfig,
}

/// The sync daemon: its roles start and stop independently (as IPVS's), each on its own
/// thread off the workers' cores; the workers' channels and the counters outlive them.
pub struct Daemon {
    from_workers: Receiver<SyncConn>,
    to_workers: Vec<Sender<SyncConn>>,
    roles: Arc<xdpvs_dataplane::worker::SyncRoles>,
    known: Known,
    core: Option<usize>,
    master: Option<Running>,
    backup: Option<Running>,
    /// Stopped threads not yet joined (stopping never waits for a thread's timeout).
    stopping: Vec<JoinHandle<()>>,
    /// Its counters.
    pub stats: Arc<SyncStats>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("master", &self.master)
            .field("backup", &self.backup)
            .finish_non_exhaustive()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for role in [Role::Master, Role::Backup] {
            let _ = self.stop(role);
        }
        for t in self.stopping.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long the sender holds a message that is not full.
const FLUSH: Duration = Duration::from_millis(20);

impl Daemon {
    /// A daemon with no role running: records come from `from_workers`, received
    /// connections go to `to_workers`, and `roles` tells the workers which roles run.
    pub fn new(
        (from_workers, to_workers): (Receiver<SyncConn>, Vec<Sender<SyncConn>>),
        roles: Arc<xdpvs_dataplane::worker::SyncRoles>,
        known: Known,
        core: Option<usize>,
    ) -> Daemon {
        Daemon {
            from_workers,
            to_workers,
            roles,
            known,
            core,
            master: None,
            backup: None,
            stopping: Vec::new(),
            stats: Arc::new(SyncStats::default()),
        }
    }

    /// The roles that run, with their settings.
    pub fn running(&self) -> Vec<(Role, SyncConfig)> {
        [(Role::Master, &self.master), (Role::Backup, &self.backup)]
            .into_iter()
            .filter_map(|(role, r)| r.as_ref().map(|r| (role, r.config.clone())))
            .collect()
    }

    /// Whether `role` runs.
    pub fn runs(&self, role: Role) -> bool {
        self.slot(role).is_some()
    }

    fn slot(&self, role: Role) -> &Option<Running> {
        match role {
            Role::Master => &self.master,
            Role::Backup => &self.backup,
        }
    }

    /// Starts `role` with `config`.
    pub fn start(&mut self, role: Role, config: SyncConfig) -> Result<(), SyncError> {
        self.reap();
        if self.runs(role) {
            return Err(SyncError::Running(role));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let failed = |e: io::Error| SyncError::Start {
            role,
            iface: config.iface.clone(),
            why: e.to_string(),
        };
        let (core, stats) = (self.core, Arc::clone(&self.stats));
        let thread = match role {
            Role::Master => {
                let out = sender_socket(&config).map_err(failed)?;
                // Records kept while no master ran are stale.
                while self.from_workers.try_recv().is_ok() {}
                let (stop, config, from) =
                    (Arc::clone(&stop), config.clone(), self.from_workers.clone());
                std::thread::Builder::new()
                    .name("xdpvs-sync-tx".into())
                    .spawn(move || {
                        pin(core);
                        send_loop(&out, &config, &from, &stop, &stats);
                    })
            }
            Role::Backup => {
                let inp = receiver_socket(&config).map_err(failed)?;
                let (stop, syncid, to, known) = (
                    Arc::clone(&stop),
                    config.syncid,
                    self.to_workers.clone(),
                    Arc::clone(&self.known),
                );
                std::thread::Builder::new()
                    .name("xdpvs-sync-rx".into())
                    .spawn(move || {
                        pin(core);
                        receive_loop(&inp, syncid, &to, known.as_ref(), &stop, &stats);
                    })
            }
        }
        .map_err(failed)?;
        info!(
            "{role} sync daemon on {}: group {}:{}, syncid {}, maxlen {}, ttl {}",
            config.iface, config.group, config.port, config.syncid, config.maxlen, config.ttl
        );
        let running = Some(Running {
            stop,
            thread,
            config,
        });
        match role {
            Role::Master => {
                self.master = running;
                self.roles.master.store(true, Relaxed);
            }
            Role::Backup => {
                self.backup = running;
                self.roles.backup.store(true, Relaxed);
            }
        }
        Ok(())
    }

    /// Stops `role` (its thread ends within its poll interval, never waited for).
    pub fn stop(&mut self, role: Role) -> Result<(), SyncError> {
        let r = match role {
            Role::Master => {
                self.roles.master.store(false, Relaxed);
                self.master.take()
            }
            Role::Backup => {
                self.roles.backup.store(false, Relaxed);
                self.backup.take()
            }
        }
        .ok_or(SyncError::NotRunning(role))?;
        r.stop.store(true, Relaxed);
        self.stopping.push(r.thread);
        info!("{role} sync daemon on {} stopped", r.config.iface);
        self.reap();
        Ok(())
    }

    /// Joins the stopped threads that have ended.
    fn reap(&mut self) {
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.stopping.drain(..).partition(JoinHandle::is_finished);
        self.stopping = waiting;
        for t in done {
            let _ = t.join();
        }
    }
}

/// The settings of a role, resolved on this host: the interface's index and IPv4
/// address (the messages' source, as IPVS binds its sender).
#[allow(clippy::too_many_arguments)]
pub fn resolve(
    iface: &str,
    syncid: u8,
    group: Ipv4Addr,
    port: u16,
    ttl: u8,
    maxlen: usize,
) -> Result<SyncConfig, SyncError> {
    let bad = |why: String| SyncError::Interface {
        iface: iface.to_string(),
        why,
    };
    if !group.is_multicast() {
        return Err(bad(format!(
            "group {group} is not an IPv4 multicast address"
        )));
    }
    let ifindex: u32 = crate::iface::attr(iface, "ifindex")
        .map_err(|e| bad(e.to_string()))?
        .parse()
        .map_err(|_| bad("no interface index".into()))?;
    let addr = crate::neighbours::local_addresses(ifindex)
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .find_map(|l| match l.addr {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
        .ok_or_else(|| bad("it has no IPv4 address to send from".into()))?;
    Ok(SyncConfig {
        iface: iface.to_string(),
        ifindex,
        addr,
        syncid,
        group,
        port,
        ttl,
        maxlen,
    })
}

fn pin(core: Option<usize>) {
    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

fn sender_socket(c: &SyncConfig) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(c.iface.as_bytes()))?;
    s.set_multicast_if_v4(&c.addr)?;
    s.set_multicast_ttl_v4(u32::from(c.ttl))?;
    // A director does not take its own messages back.
    s.set_multicast_loop_v4(false)?;
    s.bind(&SocketAddr::from(SocketAddrV4::new(c.addr, 0)).into())?;
    Ok(s.into())
}

fn receiver_socket(c: &SyncConfig) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(c.iface.as_bytes()))?;
    s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, c.port)).into())?;
    s.join_multicast_v4_n(
        &c.group,
        &socket2::InterfaceIndexOrAddress::Index(c.ifindex),
    )?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

fn send_loop(
    sock: &UdpSocket,
    c: &SyncConfig,
    from: &Receiver<SyncConn>,
    stop: &AtomicBool,
    stats: &SyncStats,
) {
    let to = SocketAddrV4::new(c.group, c.port);
    let mut w = Writer::new(c.syncid, c.maxlen);
    let mut since: Option<Instant> = None;
    let send = |w: &mut Writer, since: &mut Option<Instant>| {
        if w.count() == 0 {
            return;
        }
        match sock.send_to(w.bytes(), to) {
            Ok(_) => {
                stats.sent.fetch_add(1, Relaxed);
                stats.sent_conns.fetch_add(u64::from(w.count()), Relaxed);
            }
            Err(e) => warn!("sync daemon: sending to {to}: {e}"),
        }
        w.clear();
        *since = None;
    };
    while !stop.load(Relaxed) {
        let wait = since.map_or(Duration::from_millis(200), |t| {
            FLUSH.saturating_sub(t.elapsed())
        });
        match from.recv_timeout(wait) {
            Ok(r) => {
                if !w.push(&r) {
                    send(&mut w, &mut since);
                    w.push(&r);
                }
                since.get_or_insert_with(Instant::now);
            }
            Err(RecvTimeoutError::Timeout) => send(&mut w, &mut since),
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if since.is_some_and(|t| t.elapsed() >= FLUSH) {
            send(&mut w, &mut since);
        }
    }
    send(&mut w, &mut since);
}

/// The workers a received connection goes to: a TCP connection to the one its client
/// chooses, whose segments the others hand to it; a UDP flow to every worker (handing
/// over every datagram of every flow would cost more than the copies), and a persistence
/// template too (a new connection of its clients may land on any worker).
fn workers_of(c: &SyncConn, n: usize) -> std::ops::Range<usize> {
    if c.protocol == 6 && !c.is_template() && n > 1 {
        let w = usize::from(xdpvs_dataplane::engine::owner(
            c.client.0,
            c.client.1,
            n.min(usize::from(u16::MAX)) as u16,
        ));
        w..w + 1
    } else {
        0..n
    }
}

fn receive_loop(
    sock: &UdpSocket,
    syncid: u8,
    to: &[Sender<SyncConn>],
    known: &(dyn Fn() -> Box<dyn Fn(&SyncConn) -> bool> + Send + Sync),
    stop: &AtomicBool,
    stats: &SyncStats,
) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Relaxed) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                warn!("sync daemon: receiving: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        match sync::decode(&buf[..n]) {
            Ok((id, _)) if syncid != 0 && id != syncid => {
                stats.foreign.fetch_add(1, Relaxed);
            }
            Ok((_, conns)) => {
                stats.received.fetch_add(1, Relaxed);
                let known = known();
                for c in &conns {
                    stats.received_conns.fetch_add(1, Relaxed);
                    if !known(c) {
                        stats.unknown.fetch_add(1, Relaxed);
                        continue;
                    }
                    for w in workers_of(c, to.len()) {
                        if to[w].try_send(*c).is_err() {
                            stats.inbox_full.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            Err(_) => {
                stats.malformed.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> (Daemon, Arc<xdpvs_dataplane::worker::SyncRoles>) {
        let (_tx, rx) = crossbeam_channel::bounded(4);
        let (to, _inbox) = crossbeam_channel::bounded(4);
        let roles = Arc::new(xdpvs_dataplane::worker::SyncRoles::default());
        let known: Known = Arc::new(|| Box::new(|_: &SyncConn| true));
        (
            Daemon::new((rx, vec![to]), Arc::clone(&roles), known, None),
            roles,
        )
    }

    #[test]
    fn roles_start_and_stop_one_by_one_as_ipvs_s() {
        if !xdpvs_testkit::is_root() {
            xdpvs_testkit::cannot_run(
                "the sync daemon's roles",
                "binding its sockets to an interface needs root",
            );
            return;
        }
        let (mut d, roles) = daemon();
        let config = resolve("lo", 9, Ipv4Addr::new(239, 18, 0, 1), 18848, 1, 1472).expect("lo");
        assert_eq!(config.addr, Ipv4Addr::LOCALHOST);
        assert_eq!(
            d.stop(Role::Master),
            Err(SyncError::NotRunning(Role::Master))
        );
        d.start(Role::Master, config.clone())
            .expect("master starts");
        assert!(roles.master.load(Relaxed) && !roles.backup.load(Relaxed));
        assert_eq!(
            d.start(Role::Master, config.clone()),
            Err(SyncError::Running(Role::Master))
        );
        d.start(Role::Backup, config.clone())
            .expect("backup starts too");
        assert_eq!(
            d.running(),
            vec![
                (Role::Master, config.clone()),
                (Role::Backup, config.clone())
            ]
        );
        d.stop(Role::Master).expect("stops");
        assert!(!roles.master.load(Relaxed) && roles.backup.load(Relaxed));
        assert_eq!(d.running(), vec![(Role::Backup, config)]);
        d.stop(Role::Backup).expect("stops");
        assert!(d.running().is_empty());
    }

    #[test]
    fn a_role_needs_an_interface_with_an_ipv4_address_and_a_multicast_group() {
        let e = resolve(
            "xdpvs-none0",
            0,
            Ipv4Addr::new(224, 0, 0, 81),
            8848,
            1,
            1472,
        )
        .expect_err("no such interface");
        assert!(
            e.to_string().starts_with("--mcast-interface xdpvs-none0: "),
            "{e}"
        );
        let e = resolve("lo", 0, Ipv4Addr::new(198, 18, 0, 1), 8848, 1, 1472)
            .expect_err("not multicast");
        assert!(
            e.to_string().contains("not an IPv4 multicast address"),
            "{e}"
        );
    }
}
