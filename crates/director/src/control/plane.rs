//! The control plane: the wanted configuration, requests applied to it, and how a change
//! reaches the dataplane all or nothing.
//!
//! Applying a change: compile a snapshot (slots from the director's one [`SlotBook`]),
//! install it on every worker, then point the XDP program at the new services, then
//! announce new VIPs. If the XDP maps cannot be updated, the workers get the previous
//! snapshot back and the XDP maps the previous services: the change is rolled back
//! everywhere and the client told so. If a worker does not take a snapshot (it died or
//! hangs), the control plane can no longer know what every worker runs: it marks itself
//! failed, answers every later change with that error, and the director stops.
//! Generations only move forward in the book, so even a snapshot that some workers ran
//! and that was then abandoned never makes a connection reach another real server.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use std::net::SocketAddr;
use std::time::Duration;

use xdpvs_dataplane::engine::{Explained, Why};
use xdpvs_dataplane::stats::TrafficTotals;
use xdpvs_dataplane::{Config, Draining, Limits, Options, Services, SlotBook};
use xdpvs_sched::conn::{DestRef, Listed};
use xdpvs_sched::tcp::{State, Timeouts};
use xdpvs_sched::{Load, Mac, RealSpec, SchedKind, ServiceKey, ServiceSpec};

use super::check::{self, CheckReport, Heard};
use super::proto::{
    CheckEdit, CheckSpec, ConnRow, ControlError, Counters, Explanation, HealthRow, OnFailure,
    RealRow, Reason, Reply, Request, SchedReal, ServiceRow, Table, TimeoutSet, WorkerAnswer,
    CONN_ROWS_PER_MESSAGE,
};
use super::stats::Tracked;
use crate::health::{Health, Outcome, Target};

/// How long `xdpvs check` listens for the answers to its probes.
/// How long `xdpvs check` listens for the answers to its probes, and again after sending
/// the unanswered ones a second time.
const CHECK_LISTEN: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(700)];

/// Why the dataplane did not take a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataplaneError {
    /// A worker thread is gone.
    #[error("worker {0} is gone")]
    WorkerGone(usize),
    /// A worker did not acknowledge a snapshot in time.
    #[error("worker {worker} did not take the new configuration within {seconds} s")]
    InstallTimeout {
        /// Which worker.
        worker: usize,
        /// How long it was given.
        seconds: u64,
    },
    /// The XDP program's maps could not be updated.
    #[error("updating the XDP program's maps failed: {0}")]
    Steer(String),
    /// A worker did not answer a listing request in time.
    #[error("worker {0} did not answer the connection listing in time")]
    ListTimeout(usize),
    /// `xdpvs check` could not listen for the answers to its probes.
    #[error("{0}")]
    Probe(String),
}

/// Where configuration goes: the workers and the XDP program (or a test double).
pub trait Dataplane {
    /// Hands a new snapshot to every worker and waits until all run with it.
    fn install(&mut self, services: &Services) -> Result<(), DataplaneError>;
    /// Makes the XDP program steer exactly these services.
    fn steer(&mut self, keys: &[ServiceKey]) -> Result<(), DataplaneError>;
    /// Announces a VIP (gratuitous ARP).
    fn announce(&mut self, vip: IpAddr);
    /// ActiveConn/InActConn of a real server, summed over workers.
    fn load(&self, dest: DestRef) -> Load;
    /// Connection-table capacity over all workers (ipvsadm's "size").
    fn capacity(&self) -> usize;
    /// Applies idle timeouts on every worker (from their next batch on).
    fn set_timeouts(&mut self, timeouts: Timeouts);
    /// Persistence templates pointing at a real server, summed over workers.
    fn persistent(&self, dest: DestRef) -> u64;
    /// The counters of a service slot, summed over workers.
    fn service_traffic(&self, slot: u32) -> TrafficTotals;
    /// The counters of a real-server slot, summed over workers.
    fn dest_traffic(&self, slot: u32) -> TrafficTotals;
    /// Hands every worker's connection-table entries to `sink`, a piece at a time,
    /// without stopping any worker; stops early when `sink` returns false.
    fn list_connections(
        &mut self,
        sink: &mut dyn FnMut(&[Listed]) -> bool,
    ) -> Result<(), DataplaneError>;
    /// Sends `frames` out of the interface and gathers for `listen` what comes back
    /// (`xdpvs check`): TCP and ICMP packets to the director's own addresses, and the
    /// hosts that claimed a VIP meanwhile. With `listen` zero, only sends.
    fn probe(&mut self, frames: &[Vec<u8>], listen: Duration) -> Result<Heard, DataplaneError>;
    /// Each worker's answer to where `client`'s flow to `key` goes, from its own tables
    /// (`xdpvs explain`); `None` from a worker without the service.
    fn explain(
        &mut self,
        key: &ServiceKey,
        client: SocketAddr,
    ) -> Result<Vec<Option<Explained>>, DataplaneError>;
}

/// A real server removed from the configuration whose connections still reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DrainingReal {
    /// Its address (its MAC keeps being learnt).
    addr: IpAddr,
    /// The slot and generation its connections carry.
    dest: DestRef,
    /// Its port (the service's).
    port: u16,
}

/// What `--stats` counts, from the dataplane's counters.
fn counters(t: TrafficTotals) -> Counters {
    Counters {
        conns: t.conns,
        inpkts: t.packets,
        outpkts: 0,
        inbytes: t.bytes,
        outbytes: 0,
    }
}

/// An address of the director's interface with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalNet {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

impl LocalNet {
    /// Whether `a` is on this subnet.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (a, self.addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = xdpvs_sched::model::prefix_mask(self.prefix_len);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = match self.prefix_len {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p.min(128))),
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// The configuration as the operator gave it: services with their real servers and
/// weights, health checks, sorry servers. What the dataplane runs is derived from it and
/// from what the checks found ([`ControlPlane::effective`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Services and real servers, with the weights configured.
    pub services: Vec<ServiceSpec>,
    /// Health checks, by service and real server.
    pub checks: HashMap<(ServiceKey, IpAddr), CheckSpec>,
    /// Sorry servers, by service.
    pub sorry: HashMap<ServiceKey, IpAddr>,
}

/// What a real server's check has found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HealthRecord {
    state: Health,
    last: String,
    checks: u64,
    failures: u64,
    transitions: u64,
    latency: Duration,
}

impl HealthRecord {
    fn new() -> HealthRecord {
        HealthRecord {
            state: Health::Up,
            last: "not checked yet".into(),
            checks: 0,
            failures: 0,
            transitions: 0,
            latency: Duration::ZERO,
        }
    }
}

/// A health transition the control plane acted on.
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
}

/// What the dataplane runs for `wanted`, given what the checks found: real servers whose check failed get weight 0
/// or are left out (as their check says), and a service whose real servers are all
/// down or at weight 0 gets its sorry server with weight 1 (keepalived's quorum of 1).
fn effective(
    wanted: &Wanted,
    health: &HashMap<(ServiceKey, IpAddr), HealthRecord>,
) -> (Vec<ServiceSpec>, Vec<(ServiceKey, IpAddr)>) {
    let mut out_of_service = Vec::new();
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
                let down = health
                    .get(&(s.key, r.addr))
                    .is_some_and(|h| h.state == Health::Down);
                match (down, check.on_failure) {
                    (false, _) => true,
                    (true, OnFailure::Remove) if !keeps_places => false,
                    (true, _) => {
                        out_of_service.push((s.key, r.addr));
                        true
                    }
                }
            });
            if let Some(&sorry) = wanted.sorry.get(&s.key) {
                let quorum = s
                    .reals
                    .iter()
                    .any(|r| r.weight > 0 && !out_of_service.contains(&(s.key, r.addr)));
                if !quorum && !s.reals.iter().any(|r| r.addr == sorry) {
                    s.reals.push(RealSpec {
                        addr: sorry,
                        weight: 1,
                        mac: None,
                    });
                }
            }
            s
        })
        .collect();
    (services, out_of_service)
}

/// The health records for `wanted`'s checks: a check that stays as it is keeps its
/// record, a new or changed one starts afresh (up, as keepalived starts its checks).
fn next_health(
    now: &HashMap<(ServiceKey, IpAddr), HealthRecord>,
    old: &HashMap<(ServiceKey, IpAddr), CheckSpec>,
    new: &HashMap<(ServiceKey, IpAddr), CheckSpec>,
) -> HashMap<(ServiceKey, IpAddr), HealthRecord> {
    new.iter()
        .map(|(id, c)| {
            let kept = now.get(id).filter(|_| old.get(id) == Some(c));
            (*id, kept.cloned().unwrap_or_else(HealthRecord::new))
        })
        .collect()
}

/// The director's configuration state.
pub struct ControlPlane<D: Dataplane> {
    wanted: Wanted,
    health: HashMap<(ServiceKey, IpAddr), HealthRecord>,
    /// Changes applied so far.
    applied: u64,
    macs: HashMap<IpAddr, Mac>,
    director_mac: Mac,
    options: Options,
    limits: Limits,
    book: SlotBook,
    current: Services,
    failed: Option<String>,
    timeouts: Timeouts,
    local: Vec<LocalNet>,
    draining: Vec<DrainingReal>,
    /// Statistics of service slots and of real-server slots.
    svc_stats: HashMap<u32, Tracked>,
    dest_stats: HashMap<u32, Tracked>,
    dp: D,
}

impl<D: Dataplane> std::fmt::Debug for ControlPlane<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("services", &self.wanted.services.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<D: Dataplane> ControlPlane<D> {
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
        let mut book = SlotBook::new(&limits);
        let current = Services::build_with(&cfg, &limits, &mut book, None)?;
        dp.install(&current)
            .and_then(|()| dp.steer(&[]))
            .map_err(|e| ControlError::Fatal(e.to_string()))?;
        Ok(ControlPlane {
            wanted: Wanted::default(),
            health: HashMap::new(),
            applied: 0,
            macs: HashMap::new(),
            director_mac,
            options,
            limits,
            book,
            current,
            failed: None,
            timeouts: Timeouts::default(),
            local,
            draining: Vec::new(),
            svc_stats: HashMap::new(),
            dest_stats: HashMap::new(),
            dp,
        })
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

    /// Every real-server address of the configuration (sorry servers included), and of
    /// removed real servers still draining connections.
    pub fn real_addrs(&self) -> Vec<IpAddr> {
        let set: HashSet<IpAddr> = self
            .wanted
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .chain(self.wanted.sorry.values().copied())
            .chain(self.draining.iter().map(|d| d.addr))
            .collect();
        let mut v: Vec<_> = set.into_iter().collect();
        v.sort();
        v
    }

    /// Every VIP of the configuration, and those with a real server in service (weight
    /// above 0, its check passing, its MAC known; a sorry server in force counts): what
    /// `run --announce` guards and announces.
    pub fn vips(&self) -> crate::announce::Wanted {
        let (services, out_of_service) = effective(&self.wanted, &self.health);
        let mut w = crate::announce::Wanted::default();
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
        let mut changed = Vec::new();
        for a in self.real_addrs() {
            if let Some(&m) = seen.get(&a) {
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
        if let Err(e) = self.apply(self.wanted.clone()) {
            self.macs = before;
            return Err(e);
        }
        Ok(changed)
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
            .wanted
            .checks
            .iter()
            .map(|(&(service, addr), spec)| Target {
                service,
                addr,
                port: spec.port.unwrap_or(service.port),
                spec: spec.clone(),
                start: self
                    .health
                    .get(&(service, addr))
                    .map_or(Health::Up, |h| h.state),
            })
            .collect();
        v.sort_by_key(|t| {
            (
                t.service.proto.ip_number(),
                t.service.vip,
                t.service.port,
                t.addr,
            )
        });
        v
    }

    /// Takes one check result. A result that moves its real server up or down
    /// re-applies the configuration and is returned; a result for a check no longer
    /// configured is ignored.
    pub fn health_outcome(&mut self, o: &Outcome) -> Result<Option<Transition>, ControlError> {
        let id = (o.service, o.addr);
        let Some(on_failure) = self.wanted.checks.get(&id).map(|c| c.on_failure) else {
            return Ok(None);
        };
        let h = self.health.entry(id).or_insert_with(HealthRecord::new);
        h.checks += 1;
        h.failures += u64::from(!o.ok);
        h.last.clone_from(&o.detail);
        h.latency = o.latency;
        let Some(state) = o.changed.filter(|&s| s != h.state) else {
            return Ok(None);
        };
        h.state = state;
        h.transitions += 1;
        self.apply(self.wanted.clone())?;
        Ok(Some(Transition {
            service: o.service,
            addr: o.addr,
            state,
            detail: o.detail.clone(),
            on_failure,
        }))
    }

    /// Compiles and installs `wanted`, all or nothing (see the module's documentation).
    fn apply(&mut self, wanted: Wanted) -> Result<(), ControlError> {
        if let Some(why) = &self.failed {
            return Err(ControlError::Fatal(why.clone()));
        }
        let health = next_health(&self.health, &self.wanted.checks, &wanted.checks);
        let (services, out_of_service) = effective(&wanted, &health);
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
                    });
                }
            }
        }
        let mut cfg = Config::new(self.director_mac, with_macs, self.options);
        cfg.down = out_of_service;
        cfg.draining = draining
            .iter()
            .map(|d| Draining {
                dest: d.dest,
                mac: self.macs.get(&d.addr).copied(),
            })
            .collect();
        let checkpoint = self.book.checkpoint();
        let built = Services::build_with(&cfg, &self.limits, &mut self.book, Some(&self.current))?;
        // Workers first, then the XDP program: a newly steered service always meets a
        // worker that knows it.
        if let Err(e) = self.dp.install(&built) {
            return Err(self.fail(e.to_string()));
        }
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.key).collect();
        if let Err(e) = self.dp.steer(&keys) {
            // Back to the snapshot and services in force.
            let old_keys: Vec<ServiceKey> = self.current.services().iter().map(|s| s.key).collect();
            if let Err(e2) = self.dp.install(&self.current) {
                return Err(self.fail(format!("{e}, and rolling the workers back failed: {e2}")));
            }
            if let Err(e2) = self.dp.steer(&old_keys) {
                return Err(self.fail(format!("{e}, and restoring the XDP maps failed: {e2}")));
            }
            self.book.rollback(checkpoint);
            return Err(ControlError::RolledBack(e.to_string()));
        }
        let old_vips: HashSet<IpAddr> = self.current.all_vips().collect();
        for v in built.all_vips() {
            if !old_vips.contains(&v) {
                self.dp.announce(v);
            }
        }
        self.current = built;
        self.health = health;
        self.wanted = wanted;
        self.applied += 1;
        self.draining = draining;
        self.track();
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
        Ok(())
    }

    /// `-L -c`: hands the connection table to `sink` in messages of at most
    /// [`CONN_ROWS_PER_MESSAGE`] rows; stops early when `sink` returns false.
    pub fn connections(
        &mut self,
        sink: &mut dyn FnMut(Vec<ConnRow>) -> bool,
    ) -> Result<(), ControlError> {
        let mut dests: HashMap<DestRef, SocketAddr> = self
            .draining
            .iter()
            .map(|d| (d.dest, SocketAddr::new(d.addr, d.port)))
            .collect();
        for s in self.current.services() {
            for r in &s.reals {
                dests.insert(r.dest, SocketAddr::new(r.addr, s.key.port));
            }
        }
        let mut rows = Vec::with_capacity(CONN_ROWS_PER_MESSAGE);
        let mut open = true;
        let mut each = |piece: &[Listed]| {
            for l in piece {
                // A connection whose real server's slot went to another is dead: its
                // next packet drops it.
                let Some(&destination) = dests.get(&l.dest) else {
                    continue;
                };
                let k = l.key;
                rows.push(ConnRow {
                    proto: k.proto,
                    expires: l.expires_in.as_secs(),
                    state: l.state.name().to_string(),
                    source: SocketAddr::new(k.client, k.cport),
                    virtual_addr: SocketAddr::new(k.vip, k.vport),
                    destination,
                    template: l.template,
                });
                if rows.len() == CONN_ROWS_PER_MESSAGE {
                    open = sink(std::mem::replace(
                        &mut rows,
                        Vec::with_capacity(CONN_ROWS_PER_MESSAGE),
                    ));
                    if !open {
                        return false;
                    }
                }
            }
            true
        };
        self.dp
            .list_connections(&mut each)
            .map_err(|e| ControlError::Dataplane(e.to_string()))?;
        if open && !rows.is_empty() {
            sink(rows);
        }
        Ok(())
    }

    fn fail(&mut self, why: String) -> ControlError {
        self.failed = Some(why.clone());
        ControlError::Fatal(why)
    }

    /// Executes one request whose answer may come in pieces (`-L -c`): the pieces go to
    /// `piece` (false: the client is gone), then the final answer is returned.
    pub fn execute_pieced(
        &mut self,
        req: &Request,
        piece: &mut dyn FnMut(Reply) -> bool,
    ) -> Result<Reply, ControlError> {
        match req {
            Request::Connections => {
                self.connections(&mut |rows| piece(Reply::Connections(rows)))?;
                Ok(Reply::Done)
            }
            _ => self.execute(req),
        }
    }

    /// Where the director's probes come from: its MAC and its (global) address of each
    /// family.
    fn origin(&self) -> check::Origin {
        let global = |a: &IpAddr| match a {
            IpAddr::V4(_) => true,
            IpAddr::V6(v) => !v.is_unicast_link_local(),
        };
        check::Origin {
            mac: self.director_mac,
            v4: self.local.iter().find_map(|l| match l.addr {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }),
            v6: self
                .local
                .iter()
                .filter(|l| global(&l.addr))
                .find_map(|l| match l.addr {
                    IpAddr::V6(a) => Some(a),
                    IpAddr::V4(_) => None,
                }),
        }
    }

    /// Asks who has each VIP (an ARP request or a neighbour solicitation each), without
    /// waiting: a host that answers shows in the workers' conflict logs. The director
    /// does this every few seconds, so that a host that starts answering for a VIP is
    /// noticed even when no broadcast of its own reaches the director.
    pub fn ask_who_has_the_vips(&mut self) {
        let origin = self.origin();
        let mut vips: Vec<IpAddr> = self.wanted.services.iter().map(|s| s.key.vip).collect();
        vips.sort();
        vips.dedup();
        let frames: Vec<Vec<u8>> = vips
            .iter()
            .filter_map(|&v| check::who(v, &origin))
            .collect();
        if !frames.is_empty() {
            let _ = self.dp.probe(&frames, Duration::ZERO);
        }
    }

    /// `xdpvs check`: probes every VIP and every real server (see [`super::check`]); the
    /// probes' source ports start at `first_port`, their echo requests carry `echo_id`.
    pub fn check(&mut self, first_port: u16, echo_id: u16) -> Result<CheckReport, ControlError> {
        let mut targets = Vec::new();
        for s in &self.wanted.services {
            let sorry = self.wanted.sorry.get(&s.key).map(|&addr| (addr, true));
            for (addr, sorry) in s.reals.iter().map(|r| (r.addr, false)).chain(sorry) {
                targets.push(check::Target {
                    service: s.key,
                    addr,
                    mac: self.macs.get(&addr).copied(),
                    sorry,
                });
            }
        }
        let origin = self.origin();
        let plan = check::plan(targets, &origin, first_port, echo_id);
        let dp_error = |e: DataplaneError| ControlError::Dataplane(e.to_string());
        let first = self
            .dp
            .probe(&plan.frames(), CHECK_LISTEN[0])
            .map_err(dp_error)?;
        let again = check::unanswered(&plan, &first);
        let heard = match again.is_empty() {
            true => first,
            false => first.merged(self.dp.probe(&again, CHECK_LISTEN[1]).map_err(dp_error)?),
        };
        let resets = check::resets(&plan, &heard, &origin);
        if !resets.is_empty() {
            self.dp.probe(&resets, Duration::ZERO).map_err(dp_error)?;
        }
        Ok(check::report(&plan, &heard, &origin))
    }

    /// `xdpvs explain`: where `client`'s flow to `key` goes, and why, as each worker's
    /// own tables and scheduler say.
    pub fn explain(
        &mut self,
        key: &ServiceKey,
        client: SocketAddr,
    ) -> Result<Explanation, ControlError> {
        let spec = self
            .wanted
            .services
            .iter()
            .find(|s| s.key == *key)
            .ok_or(ControlError::NoSuchService(*key))?;
        if client.is_ipv4() != key.vip.is_ipv4() {
            return Err(ControlError::BadRequest(format!(
                "client {client} and service {key} are of different address families"
            )));
        }
        let (scheduler, persistence) = (spec.scheduler, spec.persistence);
        let answers = self
            .dp
            .explain(key, client)
            .map_err(|e| ControlError::Dataplane(e.to_string()))?;
        let mut workers = Vec::new();
        for (worker, e) in answers.into_iter().enumerate() {
            let Some(e) = e else { continue };
            let drained = e
                .dest
                .and_then(|d| self.draining.iter().find(|r| r.dest == d).map(|r| r.addr));
            let (reason, state, expires) = match e.why {
                Why::Connection { state, expires_in } => (
                    Reason::Connection,
                    Some(state.name().to_string()),
                    Some(expires_in.as_secs()),
                ),
                Why::Template { expires_in } => {
                    (Reason::Template, None, Some(expires_in.as_secs()))
                }
                Why::Scheduled { stale_template } => {
                    let reason = if stale_template.is_some() {
                        Reason::StaleTemplate
                    } else {
                        Reason::Scheduled
                    };
                    (reason, None, None)
                }
                Why::Stateless => (Reason::Stateless, None, None),
            };
            let reason = if e.dest.is_none() {
                Reason::NoRealServer
            } else {
                reason
            };
            workers.push(WorkerAnswer {
                worker,
                real: e.real.or(drained),
                draining: e.real.is_none() && drained.is_some(),
                reason,
                state,
                expires_in: expires,
                reals: e
                    .reals
                    .iter()
                    .map(|r| SchedReal {
                        addr: r.addr,
                        weight: r.weight,
                        resolved: r.mac.is_some(),
                        up: r.up,
                        active: u64::from(r.load.active),
                        inactive: u64::from(r.load.inactive),
                    })
                    .collect(),
            });
        }
        Ok(Explanation {
            service: *key,
            client,
            scheduler,
            persistence,
            workers,
        })
    }

    /// Executes one request.
    pub fn execute(&mut self, req: &Request) -> Result<Reply, ControlError> {
        match req {
            Request::Explain { key, client } => {
                return self.explain(key, *client).map(Reply::Explain);
            }
            Request::Check => {
                let r = getrandom::u32().unwrap_or(0);
                return self
                    .check(
                        check::FIRST_PORT + (r as u16) % check::PORTS,
                        (r >> 16) as u16,
                    )
                    .map(Reply::Check);
            }
            Request::List { service } => return self.table(service.as_ref()).map(Reply::Table),
            Request::GetTimeouts => return Ok(Reply::Timeouts(self.timeout_set())),
            Request::Zero { service } => return self.zero(service.as_ref()).map(|()| Reply::Done),
            Request::Connections => {
                // Answered in pieces: see `connections`; alone it lists nothing.
                return Ok(Reply::Done);
            }
            Request::SetTimeouts(t) => {
                let t = self.merged_timeouts(self.timeouts, t);
                self.timeouts = t;
                self.dp.set_timeouts(t);
                return Ok(Reply::Done);
            }
            _ => {}
        }
        let mut next = self.wanted.clone();
        let mut timeouts = None;
        if let Request::Batch(reqs) = req {
            for (i, r) in reqs.iter().enumerate() {
                let step = match r {
                    Request::SetTimeouts(t) => {
                        timeouts = Some(self.merged_timeouts(timeouts.unwrap_or(self.timeouts), t));
                        Ok(())
                    }
                    _ => self.edit(&mut next, r),
                };
                step.map_err(|e| ControlError::InBatch {
                    index: i + 1,
                    error: Box::new(e),
                })?;
            }
        } else {
            self.edit(&mut next, req)?;
        }
        self.apply(next)?;
        if let Some(t) = timeouts {
            self.timeouts = t;
            self.dp.set_timeouts(t);
        }
        Ok(Reply::Done)
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

    fn timeout_set(&self) -> TimeoutSet {
        let secs = |s: State| self.timeouts.get(s).as_secs() as u32;
        TimeoutSet {
            tcp: secs(State::Established),
            tcpfin: secs(State::FinWait),
            udp: secs(State::Udp),
        }
    }

    /// Whether `addr` can be a real server of `key` by direct routing.
    /// `next` is the configuration being built (a batch may add VIPs before this).
    fn check_real(
        &self,
        next: &[ServiceSpec],
        key: &ServiceKey,
        addr: IpAddr,
    ) -> Result<(), ControlError> {
        let bad = |why: String| Err(ControlError::BadReal { addr, why });
        if addr == key.vip || next.iter().any(|s| s.key.vip == addr) {
            return bad("it is a virtual IP: direct routing forwards to another host that holds the VIP on its loopback".into());
        }
        if self.local.iter().any(|l| l.addr == addr) {
            return bad("it is the director's own address".into());
        }
        if !self.local.is_empty() && !self.local.iter().any(|l| l.contains(addr)) {
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
    fn edit(&self, next: &mut Wanted, req: &Request) -> Result<(), ControlError> {
        let find = |next: &Wanted, key: &ServiceKey| {
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
            Request::Clear => *next = Wanted::default(),
            Request::AddService {
                key,
                scheduler,
                persistence,
                sorry,
            }
            | Request::EditService {
                key,
                scheduler,
                persistence,
                sorry,
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
                match sorry {
                    Some(a) => {
                        self.check_real(&next.services, key, *a)?;
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
                next.checks.retain(|(k, _), _| k != key);
            }
            Request::AddReal {
                key,
                addr,
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
                self.check_real(&next.services, key, *addr)?;
                next.services[i].reals.push(RealSpec {
                    addr: *addr,
                    weight: *weight,
                    mac: None,
                });
                if let Some(c) = check {
                    next.checks.insert((*key, *addr), c.clone());
                }
            }
            Request::EditReal {
                key,
                addr,
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
                match check {
                    CheckEdit::Keep => {}
                    CheckEdit::Set(c) => {
                        next.checks.insert((*key, *addr), c.clone());
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
            | Request::Zero { .. }
            | Request::Connections
            | Request::Check
            | Request::Explain { .. }
            | Request::Drain { .. }
            | Request::SetTimeouts(_)
            | Request::Batch(_) => {
                return Err(ControlError::NotInBatch(format!("{req:?}")));
            }
        }
        Ok(())
    }

    /// The table as `-L` shows it (services sorted by protocol, VIP and port, real
    /// servers by address, as ipvsadm sorts them), or only `service`.
    pub fn table(&self, service: Option<&ServiceKey>) -> Result<Table, ControlError> {
        let all = &self.wanted.services;
        let mut chosen: Vec<&ServiceSpec> = match service {
            Some(k) => vec![all
                .iter()
                .find(|s| s.key == *k)
                .ok_or(ControlError::NoSuchService(*k))?],
            None => all.iter().collect(),
        };
        chosen.sort_by_key(|s| (s.key.proto.ip_number(), s.key.vip, s.key.port));
        let services = chosen.into_iter().map(|s| self.service_row(s)).collect();
        Ok(Table {
            size: self.dp.capacity(),
            services,
        })
    }

    /// One service of the listing.
    fn service_row(&self, s: &ServiceSpec) -> ServiceRow {
        let compiled = self
            .current
            .find(&s.key)
            .map(|i| &self.current.services()[i]);
        let row = |addr: IpAddr, weight: u16, sorry: bool| {
            let dest = compiled
                .and_then(|c| c.reals.iter().find(|cr| cr.addr == addr))
                .map(|cr| cr.dest);
            let load = dest.map_or(Load::default(), |d| self.dp.load(d));
            let (stats, rates) = dest
                .and_then(|d| {
                    let t = self.dest_stats.get(&d.slot).filter(|t| t.gen == d.gen)?;
                    Some((
                        t.counters(counters(self.dp.dest_traffic(d.slot))),
                        t.rates(),
                    ))
                })
                .unwrap_or_default();
            let id = (s.key, addr);
            RealRow {
                addr,
                weight,
                active: u64::from(load.active),
                inactive: u64::from(load.inactive),
                persistent: dest.map_or(0, |d| self.dp.persistent(d)),
                resolved: self.macs.contains_key(&addr),
                check: if sorry {
                    None
                } else {
                    self.wanted.checks.get(&id).cloned()
                },
                health: if sorry {
                    None
                } else {
                    self.health.get(&id).map(|h| HealthRow {
                        up: h.state == Health::Up,
                        last: h.last.clone(),
                        checks: h.checks,
                        failures: h.failures,
                        transitions: h.transitions,
                        latency_us: h.latency.as_micros() as u64,
                    })
                },
                sorry,
                stats,
                rates,
            }
        };
        let mut reals: Vec<RealRow> = s
            .reals
            .iter()
            .map(|r| row(r.addr, r.weight, false))
            .collect();
        let sorry = self.wanted.sorry.get(&s.key).copied();
        if let Some(a) = sorry {
            let standing_in = !s.reals.iter().any(|r| r.addr == a)
                && compiled.is_some_and(|c| c.reals.iter().any(|cr| cr.addr == a));
            if standing_in {
                reals.push(row(a, 1, true));
            }
        }
        reals.sort_by_key(|r| r.addr);
        let (stats, rates) = compiled
            .and_then(|c| {
                let t = self.svc_stats.get(&c.slot).filter(|t| t.gen == c.gen)?;
                Some((
                    t.counters(counters(self.dp.service_traffic(c.slot))),
                    t.rates(),
                ))
            })
            .unwrap_or_default();
        ServiceRow {
            key: s.key,
            scheduler: s.scheduler,
            persistence: s.persistence,
            sorry,
            reals,
            stats,
            rates,
        }
    }
}

#[cfg(test)]
mod tests;
