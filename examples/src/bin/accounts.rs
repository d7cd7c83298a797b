//! The accounts service (the master of `account` rows).
//!
//! Settings (environment): `DATABASE_URL` (default `accounts.sqlite3`; `postgres://...` or
//! `mysql://...` for PostgreSQL or MariaDB), `LISTEN_ADDR` (default `127.0.0.1:8001`), the
//! broker's `CQRS_*` variables (`CQRS_AMQP_URL`, `CQRS_EXCHANGE`, ...) and `RUST_LOG`.
//! Stops on SIGTERM or Ctrl-C, after the outbox relay has published what it holds.
//!
//! `accounts cqrs <command>` runs an operator command (`cqrs_diesel::cli`: `sync`,
//! `bulk-dump`, `diff-master`, ...) against the same database and broker instead.

use std::process::ExitCode;

use cqrs_diesel::cli::Cli;
use cqrs_diesel::diesel::{MysqlConnection, PgConnection, SqliteConnection};
use cqrs_diesel::{Config, RabbitMqTransport, Transport};
use cqrs_examples::accounts::Account;
use cqrs_examples::db::{Database, DatabaseUrl};
use cqrs_examples::{ServiceError, accounts, env_or, init_tracing};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing("info");
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "cqrs") {
        return operator_command().await;
    }
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
    cqrs_examples::ops::install_metrics()?;
    let transport = RabbitMqTransport::new(config.clone());
    let listener = TcpListener::bind(&listen).await?;
    let ops = cqrs_examples::ops::Ops::from_env()?;
    let service =
        accounts::start_with(&database_url, &config, transport.clone(), listener, ops).await?;
    println!("accounts service listening on {}", service.url());
    cqrs_diesel::shutdown_signal().await;
    let stopped = service.shutdown().await;
    transport.close().await;
    stopped
}

/// `accounts cqrs <command> ...`: the operator commands, with `Account` as the master model.
async fn operator_command() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "accounts cqrs: {error}");
            return ExitCode::from(2);
        }
    };
    let args = std::env::args_os().skip(1);
    match DatabaseUrl::parse(&env_or("DATABASE_URL", "accounts.sqlite3")) {
        DatabaseUrl::Postgres(url) => cli::<PgConnection>(config, url).run_from(args).await,
        DatabaseUrl::Mysql(url) => cli::<MysqlConnection>(config, url).run_from(args).await,
        DatabaseUrl::Sqlite(url) => cli::<SqliteConnection>(config, url).run_from(args).await,
    }
}

fn cli<C: Database>(config: Config, url: String) -> Cli<C>
where
    Account: cqrs_diesel::MasterStore<C>,
{
    Cli::new(config, move || C::open(&url)).master::<Account>()
}
