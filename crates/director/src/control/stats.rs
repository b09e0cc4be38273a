//! Statistics as ipvsadm shows them: counters that `-Z` zeroes, and rates from an
//! estimator that works like IPVS's.
//!
//! IPVS's estimator samples every counter every 2 seconds and keeps an exponentially
//! weighted moving average of the per-second rate, `avg += (rate - avg) / 4`, in fixed
//! point (connections and packets scaled by 2^10, bytes by 2^5), and reads it back
//! rounded. [`Estimator`] does the same arithmetic, so that `--rate` converges the same
//! way and shows the same figures for the same traffic. `-Z` in IPVS does not clear the
//! per-CPU counters: it remembers their values as a baseline and restarts the estimator
//! from them; [`Tracked`] does the same, so that zeroing never touches a worker.

use std::time::Duration;

use super::proto::{Counters, Rates};

/// How often the estimator samples (IPVS: 2 seconds).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// IPVS's rate estimator over one set of counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimator {
    last: Counters,
    /// Averages in IPVS's fixed point: cps/pps x 2^10, bps x 2^5.
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

impl Estimator {
    /// An estimator starting from the counters `now` (all rates 0).
    pub fn new(now: Counters) -> Estimator {
        Estimator {
            last: now,
            cps: 0,
            inpps: 0,
            outpps: 0,
            inbps: 0,
            outbps: 0,
        }
    }

    /// Takes the sample of counters `now`, [`SAMPLE_EVERY`] after the previous one.
    pub fn sample(&mut self, now: Counters) {
        // The increase over 2 s, scaled: x 2^9 is (per second) x 2^10; x 2^4 is x 2^5.
        fn step(avg: &mut i64, now: u64, last: u64, shift: u32) {
            let rate = (now.wrapping_sub(last) << shift) as i64;
            *avg += (rate - *avg) >> 2;
        }
        let l = self.last;
        step(&mut self.cps, now.conns, l.conns, 9);
        step(&mut self.inpps, now.inpkts, l.inpkts, 9);
        step(&mut self.outpps, now.outpkts, l.outpkts, 9);
        step(&mut self.inbps, now.inbytes, l.inbytes, 4);
        step(&mut self.outbps, now.outbytes, l.outbytes, 4);
        self.last = now;
    }

    /// The rates, per second, rounded as IPVS reads them out.
    pub fn rates(&self) -> Rates {
        let per_sec = |v: i64, round: i64, shift: u32| ((v + round) >> shift).max(0) as u64;
        Rates {
            cps: per_sec(self.cps, 0x1FF, 10),
            inpps: per_sec(self.inpps, 0x1FF, 10),
            outpps: per_sec(self.outpps, 0x1FF, 10),
            inbps: per_sec(self.inbps, 0xF, 5),
            outbps: per_sec(self.outbps, 0xF, 5),
        }
    }
}

/// The statistics of one service or real server: the counters' baseline (what `-Z`
/// subtracts) and the estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The generation of the slot it belongs to (a new one starts afresh).
    pub gen: u32,
    baseline: Counters,
    est: Estimator,
}

impl Tracked {
    /// Starts tracking generation `gen` whose counters are `raw` now. A slot handed to a
    /// new service or real server has its counters reset by the workers, so what they
    /// counted since is its own.
    pub fn new(gen: u32, raw: Counters) -> Tracked {
        Tracked {
            gen,
            baseline: Counters::default(),
            est: Estimator::new(raw),
        }
    }

    /// Samples the estimator.
    pub fn sample(&mut self, raw: Counters) {
        self.est.sample(raw);
    }

    /// `-Z`: the counters read 0 from now on and the rates restart from 0.
    pub fn zero(&mut self, raw: Counters) {
        self.baseline = raw;
        self.est = Estimator::new(raw);
    }

    /// The counters since the last `-Z`.
    pub fn counters(&self, raw: Counters) -> Counters {
        raw.since(&self.baseline)
    }

    /// The rates.
    pub fn rates(&self) -> Rates {
        self.est.rates()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(conns: u64, pkts: u64, bytes: u64) -> Counters {
        Counters {
            conns,
            inpkts: pkts,
            outpkts: 0,
            inbytes: bytes,
            outbytes: 0,
        }
    }

    #[test]
    fn a_steady_rate_converges_to_itself() {
        // 100 conn/s, 1000 pkt/s, 64 kB/s, sampled every 2 s.
        let mut e = Estimator::new(c(0, 0, 0));
        let mut now = c(0, 0, 0);
        let mut seen = Vec::new();
        // The average closes a quarter of the gap per sample: a minute and a half.
        for _ in 0..50 {
            now = c(now.conns + 200, now.inpkts + 2000, now.inbytes + 128_000);
            e.sample(now);
            seen.push(e.rates().inpps);
        }
        let r = e.rates();
        assert_eq!((r.cps, r.inpps, r.inbps), (100, 1000, 64_000));
        assert_eq!(
            (r.outpps, r.outbps),
            (0, 0),
            "DR: nothing flows back through us"
        );
        // The first sample shows a quarter of the rate, as IPVS's estimator does.
        assert_eq!(seen[0], 250);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    }

    #[test]
    fn a_stopped_flow_decays_to_zero() {
        let mut e = Estimator::new(c(0, 0, 0));
        e.sample(c(10, 10, 1000));
        assert!(e.rates().inpps > 0);
        for _ in 0..40 {
            e.sample(c(10, 10, 1000));
        }
        assert_eq!(e.rates(), Rates::default());
    }

    #[test]
    fn zeroing_subtracts_a_baseline_and_restarts_the_rates() {
        let mut t = Tracked::new(1, c(0, 0, 0));
        t.sample(c(100, 1000, 50_000));
        assert_eq!(t.counters(c(100, 1000, 50_000)), c(100, 1000, 50_000));
        t.zero(c(100, 1000, 50_000));
        assert_eq!(t.counters(c(100, 1000, 50_000)), c(0, 0, 0));
        assert_eq!(t.counters(c(103, 1010, 50_500)), c(3, 10, 500));
        assert_eq!(t.rates(), Rates::default());
    }
}
