//! Running an HTTP service in this process, beside its CQRS background task (the outbox relay
//! or the replica worker), and stopping both in order.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use cqrs_diesel::{Topology, Transport};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::ServiceError;

/// A service running in this process: its address, and [`RunningService::shutdown`].
///
/// Dropping it stops the service too, in the background; `shutdown` waits for the stop and
/// reports its errors.
#[derive(Debug)]
pub struct RunningService {
    name: &'static str,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl RunningService {
    /// Serves `router` on `listener` until [`shutdown`](Self::shutdown); then runs `after`
    /// (stopping the service's relay or replica worker) once the HTTP server has stopped.
    pub fn spawn(
        name: &'static str,
        listener: TcpListener,
        router: Router,
        after: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunningService, ServiceError> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    // A dropped sender also stops the server.
                    let _ = stopped.await;
                })
                .await;
            after.await;
            tracing::info!(service = name, "stopped");
            Ok(served?)
        });
        tracing::info!(service = name, %addr, "listening");
        Ok(RunningService {
            name,
            addr,
            stop,
            task,
        })
    }

    /// The service's name (`accounts`, `payments`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops taking requests, lets those in progress finish, then stops the background task
    /// (the relay publishes what it holds; the replica worker applies and acknowledges its
    /// batch).
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Declares `topology` on the broker; when that fails (the broker is down), keeps trying in
/// a background task, whose handle is returned so that the service can stop it.
///
/// A service must not refuse to start because the broker is down: writes go to the outbox
/// and the replica worker reconnects by itself. But the exchange (and a replica's queue) must
/// exist before messages can be routed, so the declaration goes on in the background.
pub(crate) async fn declare_topology<T: Transport>(
    transport: &T,
    topology: Topology,
) -> Option<JoinHandle<()>> {
    match transport.declare(&topology).await {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(%error, "cannot declare the CQRS topology yet; trying in the background");
            Some(tokio::spawn(declare_until_done(
                transport.clone(),
                topology,
            )))
        }
    }
}

async fn declare_until_done<T: Transport>(transport: T, topology: Topology) {
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::time::sleep(delay).await;
        match transport.declare(&topology).await {
            Ok(()) => {
                tracing::info!("CQRS topology declared");
                return;
            }
            Err(error) => tracing::debug!(%error, "cannot declare the CQRS topology yet"),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
