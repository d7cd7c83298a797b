//! An outbox relay as a process of its own, for the tests that run several relays on one
//! outbox (the cluster test's two relays). It runs the library's `OutboxRelay` over a
//! `RabbitMqTransport` on a PostgreSQL master's outbox, exactly as a service's relay does.
//!
//! Input, all from the environment:
//! - `CQRS_*`: the configuration (`Config::from_env`), at least `CQRS_AMQP_URL` (a
//!   comma-separated list for a cluster) and `CQRS_EXCHANGE`;
//! - `CQRS_TEST_DATABASE_URL`: the PostgreSQL database;
//! - `CQRS_TEST_PG_SCHEMA`: the schema put first on the `search_path` (the outbox's);
//! - `CQRS_TEST_RELAY_POLL_MS` (default 50): the relay's poll interval;
//! - `CQRS_TEST_RELAY_RETRY_MAX_MS` (default the library's 10 s): the longest delay between
//!   attempts after an error;
//! - `RUST_LOG` (default `warn`): what the library logs to stderr, with times.
//!
//! Output, on stdout, one line each time its counters change and one when it ends:
//! `stats <published> <unroutable> <errors>`, then `final <published> <unroutable> <errors>`.
//! It stops cleanly (finishing the batch in hand) when its stdin closes, and exits 0; any
//! failure exits 1 with the reason on stderr.

#[path = "../common/child.rs"]
mod child;

use std::io::Write;
use std::time::Duration;

use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::result::ConnectionError;
use cqrs_diesel::diesel::{Connection, PgConnection};
use cqrs_diesel::{Config, OutboxRelay, RabbitMqTransport, RelayStats, Transport};

fn millis(name: &str) -> Result<Option<Duration>, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map(|ms| Some(Duration::from_millis(ms)))
            .map_err(|_| format!("{name}={value:?} is not a number of milliseconds")),
        Err(_) => Ok(None),
    }
}

use child::var;

fn main() {
    child::main("relay_process", run);
}

fn run() -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let url = var("CQRS_TEST_DATABASE_URL")?;
    let schema = var("CQRS_TEST_PG_SCHEMA")?;
    let poll = millis("CQRS_TEST_RELAY_POLL_MS")?.unwrap_or(Duration::from_millis(50));
    let retry_max = millis("CQRS_TEST_RELAY_RETRY_MAX_MS")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let connect = move || {
        let mut conn = PgConnection::establish(&url)?;
        conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    };
    // Fail fast on a database that cannot be reached, rather than retrying for ever.
    connect().map_err(|e| format!("connecting to the master database: {e}"))?;
    runtime.block_on(relay(config, connect, poll, retry_max))
}

fn line(tag: &str, stats: &RelayStats) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{tag} {} {} {}",
        stats.published, stats.unroutable, stats.errors
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("stdout: {e}"))
}

async fn relay(
    config: Config,
    connect: impl Fn() -> Result<PgConnection, ConnectionError> + Send + Sync + 'static,
    poll: Duration,
    retry_max: Option<Duration>,
) -> Result<(), String> {
    let transport = RabbitMqTransport::new(config);
    let mut relay = OutboxRelay::new(transport.clone(), connect).poll_interval(poll);
    if let Some(max) = retry_max {
        relay = relay.retry_delays(Duration::from_millis(100).min(max), max);
    }
    let handle = relay.spawn();

    let mut closed = child::stdin_closed();

    let mut last = None;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                if handle.is_finished() {
                    return Err("the relay task ended on its own".to_owned());
                }
                let stats = handle.stats();
                let now = (stats.published, stats.unroutable, stats.errors);
                if last != Some(now) {
                    line("stats", &stats)?;
                    last = Some(now);
                }
            }
        }
    }
    let stats = handle.shutdown().await;
    transport.close().await;
    line("final", &stats)
}
