//! Destination hashing (IPVS `dh`): the packet's destination address picks one of 256
//! buckets, dealt to the real servers in service order, one each in turn, whatever their
//! weight. A bucket whose server is unavailable (weight 0) takes no connection: IPVS's
//! `dh` has no fallback. With a VIP per service, every connection of a service goes to
//! one server (IPVS meant `dh` for firewall-mark services that catch many destinations,
//! cache clusters).

use crate::scheduler::{DestView, Pick, Scheduler};

const BUCKETS: usize = 256;
const NONE: u16 = u16::MAX;

/// Destination-hash state: the bucket table.
#[derive(Clone, Debug)]
pub struct Dh {
    buckets: Box<[u16; BUCKETS]>,
}

impl Default for Dh {
    fn default() -> Dh {
        Dh {
            buckets: Box::new([NONE; BUCKETS]),
        }
    }
}

impl Dh {
    /// The bucket an address hashes to, as `ip_vs_dh_hashkey`: the address (an IPv6 one
    /// folded) times 2654435761, its low 8 bits.
    pub fn bucket(addr: std::net::IpAddr) -> usize {
        (crate::hash::addr_word(addr).wrapping_mul(2_654_435_761) as usize) & (BUCKETS - 1)
    }
}

impl Scheduler for Dh {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        let n = dests.len().min(usize::from(NONE));
        for (i, b) in self.buckets.iter_mut().enumerate() {
            *b = if n == 0 { NONE } else { (i % n) as u16 };
        }
    }

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize> {
        let i = usize::from(self.buckets[Dh::bucket(flow.vip)]);
        (i < dests.len() && dests.weight(i) > 0).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use std::net::Ipv4Addr;

    fn to(vip: Ipv4Addr) -> Pick {
        Pick {
            vip: vip.into(),
            ..Pick::from_client(Ipv4Addr::new(198, 19, 0, 1).into())
        }
    }

    #[test]
    fn one_destination_one_server_and_no_fallback() {
        let mut d = dests(&[1, 5, 1]);
        let mut s = Dh::default();
        s.rebuild(&d[..]);
        // Buckets go round the servers, whatever their weight.
        assert_eq!(&s.buckets[..4], &[0, 1, 2, 0]);
        let vip = Ipv4Addr::new(198, 18, 0, 100);
        let first = s.pick(&d[..], &to(vip)).expect("available");
        assert_eq!(first, Dh::bucket(vip.into()) % 3);
        for c in 0..50u8 {
            let mut p = to(vip);
            p.client = Ipv4Addr::new(198, 19, 1, c).into();
            assert_eq!(s.pick(&d[..], &p), Some(first), "every client alike");
        }
        d[first].weight = 0;
        assert_eq!(s.pick(&d[..], &to(vip)), None, "no fallback");
    }
}
