//! `xdpvs run`: the director.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use crossbeam_channel::{unbounded, Receiver, Sender};
use xdpvs_dataplane::sys::xsk::{BusyPoll, CopyMode, XskConfig, XskDevice};
use xdpvs_dataplane::worker::{Control, IdlePolicy, LoopStats, Worker};
use xdpvs_dataplane::xdp::{Steering, XdpMode};
use xdpvs_dataplane::{Config, Limits, Options, Services, Tables, WorkerStats};
use xdpvs_sched::conn::{DestRef, Loads};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Load, Mac, ServiceKey, Time};

use crate::control::{self, ControlPlane, Dataplane};
use crate::resolve;

/// Options of `xdpvs run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The interface clients reach the VIPs through (and real servers are on).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: String,
    /// RX queues to serve (default: all of the interface's queues).
    #[arg(long)]
    pub queues: Option<u32>,
    /// Cores to pin workers to, comma-separated (worker N gets the Nth; default: core N).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Where the XDP program runs: auto (native, else generic), native, generic.
    #[arg(long, default_value = "auto")]
    pub xdp_mode: XdpMode,
    /// AF_XDP bind: auto (zero-copy, else copy), zerocopy, copy.
    #[arg(long, default_value = "auto", value_parser = parse_copy_mode)]
    pub bind: CopyMode,
    /// Worker polling: busy (spin always), adaptive (spin under traffic, sleep in
    /// poll(2) after a long idle spell) or yield (spin, yielding the core after each
    /// empty poll: for a worker sharing its core with its interface's NAPI thread).
    #[arg(long, default_value = "adaptive", value_parser = parse_idle)]
    pub poll: IdlePolicy,
    /// Connection-table entries per worker (48 bytes of table per 3/4 entry).
    #[arg(long, default_value_t = 1 << 20)]
    pub conn_capacity: usize,
    /// Preferred busy polling: each worker runs its queue's RX processing (NAPI) itself,
    /// spinning up to this many microseconds per poll (0 = off; the kernel's softirq or
    /// NAPI thread does it). Pair with the interface's `napi_defer_hard_irqs` and
    /// `gro_flush_timeout` (see docs/OPERATIONS.md).
    #[arg(long, default_value_t = 0, value_name = "USECS")]
    pub busy_poll: u32,
    /// Frames one busy poll may process.
    #[arg(long, default_value_t = 64)]
    pub busy_poll_budget: u32,
    /// Schedule TCP segments without SYN that have no connection (IPVS sloppy_tcp).
    #[arg(long)]
    pub sloppy_tcp: bool,
}

fn parse_copy_mode(s: &str) -> Result<CopyMode, String> {
    match s {
        "auto" => Ok(CopyMode::Auto),
        "zerocopy" | "zero-copy" => Ok(CopyMode::ZeroCopy),
        "copy" => Ok(CopyMode::Copy),
        _ => Err(format!(
            "unknown bind mode '{s}': use auto, zerocopy or copy"
        )),
    }
}

fn parse_idle(s: &str) -> Result<IdlePolicy, String> {
    match s {
        "busy" => Ok(IdlePolicy::Busy),
        "adaptive" => Ok(IdlePolicy::Adaptive),
        "yield" => Ok(IdlePolicy::Yield),
        _ => Err(format!(
            "unknown poll mode '{s}': use busy, adaptive or yield"
        )),
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("xdpvs: {}", msg.as_ref());
}

struct WorkerLink {
    ctrl: Sender<Control>,
    loop_stats: Arc<LoopStats>,
    loads: Arc<Loads>,
    stats: Arc<WorkerStats>,
    thread: JoinHandle<()>,
}

/// The real dataplane: workers over AF_XDP and the steering program.
struct Live {
    workers: Vec<WorkerLink>,
    steering: Steering,
    director_mac: Mac,
    capacity: usize,
}

impl Dataplane for Live {
    fn install(&mut self, services: &Services) -> Result<(), String> {
        let before: Vec<u64> = self
            .workers
            .iter()
            .map(|w| w.loop_stats.installs.get())
            .collect();
        for (i, w) in self.workers.iter().enumerate() {
            w.ctrl
                .send(Control::Install(Box::new(services.clone())))
                .map_err(|_| format!("worker {i} is gone: restart the director"))?;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (i, w) in self.workers.iter().enumerate() {
            while w.loop_stats.installs.get() == before[i] {
                if w.thread.is_finished() || Instant::now() > deadline {
                    return Err(format!(
                        "worker {i} did not take the new configuration: restart the director"
                    ));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    fn steer(&mut self, keys: &[ServiceKey]) -> Result<(), String> {
        self.steering.set_services(keys).map_err(|e| e.to_string())
    }

    fn announce(&mut self, vip: Ipv4Addr) {
        if let Some(w) = self.workers.first() {
            let _ = w
                .ctrl
                .send(Control::Send(xdpvs_arp::gratuitous(vip, self.director_mac)));
            log(format!(
                "announced {vip} at {} (gratuitous ARP)",
                resolve::format_mac(&self.director_mac)
            ));
        }
    }

    fn load(&self, dest: DestRef) -> Load {
        self.workers.iter().fold(Load::default(), |acc, w| {
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
}

/// The `xdpvs` command line, also used to parse requests arriving on the socket.
#[derive(Debug, Parser)]
#[command(name = "xdpvs", args_conflicts_with_subcommands = true)]
struct RequestLine {
    #[command(flatten)]
    ipvs: crate::ipvsadm::IpvsArgs,
}

fn handle_request(plane: &mut ControlPlane<Live>, args: Vec<String>) -> Result<String, String> {
    let line = RequestLine::try_parse_from(std::iter::once("xdpvs".to_string()).chain(args))
        .map_err(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("bad request")
                .to_string()
        })?;
    let req = line.ipvs.request()?;
    plane.execute(&req)
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another director is already listening on {}: stop it, or give this one --socket PATH",
                path.display()
            );
        }
        // Left behind by a director that was killed.
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs the director until SIGINT or SIGTERM.
pub fn run(args: &RunArgs, socket: &Path) -> Result<()> {
    if !crate::is_root() {
        bail!("xdpvs run needs root (XDP, BPF maps and locked AF_XDP memory): run it as root");
    }
    let ifindex = crate::ifindex(&args.iface)?;
    let director_mac = crate::mac_of(&args.iface)?;
    let available = std::fs::read_dir(format!("/sys/class/net/{}/queues", args.iface))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    let queues = args.queues.unwrap_or(available.max(1));
    if queues == 0 || queues > available.max(1) {
        bail!(
            "--queues {queues}: {} has {available} RX queue(s)",
            args.iface
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let listener = bind_socket(socket)?;
    let result = serve(args, socket, ifindex, director_mac, queues, listener, &stop);
    let _ = std::fs::remove_file(socket);
    match &result {
        Ok(()) => log("stopped; XDP program detached"),
        Err(e) => log(format!("stopped on error: {e:#}")),
    }
    result
}

fn serve(
    args: &RunArgs,
    socket: &Path,
    ifindex: u32,
    director_mac: Mac,
    queues: u32,
    listener: UnixListener,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let mut steering = Steering::load()?;
    let mode = steering.attach(ifindex, args.xdp_mode)?;
    log(format!(
        "XDP program attached to {} (ifindex {ifindex}) in {mode} mode",
        args.iface
    ));
    if args.busy_poll > 0 {
        let defer = crate::netdev_attr(&args.iface, "napi_defer_hard_irqs").unwrap_or_default();
        if defer.trim() == "0" {
            log(format!(
                "busy polling without deferred interrupts: the kernel keeps processing RX \
                 itself between polls; set /sys/class/net/{0}/napi_defer_hard_irqs (e.g. 2) \
                 and /sys/class/net/{0}/gro_flush_timeout (e.g. 200000)",
                args.iface
            ));
        }
    }

    let limits = Limits {
        conn_capacity: args.conn_capacity,
        ..Limits::default()
    };
    let options = Options {
        sloppy_tcp: args.sloppy_tcp,
        ..Options::default()
    };
    let empty = Services::build(
        &Config {
            director_mac,
            services: vec![],
            options,
        },
        &limits,
        None,
    )?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let start = Instant::now();
    let (retired_tx, retired_rx): (Sender<Box<Services>>, Receiver<Box<Services>>) = unbounded();
    let worker_stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for q in 0..queues {
        let dev = XskDevice::open(
            &args.iface,
            q,
            &XskConfig {
                mode: args.bind,
                busy_poll: (args.busy_poll > 0).then_some(BusyPoll {
                    usecs: args.busy_poll,
                    budget: args.busy_poll_budget,
                }),
                ..XskConfig::default()
            },
        )?;
        steering.set_socket(q, dev.fd())?;
        let seed = start.elapsed().as_nanos() as u64
            ^ (u64::from(q) << 48)
            ^ u64::from(std::process::id());
        let tables = Tables::new(empty.clone(), &limits, Timeouts::default(), seed)?;
        let (ctrl, crx) = unbounded();
        let core = args
            .cores
            .get(q as usize)
            .copied()
            .or_else(|| cores.get(q as usize % cores.len().max(1)).map(|c| c.id));
        log(format!(
            "queue {q}: AF_XDP socket bound in {} mode, worker on core {}, {} polling",
            if dev.is_zero_copy() {
                "zero-copy"
            } else {
                "copy"
            },
            core.map_or("any".to_string(), |c| c.to_string()),
            match args.poll {
                IdlePolicy::Busy => "busy",
                IdlePolicy::Adaptive => "adaptive",
                IdlePolicy::Yield => "yielding",
            }
        ));
        let mut w = Worker::new(dev, tables, crx, retired_tx.clone());
        let (loop_stats, loads, stats) = (
            Arc::clone(w.loop_stats()),
            Arc::clone(w.tables().conns().loads()),
            Arc::clone(w.tables().stats()),
        );
        let (wstop, poll) = (Arc::clone(&worker_stop), args.poll);
        let thread = std::thread::Builder::new()
            .name(format!("xdpvs-q{q}"))
            .spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                w.run(
                    || Time::from_nanos(start.elapsed().as_nanos() as u64),
                    &wstop,
                    poll,
                );
            })?;
        workers.push(WorkerLink {
            ctrl,
            loop_stats,
            loads,
            stats,
            thread,
        });
    }
    let capacity = limits.conn_capacity * workers.len();
    let live = Live {
        workers,
        steering,
        director_mac,
        capacity,
    };
    let mut plane =
        ControlPlane::new(director_mac, options, limits, live).map_err(anyhow::Error::msg)?;
    log(format!(
        "director {} ready on {}: control socket {} (try: xdpvs -Ln)",
        resolve::format_mac(&director_mac),
        args.iface,
        socket.display()
    ));

    let mut next_resolve = Instant::now();
    let mut next_probe_all = Instant::now() + Duration::from_secs(30);
    let mut failure = None;
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                control::serve(stream, |a| handle_request(&mut plane, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => log(format!("control socket: {e}")),
        }
        while retired_rx.try_recv().is_ok() {}
        let now = Instant::now();
        if now >= next_resolve {
            next_resolve = now + Duration::from_millis(500);
            match plane.learn_macs(&resolve::neighbours(&args.iface)) {
                Ok(changed) => {
                    for (a, m) in changed {
                        log(format!("real server {a} is at {}", resolve::format_mac(&m)));
                    }
                }
                Err(e) => log(format!("applying resolved MACs failed: {e}")),
            }
            let mut probe = plane.unresolved();
            if now >= next_probe_all {
                next_probe_all = now + Duration::from_secs(30);
                probe = plane.real_addrs();
            }
            resolve::probe(&probe);
        }
        if let Some(i) = plane
            .dataplane()
            .workers
            .iter()
            .position(|w| w.thread.is_finished())
        {
            failure = Some(format!("worker {i} stopped unexpectedly"));
            break;
        }
    }
    log("stopping");
    let Live {
        workers,
        mut steering,
        ..
    } = plane.into_dataplane();
    steering.detach();
    worker_stop.store(true, Relaxed);
    let mut totals = (0, 0, 0);
    for w in workers {
        drop(w.ctrl);
        let _ = w.thread.join();
        totals.0 += w.stats.rx.get();
        totals.1 += w.stats.tx.get();
        totals.2 += w.stats.drops_total();
    }
    log(format!(
        "frames: {} received, {} transmitted, {} dropped",
        totals.0, totals.1, totals.2
    ));
    match failure {
        Some(f) => bail!(f),
        None => Ok(()),
    }
}
