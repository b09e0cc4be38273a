//! The write side's thread: the only thread that changes the director. Each turn it
//! applies the changes clients sent (answering each at once), the health checks'
//! results, the neighbour table's news of real servers' MACs, a SIGHUP reload; it
//! supervises the workers, samples the rates, asks who has the VIPs, keeps `--announce`
//! told, and drains when asked. It never reads from or writes to a client: a stuck
//! client cannot delay a failover.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{info, warn};
use xdpvs_dataplane::worker::IdlePolicy;

use crate::announce::{Announcer, VipSet};
use crate::control::proto::{ControlError, Reply, Request};
use crate::control::route::Change;
use crate::control::stats::SAMPLE_EVERY;
use crate::control::view::Published;
use crate::control::write::{Transition, WriteSide};
use crate::events::Kind;
use crate::health::{Checker, Health, OnFailure};
use crate::iface::format_mac;
use crate::neighbours::{self, Neighbours};
use crate::placement::AutoPoll;
use crate::watch::{self, Watch};
use crate::workers::Live;

/// How often unresolved real servers are probed.
const PROBE_UNRESOLVED: Duration = Duration::from_millis(500);
/// How often every real server is probed, so the kernel re-checks entries gone stale.
const PROBE_ALL: Duration = Duration::from_secs(30);
/// How often the director asks who has each VIP (any answer but its own is a conflict).
const VIP_PROBE: Duration = Duration::from_secs(5);
/// How long the write side waits for a change before its other work (at most).
const TURN: Duration = Duration::from_millis(10);
/// How long no frame may have been forwarded for a drain to end.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Changes, each with the line of the file it comes from.
pub type Lined = Vec<(Place, Request)>;

/// Where a change comes from: a line of the file given, or of a file it includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The included file (`None`: the file given).
    pub file: Option<String>,
    /// The line, from 1.
    pub line: usize,
}

impl Place {
    /// Line `line` of the file given.
    pub fn line(line: usize) -> Place {
        Place { file: None, line }
    }
}

/// `line N` of the file given, `FILE:N` of an included one (for notes).
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}:{}", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// Where the director's configuration comes from at start and on SIGHUP: a file read
/// into changes (`--restore`, `--keepalived`).
pub struct Source<'a> {
    /// What it is, for the log (`/etc/xdpvs/rules`).
    pub name: String,
    /// Reads it: the changes that build its table from an empty one, each with the line
    /// of the file it comes from.
    pub load: Box<dyn Fn() -> Result<Lined, String> + 'a>,
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("name", &self.name).finish()
    }
}

/// What makes the director stop: `now` at once (SIGINT), `drain` after draining
/// (SIGTERM, or `xdpvs drain` on the control socket).
#[derive(Debug, Clone, Copy)]
pub struct Stop<'a> {
    /// Stop now: VIPs withdrawn, XDP program detached, workers stopped.
    pub now: &'a AtomicBool,
    /// Drain first (with `--announce`; without it, the same as `now`): withdraw the
    /// VIPs, forward until the flows go idle or `--drain-grace` passes, then stop.
    pub drain: &'a AtomicBool,
    /// SIGHUP: read the source again and apply the difference (without one, say so).
    pub reload: &'a AtomicBool,
}

/// Why the write side's thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (at once, or after a drain).
    Stopped,
    /// The write side gave up (a worker did not take a configuration).
    Failed(String),
    /// A worker thread ended on its own.
    WorkerDied(usize),
}

/// The write side's thread and all it drives.
pub struct Writer<'a> {
    /// The configuration's owner.
    pub side: &'a mut WriteSide<Live>,
    /// Changes from clients.
    pub changes: Receiver<Change>,
    /// The kernel's neighbour table.
    pub neighbours: Neighbours,
    /// The health checks.
    pub checker: &'a Checker,
    /// `--announce`'s thread, if any.
    pub announcer: Option<&'a mut Announcer>,
    /// What the watch found, published for `/metrics`.
    pub watch: Arc<Published<Watch>>,
    /// The file to read again on SIGHUP, if any.
    pub source: Option<&'a Source<'a>>,
    /// `--poll auto`'s placement, if asked.
    pub auto: Option<&'a mut AutoPoll>,
    /// The interface's name, for messages.
    pub iface: &'a str,
    /// The real servers' interface's name (the same but for a two-armed director).
    pub servers_iface: &'a str,
    /// `--drain-grace`.
    pub grace: Duration,
    /// Runs `notify_up`/`notify_down` and `quorum_up`/`quorum_down` scripts.
    pub scripts: crate::health::scripts::Runner,
    /// The addresses this host holds (keepalived's VRRP).
    pub held: crate::follow::Held,
    /// The VIPs that follow VRRP the nftables guard was last installed for.
    pub guarded: Option<std::collections::BTreeSet<std::net::IpAddr>>,
    /// When each VIP that follows VRRP arrived here: the previous master may answer ARP
    /// for it a moment longer.
    pub arrived: std::collections::HashMap<std::net::IpAddr, Instant>,
}

/// How long after a VIP arrives with VRRP another host answering ARP for it is the
/// previous master handing over rather than a conflict.
const HANDOVER: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("side", &self.side).finish()
    }
}

impl Writer<'_> {
    /// Runs until `stop` says so, a drain ends, or something fails.
    pub fn run(&mut self, stop: Stop<'_>) -> Ended {
        // The checker is told the checks after every change applied (and only then).
        let mut checks_of = u64::MAX;
        let mut watch = Watch::default();
        let mut next_probe = Instant::now();
        let mut next_probe_all = Instant::now() + PROBE_ALL;
        let mut next_vip_probe = Instant::now() + VIP_PROBE;
        // Learn from the neighbour table when it changed, and after every change (a real
        // server just added may be known to the kernel already); at start for a
        // restored table. A failed apply is tried again at the next turn.
        let mut learn = true;
        let mut next_sample = Instant::now() + SAMPLE_EVERY;
        // What is announced is worked out again after every change applied.
        let mut announced_of = u64::MAX;
        // Routed tunnel real servers' next hops and the routes towards clients: after
        // every change, and every so often.
        let mut hops_of = u64::MAX;
        let mut next_hops = Instant::now();
        let mut drain: Option<Drain> = None;
        while !stop.now.load(Relaxed) {
            let mut asked_to_drain = None;
            // Wait for a change up to a turn, then take every change waiting.
            let first = self.changes.recv_timeout(TURN).ok();
            for c in first.into_iter().chain(self.changes.try_iter()) {
                let answer = match c.req {
                    Request::Drain {
                        confirmed: false, ..
                    } if self.announcer.is_none() => Err(ControlError::OnlyDirector),
                    Request::Drain { grace, .. } => {
                        let grace = grace.map_or(self.grace, |g| Duration::from_secs(g.into()));
                        asked_to_drain = Some(grace);
                        Ok(Reply::Draining {
                            announced: self.announcer.is_some(),
                            grace_s: grace.as_secs(),
                        })
                    }
                    req => {
                        let answer = self.side.execute(&req);
                        if answer.is_ok() {
                            self.side
                                .events()
                                .push(Kind::Change, format!("{} by {}", req.summary(), c.by));
                        }
                        answer
                    }
                };
                // The reply channel has room for the one answer: this never waits.
                let _ = c.reply.try_send(answer);
                learn = true;
            }
            if let Some(why) = self.side.failure() {
                return Ended::Failed(why.to_string());
            }
            self.side.dataplane().workers.drop_retired();
            match self.neighbours.poll() {
                Ok(changed) => learn |= changed,
                Err(e) => warn!("neighbour events: {e}"),
            }
            self.follow_vrrp();
            let now = Instant::now();
            let periodic = now >= next_hops;
            let changed = self.side.applied() != hops_of;
            if changed || periodic {
                next_hops = now + PROBE_ALL;
                learn |= self.route_tunnels();
            }
            // Routers towards clients: after a change, when neighbours move, and every
            // so often.
            if changed || periodic || learn {
                self.route_clients();
            }
            hops_of = self.side.applied();
            if learn {
                learn = !self.learn(&mut watch);
            }
            let now = Instant::now();
            if now >= next_sample {
                // Keep the 2-second cadence whatever the loop's own timing.
                next_sample += SAMPLE_EVERY;
                if next_sample < now {
                    next_sample = now + SAMPLE_EVERY;
                }
                self.side.tick();
            }
            if now >= next_vip_probe {
                next_vip_probe = now + VIP_PROBE;
                self.side.ask_who_has_the_vips();
            }
            if now >= next_probe {
                next_probe = now + PROBE_UNRESOLVED;
                let mut probe = self.side.unresolved();
                for a in watch.unresolved(now, &probe) {
                    warn!("{}", watch::unresolved_message(a, self.servers_iface));
                }
                if now >= next_probe_all {
                    next_probe_all = now + PROBE_ALL;
                    probe = self.side.real_addrs();
                }
                neighbours::probe(&probe);
            }
            self.health();
            if self.side.applied() != checks_of {
                checks_of = self.side.applied();
                self.checker.set(self.side.check_targets());
            }
            let links = self.side.dataplane().links.clone();
            let forwarded = links.forwarded();
            let stats = links.stats();
            let silent: Vec<std::net::IpAddr> = self
                .side
                .vrrp()
                .into_iter()
                .filter(|&(_, served)| !served)
                .map(|(v, _)| v)
                .collect();
            for c in watch.conflicts_from(stats.iter().map(|(_, w)| &w.conflicts)) {
                // A VIP that follows VRRP and is not served here: the master holds it.
                if silent.contains(&c.vip) {
                    continue;
                }
                if self
                    .arrived
                    .get(&c.vip)
                    .is_some_and(|t| t.elapsed() < HANDOVER)
                {
                    info!(
                        "VIP {}: {} still answers ARP for it as it arrives here (the previous VRRP master handing over)",
                        c.vip,
                        format_mac(&c.mac)
                    );
                    continue;
                }
                let known = self.neighbours.table().iter().map(|(&a, &m)| (a, m));
                let host = crate::control::check::host_at(known, c.mac, c.vip);
                let said = c.message(host);
                warn!("{said}");
                self.side.events().push(Kind::Conflict, said);
            }
            if stop.reload.swap(false, Relaxed) {
                match self.source {
                    Some(src) => {
                        let said = reload(self.side, src);
                        self.side.events().push(Kind::Change, said);
                        learn = true;
                    }
                    None => info!(
                        "SIGHUP: nothing to read again (the director runs without --restore or --keepalived); the configuration in force stays"
                    ),
                }
            }
            if let Some(a) = self.auto.as_deref_mut() {
                for (i, p, why) in a.recheck(now) {
                    info!("queue {i}: now {} polling: {why}", policy_name(p));
                    self.side.dataplane_mut().workers.set_idle(i, p);
                }
            }
            if let Some(i) = self.side.dataplane().workers.first_dead() {
                return Ended::WorkerDied(i);
            }
            if stop.drain.swap(false, Relaxed) && drain.is_none() {
                match self.announcer {
                    // Nothing attracts traffic elsewhere: SIGTERM stops at once.
                    None => return Ended::Stopped,
                    Some(_) => asked_to_drain = Some(self.grace),
                }
            }
            if let (Some(grace), None) = (asked_to_drain, &drain) {
                match self.announcer.as_deref_mut() {
                    Some(a) => {
                        a.withdraw();
                        self.side
                            .events()
                            .push(Kind::Announce, "draining: every VIP withdrawn");
                        watch.set_announced(&VipSet {
                            configured: self.side.vips().configured,
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
            } else if let Some(a) = self.announcer.as_deref_mut().filter(|_| drain.is_none()) {
                if self.side.applied() != announced_of {
                    announced_of = self.side.applied();
                    let w = self.side.vips();
                    let before = watch.announced().cloned().unwrap_or_default();
                    watch.set_announced(&w);
                    for (vip, &on) in watch.announced().into_iter().flatten() {
                        if before.get(vip) != Some(&on) {
                            self.side.events().push(
                                Kind::Announce,
                                if on {
                                    format!("VIP {vip} announced (a real server in service)")
                                } else {
                                    format!("VIP {vip} withdrawn (no real server in service)")
                                },
                            );
                        }
                    }
                    a.set(w);
                }
            }
            if *self.watch.get() != watch {
                self.watch.set(watch.clone());
            }
            if let Some(d) = drain.as_mut() {
                if let Some(why) = d.done(now, forwarded) {
                    info!("drained: {why}");
                    return Ended::Stopped;
                }
            }
        }
        Ended::Stopped
    }

    /// Asks the kernel's routes how each tunnel real server is reached: one behind a
    /// router is sent to the router's MAC. Whether that changed.
    fn route_tunnels(&mut self) -> bool {
        let ifindex = self.side.dataplane().servers_ifindex();
        let mut hops = std::collections::HashMap::new();
        for a in self.side.tunnel_addrs() {
            match neighbours::route_to(a) {
                Ok(r) => {
                    if let Some(g) = r.gateway {
                        hops.insert(a, g);
                    }
                    if r.oif.is_some_and(|i| i != ifindex) && self.side.hop(a) != r.gateway {
                        warn!(
                            "tunnel real server {a}: the kernel routes it out of another interface than {}; xdpvs sends its tunnels on {}",
                            self.servers_iface, self.servers_iface
                        );
                    }
                }
                Err(e) => warn!("tunnel real server {a}: {e}"),
            }
        }
        for (a, g) in &hops {
            if self.side.hop(*a) != Some(*g) {
                info!("tunnel real server {a} is reached via {g}");
            }
        }
        self.side.set_hops(hops)
    }

    /// Takes the kernel's routes towards clients for NAT replies (while some real server
    /// is NAT's), and has the routers it does not know resolved.
    fn route_clients(&mut self) {
        if !self.side.has_nat() {
            let _ = self.side.set_client_routes(Vec::new());
            return;
        }
        let ifindex = self.side.dataplane().ifindex;
        match neighbours::client_routes(ifindex, self.neighbours.table()) {
            Ok((routes, unresolved)) => {
                neighbours::probe(&unresolved);
                let shown: Vec<String> = routes
                    .iter()
                    .map(|r| format!("{}/{} at {}", r.net, r.prefix_len, format_mac(&r.mac)))
                    .collect();
                match self.side.set_client_routes(routes) {
                    Ok(true) => info!(
                        "NAT replies follow the routes: {}",
                        if shown.is_empty() {
                            "none (back where each client's packets come from)".into()
                        } else {
                            shown.join(", ")
                        }
                    ),
                    Ok(false) => {}
                    Err(e) => warn!("applying the routes towards clients failed: {e}"),
                }
            }
            Err(e) => warn!("reading the routes towards clients: {e}"),
        }
    }

    /// Takes what the neighbour table says of the real servers; whether it was applied.
    fn learn(&mut self, watch: &mut Watch) -> bool {
        match self.side.learn_macs(self.neighbours.table()) {
            Ok(changed) => {
                for (a, m) in changed {
                    match m {
                        Some(m) => {
                            info!("real server {a} is at {}", format_mac(&m));
                            if let Some(moved) = watch.real_at(a, m) {
                                let said = moved.message();
                                warn!("{said}");
                                self.side.events().push(Kind::Mac, said);
                            }
                        }
                        None => warn!(
                            "real server {a} does not answer ARP: no new traffic to it until it does"
                        ),
                    }
                }
                true
            }
            Err(e) => {
                warn!("applying resolved MACs failed: {e}");
                false
            }
        }
    }

    /// keepalived's VRRP: a VIP that follows it is served while this host holds it, and
    /// guarded by nftables (a master whose director is gone must not answer it).
    fn follow_vrrp(&mut self) {
        let polled = self.held.poll();
        if let Err(e) = &polled {
            warn!("address events: {e}");
        }
        if self.side.held() != self.held.addrs() {
            match self.side.set_held(self.held.addrs().clone()) {
                Ok(moved) => {
                    for (vip, served) in moved {
                        let said = if served {
                            self.arrived.insert(vip, Instant::now());
                            let said = format!(
                                "VIP {vip} is held here (VRRP master): served, gratuitous ARP sent"
                            );
                            info!("{said}");
                            said
                        } else {
                            let said =
                                format!("VIP {vip} is no longer held here (VRRP backup): silent");
                            warn!("{said}");
                            said
                        };
                        self.side.events().push(Kind::Vrrp, said);
                    }
                }
                Err(e) => warn!("following VRRP failed: {e}; tried again"),
            }
        }
        let vips: std::collections::BTreeSet<std::net::IpAddr> =
            self.side.vrrp().into_iter().map(|(v, _)| v).collect();
        if self.guarded.as_ref() != Some(&vips) && (!vips.is_empty() || self.guarded.is_some()) {
            match crate::announce::guard(&vips) {
                Ok(()) => self.guarded = Some(vips),
                Err(e) => warn!("the nftables guard of the VIPs that follow VRRP: {e}"),
            }
        }
    }

    /// Takes the health checks' results, and enforces the transitions still waiting.
    fn health(&mut self) {
        let mut moved = Vec::new();
        for o in self.checker.results().try_iter() {
            match self.side.health_outcome(&o) {
                Ok(t) => moved.extend(t),
                Err(e) => warn!("applying a health check's result failed: {e}; tried again"),
            }
        }
        match self.side.enforce_pending() {
            Ok(t) => moved.extend(t),
            Err(e) => warn!("applying a health check's result failed: {e}; tried again"),
        }
        for t in moved {
            self.side.events().push(Kind::Health, log_transition(&t));
            if let Some(s) = &t.script {
                let word = if t.state == Health::Up { "up" } else { "down" };
                self.scripts
                    .run(s, format!("real server {} of {} {word}", t.addr, t.service));
            }
        }
        for q in self.side.take_quorum_changes() {
            let word = if q.held { "gained" } else { "lost" };
            let log = format!("{}: quorum {word} (weight up {})", q.service, q.weight);
            if q.held {
                info!("{log}");
            } else {
                warn!("{log}");
            }
            self.side.events().push(Kind::Health, log.clone());
            if let Some(s) = &q.script {
                self.scripts.run(s, log);
            }
        }
    }
}

/// Says a health transition, once it is in force; what it said.
fn log_transition(t: &Transition) -> String {
    match t.state {
        Health::Down => {
            let said = format!(
                "real server {} of {} failed its check ({}): {}",
                t.addr,
                t.service,
                t.detail,
                match t.on_failure {
                    OnFailure::Inhibit => "weight 0 until it passes again",
                    OnFailure::Remove => "removed until it passes again",
                }
            );
            warn!("{said}");
            said
        }
        Health::Up => {
            let said = format!(
                "real server {} of {} passes its check again: back in service",
                t.addr, t.service
            );
            info!("{said}");
            said
        }
    }
}

/// A polling policy as `--poll` spells it.
pub fn policy_name(p: IdlePolicy) -> String {
    clap::ValueEnum::to_possible_value(&p).map_or_else(String::new, |v| v.get_name().to_string())
}

/// Tells systemd (when it started us with `Type=notify`) that the director is ready.
pub fn ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Where in the file `name` the change refused with `e` comes from: `FILE:LINE: why`
/// for a request of the batch (the file's requests start after `offset` others), else
/// `FILE: why`. Never "request N of the batch": the operator edits a file, not a batch.
pub fn at_line(name: &str, lines: &[Place], offset: usize, e: &ControlError) -> String {
    match e {
        ControlError::InBatch { index, error } => {
            match index.checked_sub(1 + offset).and_then(|i| lines.get(i)) {
                Some(p) => format!("{}:{}: {error}", p.file.as_deref().unwrap_or(name), p.line),
                None => format!("{name}: {error}"),
            }
        }
        e => format!("{name}: {e}"),
    }
}

/// One line of what a reload changed: services and real servers added, removed or
/// changed (scheduler, persistence, weight, check, sorry server).
pub fn what_changed(
    before: &crate::control::view::OperatorConfig,
    after: &crate::control::view::OperatorConfig,
) -> String {
    use std::collections::BTreeMap;
    let reals = |c: &crate::control::view::OperatorConfig| {
        c.services
            .iter()
            .flat_map(|s| {
                s.reals.iter().map(move |r| {
                    (
                        (s.key, r.addr),
                        (r.weight, c.checks.get(&(s.key, r.addr)).cloned()),
                    )
                })
            })
            .collect::<BTreeMap<_, _>>()
    };
    let services = |c: &crate::control::view::OperatorConfig| {
        c.services
            .iter()
            .map(|s| {
                (
                    s.key,
                    (s.scheduler, s.persistence, c.sorry.get(&s.key).copied()),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    fn diff<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> (usize, usize, usize) {
        let added = b.keys().filter(|k| !a.contains_key(k)).count();
        let removed = a.keys().filter(|k| !b.contains_key(k)).count();
        let changed = b
            .iter()
            .filter(|(k, v)| a.get(k).is_some_and(|old| old != *v))
            .count();
        (added, removed, changed)
    }
    let (sa, sr, sc) = diff(&services(before), &services(after));
    let (ra, rr, rc) = diff(&reals(before), &reals(after));
    if sa + sr + sc + ra + rr + rc == 0 {
        return "nothing changed".into();
    }
    format!(
        "services {sa} added, {sr} removed, {sc} changed; real servers {ra} added, {rr} removed, {rc} changed"
    )
}

/// SIGHUP: reads the source again and applies it as one change; what it said.
fn reload(side: &mut WriteSide<Live>, src: &Source<'_>) -> String {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let said = match (src.load)() {
        Err(e) => {
            let said = format!("SIGHUP: {e}; the configuration in force stays");
            warn!("{said}");
            said
        }
        Ok(lined) => {
            let (lines, reqs): (Vec<Place>, Vec<Request>) = lined.into_iter().unzip();
            let batch = Request::Batch(std::iter::once(Request::Clear).chain(reqs).collect());
            let before = side.published().get().config.clone();
            match side.execute(&batch) {
                Ok(_) => {
                    let said = format!(
                        "SIGHUP: {} applied: {}",
                        src.name,
                        what_changed(&before, &side.published().get().config)
                    );
                    info!("{said}");
                    said
                }
                Err(e) => {
                    let said = format!(
                        "SIGHUP: {}; nothing of it was applied, the configuration in force stays",
                        at_line(&src.name, &lines, 1, &e)
                    );
                    warn!("{said}");
                    said
                }
            }
        }
    };
    ready();
    said
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn places(lines: &[usize]) -> Vec<Place> {
        lines.iter().map(|&l| Place::line(l)).collect()
    }

    #[test]
    fn a_refusal_names_the_file_and_its_line() {
        let inner = ControlError::BadReal {
            addr: std::net::Ipv4Addr::new(198, 19, 0, 5).into(),
            why: "it is not on the director's subnet".into(),
        };
        let e = ControlError::InBatch {
            index: 3,
            error: Box::new(inner.clone()),
        };
        // A reload's batch starts with a clear: its third request is the file's second.
        assert_eq!(
            at_line("/etc/keepalived/keepalived.conf", &places(&[4, 27, 40]), 1, &e),
            "/etc/keepalived/keepalived.conf:27: real server 198.19.0.5: it is not on the director's subnet"
        );
        assert_eq!(
            at_line("rules", &places(&[1, 2, 3]), 0, &e),
            "rules:3: real server 198.19.0.5: it is not on the director's subnet"
        );
        // A change from an included file names that file.
        let mut included = places(&[1, 2, 3]);
        included[2].file = Some("/etc/keepalived/conf.d/web.conf".into());
        assert_eq!(
            at_line("/etc/keepalived/keepalived.conf", &included, 0, &e),
            "/etc/keepalived/conf.d/web.conf:3: real server 198.19.0.5: it is not on the director's subnet"
        );
        assert_eq!(
            at_line("rules", &[], 0, &inner),
            "rules: real server 198.19.0.5: it is not on the director's subnet"
        );
    }

    #[test]
    fn a_reload_says_what_it_changed() {
        use crate::control::view::OperatorConfig;
        use xdpvs_sched::{Protocol, RealSpec, SchedKind, ServiceKey, ServiceSpec};
        let key = |port| ServiceKey {
            proto: Protocol::Tcp,
            vip: std::net::Ipv4Addr::new(198, 18, 0, 100).into(),
            port,
        };
        let real = |last: u8, weight| RealSpec {
            addr: std::net::Ipv4Addr::new(198, 18, 0, last).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight,
            mac: None,
        };
        let mut a = ServiceSpec::new(key(80), SchedKind::Rr);
        a.reals = vec![real(11, 1), real(12, 1)];
        let before = OperatorConfig {
            services: vec![a.clone()],
            ..OperatorConfig::default()
        };
        assert_eq!(what_changed(&before, &before), "nothing changed");
        let mut edited = a;
        edited.reals = vec![real(11, 5), real(13, 1)];
        edited.scheduler = SchedKind::Wrr;
        let after = OperatorConfig {
            services: vec![edited, ServiceSpec::new(key(443), SchedKind::Rr)],
            ..OperatorConfig::default()
        };
        assert_eq!(
            what_changed(&before, &after),
            "services 1 added, 0 removed, 1 changed; real servers 1 added, 1 removed, 1 changed"
        );
    }

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
