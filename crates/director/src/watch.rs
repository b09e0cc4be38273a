//! What the director notices on its own while it runs: other hosts claiming a VIP (the
//! workers' [`ConflictLog`]s) and real servers whose MAC changes. Each new finding is
//! said once, with its fix; the counts go to the metrics.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use xdpvs_dataplane::stats::{ConflictLog, ConflictSeen};
use xdpvs_sched::model::Mac;

use crate::iface::format_mac;

/// The findings so far, and where each worker's log was read up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Per (worker, slot): the pair's sequence and the count already taken in.
    read: HashMap<(usize, usize), (u64, u64)>,
    conflicts: BTreeMap<(IpAddr, Mac), u64>,
    /// The last MAC each real server was seen at, and the changes logged.
    macs: HashMap<IpAddr, Mac>,
    moves: BTreeMap<IpAddr, u64>,
    moves_said: std::collections::HashSet<(IpAddr, Mac, Mac)>,
    /// Real servers unresolved, since when, and whether that was said.
    unresolved: HashMap<IpAddr, (Instant, bool)>,
    /// With `run --announce`: every configured VIP, and whether it is announced now.
    announced: Option<BTreeMap<IpAddr, bool>>,
}

/// How long a real server may stay unresolved before the director says so.
pub const UNRESOLVED_GRACE: Duration = Duration::from_secs(3);

/// A VIP claimed by another host, the first time it is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The VIP.
    pub vip: IpAddr,
    /// The MAC that claims it.
    pub mac: Mac,
}

impl Conflict {
    /// What to tell the operator: who it is (`host`: the real server at that MAC, if one
    /// is) and the fix.
    pub fn message(&self, host: Option<IpAddr>) -> String {
        let who = match host {
            Some(a) => format!("real server {a} ({})", format_mac(&self.mac)),
            None => format!("the host at {}", format_mac(&self.mac)),
        };
        let (what, fix) = match self.vip {
            IpAddr::V4(_) => ("answers ARP", "the VIP on lo, arp_ignore=1, arp_announce=2"),
            IpAddr::V6(_) => ("answers neighbour solicitations", "the VIP on lo only"),
        };
        format!(
            "VIP conflict: {who} {what} for {vip}: clients that reach it bypass the director. \
             Fix, on that host: xdpvs rs-setup --vip {vip} --apply --persist ({fix})",
            vip = self.vip
        )
    }
}

/// A real server seen at another MAC than before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacMove {
    /// The real server.
    pub addr: IpAddr,
    /// Where it was.
    pub from: Mac,
    /// Where it is now.
    pub to: Mac,
}

impl MacMove {
    /// What to tell the operator.
    pub fn message(&self) -> String {
        format!(
            "real server {a} moved from {f} to {t}: its connections now go to {t}. If it was \
             replaced, nothing to do; if two hosts answer ARP for {a} (a duplicate address), \
             its connections flip between them: give one of them another address",
            a = self.addr,
            f = format_mac(&self.from),
            t = format_mac(&self.to)
        )
    }
}

impl Watch {
    /// Takes in what the workers' logs hold now; returns the (VIP, MAC) pairs never seen
    /// before.
    pub fn conflicts_from<'a>(
        &mut self,
        logs: impl IntoIterator<Item = &'a ConflictLog>,
    ) -> Vec<Conflict> {
        let mut new = Vec::new();
        for (w, log) in logs.into_iter().enumerate() {
            for c in log.seen() {
                let ConflictSeen {
                    slot,
                    seq,
                    vip,
                    mac,
                    count,
                } = c;
                let taken = match self.read.insert((w, slot), (seq, count)) {
                    Some((s, n)) if s == seq => n,
                    _ => 0,
                };
                if count <= taken {
                    continue;
                }
                let total = self.conflicts.entry((vip, mac)).or_insert(0);
                if *total == 0 {
                    new.push(Conflict { vip, mac });
                }
                *total += count - taken;
            }
        }
        new
    }

    /// Frames seen claiming each VIP, by VIP and MAC.
    pub fn conflicts(&self) -> &BTreeMap<(IpAddr, Mac), u64> {
        &self.conflicts
    }

    /// Takes in a real server's MAC as the neighbour table now has it; returns the move
    /// when it differs from the last one seen and this move was not said before (two
    /// hosts taking turns are said once, and counted every time).
    pub fn real_at(&mut self, addr: IpAddr, mac: Mac) -> Option<MacMove> {
        let from = self.macs.insert(addr, mac)?;
        if from == mac {
            return None;
        }
        *self.moves.entry(addr).or_insert(0) += 1;
        let m = MacMove {
            addr,
            from,
            to: mac,
        };
        self.moves_said.insert((addr, from, mac)).then_some(m)
    }

    /// Takes in what `--announce` keeps now: `w.in_service` announced, the rest of
    /// `w.configured` withdrawn.
    pub fn set_announced(&mut self, w: &crate::announce::VipSet) {
        self.announced = Some(
            w.configured
                .union(&w.in_service)
                .map(|&v| (v, w.in_service.contains(&v)))
                .collect(),
        );
    }

    /// With `run --announce`: each configured VIP and whether it is announced.
    pub fn announced(&self) -> Option<&BTreeMap<IpAddr, bool>> {
        self.announced.as_ref()
    }

    /// MAC changes seen, by real server.
    pub fn moves(&self) -> &BTreeMap<IpAddr, u64> {
        &self.moves
    }

    /// Takes in the real servers unresolved `now`; returns those unresolved for
    /// [`UNRESOLVED_GRACE`] and not said yet (said again only after they resolved once).
    pub fn unresolved(&mut self, now: Instant, addrs: &[IpAddr]) -> Vec<IpAddr> {
        self.unresolved.retain(|a, _| addrs.contains(a));
        let mut say = Vec::new();
        for &a in addrs {
            let (since, said) = self.unresolved.entry(a).or_insert((now, false));
            if !*said && now.duration_since(*since) >= UNRESOLVED_GRACE {
                *said = true;
                say.push(a);
            }
        }
        say
    }
}

/// What to tell the operator about a real server that does not resolve.
pub fn unresolved_message(addr: IpAddr, iface: &str) -> String {
    let how = if addr.is_ipv4() {
        "ARP"
    } else {
        "neighbour solicitations"
    };
    format!(
        "real server {addr} has not answered {how} for {} s: it gets no traffic until it does. \
         Is it up, and on {iface}'s LAN? (xdpvs check probes every real server)",
        UNRESOLVED_GRACE.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const RS: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11));
    const M1: Mac = [2, 0, 0, 0, 0, 1];
    const M2: Mac = [2, 0, 0, 0, 0, 2];

    #[test]
    fn each_conflict_is_new_once_and_every_frame_counts_across_workers() {
        let (a, b) = (ConflictLog::default(), ConflictLog::default());
        let mut w = Watch::default();
        assert!(w.conflicts_from([&a, &b]).is_empty());
        a.record(VIP, M1);
        a.record(VIP, M1);
        b.record(VIP, M1);
        assert_eq!(w.conflicts_from([&a, &b]), [Conflict { vip: VIP, mac: M1 }]);
        assert_eq!(w.conflicts()[&(VIP, M1)], 3);
        // Read again: nothing new, nothing counted twice.
        assert!(w.conflicts_from([&a, &b]).is_empty());
        assert_eq!(w.conflicts()[&(VIP, M1)], 3);
        b.record(VIP, M1);
        b.record(VIP, M2);
        assert_eq!(w.conflicts_from([&a, &b]), [Conflict { vip: VIP, mac: M2 }]);
        assert_eq!(w.conflicts()[&(VIP, M1)], 4);
        assert_eq!(w.conflicts()[&(VIP, M2)], 1);
    }

    #[test]
    fn a_real_server_moving_is_said_once_per_move_and_counted_each_time() {
        let mut w = Watch::default();
        assert_eq!(w.real_at(RS, M1), None, "first seen: not a move");
        assert_eq!(w.real_at(RS, M1), None);
        let m = w.real_at(RS, M2).expect("moved");
        assert_eq!((m.from, m.to), (M1, M2));
        assert!(m
            .message()
            .contains("02:00:00:00:00:01 to 02:00:00:00:00:02"));
        assert_eq!(
            w.real_at(RS, M1).map(|m| m.to),
            Some(M1),
            "back: another move"
        );
        assert_eq!(w.real_at(RS, M2), None, "flipping again: said already");
        assert_eq!(w.moves()[&RS], 3);
    }

    #[test]
    fn an_unresolved_real_server_is_said_once_after_the_grace_until_it_resolves() {
        let mut w = Watch::default();
        let t0 = Instant::now();
        assert!(w.unresolved(t0, &[RS]).is_empty());
        assert!(w.unresolved(t0 + Duration::from_secs(1), &[RS]).is_empty());
        assert_eq!(w.unresolved(t0 + UNRESOLVED_GRACE, &[RS]), [RS]);
        assert!(
            w.unresolved(t0 + Duration::from_secs(10), &[RS]).is_empty(),
            "once"
        );
        // Resolved, then unresolved again: said again after the grace.
        assert!(w.unresolved(t0 + Duration::from_secs(11), &[]).is_empty());
        let t1 = t0 + Duration::from_secs(12);
        assert!(w.unresolved(t1, &[RS]).is_empty());
        assert_eq!(w.unresolved(t1 + UNRESOLVED_GRACE, &[RS]), [RS]);
        assert!(unresolved_message(RS, "eth0").contains("has not answered ARP for 3 s"));
    }

    #[test]
    fn a_conflict_names_the_real_server_and_the_fix() {
        let c = Conflict { vip: VIP, mac: M1 };
        let m = c.message(Some(RS));
        assert!(
            m.contains("real server 198.18.0.11 (02:00:00:00:00:01) answers ARP for 198.18.0.100"),
            "{m}"
        );
        assert!(
            m.contains("xdpvs rs-setup --vip 198.18.0.100 --apply --persist"),
            "{m}"
        );
        let v6 = Conflict {
            vip: "2001:2::100".parse().expect("address"),
            mac: M2,
        };
        assert!(v6.message(None).contains(
            "the host at 02:00:00:00:00:02 answers neighbour solicitations for 2001:2::100"
        ));
    }
}
