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

/// Runs the director until `stop` is raised (SIGINT/SIGTERM set it) or it fails.
/// `source`, if any, is read and applied before the control socket serves anyone; if
/// that fails, the director does not start. On SIGHUP it is read again and applied as
/// one change (a clear and the file's table: real servers and checks that stay as they
/// are keep their connections, counters and state).
pub fn run(
    opts: &RunOptions,
    socket: &Path,
    stop: &AtomicBool,
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
                        &Aside {
                            checker: &checker,
                            scrapes: &scrapes,
                            iface: &ifc.name,
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

    // Teardown: the XDP program first (traffic goes back to the kernel), then the workers.
    info!("stopping");
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
    aside: &Aside<'_>,
    stop: &AtomicBool,
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
    while !stop.load(Relaxed) {
        match control.serve_one(|req, pieces| plane.execute_pieced(&req, &mut |p| pieces.send(p))) {
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
    }
    None
}

/// What runs beside the workers and the control loop: health checks, metrics scrapes.
struct Aside<'a> {
    checker: &'a Checker,
    scrapes: &'a crossbeam_channel::Receiver<Scrape>,
    /// The interface's name, for messages.
    iface: &'a str,
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
