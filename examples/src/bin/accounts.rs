//! The accounts service (the master of `account` rows).
//!
//! Settings (environment): `DATABASE_URL` (default `accounts.sqlite3`; `postgres://...` or
//! `mysql://...` for PostgreSQL or MariaDB), `LISTEN_ADDR` (default `127.0.0.1:8001`), the
//! broker's `CQRS_*` variables (`CQRS_AMQP_URL`, `CQRS_EXCHANGE`, ...) and `RUST_LOG`.
//! Stops on SIGTERM or Ctrl-C, after the outbox relay has published what it holds.

use std::process::ExitCode;

use cqrs_diesel::{Config, RabbitMqTransport, Transport};
use cqrs_examples::{ServiceError, accounts, env_or, init_tracing};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing("info");
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the accounts service failed");
            eprintln!("accounts: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ServiceError> {
    let database_url = env_or("DATABASE_URL", "accounts.sqlite3");
    let listen = env_or("LISTEN_ADDR", "127.0.0.1:8001");
    let config = Config::from_env()?;
    let transport = RabbitMqTransport::new(config.clone());
    let listener = TcpListener::bind(&listen).await?;
    let service = accounts::start(&database_url, &config, transport.clone(), listener).await?;
    println!("accounts service listening on {}", service.url());
    cqrs_diesel::shutdown_signal().await;
    let stopped = service.shutdown().await;
    transport.close().await;
    stopped
}
