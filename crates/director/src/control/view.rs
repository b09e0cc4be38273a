//! What the write side publishes for every other part to read: an immutable [`View`] of
//! the configuration in force, swapped whole after every change ([`Published`]). A reader
//! takes an `Arc` of the latest view and works from it for as long as it likes; the write
//! side never waits for a reader (it only swaps a pointer under a lock held for a clone
//! of an `Arc`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use xdpvs_dataplane::{Options, Services};
use xdpvs_sched::conn::DestRef;
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Mac, Method, RealSpec, ServiceKey, ServiceSpec};

use super::proto::CheckSpec;
use super::stats::Tracked;
use crate::health::Health;
use crate::iface::LocalNet;

/// The latest value of something one thread writes and others read, swapped whole.
#[derive(Debug)]
pub struct Published<T>(RwLock<Arc<T>>);

impl<T> Published<T> {
    /// Publishes `v` first.
    pub fn new(v: T) -> Published<T> {
        Published(RwLock::new(Arc::new(v)))
    }

    /// The latest value.
    pub fn get(&self) -> Arc<T> {
        // A panic while the pointer was being swapped leaves a valid `Arc` behind.
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the value; readers holding the old one keep it until they drop it.
    pub fn set(&self, v: T) {
        let new = Arc::new(v);
        let old = std::mem::replace(&mut *self.0.write().unwrap_or_else(|p| p.into_inner()), new);
        // The old view is freed here, outside the lock, if no reader holds it.
        drop(old);
    }
}

/// The configuration as the operator gave it: services with their real servers and
/// weights, health checks, sorry servers. What the dataplane runs is derived from it and
/// from what the checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Services and real servers, with the weights configured.
    pub services: Vec<ServiceSpec>,
    /// Health checks, by service and real server.
    pub checks: HashMap<(ServiceKey, IpAddr), CheckSpec>,
    /// Sorry servers, by service.
    pub sorry: HashMap<ServiceKey, IpAddr>,
    /// Quorums other than keepalived's default, by service.
    pub quorum: HashMap<ServiceKey, crate::health::Quorum>,
}

/// What a real server's check has found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRecord {
    /// Up or down, as enforced by the configuration in force.
    pub state: Health,
    /// The last result's detail.
    pub last: String,
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Times it moved up or down.
    pub transitions: u64,
    /// How long the last check took.
    pub latency: Duration,
    /// The weight its dynamic checkers asked for last.
    pub dynamic: Option<crate::health::Dynamic>,
    /// When the last result came, in whole seconds since the Unix epoch (0: none yet).
    pub checked_at: u64,
    /// When it last went down or up, in whole seconds since the Unix epoch (0: never).
    pub changed_at: u64,
}

impl HealthRecord {
    /// A check not run yet: up, as keepalived starts its checks.
    pub fn new() -> HealthRecord {
        HealthRecord {
            state: Health::Up,
            last: "not checked yet".into(),
            checks: 0,
            failures: 0,
            transitions: 0,
            latency: Duration::ZERO,
            dynamic: None,
            checked_at: 0,
            changed_at: 0,
        }
    }
}

impl Default for HealthRecord {
    fn default() -> Self {
        HealthRecord::new()
    }
}

/// A real server removed from the configuration whose connections still reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainingReal {
    /// Its address (its MAC keeps being learnt).
    pub addr: IpAddr,
    /// The slot and generation its connections carry.
    pub dest: DestRef,
    /// Its port (the service's).
    pub port: u16,
    /// Its service's VIP.
    pub vip: IpAddr,
    /// How its connections' packets reach it.
    pub fwd: xdpvs_dataplane::Fwd,
}

/// The director's configuration in force and what it knows of it, as of one moment.
#[derive(Debug, Clone)]
pub struct View {
    /// The operator's configuration.
    pub config: OperatorConfig,
    /// What each check found, by service and real server.
    pub health: HashMap<(ServiceKey, IpAddr), HealthRecord>,
    /// Real servers' MACs.
    pub macs: HashMap<IpAddr, Mac>,
    /// The snapshot every worker runs.
    pub current: Arc<Services>,
    /// Removed real servers still holding connections.
    pub draining: Vec<DrainingReal>,
    /// Statistics of service slots and of real-server slots.
    pub svc_stats: HashMap<u32, Tracked>,
    /// See `svc_stats`.
    pub dest_stats: HashMap<u32, Tracked>,
    /// Idle timeouts in force.
    pub timeouts: Timeouts,
    /// Changes applied so far.
    pub applied: u64,
    /// The director's MAC.
    pub director_mac: Mac,
    /// The director's addresses on its interface.
    pub local: Vec<LocalNet>,
    /// The engine's options.
    pub options: Options,
    /// When the director started, in seconds since the Unix epoch.
    pub started: f64,
    /// Which services hold their quorum (absent: held).
    pub quorum_held: HashMap<ServiceKey, bool>,
    /// The VIPs that follow VRRP, and whether this director serves each now.
    pub vrrp: Vec<(IpAddr, bool)>,
    /// The sync daemon, if one runs.
    pub sync: Option<SyncInfo>,
}

/// The sync daemon as the read side shows it: its roles that run, its counters.
#[derive(Debug, Clone)]
pub struct SyncInfo {
    /// The roles that run, with their settings.
    pub roles: Vec<(crate::sync::Role, crate::sync::SyncConfig)>,
    /// The VRRP instance the roles follow (keepalived's `lvs_sync_daemon`).
    pub follows: Option<String>,
    /// Its counters, shared with its threads.
    pub stats: std::sync::Arc<crate::sync::SyncStats>,
}

impl SyncInfo {
    /// Messages sent and received, connections sent and received, messages malformed,
    /// of another sync id, connections unknown here.
    pub fn counts(&self) -> [u64; 7] {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        [
            s.sent.load(Relaxed),
            s.received.load(Relaxed),
            s.sent_conns.load(Relaxed),
            s.received_conns.load(Relaxed),
            s.malformed.load(Relaxed),
            s.foreign.load(Relaxed),
            s.unknown.load(Relaxed),
        ]
    }

    /// `-L --daemon`'s rows: one per role that runs.
    pub fn rows(&self) -> Vec<super::proto::DaemonRow> {
        self.roles
            .iter()
            .map(|(role, c)| super::proto::DaemonRow {
                role: *role,
                iface: c.iface.clone(),
                syncid: c.syncid,
                maxlen: c.maxlen,
                group: c.group,
                port: c.port,
                ttl: c.ttl,
                follows: self.follows.clone(),
                counts: self.counts(),
            })
            .collect()
    }
}

impl View {
    /// The compiled service of `key` in the snapshot in force.
    pub fn compiled(&self, key: &ServiceKey) -> Option<&xdpvs_dataplane::config::Service> {
        self.current.find(key).map(|i| &self.current.services()[i])
    }
}

/// The sorry server `addr` of service `s` as the real server that stands in (weight 1,
/// on the service's port, reached as the service's first real server is: a NAT service's
/// sorry server is a NAT real server too).
pub fn sorry_real(s: &ServiceSpec, addr: IpAddr) -> RealSpec {
    RealSpec {
        addr,
        port: 0,
        method: s.reals.first().map_or(Method::Route, |r| r.method),
        weight: 1,
        mac: None,
    }
}
