//! Maglev hashing (IPVS `mh`): a lookup table of prime size `M` filled from each real
//! server's own permutation of the slots, so that adding or removing one of N servers
//! moves only about 1/N of the clients.
//!
//! - `M` is 65521 (IPVS's default) while that is at least 100 x the number of real
//!   servers, else the smallest prime at or above 100 x N. Keeping `M` fixed across
//!   small changes is what keeps disruption minimal.
//! - Weights are honoured: in each filling round a server earns credit equal to its
//!   weight and claims one slot per `max_weight` of credit, so its share of the table is
//!   its share of the total weight.
//! - A server's place depends only on its address, and a client's slot only on its
//!   address; servers fill the table in address order, not in the order they were
//!   added: every worker, and every director with the same configuration, builds the
//!   same table.
//! - The table is built from the configured weights ([`DestView::placement_weight`]),
//!   whatever the servers' health: a client whose server is unavailable (a failed
//!   check, an unresolved MAC) falls back along the table to the next available one, so a
//!   server going down or coming back moves only its own clients.

use std::net::IpAddr;

use crate::hash::mix64;
use crate::model::SchedFlags;
use crate::scheduler::{DestView, Pick, Scheduler};

const NONE: u16 = u16::MAX;
/// IPVS's default table size (a prime).
pub const DEFAULT_TABLE_SIZE: usize = 65521;
const OFFSET_SEED: u64 = 0x6D68_5F6F_6666_7365; // arbitrary, fixed
const SKIP_SEED: u64 = 0x6D68_5F73_6B69_7021;
const CLIENT_SEED: u64 = 0x6D68_5F63_6C69_656E;

/// Maglev state: the lookup table, and whether the client's port is hashed too
/// (`-b mh-port`).
#[derive(Clone, Debug, Default)]
pub struct Mh {
    table: Vec<u16>,
    port: bool,
}

/// `x` reduced to `0..m` without a division (Lemire's multiply-shift).
#[inline]
fn reduce(x: u64, m: usize) -> usize {
    ((u128::from(x) * m as u128) >> 64) as usize
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The table size used for `reals` real servers.
pub fn table_size(reals: usize) -> usize {
    let want = reals.saturating_mul(100);
    if want <= DEFAULT_TABLE_SIZE {
        return DEFAULT_TABLE_SIZE;
    }
    (want..)
        .find(|&n| is_prime(n))
        .unwrap_or(DEFAULT_TABLE_SIZE)
}

impl Mh {
    /// The table size in use (0 before the first rebuild).
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Maglev with ipvsadm's `-b` flags: `mh-port` (flag-2) hashes the client's port
    /// with its address; `mh-fallback` (flag-1) is how xdpvs's `mh` always works.
    pub fn new(flags: SchedFlags) -> Mh {
        Mh {
            table: Vec::new(),
            port: flags.has(SchedFlags::FLAG2),
        }
    }

    fn slot(&self, client: IpAddr, cport: u16) -> usize {
        let port = if self.port { u64::from(cport) << 32 } else { 0 };
        reduce(
            mix64((u64::from(crate::hash::addr_word(client)) | port) ^ CLIENT_SEED),
            self.table.len(),
        )
    }
}

impl Scheduler for Mh {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        let n = dests.len().min(usize::from(NONE));
        let m = table_size(n);
        self.table.clear();
        self.table.resize(m, NONE);
        // (index, weight, position, skip, credit) for the configured servers, in address
        // order (the filling order decides who wins a contested slot)
        let mut placed: Vec<usize> = (0..n).filter(|&i| dests.placement_weight(i) > 0).collect();
        placed.sort_by_key(|&i| dests.addr(i));
        let mut perms: Vec<(u16, u64, usize, usize, u64)> = placed
            .into_iter()
            .map(|i| {
                let a = u64::from(crate::hash::addr_word(dests.addr(i)));
                let offset = reduce(mix64(a ^ OFFSET_SEED), m);
                let skip = reduce(mix64(a ^ SKIP_SEED), m - 1) + 1;
                (
                    i as u16,
                    u64::from(dests.placement_weight(i)),
                    offset,
                    skip,
                    0,
                )
            })
            .collect();
        let Some(max_w) = perms.iter().map(|p| p.1).max() else {
            return;
        };
        let mut filled = 0;
        while filled < m {
            for (idx, w, pos, skip, credit) in perms.iter_mut() {
                *credit += *w;
                while *credit >= max_w {
                    *credit -= max_w;
                    // m is prime and 0 < skip < m, so the walk visits every slot.
                    while self.table[*pos] != NONE {
                        *pos += *skip;
                        if *pos >= m {
                            *pos -= m;
                        }
                    }
                    self.table[*pos] = *idx;
                    filled += 1;
                    if filled == m {
                        return;
                    }
                }
            }
        }
    }

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize> {
        self.lookup(dests, flow)
    }
}

impl Mh {
    /// [`Scheduler::pick`], which changes nothing.
    pub fn lookup<D: DestView + ?Sized>(&self, dests: &D, flow: &Pick) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let i = usize::from(self.table[self.slot(flow.client, flow.cport)]);
        if i < dests.len() && dests.weight(i) > 0 {
            return Some(i);
        }
        // Its server is unavailable (down, unresolved, or weights changed without a
        // rebuild): the next available one along the table, the same on every director.
        if !(0..dests.len()).any(|i| dests.weight(i) > 0) {
            return None;
        }
        let start = self.slot(flow.client, flow.cport);
        (1..self.table.len())
            .map(|k| usize::from(self.table[(start + k) % self.table.len()]))
            .find(|&i| i < dests.len() && dests.weight(i) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use crate::scheduler::Candidate;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn owners(s: &mut Mh, d: &[Candidate], clients: &[Ipv4Addr]) -> Vec<Option<IpAddr>> {
        clients
            .iter()
            .map(|&c| s.pick(d, &Pick::from_client(c.into())).map(|i| d[i].addr))
            .collect()
    }

    fn clients(n: u32) -> Vec<Ipv4Addr> {
        (0..n)
            .map(|k| Ipv4Addr::from(0xC612_0000u32 + k * 7919))
            .collect()
    }

    #[test]
    fn table_sizes() {
        assert_eq!(table_size(3), 65521);
        assert_eq!(table_size(655), 65521);
        assert!(is_prime(table_size(1000)) && table_size(1000) >= 100_000);
    }

    #[test]
    fn weights_are_honoured() {
        let d = dests(&[3, 2, 1]);
        let mut s = Mh::default();
        s.rebuild(&d[..]);
        let m = s.table_len() as f64;
        for (i, share) in [(0u16, 0.5), (1, 1.0 / 3.0), (2, 1.0 / 6.0)] {
            let got = s.table.iter().filter(|&&x| x == i).count() as f64 / m;
            assert!(
                (got - share).abs() < 0.01,
                "server {i}: share {got}, want {share}"
            );
        }
    }

    #[test]
    fn quiescent_gets_nothing_and_empty_is_none() {
        let d = dests(&[1, 0, 1]);
        let mut s = Mh::default();
        s.rebuild(&d[..]);
        assert!(!s.table.contains(&1));
        let mut e = Mh::default();
        e.rebuild(&dests(&[0, 0])[..]);
        assert_eq!(
            e.pick(
                &dests(&[0, 0])[..],
                &Pick::from_client(IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            None
        );
    }

    /// Real servers with a configured weight and whether they are available now.
    struct Health(Vec<(IpAddr, u32, bool)>);

    impl DestView for Health {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn addr(&self, i: usize) -> IpAddr {
            self.0[i].0
        }
        fn weight(&self, i: usize) -> u32 {
            if self.0[i].2 {
                self.0[i].1
            } else {
                0
            }
        }
        fn placement_weight(&self, i: usize) -> u32 {
            self.0[i].1
        }
        fn load(&self, _: usize) -> crate::scheduler::Load {
            crate::scheduler::Load::default()
        }
    }

    fn owners_of(s: &mut Mh, d: &Health, clients: &[Ipv4Addr]) -> Vec<Option<IpAddr>> {
        clients
            .iter()
            .map(|&c| s.pick(d, &Pick::from_client(c.into())).map(|i| d.0[i].0))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The order in which real servers were added does not matter: every director
        /// with the same servers and weights sends every client to the same server.
        #[test]
        fn the_table_does_not_depend_on_the_order_of_the_servers(
            weights in prop::collection::vec(1u32..4, 2..12),
            seed in any::<u64>(),
        ) {
            let cs = clients(5_000);
            let servers: Vec<(IpAddr, u32, bool)> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (IpAddr::from(Ipv4Addr::new(198, 18, 0, 10 + i as u8)), w, true))
                .collect();
            let mut shuffled = servers.clone();
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let (a, b) = (Health(servers), Health(shuffled));
            let (mut s, mut t) = (Mh::default(), Mh::default());
            s.rebuild(&a);
            t.rebuild(&b);
            prop_assert_eq!(owners_of(&mut s, &a, &cs), owners_of(&mut t, &b, &cs));
        }

        /// A server going down moves only its own clients, spread over the others, and
        /// coming back takes exactly them back.
        #[test]
        fn a_server_going_down_moves_only_its_clients(
            n in 2usize..20,
            down in any::<prop::sample::Index>(),
        ) {
            let cs = clients(10_000);
            let mut servers: Vec<(IpAddr, u32, bool)> = (0..n)
                .map(|i| (IpAddr::from(Ipv4Addr::new(198, 18, 1, 10 + i as u8)), 1, true))
                .collect();
            let mut s = Mh::default();
            let up = Health(servers.clone());
            s.rebuild(&up);
            let before = owners_of(&mut s, &up, &cs);
            let d = down.index(n);
            servers[d].2 = false;
            let one_down = Health(servers.clone());
            s.rebuild(&one_down);
            let after = owners_of(&mut s, &one_down, &cs);
            for (b, a) in before.iter().zip(&after) {
                if *b == Some(servers[d].0) {
                    prop_assert!(a.is_some() && *a != *b, "its clients go elsewhere");
                } else {
                    prop_assert_eq!(a, b, "others stay");
                }
            }
            servers[d].2 = true;
            let back = Health(servers);
            s.rebuild(&back);
            prop_assert_eq!(owners_of(&mut s, &back, &cs), before);
        }

        /// Removing one of N real servers moves the clients it had (about 1/N) plus at most
        /// 2% of all clients more; adding one moves at most 1/(N+1) + 2%.
        /// The bound tested: moved <= 1/N + 0.02 (removal), <= 1/(N+1) + 0.02 (addition).
        #[test]
        fn disruption_is_about_one_over_n(n in 2usize..40, victim in any::<prop::sample::Index>()) {
            let cs = clients(20_000);
            let all = dests(&vec![1; n + 1]);
            let (before, after) = (&all[..n], &all[..]);
            let mut s = Mh::default();

            // Addition of server n.
            s.rebuild(before);
            let o1 = owners(&mut s, before, &cs);
            s.rebuild(after);
            let o2 = owners(&mut s, after, &cs);
            let moved = o1.iter().zip(&o2).filter(|(a, b)| a != b).count() as f64 / cs.len() as f64;
            prop_assert!(moved <= 1.0 / (n + 1) as f64 + 0.02, "add: moved {moved} of N+1={}", n + 1);

            // Removal of a random one of the N+1.
            let v = victim.index(n + 1);
            let fewer: Vec<Candidate> = after.iter().enumerate().filter(|(i, _)| *i != v).map(|(_, d)| *d).collect();
            s.rebuild(&fewer[..]);
            let o3 = owners(&mut s, &fewer, &cs);
            let moved = o2.iter().zip(&o3).filter(|(a, b)| a != b).count() as f64 / cs.len() as f64;
            prop_assert!(moved <= 1.0 / (n + 1) as f64 + 0.02, "remove: moved {moved} of N={}", n + 1);
            // Nobody is sent to the removed server.
            prop_assert!(o3.iter().all(|o| *o != Some(after[v].addr)));
        }
    }
}
