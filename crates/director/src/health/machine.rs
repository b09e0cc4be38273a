//! The state of one real server's check: pure, time-free, driven by results.
//!
//! keepalived's semantics: a real server starts healthy; while healthy, a failed check
//! is retried after `retry_delay`, and `fall` failures in a row take it out; while
//! failed, `rise` successes in a row (spaced by `retry_delay`) bring it back. A success
//! while healthy, or a failure while failed, waits the full `interval`.

use std::time::Duration;

use super::spec::CheckSpec;

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Gets new connections.
    Up,
    /// Failed its check: inhibited or removed.
    Down,
}

/// What one result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The new state, when the result changed it.
    pub changed: Option<Health>,
    /// When to check next.
    pub next: Duration,
}

/// One real server's check state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    state: Health,
    /// Results in a row that go against the state.
    against: u32,
}

impl Machine {
    /// A machine in `state`.
    pub fn new(state: Health) -> Machine {
        Machine { state, against: 0 }
    }

    /// The state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Takes one check result.
    pub fn record(&mut self, ok: bool, spec: &CheckSpec) -> Step {
        let (agrees, needed, flip) = match self.state {
            Health::Up => (ok, spec.fall.max(1), Health::Down),
            Health::Down => (!ok, spec.rise.max(1), Health::Up),
        };
        if agrees {
            self.against = 0;
            return Step {
                changed: None,
                next: spec.interval.duration(),
            };
        }
        self.against += 1;
        if self.against >= needed {
            self.state = flip;
            self.against = 0;
            Step {
                changed: Some(flip),
                next: spec.interval.duration(),
            }
        } else {
            Step {
                changed: None,
                next: spec.retry_delay.duration(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::{Millis, Probe};

    fn spec(fall: u32, rise: u32) -> CheckSpec {
        CheckSpec {
            fall,
            rise,
            interval: Millis::secs(6),
            retry_delay: Millis::secs(1),
            ..CheckSpec::new(Probe::Tcp)
        }
    }

    fn run(m: &mut Machine, s: &CheckSpec, results: &str) -> Vec<Option<Health>> {
        results
            .bytes()
            .map(|b| m.record(b == b'1', s).changed)
            .collect()
    }

    #[test]
    fn falls_after_fall_failures_in_a_row_and_retries_sooner() {
        let s = spec(3, 1);
        let mut m = Machine::new(Health::Up);
        let a = m.record(false, &s);
        assert_eq!(
            a,
            Step {
                changed: None,
                next: Duration::from_secs(1)
            }
        );
        assert_eq!(m.record(false, &s).changed, None);
        let c = m.record(false, &s);
        assert_eq!(
            c,
            Step {
                changed: Some(Health::Down),
                next: Duration::from_secs(6)
            }
        );
        assert_eq!(m.state(), Health::Down);
        // Failing on: full interval, no new transition.
        assert_eq!(
            m.record(false, &s),
            Step {
                changed: None,
                next: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let s = spec(3, 1);
        let mut m = Machine::new(Health::Up);
        assert_eq!(run(&mut m, &s, "0010010"), vec![None; 7]);
        assert_eq!(m.state(), Health::Up);
        assert_eq!(run(&mut m, &s, "00"), vec![None, Some(Health::Down)]);
    }

    #[test]
    fn rises_after_rise_successes_in_a_row() {
        let s = spec(1, 3);
        let mut m = Machine::new(Health::Up);
        assert_eq!(run(&mut m, &s, "0"), vec![Some(Health::Down)]);
        let r = m.record(true, &s);
        assert_eq!(
            r,
            Step {
                changed: None,
                next: Duration::from_secs(1)
            }
        );
        assert_eq!(run(&mut m, &s, "101"), vec![None, None, None]);
        assert_eq!(run(&mut m, &s, "11"), vec![None, Some(Health::Up)]);
        assert_eq!(m.state(), Health::Up);
    }

    #[test]
    fn flapping_never_moves_with_fall_and_rise_above_one() {
        let s = spec(2, 2);
        let mut m = Machine::new(Health::Up);
        assert!(run(&mut m, &s, "0101010101").iter().all(Option::is_none));
        assert_eq!(m.state(), Health::Up);
        let mut m = Machine::new(Health::Down);
        assert!(run(&mut m, &s, "1010101010").iter().all(Option::is_none));
        assert_eq!(m.state(), Health::Down);
    }

    #[test]
    fn keepalived_defaults_go_down_on_the_second_failure_and_up_on_one_success() {
        let s = CheckSpec::new(Probe::Tcp);
        let mut m = Machine::new(Health::Up);
        assert_eq!(
            run(&mut m, &s, "001"),
            vec![None, Some(Health::Down), Some(Health::Up)]
        );
    }
}
