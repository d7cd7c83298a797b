//! The payments service: payments, and a replica of the accounts service's accounts.
//!
//! Settings (environment): `DATABASE_URL` (default `payments.sqlite3`; `postgres://...` or
//! `mysql://...` for PostgreSQL or MariaDB), `LISTEN_ADDR` (default `127.0.0.1:8002`),
//! `CQRS_QUEUE` (default `payments_replica`), the other `CQRS_*` variables of the broker
//! and the replica worker, and `RUST_LOG`. Stops on SIGTERM or Ctrl-C, after the replica
//! worker has applied and acknowledged the batch in hand.

use std::process::ExitCode;

use cqrs_diesel::{Config, RabbitMqTransport, Transport};
use cqrs_examples::{ServiceError, env_or, init_tracing, payments};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing("info");
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the payments service failed");
            eprintln!("payments: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ServiceError> {
    let database_url = env_or("DATABASE_URL", "payments.sqlite3");
    let listen = env_or("LISTEN_ADDR", "127.0.0.1:8002");
    // `CQRS_QUEUE` defaults to this service's queue name.
    let config = Config::from_lookup(|name| match name {
        "CQRS_QUEUE" => Some(env_or(name, "payments_replica")),
        _ => std::env::var(name).ok(),
    })?;
    cqrs_examples::ops::install_metrics()?;
    let transport = RabbitMqTransport::new(config.clone());
    let listener = TcpListener::bind(&listen).await?;
    let service = payments::start(&database_url, &config, transport.clone(), listener).await?;
    println!("payments service listening on {}", service.url());
    cqrs_diesel::shutdown_signal().await;
    let stopped = service.shutdown().await;
    transport.close().await;
    stopped
}
