//! The handle of a spawned consumer runtime, and [`shutdown_signal`] for running one in its own
//! process.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::stats::{ConsumerStats, Counters};
use crate::error::Result;

/// A consumer runtime running as a Tokio task, from
/// [`ConsumerRuntime::spawn`](crate::ConsumerRuntime::spawn).
///
/// Dropping the handle detaches the runtime (it runs until the Tokio runtime shuts down), as
/// dropping a [`JoinHandle`] does; keep the handle to stop it with [`ConsumerHandle::shutdown`].
#[derive(Debug)]
pub struct ConsumerHandle {
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) task: JoinHandle<Result<ConsumerStats>>,
    pub(crate) counters: Arc<Counters>,
}

impl ConsumerHandle {
    /// What the runtime has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
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
