use std::net::IpAddr;

use crate::model::SchedKind;
use crate::{lc, mh, rr, sh, wlc, wrr};

/// A real server's connection counts, as ipvsadm shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// ActiveConn: TCP connections in ESTABLISHED.
    pub active: u32,
    /// InActConn: every other connection (TCP in other states, UDP).
    pub inactive: u32,
}

impl Load {
    /// IPVS's connection overhead: `active * 256 + inactive`.
    pub const fn overhead(self) -> u64 {
        ((self.active as u64) << 8) + self.inactive as u64
    }
}

/// What a scheduler sees of a service's real servers, in service order.
///
/// `weight(i) == 0` means "not available for new connections": quiescent (weight 0) or
/// not yet usable (MAC unresolved). Implemented by the dataplane over its live tables
/// and by plain slices of [`Candidate`] in tests.
pub trait DestView {
    /// How many real servers the service has.
    fn len(&self) -> usize;
    /// True if it has none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The real server's address (hashing schedulers use it to place servers).
    fn addr(&self, i: usize) -> IpAddr;
    /// Effective weight; 0 takes no new connections.
    fn weight(&self, i: usize) -> u32;
    /// The weight a consistent-hash table places the real server with: its configured
    /// weight, whatever its health or MAC say now, so that a real server going down or
    /// up moves only its own clients (it falls back while unavailable). By default the
    /// effective weight.
    fn placement_weight(&self, i: usize) -> u32 {
        self.weight(i)
    }
    /// Current connection counts.
    fn load(&self, i: usize) -> Load;
}

/// A plain real-server description, for tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Address.
    pub addr: IpAddr,
    /// Effective weight.
    pub weight: u32,
    /// Connection counts.
    pub load: Load,
}

impl DestView for [Candidate] {
    fn len(&self) -> usize {
        <[Candidate]>::len(self)
    }
    fn addr(&self, i: usize) -> IpAddr {
        self[i].addr
    }
    fn weight(&self, i: usize) -> u32 {
        self[i].weight
    }
    fn load(&self, i: usize) -> Load {
        self[i].load
    }
}

/// A scheduling algorithm: picks the real server for a new connection.
pub trait Scheduler {
    /// Recomputes internal tables after the service's real servers or weights changed.
    /// This is the only place a scheduler may allocate.
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D);

    /// Picks a real server (an index into `dests`) for a new connection from `client`,
    /// or `None` when no real server is available. Never allocates.
    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, client: IpAddr) -> Option<usize>;
}

/// Any of the schedulers, dispatched without a vtable.
#[derive(Clone, Debug)]
pub enum AnyScheduler {
    /// [`rr::Rr`]
    Rr(rr::Rr),
    /// [`wrr::Wrr`]
    Wrr(wrr::Wrr),
    /// [`lc::Lc`]
    Lc(lc::Lc),
    /// [`wlc::Wlc`]
    Wlc(wlc::Wlc),
    /// [`sh::Sh`]
    Sh(sh::Sh),
    /// [`mh::Mh`]
    Mh(mh::Mh),
}

impl AnyScheduler {
    /// A scheduler of `kind`, built for `dests`.
    pub fn new<D: DestView + ?Sized>(kind: SchedKind, dests: &D) -> AnyScheduler {
        let mut s = match kind {
            SchedKind::Rr => AnyScheduler::Rr(rr::Rr::default()),
            SchedKind::Wrr => AnyScheduler::Wrr(wrr::Wrr::default()),
            SchedKind::Lc => AnyScheduler::Lc(lc::Lc),
            SchedKind::Wlc => AnyScheduler::Wlc(wlc::Wlc),
            SchedKind::Sh => AnyScheduler::Sh(sh::Sh::default()),
            SchedKind::Mh => AnyScheduler::Mh(mh::Mh::default()),
        };
        s.rebuild(dests);
        s
    }

    /// Carries the rotation position of `old` (same algorithm) into this freshly built
    /// scheduler, so that a configuration change does not restart rr/wrr from the first
    /// server; IPVS keeps its position across changes too. Allocates nothing.
    pub fn inherit<D: DestView + ?Sized>(&mut self, old: &AnyScheduler, dests: &D) {
        match (self, old) {
            (AnyScheduler::Rr(new), AnyScheduler::Rr(o)) => {
                *new = o.clone();
                new.rebuild(dests);
            }
            (AnyScheduler::Wrr(new), AnyScheduler::Wrr(o)) => {
                *new = o.clone();
                new.rebuild(dests);
            }
            _ => {}
        }
    }

    /// Which algorithm this is.
    pub fn kind(&self) -> SchedKind {
        match self {
            AnyScheduler::Rr(_) => SchedKind::Rr,
            AnyScheduler::Wrr(_) => SchedKind::Wrr,
            AnyScheduler::Lc(_) => SchedKind::Lc,
            AnyScheduler::Wlc(_) => SchedKind::Wlc,
            AnyScheduler::Sh(_) => SchedKind::Sh,
            AnyScheduler::Mh(_) => SchedKind::Mh,
        }
    }

    /// For a consistent-hash scheduler (`mh`), its pick for `client` without changing
    /// anything: the same on every worker and every director with the same
    /// configuration, so it can place a flow that has no entry (a connection another
    /// director opened, or one the full table could not record). `None` for the others.
    pub fn consistent_pick<D: DestView + ?Sized>(
        &self,
        dests: &D,
        client: IpAddr,
    ) -> Option<Option<usize>> {
        match self {
            AnyScheduler::Mh(s) => Some(s.lookup(dests, client)),
            _ => None,
        }
    }
}

impl Scheduler for AnyScheduler {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        match self {
            AnyScheduler::Rr(s) => s.rebuild(dests),
            AnyScheduler::Wrr(s) => s.rebuild(dests),
            AnyScheduler::Lc(s) => s.rebuild(dests),
            AnyScheduler::Wlc(s) => s.rebuild(dests),
            AnyScheduler::Sh(s) => s.rebuild(dests),
            AnyScheduler::Mh(s) => s.rebuild(dests),
        }
    }

    #[inline]
    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, client: IpAddr) -> Option<usize> {
        match self {
            AnyScheduler::Rr(s) => s.pick(dests, client),
            AnyScheduler::Wrr(s) => s.pick(dests, client),
            AnyScheduler::Lc(s) => s.pick(dests, client),
            AnyScheduler::Wlc(s) => s.pick(dests, client),
            AnyScheduler::Sh(s) => s.pick(dests, client),
            AnyScheduler::Mh(s) => s.pick(dests, client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::dests;
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    proptest! {
        /// Every scheduler picks only servers with weight > 0, and returns `None` only
        /// when there is none.
        #[test]
        fn picks_only_available(
            weights in prop::collection::vec(0u32..5, 0..10),
            actives in prop::collection::vec(0u32..1000, 10),
            clients in prop::collection::vec(any::<u32>(), 1..20),
        ) {
            let mut d = dests(&weights);
            for (c, a) in d.iter_mut().zip(&actives) { c.load.active = *a; }
            let any_available = weights.iter().any(|&w| w > 0);
            for kind in SchedKind::ALL {
                let mut s = AnyScheduler::new(kind, &d[..]);
                prop_assert_eq!(s.kind(), kind);
                for &c in &clients {
                    match s.pick(&d[..], Ipv4Addr::from(c).into()) {
                        Some(i) => prop_assert!(d[i].weight > 0, "{} picked quiescent {}", kind, i),
                        None => prop_assert!(!any_available, "{} found nothing", kind),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod inherit_tests {
    use super::testutil::{dests, picks};
    use super::*;

    #[test]
    fn rr_keeps_its_place_across_a_change() {
        let d = dests(&[1, 1, 1]);
        let mut old = AnyScheduler::new(SchedKind::Rr, &d[..]);
        assert_eq!(picks(&mut old, &d, 2), [Some(0), Some(1)]);
        let d4 = dests(&[1, 1, 1, 1]);
        let mut new = AnyScheduler::new(SchedKind::Rr, &d4[..]);
        new.inherit(&old, &d4[..]);
        assert_eq!(picks(&mut new, &d4, 3), [Some(2), Some(3), Some(0)]);
    }
}

/// Helpers shared by the scheduler tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::net::Ipv4Addr;

    /// Real servers 10.0.0.1.. with the given weights and no load.
    pub fn dests(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                addr: Ipv4Addr::new(198, 18, 1, i as u8 + 1).into(),
                weight: w,
                load: Load::default(),
            })
            .collect()
    }

    /// `n` picks from the same client.
    pub fn picks<S: Scheduler>(s: &mut S, d: &[Candidate], n: usize) -> Vec<Option<usize>> {
        (0..n)
            .map(|_| s.pick(d, Ipv4Addr::new(198, 19, 0, 1).into()))
            .collect()
    }
}
