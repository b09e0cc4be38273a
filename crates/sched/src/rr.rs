//! Round robin (IPVS `rr`): the next available real server after the last one picked.

use crate::scheduler::{DestView, Pick, Scheduler};

/// Round-robin state: where the next search starts.
#[derive(Clone, Debug, Default)]
pub struct Rr {
    next: usize,
}

impl Scheduler for Rr {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        // Keep the position, as IPVS does, unless it fell off the end.
        if self.next >= dests.len() {
            self.next = 0;
        }
    }

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        let n = dests.len();
        for k in 0..n {
            let mut i = self.next + k;
            if i >= n {
                i -= n;
            }
            if dests.weight(i) > 0 {
                self.next = if i + 1 == n { 0 } else { i + 1 };
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};

    #[test]
    fn rotates_and_skips_quiescent() {
        let d = dests(&[1, 0, 5, 1]);
        let mut s = Rr::default();
        s.rebuild(&d[..]);
        assert_eq!(picks(&mut s, &d, 6), [0, 2, 3, 0, 2, 3].map(Some));
    }

    #[test]
    fn none_when_all_quiescent_or_empty() {
        let mut s = Rr::default();
        assert_eq!(picks(&mut s, &dests(&[0, 0]), 2), [None, None]);
        assert_eq!(picks(&mut s, &dests(&[]), 1), [None]);
    }
}
