//! Where the library reads "now": a [`Clock`] that is the system's in production and one a test
//! sets ([`ManualClock`]), so that expiry, dead-letter timestamps and the like never depend on the
//! day a test runs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// The source of the current time for everything the library decides by the clock: whether a
/// message has expired, the time written on a dead letter, the `cqrs_updated` of a DELETE that
/// carries none, and on the master side `cqrs_updated` and `expires`.
///
/// [`Clock::system`] (the default) reads the system clock. [`ManualClock::clock`] gives one that
/// shows whatever time its [`ManualClock`] was set to, for tests and for replaying captured
/// messages at the moment they were captured.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use cqrs_core::{Clock, Config, ManualClock};
///
/// let at = Utc.with_ymd_and_hms(2026, 11, 28, 18, 21, 11).unwrap();
/// let manual = ManualClock::new(at);
/// let config = Config::builder().clock(manual.clock()).build()?;
/// assert_eq!(config.clock().now(), at);
/// manual.advance(std::time::Duration::from_secs(60));
/// assert_eq!(config.clock().now(), at + chrono::TimeDelta::seconds(60));
/// assert_ne!(Clock::system().now(), at);
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock ([`Utc::now`]).
    pub const fn system() -> Self {
        Self { manual: None }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(micros) => from_micros(micros.load(Ordering::Acquire)),
        }
    }

    /// Whether this is the system clock.
    pub fn is_system(&self) -> bool {
        self.manual.is_none()
    }
}

impl PartialEq for Clock {
    /// Two clocks are equal when both are the system clock or both are views of the same
    /// [`ManualClock`].
    fn eq(&self, other: &Self) -> bool {
        match (&self.manual, &other.manual) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(_) => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

/// A clock that stands still until it is set or advanced; [`ManualClock::clock`] hands out
/// [`Clock`]s that all show its time. Microsecond precision, as databases store timestamps.
#[derive(Clone)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock showing `at` (truncated to the microsecond).
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            micros: Arc::new(AtomicI64::new(at.timestamp_micros())),
        }
    }

    /// A [`Clock`] that shows this clock's time, now and after every later change.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(Arc::clone(&self.micros)),
        }
    }

    /// Sets the time to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        self.micros.store(at.timestamp_micros(), Ordering::Release);
    }

    /// Moves the time forward by `by` (saturating at the end of representable time).
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        let _ = self
            .micros
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// The time it shows.
    pub fn now(&self) -> DateTime<Utc> {
        from_micros(self.micros.load(Ordering::Acquire))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManualClock({})", self.now())
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        manual.clock()
    }
}

fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    #[test]
    fn a_manual_clock_shows_what_it_was_set_to() {
        let at = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
        let manual = ManualClock::new(at);
        let clock = manual.clock();
        assert_eq!(clock.now(), at);
        let later = Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap();
        manual.set(later);
        assert_eq!(clock.now(), later);
    }

    #[test]
    fn advancing_a_manual_clock_moves_every_view() {
        let at = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
        let manual = ManualClock::new(at);
        let (a, b) = (manual.clock(), Clock::from(manual.clone()));
        manual.advance(std::time::Duration::from_micros(1_500_001));
        assert_eq!(a.now(), at + TimeDelta::microseconds(1_500_001));
        assert_eq!(a, b);
        assert_ne!(a, Clock::system());
    }
}
