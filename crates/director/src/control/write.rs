//! The write side: the one owner of the operator's configuration. It takes changes
//! (requests, health transitions, resolved MACs), applies each all or nothing
//! (edit → effective configuration with health → build → install → steer → advertise
//! new VIPs), and publishes the result as a [`View`] for every reader.
//!
//! Applying a change: compile a snapshot (slots from the director's one [`SlotBook`]),
//! install it on every worker, then point the XDP program at the new services, then
//! advertise new VIPs. If the XDP maps cannot be updated, the workers get the previous
//! snapshot back and the XDP maps the previous services: the change is rolled back
//! everywhere and the client told so. If a worker does not take a snapshot (it died or
//! hangs), the write side can no longer know what every worker runs: it marks itself
//! failed, answers every later change with that error, and the director stops.
//! Generations only move forward in the book, so even a snapshot that some workers ran
//! and that was then abandoned never makes a connection reach another real server.
//!
//! A health transition is enforced by the change that applies it, and recorded and
//! reported only once that change is in force; if applying fails, it waits and is tried
//! again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use xdpvs_dataplane::{
    ClientRoute, Config, Draining, Fwd, Limits, NatSource, Options, Services, SlotBook,
};
use xdpvs_sched::tcp::{State, Timeouts};
use xdpvs_sched::{Mac, Method, RealSpec, SchedKind, ServiceKey, ServiceSpec};

use super::dataplane::{Configure, Observe};
use super::proto::{
    CheckEdit, CheckSpec, ControlError, OnFailure, Reply, Request, Script, TimeoutSet,
};
use super::read::counters;
use super::stats::Tracked;
use super::view::{DrainingReal, HealthRecord, OperatorConfig, Published, View};
use crate::announce::VipSet;
use crate::health::{Health, Outcome, Target};
use crate::iface::{format_mac, LocalNet};

/// A health transition the write side enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The service.
    pub service: ServiceKey,
    /// The real server.
    pub addr: IpAddr,
    /// Its new state.
    pub state: Health,
    /// The result that moved it.
    pub detail: String,
    /// What that does to it.
    pub on_failure: OnFailure,
    /// The script its check runs on this transition (`notify_up`/`notify_down`).
    pub script: Option<Script>,
}

/// A service's quorum gained or lost (keepalived `quorum_up`/`quorum_down`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumChange {
    /// The service.
    pub service: ServiceKey,
    /// Held now.
    pub held: bool,
    /// The weight of its real servers that are up.
    pub weight: u64,
    /// The script to run.
    pub script: Option<Script>,
}

/// The gratuitous ARP (IPv6: unsolicited advertisement) that tells the LAN `vip` is at
/// `owner` again, sent by the director (its MAC the frame's source: a switch must not
/// learn `owner` on the director's port).
fn hand_back(vip: IpAddr, owner: Mac, director: Mac) -> Vec<u8> {
    let mut f = match vip {
        IpAddr::V4(v) => xdpvs_arp::gratuitous(v, owner).to_vec(),
        IpAddr::V6(v) => xdpvs_arp::ndp::unsolicited(v, owner).to_vec(),
    };
    f[6..12].copy_from_slice(&director);
    f
}

/// What the dataplane runs for `wanted`, given what the checks found: real servers whose
/// check failed get weight 0 or are left out (as their check says), those whose dynamic
/// checkers ask for a weight get it, and a service whose real servers that are up weigh
/// less than its quorum (keepalived's, 1 by default, with its hysteresis; `was` says who
/// held it) gets its sorry server with weight 1, its real servers at weight 0. Also
/// returns who holds the quorum now, with the weight up.
fn effective(
    wanted: &OperatorConfig,
    health: &HashMap<(ServiceKey, IpAddr), HealthRecord>,
    was: &HashMap<ServiceKey, bool>,
) -> Effective {
    let mut out_of_service = Vec::new();
    let mut held = HashMap::new();
    let services = wanted
        .services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            // A consistent-hash table keeps a failed real server's place, so that only
            // its clients move: it stays, out of service, whatever `on_failure` says.
            let keeps_places = s.scheduler == SchedKind::Mh;
            s.reals.retain_mut(|r| {
                let Some(check) = wanted.checks.get(&(s.key, r.addr)) else {
                    return true;
                };
                let record = health.get(&(s.key, r.addr));
                if let Some(d) = record.and_then(|h| h.dynamic) {
                    r.weight = d.weight(r.weight);
                }
                let down = record.is_some_and(|h| h.state == Health::Down);
                match (down, check.on_failure) {
                    (false, _) => true,
                    (true, OnFailure::Remove) if !keeps_places => false,
                    (true, _) => {
                        out_of_service.push((s.key, r.addr));
                        true
                    }
                }
            });
            let weight: u64 = s
                .reals
                .iter()
                .filter(|r| !out_of_service.contains(&(s.key, r.addr)))
                .map(|r| u64::from(r.weight))
                .sum();
            let quorum = wanted.quorum.get(&s.key).cloned().unwrap_or_default();
            let holds = quorum.holds(weight, was.get(&s.key).copied().unwrap_or(true));
            held.insert(s.key, (holds, weight));
            if let Some(&sorry) = wanted.sorry.get(&s.key) {
                if !holds && !s.reals.iter().any(|r| r.addr == sorry) {
                    // keepalived brings the real servers down and the sorry server in:
                    // here they keep their connections at weight 0.
                    for r in &mut s.reals {
                        r.weight = 0;
                    }
                    let stand_in = super::view::sorry_real(&s, sorry);
                    s.reals.push(stand_in);
                }
            }
            s
        })
        .collect();
    Effective {
        services,
        out_of_service,
        held,
    }
}

/// What [`effective`] works out.
struct Effective {
    /// The services as the dataplane runs them.
    services: Vec<ServiceSpec>,
    /// Real servers kept but out of service (their check failed).
    out_of_service: Vec<(ServiceKey, IpAddr)>,
    /// Whether each service holds its quorum, and the weight of its real servers up.
    held: HashMap<ServiceKey, (bool, u64)>,
}

/// The health records for `config`'s checks: a check that stays as it is keeps its
/// record, a new or changed one starts afresh (up, as keepalived starts its checks).
fn next_health(
    now: &HashMap<(ServiceKey, IpAddr), HealthRecord>,
    old: &HashMap<(ServiceKey, IpAddr), CheckSpec>,
    new: &HashMap<(ServiceKey, IpAddr), CheckSpec>,
) -> HashMap<(ServiceKey, IpAddr), HealthRecord> {
    new.iter()
        .map(|(id, c)| {
            let kept = now.get(id).filter(|_| old.get(id) == Some(c));
            // keepalived's alpha: down until its first check passes.
            let fresh = || {
                let mut h = HealthRecord::new();
                if c.alpha {
                    h.state = Health::Down;
                }
                h
            };
            (*id, kept.cloned().unwrap_or_else(fresh))
        })
        .collect()
}

/// Where a real server of a service stands in ipvsadm's order (protocol, VIP, port, then
/// the real server's address): checks and transitions are handed out in it.
fn listing_order(service: &ServiceKey, addr: IpAddr) -> (bool, u8, IpAddr, u16, IpAddr) {
    (
        service.vip.is_ipv6(),
        service.proto.ip_number(),
        service.vip,
        service.port,
        addr,
    )
}

/// A health transition the checker reported that no applied change enforces yet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    state: Health,
    detail: String,
}

/// The write side: the operator's configuration, what the checks and the neighbour table
/// found, and the dataplane it configures.
pub struct WriteSide<D: Configure + Observe> {
    config: OperatorConfig,
    health: HashMap<(ServiceKey, IpAddr), HealthRecord>,
    /// Transitions reported by the checker, not yet enforced by an applied change.
    pending: HashMap<(ServiceKey, IpAddr), Pending>,
    /// Changes applied so far.
    applied: u64,
    macs: HashMap<IpAddr, Mac>,
    /// Every neighbour the kernel knows on the interface, at its MAC.
    lan: HashMap<IpAddr, Mac>,
    director_mac: Mac,
    /// Two-armed: the MAC of the real servers' interface.
    servers_mac: Option<Mac>,
    options: Options,
    limits: Limits,
    book: SlotBook,
    current: Arc<Services>,
    failed: Option<String>,
    timeouts: Timeouts,
    local: Vec<LocalNet>,
    /// The MTU of the paths to tunnel real servers (the interface's).
    tunnel_mtu: u16,
    /// Tunnel real servers behind a router: their next hop, whose MAC they are sent to.
    hops: HashMap<IpAddr, IpAddr>,
    /// The kernel's routes towards clients: where NAT replies go.
    client_routes: Vec<ClientRoute>,
    draining: Vec<DrainingReal>,
    /// Statistics of service slots and of real-server slots.
    svc_stats: HashMap<u32, Tracked>,
    dest_stats: HashMap<u32, Tracked>,
    dp: D,
    published: Arc<Published<View>>,
    /// When the director started (Unix seconds), for `xdpvs_start_time_seconds`.
    started: f64,
    /// Which services hold their quorum (all, but those that lost it).
    quorum_held: HashMap<ServiceKey, bool>,
    /// Quorum changes not yet taken by [`WriteSide::take_quorum_changes`].
    quorum_changes: Vec<QuorumChange>,
    /// VIPs that follow VRRP: `run --vrrp-vip`'s, and the configuration's
    /// ([`Request::Follow`]).
    follow_fixed: BTreeSet<IpAddr>,
    follow: BTreeSet<IpAddr>,
    /// The addresses this host holds on its interfaces (rtnetlink).
    held: BTreeSet<IpAddr>,
    /// The VIPs the XDP program steers now (configured, and held if they follow VRRP).
    served: HashSet<IpAddr>,
    /// The sync daemon, whose roles the write side starts and stops.
    daemon: Option<crate::sync::Daemon>,
    /// keepalived's `lvs_sync_daemon`, when the roles follow it.
    following: Option<daemon::Following>,
    /// What happened, for the status page.
    events: Arc<crate::events::Events>,
}

impl<D: Configure + Observe> std::fmt::Debug for WriteSide<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSide")
            .field("services", &self.config.services.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<D: Configure + Observe> WriteSide<D> {
    /// An empty configuration, already installed in `dp`. `local` are the addresses of
    /// the director's interface: real servers must be on one of their subnets and must
    /// not be one of them (no check when empty).
    pub fn new(
        director_mac: Mac,
        options: Options,
        limits: Limits,
        local: Vec<LocalNet>,
        mut dp: D,
    ) -> Result<Self, ControlError> {
        let cfg = Config::new(director_mac, Vec::new(), options);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut book = SlotBook::new(&limits);
        let current = Arc::new(Services::build_with(&cfg, &limits, &mut book, None)?);
        dp.install(&current)
            .and_then(|()| dp.steer(&[], &[]))
            .map_err(|e| ControlError::Fatal(e.to_string()))?;
        let published = Arc::new(Published::new(View {
            config: OperatorConfig::default(),
            health: HashMap::new(),
            macs: HashMap::new(),
            current: Arc::clone(&current),
            draining: Vec::new(),
            svc_stats: HashMap::new(),
            dest_stats: HashMap::new(),
            timeouts: Timeouts::default(),
            applied: 0,
            director_mac,
            local: local.clone(),
            options,
            started,
            quorum_held: HashMap::new(),
            vrrp: Vec::new(),
            sync: None,
        }));
        Ok(WriteSide {
            config: OperatorConfig::default(),
            health: HashMap::new(),
            pending: HashMap::new(),
            applied: 0,
            macs: HashMap::new(),
            lan: HashMap::new(),
            director_mac,
            servers_mac: None,
            options,
            limits,
            book,
            current,
            failed: None,
            timeouts: Timeouts::default(),
            local,
            tunnel_mtu: 1500,
            hops: HashMap::new(),
            client_routes: Vec::new(),
            draining: Vec::new(),
            svc_stats: HashMap::new(),
            dest_stats: HashMap::new(),
            dp,
            published,
            started,
            quorum_held: HashMap::new(),
            quorum_changes: Vec::new(),
            follow_fixed: BTreeSet::new(),
            follow: BTreeSet::new(),
            held: BTreeSet::new(),
            served: HashSet::new(),
            daemon: None,
            following: None,
            events: Arc::default(),
        })
    }

    /// The event log the director's control-side threads write and the status page reads.
    pub fn events(&self) -> &Arc<crate::events::Events> {
        &self.events
    }

    /// Where the write side publishes its [`View`] after every change: what readers read.
    pub fn published(&self) -> Arc<Published<View>> {
        Arc::clone(&self.published)
    }

    /// Publishes the state in force.
    fn publish(&self) {
        self.published.set(View {
            config: self.config.clone(),
            health: self.health.clone(),
            macs: self.macs.clone(),
            current: Arc::clone(&self.current),
            draining: self.draining.clone(),
            svc_stats: self.svc_stats.clone(),
            dest_stats: self.dest_stats.clone(),
            timeouts: self.timeouts,
            applied: self.applied,
            director_mac: self.director_mac,
            local: self.local.clone(),
            options: self.options,
            started: self.started,
            quorum_held: self.quorum_held.clone(),
            vrrp: self.vrrp(),
            sync: self.sync_info(),
        });
    }

    /// The dataplane.
    pub fn dataplane(&self) -> &D {
        &self.dp
    }

    /// Gives the dataplane back (at shutdown).
    pub fn into_dataplane(self) -> D {
        self.dp
    }

    /// Why the control plane gave up, if it did: the director must stop.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The snapshot every worker runs.
    pub fn current(&self) -> &Services {
        &self.current
    }

    /// The dataplane, to change it outside a configuration change (polling policies).
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    /// Every real-server address of the configuration (sorry servers included), and of
    /// removed real servers still draining connections.
    pub fn real_addrs(&self) -> Vec<IpAddr> {
        let set: HashSet<IpAddr> = self
            .config
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .chain(self.config.sorry.values().copied())
            .chain(self.draining.iter().map(|d| d.addr))
            .collect();
        let mut v: Vec<_> = set.into_iter().collect();
        v.sort();
        v
    }

    /// The addresses of the tunnel real servers (configured or draining): those that may
    /// be behind a router.
    pub fn tunnel_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .current
            .services()
            .iter()
            .flat_map(|s| &s.reals)
            .filter(|r| matches!(r.fwd, Fwd::Tunnel { .. }))
            .map(|r| r.addr)
            .chain(
                self.draining
                    .iter()
                    .filter(|d| matches!(d.fwd, Fwd::Tunnel { .. }))
                    .map(|d| d.addr),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Two-armed: frames to real servers leave from `mac`, the real servers' interface's
    /// (taken at the next change).
    pub fn set_servers_mac(&mut self, mac: Mac) {
        self.servers_mac = Some(mac);
    }

    /// Sets the MTU of the paths to tunnel real servers (taken at the next change).
    pub fn set_tunnel_mtu(&mut self, mtu: u16) {
        self.tunnel_mtu = mtu;
    }

    /// Whether some real server is NAT's (its replies need routes towards clients).
    pub fn has_nat(&self) -> bool {
        self.current.has_nat()
    }

    /// Takes the kernel's routes towards clients (for NAT replies); re-applies the
    /// configuration if they changed. Whether they did.
    pub fn set_client_routes(&mut self, routes: Vec<ClientRoute>) -> Result<bool, ControlError> {
        if routes == self.client_routes {
            return Ok(false);
        }
        let before = std::mem::replace(&mut self.client_routes, routes);
        if let Err(e) = self.apply(self.config.clone(), self.health.clone()) {
            self.client_routes = before;
            return Err(e);
        }
        Ok(true)
    }

    /// The next hop of tunnel real server `a`, if it is behind a router.
    pub fn hop(&self, a: IpAddr) -> Option<IpAddr> {
        self.hops.get(&a).copied()
    }

    /// Takes the next hops of tunnel real servers behind a router (from the kernel's
    /// routes); whether they changed (their MACs are then learnt again).
    pub fn set_hops(&mut self, hops: HashMap<IpAddr, IpAddr>) -> bool {
        let changed = hops != self.hops;
        self.hops = hops;
        changed
    }

    /// Every VIP of the configuration, and those with a real server in service (weight
    /// above 0, its check passing, its MAC known; a sorry server in force counts): what
    /// `run --announce` guards and announces.
    pub fn vips(&self) -> VipSet {
        let Effective {
            services,
            out_of_service,
            ..
        } = effective(&self.config, &self.health, &self.quorum_held);
        let mut w = VipSet::default();
        for s in &services {
            w.configured.insert(s.key.vip);
            let serves = s.reals.iter().any(|r| {
                r.weight > 0
                    && !out_of_service.contains(&(s.key, r.addr))
                    && self.macs.contains_key(&r.addr)
            });
            if serves {
                w.in_service.insert(s.key.vip);
            }
        }
        w
    }

    /// Real servers whose MAC is not known.
    pub fn unresolved(&self) -> Vec<IpAddr> {
        self.real_addrs()
            .into_iter()
            .filter(|a| !self.macs.contains_key(a))
            .collect()
    }

    /// Takes what the neighbour table says of real servers: `Some(mac)` reachable there,
    /// `None` unreachable (its MAC is forgotten and it gets no traffic). Re-applies the
    /// configuration if anything changed; returns what changed.
    pub fn learn_macs(
        &mut self,
        seen: &HashMap<IpAddr, Option<Mac>>,
    ) -> Result<Vec<(IpAddr, Option<Mac>)>, ControlError> {
        self.learn_lan(seen);
        let mut changed = Vec::new();
        for a in self.real_addrs() {
            // A routed tunnel real server is sent to its next hop's MAC.
            let at = self.hops.get(&a).copied().unwrap_or(a);
            if let Some(&m) = seen.get(&at) {
                if self.macs.get(&a).copied() != m {
                    changed.push((a, m));
                }
            }
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        let before = self.macs.clone();
        for &(a, m) in &changed {
            match m {
                Some(m) => self.macs.insert(a, m),
                None => self.macs.remove(&a),
            };
        }
        if let Err(e) = self.apply(self.config.clone(), self.health.clone()) {
            self.macs = before;
            return Err(e);
        }
        Ok(changed)
    }

    /// Takes in every neighbour the kernel knows on the interface (a VIP must not be one
    /// of them: [`WriteSide::check_new_vips`]).
    pub fn learn_lan(&mut self, seen: &HashMap<IpAddr, Option<Mac>>) {
        self.lan.clear();
        self.lan
            .extend(seen.iter().filter_map(|(&a, &m)| Some((a, m?))));
    }

    /// VIPs that always follow VRRP (`run --vrrp-vip`), and the addresses this host holds
    /// now; the director's own addresses that are such VIPs are not its own.
    pub fn set_following(&mut self, fixed: BTreeSet<IpAddr>, held: BTreeSet<IpAddr>) {
        self.follow_fixed = fixed;
        self.held = held;
        self.local.retain(|l| !self.follow_fixed.contains(&l.addr));
    }

    /// Whether `vip` follows VRRP.
    fn follows(&self, vip: &IpAddr) -> bool {
        self.follow_fixed.contains(vip) || self.follow.contains(vip)
    }

    /// The configured VIPs that follow VRRP, each with whether this host holds it.
    pub fn vrrp(&self) -> Vec<(IpAddr, bool)> {
        let mut v: Vec<(IpAddr, bool)> = self
            .config
            .services
            .iter()
            .map(|s| s.key.vip)
            .filter(|v| self.follows(v))
            .map(|v| (v, self.held.contains(&v)))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Takes the addresses this host holds now (keepalived's VRRP adds a VIP to the
    /// master's interface, removes it from the backup's). A VIP that follows VRRP starts
    /// or stops being served; each one that did is returned with its new state.
    pub fn set_held(
        &mut self,
        held: BTreeSet<IpAddr>,
    ) -> Result<Vec<(IpAddr, bool)>, ControlError> {
        let before = self.vrrp();
        let old = std::mem::replace(&mut self.held, held);
        let after = self.vrrp();
        let moved: Vec<(IpAddr, bool)> = after
            .iter()
            .filter(|a| !before.contains(a))
            .copied()
            .collect();
        if !moved.is_empty() {
            if let Err(e) = self.apply(self.config.clone(), self.health.clone()) {
                // Tried again at the next turn.
                self.held = old;
                return Err(e);
            }
        }
        self.sync_roles();
        Ok(moved)
    }

    /// The addresses this host holds, as last taken.
    pub fn held(&self) -> &BTreeSet<IpAddr> {
        &self.held
    }

    /// The quorum changes applied since the last call.
    pub fn take_quorum_changes(&mut self) -> Vec<QuorumChange> {
        std::mem::take(&mut self.quorum_changes)
    }

    /// keepalived's `omega`, when the director stops: the `quorum_down` script of each
    /// service with `omega` that holds its quorum, and the `notify_down` script of each of
    /// its real servers that is up.
    pub fn omega_scripts(&self) -> Vec<(Script, String)> {
        let mut out = Vec::new();
        for s in &self.config.services {
            let Some(q) = self.config.quorum.get(&s.key).filter(|q| q.omega) else {
                continue;
            };
            if let Some(d) = q
                .down
                .clone()
                .filter(|_| self.quorum_held.get(&s.key) != Some(&false))
            {
                out.push((d, format!("{}: the director stops (omega)", s.key)));
            }
            for r in &s.reals {
                let up = self
                    .health
                    .get(&(s.key, r.addr))
                    .is_none_or(|h| h.state == Health::Up);
                if let Some(n) = self
                    .config
                    .checks
                    .get(&(s.key, r.addr))
                    .and_then(|c| c.notify_down.clone())
                    .filter(|_| up)
                {
                    out.push((n, format!("{}: real server {} (omega)", s.key, r.addr)));
                }
            }
        }
        out
    }

    /// How many changes have been applied: what depends on the configuration in force
    /// (the checks to run) needs looking at again when this moves.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The checks to run for the configuration in force, each starting in the state its
    /// real server is in now.
    pub fn check_targets(&self) -> Vec<Target> {
        let mut v: Vec<Target> = self
            .config
            .checks
            .iter()
            .map(|(&(service, addr), spec)| Target {
                service,
                addr,
                // The real server's own port (a NAT real server's may be another).
                port: spec.port.unwrap_or_else(|| self.real_port(&service, addr)),
                spec: spec.clone(),
                start: self
                    .health
                    .get(&(service, addr))
                    .map_or(Health::Up, |h| h.state),
            })
            .collect();
        v.sort_by_key(|t| listing_order(&t.service, t.addr));
        v
    }

    /// The port real server `addr` of `service` serves on.
    fn real_port(&self, service: &ServiceKey, addr: IpAddr) -> u16 {
        self.config
            .services
            .iter()
            .find(|s| s.key == *service)
            .and_then(|s| s.reals.iter().find(|r| r.addr == addr))
            .map_or(service.port, |r| r.port_for(service.port))
    }

    /// Takes one check result: its figures are recorded at once; a result that moves
    /// its real server up or down waits until a change that enforces it is applied, and
    /// is returned then (with any transition that waited for an earlier failed apply). A
    /// result for a check no longer configured is ignored.
    pub fn health_outcome(&mut self, o: &Outcome) -> Result<Vec<Transition>, ControlError> {
        let id = (o.service, o.addr);
        if !self.config.checks.contains_key(&id) {
            return Ok(Vec::new());
        }
        let h = self.health.entry(id).or_default();
        h.checks += 1;
        h.checked_at = epoch_now();
        h.failures += u64::from(!o.ok);
        h.last.clone_from(&o.detail);
        h.latency = o.latency;
        // A failed check keeps the weight its checkers asked for last.
        let reweighed = o.ok && h.dynamic != o.dynamic;
        if o.ok {
            h.dynamic = o.dynamic;
        }
        let enforced = h.state;
        match o.changed {
            // Back to what is in force before the change was applied: nothing to do.
            Some(state) if state == enforced => {
                self.pending.remove(&id);
            }
            Some(state) => {
                self.pending.insert(
                    id,
                    Pending {
                        state,
                        detail: o.detail.clone(),
                    },
                );
            }
            None => {}
        }
        let moved = self.enforce_pending();
        if reweighed && moved.as_ref().is_ok_and(Vec::is_empty) {
            // The weight a dynamic checker asks for is applied at once.
            self.apply(self.config.clone(), self.health.clone())?;
            return moved;
        }
        // The figures are published whether or not a change was applied (an applied
        // change has published them already).
        if moved.as_ref().map_or(true, Vec::is_empty) {
            self.publish();
        }
        moved
    }

    /// Applies the health transitions waiting (after a failed apply, at every turn of the
    /// write side); the ones now in force.
    pub fn enforce_pending(&mut self) -> Result<Vec<Transition>, ControlError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        // Configured checks only: one removed meanwhile has nothing to enforce.
        self.pending
            .retain(|id, _| self.config.checks.contains_key(id));
        let mut health = self.health.clone();
        let mut moved = Vec::new();
        for (id, p) in &self.pending {
            let h = health.entry(*id).or_default();
            h.state = p.state;
            h.transitions += 1;
            h.changed_at = epoch_now();
            moved.push(Transition {
                service: id.0,
                addr: id.1,
                state: p.state,
                detail: p.detail.clone(),
                on_failure: self
                    .config
                    .checks
                    .get(id)
                    .map_or(OnFailure::Inhibit, |c| c.on_failure),
                script: self.config.checks.get(id).and_then(|c| match p.state {
                    Health::Up => c.notify_up.clone(),
                    Health::Down => c.notify_down.clone(),
                }),
            });
        }
        self.apply(self.config.clone(), health)?;
        self.pending.clear();
        moved.sort_by_key(|t| listing_order(&t.service, t.addr));
        Ok(moved)
    }

    /// Compiles and installs `wanted` with `health` (the records the checks' state is
    /// taken from), all or nothing (see the module's documentation); publishes the result.
    fn apply(
        &mut self,
        wanted: OperatorConfig,
        health: HashMap<(ServiceKey, IpAddr), HealthRecord>,
    ) -> Result<(), ControlError> {
        if let Some(why) = &self.failed {
            return Err(ControlError::Fatal(why.clone()));
        }
        let health = next_health(&health, &self.config.checks, &wanted.checks);
        let Effective {
            services,
            out_of_service,
            held,
        } = effective(&wanted, &health, &self.quorum_held);
        let with_macs = services
            .iter()
            .cloned()
            .map(|mut s| {
                for r in &mut s.reals {
                    r.mac = self.macs.get(&r.addr).copied();
                }
                s
            })
            .collect();
        // Real servers this change removes keep their connections (drain) while their
        // MAC is known.
        let mut draining = self.draining.clone();
        for cs in self.current.services() {
            let kept = services.iter().find(|s| s.key == cs.key);
            for r in &cs.reals {
                if !kept.is_some_and(|s| s.reals.iter().any(|k| k.addr == r.addr)) {
                    draining.push(DrainingReal {
                        addr: r.addr,
                        dest: r.dest,
                        port: cs.key.port,
                        vip: cs.key.vip,
                        fwd: r.fwd,
                    });
                }
            }
        }
        let mut cfg = Config::new(self.director_mac, with_macs, self.options);
        cfg.servers_mac = self.servers_mac;
        cfg.own = self.local.iter().map(|l| l.addr).collect();
        cfg.tunnel_mtu = self.tunnel_mtu;
        cfg.client_routes = self.client_routes.clone();
        cfg.down = out_of_service;
        cfg.draining = draining
            .iter()
            .map(|d| Draining {
                dest: d.dest,
                mac: self.macs.get(&d.addr).copied(),
                fwd: d.fwd,
            })
            .collect();
        let checkpoint = self.book.checkpoint();
        let built = Services::build_with(&cfg, &self.limits, &mut self.book, Some(&self.current))?;
        // Workers first, then the XDP program: a newly steered service always meets a
        // worker that knows it.
        if let Err(e) = self.dp.install(&built) {
            return Err(self.fail(e.to_string()));
        }
        // A VIP that follows VRRP is steered only while this host holds it (the VRRP
        // master); on the backup it is configured but silent.
        let silent = |v: &IpAddr| self.follows(v) && !self.held.contains(v);
        let keys: Vec<ServiceKey> = services
            .iter()
            .map(|s| s.key)
            .filter(|k| !silent(&k.vip))
            .collect();
        let nat: Vec<NatSource> = built.nat_sources().collect();
        if let Err(e) = self.dp.steer(&keys, &nat) {
            // Back to the snapshot and services in force.
            let old_keys: Vec<ServiceKey> = self.current.services().iter().map(|s| s.key).collect();
            if let Err(e2) = self.dp.install(&self.current) {
                return Err(self.fail(format!("{e}, and rolling the workers back failed: {e2}")));
            }
            let old_nat: Vec<NatSource> = self.current.nat_sources().collect();
            if let Err(e2) = self.dp.steer(&old_keys, &old_nat) {
                return Err(self.fail(format!("{e}, and restoring the XDP maps failed: {e2}")));
            }
            self.book.rollback(checkpoint);
            return Err(ControlError::RolledBack(e.to_string()));
        }
        // A new VIP is advertised on the LAN, unless the VIPs are routed to the director
        // (`--announce`): then nobody should look for them there. A VIP given up is
        // handed back to the host the neighbour table knows it at, if any.
        let served: HashSet<IpAddr> = keys.iter().map(|k| k.vip).collect();
        if !self.options.vips_routed {
            let old_vips: HashSet<IpAddr> = self.current.all_vips().collect();
            let new_vips: HashSet<IpAddr> = built.all_vips().collect();
            // A VIP served anew (new, or arrived with VRRP) is advertised.
            for &v in served.difference(&self.served) {
                self.dp.advertise(v);
            }
            let back: Vec<Vec<u8>> = old_vips
                .difference(&new_vips)
                .filter_map(|v| {
                    let owner = *self.lan.get(v).filter(|&&m| m != self.director_mac)?;
                    Some(hand_back(*v, owner, self.director_mac))
                })
                .collect();
            if !back.is_empty() {
                self.dp.send(&back);
            }
        }
        self.current = Arc::new(built);
        self.served = served;
        for (key, &(now, weight)) in &held {
            let before = self.quorum_held.get(key).copied().unwrap_or(true);
            if now != before {
                let q = wanted.quorum.get(key).cloned().unwrap_or_default();
                self.quorum_changes.push(QuorumChange {
                    service: *key,
                    held: now,
                    weight,
                    script: if now { q.up } else { q.down },
                });
            }
        }
        self.quorum_held = held.into_iter().map(|(k, (h, _))| (k, h)).collect();
        self.health = health;
        self.config = wanted;
        self.applied += 1;
        self.draining = draining;
        self.track();
        self.publish();
        Ok(())
    }

    /// Starts tracking the statistics of services and real servers new to the snapshot
    /// in force, and forgets those gone.
    fn track(&mut self) {
        let mut live_svcs = HashSet::new();
        let mut live_dests = HashSet::new();
        for s in self.current.services() {
            live_svcs.insert(s.slot);
            let raw = counters(self.dp.service_traffic(s.slot));
            let t = self
                .svc_stats
                .entry(s.slot)
                .or_insert_with(|| Tracked::new(s.gen, raw));
            if t.gen != s.gen {
                *t = Tracked::new(s.gen, raw);
            }
            for r in &s.reals {
                live_dests.insert(r.dest.slot);
                let raw = counters(self.dp.dest_traffic(r.dest.slot));
                let t = self
                    .dest_stats
                    .entry(r.dest.slot)
                    .or_insert_with(|| Tracked::new(r.dest.gen, raw));
                if t.gen != r.dest.gen {
                    *t = Tracked::new(r.dest.gen, raw);
                }
            }
        }
        self.svc_stats.retain(|slot, _| live_svcs.contains(slot));
        self.dest_stats.retain(|slot, _| live_dests.contains(slot));
    }

    /// Every [`super::stats::SAMPLE_EVERY`]: samples the rate estimators, and forgets
    /// removed real servers that no longer hold any connection.
    pub fn tick(&mut self) {
        for (&slot, t) in &mut self.svc_stats {
            t.sample(counters(self.dp.service_traffic(slot)));
        }
        for (&slot, t) in &mut self.dest_stats {
            t.sample(counters(self.dp.dest_traffic(slot)));
        }
        let dp = &self.dp;
        self.draining.retain(|d| {
            let l = dp.load(d.dest);
            l.active > 0 || l.inactive > 0 || dp.persistent(d.dest) > 0
        });
        self.publish();
    }

    /// Asks who has each VIP (see [`super::diagnose::who_has_the_vips`]), without waiting.
    pub fn ask_who_has_the_vips(&mut self) {
        let frames = super::diagnose::who_has_the_vips(&self.published.get());
        if !frames.is_empty() {
            self.dp.send(&frames);
        }
    }

    /// `-Z`: zeroes the counters and rates of `service` and its real servers, or of all.
    fn zero(&mut self, service: Option<&ServiceKey>) -> Result<(), ControlError> {
        let chosen: Vec<&xdpvs_dataplane::config::Service> = match service {
            Some(k) => {
                let i = self
                    .current
                    .find(k)
                    .ok_or(ControlError::NoSuchService(*k))?;
                vec![&self.current.services()[i]]
            }
            None => self.current.services().iter().collect(),
        };
        for s in chosen {
            if let Some(t) = self.svc_stats.get_mut(&s.slot) {
                t.zero(counters(self.dp.service_traffic(s.slot)));
            }
            for r in &s.reals {
                if let Some(t) = self.dest_stats.get_mut(&r.dest.slot) {
                    t.zero(counters(self.dp.dest_traffic(r.dest.slot)));
                }
            }
        }
        self.publish();
        Ok(())
    }

    fn fail(&mut self, why: String) -> ControlError {
        self.failed = Some(why.clone());
        ControlError::Fatal(why)
    }

    /// Executes one change: an edit, a batch of them (all or nothing), `-Z`, `--set`.
    /// Questions are the read model's and diagnostics' (`super::route`); asked here,
    /// they are refused.
    pub fn execute(&mut self, req: &Request) -> Result<Reply, ControlError> {
        match req {
            Request::Zero { service } => return self.zero(service.as_ref()).map(|()| Reply::Done),
            Request::SetTimeouts(t) => {
                let t = self.merged_timeouts(self.timeouts, t);
                self.set_timeouts(t);
                return Ok(Reply::Done);
            }
            Request::StartDaemon { role, settings } => {
                return self.start_daemon(*role, settings).map(|()| Reply::Done)
            }
            Request::StopDaemon { role } => return self.stop_daemon(*role).map(|()| Reply::Done),
            Request::List { .. }
            | Request::GetTimeouts
            | Request::GetDaemon
            | Request::Connections
            | Request::Check
            | Request::Explain { .. }
            | Request::Drain { .. } => {
                return Err(ControlError::BadRequest(format!(
                    "{} is not a change of the configuration",
                    req.name()
                )))
            }
            _ => {}
        }
        let mut next = self.config.clone();
        let mut timeouts = None;
        let mut follow = self.follow.clone();
        let mut following = None;
        if let Request::Follow { vips } = req {
            follow = vips.iter().copied().collect();
        } else if let Request::SyncDaemon { .. } = req {
            following = Some(daemon_of(req)?);
        } else if let Request::Batch(reqs) = req {
            // A clear forgets the VIPs that follow VRRP too (a reload gives them again).
            for (i, r) in reqs.iter().enumerate() {
                let step = match r {
                    Request::SetTimeouts(t) => {
                        timeouts = Some(self.merged_timeouts(timeouts.unwrap_or(self.timeouts), t));
                        Ok(())
                    }
                    Request::Follow { vips } => {
                        follow = vips.iter().copied().collect();
                        Ok(())
                    }
                    Request::SyncDaemon { .. } => daemon_of(r).map(|f| following = Some(f)),
                    Request::Clear => {
                        follow.clear();
                        self.edit(&mut next, r)
                    }
                    _ => self.edit(&mut next, r),
                };
                step.map_err(|e| ControlError::InBatch {
                    index: i + 1,
                    error: Box::new(e),
                })?;
            }
        } else {
            if matches!(req, Request::Clear) {
                follow.clear();
            }
            self.edit(&mut next, req)?;
        }
        self.check_new_vips(&next, &follow)
            .map_err(|e| match (req, &e) {
                // In a batch, the error belongs to the request that added the VIP.
                (Request::Batch(reqs), ControlError::BadVip { vip, .. }) => reqs
                    .iter()
                    .position(|r| matches!(r, Request::AddService { key, .. } if key.vip == *vip))
                    .map_or(e.clone(), |i| ControlError::InBatch {
                        index: i + 1,
                        error: Box::new(e.clone()),
                    }),
                _ => e,
            })?;
        let follow_before = std::mem::replace(&mut self.follow, follow);
        if let Err(e) = self.apply(next, self.health.clone()) {
            self.follow = follow_before;
            return Err(e);
        }
        // A VIP on this host's interface because VRRP put it there is not its address.
        let follow = (&self.follow_fixed, &self.follow);
        self.local
            .retain(|l| !follow.0.contains(&l.addr) && !follow.1.contains(&l.addr));
        if let Some(t) = timeouts {
            self.set_timeouts(t);
        }
        if let Some(f) = following {
            self.follow_daemon(f);
        }
        Ok(Reply::Done)
    }

    fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
        self.dp.set_timeouts(t);
        self.publish();
    }

    /// ipvsadm's `--set`: a 0 leaves that timeout as it is.
    fn merged_timeouts(&self, base: Timeouts, t: &TimeoutSet) -> Timeouts {
        let secs = |v: u32, state: State| {
            if v == 0 {
                base.get(state)
            } else {
                Duration::from_secs(u64::from(v))
            }
        };
        base.with_ipvsadm_set(
            secs(t.tcp, State::Established),
            secs(t.tcpfin, State::FinWait),
            secs(t.udp, State::Udp),
        )
    }

    /// Refuses a VIP that `next` would start answering ARP/NDP for and advertising while a
    /// host holds it: the director's own address, a real server's (of any service), or an
    /// address the neighbour table knows at another host's MAC. The director would take
    /// its traffic, and the LAN's neighbour caches would keep pointing at the director.
    /// (A real server that answers for the VIP by mistake is not its owner: the watch and
    /// `check` name it.)
    fn check_new_vips(
        &self,
        next: &OperatorConfig,
        next_follow: &BTreeSet<IpAddr>,
    ) -> Result<(), ControlError> {
        let served: HashSet<IpAddr> = self.config.services.iter().map(|s| s.key.vip).collect();
        let reals: HashSet<IpAddr> = next
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .chain(next.sorry.values().copied())
            .collect();
        let real_macs: HashSet<Mac> = reals
            .iter()
            .filter_map(|a| self.lan.get(a))
            .copied()
            .collect();
        for vip in next.services.iter().map(|s| s.key.vip) {
            // keepalived's VRRP puts a VIP that follows it on the master's interface, and
            // the backup's neighbour table may have it at the master: both are expected.
            if served.contains(&vip) || self.follows(&vip) || next_follow.contains(&vip) {
                continue;
            }
            let bad = |why: String| Err(ControlError::BadVip { vip, why });
            if self.local.iter().any(|l| l.addr == vip) {
                return bad(
                    "it is the director's own address: a VIP must be an address of its own, which no host holds".into(),
                );
            }
            if reals.contains(&vip) {
                return bad("it is a real server's address: a VIP must be an address of its own, which the real servers hold on lo".into());
            }
            match self.lan.get(&vip) {
                Some(&mac)
                    if mac != self.director_mac
                        && Some(mac) != self.servers_mac
                        && !real_macs.contains(&mac) =>
                {
                    return bad(format!(
                        "a host on the LAN holds it (the neighbour table has it at {}): a VIP must be an address no host holds; if that host is giving the VIP up (a director being replaced), remove it there first, then flush its entry here (ip neigh del {vip} dev IFACE)",
                        format_mac(&mac)
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `addr` can be a real server of `key` reached by `method`.
    /// `next` is the configuration being built (a batch may add VIPs before this).
    fn check_real(
        &self,
        next: &[ServiceSpec],
        key: &ServiceKey,
        addr: IpAddr,
        method: Method,
    ) -> Result<(), ControlError> {
        let bad = |why: String| Err(ControlError::BadReal { addr, why });
        if addr == key.vip || next.iter().any(|s| s.key.vip == addr) {
            return bad("it is a virtual IP: direct routing forwards to another host that holds the VIP on its loopback".into());
        }
        if self.local.iter().any(|l| l.addr == addr) {
            return bad("it is the director's own address".into());
        }
        // A tunnel reaches real servers anywhere the kernel has a route to.
        let routed = matches!(method, Method::Tunnel(_));
        if !routed && !self.local.is_empty() && !self.local.iter().any(|l| l.contains(addr)) {
            let nets: Vec<String> = self
                .local
                .iter()
                .map(|l| format!("{}/{}", l.addr, l.prefix_len))
                .collect();
            return bad(format!(
                "it is not on the director's subnet ({}): direct routing reaches real servers on the same LAN only",
                nets.join(", ")
            ));
        }
        Ok(())
    }

    /// Applies one change to `next` (a copy of the configuration).
    fn edit(&self, next: &mut OperatorConfig, req: &Request) -> Result<(), ControlError> {
        let find = |next: &OperatorConfig, key: &ServiceKey| {
            next.services
                .iter()
                .position(|s| s.key == *key)
                .ok_or(ControlError::NoSuchService(*key))
        };
        let no_real = |key: &ServiceKey, addr: &IpAddr| ControlError::NoSuchReal {
            service: *key,
            addr: *addr,
        };
        match req {
            Request::Clear => *next = OperatorConfig::default(),
            Request::AddService {
                key,
                scheduler,
                persistence,
                sorry,
                flags,
                quorum,
            }
            | Request::EditService {
                key,
                scheduler,
                persistence,
                sorry,
                flags,
                quorum,
            } => {
                let i = if matches!(req, Request::AddService { .. }) {
                    if find(next, key).is_ok() {
                        return Err(ControlError::ServiceExists(*key));
                    }
                    next.services.push(ServiceSpec::new(*key, *scheduler));
                    next.services.len() - 1
                } else {
                    find(next, key)?
                };
                next.services[i].scheduler = *scheduler;
                next.services[i].persistence = *persistence;
                next.services[i].flags = *flags;
                for script in [&quorum.up, &quorum.down].into_iter().flatten() {
                    runnable(script)
                        .map_err(|why| ControlError::BadQuorum { service: *key, why })?;
                }
                if quorum.is_default() {
                    next.quorum.remove(key);
                } else {
                    next.quorum.insert(*key, quorum.clone());
                }
                match sorry {
                    Some(a) => {
                        self.check_real(&next.services, key, *a, Method::Route)?;
                        next.sorry.insert(*key, *a);
                    }
                    None => {
                        next.sorry.remove(key);
                    }
                }
            }
            Request::DeleteService { key } => {
                let i = find(next, key)?;
                next.services.remove(i);
                next.sorry.remove(key);
                next.quorum.remove(key);
                next.checks.retain(|(k, _), _| k != key);
            }
            Request::AddReal {
                key,
                addr,
                port,
                method,
                weight,
                check,
            } => {
                let i = find(next, key)?;
                if next.services[i].reals.iter().any(|r| r.addr == *addr) {
                    return Err(ControlError::RealExists {
                        service: *key,
                        addr: *addr,
                    });
                }
                self.check_real(&next.services, key, *addr, *method)?;
                next.services[i].reals.push(RealSpec {
                    addr: *addr,
                    port: *port,
                    method: *method,
                    weight: *weight,
                    mac: None,
                });
                if let Some(c) = check {
                    check_scripts(c).map_err(|why| ControlError::BadReal { addr: *addr, why })?;
                    next.checks.insert((*key, *addr), c.clone());
                }
            }
            Request::EditReal {
                key,
                addr,
                port,
                method,
                weight,
                check,
            } => {
                let i = find(next, key)?;
                let r = next.services[i]
                    .reals
                    .iter_mut()
                    .find(|r| r.addr == *addr)
                    .ok_or_else(|| no_real(key, addr))?;
                r.weight = *weight;
                r.port = *port;
                r.method = *method;
                match check {
                    CheckEdit::Keep => {}
                    CheckEdit::Set(c) => {
                        check_scripts(c)
                            .map_err(|why| ControlError::BadReal { addr: *addr, why })?;
                        next.checks.insert((*key, *addr), (**c).clone());
                    }
                    CheckEdit::Remove => {
                        next.checks.remove(&(*key, *addr));
                    }
                }
            }
            Request::DeleteReal { key, addr } => {
                let i = find(next, key)?;
                let reals = &mut next.services[i].reals;
                let before = reals.len();
                reals.retain(|r| r.addr != *addr);
                if reals.len() == before {
                    return Err(no_real(key, addr));
                }
                next.checks.remove(&(*key, *addr));
            }
            Request::List { .. }
            | Request::GetTimeouts
            | Request::GetDaemon
            | Request::Zero { .. }
            | Request::Connections
            | Request::Check
            | Request::Explain { .. }
            | Request::Drain { .. }
            | Request::SetTimeouts(_)
            | Request::Follow { .. }
            | Request::SyncDaemon { .. }
            | Request::StartDaemon { .. }
            | Request::StopDaemon { .. }
            | Request::Batch(_) => {
                return Err(ControlError::NotInBatch(req.name().to_string()));
            }
        }
        Ok(())
    }
}

/// Whether `script` can run: its user exists, and keepalived's script security passes.
fn runnable(script: &Script) -> Result<(), String> {
    let (uid, _) = crate::health::scripts::ids(script.user.as_deref())?;
    crate::health::scripts::secure(&script.command, uid)
}

/// Whether the programs and scripts of check `c` can run.
fn check_scripts(c: &CheckSpec) -> Result<(), String> {
    for p in c.probes() {
        if let crate::health::Probe::Misc(m) = p {
            runnable(&Script {
                command: m.command.clone(),
                user: m.user.clone(),
            })?;
        }
    }
    for s in [&c.notify_up, &c.notify_down].into_iter().flatten() {
        runnable(s)?;
    }
    Ok(())
}

/// Seconds since the Unix epoch (when a check result or a transition came).
fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// keepalived's `lvs_sync_daemon`, checked on this host (its interface and address)
/// before anything of its batch is applied.
fn daemon_of(r: &Request) -> Result<daemon::Following, ControlError> {
    let Request::SyncDaemon {
        settings,
        instance,
        vips,
    } = r
    else {
        return Err(ControlError::BadRequest(format!(
            "{} is not lvs_sync_daemon",
            r.name()
        )));
    };
    daemon::resolve(settings)?;
    Ok(daemon::Following {
        settings: settings.clone(),
        instance: instance.clone(),
        vips: vips.iter().copied().collect(),
    })
}

mod daemon;
#[cfg(test)]
mod tests;
