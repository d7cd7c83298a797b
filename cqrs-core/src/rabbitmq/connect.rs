//! Making connections: the URL list tried in turn, backoff with jitter, redacted logging.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::{Connection, ConnectionProperties};
use tokio::time::Instant;

use super::Shared;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::{Error, Result};

/// The runtime every RabbitMQ connection of this process runs on: lapin's I/O thread, its
/// internal task (the one that settles its promises and closes channels and connections),
/// heartbeats and the socket's registration with a reactor.
///
/// Why a runtime of its own, and not the application's: lapin's I/O loop is a thread that
/// drives the connection with `block_on` on the runtime the connection was made on, and its
/// internal task and heartbeats are tasks of that runtime. When the application drops its
/// runtime with a connection still open (a `#[tokio::main]` returning, a test ending, a
/// command's runtime dropped with a transport in a leaked task), those tasks are cancelled
/// under the I/O thread, which then fails or panics ("lapin-io-loop ... task was cancelled")
/// instead of closing, and a connection dropped later has nothing left to close it. No close
/// at our end can prevent that when the runtime itself goes first. On this runtime, which is
/// never dropped (a static), the connections outlive any application runtime: a transport
/// closed or dropped later still closes its connections cleanly (`connection.close`, or
/// lapin's close on drop), and at process exit the thread simply ends with the process. The
/// cost is one thread, idle but for the broker's traffic; the application's futures await
/// lapin's as before (its promises wake any executor).
fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("cqrs-amqp-io")
                .enable_all()
                .build()
                .map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|reason| Error::Connect {
            url: "(none)".to_owned(),
            reason: format!("cannot start the runtime RabbitMQ connections run on: {reason}"),
        })
}

/// Closes `connection` on the connections' runtime, without waiting: for
/// destructors, which cannot await.
pub(super) fn close_in_background(connection: Connection) {
    if let Ok(runtime) = io_runtime() {
        runtime.spawn(async move { close_quietly(&connection).await });
    }
}

/// The configured URLs, redacted, for messages.
pub(super) fn url_list(config: &Config) -> String {
    config
        .amqp_urls()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn properties(config: &Config, role: &str) -> ConnectionProperties {
    let name = format!("{} ({role})", config.connection_name());
    ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_client_property("product".into(), "cqrs-diesel".into())
}

fn is_login_refusal(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp) if matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        )
    )
}

/// Connects to the first broker of the list that answers, going round the list with backoff
/// between rounds, until `deadline` (or for ever when there is none) or until the transport is
/// closed. `cursor` remembers where to start next time, so a failed node is not tried first.
pub(super) async fn connect(
    shared: &Shared,
    role: &'static str,
    cursor: &mut usize,
    backoff: &mut Backoff,
    deadline: Option<Instant>,
) -> Result<Connection> {
    let urls = shared.config.amqp_urls();
    if urls.is_empty() {
        return Err(Error::Config {
            setting: "CQRS_AMQP_URL",
            reason: "no broker URL configured".to_owned(),
        });
    }
    let mut shutdown = shared.shutdown.subscribe();
    let mut tried_this_round = 0usize;
    // The last error a broker answered with: when the deadline cuts an attempt short, that is
    // what the caller needs to hear, not that the cut attempt timed out.
    let mut last_answer: Option<String> = None;
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let url = &urls[*cursor % urls.len()];
        let per_attempt = match deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(shared.config.connect_timeout()),
            None => shared.config.connect_timeout(),
        }
        .max(Duration::from_millis(50));
        // lapin binds the connection to the runtime entered when it is made: ours.
        let runtime = {
            let _entered = io_runtime()?.enter();
            lapin::runtime::default_runtime().map_err(|error| Error::Connect {
                url: url.to_string(),
                reason: format!("no async runtime for lapin: {error}"),
            })?
        };
        let attempt = tokio::time::timeout(
            per_attempt,
            Connection::connect_uri_with_config(
                url.to_lapin(),
                properties(&shared.config, role),
                shared.config.tls().to_lapin(),
                runtime,
            ),
        )
        .await;
        let reason = match attempt {
            Ok(Ok(connection)) => {
                tracing::info!(url = %url, role, "connected to RabbitMQ");
                backoff.reset();
                return Ok(connection);
            }
            Ok(Err(error)) if is_login_refusal(&error) => {
                tracing::error!(url = %url, role, %error, "RabbitMQ refused the login");
                return Err(Error::AccessRefused {
                    url: url.to_string(),
                    reason: error.to_string(),
                });
            }
            Ok(Err(error)) => {
                let reason = error.to_string();
                last_answer = Some(reason.clone());
                reason
            }
            Err(_) => match &last_answer {
                Some(answer) => format!("{answer} (then no answer within {per_attempt:?})"),
                None => format!("no answer within {per_attempt:?}"),
            },
        };
        *cursor = cursor.wrapping_add(1);
        tried_this_round += 1;
        // Go straight to the next node of a cluster; back off once every node has failed.
        let delay = if tried_this_round >= urls.len() {
            tried_this_round = 0;
            backoff.next_delay()
        } else {
            Duration::ZERO
        };
        tracing::warn!(
            url = %url,
            role,
            error = %reason,
            retry_in_ms = delay.as_millis() as u64,
            "cannot connect to RabbitMQ"
        );
        if let Some(deadline) = deadline
            && Instant::now() + delay >= deadline
        {
            return Err(Error::Connect {
                url: url.to_string(),
                reason,
            });
        }
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|closed| *closed) => return Err(Error::Closed),
            }
        }
    }
}

/// Closes a connection that may be dead already; errors mean there was nothing left to close.
pub(super) async fn close_quietly(connection: &Connection) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            connection.close(200, "cqrs-diesel closing".into()),
        )
        .await;
    }
}
