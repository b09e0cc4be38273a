//! Least connections (IPVS `lc`): the available real server with the smallest
//! `active * 256 + inactive`; ties go to the first in service order. Weights only
//! decide availability (0 takes nothing).

use crate::scheduler::{DestView, Pick, Scheduler};

/// Least-connection scheduling (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Lc;

impl Scheduler for Lc {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for i in 0..dests.len() {
            if dests.weight(i) == 0 {
                continue;
            }
            let oh = dests.load(i).overhead();
            if best.is_none_or(|(_, b)| oh < b) {
                best = Some((i, oh));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::dests;
    use crate::Load;
    use std::net::Ipv4Addr;

    #[test]
    fn picks_least_overhead_first_on_ties() {
        let mut d = dests(&[1, 1, 1, 0]);
        d[0].load = Load {
            active: 1,
            inactive: 0,
        }; // 256
        d[1].load = Load {
            active: 0,
            inactive: 300,
        }; // 300
        d[2].load = Load {
            active: 0,
            inactive: 255,
        }; // 255
        d[3].load = Load::default(); // quiescent: never
        assert_eq!(
            Lc.pick(
                &d[..],
                &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            Some(2)
        );
        d[2].load.inactive = 256;
        assert_eq!(
            Lc.pick(
                &d[..],
                &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            Some(0)
        );
        assert_eq!(
            Lc.pick(
                &dests(&[0])[..],
                &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))
            ),
            None
        );
    }
}
