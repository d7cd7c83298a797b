//! What a running consumer runtime says about itself: [`ConsumerHealth`], and the shared state
//! behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::stats::ConsumerStats;
use crate::error::Result;

/// The state of a consumer runtime, from [`ConsumerHandle::health`](crate::ConsumerHandle::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// The runtime task is running (it has not stopped or failed).
    pub running: bool,
    /// The runtime is subscribed to its queue (the topology is declared and consuming began;
    /// false before that, while it retries, and after it stopped).
    pub consuming: bool,
    /// The broker answered the probe made by this call (see [`Transport::probe`]).
    ///
    /// [`Transport::probe`]: crate::Transport::probe
    pub broker_reachable: bool,
    /// Why the probe failed, when it did.
    pub broker_error: Option<String>,
    /// How long ago a batch was last applied, if one was.
    pub last_applied: Option<Duration>,
    /// The last error met (a failed batch, a failed message, the database unavailable, the
    /// consumer failing), and how long ago; cleared by nothing: compare with `last_applied`.
    pub last_error: Option<(String, Duration)>,
    /// Failed messages waiting in the delay queue for their retry.
    pub delayed: usize,
    /// The counters so far.
    pub stats: ConsumerStats,
}

impl ConsumerHealth {
    /// Ready to take traffic: running, subscribed, and the broker reachable.
    pub fn is_ready(&self) -> bool {
        self.running && self.consuming && self.broker_reachable
    }
}

/// The probe of the runtime's transport, kept by the handle.
pub(crate) type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// What the runtime's tasks record for [`ConsumerHealth`].
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    consuming: AtomicBool,
    delayed: AtomicUsize,
    last_applied: Mutex<Option<Instant>>,
    last_error: Mutex<Option<(String, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HealthState {
    pub(crate) fn consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    pub(crate) fn delayed(&self, delayed: usize) {
        self.delayed.store(delayed, Ordering::Relaxed);
    }

    pub(crate) fn applied(&self) {
        *lock(&self.last_applied) = Some(Instant::now());
    }

    pub(crate) fn error(&self, error: impl Into<String>) {
        *lock(&self.last_error) = Some((error.into(), Instant::now()));
    }

    /// The health as of now, with the probe's result and the counters.
    pub(crate) fn report(
        &self,
        running: bool,
        probe: Result<()>,
        stats: ConsumerStats,
    ) -> ConsumerHealth {
        ConsumerHealth {
            running,
            consuming: running && self.consuming.load(Ordering::Relaxed),
            broker_reachable: probe.is_ok(),
            broker_error: probe.err().map(|error| error.to_string()),
            last_applied: lock(&self.last_applied).map(|at| at.elapsed()),
            last_error: lock(&self.last_error)
                .as_ref()
                .map(|(error, at)| (error.clone(), at.elapsed())),
            delayed: self.delayed.load(Ordering::Relaxed),
            stats,
        }
    }
}
