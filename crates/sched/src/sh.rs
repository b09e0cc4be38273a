//! Source hashing (IPVS `sh`): the client address picks one of 256 buckets; buckets are
//! dealt to real servers in service order, `weight` consecutive buckets each (at least
//! one), as IPVS does.
//!
//! When a client's server is not available (quiescent, its check failed, unresolved),
//! the connection is refused, as IPVS does, unless `-b sh-fallback` (flag-1): then the
//! next bucket with an available server takes it. `-b sh-port` (flag-2) hashes the
//! client's port with its address.

use std::net::IpAddr;

use crate::hash::fib32;
use crate::model::SchedFlags;
use crate::scheduler::{DestView, Pick, Scheduler};

const BITS: u32 = 8;
const BUCKETS: usize = 1 << BITS;
const NONE: u16 = u16::MAX;

/// Source-hash state: the bucket table and the flags.
#[derive(Clone, Debug)]
pub struct Sh {
    buckets: Box<[u16; BUCKETS]>,
    fallback: bool,
    port: bool,
}

impl Default for Sh {
    fn default() -> Sh {
        Sh::new(SchedFlags::NONE)
    }
}

impl Sh {
    /// Source hashing with ipvsadm's `-b` flags.
    pub fn new(flags: SchedFlags) -> Sh {
        Sh {
            buckets: Box::new([NONE; BUCKETS]),
            fallback: flags.has(SchedFlags::FLAG1),
            port: flags.has(SchedFlags::FLAG2),
        }
    }

    /// The bucket a client (and its port, 0 without `sh-port`) hashes to, as IPVS's
    /// `ip_vs_sh_hashkey`: `hash_32(port + address)`.
    pub fn bucket(client: IpAddr, port: u16) -> usize {
        fib32(
            crate::hash::addr_word(client).wrapping_add(u32::from(port)),
            BITS,
        ) as usize
    }
}

impl Scheduler for Sh {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        let n = dests.len().min(usize::from(NONE));
        if n == 0 {
            *self.buckets = [NONE; BUCKETS];
            return;
        }
        let (mut d, mut used) = (0usize, 0u32);
        for b in self.buckets.iter_mut() {
            *b = d as u16;
            used += 1;
            if used >= dests.weight(d).max(1) {
                d = (d + 1) % n;
                used = 0;
            }
        }
    }

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize> {
        let start = Sh::bucket(flow.client, if self.port { flow.cport } else { 0 });
        let tries = if self.fallback { BUCKETS } else { 1 };
        for k in 0..tries {
            let i = usize::from(self.buckets[(start + k) % BUCKETS]);
            if i < dests.len() && dests.weight(i) > 0 {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use std::net::Ipv4Addr;

    #[test]
    fn same_client_same_server_and_fallback() {
        let mut d = dests(&[1, 1, 1]);
        let mut s = Sh::new(SchedFlags(SchedFlags::FLAG1));
        s.rebuild(&d[..]);
        let c = Ipv4Addr::new(198, 19, 7, 9);
        let first = s
            .pick(&d[..], &Pick::from_client(c.into()))
            .expect("available");
        for _ in 0..10 {
            assert_eq!(s.pick(&d[..], &Pick::from_client(c.into())), Some(first));
        }
        // Quiesce that server: the client falls back, others keep their server.
        let others: Vec<_> = (0..200u8)
            .map(|k| Ipv4Addr::new(198, 19, 8, k))
            .map(|c| (c, s.pick(&d[..], &Pick::from_client(c.into()))))
            .filter(|(_, p)| *p != Some(first))
            .collect();
        d[first].weight = 0;
        s.rebuild(&d[..]);
        let fb = s
            .pick(&d[..], &Pick::from_client(c.into()))
            .expect("fallback");
        assert_ne!(fb, first);
        for (c, p) in others {
            assert_eq!(s.pick(&d[..], &Pick::from_client(c.into())), p);
        }
    }

    #[test]
    fn without_sh_fallback_an_unavailable_server_refuses_as_ipvs() {
        let mut d = dests(&[1, 1, 1]);
        let mut s = Sh::default();
        s.rebuild(&d[..]);
        let c = Pick::from_client(Ipv4Addr::new(198, 19, 7, 9).into());
        let first = s.pick(&d[..], &c).expect("available");
        d[first].weight = 0;
        assert_eq!(s.pick(&d[..], &c), None);
    }

    #[test]
    fn sh_port_spreads_one_client_s_ports() {
        let d = dests(&[1, 1, 1]);
        let flow = |port| Pick {
            cport: port,
            ..Pick::from_client(Ipv4Addr::new(198, 19, 7, 9).into())
        };
        let mut plain = Sh::default();
        plain.rebuild(&d[..]);
        let mut ported = Sh::new(SchedFlags(SchedFlags::FLAG2));
        ported.rebuild(&d[..]);
        let by = |s: &mut Sh| -> std::collections::BTreeSet<usize> {
            (1000..1100)
                .filter_map(|p| s.pick(&d[..], &flow(p)))
                .collect()
        };
        assert_eq!(by(&mut plain).len(), 1, "the address alone: one server");
        assert_eq!(by(&mut ported).len(), 3, "with the port: all of them");
        // IPVS's key: hash_32(port + address).
        assert_eq!(
            Sh::bucket(Ipv4Addr::new(0, 0, 0, 5).into(), 2),
            Sh::bucket(Ipv4Addr::new(0, 0, 0, 7).into(), 0)
        );
    }

    #[test]
    fn weights_are_bucket_counts() {
        let d = dests(&[3, 1]);
        let mut s = Sh::default();
        s.rebuild(&d[..]);
        let zeros = s.buckets.iter().filter(|&&b| b == 0).count();
        assert_eq!(zeros, 192);
        assert_eq!(
            s.pick(
                &dests(&[0, 0])[..],
                &Pick::from_client(IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            None
        );
    }
}
