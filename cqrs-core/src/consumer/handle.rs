//! The handle of a spawned consumer runtime, and [`shutdown_signal`] for running one in its own
//! process.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::health::{ConsumerHealth, HealthState, Probe};
use super::stats::{ConsumerStats, Counters};
use crate::error::Result;

/// A consumer runtime running as a Tokio task, from
/// [`ConsumerRuntime::spawn`](crate::ConsumerRuntime::spawn).
///
/// Dropping the handle detaches the runtime (it runs until the Tokio runtime shuts down), as
/// dropping a [`JoinHandle`] does; keep the handle to stop it with [`ConsumerHandle::shutdown`].
pub struct ConsumerHandle {
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) task: JoinHandle<Result<ConsumerStats>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) health: Arc<HealthState>,
    pub(crate) probe: Probe,
    pub(crate) probe_timeout: std::time::Duration,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("finished", &self.task.is_finished())
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl ConsumerHandle {
    /// What the runtime has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// The runtime's state, with a live probe of the broker (bounded by the configuration's
    /// `connect_timeout`): what a readiness endpoint reports. See [`ConsumerHealth::is_ready`].
    ///
    /// ```no_run
    /// # async fn check(handle: &cqrs_core::ConsumerHandle) {
    /// let health = handle.health().await;
    /// if !health.is_ready() {
    ///     eprintln!("not ready: {health:?}");
    /// }
    /// # }
    /// ```
    pub async fn health(&self) -> ConsumerHealth {
        let probe = match tokio::time::timeout(self.probe_timeout, (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err(crate::Error::Connect {
                url: String::new(),
                reason: format!("the broker did not answer within {:?}", self.probe_timeout),
            }),
        };
        self.health
            .report(!self.task.is_finished(), probe, self.counters.snapshot())
    }

    /// Whether the runtime task has ended (after a shutdown, when its transport was closed, or
    /// on a failure it cannot recover from; [`ConsumerHandle::shutdown`] then returns it).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the runtime and waits for it, as [`ConsumerRuntime::run_until`] does when its
    /// shutdown future completes: no new deliveries are taken, each worker finishes the batch
    /// in hand, the delay queue is republished, then the counters are returned.
    ///
    /// # Errors
    ///
    /// What [`ConsumerRuntime::run_until`] returned, if it had ended on an error before.
    ///
    /// [`ConsumerRuntime::run_until`]: crate::ConsumerRuntime::run_until
    pub async fn shutdown(self) -> Result<ConsumerStats> {
        // An error means the task has ended already: its result is what we want either way.
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "the consumer runtime task failed");
                Ok(self.counters.snapshot())
            }
        }
    }
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C); on other platforms, Ctrl-C.
///
/// Made for [`ConsumerRuntime::run_until`]: `runtime.run_until(shutdown_signal()).await`. If a
/// signal handler cannot be installed, that is logged and the other signal still works.
///
/// [`ConsumerRuntime::run_until`]: crate::ConsumerRuntime::run_until
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT (Ctrl-C)");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; stopping"),
        () = terminate => tracing::info!("SIGTERM received; stopping"),
    }
}
