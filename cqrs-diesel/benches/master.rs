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
//! Run: `cargo bench -p cqrs-diesel --bench master`. `BENCH_ROUNDS` (default 5) and
//! `BENCH_ROWS` (rows per writer, default 200) size the run; `BENCH_BACKENDS` (default
//! `postgres,mariadb,sqlite`) and `BENCH_WRITERS` (default `1,8`) choose what runs.
//! `PG_DATABASE_URL` and `MYSQL_DATABASE_URL` override the local servers.

use std::time::Instant;

use cqrs_diesel::{CqrsConnection, MasterModel, MasterStore, SessionSetup};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// What one backend provides to the phases.
trait Bench: Sized {
    type Conn: CqrsConnection;
    type Untracked: MasterStore<Self::Conn>;
    type Tracked: MasterStore<Self::Conn>;
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
    };
}

mod pg {
    use super::*;
    use chrono::{DateTime, Utc};
    pub type Conn = PgConnection;
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
}

mod lite {
    use super::*;
    use chrono::{DateTime, Utc};
    pub type Conn = SqliteConnection;
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
    };
}

struct Postgres {
    schema: String,
}

impl Bench for Postgres {
    type Conn = PgConnection;
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

    fn teardown(&self) {
        if let Ok(mut admin) = MysqlConnection::establish(&Self::base_url()) {
            let _ = admin.batch_execute(&format!("DROP DATABASE {}", self.database));
        }
    }
}

struct Sqlite {
    path: std::path::PathBuf,
}

impl Bench for Sqlite {
    type Conn = SqliteConnection;
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
    for &writers in writer_counts {
        let mut plain = vec![[0.0; 5]; rounds];
        let mut floor = vec![[0.0; 5]; rounds];
        let mut ours = vec![[0.0; 5]; rounds];
        for r in 0..rounds {
            plain[r] = round(&bench, writers, rows, Kind::Plain);
            floor[r] = round(&bench, writers, rows, Kind::Floor);
            ours[r] = round(&bench, writers, rows, Kind::Ours);
        }
        println!(
            "\n{} , {writers} writer(s), {rows} rows each, {rounds} rounds \
             (us per write per writer, median of rounds; cost = ours / plain, floor = the \
             plain write and an outbox row in one transaction / plain, median [min-max])",
            B::NAME
        );
        println!(
            "  {:<24} {:>9} {:>9} {:>9} {:>22} {:>22}",
            "write", "plain us", "floor us", "ours us", "cost", "floor"
        );
        let us = |kind: &[[f64; 5]], p: usize| {
            median(&mut kind.iter().map(|r| r[p]).collect::<Vec<_>>())
        };
        for (p, phase) in PHASES.iter().enumerate() {
            let (cost, cost_low, cost_high) = ratio(&ours, &plain, p);
            let (fl, fl_low, fl_high) = ratio(&floor, &plain, p);
            println!(
                "  {:<24} {:>9.1} {:>9.1} {:>9.1} {:>9.2}x [{:.2}-{:.2}] {:>9.2}x [{:.2}-{:.2}]",
                phase,
                us(&plain, p),
                us(&floor, p),
                us(&ours, p),
                cost,
                cost_low,
                cost_high,
                fl,
                fl_low,
                fl_high
            );
        }
    }
    bench.teardown();
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
    for backend in env_or("BENCH_BACKENDS", "postgres,mariadb,sqlite").split(',') {
        match backend.trim() {
            "postgres" => run::<Postgres>(&writers, rounds, rows),
            "mariadb" => run::<Mariadb>(&writers, rounds, rows),
            "sqlite" => run::<Sqlite>(&writers, rounds, rows),
            other => panic!("BENCH_BACKENDS: unknown backend {other:?}"),
        }
    }
}
