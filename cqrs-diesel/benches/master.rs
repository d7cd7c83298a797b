//! The cost of the master write path against the plain Diesel write of the same row, on
//! PostgreSQL, MariaDB and SQLite, with 1 and 8 concurrent writers.
//!
//! Each writer owns its rows. One round runs five phases, each once over every writer's rows:
//! create, update, update of a tracked field, delete, and create with a key the database
//! generates. The baseline is what a service without this library would run: one autocommitted
//! `INSERT`, `UPDATE ... SET ..., cqrs_revision = cqrs_revision + 1` or `DELETE`, and for the
//! generated key `INSERT ... RETURNING id` (MariaDB: `INSERT`, then `LAST_INSERT_ID()`). Ours
//! is `save_and_publish` (a model without tracked fields for create and update, one with
//! `tracked(name)` for the tracked update), `delete_and_publish` and `insert_and_publish`,
//! each writing the row and its outbox entry in one transaction. No relay
//! runs: this measures the write alone. The plain and our rounds alternate in the same run,
//! because this machine is shared and absolute times drift; the cost is given as the median
//! ratio of the rounds with their spread.
//!
//! The same phases run again on diesel-async connections (`AsyncPgConnection`,
//! `AsyncMysqlConnection`, `SyncConnectionWrapper<SqliteConnection>`), with 1 and 8 concurrent
//! tasks: `save_and_publish(conn).await` against the async plain write of the same row, so that
//! the async path's cost is read against its own plain write.
//!
//! Run: `cargo bench -p cqrs-diesel --bench master`. `BENCH_ROUNDS` (default 5) and
//! `BENCH_ROWS` (rows per writer, default 200) size the run; `BENCH_BACKENDS` (default
//! `postgres,mariadb,mariadb-backend,sqlite`) and `BENCH_WRITERS` (default `1,8`) choose what
//! runs. `mariadb` is MariaDB through Diesel's MySQL backend (`MysqlConnection`, rows read
//! back), `mariadb-backend` the same database through its MariaDB backend
//! (`MariadbConnection`, `RETURNING`).
//! `PG_DATABASE_URL` and `MYSQL_DATABASE_URL` override the local servers.

use std::future::Future;
use std::time::Instant;

use cqrs_diesel::{
    Awaiting, Blocking, CqrsConnection, Exec, MasterModel, MasterStore, SessionSetup,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_async::AsyncConnection;

/// What one backend provides to the phases.
trait Bench: Sized + Sync {
    type Conn: Connection + Exec<Mode = Blocking> + Send + 'static;
    /// The diesel-async connection to the same database.
    type Async: Exec<Mode = Awaiting> + AsyncConnection + Send + 'static;
    type Untracked: MasterStore<Self::Conn> + MasterStore<Self::Async>;
    type Tracked: MasterStore<Self::Conn> + MasterStore<Self::Async>;
    const NAME: &'static str;

    /// Prepares the database (tables, outbox) and returns a handle to open connections.
    fn setup() -> Self;
    fn connect(&self) -> Self::Conn;
    fn reset(&self);
    fn untracked(id: i64, n: i64) -> Self::Untracked;
    fn tracked(id: i64, n: i64) -> Self::Tracked;
    fn plain_insert(conn: &mut Self::Conn, id: i64);
    fn plain_update(conn: &mut Self::Conn, id: i64, n: i64);
    fn plain_delete(conn: &mut Self::Conn, id: i64);
    /// A plain insert whose key the database generates, reading the key back.
    fn plain_insert_generated(conn: &mut Self::Conn, n: i64) -> i64;
    /// Runs `write` and inserts an outbox row, in one transaction.
    fn with_outbox_row(conn: &mut Self::Conn, id: i64, write: impl FnOnce(&mut Self::Conn));
    fn teardown(&self);

    fn connect_async(&self) -> impl Future<Output = Self::Async> + Send;
    /// The plain write of phase `p` (see [`PHASES`]) of row `id`, on an async connection.
    fn plain_async(p: usize, conn: &mut Self::Async, id: i64) -> impl Future<Output = ()> + Send;
    /// [`Bench::plain_async`] and an outbox row, in one transaction.
    fn floor_async(p: usize, conn: &mut Self::Async, id: i64) -> impl Future<Output = ()> + Send;
}

fn name(id: i64, n: i64) -> String {
    format!("account {id} write {n}")
}

fn email(id: i64) -> String {
    format!("user{id}@example.com")
}

macro_rules! model {
    ($table:ident, $updated:ty, $updated_sql:ident, $backend:ident) => {
        diesel::table! {
            $table (id) {
                id -> BigInt,
                name -> Text,
                email -> Text,
                balance -> BigInt,
                cqrs_revision -> Integer,
                cqrs_updated -> $updated_sql,
            }
        }

        #[derive(Debug, Clone, MasterModel)]
        #[cqrs(id = "account", table = $table, backends($backend))]
        pub struct Untracked {
            id: i64,
            name: String,
            email: String,
            balance: i64,
            cqrs_revision: i32,
            cqrs_updated: $updated,
        }

        #[derive(Debug, Clone, MasterModel)]
        #[cqrs(id = "account", table = $table, tracked(name), backends($backend))]
        pub struct Tracked {
            id: i64,
            name: String,
            email: String,
            balance: i64,
            cqrs_revision: i32,
            cqrs_updated: $updated,
        }

        pub fn untracked(id: i64, n: i64) -> Untracked {
            Untracked {
                id,
                name: super::name(id, n),
                email: super::email(id),
                balance: n * 100,
                cqrs_revision: 0,
                cqrs_updated: now(),
            }
        }

        pub fn tracked(id: i64, n: i64) -> Tracked {
            Tracked {
                id,
                name: super::name(id, n),
                email: super::email(id),
                balance: n * 100,
                cqrs_revision: 0,
                cqrs_updated: now(),
            }
        }

        pub fn plain_insert(conn: &mut Conn, id: i64) {
            diesel::insert_into($table::table)
                .values((
                    $table::id.eq(id),
                    $table::name.eq(super::name(id, 0)),
                    $table::email.eq(super::email(id)),
                    $table::balance.eq(0),
                    $table::cqrs_revision.eq(0),
                    $table::cqrs_updated.eq(now()),
                ))
                .execute(conn)
                .expect("plain insert");
        }

        pub fn plain_update(conn: &mut Conn, id: i64, n: i64) {
            diesel::update($table::table.find(id))
                .set((
                    $table::name.eq(super::name(id, n)),
                    $table::email.eq(super::email(id)),
                    $table::balance.eq(n * 100),
                    $table::cqrs_updated.eq(now()),
                    $table::cqrs_revision.eq($table::cqrs_revision + 1),
                ))
                .execute(conn)
                .expect("plain update");
        }

        pub fn plain_delete(conn: &mut Conn, id: i64) {
            diesel::delete($table::table.find(id))
                .execute(conn)
                .expect("plain delete");
        }

        /// The floor of any transactional outbox: `write` and the insert of an outbox row of
        /// the size of ours, in one transaction, with nothing read and nothing checked.
        pub fn with_outbox_row(conn: &mut Conn, id: i64, write: impl FnOnce(&mut Conn)) {
            use cqrs_diesel::outbox::cqrs_outbox;
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                write(conn);
                diesel::insert_into(cqrs_outbox::table)
                    .values((
                        cqrs_outbox::cqrs_id.eq("account"),
                        cqrs_outbox::routing_key.eq("account"),
                        cqrs_outbox::body.eq(super::floor_body(id)),
                    ))
                    .execute(conn)?;
                Ok(())
            })
            .expect("floor write");
        }

        /// The plain writes of [`plain_write`](super::plain_write), on an async connection.
        pub async fn plain_async(p: usize, conn: &mut AConn, id: i64) {
            let n = [0, 1, 2, 0, id][p.min(4)];
            match p {
                0 => {
                    diesel_async::RunQueryDsl::execute(
                        diesel::insert_into($table::table).values((
                            $table::id.eq(id),
                            $table::name.eq(super::name(id, 0)),
                            $table::email.eq(super::email(id)),
                            $table::balance.eq(0),
                            $table::cqrs_revision.eq(0),
                            $table::cqrs_updated.eq(now()),
                        )),
                        conn,
                    )
                    .await
                    .expect("plain insert");
                }
                1 | 2 => {
                    diesel_async::RunQueryDsl::execute(
                        diesel::update($table::table.find(id)).set((
                            $table::name.eq(super::name(id, n)),
                            $table::email.eq(super::email(id)),
                            $table::balance.eq(n * 100),
                            $table::cqrs_updated.eq(now()),
                            $table::cqrs_revision.eq($table::cqrs_revision + 1),
                        )),
                        conn,
                    )
                    .await
                    .expect("plain update");
                }
                3 => {
                    diesel_async::RunQueryDsl::execute(
                        diesel::delete($table::table.find(id)),
                        conn,
                    )
                    .await
                    .expect("plain delete");
                }
                _ => {
                    plain_insert_generated_async(conn, n).await;
                }
            }
        }

        /// [`plain_async`] and an outbox row, in one transaction.
        pub async fn floor_async(p: usize, conn: &mut AConn, id: i64) {
            use cqrs_diesel::outbox::cqrs_outbox;
            conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
                plain_async(p, conn, id).await;
                diesel_async::RunQueryDsl::execute(
                    diesel::insert_into(cqrs_outbox::table).values((
                        cqrs_outbox::cqrs_id.eq("account"),
                        cqrs_outbox::routing_key.eq("account"),
                        cqrs_outbox::body.eq(super::floor_body(id)),
                    )),
                    conn,
                )
                .await?;
                Ok(())
            })
            .await
            .expect("floor write");
        }

        /// The columns of a new row but its key.
        #[allow(clippy::type_complexity)]
        pub fn keyless(
            n: i64,
        ) -> (
            diesel::dsl::Eq<$table::name, String>,
            diesel::dsl::Eq<$table::email, String>,
            diesel::dsl::Eq<$table::balance, i64>,
            diesel::dsl::Eq<$table::cqrs_revision, i32>,
            diesel::dsl::Eq<$table::cqrs_updated, $updated>,
        ) {
            (
                $table::name.eq(format!("generated {n}")),
                $table::email.eq(format!("generated{n}@example.com")),
                $table::balance.eq(0),
                $table::cqrs_revision.eq(0),
                $table::cqrs_updated.eq(now()),
            )
        }
    };
}

/// The plain generated-key insert of a backend with `RETURNING` (PostgreSQL, SQLite).
macro_rules! returning_insert {
    ($table:ident) => {
        pub fn plain_insert_generated(conn: &mut Conn, n: i64) -> i64 {
            diesel::insert_into($table::table)
                .values(keyless(n))
                .returning($table::id)
                .get_result(conn)
                .expect("plain insert")
        }

        pub async fn plain_insert_generated_async(conn: &mut AConn, n: i64) -> i64 {
            diesel_async::RunQueryDsl::get_result(
                diesel::insert_into($table::table)
                    .values(keyless(n))
                    .returning($table::id),
                conn,
            )
            .await
            .expect("plain insert")
        }
    };
}

mod pg {
    use super::*;
    use chrono::{DateTime, Utc};
    pub type Conn = PgConnection;
    pub type AConn = diesel_async::AsyncPgConnection;
    fn now() -> DateTime<Utc> {
        Utc::now()
    }
    model!(account, DateTime<Utc>, Timestamptz, postgres);

    returning_insert!(account);
}

mod my {
    use super::*;
    use chrono::{NaiveDateTime, Utc};
    pub type Conn = MysqlConnection;
    pub type AConn = diesel_async::AsyncMysqlConnection;
    fn now() -> NaiveDateTime {
        Utc::now().naive_utc()
    }
    model!(account, NaiveDateTime, Datetime, mysql);

    pub fn plain_insert_generated(conn: &mut Conn, n: i64) -> i64 {
        diesel::insert_into(account::table)
            .values(keyless(n))
            .execute(conn)
            .expect("plain insert");
        let id: u64 = diesel::select(diesel::dsl::sql::<
            diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
        >("LAST_INSERT_ID()"))
        .get_result(conn)
        .expect("LAST_INSERT_ID()");
        id as i64
    }

    pub async fn plain_insert_generated_async(conn: &mut AConn, n: i64) -> i64 {
        use diesel_async::RunQueryDsl as Async;
        Async::execute(diesel::insert_into(account::table).values(keyless(n)), conn)
            .await
            .expect("plain insert");
        let last = diesel::select(diesel::dsl::sql::<
            diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
        >("LAST_INSERT_ID()"));
        let id: u64 = Async::get_result(last, conn)
            .await
            .expect("LAST_INSERT_ID()");
        id as i64
    }
}

/// MariaDB through Diesel's MariaDB backend: the same table as [`my`], written with
/// `RETURNING`.
mod mdb {
    use super::*;
    use chrono::{NaiveDateTime, Utc};
    pub type Conn = diesel::MariadbConnection;
    pub type AConn = diesel_async::AsyncMariadbConnection;
    fn now() -> NaiveDateTime {
        Utc::now().naive_utc()
    }
    model!(account, NaiveDateTime, Datetime, mariadb);

    returning_insert!(account);
}

mod lite {
    use super::*;
    use chrono::{DateTime, Utc};
    pub type Conn = SqliteConnection;
    pub type AConn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper<SqliteConnection>;
    fn now() -> DateTime<Utc> {
        Utc::now()
    }
    model!(account, DateTime<Utc>, TimestamptzSqlite, sqlite);

    returning_insert!(account);
}

/// An outbox body of the size and shape of a SAVE of the bench's row.
fn floor_body(id: i64) -> String {
    format!(
        r#"{{"signal_type":"SAVE","cqrs_id":"account","instance_data":{{"id":{id},"name":"{}","email":"{}","balance":0,"cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00.000000+00:00"}},"instance_pk":{id},"previous_data":null,"correlation_id":null,"expires":null,"retries":0,"meta":null}}"#,
        name(id, 0),
        email(id)
    )
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The statements of a backend's `Bench` impl: those of its module.
macro_rules! delegate_to {
    ($module:ident) => {
        fn untracked(id: i64, n: i64) -> $module::Untracked {
            $module::untracked(id, n)
        }
        fn tracked(id: i64, n: i64) -> $module::Tracked {
            $module::tracked(id, n)
        }
        fn plain_insert(conn: &mut $module::Conn, id: i64) {
            $module::plain_insert(conn, id)
        }
        fn plain_update(conn: &mut $module::Conn, id: i64, n: i64) {
            $module::plain_update(conn, id, n)
        }
        fn plain_delete(conn: &mut $module::Conn, id: i64) {
            $module::plain_delete(conn, id)
        }
        fn plain_insert_generated(conn: &mut $module::Conn, n: i64) -> i64 {
            $module::plain_insert_generated(conn, n)
        }
        fn with_outbox_row(
            conn: &mut $module::Conn,
            id: i64,
            write: impl FnOnce(&mut $module::Conn),
        ) {
            $module::with_outbox_row(conn, id, write)
        }
        fn plain_async(
            p: usize,
            conn: &mut $module::AConn,
            id: i64,
        ) -> impl Future<Output = ()> + Send {
            $module::plain_async(p, conn, id)
        }
        fn floor_async(
            p: usize,
            conn: &mut $module::AConn,
            id: i64,
        ) -> impl Future<Output = ()> + Send {
            $module::floor_async(p, conn, id)
        }
    };
}

struct Postgres {
    schema: String,
}

impl Bench for Postgres {
    type Conn = PgConnection;
    type Async = pg::AConn;
    type Untracked = pg::Untracked;
    type Tracked = pg::Tracked;
    const NAME: &'static str = "PostgreSQL";

    fn setup() -> Self {
        let this = Postgres {
            schema: format!("bench_master_{}", std::process::id()),
        };
        let mut admin = PgConnection::establish(&Self::url()).expect("PostgreSQL is up");
        admin
            .batch_execute(&format!("CREATE SCHEMA {}", this.schema))
            .expect("create schema");
        let mut conn = this.connect();
        conn.batch_execute(
            "CREATE TABLE account (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
             name TEXT NOT NULL, email TEXT NOT NULL,
             balance BIGINT NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0,
             cqrs_updated TIMESTAMPTZ NOT NULL)",
        )
        .expect("create table");
        conn.run_outbox_migrations().expect("outbox migration");
        this
    }

    fn connect(&self) -> PgConnection {
        let mut conn = PgConnection::establish(&Self::url()).expect("PostgreSQL is up");
        conn.batch_execute(&format!("SET search_path TO {}", self.schema))
            .expect("set search_path");
        conn
    }

    fn reset(&self) {
        self.connect()
            .batch_execute("TRUNCATE account; TRUNCATE cqrs_outbox;")
            .expect("truncate");
    }

    delegate_to!(pg);

    fn connect_async(&self) -> impl Future<Output = pg::AConn> + Send {
        let search_path = format!("SET search_path TO {}", self.schema);
        async move {
            use diesel_async::SimpleAsyncConnection;
            let mut conn = pg::AConn::establish(&Self::url())
                .await
                .expect("PostgreSQL is up");
            conn.batch_execute(&search_path)
                .await
                .expect("set search_path");
            conn
        }
    }

    fn teardown(&self) {
        if let Ok(mut admin) = PgConnection::establish(&Self::url()) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}

impl Postgres {
    fn url() -> String {
        env_or("PG_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    }
}

struct Mariadb {
    database: String,
}

impl Mariadb {
    fn base_url() -> String {
        env_or("MYSQL_DATABASE_URL", "mysql://root@127.0.0.1:3306/test")
    }

    fn url(&self) -> String {
        let base = Self::base_url();
        let server = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(head, _)| head);
        format!("{server}/{}", self.database)
    }
}

impl Bench for Mariadb {
    type Conn = MysqlConnection;
    type Async = my::AConn;
    type Untracked = my::Untracked;
    type Tracked = my::Tracked;
    const NAME: &'static str = "MariaDB";

    fn setup() -> Self {
        let this = Mariadb {
            database: format!("bench_master_{}", std::process::id()),
        };
        let mut admin = MysqlConnection::establish(&Self::base_url()).expect("MariaDB is up");
        admin
            .batch_execute(&format!("CREATE DATABASE {}", this.database))
            .expect("create database");
        let mut conn = this.connect();
        conn.batch_execute(
            "CREATE TABLE account (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255) NOT NULL,
             email VARCHAR(255) NOT NULL, balance BIGINT NOT NULL,
             cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)",
        )
        .expect("create table");
        conn.run_outbox_migrations().expect("outbox migration");
        this
    }

    fn connect(&self) -> MysqlConnection {
        let mut conn = MysqlConnection::establish(&self.url()).expect("MariaDB is up");
        SessionSetup::new().apply(&mut conn).expect("session setup");
        conn
    }

    fn reset(&self) {
        self.connect()
            .batch_execute("TRUNCATE account; TRUNCATE cqrs_outbox;")
            .expect("truncate");
    }

    delegate_to!(my);

    fn connect_async(&self) -> impl Future<Output = my::AConn> + Send {
        let url = self.url();
        async move {
            let mut conn = my::AConn::establish(&url).await.expect("MariaDB is up");
            SessionSetup::new()
                .apply_async(&mut conn)
                .await
                .expect("session setup");
            conn
        }
    }

    fn teardown(&self) {
        if let Ok(mut admin) = MysqlConnection::establish(&Self::base_url()) {
            let _ = admin.batch_execute(&format!("DROP DATABASE {}", self.database));
        }
    }
}

/// The MariaDB database of [`Mariadb`], written through `MariadbConnection` and
/// `AsyncMariadbConnection`.
struct MariadbBackend(Mariadb);

impl MariadbBackend {
    fn url(&self) -> String {
        let url = self.0.url();
        match url.split_once("://") {
            Some((_, rest)) => format!("mariadb://{rest}"),
            None => url,
        }
    }
}

impl Bench for MariadbBackend {
    type Conn = mdb::Conn;
    type Async = mdb::AConn;
    type Untracked = mdb::Untracked;
    type Tracked = mdb::Tracked;
    const NAME: &'static str = "MariaDB (MariadbConnection)";

    fn setup() -> Self {
        MariadbBackend(Mariadb::setup())
    }

    fn connect(&self) -> mdb::Conn {
        let mut conn = mdb::Conn::establish(&self.url()).expect("MariaDB is up");
        SessionSetup::new().apply(&mut conn).expect("session setup");
        conn
    }

    fn reset(&self) {
        self.0.reset();
    }

    delegate_to!(mdb);

    fn connect_async(&self) -> impl Future<Output = mdb::AConn> + Send {
        let url = self.url();
        async move {
            let mut conn = mdb::AConn::establish(&url).await.expect("MariaDB is up");
            SessionSetup::new()
                .apply_async(&mut conn)
                .await
                .expect("session setup");
            conn
        }
    }

    fn teardown(&self) {
        self.0.teardown();
    }
}

struct Sqlite {
    path: std::path::PathBuf,
}

impl Bench for Sqlite {
    type Conn = SqliteConnection;
    type Async = lite::AConn;
    type Untracked = lite::Untracked;
    type Tracked = lite::Tracked;
    const NAME: &'static str = "SQLite";

    fn setup() -> Self {
        let this = Sqlite {
            path: std::env::temp_dir().join(format!("bench_master_{}.sqlite3", std::process::id())),
        };
        let mut conn = this.connect();
        conn.batch_execute(
            "CREATE TABLE account (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
             balance BIGINT NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0,
             cqrs_updated TEXT NOT NULL)",
        )
        .expect("create table");
        conn.run_outbox_migrations().expect("outbox migration");
        this
    }

    fn connect(&self) -> SqliteConnection {
        let mut conn =
            SqliteConnection::establish(&self.path.to_string_lossy()).expect("open SQLite");
        SessionSetup::new()
            .sqlite_busy_timeout(std::time::Duration::from_secs(30))
            .apply(&mut conn)
            .expect("session setup");
        conn
    }

    fn reset(&self) {
        self.connect()
            .batch_execute("DELETE FROM account; DELETE FROM cqrs_outbox;")
            .expect("truncate");
    }

    delegate_to!(lite);

    fn connect_async(&self) -> impl Future<Output = lite::AConn> + Send {
        std::future::ready(lite::AConn::new(self.connect()))
    }

    fn teardown(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

const PHASES: [&str; 5] = [
    "create",
    "update",
    "update, tracked field",
    "delete",
    "create, generated key",
];

/// Runs one phase on `writers` threads, each over its own `rows` ids; returns microseconds per
/// write per writer (wall time / writes per writer).
fn phase<B: Bench + Sync>(
    bench: &B,
    writers: i64,
    rows: i64,
    write: impl Fn(&mut B::Conn, i64) + Sync,
) -> f64 {
    std::thread::scope(|scope| {
        let conns: Vec<B::Conn> = (0..writers).map(|_| bench.connect()).collect();
        let start = Instant::now();
        let write = &write;
        for (writer, mut conn) in (0..writers).zip(conns) {
            scope.spawn(move || {
                // From 1: MySQL takes an explicit 0 in an AUTO_INCREMENT key as "generate one".
                for id in writer * rows + 1..=(writer + 1) * rows {
                    write(&mut conn, id);
                }
            });
        }
        // `scope` joins every writer before returning.
        start
    })
    .elapsed()
    .as_secs_f64()
        * 1e6
        / rows as f64
}

/// [`phase`] on async connections: `writers` tasks on a runtime of two threads.
fn phase_async<B, F, Fut>(
    rt: &tokio::runtime::Runtime,
    bench: &B,
    writers: i64,
    rows: i64,
    write: F,
) -> f64
where
    B: Bench,
    F: Fn(B::Async, i64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = B::Async> + Send + 'static,
{
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..writers {
            conns.push(bench.connect_async().await);
        }
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .zip(conns)
            .map(|(writer, conn)| {
                let write = write.clone();
                tokio::spawn(async move {
                    let mut conn = conn;
                    for id in writer * rows + 1..=(writer + 1) * rows {
                        conn = write(conn, id).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
        start.elapsed()
    })
    .as_secs_f64()
        * 1e6
        / rows as f64
}

/// [`round`] on async connections.
fn round_async<B: Bench>(
    rt: &tokio::runtime::Runtime,
    bench: &B,
    writers: i64,
    rows: i64,
    kind: Kind,
) -> [f64; 5] {
    bench.reset();
    std::array::from_fn(|p| {
        phase_async(
            rt,
            bench,
            writers,
            rows,
            move |mut conn: B::Async, id| async move {
                match kind {
                    Kind::Plain => B::plain_async(p, &mut conn, id).await,
                    Kind::Floor => B::floor_async(p, &mut conn, id).await,
                    Kind::Ours => write_async::<B>(p, &mut conn, id).await,
                }
                conn
            },
        )
    })
}

/// Our write of phase `p` of row `id` on an async connection.
async fn write_async<B: Bench>(p: usize, conn: &mut B::Async, id: i64) {
    match p {
        0 => {
            B::untracked(id, 0)
                .save_and_publish(conn)
                .await
                .expect("create");
        }
        1 => {
            B::untracked(id, 1)
                .save_and_publish(conn)
                .await
                .expect("update");
        }
        2 => {
            B::tracked(id, 2)
                .save_and_publish(conn)
                .await
                .expect("tracked update");
        }
        3 => {
            assert!(
                B::untracked(id, 3)
                    .delete_and_publish(conn)
                    .await
                    .expect("delete")
            );
        }
        _ => {
            B::untracked(0, id)
                .insert_and_publish(conn)
                .await
                .expect("insert");
        }
    }
}

/// What a round writes with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The plain Diesel write, autocommitted.
    Plain,
    /// The plain write and an outbox row in one transaction.
    Floor,
    /// This library.
    Ours,
}

/// The phases of one kind, in order: microseconds per write per writer for each.
fn round<B: Bench + Sync>(bench: &B, writers: i64, rows: i64, kind: Kind) -> [f64; 5] {
    bench.reset();
    match kind {
        Kind::Ours => [
            phase(bench, writers, rows, |c, id| {
                B::untracked(id, 0).save_and_publish(c).expect("create");
            }),
            phase(bench, writers, rows, |c, id| {
                B::untracked(id, 1).save_and_publish(c).expect("update");
            }),
            phase(bench, writers, rows, |c, id| {
                B::tracked(id, 2)
                    .save_and_publish(c)
                    .expect("tracked update");
            }),
            phase(bench, writers, rows, |c, id| {
                assert!(B::untracked(id, 3).delete_and_publish(c).expect("delete"));
            }),
            phase(bench, writers, rows, |c, n| {
                B::untracked(0, n).insert_and_publish(c).expect("insert");
            }),
        ],
        Kind::Floor => std::array::from_fn(|p| {
            phase(bench, writers, rows, |c, id| {
                B::with_outbox_row(c, id, |c| plain_write::<B>(p, c, id));
            })
        }),
        Kind::Plain => {
            std::array::from_fn(|p| phase(bench, writers, rows, |c, id| plain_write::<B>(p, c, id)))
        }
    }
}

/// The plain write of phase `p` (see [`PHASES`]) of row `id` (a number, for a generated key).
fn plain_write<B: Bench>(p: usize, conn: &mut B::Conn, id: i64) {
    match p {
        0 => B::plain_insert(conn, id),
        1 => B::plain_update(conn, id, 1),
        2 => B::plain_update(conn, id, 2),
        3 => B::plain_delete(conn, id),
        _ => {
            B::plain_insert_generated(conn, id);
        }
    }
}

/// Median and range of `ours[r][p] / base[r][p]` over the rounds.
fn ratio(ours: &[[f64; 5]], base: &[[f64; 5]], p: usize) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o[p] / b[p]).collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    (median(&mut ratios), low, high)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run<B: Bench + Sync>(writer_counts: &[i64], rounds: usize, rows: i64) {
    let bench = B::setup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    for (mode, is_async) in [("sync", false), ("async", true)] {
        for &writers in writer_counts {
            let mut plain = vec![[0.0; 5]; rounds];
            let mut floor = vec![[0.0; 5]; rounds];
            let mut ours = vec![[0.0; 5]; rounds];
            for r in 0..rounds {
                for (out, kind) in [
                    (&mut plain, Kind::Plain),
                    (&mut floor, Kind::Floor),
                    (&mut ours, Kind::Ours),
                ] {
                    out[r] = if is_async {
                        round_async(&rt, &bench, writers, rows, kind)
                    } else {
                        round(&bench, writers, rows, kind)
                    };
                }
            }
            report::<B>(mode, writers, rows, rounds, &plain, &floor, &ours);
        }
    }
    bench.teardown();
}

/// Prints one table: a backend and mode with `writers` writers.
fn report<B: Bench>(
    mode: &str,
    writers: i64,
    rows: i64,
    rounds: usize,
    plain: &[[f64; 5]],
    floor: &[[f64; 5]],
    ours: &[[f64; 5]],
) {
    {
        println!(
            "\n{} {mode}, {writers} writer(s), {rows} rows each, {rounds} rounds \
             (us per write per writer, median of rounds; cost = ours / plain, floor = the \
             plain write and an outbox row in one transaction / plain, vs floor = ours / \
             floor, each the median of the rounds' ratios [min-max])",
            B::NAME
        );
        println!(
            "  {:<24} {:>9} {:>9} {:>9} {:>22} {:>22} {:>22}",
            "write", "plain us", "floor us", "ours us", "cost", "floor", "vs floor"
        );
        let us = |kind: &[[f64; 5]], p: usize| {
            median(&mut kind.iter().map(|r| r[p]).collect::<Vec<_>>())
        };
        for (p, phase) in PHASES.iter().enumerate() {
            let (cost, cost_low, cost_high) = ratio(ours, plain, p);
            let (fl, fl_low, fl_high) = ratio(floor, plain, p);
            let (over, over_low, over_high) = ratio(ours, floor, p);
            println!(
                "  {:<24} {:>9.1} {:>9.1} {:>9.1} {:>9.2}x [{:.2}-{:.2}] {:>9.2}x [{:.2}-{:.2}] \
                 {:>9.2}x [{:.2}-{:.2}]",
                phase,
                us(plain, p),
                us(floor, p),
                us(ours, p),
                cost,
                cost_low,
                cost_high,
                fl,
                fl_low,
                fl_high,
                over,
                over_low,
                over_high
            );
        }
    }
}

fn main() {
    let rounds: usize = env_or("BENCH_ROUNDS", "5").parse().expect("BENCH_ROUNDS");
    let rows: i64 = env_or("BENCH_ROWS", "200").parse().expect("BENCH_ROWS");
    let writers: Vec<i64> = env_or("BENCH_WRITERS", "1,8")
        .split(',')
        .map(|w| w.trim().parse().expect("BENCH_WRITERS: numbers"))
        .collect();
    println!(
        "master write path: save_and_publish / delete_and_publish vs the plain Diesel write \
         of the same row"
    );
    for backend in env_or("BENCH_BACKENDS", "postgres,mariadb,mariadb-backend,sqlite").split(',') {
        match backend.trim() {
            "postgres" => run::<Postgres>(&writers, rounds, rows),
            "mariadb" => run::<Mariadb>(&writers, rounds, rows),
            "mariadb-backend" => run::<MariadbBackend>(&writers, rounds, rows),
            "sqlite" => run::<Sqlite>(&writers, rounds, rows),
            other => panic!("BENCH_BACKENDS: unknown backend {other:?}"),
        }
    }
}
