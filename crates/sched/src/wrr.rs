//! Weighted round robin (IPVS `wrr`), in the same order as the kernel's `ip_vs_wrr`.
//!
//! Passes are made over the real servers with a current weight `cw` that starts at the
//! maximum weight and steps down by the gcd of the weights; in each pass every server
//! whose weight is at least `cw` is picked once, in service order. For weights 4, 3, 2
//! one cycle is `A A B A B C A B C`: each server is picked as often as its weight.

use crate::scheduler::{DestView, Pick, Scheduler};

/// Weighted round-robin state (IPVS's `ip_vs_wrr_mark`).
#[derive(Clone, Debug, Default)]
pub struct Wrr {
    /// The last server picked; `None` is the list head (before the first server).
    cl: Option<usize>,
    /// Current weight.
    cw: i64,
    /// Maximum weight, less `di - 1` so that the last pass is always at `cw == 1`.
    mw: i64,
    /// Decreasing interval: gcd of the positive weights.
    di: i64,
    initialised: bool,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Scheduler for Wrr {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        let weights = (0..dests.len()).map(|i| i64::from(dests.weight(i)));
        let di = weights.clone().filter(|&w| w > 0).fold(0, gcd).max(1);
        let max = weights.max().unwrap_or(0);
        self.cl = None;
        self.di = di;
        self.mw = max - (di - 1);
        if !self.initialised || self.cw > self.mw || self.cw == 0 {
            // A new service starts at the top; a change keeps the pass when it can.
            self.cw = self.mw;
        } else if di > 1 {
            self.cw = (self.cw / di) * di + 1;
        }
        self.initialised = true;
    }

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        let n = dests.len();
        if self.mw <= 0 || n == 0 {
            return None;
        }
        let last = self.cl.filter(|&c| c < n);
        let mut pos = last; // continue after this one; None = from the first
        let mut stop: Option<usize> = None;
        let (mut last_pass, mut restarted) = (false, false);
        loop {
            let start = pos.map_or(0, |p| p + 1);
            for i in start..n {
                if i64::from(dests.weight(i)) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            pos = None; // back at the head
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                // A full pass at weight >= 1 found nobody: nothing is available.
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};
    use std::net::Ipv4Addr;

    fn seq(weights: &[u32], n: usize) -> String {
        let d = dests(weights);
        let mut s = Wrr::default();
        s.rebuild(&d[..]);
        picks(&mut s, &d, n)
            .into_iter()
            .map(|p| p.map_or('-', |i| (b'A' + i as u8) as char))
            .collect()
    }

    #[test]
    fn ipvs_order_for_4_3_2() {
        assert_eq!(seq(&[4, 3, 2], 18), "AABABCABCAABABCABC");
    }

    #[test]
    fn gcd_steps() {
        // gcd 2: passes at cw = 3 (6 - (2 - 1)) and 1.
        assert_eq!(seq(&[6, 4, 2], 12), "AABABCAABABC");
        assert_eq!(seq(&[3, 2, 1], 12), "AABABCAABABC");
    }

    #[test]
    fn quiescent_and_empty() {
        assert_eq!(seq(&[0, 2, 0, 1], 6), "BBDBBD");
        assert_eq!(seq(&[0, 0], 3), "---");
        assert_eq!(seq(&[], 1), "-");
    }

    proptest::proptest! {
        /// Over one cycle (sum of weights picks) each server is picked exactly its weight
        /// times, from a fresh start and from any point after a change.
        #[test]
        fn counts_per_cycle_equal_weights(
            weights in proptest::collection::vec(0u32..20, 1..8),
            warmup in 0usize..50,
        ) {
            let d = dests(&weights);
            let total: u32 = weights.iter().sum();
            let mut s = Wrr::default();
            s.rebuild(&d[..]);
            for _ in 0..warmup { s.pick(&d[..], &Pick::from_client(std::net::IpAddr::from(Ipv4Addr::LOCALHOST))); }
            let mut counts = vec![0u32; weights.len()];
            for p in picks(&mut s, &d, total as usize) {
                counts[p.expect("some server is available")] += 1;
            }
            proptest::prop_assert_eq!(counts, weights);
        }
    }

    #[test]
    fn weight_change_keeps_going() {
        let mut d = dests(&[2, 2]);
        let mut s = Wrr::default();
        s.rebuild(&d[..]);
        assert_eq!(picks(&mut s, &d, 3), [Some(0), Some(1), Some(0)]);
        d[0].weight = 0;
        s.rebuild(&d[..]);
        assert_eq!(picks(&mut s, &d, 3), [Some(1), Some(1), Some(1)]);
        // Weights dropped to zero behind the scheduler's back: it must still terminate.
        d[1].weight = 0;
        assert_eq!(picks(&mut s, &d, 2), [None, None]);
    }
}
