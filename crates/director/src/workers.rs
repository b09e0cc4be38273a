//! One pinned worker thread per RX queue, and the live dataplane the control plane
//! configures through them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use tracing::info;
use xdpvs_dataplane::device::Device;
use xdpvs_dataplane::engine::Explained;
use xdpvs_dataplane::handoff::Handoff;
use xdpvs_dataplane::stats::{ConflictSeen, TrafficTotals};
use xdpvs_dataplane::sys::PacketSocket;
use xdpvs_dataplane::worker::{
    Control, ControlFrame, ExplainRequest, IdlePolicy, Install, ListRequest, LoopStats, Worker,
};
use xdpvs_dataplane::xdp::Steering;
use xdpvs_dataplane::{NatSource, Services, Tables, WorkerStats};
use xdpvs_sched::conn::{DestRef, Listed, Loads};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Load, Mac, ServiceKey, Time};

use crate::control::check::{Heard, Packet};
use crate::control::dataplane::{Configure, DataplaneError, Observe, Probe};
use crate::iface::format_mac;
use crate::offload::OffloadView;

/// How long a worker may take to acknowledge a configuration snapshot.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// `--cores` names a CPU this process may not run on.
    #[error("cannot pin worker {queue} to core {core}: this process may run on cores {allowed}")]
    Pin {
        /// The queue.
        queue: u32,
        /// The core asked for.
        core: usize,
        /// The cores there are.
        allowed: String,
    },
    /// The thread could not be spawned.
    #[error("starting worker {queue}")]
    Spawn {
        /// The queue.
        queue: u32,
        /// Why.
        source: std::io::Error,
    },
    /// No randomness for the connection-table seed.
    #[error("reading OS entropy for the connection-table seed: {0}")]
    Entropy(String),
    /// The connection table could not be allocated.
    #[error("allocating the connection table")]
    Table(#[from] xdpvs_sched::conn::ConnTableError),
}

/// A running worker, seen from the control thread.
#[derive(Debug)]
struct Handle {
    ctrl: Sender<Control>,
    loop_stats: Arc<LoopStats>,
    loads: Arc<Loads>,
    stats: Arc<WorkerStats>,
    thread: JoinHandle<()>,
}

/// The workers, one per queue.
#[derive(Debug)]
pub struct Workers {
    list: Vec<Handle>,
    stop: Arc<AtomicBool>,
    retired: Receiver<Box<Services>>,
    retired_tx: Sender<Box<Services>>,
    start: Instant,
}

/// Totals over all workers, reported when the director stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames steered here that the engine did not handle (recycled).
    pub unhandled: u64,
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Workers {
        let (retired_tx, retired) = unbounded();
        Workers {
            list: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            retired,
            retired_tx,
            start: Instant::now(),
        }
    }

    /// Starts the worker of `queue` over `dev` with `tables`, as `how` says.
    pub fn spawn<D>(
        &mut self,
        queue: u32,
        dev: D,
        tables: Tables,
        how: WorkerPlan,
    ) -> Result<(), WorkerError>
    where
        D: Device + Send + 'static,
        D::Frame: Send,
    {
        let WorkerPlan {
            core,
            poll,
            sweep_rate,
            handoff,
            sync,
            offload,
        } = how;
        let (ctrl, crx) = unbounded();
        let mut w = Worker::new(dev, tables, crx, self.retired_tx.clone());
        w.set_sweep_rate(sweep_rate);
        if let Some(h) = handoff {
            w.set_handoff(queue as usize, h);
        }
        if let Some(link) = sync {
            w.set_sync(link);
        }
        if let Some(link) = offload {
            w.set_offload(link);
        }
        let (loop_stats, loads, stats) = (
            Arc::clone(w.loop_stats()),
            Arc::clone(w.tables().conns().loads()),
            Arc::clone(w.tables().stats()),
        );
        let (stop, start) = (Arc::clone(&self.stop), self.start);
        let (pinned_tx, pinned) = bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("xdpvs-q{queue}"))
            .spawn(move || {
                let ok = core
                    .is_none_or(|id| core_affinity::set_for_current(core_affinity::CoreId { id }));
                let _ = pinned_tx.send(ok);
                if ok {
                    w.run(
                        || Time::from_nanos(start.elapsed().as_nanos() as u64),
                        &stop,
                        poll,
                    );
                }
            })
            .map_err(|source| WorkerError::Spawn { queue, source })?;
        if pinned.recv() != Ok(true) {
            let _ = thread.join();
            return Err(WorkerError::Pin {
                queue,
                core: core.unwrap_or_default(),
                allowed: allowed_cores(),
            });
        }
        self.list.push(Handle {
            ctrl,
            loop_stats,
            loads,
            stats,
            thread,
        });
        Ok(())
    }

    /// Tells worker `i` to poll as `p` from now on.
    pub fn set_idle(&self, i: usize, p: IdlePolicy) {
        if let Some(w) = self.list.get(i) {
            let _ = w.ctrl.send(Control::Idle(p));
        }
    }

    /// The origin of the workers' clock.
    pub fn clock_start(&self) -> Instant {
        self.start
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// What other threads may use of the workers: their control channels and counters
    /// (`ifindex`: their interfaces, where probes' answers are heard: the clients' one,
    /// and the real servers' one of a two-armed director).
    pub fn links(&self, capacity: usize, ifindex: (u32, Option<u32>)) -> Links {
        Links {
            list: Arc::new(
                self.list
                    .iter()
                    .map(|w| Link {
                        ctrl: w.ctrl.clone(),
                        loop_stats: Arc::clone(&w.loop_stats),
                        loads: Arc::clone(&w.loads),
                        stats: Arc::clone(&w.stats),
                    })
                    .collect(),
            ),
            capacity,
            ifindex,
            offload: None,
        }
    }

    /// The first worker that stopped on its own, if any.
    pub fn first_dead(&self) -> Option<usize> {
        self.list.iter().position(|w| w.thread.is_finished())
    }

    /// Frees snapshots the workers replaced (off the packet path).
    pub fn drop_retired(&self) {
        while self.retired.try_recv().is_ok() {}
    }

    /// Stops and joins every worker; their totals.
    pub fn stop(self) -> Totals {
        self.stop.store(true, Relaxed);
        let mut t = Totals::default();
        for w in self.list {
            drop(w.ctrl);
            let _ = w.thread.join();
            t.rx += w.stats.rx.get();
            t.tx += w.stats.tx.get();
            t.dropped += w.stats.drops_total();
            t.unhandled += w.stats.unhandled.get();
        }
        t
    }
}

impl Default for Workers {
    fn default() -> Self {
        Workers::new()
    }
}

/// A fresh connection-table seed from the OS's entropy, so that nobody can aim flows at
/// one probe chain.
pub fn random_seed() -> Result<u64, WorkerError> {
    getrandom::u64().map_err(|e| WorkerError::Entropy(e.to_string()))
}

/// The cores this process may be pinned to, for messages.
pub fn allowed_cores() -> String {
    let ids: Vec<String> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    if ids.is_empty() {
        "(unknown)".into()
    } else {
        ids.join(",")
    }
}

/// One worker as other threads reach it: its control channel and shared counters.
#[derive(Debug)]
struct Link {
    ctrl: Sender<Control>,
    loop_stats: Arc<LoopStats>,
    loads: Arc<Loads>,
    stats: Arc<WorkerStats>,
}

/// The workers as any thread may use them: to read their counters ([`Observe`]), to
/// ask them for pieces of their tables and to probe ([`Probe`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Links {
    list: Arc<Vec<Link>>,
    capacity: usize,
    ifindex: (u32, Option<u32>),
    /// `run --offload`: what the XDP program forwarded itself, counted as a worker's.
    offload: Option<OffloadView>,
}

impl Links {
    /// These links with the counters of `run --offload`'s thread summed into the
    /// services' and real servers' traffic.
    pub fn with_offload(mut self, view: OffloadView) -> Links {
        self.offload = Some(view);
        self
    }

    /// `run --offload`'s thread, if it runs.
    pub fn offload(&self) -> Option<&OffloadView> {
        self.offload.as_ref()
    }

    /// `of` the workers' counters, summed, with the offload thread's (fresh) when it runs.
    fn traffic(&self, of: impl Fn(&WorkerStats) -> TrafficTotals) -> TrafficTotals {
        let fast = self
            .offload
            .as_ref()
            .map_or_else(TrafficTotals::default, |o| {
                o.fresh();
                of(&o.stats)
            });
        self.list.iter().fold(fast, |acc, w| acc + of(&w.stats))
    }

    /// Each worker's loop and packet counters, in queue order.
    pub fn stats(&self) -> Vec<(&LoopStats, &WorkerStats)> {
        self.list
            .iter()
            .map(|w| (&*w.loop_stats, &*w.stats))
            .collect()
    }

    /// Frames forwarded by every worker so far.
    pub fn forwarded(&self) -> u64 {
        self.list.iter().map(|w| w.stats.tx.get()).sum()
    }

    /// Has worker 0 send `frames` (frames of the director's own).
    fn send(&self, frames: &[Vec<u8>]) -> Result<(), DataplaneError> {
        let Some(first) = self.list.first() else {
            return Ok(());
        };
        for f in frames {
            if let Some(frame) = ControlFrame::new(f) {
                first
                    .ctrl
                    .send(Control::Send(frame))
                    .map_err(|_| DataplaneError::WorkerGone(0))?;
            }
        }
        Ok(())
    }
}

/// How a worker runs: pinned to `core` (an error if that fails), polling with `poll`,
/// its expiry sweep paced at `sweep_rate` slots a second, handing NAT connections'
/// packets to the other workers through `handoff` (several queues).
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// The core to pin it to.
    pub core: Option<usize>,
    /// How it polls.
    pub poll: IdlePolicy,
    /// `--sweep-rate`.
    pub sweep_rate: u64,
    /// The workers' shared hand-off inboxes.
    pub handoff: Option<Arc<Handoff>>,
    /// Connection synchronisation: where its records go, where others' come from.
    pub sync: Option<xdpvs_dataplane::worker::SyncLink>,
    /// `run --offload`: where its records go, where its touches come from.
    pub offload: Option<xdpvs_dataplane::worker::OffloadLink>,
}

/// The real dataplane as the write side configures it: workers over AF_XDP and the
/// steering program.
#[derive(Debug)]
pub struct Live {
    /// The workers.
    pub workers: Workers,
    /// The XDP program.
    pub steering: Steering,
    /// The director's MAC (source of gratuitous ARP).
    pub director_mac: Mac,
    /// What other threads use of the workers.
    pub links: Links,
    /// The interface's index (its addresses are read again at every steering change).
    pub ifindex: u32,
    /// Two-armed: the real servers' interface's index.
    pub servers_ifindex: Option<u32>,
}

impl Live {
    /// The interface frames to real servers leave by.
    pub fn servers_ifindex(&self) -> u32 {
        self.servers_ifindex.unwrap_or(self.ifindex)
    }
}

impl Configure for Live {
    fn install(&mut self, services: &Services) -> Result<(), DataplaneError> {
        let list = &self.workers.list;
        // Only to name a worker that does not answer: what orders its install before
        // what follows here is its message on `installed`, not this counter.
        let before: Vec<u64> = list.iter().map(|w| w.loop_stats.installs.get()).collect();
        let (done, installed) = bounded(list.len());
        for (i, w) in list.iter().enumerate() {
            w.ctrl
                .send(Control::Install(Install {
                    services: Box::new(services.clone()),
                    done: done.clone(),
                }))
                .map_err(|_| DataplaneError::WorkerGone(i))?;
        }
        drop(done);
        let deadline = Instant::now() + INSTALL_TIMEOUT;
        for _ in 0..list.len() {
            if installed.recv_deadline(deadline).is_err() {
                let worker = (0..list.len())
                    .find(|&i| list[i].loop_stats.installs.get() == before[i])
                    .unwrap_or(0);
                return Err(match list[worker].thread.is_finished() {
                    true => DataplaneError::WorkerGone(worker),
                    false => DataplaneError::InstallTimeout {
                        worker,
                        seconds: INSTALL_TIMEOUT.as_secs(),
                    },
                });
            }
        }
        if let Some(o) = self.links.offload() {
            o.installed(services);
        }
        Ok(())
    }

    fn steer(&mut self, keys: &[ServiceKey], nat: &[NatSource]) -> Result<(), DataplaneError> {
        // The director's own addresses as they are now: answers to its checks of NAT
        // real servers stay the kernel's.
        let mut own: Vec<IpAddr> = Vec::new();
        if !nat.is_empty() {
            for i in std::iter::once(self.ifindex).chain(self.servers_ifindex) {
                own.extend(
                    crate::neighbours::local_addresses(i)
                        .map_err(|e| DataplaneError::Steer(e.to_string()))?
                        .iter()
                        .map(|l| l.addr),
                );
            }
        }
        self.steering
            .set_services(keys, nat, &own)
            .map_err(|e| DataplaneError::Steer(e.to_string()))
    }

    fn advertise(&mut self, vip: IpAddr) {
        let (frame, how) = match vip {
            IpAddr::V4(v) => (
                xdpvs_arp::gratuitous(v, self.director_mac).to_vec(),
                "gratuitous ARP",
            ),
            IpAddr::V6(v) => (
                xdpvs_arp::ndp::unsolicited(v, self.director_mac).to_vec(),
                "unsolicited neighbour advertisement",
            ),
        };
        if self.links.send(&[frame]).is_ok() {
            info!(
                "advertised {vip} at {} ({how})",
                format_mac(&self.director_mac)
            );
        }
    }

    fn send(&mut self, frames: &[Vec<u8>]) {
        let _ = self.links.send(frames);
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) {
        for w in &self.workers.list {
            let _ = w.ctrl.send(Control::Timeouts(timeouts));
        }
    }
}

impl Observe for Live {
    fn load(&self, dest: DestRef) -> Load {
        self.links.load(dest)
    }
    fn persistent(&self, dest: DestRef) -> u64 {
        self.links.persistent(dest)
    }
    fn service_traffic(&self, slot: u32) -> TrafficTotals {
        self.links.service_traffic(slot)
    }
    fn dest_traffic(&self, slot: u32) -> TrafficTotals {
        self.links.dest_traffic(slot)
    }
    fn capacity(&self) -> usize {
        self.links.capacity
    }
    fn list_connections(
        &self,
        sink: &mut dyn FnMut(&[Listed]) -> bool,
    ) -> Result<(), DataplaneError> {
        self.links.list_connections(sink)
    }
}

impl Observe for Links {
    fn load(&self, dest: DestRef) -> Load {
        self.list.iter().fold(Load::default(), |acc, w| {
            let l = w.loads.load(dest);
            Load {
                active: acc.active + l.active,
                inactive: acc.inactive + l.inactive,
            }
        })
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn persistent(&self, dest: DestRef) -> u64 {
        self.list
            .iter()
            .map(|w| u64::from(w.loads.persistent(dest)))
            .sum()
    }

    fn service_traffic(&self, slot: u32) -> TrafficTotals {
        self.traffic(|s| s.service_totals(slot))
    }

    fn dest_traffic(&self, slot: u32) -> TrafficTotals {
        self.traffic(|s| s.dest_totals(slot))
    }

    fn list_connections(
        &self,
        sink: &mut dyn FnMut(&[Listed]) -> bool,
    ) -> Result<(), DataplaneError> {
        let (tx, rx) = bounded(1);
        for (i, w) in self.list.iter().enumerate() {
            let mut cursor = Some(0);
            // One buffer, handed to the worker and back, for the whole listing.
            let mut buf = Vec::with_capacity(LIST_ROWS);
            while let Some(c) = cursor {
                buf.clear();
                w.ctrl
                    .send(Control::List(ListRequest {
                        cursor: c,
                        buf,
                        reply: tx.clone(),
                    }))
                    .map_err(|_| DataplaneError::WorkerGone(i))?;
                let piece = rx
                    .recv_timeout(INSTALL_TIMEOUT)
                    .map_err(|_| DataplaneError::AnswerTimeout(i))?;
                if !sink(&piece.rows) {
                    return Ok(());
                }
                cursor = piece.next;
                buf = piece.rows;
            }
        }
        Ok(())
    }
}

impl Probe for Links {
    fn explain(
        &self,
        key: &ServiceKey,
        client: std::net::SocketAddr,
    ) -> Result<Vec<Option<Explained>>, DataplaneError> {
        let (tx, rx) = bounded(1);
        let mut out = Vec::new();
        for (i, w) in self.list.iter().enumerate() {
            w.ctrl
                .send(Control::Explain(ExplainRequest {
                    key: *key,
                    client,
                    reply: tx.clone(),
                }))
                .map_err(|_| DataplaneError::WorkerGone(i))?;
            out.push(
                rx.recv_timeout(INSTALL_TIMEOUT)
                    .map_err(|_| DataplaneError::AnswerTimeout(i))?,
            );
        }
        Ok(out)
    }

    fn probe_until(
        &self,
        frames: &[Vec<u8>],
        listen: Duration,
        done: &dyn Fn(&Heard) -> bool,
    ) -> Result<Heard, DataplaneError> {
        // The answers are read as they reach the interface: an IP socket would miss those
        // the host drops first (an answer from a VIP the host holds, with --announce, is
        // a martian to it).
        let mut sockets = Vec::new();
        if !listen.is_zero() {
            let (clients, servers) = self.ifindex;
            for i in std::iter::once(clients).chain(servers) {
                sockets.push(
                    PacketSocket::open(i)
                        .map_err(|e| DataplaneError::ListenSocket(e.to_string()))?,
                );
            }
        }
        let seen = |w: &Link| -> Vec<ConflictSeen> { w.stats.conflicts.seen().collect() };
        let before: Vec<Vec<ConflictSeen>> = self.list.iter().map(seen).collect();
        self.send(frames)?;
        let mut heard = Heard::default();
        let deadline = Instant::now() + listen;
        let mut buf = [0u8; 2048];
        while !sockets.is_empty() && Instant::now() < deadline {
            let mut any = false;
            for s in &sockets {
                while let Some(n) = s.recv(&mut buf) {
                    any = true;
                    if heard.packets.len() < PROBE_PACKETS {
                        heard.packets.extend(packet_of(&buf[..n.min(buf.len())]));
                    }
                }
            }
            if any && done(&heard) {
                break;
            }
            if !any {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // A pair seen more often than before the probes (or new in its slot) answered.
        for (w, old) in self.list.iter().zip(&before) {
            for c in seen(w) {
                let known = old.iter().find(|o| o.slot == c.slot && o.seq == c.seq);
                if known.is_none_or(|o| c.count > o.count) {
                    heard.claims.push((c.vip, c.mac));
                }
            }
        }
        Ok(heard)
    }
}

/// Packets `probe` keeps at most (the director's own traffic is heard too).
const PROBE_PACKETS: usize = 10_000;

/// A frame the interface received, as what a probe's answer is made of: an IPv4 packet
/// (TCP or ICMP), or an IPv6 TCP segment or ICMPv6 message directly after its header.
fn packet_of(frame: &[u8]) -> Option<Packet> {
    const ETH: usize = 14;
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => Some(Packet::V4(frame.get(ETH..)?.to_vec())),
        0x86dd => {
            let l4 = frame.get(ETH + 40..)?.to_vec();
            match *frame.get(ETH + 6)? {
                6 => Some(Packet::Tcp6(l4)),
                58 => Some(Packet::Icmp6(l4)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Entries a worker copies per listing request at most.
const LIST_ROWS: usize = 4096;
