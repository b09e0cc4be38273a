//! Overflow connection (IPVS `ovf`): the available real server with the highest weight
//! whose active connections do not exceed its weight; among equals, the first in service
//! order. When every one is over its weight, none: the connection is refused.

use crate::scheduler::{heaviest, DestView, Pick, Scheduler};

/// Overflow-connection scheduling (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ovf;

impl Scheduler for Ovf {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        heaviest(dests, |i| dests.load(i).active <= dests.weight(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};

    #[test]
    fn the_heaviest_until_its_weight_in_active_connections_then_the_next() {
        let mut d = dests(&[3, 5]);
        d[1].load.active = 5;
        assert_eq!(picks(&mut Ovf, &d, 1), [Some(1)], "at its weight: still");
        d[1].load.active = 6;
        assert_eq!(picks(&mut Ovf, &d, 1), [Some(0)], "over it: the next");
        d[0].load.active = 4;
        assert_eq!(picks(&mut Ovf, &d, 1), [None], "all over: refused");
    }
}
