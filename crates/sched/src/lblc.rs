//! Locality-based least connection (IPVS `lblc`): each destination address keeps the
//! real server it was last given while that server is available and not overloaded;
//! otherwise (and for a new destination) the least-loaded one by `wlc`'s measure is
//! given and remembered. A server is overloaded when its active connections exceed its
//! weight while another has fewer than half its weight active. An entry unused for 24 h
//! (IPVS's `lblc_expiration`) is forgotten.
//!
//! The destination is the VIP: with a VIP per service, all of a service's connections go
//! to one server until it is overloaded (IPVS meant `lblc` for firewall-mark services in
//! front of cache clusters). The entries live in a fixed table of 1,024 (IPVS's bucket
//! count), one per slot: two destinations that share a slot take turns.

use std::net::IpAddr;
use std::time::Duration;

use crate::scheduler::{least_weighted, DestView, Load, Pick, Scheduler};
use crate::Time;

/// Entries (a power of two).
const SLOTS: usize = 1024;
/// How long an unused entry lives (IPVS's `lblc_expiration` default).
pub const EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone, Copy, Debug)]
struct Entry {
    dest_addr: IpAddr,
    server: IpAddr,
    last_use: Time,
}

/// Locality-based least-connection state: destination -> real server.
#[derive(Clone, Debug)]
pub struct Lblc {
    table: Box<[Option<Entry>]>,
}

impl Default for Lblc {
    fn default() -> Lblc {
        Lblc {
            table: vec![None; SLOTS].into_boxed_slice(),
        }
    }
}

/// The slot of destination `addr`.
pub(crate) fn slot(addr: IpAddr, slots: usize) -> usize {
    (crate::hash::addr_word(addr).wrapping_mul(2_654_435_761) as usize) & (slots - 1)
}

/// The index of the real server at `addr`, if the service still has it.
pub(crate) fn index_of<D: DestView + ?Sized>(dests: &D, addr: IpAddr) -> Option<usize> {
    (0..dests.len()).find(|&i| dests.addr(i) == addr)
}

/// IPVS's overload test of `lblc` and `lblcr`: more active connections than its weight,
/// while some server has fewer than half its weight active.
pub(crate) fn overloaded<D: DestView + ?Sized>(dests: &D, i: usize) -> bool {
    dests.load(i).active > dests.weight(i)
        && (0..dests.len()).any(|d| dests.load(d).active * 2 < dests.weight(d))
}

/// `wlc`'s least-loaded server, by ipvsadm's connection overhead.
pub(crate) fn least_loaded<D: DestView + ?Sized>(dests: &D) -> Option<usize> {
    least_weighted(dests, Load::overhead)
}

impl Scheduler for Lblc {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize> {
        let at = slot(flow.vip, self.table.len());
        if let Some(e) = &mut self.table[at] {
            if e.dest_addr == flow.vip && flow.now.since(e.last_use) <= EXPIRATION {
                e.last_use = flow.now;
                if let Some(i) = index_of(dests, e.server) {
                    if dests.weight(i) > 0 && !overloaded(dests, i) {
                        return Some(i);
                    }
                }
            }
        }
        let i = least_loaded(dests)?;
        self.table[at] = Some(Entry {
            dest_addr: flow.vip,
            server: dests.addr(i),
            last_use: flow.now,
        });
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use std::net::Ipv4Addr;

    fn to(vip: Ipv4Addr, secs: u64) -> Pick {
        Pick {
            vip: vip.into(),
            now: Time::from_secs(secs),
            ..Pick::from_client(Ipv4Addr::new(198, 19, 0, 1).into())
        }
    }

    #[test]
    fn a_destination_keeps_its_server_until_it_is_overloaded() {
        let (a, b) = (
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 101),
        );
        let mut d = dests(&[2, 2]);
        let mut s = Lblc::default();
        assert_eq!(s.pick(&d[..], &to(a, 0)), Some(0));
        d[0].load.active = 2;
        assert_eq!(
            s.pick(&d[..], &to(a, 1)),
            Some(0),
            "kept while not over its weight"
        );
        assert_eq!(
            s.pick(&d[..], &to(b, 1)),
            Some(1),
            "a new destination: least loaded"
        );
        d[0].load.active = 3; // over its weight, while server 1 is under half of its
        assert_eq!(s.pick(&d[..], &to(a, 2)), Some(1), "overloaded: moved");
        assert_eq!(s.pick(&d[..], &to(a, 3)), Some(1), "and kept there");
        // Unused for longer than the expiration: forgotten, scheduled afresh.
        d[0].load.active = 0;
        d[1].load.active = 1;
        let late = 3 + EXPIRATION.as_secs() + 1;
        assert_eq!(s.pick(&d[..], &to(a, late)), Some(0));
        // A server gone: scheduled afresh.
        d[0].weight = 0;
        assert_eq!(s.pick(&d[..], &to(a, late)), Some(1));
    }
}
