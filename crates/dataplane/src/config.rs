//! The configuration a worker runs with, and its compiled form.
//!
//! The control plane describes what it wants in a [`Config`]; [`Services::build`] checks
//! it and compiles it into a [`Services`] snapshot (lookup maps, scheduler tables, a
//! real-server table indexed by stable slots). A worker swaps snapshots whole, between
//! two batches ([`crate::Tables::install`]), so a change is atomic from the packet's
//! point of view.
//!
//! Real servers keep their slot ([`DestRef`]) across rebuilds, so existing connections
//! keep reaching them; a slot handed to a different real server gets a new generation,
//! so connections of the old one can never reach the new one.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpvs_sched::conn::{ConnTable, DestRef, Loads};

pub use crate::reuse::ConnReuseMode;
use xdpvs_sched::{
    AnyScheduler, ConfigError, DestView, Load, Mac, Method, Persistence, Protocol, RealSpec,
    ServiceKey, ServiceSpec, Tunnel,
};

/// Behaviour switches, named after the IPVS sysctls they mirror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Schedule TCP segments without SYN when no connection exists (IPVS `sloppy_tcp`),
    /// e.g. to pick up connections after a restart or failover.
    pub sloppy_tcp: bool,
    /// A persistence template whose real server became quiescent (weight 0) is dropped
    /// and the client rescheduled (IPVS `expire_quiescent_template`). Off by default, as
    /// in IPVS: persistent clients stay on a quiescent server.
    pub expire_quiescent_template: bool,
    /// A connection whose real server was removed is expired at its next packet, and a
    /// TCP client gets a reset from the VIP so that it fails fast (IPVS
    /// `expire_nodest_conn`, plus the reset). Off by default: such connections keep
    /// going to the removed real server while its MAC is known, so a planned removal
    /// never breaks a request.
    pub expire_nodest_conn: bool,
    /// What a SYN that finds an entry of an earlier connection on its ports does (IPVS
    /// `conn_reuse_mode`; see [`ConnReuseMode`]).
    pub conn_reuse_mode: ConnReuseMode,
    /// The VIPs are routed to the director's own address (`run --announce`): it does not
    /// answer ARP or neighbour solicitations for them (they are dropped, as
    /// `vip_routed`), and another host that claims one is still a conflict.
    pub vips_routed: bool,
}

/// A real server removed from the configuration whose connections may still be alive:
/// they keep reaching it at `mac` (see [`Options::expire_nodest_conn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draining {
    /// The slot and generation it had.
    pub dest: DestRef,
    /// Its MAC, if still known.
    pub mac: Option<Mac>,
    /// How its connections' packets reach it.
    pub fwd: Fwd,
}

/// How the engine rewrites a packet for a real server: what its forwarding method
/// ([`Method`]) needs to know of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fwd {
    /// Direct routing: the Ethernet addresses only.
    #[default]
    Route,
    /// NAT: the destination address and port become the real server's; its replies are
    /// rewritten back from the service's VIP and port.
    Masq {
        /// The real server's address.
        addr: IpAddr,
        /// The port it serves on.
        port: u16,
        /// The service's VIP.
        vip: IpAddr,
        /// The service's port.
        vport: u16,
    },
    /// Tunnelling: the packet is encapsulated from `src` to the real server's address.
    Tunnel {
        /// The real server's address: the outer destination.
        addr: IpAddr,
        /// The director's address of the same family: the outer source.
        src: IpAddr,
        /// The encapsulation.
        tun: Tunnel,
        /// The MTU of the path to the real server: a packet that would exceed it once
        /// encapsulated is answered with "fragmentation needed" (DF or IPv6).
        mtu: u16,
    },
}

impl Fwd {
    /// The port the real server is reached on, for a service on `service_port`.
    pub fn port(&self, service_port: u16) -> u16 {
        match *self {
            Fwd::Masq { port, .. } => port,
            Fwd::Route | Fwd::Tunnel { .. } => service_port,
        }
    }

    /// What real server `r` of service `key` needs, on a director whose own addresses
    /// are `own` (the first of the real server's family that is neither loopback nor
    /// link-local is a tunnel's source) and whose path MTU is `mtu`.
    pub fn of(
        key: &ServiceKey,
        r: &RealSpec,
        own: &[IpAddr],
        mtu: u16,
    ) -> Result<Fwd, ConfigError> {
        Ok(match r.method {
            Method::Route => Fwd::Route,
            Method::Tunnel(tun) => Fwd::Tunnel {
                addr: r.addr,
                src: tunnel_source(own, r.addr).ok_or(ConfigError::TunnelSource(r.addr))?,
                tun,
                mtu,
            },
            Method::Masq => Fwd::Masq {
                addr: r.addr,
                port: r.port_for(key.port),
                vip: key.vip,
                vport: key.port,
            },
        })
    }
}

/// The director's address a tunnel to `to` comes from: the first of `own` of its family
/// that is neither loopback nor link-local.
fn tunnel_source(own: &[IpAddr], to: IpAddr) -> Option<IpAddr> {
    own.iter().copied().find(|a| {
        a.is_ipv4() == to.is_ipv4()
            && !a.is_loopback()
            && match a {
                IpAddr::V4(v) => !v.is_link_local(),
                IpAddr::V6(v) => v.segments()[0] & 0xffc0 != 0xfe80,
            }
    })
}

/// Where a NAT real server's replies come from, and the service they answer for: the
/// key of [`Services::nat_services`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatSource {
    /// The protocol.
    pub proto: Protocol,
    /// The real server's address.
    pub addr: IpAddr,
    /// The port it serves on.
    pub port: u16,
}

/// A route towards clients, from the kernel's routing table: packets to `net`/`prefix_len`
/// leave through the router at `mac`. A NAT reply goes to the next hop of the most
/// specific route to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientRoute {
    /// The destination network.
    pub net: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The MAC of its gateway (resolved).
    pub mac: Mac,
}

impl ClientRoute {
    /// Whether `ip` is in this route's network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((n, w), (a, w2)) = (bits(self.net), bits(ip));
        if w != w2 || u32::from(self.prefix_len) > w {
            return false;
        }
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix_len))
        };
        n & mask == a & mask
    }
}

/// What the director should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The director's own MAC (of the interface clients reach the VIPs through): the
    /// source of every forwarded frame and ARP reply.
    pub director_mac: Mac,
    /// Two-armed: the MAC of the director's interface on the real servers' side, the
    /// source of frames to real servers (NAT replies leave by the clients' side, from
    /// `director_mac`). `None`: one interface for both.
    pub servers_mac: Option<Mac>,
    /// Virtual services.
    pub services: Vec<ServiceSpec>,
    /// Behaviour switches.
    pub options: Options,
    /// Removed real servers still draining their connections.
    pub draining: Vec<Draining>,
    /// Real servers a health check took out of service: no new connections (as weight
    /// 0), but a consistent-hash scheduler (`mh`) keeps their place in its table, so that
    /// only their own clients move.
    pub down: Vec<(ServiceKey, IpAddr)>,
    /// The director's own addresses: a NAT real server's packet to one of them (an
    /// answer to a health check) is the kernel's, never a reply to rewrite. A tunnel's
    /// outer source is one of them.
    pub own: Vec<IpAddr>,
    /// The MTU of the paths to tunnel real servers (the interface's).
    pub tunnel_mtu: u16,
    /// Routes towards clients through routers on the interface: where NAT replies go
    /// (without one, back to the MAC the client's packets came from).
    pub client_routes: Vec<ClientRoute>,
}

impl Config {
    /// A configuration of `services` with nothing draining.
    pub fn new(director_mac: Mac, services: Vec<ServiceSpec>, options: Options) -> Config {
        Config {
            director_mac,
            servers_mac: None,
            services,
            options,
            draining: Vec::new(),
            down: Vec::new(),
            own: Vec::new(),
            tunnel_mtu: 1500,
            client_routes: Vec::new(),
        }
    }
}

/// Sizes fixed when a worker starts (tables are allocated once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Virtual services at most.
    pub max_services: usize,
    /// Real-server entries (summed over services) at most.
    pub max_dests: usize,
    /// Connection-table entries per worker.
    pub conn_capacity: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_services: crate::limits::MAX_SERVICES,
            max_dests: crate::limits::MAX_DESTS,
            conn_capacity: ConnTable::DEFAULT_CAPACITY,
        }
    }
}

/// A slot and its generation (services and real servers both use them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct SlotInfo {
    gen: u32,
    live: bool,
}

/// A real server as a service sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Real {
    /// Address (of its service's family).
    pub addr: IpAddr,
    /// Configured weight (0 = quiescent).
    pub weight: u16,
    /// Its slot in the real-server table.
    pub dest: DestRef,
    /// Resolved MAC, if any.
    pub mac: Option<Mac>,
    /// In service by its health check (or it has none).
    pub up: bool,
    /// How packets reach it.
    pub fwd: Fwd,
}

impl Real {
    /// The weight the scheduler uses: 0 while the MAC is unresolved or its health check
    /// fails.
    #[inline]
    pub fn effective_weight(&self) -> u32 {
        if self.mac.is_some() && self.up {
            u32::from(self.weight)
        } else {
            0
        }
    }
}

/// A compiled virtual service.
#[derive(Clone, Debug)]
pub struct Service {
    /// Protocol, VIP and port.
    pub key: ServiceKey,
    /// Its counter slot.
    pub slot: u32,
    /// The generation of that slot (a service deleted and added again gets a new one).
    pub gen: u32,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    pub(crate) sched: AnyScheduler,
    /// Real servers, in configuration order.
    pub reals: Vec<Real>,
    /// What the schedulers that weigh loads read of `reals`, in the same order: each one's
    /// effective weight and load slot, made when the snapshot is built (a snapshot never
    /// changes) and packed so that a pick over a handful of real servers reads one or
    /// two cache lines rather than every `Real`.
    pub(crate) weighted: Box<[Weighted]>,
    /// Some real server of it (configured or draining) is NAT's: its connections'
    /// packets come both ways, so on several queues one worker, chosen by the client,
    /// handles them all.
    pub(crate) masq: bool,
}

/// A real server as the schedulers that weigh loads see it (see [`Service::weighted`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weighted {
    weight: u32,
    dest: DestRef,
}

/// `reals` packed for [`View::each_weighted`].
fn weighted(reals: &[Real]) -> Box<[Weighted]> {
    reals
        .iter()
        .map(|r| Weighted {
            weight: r.effective_weight(),
            dest: r.dest,
        })
        .collect()
}

impl Service {
    /// The scheduler's name.
    pub fn scheduler(&self) -> xdpvs_sched::SchedKind {
        self.sched.kind()
    }
}

/// What a connection finds when it looks up its real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestStatus {
    /// Forward to this MAC. `weight` 0 means quiescent (existing connections only).
    Up {
        /// The real server's MAC.
        mac: Mac,
        /// Its weight.
        weight: u16,
    },
    /// Its health check took it out of service: its connections go on at this MAC, but
    /// it gets no new one (a SYN that finds one of its entries is scheduled afresh).
    OutOfService {
        /// The real server's MAC.
        mac: Mac,
    },
    /// The real server was removed but still drains its connections at this MAC.
    Draining {
        /// The removed real server's MAC.
        mac: Mac,
    },
    /// The real server was removed (or its slot went to another).
    Removed,
    /// The real server exists but its MAC is not resolved.
    Unresolved,
}

#[derive(Clone, Copy, Debug, Default)]
struct DestInfo {
    slot: SlotInfo,
    mac: Option<Mac>,
    weight: u16,
    /// Out of service by its health check.
    down: bool,
    /// Not live, but a removed real server of this generation drains here.
    draining: bool,
    /// How packets reach it.
    fwd: Fwd,
}

/// A scheduler's view of one service: configured reals plus live loads.
pub(crate) struct View<'a> {
    pub reals: &'a [Real],
    /// `reals` packed ([`Service::weighted`]).
    pub weighted: &'a [Weighted],
    pub loads: Option<&'a Loads>,
}

impl DestView for View<'_> {
    fn len(&self) -> usize {
        self.reals.len()
    }
    fn addr(&self, i: usize) -> IpAddr {
        self.reals[i].addr
    }
    #[inline]
    fn weight(&self, i: usize) -> u32 {
        self.reals[i].effective_weight()
    }
    fn placement_weight(&self, i: usize) -> u32 {
        u32::from(self.reals[i].weight)
    }
    #[inline]
    fn load(&self, i: usize) -> Load {
        self.loads
            .map_or(Load::default(), |l| l.load(self.reals[i].dest))
    }
    #[inline]
    fn each_weighted(&self, mut f: impl FnMut(usize, u32, Load)) {
        // Over the packed copy, the table of loads asked once.
        match self.loads {
            Some(loads) => {
                for (i, r) in self.weighted.iter().enumerate() {
                    f(i, r.weight, loads.load(r.dest));
                }
            }
            None => {
                for (i, r) in self.weighted.iter().enumerate() {
                    f(i, r.weight, Load::default());
                }
            }
        }
    }
}

/// The compiled configuration a worker runs with.
#[derive(Clone, Debug)]
pub struct Services {
    director_mac: Mac,
    servers_mac: Mac,
    options: Options,
    vips: Vec<Ipv4Addr>,
    vips6: Vec<Ipv6Addr>,
    /// (packed key, service index), sorted by key: binary search beats hashing for the
    /// handful of services a director has. IPv4 services.
    index: Vec<(u64, u32)>,
    /// Likewise for IPv6 services: ((VIP, protocol and port), index).
    index6: Vec<((u128, u32), u32)>,
    pub(crate) services: Vec<Service>,
    dests: Box<[DestInfo]>,
    service_slots: Box<[SlotInfo]>,
    /// NAT real servers (configured or draining) and the (VIP, port) of their services:
    /// a reply finds its connection's key here.
    nat: NatIndex,
    /// The director's own addresses (see [`Config::own`]).
    own: Vec<IpAddr>,
    /// Some real server (configured or draining) is reached by a tunnel.
    tunnel: bool,
    /// Routes towards clients, most specific first.
    client_routes: Vec<ClientRoute>,
}

/// Hands out the (slot, generation) pairs of services and real servers, and remembers
/// them across builds.
///
/// A service or real server present in two successive builds keeps its pair, so its
/// connections and counters carry over. A new one gets the lowest free slot with a
/// generation never issued for that slot before: generations only move forward, whatever
/// happens to the snapshots built. So a (slot, generation) pair names one real server for
/// ever, and a connection can never be forwarded to a real server it was not scheduled to,
/// even after a build that was handed to some workers and then abandoned. A control plane
/// keeps one `SlotBook` for the life of the director and gives it to every
/// [`Services::build_with`]; [`SlotBook::checkpoint`]/[`SlotBook::rollback`] undo the
/// assignments of an abandoned build (never the generations issued).
#[derive(Clone, Debug)]
pub struct SlotBook {
    services: Book<ServiceKey>,
    dests: Book<(ServiceKey, IpAddr)>,
}

/// The assignments of a [`SlotBook`] at one moment.
#[derive(Clone, Debug)]
pub struct SlotCheckpoint {
    services: HashMap<ServiceKey, (u32, u32)>,
    dests: HashMap<(ServiceKey, IpAddr), (u32, u32)>,
}

#[derive(Clone, Debug)]
struct Book<K> {
    /// The last generation issued, per slot.
    issued: Vec<u32>,
    /// Who holds which (slot, generation).
    held: HashMap<K, (u32, u32)>,
}

impl<K: Hash + Eq + Copy> Book<K> {
    fn new(len: usize) -> Self {
        Book {
            issued: vec![0; len],
            held: HashMap::new(),
        }
    }

    /// Seeds from a snapshot's slots and who held them.
    fn seed(&mut self, slots: &[SlotInfo], holders: impl Iterator<Item = (K, u32)>) {
        for (i, s) in slots.iter().enumerate().take(self.issued.len()) {
            self.issued[i] = s.gen;
        }
        for (k, slot) in holders {
            if let Some(s) = slots.get(slot as usize) {
                self.held.insert(k, (slot, s.gen));
            }
        }
    }

    /// Makes exactly `wanted` hold slots: keeps those already held, frees the others and
    /// gives new ones the lowest free slot with the next generation, preferring slots
    /// not in `avoid` (those of draining real servers). `None` when the slots run out.
    fn hold(&mut self, wanted: &[K], avoid: &HashSet<u32>) -> Option<()> {
        let set: HashSet<K> = wanted.iter().copied().collect();
        self.held.retain(|k, _| set.contains(k));
        let mut taken = vec![false; self.issued.len()];
        for &(slot, _) in self.held.values() {
            taken[slot as usize] = true;
        }
        let (mut next, mut fallback) = (0, 0);
        for k in wanted {
            if self.held.contains_key(k) {
                continue;
            }
            while next < taken.len() && (taken[next] || avoid.contains(&(next as u32))) {
                next += 1;
            }
            let slot = if next < taken.len() {
                next
            } else {
                // Only slots of draining real servers are left: take one (its
                // connections then find their real server removed).
                while taken.get(fallback) == Some(&true) {
                    fallback += 1;
                }
                fallback
            };
            let issued = self.issued.get_mut(slot)?;
            *issued = issued.wrapping_add(1);
            taken[slot] = true;
            self.held.insert(*k, (slot as u32, *issued));
        }
        Some(())
    }

    fn get(&self, k: &K) -> (u32, u32) {
        self.held[k]
    }

    /// Per slot: whether it is held, and its generation.
    fn slots(&self) -> Vec<SlotInfo> {
        let mut v: Vec<SlotInfo> = self
            .issued
            .iter()
            .map(|&gen| SlotInfo { gen, live: false })
            .collect();
        for &(slot, gen) in self.held.values() {
            v[slot as usize] = SlotInfo { gen, live: true };
        }
        v
    }
}

impl SlotBook {
    /// An empty book for `limits`.
    pub fn new(limits: &Limits) -> SlotBook {
        SlotBook {
            services: Book::new(limits.max_services),
            dests: Book::new(limits.max_dests),
        }
    }

    /// A book holding what `prev` holds, with its generations.
    pub fn from_snapshot(prev: &Services, limits: &Limits) -> SlotBook {
        let mut b = SlotBook::new(limits);
        b.services.seed(
            &prev.service_slots,
            prev.services.iter().map(|s| (s.key, s.slot)),
        );
        let dest_slots: Vec<SlotInfo> = prev.dests.iter().map(|d| d.slot).collect();
        b.dests.seed(
            &dest_slots,
            prev.services
                .iter()
                .flat_map(|s| s.reals.iter().map(move |r| ((s.key, r.addr), r.dest.slot))),
        );
        b
    }

    /// The assignments now, to return to with [`SlotBook::rollback`].
    pub fn checkpoint(&self) -> SlotCheckpoint {
        SlotCheckpoint {
            services: self.services.held.clone(),
            dests: self.dests.held.clone(),
        }
    }

    /// Returns to the assignments of `cp`. Generations issued since stay issued: a slot
    /// handed out by the abandoned build gets a newer one next time.
    pub fn rollback(&mut self, cp: SlotCheckpoint) {
        self.services.held = cp.services;
        self.dests.held = cp.dests;
    }
}

impl Services {
    /// Checks `cfg` against `limits` and compiles it. `prev` is the snapshot in force, if
    /// any: services and real servers present in both keep their slots (and so their
    /// connections and counters), and rr/wrr keep their rotation. For one-off builds: a
    /// control plane that may abandon builds uses [`Services::build_with`].
    pub fn build(
        cfg: &Config,
        limits: &Limits,
        prev: Option<&Services>,
    ) -> Result<Services, ConfigError> {
        let mut book = match prev {
            Some(p) => SlotBook::from_snapshot(p, limits),
            None => SlotBook::new(limits),
        };
        Services::build_with(cfg, limits, &mut book, prev)
    }

    /// [`Services::build`] with slots from `book`, which records them (and is left as it
    /// was when the build fails). `prev` (the snapshot in force) only passes rr/wrr
    /// rotation on.
    pub fn build_with(
        cfg: &Config,
        limits: &Limits,
        book: &mut SlotBook,
        prev: Option<&Services>,
    ) -> Result<Services, ConfigError> {
        if cfg.services.len() > limits.max_services {
            return Err(ConfigError::TooManyServices(limits.max_services));
        }
        let total_reals: usize = cfg.services.iter().map(|s| s.reals.len()).sum();
        if total_reals > limits.max_dests {
            return Err(ConfigError::TooManyDests(limits.max_dests));
        }
        let (mut index, mut index6) = (Vec::new(), Vec::new());
        for (i, s) in cfg.services.iter().enumerate() {
            s.validate()?;
            match s.key.vip {
                IpAddr::V4(vip) => index.push((pack(s.key.proto, vip, s.key.port), i as u32)),
                IpAddr::V6(vip) => index6.push((pack6(s.key.proto, vip, s.key.port), i as u32)),
            }
        }
        index.sort_unstable();
        index6.sort_unstable();
        let dup = index
            .windows(2)
            .find(|w| w[0].0 == w[1].0)
            .map(|w| w[1].1)
            .or_else(|| index6.windows(2).find(|w| w[0].0 == w[1].0).map(|w| w[1].1));
        if let Some(i) = dup {
            return Err(ConfigError::DuplicateService(cfg.services[i as usize].key));
        }

        let checkpoint = book.checkpoint();
        let svc_keys: Vec<ServiceKey> = cfg.services.iter().map(|s| s.key).collect();
        let real_keys: Vec<(ServiceKey, IpAddr)> = cfg
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(move |r| (s.key, r.addr)))
            .collect();
        if book.services.hold(&svc_keys, &HashSet::new()).is_none() {
            book.rollback(checkpoint);
            return Err(ConfigError::TooManyServices(limits.max_services));
        }
        let avoid: HashSet<u32> = cfg.draining.iter().map(|d| d.dest.slot).collect();
        if book.dests.hold(&real_keys, &avoid).is_none() {
            book.rollback(checkpoint);
            return Err(ConfigError::TooManyDests(limits.max_dests));
        }
        let prev_service =
            |key: &ServiceKey| prev.and_then(|p| p.find(key).map(|i| &p.services[i]));

        let mut services = Vec::with_capacity(cfg.services.len());
        for s in &cfg.services {
            let (slot, svc_gen) = book.services.get(&s.key);
            let mut reals = Vec::with_capacity(s.reals.len());
            for r in &s.reals {
                let (slot, gen) = book.dests.get(&(s.key, r.addr));
                reals.push(Real {
                    addr: r.addr,
                    weight: r.weight,
                    dest: DestRef { slot, gen },
                    mac: r.mac,
                    up: !cfg.down.contains(&(s.key, r.addr)),
                    fwd: Fwd::of(&s.key, r, &cfg.own, cfg.tunnel_mtu)?,
                });
            }
            let weighted = weighted(&reals);
            let view = View {
                reals: &reals,
                weighted: &weighted,
                loads: None,
            };
            let mut sched = AnyScheduler::new(s.scheduler, s.flags, &view);
            if let Some(ps) = prev_service(&s.key) {
                sched.inherit(&ps.sched, &view);
            }
            services.push(Service {
                key: s.key,
                slot,
                gen: svc_gen,
                persistence: s.persistence,
                sched,
                reals,
                weighted,
                masq: false,
            });
        }

        let mut dests: Box<[DestInfo]> = book
            .dests
            .slots()
            .iter()
            .map(|&slot| DestInfo {
                slot,
                mac: None,
                weight: 0,
                down: false,
                draining: false,
                fwd: Fwd::Route,
            })
            .collect();
        let mut nat = Vec::new();
        let mut nat_source = |proto, fwd: Fwd| {
            if let Fwd::Masq {
                addr,
                port,
                vip,
                vport,
            } = fwd
            {
                nat.push((NatSource { proto, addr, port }, (vip, vport)));
            }
        };
        for d in &cfg.draining {
            if let Some(info) = dests.get_mut(d.dest.slot as usize) {
                if !info.slot.live && info.slot.gen == d.dest.gen {
                    info.draining = true;
                    info.mac = d.mac;
                    info.fwd = d.fwd;
                    // Its service's protocol is not kept: a reply of either finds its
                    // connection or nothing.
                    nat_source(Protocol::Tcp, d.fwd);
                    nat_source(Protocol::Udp, d.fwd);
                }
            }
        }
        for s in &services {
            for r in &s.reals {
                nat_source(s.key.proto, r.fwd);
            }
        }
        for s in &mut services {
            s.masq = nat
                .iter()
                .any(|(_, (vip, port))| *vip == s.key.vip && *port == s.key.port);
        }
        let nat = NatIndex::new(nat);
        for r in services.iter().flat_map(|s| &s.reals) {
            let d = &mut dests[r.dest.slot as usize];
            d.fwd = r.fwd;
            d.mac = r.mac;
            // A real server out of service takes nobody new.
            d.weight = if r.up { r.weight } else { 0 };
            d.down = !r.up;
        }
        // Every real server's method is in its slot now (configured or draining).
        let tunnel = dests.iter().any(|d| matches!(d.fwd, Fwd::Tunnel { .. }));
        let (mut vips, mut vips6) = (Vec::new(), Vec::new());
        for s in &cfg.services {
            match s.key.vip {
                IpAddr::V4(v) => vips.push(v),
                IpAddr::V6(v) => vips6.push(v),
            }
        }
        vips.sort_unstable();
        vips.dedup();
        vips6.sort_unstable();
        vips6.dedup();
        Ok(Services {
            director_mac: cfg.director_mac,
            servers_mac: cfg.servers_mac.unwrap_or(cfg.director_mac),
            options: cfg.options,
            vips,
            vips6,
            index,
            index6,
            services,
            dests,
            service_slots: book.services.slots().into_boxed_slice(),
            nat,
            own: cfg.own.clone(),
            tunnel,
            client_routes: {
                let mut r = cfg.client_routes.clone();
                r.sort_by(|a, b| b.prefix_len.cmp(&a.prefix_len).then(a.cmp(b)));
                r
            },
        })
    }

    /// The director's MAC (on the clients' side).
    #[inline]
    pub fn director_mac(&self) -> Mac {
        self.director_mac
    }

    /// The director's MAC on the real servers' side: the source of frames to real
    /// servers (the clients' side's when the director has one interface).
    #[inline]
    pub fn servers_mac(&self) -> Mac {
        self.servers_mac
    }

    /// Behaviour switches.
    #[inline]
    pub fn options(&self) -> Options {
        self.options
    }

    /// Every IPv4 VIP served, sorted.
    pub fn vips(&self) -> &[Ipv4Addr] {
        &self.vips
    }

    /// Every VIP served, IPv4 then IPv6.
    pub fn all_vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips
            .iter()
            .map(|&v| IpAddr::V4(v))
            .chain(self.vips6.iter().map(|&v| IpAddr::V6(v)))
    }

    /// Every IPv6 VIP served, sorted.
    pub fn vips6(&self) -> &[Ipv6Addr] {
        &self.vips6
    }

    /// Whether `ip` is an IPv6 VIP of some service.
    #[inline]
    pub fn is_vip6(&self, ip: Ipv6Addr) -> bool {
        self.vips6.contains(&ip)
    }

    /// Whether `ip` is a VIP of some service.
    #[inline]
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        // Few VIPs: a linear scan over a small sorted array beats hashing.
        self.vips.contains(&ip)
    }

    /// The index of the service with this key.
    #[inline]
    pub fn find(&self, key: &ServiceKey) -> Option<usize> {
        match key.vip {
            IpAddr::V4(vip) => self.find4(key.proto, vip, key.port),
            IpAddr::V6(vip) => self.find6(key.proto, vip, key.port),
        }
    }

    /// The index of the IPv4 service (`proto`, `vip`, `port`).
    #[inline]
    pub fn find4(&self, proto: Protocol, vip: Ipv4Addr, port: u16) -> Option<usize> {
        let k = pack(proto, vip, port);
        self.index
            .binary_search_by_key(&k, |&(p, _)| p)
            .ok()
            .map(|i| self.index[i].1 as usize)
    }

    /// The index of the IPv6 service (`proto`, `vip`, `port`).
    #[inline]
    pub fn find6(&self, proto: Protocol, vip: Ipv6Addr, port: u16) -> Option<usize> {
        let k = pack6(proto, vip, port);
        self.index6
            .binary_search_by_key(&k, |&(p, _)| p)
            .ok()
            .map(|i| self.index6[i].1 as usize)
    }

    /// The compiled services, in configuration order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// How packets reach real server `d` (as it was configured, if it is draining).
    #[inline]
    pub fn fwd(&self, d: DestRef) -> Fwd {
        self.dests
            .get(d.slot as usize)
            .filter(|info| info.slot.gen == d.gen)
            .map_or(Fwd::Route, |info| info.fwd)
    }

    /// Whether `ip` is a NAT real server's address (its ICMP errors about clients'
    /// packets are rewritten for the clients).
    #[inline]
    pub fn is_nat_addr(&self, ip: IpAddr) -> bool {
        self.nat.sources.iter().any(|k| k.addr == ip)
    }

    /// The MAC of the next hop towards client `ip` by the kernel's routes (the most
    /// specific that contains it), if one does.
    #[inline]
    pub fn client_hop(&self, ip: IpAddr) -> Option<Mac> {
        self.client_routes
            .iter()
            .find(|r| r.contains(ip))
            .map(|r| r.mac)
    }

    /// Whether `ip` is one of the director's own addresses.
    #[inline]
    pub fn is_own(&self, ip: IpAddr) -> bool {
        self.own.contains(&ip)
    }

    /// Whether some real server is reached by a tunnel.
    #[inline]
    pub fn has_tunnel(&self) -> bool {
        self.tunnel
    }

    /// Whether some real server is reached by NAT (replies then cross the director).
    #[inline]
    pub fn has_nat(&self) -> bool {
        !self.nat.sources.is_empty()
    }

    /// The (VIP, port) of the services NAT real server `src` serves: where its replies'
    /// connections are keyed.
    #[inline]
    pub fn nat_services(&self, src: &NatSource) -> &[(IpAddr, u16)] {
        self.nat.services(src)
    }

    /// Every NAT real server's (protocol, address, port), for the XDP program to steer
    /// their replies.
    pub fn nat_sources(&self) -> impl Iterator<Item = NatSource> + '_ {
        self.nat.sources.iter().copied()
    }

    /// Where a connection to `d` should go now.
    #[inline(always)]
    pub fn dest(&self, d: DestRef) -> DestStatus {
        match self.dests.get(d.slot as usize) {
            Some(info) if info.slot.live && info.slot.gen == d.gen => match info.mac {
                Some(mac) if info.down => DestStatus::OutOfService { mac },
                Some(mac) => DestStatus::Up {
                    mac,
                    weight: info.weight,
                },
                None => DestStatus::Unresolved,
            },
            Some(info) if info.draining && info.slot.gen == d.gen => match info.mac {
                Some(mac) => DestStatus::Draining { mac },
                None => DestStatus::Removed,
            },
            _ => DestStatus::Removed,
        }
    }

    /// `run --offload`: where the XDP program may send a connection to the real server
    /// in `slot` (its generation and MAC), if anywhere: a direct-routing real server in
    /// service or out of it by its check, or removed and draining (unless its
    /// connections are to expire).
    fn offload_target(&self, slot: usize) -> Option<(u32, Mac)> {
        let d = self.dests.get(slot)?;
        let drains = d.draining && !self.options.expire_nodest_conn;
        ((d.slot.live || drains) && d.fwd == Fwd::Route)
            .then_some(d.mac.map(|m| (d.slot.gen, m)))
            .flatten()
    }

    /// `run --offload`: real-server slots whose connections the XDP program may no longer
    /// forward as it did under `old` (removed, its slot given to another, its MAC or
    /// method changed, or its connections to expire).
    pub(crate) fn offload_gone<'a>(&'a self, old: &'a Services) -> impl Iterator<Item = u32> + 'a {
        (0..old.dests.len()).filter_map(move |s| {
            let was = old.offload_target(s)?;
            (self.offload_target(s) != Some(was)).then_some(s as u32)
        })
    }

    /// Live service slots whose generation differs from `old`'s: their counters start
    /// again from zero.
    pub(crate) fn changed_service_slots<'a>(
        &'a self,
        old: &'a Services,
    ) -> impl Iterator<Item = u32> + 'a {
        changed(
            self.service_slots.iter().copied(),
            old.service_slots.iter().copied(),
        )
    }

    /// Likewise for real-server slots.
    pub(crate) fn changed_dest_slots<'a>(
        &'a self,
        old: &'a Services,
    ) -> impl Iterator<Item = u32> + 'a {
        changed(
            self.dests.iter().map(|d| d.slot),
            old.dests.iter().map(|d| d.slot),
        )
    }
}

/// An IPv4 service key as one integer: protocol, VIP, port.
#[inline]
fn pack(proto: Protocol, vip: Ipv4Addr, port: u16) -> u64 {
    (u64::from(proto.ip_number()) << 48) | (u64::from(u32::from(vip)) << 16) | u64::from(port)
}

/// The NAT real servers of a snapshot, indexed for the reply path: by a packed integer
/// key per family (binary search over integers, as for services), each with the (VIP,
/// port) of the services it serves.
#[derive(Clone, Debug, Default)]
struct NatIndex {
    /// IPv4 sources: (packed key, start and length in `to`), sorted.
    v4: Vec<(u64, u32, u32)>,
    /// IPv6 sources, likewise.
    v6: Vec<((u128, u32), u32, u32)>,
    /// The (VIP, port) of each source's services, grouped by source.
    to: Vec<(IpAddr, u16)>,
    /// Every source, once.
    sources: Vec<NatSource>,
}

impl NatIndex {
    fn new(mut pairs: Vec<(NatSource, (IpAddr, u16))>) -> NatIndex {
        pairs.sort_unstable();
        pairs.dedup();
        let mut ix = NatIndex::default();
        for (src, to) in pairs {
            if ix.sources.last() != Some(&src) {
                ix.sources.push(src);
                let start = ix.to.len() as u32;
                match src.addr {
                    IpAddr::V4(a) => ix.v4.push((pack(src.proto, a, src.port), start, 0)),
                    IpAddr::V6(a) => ix.v6.push((pack6(src.proto, a, src.port), start, 0)),
                }
            }
            ix.to.push(to);
            match src.addr {
                IpAddr::V4(_) => ix.v4.last_mut().map(|e| e.2 += 1),
                IpAddr::V6(_) => ix.v6.last_mut().map(|e| e.2 += 1),
            };
        }
        ix.v4.sort_unstable();
        ix.v6.sort_unstable();
        ix
    }

    #[inline]
    fn services(&self, src: &NatSource) -> &[(IpAddr, u16)] {
        let range = match src.addr {
            IpAddr::V4(a) => {
                let k = pack(src.proto, a, src.port);
                self.v4
                    .binary_search_by_key(&k, |e| e.0)
                    .ok()
                    .map(|i| (self.v4[i].1, self.v4[i].2))
            }
            IpAddr::V6(a) => {
                let k = pack6(src.proto, a, src.port);
                self.v6
                    .binary_search_by_key(&k, |e| e.0)
                    .ok()
                    .map(|i| (self.v6[i].1, self.v6[i].2))
            }
        };
        range.map_or(&[], |(start, len)| {
            &self.to[start as usize..(start + len) as usize]
        })
    }
}

/// An IPv6 service key as a pair: VIP, then protocol and port.
#[inline]
fn pack6(proto: Protocol, vip: Ipv6Addr, port: u16) -> (u128, u32) {
    (
        u128::from(vip),
        (u32::from(proto.ip_number()) << 16) | u32::from(port),
    )
}

fn changed<'a>(
    new: impl Iterator<Item = SlotInfo> + 'a,
    old: impl Iterator<Item = SlotInfo> + 'a,
) -> impl Iterator<Item = u32> + 'a {
    let old = old.chain(std::iter::repeat(SlotInfo::default()));
    new.zip(old)
        .enumerate()
        .filter_map(|(i, (n, o))| (n.live && (!o.live || o.gen != n.gen)).then_some(i as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpvs_sched::{Protocol, RealSpec, SchedKind};

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port,
        }
    }

    fn real(last: u8) -> RealSpec {
        RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, last).into(),
            port: 0,
            method: xdpvs_sched::Method::Route,
            weight: 1,
            mac: Some([2, 0, 0, 0, 1, last]),
        }
    }

    fn cfg(services: Vec<ServiceSpec>) -> Config {
        Config::new(MAC, services, Options::default())
    }

    fn svc(port: u16, reals: &[u8]) -> ServiceSpec {
        let mut s = ServiceSpec::new(key(port), SchedKind::Rr);
        s.reals = reals.iter().map(|&r| real(r)).collect();
        s
    }

    #[test]
    fn slots_survive_rebuilds_and_generations_grow() {
        let limits = Limits {
            max_services: 4,
            max_dests: 8,
            conn_capacity: 16,
        };
        let a = Services::build(&cfg(vec![svc(80, &[11, 12, 13])]), &limits, None).expect("valid");
        let r12 = a.services[0].reals[1].dest;
        // Remove .11, add .14: .12 keeps its slot; .14 takes the freed slot with a new gen.
        let b =
            Services::build(&cfg(vec![svc(80, &[12, 13, 14])]), &limits, Some(&a)).expect("valid");
        assert_eq!(b.services[0].reals[0].dest, r12);
        let r14 = b.services[0].reals[2].dest;
        let r11 = a.services[0].reals[0].dest;
        assert_eq!(r14.slot, r11.slot);
        assert_ne!(r14.gen, r11.gen);
        assert_eq!(b.dest(r11), DestStatus::Removed);
        assert!(matches!(b.dest(r14), DestStatus::Up { .. }));
        assert_eq!(b.changed_dest_slots(&a).collect::<Vec<_>>(), vec![r14.slot]);
        assert_eq!(b.changed_service_slots(&a).count(), 0);
    }

    #[test]
    fn limits_and_duplicates_are_refused() {
        let limits = Limits {
            max_services: 1,
            max_dests: 2,
            conn_capacity: 16,
        };
        assert_eq!(
            Services::build(&cfg(vec![svc(80, &[]), svc(81, &[])]), &limits, None).err(),
            Some(ConfigError::TooManyServices(1))
        );
        assert_eq!(
            Services::build(&cfg(vec![svc(80, &[1, 2, 3])]), &limits, None).err(),
            Some(ConfigError::TooManyDests(2))
        );
        let limits = Limits::default();
        assert_eq!(
            Services::build(&cfg(vec![svc(80, &[]), svc(80, &[])]), &limits, None).err(),
            Some(ConfigError::DuplicateService(key(80)))
        );
    }

    #[test]
    fn unresolved_reals_get_no_weight() {
        let mut s = svc(80, &[11]);
        s.reals[0].mac = None;
        let b = Services::build(&cfg(vec![s]), &Limits::default(), None).expect("valid");
        assert_eq!(b.services[0].reals[0].effective_weight(), 0);
        assert_eq!(b.dest(b.services[0].reals[0].dest), DestStatus::Unresolved);
        assert!(b.is_vip(Ipv4Addr::new(198, 18, 0, 100)));
        assert!(!b.is_vip(Ipv4Addr::new(198, 18, 0, 101)));
    }

    /// What the load-weighing schedulers read (the packed copy) is what `Real` says: the
    /// effective weight (0 while unresolved or down) and the load slot, in order.
    #[test]
    fn the_packed_weights_follow_the_reals() {
        let mut s = svc(80, &[11, 12, 13]);
        s.reals[0].mac = None;
        s.reals[2].weight = 7;
        let mut c = cfg(vec![s]);
        c.down.push((key(80), Ipv4Addr::new(198, 18, 0, 12).into()));
        let b = Services::build(&c, &Limits::default(), None).expect("valid");
        let svc = &b.services[0];
        let view = View {
            reals: &svc.reals,
            weighted: &svc.weighted,
            loads: None,
        };
        let mut seen = Vec::new();
        view.each_weighted(|i, w, _| seen.push((i, w)));
        assert_eq!(seen, vec![(0, 0), (1, 0), (2, 7)]);
        for (r, p) in svc.reals.iter().zip(svc.weighted.iter()) {
            assert_eq!((p.weight, p.dest), (r.effective_weight(), r.dest));
        }
    }

    proptest::proptest! {
        /// Whatever sequence of builds is kept or abandoned, a (slot, generation) pair
        /// only ever names one real server of one service.
        #[test]
        fn a_dest_ref_never_changes_meaning(
            steps in proptest::collection::vec(
                (proptest::collection::vec(1u8..12, 0..6), proptest::bool::ANY), 1..40),
        ) {
            let limits = Limits { max_services: 2, max_dests: 6, conn_capacity: 16 };
            let mut book = SlotBook::new(&limits);
            let mut current: Option<Services> = None;
            let mut named: HashMap<DestRef, IpAddr> = HashMap::new();
            for (reals, keep) in steps {
                let mut reals = reals;
                reals.sort_unstable();
                reals.dedup();
                let cp = book.checkpoint();
                let Ok(built) = Services::build_with(
                    &cfg(vec![svc(80, &reals)]), &limits, &mut book, current.as_ref())
                else {
                    continue;
                };
                for r in &built.services[0].reals {
                    let first = *named.entry(r.dest).or_insert(r.addr);
                    proptest::prop_assert_eq!(first, r.addr, "{:?} named two real servers", r.dest);
                }
                if keep {
                    current = Some(built);
                } else {
                    book.rollback(cp);
                }
            }
        }
    }
}
