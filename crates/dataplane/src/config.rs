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

use std::net::Ipv4Addr;

use xdpvs_sched::conn::{ConnTable, DestRef, Loads};
use xdpvs_sched::{
    AnyScheduler, ConfigError, DestView, Load, Mac, Persistence, ServiceKey, ServiceSpec,
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
}

/// What the director should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The director's own MAC: the source of every forwarded frame and ARP reply.
    pub director_mac: Mac,
    /// Virtual services.
    pub services: Vec<ServiceSpec>,
    /// Behaviour switches.
    pub options: Options,
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
    /// Address.
    pub addr: Ipv4Addr,
    /// Configured weight (0 = quiescent).
    pub weight: u16,
    /// Its slot in the real-server table.
    pub dest: DestRef,
    /// Resolved MAC, if any.
    pub mac: Option<Mac>,
}

impl Real {
    /// The weight the scheduler uses: 0 while the MAC is unresolved.
    pub fn effective_weight(&self) -> u32 {
        if self.mac.is_some() {
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
    slot_gen: u32,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    pub(crate) sched: AnyScheduler,
    /// Real servers, in configuration order.
    pub reals: Vec<Real>,
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
}

/// A scheduler's view of one service: configured reals plus live loads.
pub(crate) struct View<'a> {
    pub reals: &'a [Real],
    pub loads: Option<&'a Loads>,
}

impl DestView for View<'_> {
    fn len(&self) -> usize {
        self.reals.len()
    }
    fn addr(&self, i: usize) -> Ipv4Addr {
        self.reals[i].addr
    }
    #[inline]
    fn weight(&self, i: usize) -> u32 {
        self.reals[i].effective_weight()
    }
    #[inline]
    fn load(&self, i: usize) -> Load {
        self.loads
            .map_or(Load::default(), |l| l.load(self.reals[i].dest))
    }
}

/// The compiled configuration a worker runs with.
#[derive(Clone, Debug)]
pub struct Services {
    director_mac: Mac,
    options: Options,
    vips: Vec<Ipv4Addr>,
    /// (packed key, service index), sorted by key: binary search beats hashing for the
    /// handful of services a director has.
    index: Vec<(u64, u32)>,
    pub(crate) services: Vec<Service>,
    dests: Box<[DestInfo]>,
    service_slots: Box<[SlotInfo]>,
}

/// Hands out slots: keeps those of entries that already had one, gives the lowest free
/// slot (with a new generation) to new ones.
struct SlotAllocator {
    slots: Vec<SlotInfo>,
    next_free: usize,
}

impl SlotAllocator {
    fn new(prev: Option<&[SlotInfo]>, len: usize) -> SlotAllocator {
        let mut slots = vec![SlotInfo::default(); len];
        if let Some(p) = prev {
            for (s, p) in slots.iter_mut().zip(p) {
                s.gen = p.gen; // generations only ever grow
            }
        }
        SlotAllocator {
            slots,
            next_free: 0,
        }
    }

    /// Keeps `slot` (held by the same entry before).
    fn keep(&mut self, slot: u32) {
        self.slots[slot as usize].live = true;
    }

    fn fresh(&mut self) -> Option<(u32, u32)> {
        while self.next_free < self.slots.len() && self.slots[self.next_free].live {
            self.next_free += 1;
        }
        let s = self.slots.get_mut(self.next_free)?;
        s.live = true;
        s.gen = s.gen.wrapping_add(1);
        Some((self.next_free as u32, s.gen))
    }
}

impl Services {
    /// Checks `cfg` against `limits` and compiles it. `prev` is the snapshot in force, if
    /// any: services and real servers present in both keep their slots (and so their
    /// connections and counters), and rr/wrr keep their rotation.
    pub fn build(
        cfg: &Config,
        limits: &Limits,
        prev: Option<&Services>,
    ) -> Result<Services, ConfigError> {
        if cfg.services.len() > limits.max_services {
            return Err(ConfigError::TooManyServices(limits.max_services));
        }
        let total_reals: usize = cfg.services.iter().map(|s| s.reals.len()).sum();
        if total_reals > limits.max_dests {
            return Err(ConfigError::TooManyDests(limits.max_dests));
        }
        let mut index = Vec::with_capacity(cfg.services.len());
        for (i, s) in cfg.services.iter().enumerate() {
            s.validate()?;
            index.push((pack(&s.key), i as u32));
        }
        index.sort_unstable();
        if let Some(w) = index.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ConfigError::DuplicateService(
                cfg.services[w[1].1 as usize].key,
            ));
        }

        let prev_service =
            |key: &ServiceKey| prev.and_then(|p| p.find(key).map(|i| &p.services[i]));
        let prev_real = |key: &ServiceKey, addr: Ipv4Addr| {
            prev_service(key).and_then(|s| s.reals.iter().find(|r| r.addr == addr))
        };

        // Keep the slots of what already existed, then hand out fresh ones.
        let mut svc_slots =
            SlotAllocator::new(prev.map(|p| &p.service_slots[..]), limits.max_services);
        let mut dest_slots = SlotAllocator::new(
            prev.map(|p| p.dests.iter().map(|d| d.slot).collect::<Vec<_>>())
                .as_deref(),
            limits.max_dests,
        );
        for s in &cfg.services {
            if let Some(ps) = prev_service(&s.key) {
                svc_slots.keep(ps.slot);
            }
            for r in &s.reals {
                if let Some(pr) = prev_real(&s.key, r.addr) {
                    dest_slots.keep(pr.dest.slot);
                }
            }
        }

        let mut services = Vec::with_capacity(cfg.services.len());
        for s in &cfg.services {
            let (slot, slot_gen) = match prev_service(&s.key) {
                Some(ps) => (ps.slot, ps.slot_gen),
                None => svc_slots
                    .fresh()
                    .ok_or(ConfigError::TooManyServices(limits.max_services))?,
            };
            let mut reals = Vec::with_capacity(s.reals.len());
            for r in &s.reals {
                let dest = match prev_real(&s.key, r.addr) {
                    Some(pr) => pr.dest,
                    None => {
                        let (slot, gen) = dest_slots
                            .fresh()
                            .ok_or(ConfigError::TooManyDests(limits.max_dests))?;
                        DestRef { slot, gen }
                    }
                };
                reals.push(Real {
                    addr: r.addr,
                    weight: r.weight,
                    dest,
                    mac: r.mac,
                });
            }
            let view = View {
                reals: &reals,
                loads: None,
            };
            let mut sched = AnyScheduler::new(s.scheduler, &view);
            if let Some(ps) = prev_service(&s.key) {
                sched.inherit(&ps.sched, &view);
            }
            services.push(Service {
                key: s.key,
                slot,
                slot_gen,
                persistence: s.persistence,
                sched,
                reals,
            });
        }

        let mut dests: Box<[DestInfo]> = dest_slots
            .slots
            .iter()
            .map(|&slot| DestInfo {
                slot,
                mac: None,
                weight: 0,
            })
            .collect();
        for r in services.iter().flat_map(|s| &s.reals) {
            let d = &mut dests[r.dest.slot as usize];
            d.mac = r.mac;
            d.weight = r.weight;
        }
        let mut vips: Vec<Ipv4Addr> = cfg.services.iter().map(|s| s.key.vip).collect();
        vips.sort_unstable();
        vips.dedup();
        Ok(Services {
            director_mac: cfg.director_mac,
            options: cfg.options,
            vips,
            index,
            services,
            dests,
            service_slots: svc_slots.slots.into_boxed_slice(),
        })
    }

    /// The director's MAC.
    #[inline]
    pub fn director_mac(&self) -> Mac {
        self.director_mac
    }

    /// Behaviour switches.
    #[inline]
    pub fn options(&self) -> Options {
        self.options
    }

    /// Every VIP served, sorted.
    pub fn vips(&self) -> &[Ipv4Addr] {
        &self.vips
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
        let k = pack(key);
        self.index
            .binary_search_by_key(&k, |&(p, _)| p)
            .ok()
            .map(|i| self.index[i].1 as usize)
    }

    /// The compiled services, in configuration order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Where a connection to `d` should go now.
    #[inline]
    pub fn dest(&self, d: DestRef) -> DestStatus {
        match self.dests.get(d.slot as usize) {
            Some(info) if info.slot.live && info.slot.gen == d.gen => match info.mac {
                Some(mac) => DestStatus::Up {
                    mac,
                    weight: info.weight,
                },
                None => DestStatus::Unresolved,
            },
            _ => DestStatus::Removed,
        }
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

/// A service key as one integer: protocol, VIP, port.
#[inline]
fn pack(k: &ServiceKey) -> u64 {
    (u64::from(k.proto.ip_number()) << 48) | (u64::from(u32::from(k.vip)) << 16) | u64::from(k.port)
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
            vip: Ipv4Addr::new(198, 18, 0, 100),
            port,
        }
    }

    fn real(last: u8) -> RealSpec {
        RealSpec {
            addr: Ipv4Addr::new(198, 18, 0, last),
            weight: 1,
            mac: Some([2, 0, 0, 0, 1, last]),
        }
    }

    fn cfg(services: Vec<ServiceSpec>) -> Config {
        Config {
            director_mac: MAC,
            services,
            options: Options::default(),
        }
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
}
