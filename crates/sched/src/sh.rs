//! Source hashing (IPVS `sh`): the client address picks one of 256 buckets; buckets are
//! dealt to real servers in service order, `weight` consecutive buckets each (at least
//! one), as IPVS does.
//!
//! When a client's server is not available (quiescent or unresolved) the next bucket
//! with an available server is used, as with ipvsadm's `-b sh-fallback`: xdpvs always
//! falls back rather than refusing the connection.

use std::net::IpAddr;

use crate::hash::fib32;
use crate::scheduler::{DestView, Pick, Scheduler};

const BITS: u32 = 8;
const BUCKETS: usize = 1 << BITS;
const NONE: u16 = u16::MAX;

/// Source-hash state: the bucket table.
#[derive(Clone, Debug)]
pub struct Sh {
    buckets: Box<[u16; BUCKETS]>,
}

impl Default for Sh {
    fn default() -> Sh {
        Sh {
            buckets: Box::new([NONE; BUCKETS]),
        }
    }
}

impl Sh {
    /// The bucket a client hashes to.
    pub fn bucket(client: IpAddr) -> usize {
        fib32(crate::hash::addr_word(client), BITS) as usize
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
        let start = Sh::bucket(flow.client);
        for k in 0..BUCKETS {
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
        let mut s = Sh::default();
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
