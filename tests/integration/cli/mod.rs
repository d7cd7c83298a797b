//! The operator commands (`cqrs_diesel::cli`) run in-process with `Cli::try_run_from`, against
//! a PostgreSQL master, MariaDB and SQLite replicas and the real RabbitMQ, with files in a
//! temporary directory.

mod bad_input;
mod dead_letters;
mod diff;
mod django_flags;
mod dump_load;
mod services;
mod sync;

use std::path::PathBuf;

use chrono::{NaiveDate, TimeZone, Utc};
use cqrs_diesel::cli::{Cli, CliError, Report};
use cqrs_diesel::diesel::PgConnection;
use cqrs_diesel::{Config, CqrsConnection, MasterModel};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{PgDb, TestDb};
use crate::master::Author;
use crate::master::models::PgAuthor;
use crate::replica::models::{AuthorRow, PgAuthorReplica};
use crate::support::{config_builder, unique};

/// A directory of its own, removed at the end.
pub struct Dir(PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).expect("create the test directory");
        Dir(path)
    }

    /// A file name in the directory, as a command-line argument.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// The names of the files in the directory.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read the test directory")
            .map(|entry| {
                entry
                    .expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cqrs <args>` on `cli`.
pub async fn run<C: CqrsConnection>(cli: &Cli<C>, args: &[&str]) -> Result<Report, CliError> {
    let argv = std::iter::once("cqrs").chain(args.iter().copied());
    cli.try_run_from(argv).await
}

/// Runs `cqrs <args>` on `cli` and expects success.
pub async fn ok<C: CqrsConnection>(cli: &Cli<C>, args: &[&str]) -> Report {
    run(cli, args)
        .await
        .unwrap_or_else(|error| panic!("cqrs {args:?} failed: {error}"))
}

/// The author with this id as the master tests create it: varied values (nulls, unicode,
/// fractions of seconds).
pub fn author_row(id: i32) -> PgAuthor {
    PgAuthor::new(
        id,
        &format!("author-{id}"),
        (id % 3 == 0)
            .then(|| format!("a{id}@example.com"))
            .as_deref(),
        NaiveDate::from_ymd_opt(1980 + id % 30, 1 + (id % 12) as u32, 1 + (id % 28) as u32),
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::microseconds(i64::from(id) * 1001),
        id % 2 == 0,
        f64::from(id) * 1.25,
        Uuid::from_u128(0x1234_5678_0000_0000_0000_0000_0000_0000 + id as u128),
        (id % 4 == 1)
            .then(|| format!("bio {id}: \"quoted\", Привет ✓\nline"))
            .as_deref(),
    )
}

/// A PostgreSQL master with authors 1..=n (every fifth updated twice), and its commands.
pub struct Master {
    pub db: PgDb,
    pub config: Config,
    pub cli: Cli<PgConnection>,
}

impl Master {
    pub fn new(n: i32, config: Config) -> Self {
        let db = PgDb::new("cli_master");
        db.execute(PgAuthor::DDL);
        let conn = &mut db.connect();
        conn.run_outbox_migrations().expect("outbox migration");
        let rows: Vec<PgAuthor> = (1..=n).map(author_row).collect();
        let rows = PgAuthor::bulk_create_and_publish(conn, &rows).expect("create the authors");
        for mut row in rows.into_iter().filter(|row| row.id % 5 == 0) {
            row.set_name(&format!("renamed-{}", row.id));
            let row = row.save_and_publish(conn).expect("update");
            row.save_and_publish(conn).expect("update again");
        }
        let cli = Cli::new(config.clone(), db.connector()).master::<PgAuthor>();
        Master { db, config, cli }
    }

    /// A master with a configuration of its own.
    pub fn standalone(n: i32) -> Self {
        Self::new(n, config_builder("cli_master").build().expect("config"))
    }

    /// Every master row as a replica would hold it (all fields but `cqrs_updated`), by id.
    pub fn rows(&self) -> Vec<Value> {
        PgAuthorReplica::load_all(&mut self.db.connect())
            .iter()
            .map(AuthorRow::wire_fields)
            .collect()
    }
}

/// Every replica row (all fields but `cqrs_updated`), by id.
pub fn replica_rows<R: AuthorRow>(conn: &mut R::Conn) -> Vec<Value> {
    R::load_all(conn)
        .iter()
        .map(AuthorRow::wire_fields)
        .collect()
}

/// The lines of a file.
pub fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The primary keys listed by the JSON-array lines of a diff file (after its header).
pub fn listed_keys(path: &str) -> Vec<i64> {
    let mut keys: Vec<i64> = lines(path)
        .iter()
        .skip(1)
        .flat_map(|line| {
            serde_json::from_str::<Vec<Value>>(line)
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .into_iter()
                .map(|v| v.as_i64().expect("an integer key"))
        })
        .collect();
    keys.sort_unstable();
    keys
}

/// Publishes `body` to `author` once a running `consume` has declared its queue and bindings
/// (the publish is unroutable until then).
pub async fn publish_when_routed(config: &Config, body: &Value) {
    use std::time::Duration;

    use cqrs_diesel::transport::OutgoingMessage;
    use cqrs_diesel::{RabbitMqTransport, Transport};

    let transport = RabbitMqTransport::new(config.clone());
    let body = body.to_string().into_bytes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(error) = transport
        .publish_confirmed(&OutgoingMessage::new("author", body.clone()))
        .await
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer declares its queue and bindings: {error}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    transport.close().await;
}

/// Publishes a SAVE of author 7 once a running `consume` is routed to, and waits until the
/// replica has applied it.
pub async fn consume_one_save(config: &Config, db: &crate::db::SqliteDb) {
    use std::time::Duration;

    use crate::replica::models::SqliteAuthorReplica;

    publish_when_routed(config, &crate::replica::author("SAVE", 7, "consumed", 0)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while replica_rows::<SqliteAuthorReplica>(&mut db.connect()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SAVE is applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
