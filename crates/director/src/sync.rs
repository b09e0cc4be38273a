//! IPVS's sync daemon, both roles at once: the workers' new and changed connections are
//! multicast as IPVS's sync protocol (version 1) on the sync interface, and what other
//! directors (xdpvs or kernel IPVS) multicast is handed to the workers to install. Two
//! threads, off the workers' cores: the sender batches records into messages of at most
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

/// The running daemon; stops its threads when dropped.
#[derive(Debug)]
pub struct SyncDaemon {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Its counters.
    pub stats: Arc<SyncStats>,
    /// Its configuration.
    pub config: SyncConfig,
}

impl Drop for SyncDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long the sender holds a message that is not full.
const FLUSH: Duration = Duration::from_millis(20);

/// Starts both roles: records from `from_workers` are sent, received connections go to
/// `to_workers`.
pub fn start(
    config: SyncConfig,
    from_workers: Receiver<SyncConn>,
    to_workers: Vec<Sender<SyncConn>>,
    known: Known,
    core: Option<usize>,
) -> io::Result<SyncDaemon> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SyncStats::default());
    let out = sender_socket(&config)?;
    let inp = receiver_socket(&config)?;
    let mut threads = Vec::new();
    {
        let (stop, stats, config) = (Arc::clone(&stop), Arc::clone(&stats), config.clone());
        threads.push(
            std::thread::Builder::new()
                .name("xdpvs-sync-tx".into())
                .spawn(move || {
                    pin(core);
                    send_loop(&out, &config, &from_workers, &stop, &stats);
                })?,
        );
    }
    {
        let (stop, stats, syncid) = (Arc::clone(&stop), Arc::clone(&stats), config.syncid);
        threads.push(
            std::thread::Builder::new()
                .name("xdpvs-sync-rx".into())
                .spawn(move || {
                    pin(core);
                    receive_loop(&inp, syncid, &to_workers, known.as_ref(), &stop, &stats);
                })?,
        );
    }
    info!(
        "sync daemon (master and backup) on {}: group {}:{}, syncid {}, maxlen {}, ttl {}",
        config.iface, config.group, config.port, config.syncid, config.maxlen, config.ttl
    );
    Ok(SyncDaemon {
        stop,
        threads,
        stats,
        config,
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
