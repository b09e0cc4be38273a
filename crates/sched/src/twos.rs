//! Weighted random twos choice (IPVS `twos`): two real servers drawn at random in
//! proportion to their weights; the one with the smaller connection overhead per weight
//! (`(active * 256 + inactive) / weight`) takes the connection, the first drawn on a tie.
//!
//! The draws come from a xorshift generator seeded from the real servers' addresses, so
//! that a worker needs no system call; IPVS uses the kernel's random numbers.

use crate::scheduler::{DestView, Pick, Scheduler};

/// Twos-choice state: the generator.
#[derive(Clone, Debug)]
pub struct Twos {
    state: u64,
}

impl Default for Twos {
    fn default() -> Twos {
        Twos {
            state: 0x7477_6f73_5f73_6565, // any non-zero seed
        }
    }
}

impl Twos {
    /// A draw in `1..=total` (xorshift64*, reduced by multiply-shift).
    fn draw(&mut self, total: u64) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((u128::from(r) * u128::from(total)) >> 64) as u64 + 1
    }
}

impl Scheduler for Twos {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        for i in 0..dests.len() {
            self.state ^= crate::hash::mix64(u64::from(crate::hash::addr_word(dests.addr(i))));
        }
        if self.state == 0 {
            self.state = Twos::default().state;
        }
    }

    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, _flow: &Pick) -> Option<usize> {
        let total: u64 = (0..dests.len()).map(|i| u64::from(dests.weight(i))).sum();
        if total == 0 {
            return None;
        }
        let (mut r1, mut r2) = (self.draw(total) as i64, self.draw(total) as i64);
        let (mut c1, mut c2) = (None, None);
        for i in 0..dests.len() {
            let w = i64::from(dests.weight(i));
            if w == 0 {
                continue;
            }
            r1 -= w;
            r2 -= w;
            if r1 <= 0 && c1.is_none() {
                c1 = Some(i);
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some(i);
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (c1, c2) = (c1?, c2?);
        let cost = |i: usize| u128::from(dests.load(i).overhead());
        let (w1, w2) = (u128::from(dests.weight(c1)), u128::from(dests.weight(c2)));
        // c2 wins when its overhead per weight is smaller: w2 * oh1 > w1 * oh2.
        Some(if w2 * cost(c1) > w1 * cost(c2) {
            c2
        } else {
            c1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};

    #[test]
    fn draws_follow_the_weights_and_the_lighter_of_two_wins() {
        let d = dests(&[1, 3]);
        let mut s = Twos::default();
        s.rebuild(&d[..]);
        let got = picks(&mut s, &d, 4000);
        let second = got.iter().filter(|p| **p == Some(1)).count();
        // Without load, the first of the two drawn wins: P(second) = 3/4.
        assert!((2800..=3200).contains(&second), "{second} of 4000");
        // A loaded server loses whenever the other is drawn with it.
        let mut d = dests(&[1, 1]);
        d[0].load.active = 50;
        let got = picks(&mut s, &d, 4000);
        let first = got.iter().filter(|p| **p == Some(0)).count();
        // Only when both draws are the loaded one: P = 1/4.
        assert!((800..=1200).contains(&first), "{first} of 4000");
        assert_eq!(picks(&mut s, &dests(&[0, 0]), 1), [None]);
    }
}
