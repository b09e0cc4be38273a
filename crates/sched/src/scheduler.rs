//! What every scheduler implements, and what it sees: the real servers ([`DestView`])
//! and the new connection ([`Pick`]).

use std::net::IpAddr;

use crate::Time;

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
    /// Calls `f(i, weight(i), load)` for every real server in order, where `load` is
    /// `load(i)` whenever `weight(i)` is above 0 (and anything otherwise): one pass for
    /// the schedulers that weigh every real server's load, which a view may make cheaper
    /// than asking by index.
    #[inline]
    fn each_weighted(&self, mut f: impl FnMut(usize, u32, Load)) {
        for i in 0..self.len() {
            let w = self.weight(i);
            f(
                i,
                w,
                if w == 0 {
                    Load::default()
                } else {
                    self.load(i)
                },
            );
        }
    }
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

/// What a scheduler may look at of a new connection: IPVS's schedulers hash the
/// client's address (`sh`, `mh`), its port too (`-b sh-port`, `mh-port`), or the
/// packet's destination (`dh`, `lblc`, `lblcr`: the VIP), and some keep state in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The client's address.
    pub client: IpAddr,
    /// The client's port.
    pub cport: u16,
    /// The destination address (the VIP).
    pub vip: IpAddr,
    /// Now.
    pub now: Time,
}

impl Pick {
    /// A connection from `client` (port 0, to the unspecified address, at time 0): for
    /// tools and tests where only the client counts.
    pub fn from_client(client: IpAddr) -> Pick {
        Pick {
            client,
            cport: 0,
            vip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            now: Time::ZERO,
        }
    }
}

/// A scheduling algorithm: picks the real server for a new connection.
pub trait Scheduler {
    /// Recomputes internal tables after the service's real servers or weights changed.
    /// This is the only place a scheduler may allocate.
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D);

    /// Picks a real server (an index into `dests`) for the new connection `flow`, or
    /// `None` when none can take it. Never allocates.
    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize>;
}

/// The available real server (weight above 0) that `admit` lets in with the highest
/// weight; the first of equals in service order. `fo`, and `ovf` (which admits a server
/// only while its active connections do not exceed its weight).
pub fn heaviest<D: DestView + ?Sized>(dests: &D, admit: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for i in 0..dests.len() {
        let w = dests.weight(i);
        if w > best.map_or(0, |(_, bw)| bw) && admit(i) {
            best = Some((i, w));
        }
    }
    best.map(|(i, _)| i)
}

/// The available real server (weight above 0) with the least `overhead / weight`,
/// compared by cross-multiplication as IPVS does; ties go to the first in service order.
/// `wlc` with ipvsadm's connection overhead, and the fallback of `lblc` and `lblcr`.
pub fn least_weighted<D: DestView + ?Sized>(
    dests: &D,
    overhead: impl Fn(Load) -> u64,
) -> Option<usize> {
    // The best so far as overhead `loh` over weight `lw`, starting from 1/0 (worse than
    // any real server with a weight): `oh / w < loh / lw` <=> `loh * w > oh * lw` (u64:
    // 2^40 * 2^16 cannot overflow). A weight of 0 never passes (0 > x is false), so
    // neither the unavailable nor a first candidate needs a branch of its own.
    let (mut best, mut loh, mut lw) = (usize::MAX, 1u64, 0u64);
    dests.each_weighted(|i, w, load| {
        let w = u64::from(w);
        let oh = overhead(load);
        if loh * w > oh * lw {
            (best, loh, lw) = (i, oh, w);
        }
    });
    (best != usize::MAX).then_some(best)
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
            .map(|_| s.pick(d, &client(Ipv4Addr::new(198, 19, 0, 1))))
            .collect()
    }

    /// A connection from `c`.
    pub fn client(c: Ipv4Addr) -> Pick {
        Pick::from_client(c.into())
    }
}
