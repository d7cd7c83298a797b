//! What a relay reports while it runs and when it stops, and the handle of a spawned relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use tokio::sync::oneshot;

use super::health::{HealthState, Probe, RelayHealth};
use tokio::task::JoinHandle;

/// What a relay has done so far: a snapshot of its counters.
///
/// Returned by [`RelayHandle::shutdown`] and [`OutboxRelay::run_until`], and readable while the
/// relay runs with [`RelayHandle::stats`] or [`OutboxRelay::stats`].
///
/// [`OutboxRelay::run_until`]: crate::OutboxRelay::run_until
/// [`OutboxRelay::stats`]: crate::OutboxRelay::stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Entries the broker confirmed and the relay then removed from the outbox.
    pub published: u64,
    /// Of [`published`](Self::published), the entries the broker returned as unroutable: no
    /// queue was bound to their routing key, so no replica wanted them. They are removed like
    /// the others (RabbitMQ would drop them too) and reported with a warning.
    pub unroutable: u64,
    /// Batches settled: confirmed entries deleted and the batch's transaction committed.
    pub batches: u64,
    /// Attempts that failed on a database or broker error and were (or will be) retried.
    pub errors: u64,
}

/// The live counters behind [`RelayStats`], shared between a relay and its handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    unroutable: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    pub(crate) fn batch_settled(&self, published: usize, unroutable: usize) {
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.published
            .fetch_add(as_u64(published), Ordering::Relaxed);
        self.unroutable
            .fetch_add(as_u64(unroutable), Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RelayStats {
        RelayStats {
            published: self.published.load(Ordering::Relaxed),
            unroutable: self.unroutable.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A relay running as a Tokio task, from [`OutboxRelay::spawn`](crate::OutboxRelay::spawn).
///
/// Dropping the handle detaches the relay (it runs until the runtime shuts down), as dropping
/// a [`JoinHandle`] does; keep the handle to stop it with [`RelayHandle::shutdown`].
pub struct RelayHandle {
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) task: JoinHandle<RelayStats>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) health: Arc<HealthState>,
    pub(crate) probe: Probe,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("finished", &self.task.is_finished())
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// How long [`RelayHandle::health`] waits for the broker's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl RelayHandle {
    /// What the relay has done so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// The relay's state, with a live probe of the broker (at most 5 s): what a readiness
    /// endpoint reports. See [`RelayHealth::is_ready`].
    ///
    /// ```no_run
    /// # async fn check(relay: &cqrs_diesel::RelayHandle) {
    /// use std::time::Duration;
    /// let health = relay.health().await;
    /// if !health.is_ready(Duration::from_secs(60)) {
    ///     eprintln!("not ready: {health:?}");
    /// }
    /// # }
    /// ```
    pub async fn health(&self) -> RelayHealth {
        let probe = match tokio::time::timeout(PROBE_TIMEOUT, (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err(cqrs_core::Error::Connect {
                url: String::new(),
                reason: format!("the broker did not answer within {PROBE_TIMEOUT:?}"),
            }),
        };
        self.health
            .report(!self.task.is_finished(), probe, self.counters.snapshot())
    }

    /// Whether the relay task has ended (after a shutdown, or when its transport was closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the relay and waits for it: it finishes the batch in hand (publishing it and
    /// deleting what the broker confirmed), then returns what it did.
    pub async fn shutdown(self) -> RelayStats {
        // An error means the task has ended already: its result is what we want either way.
        let _ = self.stop.send(());
        match self.task.await {
            Ok(stats) => stats,
            Err(error) => {
                tracing::error!(%error, "the outbox relay task failed");
                self.counters.snapshot()
            }
        }
    }
}
