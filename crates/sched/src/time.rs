use std::time::Duration;

/// A point on a monotonic clock, in nanoseconds from an origin the caller chooses.
///
/// The core never reads a clock: the shell passes `now` in, tests inject any value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// A time `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// A time `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000_000))
    }

    /// A time `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Time {
        Time(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub const fn since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This time plus `d` (saturating).
    pub fn after(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_secs(5);
        assert_eq!(t.since(Time::from_secs(2)), Duration::from_secs(3));
        assert_eq!(Time::from_secs(2).since(t), Duration::ZERO);
        assert_eq!(
            t.after(Duration::from_millis(1500)),
            Time::from_millis(6500)
        );
        assert_eq!(
            Time::from_nanos(u64::MAX)
                .after(Duration::from_secs(1))
                .as_nanos(),
            u64::MAX
        );
    }
}
