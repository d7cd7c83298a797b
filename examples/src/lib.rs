//! # The accounts → payments example
//!
//! Two small HTTP services (axum) from the motivating story of cqrs-diesel:
//!
//! - [`accounts`] owns the `account` table (the *master*): `POST /accounts`,
//!   `PATCH /accounts/{id}` and `GET /accounts/{id}`. Each write goes through
//!   `save_and_publish`, which writes the row and its message to the outbox in one transaction;
//!   the outbox relay running in the service publishes it to RabbitMQ right after the commit.
//! - [`payments`] owns the `payment` table and keeps a replica of the accounts (`account_ref`),
//!   applied by the replica worker running in the service. `GET /payments?account.name=Pavel`
//!   is one local SQL join: no call to the accounts service at query time.
//!
//! [`demo`] runs both services, the relay and the replica worker in one process, on two SQLite
//! files, and shows a rename travelling from one service to the other:
//!
//! ```text
//! cargo run -p cqrs-examples --bin demo
//! ```
//!
//! ## Choosing the database
//!
//! Each service reads `DATABASE_URL`:
//!
//! | `DATABASE_URL` | backend |
//! | --- | --- |
//! | unset, a path, or `sqlite://path` | a SQLite file (the default: `accounts.sqlite3`, `payments.sqlite3`) |
//! | `postgres://...`, `postgresql://...` | PostgreSQL |
//! | `mysql://...`, `mariadb://...` | MySQL / MariaDB |
//!
//! Diesel's connection type is a compile-time choice (and Diesel's `MultiConnection` cannot run
//! the upserts of the replica), so the services are generic over the connection type `C`
//! (`SqliteConnection`, `PgConnection` or `MysqlConnection`, each naming its diesel-async
//! counterpart, [`db::Database::Async`]): their handlers, router and start-up are written once,
//! and the few Diesel queries each service needs are methods of a trait
//! ([`accounts::AccountsDb`], [`payments::PaymentsDb`]) that a short macro implements for each
//! backend. The request handlers run on diesel-async connections from a deadpool pool
//! ([`db::Db`]); the outbox relay and the replica worker open sync connections of their own.
//! [`accounts::start`] and [`payments::start`] parse the URL ([`db::DatabaseUrl`]) and
//! instantiate the service for its backend.
//!
//! The tables use the portable `TIMESTAMP` SQL type for their times (`TIMESTAMP` on PostgreSQL,
//! `DATETIME(6)` on MariaDB, text on SQLite), read as `chrono::NaiveDateTime` holding UTC, so one
//! Diesel schema and one model serve all three backends. A service written for PostgreSQL only
//! would rather use `Timestamptz` and `DateTime<Utc>`.
//!
//! ## The broker
//!
//! The services read the broker settings with `Config::from_env()` (`CQRS_AMQP_URL`,
//! `CQRS_EXCHANGE`, ...); the payments service consumes `CQRS_QUEUE`, `payments_replica` by
//! default. A service starts even when the broker is down: writes wait in the outbox, the
//! replica worker reconnects, and both catch up when the broker is back.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod accounts;
pub mod db;
pub mod demo;
pub mod error;
pub mod ops;
pub mod payments;
pub mod service;

pub use error::{ApiError, ServiceError};
pub use service::RunningService;

/// Logs to standard error through `tracing`, at the levels `RUST_LOG` asks for, or `default`
/// (for example `"info"`) when it is unset. Does nothing if a subscriber is set already.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The value of the environment variable `name`, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}
