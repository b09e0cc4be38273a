//! `xdpvs run`: the director's life — set up, serve the control socket and resolve real
//! servers until SIGINT/SIGTERM (or a worker's failure), then tear down.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use xdpvs_dataplane::worker::IdlePolicy;
use xdpvs_dataplane::{Config, Limits, Options, Services, Tables};
use xdpvs_sched::tcp::Timeouts;

use crate::control::plane::ControlPlane;
use crate::control::proto::{ControlError, Request};
use crate::control::server::{ControlSocket, SocketError};
use crate::health::{Checker, Health, OnFailure};
use crate::iface::format_mac;
use crate::metrics::{answer_scrapes, MetricsServer, Scrape};
use crate::neighbours::{self, Neighbours};
use crate::options::RunOptions;
use crate::setup::{self, Interface, SetupError};
use crate::workers::{self, Live, WorkerError, Workers};

/// Why the director stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Setting up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The control socket.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Starting a worker.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Signal handlers.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The control plane gave up (a worker did not take a configuration).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The neighbour table.
    #[error(transparent)]
    Neighbours(#[from] crate::neighbours::NeighbourError),
    /// The file to start with could not be read.
    #[error("{0}")]
    Load(String),
    /// The table to start with was refused.
    #[error("restoring the table: {0}")]
    Restore(ControlError),
    /// The health checker's thread could not start.
    #[error("starting the health checker: {0}")]
    Checker(std::io::Error),
    /// The metrics server could not start.
    #[error("--metrics: {0}")]
    Metrics(std::io::Error),
    /// A worker thread ended on its own.
    #[error("worker {0} stopped unexpectedly")]
    WorkerDied(usize),
    /// `--announce` could not start.
    #[error(transparent)]
    Announce(#[from] crate::announce::AnnounceError),
}

/// What makes the director stop: `stop` at once (SIGINT), `drain` after draining
/// (SIGTERM, or `xdpvs drain` on the control socket).
#[derive(Debug, Clone, Copy)]
pub struct Stop<'a> {
    /// Stop now: VIPs withdrawn, XDP program detached, workers stopped.
    pub now: &'a AtomicBool,
    /// Drain first (with `--announce`; without it, the same as `now`): withdraw the
    /// VIPs, forward until the flows go idle or `--drain-grace` passes, then stop.
    pub drain: &'a AtomicBool,
}

/// Where the director's configuration comes from at start and on SIGHUP: a file read
/// into changes (`--restore`, `--keepalived`).
pub struct Source<'a> {
    /// What it is, for the log (`/etc/xdpvs/rules`).
    pub name: String,
    /// Reads it; the changes build its table from an empty one.
    pub load: Box<dyn Fn() -> Result<Vec<Request>, String> + 'a>,
    /// Raised by SIGHUP: read it again and apply the difference.
    pub reload: &'a AtomicBool,
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("name", &self.name).finish()
    }
}

/// Runs the director until `stop` says so (SIGINT/SIGTERM set it) or it fails.
/// `source`, if any, is read and applied before the control socket serves anyone; if
/// that fails, the director does not start. On SIGHUP it is read again and applied as
/// one change (a clear and the file's table: real servers and checks that stay as they
/// are keep their connections, counters and state).
pub fn run(
    opts: &RunOptions,
    socket: &Path,
    stop: Stop<'_>,
    source: Option<Source<'_>>,
) -> Result<(), RunError> {
    let initial = match &source {
        Some(s) => Some(Request::Batch((s.load)().map_err(RunError::Load)?)),
        None => None,
    };
    setup::check_capabilities()?;
    if !setup::has_net_raw() {
        warn!("no CAP_NET_RAW: `xdpvs check` will not hear the real servers' answers (add CAP_NET_RAW to the director's capabilities)");
    }
    let ifc = Interface::probe(opts)?;
    let max_mtu = xdpvs_dataplane::sys::xsk::MAX_RX_FRAME - 14;
    if let Some(mtu) = crate::iface::attr(&ifc.name, "mtu")
        .ok()
        .and_then(|m| m.parse::<u32>().ok())
        .filter(|&m| m > max_mtu)
    {
        warn!(
            "{} has MTU {mtu}: frames longer than {} bytes do not fit an AF_XDP frame and are dropped by the kernel (xdpvs_xsk_rx_dropped_total); the LAN's MTU must be at most {max_mtu}",
            ifc.name,
            xdpvs_dataplane::sys::xsk::MAX_RX_FRAME
        );
    }
    let mut announcer = opts
        .announce
        .as_deref()
        .map(crate::announce::Announcer::start)
        .transpose()?;
    let control = ControlSocket::bind(socket)?;
    let limits = Limits {
        conn_capacity: opts.conn_capacity,
        ..Limits::default()
    };
    let options = Options {
        sloppy_tcp: opts.sloppy_tcp,
        expire_nodest_conn: opts.expire_nodest_conn,
        expire_quiescent_template: opts.expire_quiescent_template,
    };

    // Setup: the XDP program, then a socket and a worker per queue.
    let steering = setup::steering(&ifc, opts)?;
    let empty = Services::build(&Config::new(ifc.mac, vec![], options), &limits, None)
        .map_err(ControlError::from)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut workers = Workers::new();
    let placed: Vec<Option<usize>> = (0..ifc.queues)
        .map(|q| {
            opts.cores
                .get(q as usize)
                .copied()
                .or_else(|| cores.get(q as usize % cores.len().max(1)).map(|c| c.id))
        })
        .collect();
    // `--poll auto`: decided per worker from where the interface's RX processing runs,
    // now and again every second.
    let mut auto = (opts.poll == IdlePolicy::Auto)
        .then(|| crate::placement::AutoPoll::new(&ifc.name, placed.clone()));
    let mut policies = vec![opts.poll; placed.len()];
    if let Some(a) = auto.as_mut() {
        for (i, p, why) in a.recheck(Instant::now()) {
            policies[i] = p;
            info!("queue {i}: {} polling: {why}", policy_name(p));
        }
    }
    for q in 0..ifc.queues {
        let dev = setup::socket(&ifc, q, opts, &steering)?;
        let tables = Tables::new(
            empty.clone(),
            &limits,
            Timeouts::default(),
            workers::random_seed()?,
        )
        .map_err(WorkerError::from)?;
        let core = placed[q as usize];
        let zero_copy = dev.is_zero_copy();
        let huge = dev.has_huge_pages();
        let poll = policies[q as usize];
        workers.spawn(q, dev, tables, core, poll, opts.sweep_rate)?;
        info!(
            "queue {q}: AF_XDP socket bound in {} mode (UMEM in {}), worker on core {}, {} polling{}",
            if zero_copy { "zero-copy" } else { "copy" },
            if huge { "huge pages" } else { "4 KiB pages: reserve huge pages (vm.nr_hugepages) to save a TLB miss per frame" },
            core.map_or("any".to_string(), |c| c.to_string()),
            policy_name(poll),
            if auto.is_some() { " (auto)" } else { "" }
        );
    }
    let capacity = limits.conn_capacity * workers.len();
    let live = Live {
        workers,
        steering,
        director_mac: ifc.mac,
        capacity,
    };
    let local = neighbours::local_addresses(ifc.index)?;
    if local.is_empty() {
        warn!(
            "{} has no IPv4 address: real servers are not checked against its subnet",
            ifc.name
        );
    }
    let mut plane = ControlPlane::new(ifc.mac, options, limits, local, live)?;
    let restored = match &initial {
        Some(req) => plane.execute(req).map(|_| ()),
        None => Ok(()),
    };
    info!(
        "director {} ready on {}: control socket {} (try: xdpvs -Ln)",
        format_mac(&ifc.mac),
        ifc.name,
        control.path().display()
    );

    let failure = match restored {
        Err(e) => Some(RunError::Restore(e)),
        Ok(()) => {
            if let Some(s) = &source {
                info!("{} applied", s.name);
            }
            let aside = checker_core(
                &cores.iter().map(|c| c.id).collect::<Vec<_>>(),
                &placed.iter().flatten().copied().collect::<Vec<_>>(),
            );
            let (scrape_tx, scrapes) = crossbeam_channel::unbounded();
            let metrics = opts
                .metrics
                .map(|addr| MetricsServer::start(addr, scrape_tx, aside))
                .transpose();
            match (Neighbours::open(ifc.index), Checker::start(aside), metrics) {
                (Ok(mut neighbours), Ok(checker), Ok(metrics)) => {
                    if let Some(m) = &metrics {
                        info!("metrics at http://{}/metrics", m.addr());
                    }
                    ready();
                    serve(
                        &mut plane,
                        &control,
                        &mut neighbours,
                        &mut Aside {
                            checker: &checker,
                            scrapes: &scrapes,
                            iface: &ifc.name,
                            announcer: announcer.as_mut(),
                            grace: Duration::from_secs(opts.drain_grace),
                        },
                        stop,
                        source.as_ref(),
                        auto.as_mut(),
                    )
                }
                (Err(e), _, _) => Some(RunError::Neighbours(e)),
                (_, Err(e), _) => Some(RunError::Checker(e)),
                (_, _, Err(e)) => Some(RunError::Metrics(e)),
            }
        }
    };

    // Teardown: the VIPs withdrawn, then the XDP program (traffic goes back to the
    // kernel), then the workers; the nftables guard last.
    info!("stopping");
    if let Some(a) = announcer.as_mut() {
        a.withdraw();
    }
    let Live {
        workers,
        mut steering,
        ..
    } = plane.into_dataplane();
    steering.detach();
    let t = workers.stop();
    info!(
        "frames: {} received, {} transmitted, {} dropped, {} unhandled; XDP program detached",
        t.rx, t.tx, t.dropped, t.unhandled
    );
    drop(announcer);
    drop(control);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The control loop: requests, neighbour resolution, supervision. Returns why it ended
/// early, if it did.
fn serve(
    plane: &mut ControlPlane<Live>,
    control: &ControlSocket,
    neigh: &mut Neighbours,
    aside: &mut Aside<'_>,
    stop: Stop<'_>,
    source: Option<&Source<'_>>,
    mut auto: Option<&mut crate::placement::AutoPoll>,
) -> Option<RunError> {
    let checker = aside.checker;
    // The checker is told the checks after every change applied (and only then).
    let mut checks_of = u64::MAX;
    let mut watch = crate::watch::Watch::default();
    let mut next_probe = Instant::now();
    let mut next_probe_all = Instant::now() + PROBE_ALL;
    let mut next_vip_probe = Instant::now() + VIP_PROBE;
    // Learn from the neighbour table when it changed, and after every request (a real
    // server just added may be known to the kernel already); at start for a restored
    // table. A failed apply is tried again at the next turn.
    let mut learn = true;
    let mut next_sample = Instant::now() + crate::control::stats::SAMPLE_EVERY;
    // What is announced is worked out again after every change applied.
    let mut announced_of = u64::MAX;
    let mut drain: Option<Drain> = None;
    while !stop.now.load(Relaxed) {
        let mut asked_to_drain = None;
        match control.serve_one(|req, pieces| match req {
            Request::Drain { grace } => {
                let grace = grace.map_or(aside.grace, |g| Duration::from_secs(g.into()));
                asked_to_drain = Some(grace);
                Ok(crate::control::proto::Reply::Draining {
                    announced: aside.announcer.is_some(),
                    grace_s: grace.as_secs(),
                })
            }
            _ => plane.execute_pieced(&req, &mut |p| pieces.send(p)),
        }) {
            Ok(served) => {
                learn |= served;
                if !served {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Err(e) => warn!("control socket: {e}"),
        }
        if let Some(why) = plane.failure() {
            error!("{why}: stopping");
            return Some(RunError::Control(ControlError::Fatal(why.to_string())));
        }
        plane.dataplane().workers.drop_retired();
        match neigh.poll() {
            Ok(changed) => learn |= changed,
            Err(e) => warn!("neighbour events: {e}"),
        }
        if learn {
            match plane.learn_macs(neigh.table()) {
                Ok(changed) => {
                    learn = false;
                    for (a, m) in changed {
                        match m {
                            Some(m) => {
                                info!("real server {a} is at {}", format_mac(&m));
                                if let Some(moved) = watch.real_at(a, m) {
                                    warn!("{}", moved.message());
                                }
                            }
                            None => warn!(
                                "real server {a} does not answer ARP: no new traffic to it until it does"
                            ),
                        }
                    }
                }
                Err(e) => warn!("applying resolved MACs failed: {e}"),
            }
        }
        let now = Instant::now();
        if now >= next_sample {
            // Keep the 2-second cadence whatever the loop's own timing.
            next_sample += crate::control::stats::SAMPLE_EVERY;
            if next_sample < now {
                next_sample = now + crate::control::stats::SAMPLE_EVERY;
            }
            plane.tick();
        }
        if now >= next_vip_probe {
            next_vip_probe = now + VIP_PROBE;
            plane.ask_who_has_the_vips();
        }
        if now >= next_probe {
            next_probe = now + PROBE_UNRESOLVED;
            let mut probe = plane.unresolved();
            for a in watch.unresolved(now, &probe) {
                warn!("{}", crate::watch::unresolved_message(a, aside.iface));
            }
            if now >= next_probe_all {
                next_probe_all = now + PROBE_ALL;
                probe = plane.real_addrs();
            }
            neighbours::probe(&probe);
        }
        for o in checker.results().try_iter() {
            match plane.health_outcome(&o) {
                Ok(Some(t)) => match t.state {
                    Health::Down => warn!(
                        "real server {} of {} failed its check ({}): {}",
                        t.addr,
                        t.service,
                        t.detail,
                        match t.on_failure {
                            OnFailure::Inhibit => "weight 0 until it passes again",
                            OnFailure::Remove => "removed until it passes again",
                        }
                    ),
                    Health::Up => info!(
                        "real server {} of {} passes its check again: back in service",
                        t.addr, t.service
                    ),
                },
                Ok(None) => {}
                Err(e) => warn!("applying a health check's result failed: {e}"),
            }
        }
        if plane.applied() != checks_of {
            checks_of = plane.applied();
            checker.set(plane.check_targets());
        }
        let worker_stats = plane.dataplane().workers.stats();
        let forwarded: u64 = worker_stats.iter().map(|(_, w)| w.tx.get()).sum();
        for c in watch.conflicts_from(worker_stats.iter().map(|(_, w)| &w.conflicts)) {
            let known = neigh.table().iter().map(|(&a, &m)| (a, m));
            let host = crate::control::check::host_at(known, c.mac, c.vip);
            warn!("{}", c.message(host));
        }
        answer_scrapes(aside.scrapes, plane, &worker_stats, &watch);
        if let Some(src) = source.filter(|s| s.reload.swap(false, Relaxed)) {
            reload(plane, src);
            learn = true;
        }
        if let Some(a) = auto.as_deref_mut() {
            for (i, p, why) in a.recheck(now) {
                info!("queue {i}: now {} polling: {why}", policy_name(p));
                plane.dataplane().workers.set_idle(i, p);
            }
        }
        if let Some(i) = plane.dataplane().workers.first_dead() {
            error!("worker {i} stopped unexpectedly");
            return Some(RunError::WorkerDied(i));
        }
        if stop.drain.swap(false, Relaxed) && drain.is_none() {
            match aside.announcer {
                // Nothing attracts traffic elsewhere: SIGTERM stops at once, as before.
                None => return None,
                Some(_) => asked_to_drain = Some(aside.grace),
            }
        }
        if let (Some(grace), None) = (asked_to_drain, &drain) {
            match aside.announcer.as_deref_mut() {
                Some(a) => {
                    a.withdraw();
                    watch.set_announced(&crate::announce::Wanted {
                        configured: plane.vips().configured,
                        in_service: Default::default(),
                    });
                    info!(
                        "draining: VIPs withdrawn; forwarding the flows that still arrive until none has for {} s, {} s at most",
                        DRAIN_IDLE.as_secs(),
                        grace.as_secs()
                    );
                }
                None => info!(
                    "draining without --announce: nothing to withdraw; forwarding until no flow has arrived for {} s, {} s at most",
                    DRAIN_IDLE.as_secs(),
                    grace.as_secs()
                ),
            }
            drain = Some(Drain::new(now, grace, forwarded));
        } else if let Some(a) = aside.announcer.as_deref_mut().filter(|_| drain.is_none()) {
            if plane.applied() != announced_of {
                announced_of = plane.applied();
                let w = plane.vips();
                watch.set_announced(&w);
                a.set(w);
            }
        }
        if let Some(d) = drain.as_mut() {
            if let Some(why) = d.done(now, forwarded) {
                info!("drained: {why}");
                return None;
            }
        }
    }
    None
}

/// How long no frame may have been forwarded for a drain to end.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// A drain under way: it ends when nothing was forwarded for [`DRAIN_IDLE`] (and at
/// least that long after it began: routers take a moment to follow the withdrawal), or
/// when the grace time is up.
#[derive(Debug, Clone, Copy)]
struct Drain {
    since: Instant,
    grace: Duration,
    forwarded: u64,
    last_forward: Instant,
}

impl Drain {
    fn new(now: Instant, grace: Duration, forwarded: u64) -> Drain {
        Drain {
            since: now,
            grace,
            forwarded,
            last_forward: now,
        }
    }

    /// Whether the drain is over at `now`, the workers having forwarded `forwarded`
    /// frames in all: why, if so.
    fn done(&mut self, now: Instant, forwarded: u64) -> Option<String> {
        if forwarded != self.forwarded {
            self.forwarded = forwarded;
            self.last_forward = now;
        }
        if now.duration_since(self.last_forward) >= DRAIN_IDLE {
            return Some(format!(
                "no frame forwarded for {} s ({:.1} s after the drain began)",
                DRAIN_IDLE.as_secs(),
                now.duration_since(self.since).as_secs_f64()
            ));
        }
        if now.duration_since(self.since) >= self.grace {
            return Some(format!(
                "the grace time of {} s is up (flows still arriving)",
                self.grace.as_secs()
            ));
        }
        None
    }
}

/// What runs beside the workers and the control loop: health checks, metrics scrapes.
struct Aside<'a> {
    checker: &'a Checker,
    scrapes: &'a crossbeam_channel::Receiver<Scrape>,
    /// The interface's name, for messages.
    iface: &'a str,
    /// `--announce`'s thread, if any.
    announcer: Option<&'a mut crate::announce::Announcer>,
    /// `--drain-grace`.
    grace: Duration,
}

/// A polling policy as `--poll` spells it.
fn policy_name(p: IdlePolicy) -> String {
    clap::ValueEnum::to_possible_value(&p).map_or_else(String::new, |v| v.get_name().to_string())
}

/// Tells systemd (when it started us with `Type=notify`) that the director is ready.
fn ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// SIGHUP: reads the source again and applies it as one change.
fn reload(plane: &mut ControlPlane<Live>, src: &Source<'_>) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    match (src.load)() {
        Err(e) => warn!("SIGHUP: {e}; the configuration in force stays"),
        Ok(reqs) => {
            let batch = Request::Batch(std::iter::once(Request::Clear).chain(reqs).collect());
            match plane.execute(&batch) {
                Ok(_) => info!("SIGHUP: {} applied", src.name),
                Err(e) => warn!(
                    "SIGHUP: {}: {e}; nothing of it was applied, the configuration in force stays",
                    src.name
                ),
            }
        }
    }
    ready();
}

/// The core for the health checker: the first one no worker is pinned to, so checks
/// never run on a worker's core; `None` (it floats) when workers hold every core.
fn checker_core(all: &[usize], workers: &[usize]) -> Option<usize> {
    all.iter().copied().find(|c| !workers.contains(c))
}

/// How often unresolved real servers are probed.
const PROBE_UNRESOLVED: Duration = Duration::from_millis(500);
/// How often every real server is probed, so the kernel re-checks entries gone stale.
const PROBE_ALL: Duration = Duration::from_secs(30);
/// How often the director asks who has each VIP (any answer but its own is a conflict).
const VIP_PROBE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_ends_when_forwarding_stops_or_the_grace_is_up() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        // Frames keep coming for 3 s after the withdrawal, then none.
        let mut d = Drain::new(t0, Duration::from_secs(30), 100);
        assert_eq!(d.done(s(1.0), 150), None);
        assert_eq!(d.done(s(3.0), 170), None);
        assert_eq!(d.done(s(4.9), 170), None, "idle for 1.9 s only");
        let why = d.done(s(5.0), 170).expect("idle for 2 s");
        assert!(why.contains("no frame forwarded"), "{why}");
        // Nothing at all arrives: it still waits DRAIN_IDLE for the routers.
        let mut d = Drain::new(t0, Duration::from_secs(30), 7);
        assert_eq!(d.done(s(1.5), 7), None);
        assert!(d.done(s(2.0), 7).is_some());
        // Flows never go idle: the grace time ends it.
        let mut d = Drain::new(t0, Duration::from_secs(5), 0);
        for i in 1..50u64 {
            assert_eq!(d.done(s(i as f64 * 0.1), i), None);
        }
        let why = d.done(s(5.0), 51).expect("grace up");
        assert!(why.contains("grace time of 5 s"), "{why}");
    }
}
