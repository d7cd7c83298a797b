//! A replica worker as a process of its own, for the tests that need several processes on one
//! queue (the model-based test's three consumers). It applies `author` messages to a database
//! with the library's `ConsumerRuntime`, exactly as a service's worker does.
//!
//! Input, all from the environment:
//! - `CQRS_*`: the configuration (`Config::from_env`), at least `CQRS_AMQP_URL`, `CQRS_EXCHANGE`
//!   and `CQRS_QUEUE`;
//! - `CQRS_TEST_BACKEND`: `postgres`, `mariadb` or `sqlite`;
//! - `CQRS_TEST_DATABASE_URL`: the database (a SQLite file's path);
//! - `CQRS_TEST_PG_SCHEMA`: on PostgreSQL, the schema put first on the `search_path`;
//! - `RUST_LOG` (default `warn`): what the library logs to stderr.
//!
//! Output, on stdout, one line each time its counters change and one when it ends:
//! `stats <applied> <dead_lettered> <malformed>`, then `final <applied> <dead_lettered>
//! <malformed>`. It stops cleanly (finishing its batch, acknowledging what it applied) when its
//! stdin closes, and exits 0; any failure exits 1 with the reason on stderr.

#[path = "../common/authors.rs"]
mod authors;
#[path = "../common/child.rs"]
mod child;

use std::io::Write;
use std::time::Duration;

use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::result::ConnectionError;
use cqrs_diesel::diesel::{Connection, MysqlConnection, PgConnection, SqliteConnection};
use cqrs_diesel::{
    Config, ConsumerRuntime, ConsumerStats, CqrsConnection, RabbitMqTransport, ReplicaStore,
    Replicas, SessionSetup, Transport,
};

use authors::{MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica};

type Connector<C> = Box<dyn Fn() -> Result<C, ConnectionError> + Send + Sync>;

use child::var;

fn main() {
    child::main("replica_process", run);
}

fn run() -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let backend = var("CQRS_TEST_BACKEND")?;
    let url = var("CQRS_TEST_DATABASE_URL")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match backend.as_str() {
        "postgres" => {
            let schema = var("CQRS_TEST_PG_SCHEMA")?;
            let connect: Connector<PgConnection> = Box::new(move || {
                let mut conn = PgConnection::establish(&url)?;
                conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            });
            runtime.block_on(consume::<_, PgAuthorReplica>(config, connect))
        }
        "mariadb" => {
            let connect: Connector<MysqlConnection> =
                Box::new(move || MysqlConnection::establish(&url));
            runtime.block_on(consume::<_, MysqlAuthorReplica>(config, connect))
        }
        "sqlite" => {
            let connect: Connector<SqliteConnection> = Box::new(move || {
                let mut conn = SqliteConnection::establish(&url)?;
                SessionSetup::new()
                    .sqlite_busy_timeout(Duration::from_secs(10))
                    .apply(&mut conn)
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            });
            runtime.block_on(consume::<_, SqliteAuthorReplica>(config, connect))
        }
        other => Err(format!(
            "CQRS_TEST_BACKEND {other:?} is not postgres, mariadb or sqlite"
        )),
    }
}

fn line(tag: &str, stats: &ConsumerStats) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{tag} {} {} {}",
        stats.applied(),
        stats.dead_lettered,
        stats.malformed
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("stdout: {e}"))
}

async fn consume<C, M>(config: Config, connect: Connector<C>) -> Result<(), String>
where
    C: CqrsConnection,
    M: ReplicaStore<C>,
{
    let replicas = Replicas::new(connect).register::<M>();
    let transport = RabbitMqTransport::new(config.clone());
    let handle = ConsumerRuntime::new(transport.clone(), config, replicas)
        .batch_wait(Duration::from_millis(5))
        .spawn();

    let mut closed = child::stdin_closed();

    let mut last = None;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                let stats = handle.stats();
                let now = (stats.applied(), stats.dead_lettered, stats.malformed);
                if last != Some(now) {
                    line("stats", &stats)?;
                    last = Some(now);
                }
            }
        }
    }
    let stats = handle.shutdown().await.map_err(|e| e.to_string())?;
    transport.close().await;
    line("final", &stats)
}
