//! Locality-based least connection with replication (IPVS `lblcr`): each destination
//! address keeps a set of real servers; a connection goes to the set's least-loaded
//! available member unless it is overloaded, in which case the least-loaded server of
//! the service is added to the set and takes it. A set of more than one member that has
//! not changed for 24 h (IPVS's `lblcr_expiration`) loses its most loaded member at the
//! next connection; an entry unused for as long is forgotten.
//!
//! As with [`crate::lblc`], the destination is the VIP, and entries live in a fixed
//! table of 1,024; a set holds 16 servers at most (the least recently added makes way).

use std::net::IpAddr;

use crate::lblc::{index_of, least_loaded, overloaded, slot, EXPIRATION};
use crate::scheduler::{DestView, Pick, Scheduler};
use crate::Time;

const SLOTS: usize = 1024;
/// Members of a set at most.
pub const SET: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Entry {
    dest_addr: IpAddr,
    /// Members, oldest first; `len` of them.
    servers: [IpAddr; SET],
    len: usize,
    last_mod: Time,
    last_use: Time,
}

impl Entry {
    fn members(&self) -> &[IpAddr] {
        &self.servers[..self.len]
    }

    /// Adds `server` (a member already: nothing changes, as IPVS's set insert).
    fn insert(&mut self, server: IpAddr, now: Time) {
        if self.members().contains(&server) {
            return;
        }
        if self.len == SET {
            self.servers.copy_within(1.., 0);
            self.len -= 1;
        }
        self.servers[self.len] = server;
        self.len += 1;
        self.last_mod = now;
    }

    fn remove(&mut self, server: IpAddr) {
        if let Some(k) = self.members().iter().position(|&s| s == server) {
            self.servers.copy_within(k + 1..self.len, k);
            self.len -= 1;
        }
    }
}

/// Locality-based least-connection-with-replication state: destination -> servers.
#[derive(Clone, Debug)]
pub struct Lblcr {
    table: Box<[Option<Entry>]>,
}

impl Default for Lblcr {
    fn default() -> Lblcr {
        Lblcr {
            table: vec![None; SLOTS].into_boxed_slice(),
        }
    }
}

/// The member of `set` with the least (`most`: the greatest) overhead per weight, among
/// those the service still has with a weight above 0.
fn extreme<D: DestView + ?Sized>(dests: &D, set: &[IpAddr], most: bool) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for i in set.iter().filter_map(|&a| index_of(dests, a)) {
        let w = u64::from(dests.weight(i));
        if w == 0 {
            continue;
        }
        let oh = dests.load(i).overhead();
        let better = match best {
            None => true,
            // oh/w < boh/bw (least) or oh/w > boh/bw (most)
            Some((_, boh, bw)) if most => oh * bw > boh * w,
            Some((_, boh, bw)) => boh * w > oh * bw,
        };
        if better {
            best = Some((i, oh, w));
        }
    }
    best.map(|(i, _, _)| i)
}

impl Scheduler for Lblcr {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize> {
        let at = slot(flow.vip, self.table.len());
        let now = flow.now;
        if let Some(e) = self.table[at]
            .as_mut()
            .filter(|e| e.dest_addr == flow.vip && now.since(e.last_use) <= EXPIRATION)
        {
            e.last_use = now;
            let least = extreme(dests, e.members(), false);
            if e.len > 1 && now.since(e.last_mod) > EXPIRATION {
                if let Some(m) = extreme(dests, e.members(), true) {
                    e.remove(dests.addr(m));
                    e.last_mod = now;
                }
            }
            if let Some(i) = least.filter(|&i| !overloaded(dests, i)) {
                return Some(i);
            }
            let i = least_loaded(dests)?;
            e.insert(dests.addr(i), now);
            return Some(i);
        }
        let i = least_loaded(dests)?;
        let mut e = Entry {
            dest_addr: flow.vip,
            servers: [dests.addr(i); SET],
            len: 0,
            last_mod: now,
            last_use: now,
        };
        e.insert(dests.addr(i), now);
        self.table[at] = Some(e);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use std::net::Ipv4Addr;

    fn at(secs: u64) -> Pick {
        Pick {
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            now: Time::from_secs(secs),
            ..Pick::from_client(Ipv4Addr::new(198, 19, 0, 1).into())
        }
    }

    #[test]
    fn an_overloaded_set_grows_and_an_old_one_shrinks() {
        let mut d = dests(&[2, 2, 2]);
        let mut s = Lblcr::default();
        assert_eq!(s.pick(&d[..], &at(0)), Some(0));
        d[0].load.active = 3; // over its weight while others are idle
        assert_eq!(
            s.pick(&d[..], &at(1)),
            Some(1),
            "the least loaded joins the set"
        );
        d[1].load.active = 1;
        // The set {0, 1}: its least loaded member, 1, is not overloaded.
        assert_eq!(s.pick(&d[..], &at(2)), Some(1));
        d[1].load.active = 3;
        assert_eq!(
            s.pick(&d[..], &at(3)),
            Some(2),
            "both overloaded: the third joins"
        );
        // Nothing added for longer than the expiration: the most loaded member leaves.
        d[0].load.active = 0;
        d[1].load.active = 5;
        d[2].load.active = 0;
        let late = 3 + EXPIRATION.as_secs() / 2;
        assert_eq!(
            s.pick(&d[..], &at(late)),
            Some(0),
            "still in use: least loaded"
        );
        let later = 3 + EXPIRATION.as_secs() + 1;
        s.pick(&d[..], &at(later));
        let e = s.table[slot(at(0).vip, SLOTS)].expect("entry");
        assert!(!e.members().contains(&d[1].addr), "{:?}", e.members());
    }
}
