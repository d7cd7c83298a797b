//! What a running relay says about itself ([`RelayHealth`]) and what it records as metrics
//! (names in [`cqrs_core::metric`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cqrs_core::metric::{
    CQRS_ID, OPERATION, OPERATION_DURATION, OUTBOX_ENTRIES, OUTBOX_OLDEST_AGE,
    RELAY_BROKER_CONNECTED, RELAY_CONFIRMED, RELAY_ERRORS, RELAY_NACKED, RELAY_UNROUTABLE,
    SENT_MESSAGES,
};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::handle::RelayStats;
use crate::outbox::OutboxBacklog;

/// The state of a relay, from [`RelayHandle::health`](crate::RelayHandle::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayHealth {
    /// The relay task is running (it has not stopped).
    pub running: bool,
    /// The broker answered the probe made by this call
    /// ([`Transport::probe`](cqrs_core::Transport::probe)).
    pub broker_reachable: bool,
    /// Why the probe failed, when it did.
    pub broker_error: Option<String>,
    /// How long ago the relay last published (and deleted) entries, if it has.
    pub last_published: Option<Duration>,
    /// The outbox as last measured (every backlog interval), and how long ago.
    pub backlog: Option<(OutboxBacklog, Duration)>,
    /// The last error met (database or broker), and how long ago. Compare with
    /// `last_published`: an error older than the last publish has been overcome.
    pub last_error: Option<(String, Duration)>,
    /// The counters so far.
    pub stats: RelayStats,
}

impl RelayHealth {
    /// Ready to take writes: the relay runs, the broker answers, and the oldest outbox entry
    /// (as last measured) is at most `max_age` old. A backlog never measured (the database
    /// unreachable since the start) is not ready.
    pub fn is_ready(&self, max_age: Duration) -> bool {
        self.running
            && self.broker_reachable
            && self
                .backlog
                .is_some_and(|(backlog, _)| backlog.oldest_age <= max_age)
    }
}

/// The probe of the relay's transport, kept by the handle.
pub(crate) type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = cqrs_core::Result<()>> + Send>> + Send + Sync>;

/// What the relay records for [`RelayHealth`].
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    last_published: Mutex<Option<Instant>>,
    backlog: Mutex<Option<(OutboxBacklog, Instant)>>,
    last_error: Mutex<Option<(String, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HealthState {
    pub(crate) fn published(&self) {
        *lock(&self.last_published) = Some(Instant::now());
    }

    pub(crate) fn backlog(&self, backlog: OutboxBacklog) {
        *lock(&self.backlog) = Some((backlog, Instant::now()));
    }

    pub(crate) fn error(&self, error: impl Into<String>) {
        *lock(&self.last_error) = Some((error.into(), Instant::now()));
    }

    pub(crate) fn report(
        &self,
        running: bool,
        probe: cqrs_core::Result<()>,
        stats: RelayStats,
    ) -> RelayHealth {
        RelayHealth {
            running,
            broker_reachable: probe.is_ok(),
            broker_error: probe.err().map(|error| error.to_string()),
            last_published: lock(&self.last_published).map(|at| at.elapsed()),
            backlog: lock(&self.backlog).map(|(backlog, at)| (backlog, at.elapsed())),
            last_error: lock(&self.last_error)
                .as_ref()
                .map(|(error, at)| (error.clone(), at.elapsed())),
            stats,
        }
    }
}

/// The series of one `cqrs_id`.
#[derive(Debug)]
pub(crate) struct ModelMeters {
    pub(crate) sent: Counter,
    pub(crate) confirmed: Counter,
    pub(crate) nacked: Counter,
    pub(crate) unroutable: Counter,
}

/// Every series of one relay. A model's series are registered when its first entry is
/// published (the outbox holds only this service's models, so the set is bounded).
#[derive(Debug)]
pub(crate) struct RelayMeters {
    models: Mutex<HashMap<String, Arc<ModelMeters>>>,
    pub(crate) confirm_latency: Histogram,
    entries: Gauge,
    oldest_age: Gauge,
    connected: Gauge,
    pub(crate) errors: Counter,
}

impl RelayMeters {
    pub(crate) fn new() -> RelayMeters {
        RelayMeters {
            models: Mutex::new(HashMap::new()),
            confirm_latency: histogram!(OPERATION_DURATION, OPERATION => "send"),
            entries: gauge!(OUTBOX_ENTRIES),
            oldest_age: gauge!(OUTBOX_OLDEST_AGE),
            connected: gauge!(RELAY_BROKER_CONNECTED),
            errors: counter!(RELAY_ERRORS),
        }
    }

    /// The series of `cqrs_id`.
    pub(crate) fn model(&self, cqrs_id: &str) -> Arc<ModelMeters> {
        let mut models = lock(&self.models);
        if let Some(meters) = models.get(cqrs_id) {
            return Arc::clone(meters);
        }
        let id = cqrs_id.to_owned();
        let meters = Arc::new(ModelMeters {
            sent: counter!(SENT_MESSAGES, CQRS_ID => id.clone()),
            confirmed: counter!(RELAY_CONFIRMED, CQRS_ID => id.clone()),
            nacked: counter!(RELAY_NACKED, CQRS_ID => id.clone()),
            unroutable: counter!(RELAY_UNROUTABLE, CQRS_ID => id.clone()),
        });
        models.insert(id, Arc::clone(&meters));
        meters
    }

    pub(crate) fn backlog(&self, backlog: OutboxBacklog) {
        #[allow(clippy::cast_precision_loss)] // an outbox holds far fewer than 2^52 entries
        self.entries.set(backlog.entries as f64);
        self.oldest_age.set(backlog.oldest_age.as_secs_f64());
    }

    pub(crate) fn connected(&self, connected: bool) {
        self.connected.set(if connected { 1.0 } else { 0.0 });
    }
}
