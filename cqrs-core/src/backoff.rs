//! Exponential backoff with jitter, for reconnection and retries.

use std::time::Duration;

/// Exponential backoff with "full jitter" between a minimum and a maximum delay.
///
/// Each [`Backoff::next_delay`] doubles the ceiling (starting at `min`, capped at `max`) and
/// returns a random delay between half the ceiling and the ceiling, so that many clients
/// reconnecting after the same broker restart do not all knock at the same instant.
///
/// ```
/// use std::time::Duration;
/// let mut backoff = cqrs_core::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// let first = backoff.next_delay();
/// assert!(first <= Duration::from_millis(100));
/// backoff.reset();
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max` (`max` is raised to `min` if lower).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The ceiling of the delay for the given attempt (0-based), without jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait before the next attempt; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(fastrand::f64())
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Start again from the minimum delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_until_the_maximum() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_millis(1000));
        assert_eq!(b.ceiling(400), Duration::from_millis(1000));
    }

    #[test]
    fn delays_stay_between_half_ceiling_and_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..20 {
            let ceiling = b.ceiling(attempt);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside {ceiling:?}"
            );
        }
        assert_eq!(b.attempts(), 20);
    }

    #[test]
    fn reset_starts_from_the_minimum_again() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(50));
    }
}
