//! Prometheus metrics: `xdpvs run --metrics ADDR:PORT` serves `/metrics` from a thread of
//! its own. A scrape is a reader like `-L`: it renders the write side's published view,
//! the watch's published findings and the workers' single-writer counters, asking nobody
//! and waiting for nobody; the packet path is never touched. Names and labels are in
//! docs/OPERATIONS.md.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use xdpvs_dataplane::stats::{DropReason, TrafficTotals, WorkerStats};
use xdpvs_dataplane::worker::LoopStats;
use xdpvs_sched::ServiceKey;

use crate::control::dataplane::Observe;
use crate::control::proto::ControlError;
use crate::control::read;
use crate::control::view::{Published, View};
use crate::iface::format_mac;
use crate::watch::Watch;
use crate::workers::Links;

mod exposition;

pub use exposition::{to_text_004, Format};

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The write side's published view.
    pub view: Arc<Published<View>>,
    /// The watch's published findings.
    pub watch: Arc<Published<Watch>>,
    /// The workers' counters.
    pub links: Links,
}

/// The HTTP server of `/metrics`; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr`; each scrape is answered from `sources`. Runs on its own
    /// thread, pinned to `core`.
    pub fn start(
        addr: SocketAddr,
        sources: Sources,
        core: Option<usize>,
    ) -> Result<MetricsServer, std::io::Error> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| std::io::Error::other(format!("listening on {addr}: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics server has no IP address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("xdpvs-metrics".into())
            .spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                while !flag.load(Relaxed) {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(req)) => answer(req, &sources),
                        Ok(None) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One scrape, in the format `accept` asks for: the text and its content type.
pub fn scrape(
    sources: &Sources,
    accept: Option<&str>,
) -> Result<(String, &'static str), ControlError> {
    let format = Format::negotiate(accept);
    let t = render(
        &sources.view.get(),
        &sources.links,
        &sources.links.stats(),
        sources.links.offload(),
        &sources.watch.get(),
    )?;
    let t = match format {
        Format::OpenMetrics => t,
        Format::Text004 => to_text_004(&t),
    };
    Ok((t, format.content_type()))
}

fn answer(req: tiny_http::Request, sources: &Sources) {
    let path = req.url().split('?').next().unwrap_or("");
    if path != "/metrics" {
        let _ = req.respond(
            tiny_http::Response::from_string("xdpvs serves /metrics\n").with_status_code(404),
        );
        return;
    }
    let accept = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str());
    let response = match scrape(sources, accept) {
        Ok((t, content_type)) => {
            let mut r = tiny_http::Response::from_string(t);
            if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", content_type) {
                r.add_header(h);
            }
            r
        }
        Err(e) => tiny_http::Response::from_string(format!("{e}\n")).with_status_code(500),
    };
    let _ = req.respond(response);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    protocol: String,
    vip: String,
    port: u16,
}

impl ServiceLabels {
    fn of(k: &ServiceKey) -> ServiceLabels {
        ServiceLabels {
            protocol: k.proto.name().to_string(),
            vip: k.vip.to_string(),
            port: k.port,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RealLabels {
    protocol: String,
    vip: String,
    port: u16,
    real: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    protocol: String,
    vip: String,
    port: u16,
    real: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConflictLabels {
    vip: String,
    mac: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MoveLabels {
    real: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    ipvs: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnLabels {
    worker: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    worker: String,
    reason: String,
}

/// `help` as the registry takes it: it adds the final period itself.
fn help_text(help: &str) -> &str {
    help.trim_end_matches('.')
}

type Counters<L> = Family<L, Counter>;
type Gauges<L> = Family<L, Gauge>;
type FloatGauges<L> = Family<L, Gauge<f64, std::sync::atomic::AtomicU64>>;

fn counter<L>(r: &mut Registry, name: &str, help: &str) -> Counters<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Counters::<L>::default();
    r.register(name, help_text(help), f.clone());
    f
}

fn counter_in<L>(r: &mut Registry, name: &str, help: &str, unit: Unit) -> Counters<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Counters::<L>::default();
    r.register_with_unit(name, help_text(help), unit, f.clone());
    f
}

fn gauge<L>(r: &mut Registry, name: &str, help: &str) -> Gauges<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Gauges::<L>::default();
    r.register(name, help_text(help), f.clone());
    f
}

/// Connections, packets and bytes of a service or a real server.
struct TrafficFamilies<L> {
    conns: Counters<L>,
    packets: Counters<L>,
    bytes: Counters<L>,
}

impl<L> TrafficFamilies<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    /// `xdpvs_{what}_connections_total`, `_packets_total`, `_bytes_total`.
    fn register(r: &mut Registry, what: &str, of: &str) -> Self {
        TrafficFamilies {
            conns: counter(
                r,
                &format!("{what}_connections"),
                &format!("Connections scheduled to {of}."),
            ),
            packets: counter(
                r,
                &format!("{what}_packets"),
                &format!("Packets forwarded to {of}."),
            ),
            bytes: counter_in(
                r,
                what,
                &format!("Bytes (IP packet lengths) forwarded to {of}."),
                Unit::Bytes,
            ),
        }
    }

    fn add(&self, l: &L, t: TrafficTotals) {
        self.conns.get_or_create(l).inc_by(t.conns);
        self.packets.get_or_create(l).inc_by(t.packets);
        self.bytes.get_or_create(l).inc_by(t.bytes);
    }
}

/// The metrics now, in the OpenMetrics text format.
pub fn render(
    view: &View,
    dp: &dyn Observe,
    workers: &[(&LoopStats, &WorkerStats)],
    offload: Option<&crate::offload::OffloadView>,
    watch: &Watch,
) -> Result<String, ControlError> {
    let mut reg = Registry::with_prefix("xdpvs");
    let build = gauge::<BuildLabels>(
        &mut reg,
        "build_info",
        "Always 1: the version of xdpvs that serves these metrics, and the IPVS version whose behaviour it follows.",
    );
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ipvs: "1.2.1".to_string(),
        })
        .set(1);
    let started = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    reg.register_with_unit(
        "start_time",
        help_text("When the director started, since the Unix epoch."),
        Unit::Seconds,
        started.clone(),
    );
    started.set(view.started);
    let svc =
        TrafficFamilies::<ServiceLabels>::register(&mut reg, "service", "the virtual service");
    let real = TrafficFamilies::<RealLabels>::register(&mut reg, "real", "the real server");
    let active = gauge::<RealLabels>(
        &mut reg,
        "real_active_connections",
        "ActiveConn: established connections, over all workers.",
    );
    let inactive = gauge::<RealLabels>(
        &mut reg,
        "real_inactive_connections",
        "InActConn: other connections, over all workers.",
    );
    let weight = gauge::<RealLabels>(&mut reg, "real_weight", "Configured weight.");
    let up = gauge::<RealLabels>(&mut reg, "real_up", "1 when the real server gets new connections by its health check (or has none), 0 when its check failed.");
    let resolved = gauge::<RealLabels>(
        &mut reg,
        "real_mac_resolved",
        "1 when the real server's MAC is known.",
    );
    let checks = counter::<CheckLabels>(
        &mut reg,
        "health_checks",
        "Health checks run, by result (ok, failed).",
    );
    let transitions = counter::<RealLabels>(
        &mut reg,
        "health_transitions",
        "Times a health check moved the real server up or down.",
    );
    let latency = FloatGauges::<RealLabels>::default();
    reg.register_with_unit(
        "health_check_duration",
        help_text("How long the last health check took."),
        Unit::Seconds,
        latency.clone(),
    );
    let rx = counter::<WorkerLabels>(
        &mut reg,
        "worker_received_packets",
        "Frames the worker received from its AF_XDP socket.",
    );
    let rx_bytes = counter_in::<WorkerLabels>(
        &mut reg,
        "worker_received",
        "Bytes the worker received.",
        Unit::Bytes,
    );
    let tx = counter::<WorkerLabels>(
        &mut reg,
        "worker_forwarded_packets",
        "Frames rewritten and sent to a real server.",
    );
    let replies = counter::<WorkerLabels>(
        &mut reg,
        "worker_replies",
        "Frames answered in place: ARP replies and ICMP echo replies for VIPs.",
    );
    let echo = counter::<WorkerLabels>(
        &mut reg,
        "worker_echo_replies",
        "ICMP echo replies sent from VIPs (rate-limited).",
    );
    let icmp_fwd = counter::<WorkerLabels>(
        &mut reg,
        "worker_icmp_errors_forwarded",
        "ICMP errors forwarded to the real server of the connection they quote.",
    );
    let stateless = counter::<WorkerLabels>(
        &mut reg,
        "worker_stateless_packets",
        "Packets forwarded by the stateless hash because the connection table was full.",
    );
    let evicted = counter::<WorkerLabels>(
        &mut reg,
        "worker_half_open_evicted",
        "Half-open connections evicted from the full connection table.",
    );
    let frags = counter::<WorkerLabels>(
        &mut reg,
        "worker_fragments_forwarded",
        "Later fragments forwarded where their first fragment went.",
    );
    let nat_replies = counter::<WorkerLabels>(
        &mut reg,
        "worker_nat_replies",
        "NAT real servers' replies rewritten from the VIP and sent to their clients.",
    );
    let handed_off = counter::<WorkerLabels>(
        &mut reg,
        "worker_handed_off_packets",
        "Packets of NAT connections handed to the worker that holds them (several queues; counted received again there).",
    );
    let handoff_lost = counter::<WorkerLabels>(
        &mut reg,
        "worker_handoff_lost_packets",
        "Packets that could not be handed to their worker (no free hand-off buffer, its inbox full) or, handed here, not sent.",
    );
    let sync_lost = counter::<WorkerLabels>(
        &mut reg,
        "worker_sync_lost_records",
        "Connection records for the sync daemon lost (the worker's buffer or the sender's queue full).",
    );
    let sync_installed = counter::<WorkerLabels>(
        &mut reg,
        "worker_sync_installed_connections",
        "Connections another director synchronised, installed in this worker's table.",
    );
    let sync_refused = counter::<WorkerLabels>(
        &mut reg,
        "worker_sync_refused_connections",
        "Synchronised connections not installed: no such service or real server here, or the table full.",
    );
    let tunnelled = counter::<WorkerLabels>(
        &mut reg,
        "worker_tunnelled_packets",
        "Packets encapsulated to tunnel real servers (IPIP, GUE, GRE).",
    );
    let too_big = counter::<WorkerLabels>(
        &mut reg,
        "worker_tunnel_too_big",
        "Packets too big to tunnel, answered with fragmentation-needed or packet-too-big from the VIP.",
    );
    let unhandled = counter::<WorkerLabels>(
        &mut reg,
        "worker_unhandled_packets",
        "Frames steered to the worker that were not its to handle (recycled).",
    );
    let offload_lost = counter::<WorkerLabels>(
        &mut reg,
        "worker_offload_lost",
        "run --offload: records the worker could not hand to the offload thread (its queue full); a lost insert leaves a flow with the workers.",
    );
    let dropped = counter::<DropLabels>(
        &mut reg,
        "worker_dropped_packets",
        "Frames dropped, by reason.",
    );
    let expired = counter::<WorkerLabels>(
        &mut reg,
        "worker_expired_connections",
        "Connection-table entries expired.",
    );
    let resets = counter::<WorkerLabels>(
        &mut reg,
        "worker_resets_sent",
        "TCP resets sent for connections of removed real servers.",
    );
    let entries = gauge::<WorkerLabels>(
        &mut reg,
        "worker_connection_table_entries",
        "Entries in the worker's connection table.",
    );
    let capacity = gauge::<WorkerLabels>(
        &mut reg,
        "worker_connection_table_capacity",
        "Capacity of the worker's connection table.",
    );
    let tx_full = counter::<WorkerLabels>(
        &mut reg,
        "worker_tx_ring_full",
        "Frames that found the TX ring full (each waits for the next pass, counted once per pass).",
    );
    let pause = FloatGauges::<WorkerLabels>::default();
    reg.register_with_unit(
        "worker_longest_control_pause",
        help_text("The longest time the worker spent between two batches answering the control side (installs, pieces of a listing, explanations)."),
        Unit::Seconds,
        pause.clone(),
    );
    let own = counter::<OwnLabels>(
        &mut reg,
        "worker_own_frames",
        "Frames of the director's own the worker was given to send (gratuitous ARP, who-has for the VIPs, xdpvs check's probes), by result (sent, unsent: no free buffer or TX slot).",
    );
    let waits = counter::<WorkerLabels>(
        &mut reg,
        "worker_idle_waits",
        "Times the worker slept in poll(2).",
    );
    let wakeups = counter::<WorkerLabels>(
        &mut reg,
        "worker_wakeups",
        "Wake-up calls to the kernel (TX kicks, fill-ring wake-ups).",
    );
    let k_drop = counter::<WorkerLabels>(
        &mut reg,
        "xsk_rx_dropped",
        "Kernel: received frames dropped for other reasons (XDP_STATISTICS).",
    );
    let k_rx_inval = counter::<WorkerLabels>(
        &mut reg,
        "xsk_rx_invalid_descs",
        "Kernel: received frames dropped for an invalid descriptor.",
    );
    let k_rx_full = counter::<WorkerLabels>(
        &mut reg,
        "xsk_rx_ring_full",
        "Kernel: received frames dropped because the RX ring was full.",
    );
    let k_fill = counter::<WorkerLabels>(
        &mut reg,
        "xsk_rx_fill_ring_empty",
        "Kernel: times the fill ring was empty.",
    );
    let k_tx_inval = counter::<WorkerLabels>(
        &mut reg,
        "xsk_tx_invalid_descs",
        "Kernel: frames to send dropped for an invalid descriptor.",
    );
    let k_tx_empty = counter::<WorkerLabels>(
        &mut reg,
        "xsk_tx_ring_empty",
        "Kernel: times the TX ring was empty.",
    );

    // Services and real servers: raw counters (they only grow; -Z does not touch them).
    let table = read::table(view, dp, None)?;
    for s in &table.services {
        let sl = ServiceLabels::of(&s.key);
        let compiled = view.compiled(&s.key);
        if let Some(c) = compiled {
            let t = dp.service_traffic(c.slot);
            svc.add(&sl, t);
        }
        for r in &s.reals {
            let rl = RealLabels {
                protocol: sl.protocol.clone(),
                vip: sl.vip.clone(),
                port: sl.port,
                real: r.addr.to_string(),
            };
            if let Some(cr) = compiled.and_then(|c| c.reals.iter().find(|cr| cr.addr == r.addr)) {
                let t = dp.dest_traffic(cr.dest.slot);
                real.add(&rl, t);
            }
            active.get_or_create(&rl).set(r.active as i64);
            inactive.get_or_create(&rl).set(r.inactive as i64);
            weight.get_or_create(&rl).set(i64::from(r.weight));
            up.get_or_create(&rl)
                .set(i64::from(r.health.as_ref().is_none_or(|h| h.up)));
            resolved.get_or_create(&rl).set(i64::from(r.resolved));
            if let Some(h) = &r.health {
                let cl = |result: &str| CheckLabels {
                    protocol: rl.protocol.clone(),
                    vip: rl.vip.clone(),
                    port: rl.port,
                    real: rl.real.clone(),
                    result: result.to_string(),
                };
                checks
                    .get_or_create(&cl("ok"))
                    .inc_by(h.checks - h.failures);
                checks.get_or_create(&cl("failed")).inc_by(h.failures);
                transitions.get_or_create(&rl).inc_by(h.transitions);
                latency
                    .get_or_create(&rl)
                    .set(h.latency_us as f64 / 1_000_000.0);
            }
        }
    }
    let per_worker = dp.capacity() / workers.len().max(1);
    for (i, (l, w)) in workers.iter().enumerate() {
        let wl = WorkerLabels {
            worker: i.to_string(),
        };
        rx.get_or_create(&wl).inc_by(w.rx.get());
        rx_bytes.get_or_create(&wl).inc_by(w.rx_bytes.get());
        tx.get_or_create(&wl).inc_by(w.tx.get());
        replies.get_or_create(&wl).inc_by(w.reply.get());
        echo.get_or_create(&wl).inc_by(w.echo_replies.get());
        icmp_fwd.get_or_create(&wl).inc_by(w.icmp_forwarded.get());
        frags.get_or_create(&wl).inc_by(w.fragments_forwarded.get());
        nat_replies.get_or_create(&wl).inc_by(w.nat_replies.get());
        handed_off.get_or_create(&wl).inc_by(w.handed_off.get());
        handoff_lost.get_or_create(&wl).inc_by(w.handoff_lost.get());
        sync_lost.get_or_create(&wl).inc_by(w.sync_lost.get());
        sync_installed
            .get_or_create(&wl)
            .inc_by(w.sync_installed.get());
        sync_refused.get_or_create(&wl).inc_by(w.sync_refused.get());
        tunnelled.get_or_create(&wl).inc_by(w.tunnelled.get());
        too_big.get_or_create(&wl).inc_by(w.too_big.get());
        stateless.get_or_create(&wl).inc_by(w.stateless.get());
        evicted.get_or_create(&wl).inc_by(l.half_open_evicted.get());
        unhandled.get_or_create(&wl).inc_by(w.unhandled.get());
        offload_lost.get_or_create(&wl).inc_by(w.offload_lost.get());
        for r in DropReason::ALL {
            dropped
                .get_or_create(&DropLabels {
                    worker: wl.worker.clone(),
                    reason: r.name().to_string(),
                })
                .inc_by(w.drop_count(r));
        }
        expired.get_or_create(&wl).inc_by(w.expired.get());
        resets.get_or_create(&wl).inc_by(w.resets.get());
        entries.get_or_create(&wl).set(l.table_entries.get() as i64);
        capacity.get_or_create(&wl).set(per_worker as i64);
        tx_full.get_or_create(&wl).inc_by(l.tx_full.get());
        pause
            .get_or_create(&wl)
            .set(l.longest_control_pause_ns.get() as f64 / 1e9);
        waits.get_or_create(&wl).inc_by(l.idle_waits.get());
        for (result, n) in [("sent", &l.sent), ("unsent", &l.unsent)] {
            own.get_or_create(&OwnLabels {
                worker: wl.worker.clone(),
                result: result.to_string(),
            })
            .inc_by(n.get());
        }
        let d = &l.device;
        wakeups.get_or_create(&wl).inc_by(d.wakeups.get());
        k_drop.get_or_create(&wl).inc_by(d.rx_dropped.get());
        k_rx_inval
            .get_or_create(&wl)
            .inc_by(d.rx_invalid_descs.get());
        k_rx_full.get_or_create(&wl).inc_by(d.rx_ring_full.get());
        k_fill.get_or_create(&wl).inc_by(d.rx_fill_ring_empty.get());
        k_tx_inval
            .get_or_create(&wl)
            .inc_by(d.tx_invalid_descs.get());
        k_tx_empty.get_or_create(&wl).inc_by(d.tx_ring_empty.get());
    }
    let conflicts = counter::<ConflictLabels>(
        &mut reg,
        "vip_conflicts",
        "Frames in which another host claimed a VIP (ARP reply, gratuitous ARP, neighbour advertisement), by VIP and MAC.",
    );
    for (&(vip, mac), &n) in watch.conflicts() {
        conflicts
            .get_or_create(&ConflictLabels {
                vip: vip.to_string(),
                mac: format_mac(&mac),
            })
            .inc_by(n);
    }
    let moves = counter::<MoveLabels>(
        &mut reg,
        "real_mac_changes",
        "Times a real server was seen at another MAC (a replaced server, or two hosts with its address).",
    );
    for (&a, &n) in watch.moves() {
        moves
            .get_or_create(&MoveLabels {
                real: a.to_string(),
            })
            .inc_by(n);
    }
    if let Some(vips) = watch.announced() {
        let announced = gauge::<VipLabels>(
            &mut reg,
            "vip_announced",
            "With run --announce: 1 while the VIP is kept on the announce interface (a real server in service, not draining), 0 when withdrawn.",
        );
        for (v, &on) in vips {
            announced
                .get_or_create(&VipLabels { vip: v.to_string() })
                .set(i64::from(on));
        }
    }
    if let Some(d) = &view.sync {
        let running = gauge::<RoleLabels>(
            &mut reg,
            "sync_role_running",
            "1 while this role of the sync daemon runs (master: sends this director's connections; backup: installs other directors'), else 0.",
        );
        for role in [crate::sync::Role::Master, crate::sync::Role::Backup] {
            running
                .get_or_create(&RoleLabels {
                    role: role.word().to_string(),
                })
                .set(i64::from(d.roles.iter().any(|(r, _)| *r == role)));
        }
        let [sent, received, sent_conns, received_conns, malformed, foreign, unknown] = d.counts();
        let plain = |reg: &mut Registry, name: &str, help: &str, v: u64| {
            let c = prometheus_client::metrics::counter::Counter::<u64>::default();
            c.inc_by(v);
            reg.register(name, help_text(help), c);
        };
        plain(
            &mut reg,
            "sync_sent_messages",
            "Sync messages sent (IPVS's sync protocol).",
            sent,
        );
        plain(
            &mut reg,
            "sync_received_messages",
            "Sync messages received and taken.",
            received,
        );
        plain(
            &mut reg,
            "sync_sent_connections",
            "Connections sent in sync messages.",
            sent_conns,
        );
        plain(
            &mut reg,
            "sync_received_connections",
            "Connections received in sync messages and handed to the workers.",
            received_conns,
        );
        plain(
            &mut reg,
            "sync_malformed_messages",
            "Sync messages dropped: malformed, or of another version.",
            malformed,
        );
        plain(
            &mut reg,
            "sync_foreign_messages",
            "Sync messages dropped: another sync id.",
            foreign,
        );
        plain(
            &mut reg,
            "sync_unknown_connections",
            "Synchronised connections not handed to a worker: no such service or real server here.",
            unknown,
        );
    }
    if let Some(o) = offload {
        // What the XDP program forwarded itself, under a worker label of its own, so
        // that the sums over workers stay every frame forwarded.
        let wl = WorkerLabels {
            worker: "xdp".to_string(),
        };
        rx.get_or_create(&wl).inc_by(o.stats.rx.get());
        rx_bytes.get_or_create(&wl).inc_by(o.stats.rx_bytes.get());
        tx.get_or_create(&wl).inc_by(o.stats.tx.get());
        let flows = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        flows.set(o.flows.load(std::sync::atomic::Ordering::Relaxed) as i64);
        reg.register(
            "offload_flows",
            help_text("run --offload: established flows the XDP program forwards itself now."),
            flows,
        );
        let refused = prometheus_client::metrics::counter::Counter::<u64>::default();
        refused.inc_by(o.refused.load(std::sync::atomic::Ordering::Relaxed));
        reg.register(
            "offload_refused",
            help_text("run --offload: flows the XDP program's map had no room for (they stay with the workers; raise --offload-flows)."),
            refused,
        );
    }
    if !view.vrrp.is_empty() {
        let served = gauge::<VipLabels>(
            &mut reg,
            "vip_vrrp_served",
            "For a VIP that follows keepalived's VRRP: 1 while this host holds it (VRRP master) and the director serves it, 0 while silent (backup).",
        );
        for (v, on) in &view.vrrp {
            served
                .get_or_create(&VipLabels { vip: v.to_string() })
                .set(i64::from(*on));
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .map_err(|e| ControlError::Dataplane(format!("encoding the metrics: {e}")))?;
    Ok(out)
}
