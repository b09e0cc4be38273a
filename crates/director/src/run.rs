//! `xdpvs run`: the director's life — set up the XDP program and the workers, start the
//! control side's parts (write side, read model, diagnostics, control socket, metrics,
//! health checks), run until SIGINT/SIGTERM, a drain or a worker's failure, then tear
//! down. Only wiring and lifetimes live here; what each part does is in its module.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use xdpvs_dataplane::arms::{Arm, Arms};
use xdpvs_dataplane::sys::Backing;
use xdpvs_dataplane::worker::IdlePolicy;
use xdpvs_dataplane::{Config, Limits, Options, Services, Tables};
use xdpvs_sched::tcp::Timeouts;

use crate::control::diagnose;
use crate::control::proto::{ControlError, DaemonRole, DaemonSettings, Request};
use crate::control::route::Router;
use crate::control::server::{ControlSocket, SocketError};
use crate::control::view::Published;
use crate::control::write::WriteSide;
use crate::health::Checker;
use crate::iface::format_mac;
use crate::metrics::{self, MetricsServer};
use crate::neighbours::{self, Neighbours};
use crate::options::RunOptions;
use crate::setup::{self, Interface, SetupError};
use crate::workers::{self, Live, WorkerError, WorkerPlan, Workers};
use crate::writer::{policy_name, ready, Ended, Source, Stop, Writer};

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
    /// A thread of the control side could not start.
    #[error("starting the {what} thread")]
    Thread {
        /// Which.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The write side gave up (a worker did not take a configuration).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The neighbour table.
    #[error(transparent)]
    Neighbours(#[from] crate::neighbours::NeighbourError),
    /// The file to start with could not be read.
    #[error("{0}")]
    Load(String),
    /// The table to start with was refused: the file and line, and why.
    #[error("{0}; the director did not start")]
    Restore(String),
    /// The metrics server could not start.
    #[error("--metrics")]
    Metrics(#[source] std::io::Error),
    /// The status page could not start, or its admin token is unusable.
    #[error("--web: {0}")]
    Web(String),
    /// A worker thread ended on its own.
    #[error("worker {0} stopped unexpectedly")]
    WorkerDied(usize),
    /// `--announce` could not start.
    #[error(transparent)]
    Announce(#[from] crate::announce::AnnounceError),
    /// The sync daemon could not start.
    #[error("{0}")]
    Sync(String),
    /// `--offload` could not start, or was given with two interfaces.
    #[error("--offload: {0}")]
    Offload(String),
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
        Some(s) => {
            let (lines, reqs): (Vec<crate::writer::Place>, Vec<Request>) =
                (s.load)().map_err(RunError::Load)?.into_iter().unzip();
            Some((s, lines, Request::Batch(reqs)))
        }
        None => None,
    };
    setup::check_capabilities()?;
    let (ifc, servers) = Interface::probe_all(opts)?;
    if opts.offload && servers.is_some() {
        // XDP_TX sends a frame back out of the interface it came in by: a two-armed
        // director's real servers are behind the other one.
        return Err(RunError::Offload(
            "works with one interface (XDP_TX sends back out of the clients' interface); drop --offload or the second -i".into(),
        ));
    }
    let max_mtu = xdpvs_dataplane::sys::xsk::MAX_RX_FRAME - 14;
    for (ifc, mtu) in std::iter::once(&ifc).chain(&servers).filter_map(|i| {
        let mtu = crate::iface::attr(&i.name, "mtu")
            .ok()?
            .parse::<u32>()
            .ok()?;
        (mtu > max_mtu).then_some((i, mtu))
    }) {
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
    let read_only = match &opts.read_only_socket {
        Some(path) => {
            let group = opts
                .read_only_group
                .as_deref()
                .map(setup::group_id)
                .transpose()?;
            Some(ControlSocket::bind_for(path, group)?)
        }
        None => None,
    };
    let limits = Limits {
        conn_capacity: opts.conn_capacity,
        ..Limits::default()
    };
    let options = Options {
        sloppy_tcp: opts.sloppy_tcp,
        expire_nodest_conn: opts.expire_nodest_conn,
        expire_quiescent_template: opts.expire_quiescent_template,
        conn_reuse_mode: opts.conn_reuse_mode,
        // Routers reach announced VIPs by the director's own address.
        vips_routed: opts.announce.is_some(),
    };

    // Setup: the XDP program, then a socket and a worker per queue.
    let steering = setup::steering(&ifc, servers.as_ref(), opts)?;
    let steering_mode = steering.mode().map_or_else(String::new, |m| m.to_string());
    if let Some(s) = &servers {
        info!(
            "two-armed: clients reach the VIPs through {}, the real servers are behind {} ({})",
            ifc.name,
            s.name,
            format_mac(&s.mac)
        );
    }
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
    // The control side's threads (checks, sync, metrics, status page, --offload's
    // thread) go to the first core no worker uses, if there is one.
    let aside = checker_core(
        &cores.iter().map(|c| c.id).collect::<Vec<_>>(),
        &placed.iter().flatten().copied().collect::<Vec<_>>(),
    );
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
    // Several queues: a NAT connection's packets, which RSS may put on two queues (one
    // flow each way), all go to the worker its client chooses.
    let handoff = (ifc.queues > 1).then(|| {
        Arc::new(xdpvs_dataplane::handoff::Handoff::new(
            ifc.queues as usize,
            HANDOFF_FRAMES,
        ))
    });
    // Connection synchronisation: one channel from every worker to the sender, one
    // inbox per worker from the receiver, the roles that run (none until started).
    let sync_out = crossbeam_channel::bounded::<xdpvs_sched::sync::SyncConn>(SYNC_QUEUE);
    let sync_roles = Arc::new(xdpvs_dataplane::worker::SyncRoles::default());
    let mut sync_inboxes = Vec::new();
    // `--offload`: one channel of records from every worker to the offload thread, one
    // inbox of touches per worker from it.
    let offload_out = crossbeam_channel::bounded(crate::offload::RECORDS);
    let mut touch_inboxes = Vec::new();
    let mut queue_facts = Vec::new();
    for q in 0..ifc.queues {
        let dev = setup::socket(&ifc, q, opts, &steering, Arm::Clients)?;
        let servers_dev = servers
            .as_ref()
            .map(|s| setup::socket(s, q, opts, &steering, Arm::Servers).map(|d| (d, s.mac)))
            .transpose()?;
        let tables = Tables::new(
            empty.clone(),
            &limits,
            Timeouts::default(),
            workers::random_seed()?,
        )
        .map_err(WorkerError::from)?;
        let table_facts = (
            tables.conns().memory_bytes(),
            tables.conns().memory().backing(),
        );
        let core = placed[q as usize];
        let zero_copy = dev.is_zero_copy();
        let huge = dev.has_huge_pages();
        let poll = policies[q as usize];
        let (tx, inbox) = crossbeam_channel::bounded(SYNC_QUEUE);
        sync_inboxes.push(tx);
        let offload = opts.offload.then(|| {
            let (tx, touches) = crossbeam_channel::bounded(crate::offload::TOUCHES);
            touch_inboxes.push(tx);
            xdpvs_dataplane::worker::OffloadLink {
                queue: q as u16,
                out: offload_out.0.clone(),
                touches,
            }
        });
        let how = WorkerPlan {
            core,
            poll,
            sweep_rate: opts.sweep_rate,
            handoff: handoff.clone(),
            sync: Some(xdpvs_dataplane::worker::SyncLink {
                out: sync_out.0.clone(),
                inbox,
                roles: Arc::clone(&sync_roles),
            }),
            offload,
        };
        match servers_dev {
            Some((sdev, mac)) => workers.spawn(q, Arms::new(dev, sdev, mac), tables, how)?,
            None => workers.spawn(q, dev, tables, how)?,
        }
        queue_facts.push(crate::web::QueueFacts {
            queue: q,
            core,
            bind: if zero_copy { "zero-copy" } else { "copy" },
            poll: policy_name(poll),
        });
        info!(
            "queue {q}: AF_XDP socket bound in {} mode (UMEM in {}), worker on core {}, {} polling{}",
            if zero_copy { "zero-copy" } else { "copy" },
            if huge { "huge pages" } else { "4 KiB pages: reserve huge pages (vm.nr_hugepages) to save a TLB miss per frame" },
            core.map_or("any".to_string(), |c| c.to_string()),
            policy_name(poll),
            if auto.is_some() { " (auto)" } else { "" }
        );
        let (bytes, backing) = table_facts;
        info!(
            "queue {q}: IPv4 connection table of {} entries, {} MiB in {backing}{}",
            limits.conn_capacity,
            bytes.div_ceil(1 << 20),
            match backing {
                Backing::Transparent | Backing::Small =>
                    ": reserve huge pages (vm.nr_hugepages) to save a TLB miss per lookup",
                _ => "",
            }
        );
    }
    let capacity = limits.conn_capacity * workers.len();
    let servers_index = servers.as_ref().map(|s| s.index);
    let mut links = workers.links(capacity, (ifc.index, servers_index));
    // The offload thread ends when the workers (and their record channel) are gone.
    let mut offload_thread = None;
    if opts.offload {
        let map = steering
            .flows()
            .map_err(|e| RunError::Offload(e.to_string()))?;
        let (view, thread) = crate::offload::start(
            map,
            offload_out.1,
            touch_inboxes,
            workers.clock_start(),
            aside,
        )
        .map_err(|e| RunError::Offload(e.to_string()))?;
        info!(
            "offload: established IPv4 direct-routing flows forwarded by the XDP program (up to {} flows)",
            opts.offload_flows
        );
        links = links.with_offload(view);
        offload_thread = Some(thread);
    }
    drop(offload_out.0);
    let offload_view = links.offload().cloned();
    let live = Live {
        workers,
        steering,
        director_mac: ifc.mac,
        links: links.clone(),
        ifindex: ifc.index,
        servers_ifindex: servers_index,
    };
    let mut local = neighbours::local_addresses(ifc.index)?;
    if let Some(s) = &servers {
        local.extend(neighbours::local_addresses(s.index)?);
    }
    if local.is_empty() {
        warn!(
            "{} has no IPv4 address: real servers are not checked against its subnet",
            ifc.name
        );
    }
    let mut side = WriteSide::new(ifc.mac, options, limits, local, live)?;
    // The sync daemon checks what it receives against the configuration in force; its
    // roles start with --sync-interface (both), ipvsadm's --start-daemon, or a
    // keepalived.conf's lvs_sync_daemon (following its VRRP instance).
    side.set_daemon(sync_daemon(
        (sync_out.1, sync_inboxes),
        sync_roles,
        side.published(),
        aside,
    ));
    if let Some(iface) = &opts.sync_interface {
        let settings = DaemonSettings {
            iface: iface.clone(),
            syncid: opts.syncid,
            maxlen: opts.sync_maxlen,
            group: opts.sync_group,
            port: opts.sync_port,
            ttl: opts.sync_ttl,
        };
        for role in [DaemonRole::Master, DaemonRole::Backup] {
            side.execute(&Request::StartDaemon {
                role,
                settings: settings.clone(),
            })
            .map_err(|e| RunError::Sync(format!("--sync-interface {iface}: {e}")))?;
        }
    }
    if let Some(s) = &servers {
        side.set_servers_mac(s.mac);
    }
    // Tunnels are sized for the interface's MTU (IPVS: the route's).
    let servers_name = servers.as_ref().map_or(&ifc.name, |s| &s.name);
    if let Some(mtu) = crate::iface::attr(servers_name, "mtu")
        .ok()
        .and_then(|m| m.parse().ok())
    {
        side.set_tunnel_mtu(mtu);
    }
    // The hosts on the LAN before the first VIP: none of their addresses may be one.
    side.learn_lan(Neighbours::open_on(ifc.index, servers_index)?.table());
    // keepalived's VRRP: the addresses held here now, and the VIPs that follow it.
    let held = crate::follow::Held::open()?;
    side.set_following(
        opts.vrrp_vips.iter().copied().collect(),
        held.addrs().clone(),
    );
    let restored = match &initial {
        Some((s, lines, req)) => side
            .execute(req)
            .map(|_| ())
            .map_err(|e| crate::writer::at_line(&s.name, lines, 0, &e)),
        None => Ok(()),
    };
    let failure = match restored {
        Err(e) => Some(RunError::Restore(e)),
        Ok(()) => {
            if let Some(s) = &source {
                info!("{} applied", s.name);
            }
            for (vip, _) in side.vrrp().into_iter().filter(|&(_, served)| !served) {
                warn!(
                    "VIP {vip} follows keepalived's VRRP (a vrrp_instance's virtual_ipaddress, or --vrrp-vip) and this host does not hold it: silent until keepalived's VRRP makes it the master (run keepalived --vrrp; to serve it alone, take it out of virtual_ipaddress)"
                );
            }
            let facts = crate::web::Facts {
                iface: ifc.name.clone(),
                servers_iface: servers.as_ref().map(|s| s.name.clone()),
                xdp_mode: steering_mode.clone(),
                queues: queue_facts.clone(),
                version: env!("CARGO_PKG_VERSION"),
                announce: opts.announce.clone(),
            };
            let parts = Parts {
                ifc: &ifc,
                servers: servers.as_ref(),
                opts,
                facts,
                links,
                aside,
                announcer: announcer.as_mut(),
                source: source.as_ref(),
                auto: auto.as_mut(),
                held,
            };
            match parts.run(&mut side, (control, read_only), stop) {
                Ok(Ended::Stopped) => None,
                Ok(Ended::Failed(why)) => {
                    error!("{why}: stopping");
                    Some(RunError::Control(ControlError::Fatal(why)))
                }
                Ok(Ended::WorkerDied(i)) => {
                    error!("worker {i} stopped unexpectedly");
                    Some(RunError::WorkerDied(i))
                }
                Err(e) => Some(e),
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
    } = side.into_dataplane();
    steering.detach();
    let mut t = workers.stop();
    if let Some(thread) = offload_thread {
        // The workers' record channel is closed: the thread ends.
        let _ = thread.join();
    }
    if let Some(o) = &offload_view {
        t.rx += o.stats.rx.get();
        t.tx += o.stats.tx.get();
        info!(
            "offload: {} frames forwarded by the XDP program itself",
            o.stats.tx.get()
        );
    }
    info!(
        "frames: {} received, {} transmitted, {} dropped, {} unhandled; XDP program detached",
        t.rx, t.tx, t.dropped, t.unhandled
    );
    drop(announcer);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Frames each worker's hand-off inbox holds (and buffers per worker in the shared
/// pool): four batches.
const HANDOFF_FRAMES: usize = 4 * xdpvs_dataplane::worker::BATCH;

/// The parts that run beside the workers while the director serves, and what they need.
struct Parts<'a> {
    ifc: &'a Interface,
    /// Two-armed: the real servers' interface.
    servers: Option<&'a Interface>,
    opts: &'a RunOptions,
    /// What the status page says the director is.
    facts: crate::web::Facts,
    links: workers::Links,
    /// The core for the checker and the metrics server.
    aside: Option<usize>,
    announcer: Option<&'a mut crate::announce::Announcer>,
    source: Option<&'a Source<'a>>,
    auto: Option<&'a mut crate::placement::AutoPoll>,
    /// The addresses this host holds (keepalived's VRRP).
    held: crate::follow::Held,
}

impl Parts<'_> {
    /// Starts the health checker, `/metrics`, diagnostics and the control socket's
    /// clients' threads, then runs the write side on this thread until it ends. Every
    /// part started here is stopped before this returns (the control socket's file is
    /// removed; clients still connected are answered that the director is stopping).
    fn run(
        self,
        side: &mut WriteSide<Live>,
        (control, read_only): (ControlSocket, Option<ControlSocket>),
        stop: Stop<'_>,
    ) -> Result<Ended, RunError> {
        let thread = |what: &'static str| move |source| RunError::Thread { what, source };
        let view = side.published();
        let watch = Arc::new(Published::new(crate::watch::Watch::default()));
        let neighbours = Neighbours::open_on(self.ifc.index, self.servers.map(|s| s.index))?;
        let forwarder: crate::health::Forwarder = {
            let (view, links) = (Arc::clone(&view), self.links.clone());
            Arc::new(move |service, addr, wait| {
                diagnose::forwarding(&view.get(), &links, service, addr, wait)
            })
        };
        let checker =
            Checker::start(self.aside, Some(forwarder)).map_err(thread("health checker"))?;
        let metrics = self
            .opts
            .metrics
            .map(|addr| {
                let sources = metrics::Sources {
                    view: Arc::clone(&view),
                    watch: Arc::clone(&watch),
                    links: self.links.clone(),
                };
                MetricsServer::start(addr, sources, self.aside)
            })
            .transpose()
            .map_err(RunError::Metrics)?;
        if let Some(m) = &metrics {
            info!("metrics at http://{}/metrics", m.addr());
        }
        let diagnostics = diagnose::start(Arc::clone(&view), self.links.clone())
            .map_err(thread("diagnostics"))?;
        let (changes_tx, changes) = crossbeam_channel::unbounded();
        let web = match self.opts.web {
            Some(addr) => {
                let token = self
                    .opts
                    .web_admin_token
                    .as_deref()
                    .map(admin_token)
                    .transpose()?;
                let sources = crate::web::Sources {
                    view: Arc::clone(&view),
                    watch: Arc::clone(&watch),
                    links: self.links.clone(),
                    events: Arc::clone(side.events()),
                    changes: changes_tx.clone(),
                    facts: self.facts.clone(),
                };
                let admin = token.is_some();
                let w = crate::web::WebServer::start(addr, sources, token, self.aside)
                    .map_err(|e| RunError::Web(e.to_string()))?;
                info!(
                    "status page at http://{}/ ({})",
                    w.addr(),
                    if admin {
                        "admin actions with the token of --web-admin-token"
                    } else {
                        "read-only"
                    }
                );
                Some(w)
            }
            None => None,
        };
        let router = Router::new(
            Arc::clone(&view),
            self.links.clone(),
            changes_tx,
            diagnostics,
        );
        // The read-only socket (monitoring): the same questions answered, no change taken.
        let _monitor = read_only
            .map(|s| {
                let r = Router::new(
                    Arc::clone(&view),
                    self.links.clone(),
                    crossbeam_channel::bounded(0).0,
                    router.diagnostics(),
                )
                .read_only();
                info!("read-only control socket {}", s.path().display());
                s.serve(Arc::new(r))
            })
            .transpose()
            .map_err(thread("read-only control socket"))?;
        let server = control
            .serve(Arc::new(router))
            .map_err(thread("control socket"))?;
        // The command to try names the socket unless it is the one xdpvs asks by default.
        let try_it = if server.path() == Path::new(crate::control::DEFAULT_SOCKET) {
            "xdpvs -Ln".to_string()
        } else {
            format!("xdpvs --socket {} -Ln", server.path().display())
        };
        info!(
            "director {} ready on {}: control socket {} (try: {try_it})",
            format_mac(&self.ifc.mac),
            self.ifc.name,
            server.path().display()
        );
        ready();
        let mut writer = Writer {
            side,
            changes,
            neighbours,
            checker: &checker,
            announcer: self.announcer,
            watch,
            source: self.source,
            auto: self.auto,
            iface: &self.ifc.name,
            servers_iface: self.servers.map_or(&self.ifc.name, |s| &s.name),
            grace: Duration::from_secs(self.opts.drain_grace),
            scripts: crate::health::scripts::Runner::start().map_err(thread("scripts"))?,
            held: self.held,
            guarded: None,
            arrived: std::collections::HashMap::new(),
        };
        let ended = writer.run(stop);
        // keepalived's omega: the down scripts of what is up, as the director stops.
        for (script, why) in writer.side.omega_scripts() {
            crate::health::scripts::run_now(&script, &why);
        }
        drop(writer);
        drop(server);
        drop(web);
        drop(metrics);
        Ok(ended)
    }
}

/// The status page's admin token: the first line of `path`, a file only its owner may
/// read.
fn admin_token(path: &Path) -> Result<String, RunError> {
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |why: String| RunError::Web(format!("--web-admin-token {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad(
            "others may read it: chmod 600 it (the token lets its holder change the director)"
                .into(),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.len() < 16 {
        return Err(bad(
            "the token (its first line) has fewer than 16 characters: e.g. openssl rand -hex 16 > FILE".into(),
        ));
    }
    Ok(token)
}

/// The core for the control side's threads (the health checker, sync, metrics, the
/// status page, --offload's thread): the first one no worker is pinned to, so they never
/// run on a worker's core; `None` (they float) when workers hold every core.
fn checker_core(all: &[usize], workers: &[usize]) -> Option<usize> {
    all.iter().copied().find(|c| !workers.contains(c))
}

/// Records a channel of connection synchronisation holds at most: about 1.4 MiB each,
/// allocated at start whether a role ever runs (a role starts at run time), 160 ms of
/// 100,000 new connections a second.
const SYNC_QUEUE: usize = 1 << 14;

/// The sync daemon, no role running yet, off the workers' cores.
fn sync_daemon(
    channels: (
        crossbeam_channel::Receiver<xdpvs_sched::sync::SyncConn>,
        Vec<crossbeam_channel::Sender<xdpvs_sched::sync::SyncConn>>,
    ),
    roles: Arc<xdpvs_dataplane::worker::SyncRoles>,
    view: Arc<crate::control::view::Published<crate::control::view::View>>,
    aside: Option<usize>,
) -> crate::sync::Daemon {
    // What the configuration in force could install: the service and the real server.
    let known: crate::sync::Known = Arc::new(move || {
        let v = view.get();
        Box::new(move |c: &xdpvs_sched::sync::SyncConn| {
            let proto = match c.protocol {
                6 => xdpvs_sched::Protocol::Tcp,
                17 => xdpvs_sched::Protocol::Udp,
                _ => return false,
            };
            v.config.services.iter().any(|s| {
                s.key.proto == proto
                    && s.key.vip == c.vip.0
                    && s.key.port == c.vip.1
                    && s.reals.iter().any(|r| r.addr == c.dest.0)
            })
        })
    });
    crate::sync::Daemon::new(channels, roles, known, aside)
}
