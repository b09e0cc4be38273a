//! Never queue (IPVS `nq`): the first available real server with no active connection;
//! if every one is busy, the least `(active + 1) / weight` as `sed`.

use crate::scheduler::{least_weighted, DestView, Pick, Scheduler};

/// Never-queue scheduling (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Nq;

impl Scheduler for Nq {
    fn rebuild<D: DestView + ?Sized>(&mut self, _dests: &D) {}

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        (0..dests.len())
            .find(|&i| dests.weight(i) > 0 && dests.load(i).active == 0)
            .or_else(|| least_weighted(dests, |l| u64::from(l.active) + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};

    #[test]
    fn an_idle_server_first_whatever_its_weight() {
        let mut d = dests(&[5, 1, 1]);
        d[0].load.active = 1;
        d[1].load.active = 3;
        assert_eq!(picks(&mut Nq, &d, 1), [Some(2)], "the idle one");
        d[2].load.active = 2;
        // (1+1)/5 < (2+1)/1 < (3+1)/1
        assert_eq!(picks(&mut Nq, &d, 1), [Some(0)]);
        d[2].weight = 0;
        d[2].load.active = 0;
        assert_eq!(
            picks(&mut Nq, &d, 1),
            [Some(0)],
            "idle but quiescent: not taken"
        );
    }
}
