//! Shortest expected delay (IPVS `sed`): the available real server with the least
//! `(active + 1) / weight`, compared by cross-multiplication; ties go to the first in
//! service order. Inactive connections do not count.

use crate::scheduler::{least_weighted, DestView, Pick, Scheduler};

/// Shortest-expected-delay scheduling (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sed;

impl Scheduler for Sed {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        least_weighted(dests, |l| u64::from(l.active) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};

    #[test]
    fn active_plus_one_over_weight() {
        let mut d = dests(&[1, 3]);
        // (0+1)/1 = 1 vs (2+1)/3 = 1: a tie, the first.
        d[1].load.active = 2;
        assert_eq!(picks(&mut Sed, &d, 1), [Some(0)]);
        // (0+1)/1 = 1 vs (1+1)/3 < 1.
        d[1].load.active = 1;
        assert_eq!(picks(&mut Sed, &d, 1), [Some(1)]);
        // Inactive connections do not count.
        d[1].load.inactive = 1000;
        assert_eq!(picks(&mut Sed, &d, 1), [Some(1)]);
    }
}
