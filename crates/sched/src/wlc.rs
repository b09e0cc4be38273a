//! Weighted least connections (IPVS `wlc`, ipvsadm's default): the available real server
//! with the smallest overhead / weight, compared by cross-multiplication as IPVS does;
//! ties go to the first in service order.

use crate::scheduler::{least_weighted, DestView, Load, Pick, Scheduler};

/// Weighted least-connection scheduling (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Wlc;

impl Scheduler for Wlc {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        least_weighted(dests, Load::overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use crate::Load;
    use std::net::Ipv4Addr;

    #[test]
    fn weighs_overhead() {
        let mut d = dests(&[1, 3]);
        d[0].load = Load {
            active: 1,
            inactive: 0,
        }; // 256 / 1
        d[1].load = Load {
            active: 2,
            inactive: 0,
        }; // 512 / 3 = 170.7
        assert_eq!(
            Wlc.pick(
                &d[..],
                &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            Some(1)
        );
        d[1].load = Load {
            active: 3,
            inactive: 1,
        }; // 769 / 3 = 256.3
        assert_eq!(
            Wlc.pick(
                &d[..],
                &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            Some(0)
        );
        d[1].load = Load {
            active: 3,
            inactive: 0,
        }; // 768 / 3 = 256: tie -> first
        assert_eq!(
            Wlc.pick(
                &d[..],
                &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            Some(0)
        );
    }
}
