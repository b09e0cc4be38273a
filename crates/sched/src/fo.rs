//! Weighted failover (IPVS `fo`): the available real server with the highest weight;
//! among equals, the first in service order.

use crate::scheduler::{heaviest, DestView, Pick, Scheduler};

/// Weighted-failover scheduling (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fo;

impl Scheduler for Fo {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        heaviest(dests, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};

    #[test]
    fn the_heaviest_takes_everything_until_it_goes() {
        let mut d = dests(&[2, 5, 5, 1]);
        d[1].load.active = 10_000;
        assert_eq!(picks(&mut Fo, &d, 3), [Some(1); 3], "load does not matter");
        d[1].weight = 0;
        assert_eq!(picks(&mut Fo, &d, 1), [Some(2)]);
        assert_eq!(picks(&mut Fo, &dests(&[0, 0]), 1), [None]);
    }
}
