//! The soak: a replica converges to its master under faults.
//!
//! `W` writes (creates, updates, deletes, re-creates, bulk updates, `atomic` blocks, rolled-back
//! transactions and rolled-back savepoints) from several threads go to a PostgreSQL master. The
//! outbox relay and the replica worker run as separate processes (this binary re-executed as
//! `soak relay ...` and `soak worker ...`). Everything they talk to is the soak's own, so that it
//! may restart it: a RabbitMQ node, the master's PostgreSQL cluster, and the replica's database:
//! a PostgreSQL cluster (`--replica postgres`, the default), a MariaDB server (`--replica
//! mariadb`, a private `mariadbd`) or a SQLite file (`--replica sqlite`). On a schedule that is a
//! function of the write count, it kills the relay and the worker with SIGKILL and starts new
//! ones, restarts the broker (`stop_app` / `start_app`), restarts the replica's database and
//! restarts the master's PostgreSQL. When the writers are done it waits until the outbox is
//! empty and the replica equals the master, then keeps comparing them for a quiet period (a
//! late message that changes the replica after that is a failure), compares them row by row and
//! prints what was lost, what is a phantom (a rolled-back or never committed write), what was
//! resurrected (a row deleted on the master but present on the replica), what is wrong, the time
//! it took to converge, and every message of the replica's dead-letter queue with its reason.
//! The exit code is 0 only when all of them are 0.
//!
//! ```text
//! cargo run --release -p cqrs-examples --bin soak -- --writes 5000
//! cargo run --release -p cqrs-examples --bin soak                       # 100,000 writes
//! cargo run --release -p cqrs-examples --bin soak -- --replica mariadb --writes 30000
//! cargo run --release -p cqrs-examples --bin soak -- --replica sqlite --seed 42 --no-faults
//! ```
//!
//! Flags: `--replica postgres|mariadb|sqlite` (postgres), `--writes W` (100000), `--threads T`
//! (4), `--ids K` (5000), `--hot H` (8 rows every thread updates concurrently), `--seed S`
//! (random, printed), `--faults N` (10, one every W/N writes), `--no-faults`, `--rollback-pct P`
//! (10), `--broker-down-ms MS` (2000), `--converge-timeout S` (300), `--quiet-secs S` (10: how
//! long the replica must stay equal to the master once it first is), `--master-port` (5441),
//! `--replica-port` (5442 for PostgreSQL, 3317 for MariaDB), `--amqp-port` (5682),
//! `--amqp-dist-port` (25682), `--keep-logs` (keep the relay's and the worker's logs).
//!
//! How it works: each writer thread owns the ids `id % T == thread` (so it knows which exist and
//! never races another thread's create), and all threads update the `H` hot rows, whose updates
//! contend for the row lock. Fault `k` (from 1) is due at write `k * W / N`, rotating through
//! worker kill, broker restart, replica database restart, relay kill and master restart, so that
//! the default 10 faults inject each twice. The replica database restart is, alternately, a
//! clean one and a crash: PostgreSQL `pg_ctl restart -m fast` / `-m immediate`; MariaDB
//! `mariadb-admin shutdown` / `kill -9` of `mariadbd`, then a new `mariadbd` on the same data
//! directory (InnoDB crash recovery); SQLite has no server, so there it is a `kill -9` of the
//! worker at a moment its write-ahead log is being written (the soak watches the `-wal` file's
//! modification time, up to 30 s, and says whether it saw a write), and a new worker. The master
//! restart is `pg_ctl restart -m fast` / `-m immediate` of the master's cluster. A writer waits
//! (and the wait is reported) only when it would pass the next fault's write count while the
//! previous fault is still being injected.
//!
//! The truth is the master's final table; the writers keep in memory only which ids were ever
//! created (to tell a resurrection from a phantom), which of their own ids exist now, and the
//! unique name of every rolled-back write (to recognise a phantom). A write that fails because
//! the master is unavailable (the error says so, or the connection no longer answers) is
//! counted, and the writer pauses, reconnects, re-reads which of its ids exist (a create or a
//! delete whose COMMIT was sent but whose answer was lost with the connection may have
//! committed: the re-read decides, and a committed create is recorded as one), re-reads the
//! row the write wrote, and retries the same write only when it did not commit. The comparison
//! takes `-0.0` as `0.0` on MariaDB and SQLite, which store it so (docs/DESIGN.md, "Values each
//! backend cannot represent"); the report says how many rows that concerned.
//! `SOAK_CHILD_LOG` sets the children's `RUST_LOG` (default `info`); their logs are summarised
//! (WARN/ERROR lines) at the end.
//!
//! The report ends with one table row (replica, seed, writes, lost, phantom, resurrected, wrong,
//! dead letters, time to converge, quiet period, faults, master restarts, writes/s, wall time)
//! and `RESULT: PASS` or `RESULT: FAIL (...)` with every reason.
//!
//! What it needs: to run as root; PostgreSQL 15's `initdb` and `pg_ctl`
//! (`/usr/lib/postgresql/15/bin`, or `PG_BIN`; the clusters run as `postgres`),
//! `rabbitmq-server` and `rabbitmqctl` (the node runs as the `rabbitmq` user, with its Erlang
//! cookie), and for `--replica mariadb` `mariadb-install-db`, `mariadbd` and `mariadb-admin`
//! (the server runs as `mysql`); free ports for them (see the flags). It uses none of the
//! machine's running database servers or brokers. Everything it starts lives in
//! `/tmp/cqrs_soak_<pid>` (clusters, MariaDB data directory and socket, SQLite file, logs) and is
//! stopped and removed at the end, also after a failure or Ctrl-C (`--keep-logs` keeps `logs/`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::prelude::*;
use cqrs_diesel::diesel::result::ConnectionError;
use cqrs_diesel::diesel::{Connection, MysqlConnection, PgConnection, SqliteConnection};
use cqrs_diesel::transport::DEAD_LETTER_REASON_HEADER;
use cqrs_diesel::{
    Config, ConsumerRuntime, CqrsConnection, MasterModel, OutboxRelay, RabbitMqTransport,
    ReplicaModel, ReplicaStore, Replicas, SessionSetup, Topology, Transport,
};

// ------------------------------------------------------------------------------------------
// The model: one master table and its replica, of the same shape, once per replica backend
// (README, "Columns and types per backend").
// ------------------------------------------------------------------------------------------

mod master_schema {
    cqrs_diesel::diesel::table! {
        item (id) {
            id -> BigInt,
            name -> Text,
            qty -> BigInt,
            price -> Double,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

mod replica_schema {
    cqrs_diesel::diesel::table! {
        item (id) {
            id -> BigInt,
            name -> Text,
            qty -> BigInt,
            price -> Double,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

mod mysql_replica_schema {
    cqrs_diesel::diesel::table! {
        item (id) {
            id -> BigInt,
            name -> Text,
            qty -> BigInt,
            price -> Double,
            cqrs_revision -> Integer,
            cqrs_updated -> Datetime,
        }
    }
}

mod sqlite_replica_schema {
    cqrs_diesel::diesel::table! {
        item (id) {
            id -> BigInt,
            name -> Text,
            qty -> BigInt,
            price -> Double,
            cqrs_revision -> Integer,
            cqrs_updated -> TimestamptzSqlite,
        }
    }
}

/// The master's table, and the PostgreSQL replica's.
const ITEM_DDL: &str = "CREATE TABLE item (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
    qty BIGINT NOT NULL, price DOUBLE PRECISION NOT NULL, \
    cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)";

/// The MariaDB replica's table: `DATETIME(6)` holds the UTC time to the microsecond.
const ITEM_DDL_MARIADB: &str = "CREATE TABLE item (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
    qty BIGINT NOT NULL, price DOUBLE NOT NULL, \
    cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL) \
    DEFAULT CHARSET = utf8mb4";

/// The SQLite replica's table: the time as text.
const ITEM_DDL_SQLITE: &str = "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, \
    qty BIGINT NOT NULL, price DOUBLE NOT NULL, \
    cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)";

/// The master's row.
#[derive(Debug, Clone, PartialEq, MasterModel, Queryable)]
#[cqrs(id = "item", table = master_schema::item, backends(postgres))]
struct Item {
    id: i64,
    name: String,
    qty: i64,
    price: f64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// The replica's copy on PostgreSQL.
#[derive(Debug, Clone, PartialEq, ReplicaModel, Queryable)]
#[cqrs(id = "item", table = replica_schema::item, backends(postgres))]
struct ItemReplica {
    id: i64,
    name: String,
    qty: i64,
    price: f64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// The replica's copy on MariaDB: `cqrs_updated` is a `NaiveDateTime` holding UTC.
#[derive(Debug, Clone, PartialEq, ReplicaModel, Queryable)]
#[cqrs(id = "item", table = mysql_replica_schema::item, backends(mysql))]
struct ItemReplicaMariadb {
    id: i64,
    name: String,
    qty: i64,
    price: f64,
    cqrs_revision: i32,
    cqrs_updated: NaiveDateTime,
}

/// The replica's copy on SQLite: `cqrs_updated` is text (`TimestamptzSqlite`).
#[derive(Debug, Clone, PartialEq, ReplicaModel, Queryable)]
#[cqrs(id = "item", table = sqlite_replica_schema::item, backends(sqlite))]
struct ItemReplicaSqlite {
    id: i64,
    name: String,
    qty: i64,
    price: f64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// A row as compared: floats by their bits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    name: String,
    qty: i64,
    price_bits: u64,
    revision: i32,
    updated: DateTime<Utc>,
}

impl Row {
    fn new(name: String, qty: i64, price: f64, revision: i32, updated: DateTime<Utc>) -> Row {
        Row {
            name,
            qty,
            price_bits: price.to_bits(),
            revision,
            updated,
        }
    }

    /// The fields that differ from `other`, by name.
    fn differences(&self, other: &Row) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.name != other.name {
            out.push("name");
        }
        if self.qty != other.qty {
            out.push("qty");
        }
        if self.price_bits != other.price_bits {
            out.push("price");
        }
        if self.revision != other.revision {
            out.push("cqrs_revision");
        }
        if self.updated != other.updated {
            out.push("cqrs_updated");
        }
        out
    }

    fn show(&self) -> String {
        format!(
            "name {:?} qty {} price {:e} (bits {:#018x}) rev {} updated {}",
            self.name,
            self.qty,
            f64::from_bits(self.price_bits),
            self.price_bits,
            self.revision,
            self.updated.format("%Y-%m-%dT%H:%M:%S%.6fZ")
        )
    }
}

const CQRS_ID: &str = "item";
const EXCHANGE: &str = "cqrs_soak";
const QUEUE: &str = "cqrs_soak_replica";
const RABBIT_NODE: &str = "cqrs_soak@localhost";

/// The replica's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Mariadb,
    Sqlite,
}

impl Backend {
    fn parse(text: &str) -> AnyResult<Backend> {
        match text {
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            "mariadb" | "mysql" => Ok(Backend::Mariadb),
            "sqlite" => Ok(Backend::Sqlite),
            other => Err(format!(
                "`--replica {other}`: expected postgres, mariadb or sqlite"
            )),
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Mariadb => "mariadb",
            Backend::Sqlite => "sqlite",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Mariadb => "MariaDB",
            Backend::Sqlite => "SQLite",
        }
    }

    /// The replica server's default port (SQLite has none).
    fn default_port(self) -> u16 {
        match self {
            Backend::Postgres | Backend::Sqlite => 5442,
            Backend::Mariadb => 3317,
        }
    }

    /// Whether the backend keeps `-0.0` (docs/DESIGN.md: MariaDB and SQLite store `0.0`).
    fn keeps_negative_zero(self) -> bool {
        self == Backend::Postgres
    }
}

// ------------------------------------------------------------------------------------------
// Entry point: the soak itself, or one of its two child roles.
// ------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("relay") => relay_main(&args[1..]),
        Some("worker") => worker_main(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => match Options::parse(&args) {
            Ok(options) => soak_main(options),
            Err(error) => {
                eprintln!("soak: {error}");
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: soak [--replica postgres|mariadb|sqlite] [--writes W] [--threads T] \
    [--ids K] [--hot H] [--seed S] [--faults N | --no-faults] [--rollback-pct P] \
    [--broker-down-ms MS] [--converge-timeout S] [--quiet-secs S] [--master-port P] \
    [--replica-port P] [--amqp-port P] [--amqp-dist-port P] [--keep-logs]\n\
    roles (started by the soak itself): soak relay --master-url U --amqp-url A \
    [--poll-ms MS]; soak worker --backend B --replica-url U --amqp-url A --queue Q";

type AnyResult<T> = Result<T, String>;

/// `--flag value` pairs of a child role.
fn flags(args: &[String]) -> AnyResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument `{flag}`"));
        };
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

fn required<'a>(flags: &'a HashMap<String, String>, name: &str) -> AnyResult<&'a str> {
    flags
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("`--{name}` is required"))
}

fn runtime() -> AnyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))
}

/// `soak relay`: the outbox relay of the master database, until SIGTERM/SIGINT (or SIGKILL).
fn relay_main(args: &[String]) -> AnyResult<ExitCode> {
    cqrs_examples::init_tracing("info");
    let flags = flags(args)?;
    let master_url = required(&flags, "master-url")?.to_owned();
    let amqp_url = required(&flags, "amqp-url")?;
    let poll = flags
        .get("poll-ms")
        .map(|ms| ms.parse::<u64>().map_err(|e| format!("--poll-ms: {e}")))
        .transpose()?
        .unwrap_or(100);
    let config = Config::builder()
        .amqp_url(amqp_url)
        .exchange(EXCHANGE)
        .connection_name("cqrs-soak-relay")
        .build()
        .map_err(|e| e.to_string())?;
    let rt = runtime()?;
    let stats = rt.block_on(async move {
        let transport = RabbitMqTransport::new(config);
        OutboxRelay::new(transport.clone(), move || {
            PgConnection::establish(&master_url)
        })
        .poll_interval(Duration::from_millis(poll))
        .run_until(cqrs_diesel::shutdown_signal())
        .await
    });
    eprintln!("relay stopped: {stats:?}");
    Ok(ExitCode::SUCCESS)
}

/// A replica connection, set up with the library's session settings (`SessionSetup`: strict
/// mode and `READ COMMITTED` on MariaDB; a busy timeout and WAL on SQLite).
fn open_set_up<C: CqrsConnection>(url: &str) -> Result<C, ConnectionError> {
    let mut conn = C::establish(url)?;
    SessionSetup::new()
        .sqlite_busy_timeout(Duration::from_secs(10))
        .apply(&mut conn)
        .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// `soak worker`: the replica worker, until SIGTERM/SIGINT (or SIGKILL).
fn worker_main(args: &[String]) -> AnyResult<ExitCode> {
    cqrs_examples::init_tracing("info");
    let flags = flags(args)?;
    let backend = Backend::parse(required(&flags, "backend")?)?;
    let replica_url = required(&flags, "replica-url")?.to_owned();
    let amqp_url = required(&flags, "amqp-url")?;
    let queue = required(&flags, "queue")?;
    let config = Config::builder()
        .amqp_url(amqp_url)
        .exchange(EXCHANGE)
        .queue(queue)
        .connection_name("cqrs-soak-worker")
        .build()
        .map_err(|e| e.to_string())?;
    let rt = runtime()?;
    let result = rt.block_on(async move {
        match backend {
            Backend::Postgres => {
                consume::<PgConnection, ItemReplica>(config, replica_url, PgConnection::establish)
                    .await
            }
            Backend::Mariadb => {
                consume::<MysqlConnection, ItemReplicaMariadb>(
                    config,
                    replica_url,
                    open_set_up::<MysqlConnection>,
                )
                .await
            }
            Backend::Sqlite => {
                consume::<SqliteConnection, ItemReplicaSqlite>(
                    config,
                    replica_url,
                    open_set_up::<SqliteConnection>,
                )
                .await
            }
        }
    });
    match result {
        Ok(stats) => {
            eprintln!("worker stopped: {stats}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Err(format!("the consumer runtime failed: {error}")),
    }
}

/// The consumer runtime applying `M` through connections opened by `open(url)`.
async fn consume<C, M>(
    config: Config,
    url: String,
    open: fn(&str) -> Result<C, ConnectionError>,
) -> Result<String, String>
where
    C: CqrsConnection,
    M: ReplicaStore<C>,
{
    let transport = RabbitMqTransport::new(config.clone());
    let replicas = Replicas::new(move || open(&url)).register::<M>();
    ConsumerRuntime::new(transport, config, replicas)
        .run_until(cqrs_diesel::shutdown_signal())
        .await
        .map(|stats| format!("{stats:?}"))
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------------------------------
// Options.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    replica: Backend,
    writes: u64,
    threads: usize,
    ids: i64,
    hot: i64,
    seed: u64,
    faults: u64,
    rollback_pct: u32,
    broker_down: Duration,
    converge_timeout: Duration,
    quiet: Duration,
    master_port: u16,
    replica_port: u16,
    amqp_port: u16,
    amqp_dist_port: u16,
    keep_logs: bool,
}

impl Options {
    fn parse(args: &[String]) -> AnyResult<Options> {
        let mut o = Options {
            replica: Backend::Postgres,
            writes: 100_000,
            threads: 4,
            ids: 5000,
            hot: 8,
            seed: random_seed(),
            faults: 10,
            rollback_pct: 10,
            broker_down: Duration::from_millis(2000),
            converge_timeout: Duration::from_secs(300),
            quiet: Duration::from_secs(10),
            master_port: 5441,
            replica_port: 0,
            amqp_port: 5682,
            amqp_dist_port: 25682,
            keep_logs: false,
        };
        let mut replica_port = None;
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> AnyResult<T>
        where
            T::Err: std::fmt::Display,
        {
            v.parse::<T>().map_err(|e| format!("`{flag} {v}`: {e}"))
        }
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("`{flag}` needs a value"))
            };
            match flag.as_str() {
                "--replica" => o.replica = Backend::parse(&value()?)?,
                "--writes" => o.writes = num(flag, value()?)?,
                "--threads" => o.threads = num(flag, value()?)?,
                "--ids" => o.ids = num(flag, value()?)?,
                "--hot" => o.hot = num(flag, value()?)?,
                "--seed" => o.seed = num(flag, value()?)?,
                "--faults" => o.faults = num(flag, value()?)?,
                "--no-faults" => o.faults = 0,
                "--rollback-pct" => o.rollback_pct = num(flag, value()?)?,
                "--broker-down-ms" => o.broker_down = Duration::from_millis(num(flag, value()?)?),
                "--converge-timeout" => {
                    o.converge_timeout = Duration::from_secs(num(flag, value()?)?)
                }
                "--quiet-secs" => o.quiet = Duration::from_secs(num(flag, value()?)?),
                "--master-port" => o.master_port = num(flag, value()?)?,
                "--replica-port" => replica_port = Some(num(flag, value()?)?),
                "--amqp-port" => o.amqp_port = num(flag, value()?)?,
                "--amqp-dist-port" => o.amqp_dist_port = num(flag, value()?)?,
                "--keep-logs" => o.keep_logs = true,
                "--pg-url" => {
                    return Err(
                        "`--pg-url` is gone: the master is a PostgreSQL cluster of the \
                                soak's own (`--master-port`)"
                            .to_owned(),
                    );
                }
                other => return Err(format!("unknown flag `{other}`")),
            }
        }
        o.replica_port = replica_port.unwrap_or_else(|| o.replica.default_port());
        if o.threads == 0 || o.ids < o.threads as i64 || o.writes == 0 {
            return Err("need --threads >= 1, --ids >= --threads and --writes >= 1".to_owned());
        }
        if o.rollback_pct > 50 {
            return Err("--rollback-pct must be at most 50".to_owned());
        }
        Ok(o)
    }

    /// The command line that repeats this run (same seed: the same operations per thread;
    /// the interleaving of the threads and the moments of the faults vary).
    fn command_line(&self) -> String {
        let mut line = format!(
            "cargo run --release -p cqrs-examples --bin soak -- --replica {} --writes {} --seed {}",
            self.replica.flag(),
            self.writes,
            self.seed
        );
        let mut add = |text: String| {
            line.push(' ');
            line.push_str(&text);
        };
        if self.threads != 4 {
            add(format!("--threads {}", self.threads));
        }
        if self.ids != 5000 {
            add(format!("--ids {}", self.ids));
        }
        if self.hot != 8 {
            add(format!("--hot {}", self.hot));
        }
        if self.faults == 0 {
            add("--no-faults".to_owned());
        } else if self.faults != 10 {
            add(format!("--faults {}", self.faults));
        }
        if self.rollback_pct != 10 {
            add(format!("--rollback-pct {}", self.rollback_pct));
        }
        if self.broker_down != Duration::from_millis(2000) {
            add(format!("--broker-down-ms {}", self.broker_down.as_millis()));
        }
        if self.quiet != Duration::from_secs(10) {
            add(format!("--quiet-secs {}", self.quiet.as_secs()));
        }
        line
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_000_000
}
// ------------------------------------------------------------------------------------------
// Infrastructure: the soak's own RabbitMQ node, master PostgreSQL cluster and replica database,
// the child processes, and their teardown.
// ------------------------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a command to its end, its output captured; an error with its output unless it exits 0.
fn run(command: &mut Command, what: &str) -> AnyResult<String> {
    let output = command
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", command.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            output.status,
            text.trim()
        ))
    }
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A child role (`relay` or `worker`) of this binary.
struct Proc {
    role: &'static str,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    kills: u32,
    unexpected_exits: Vec<String>,
}

impl Proc {
    fn new(role: &'static str, args: Vec<String>, log: PathBuf) -> Proc {
        Proc {
            role,
            args,
            log,
            child: None,
            starts: 0,
            kills: 0,
            unexpected_exits: Vec::new(),
        }
    }

    fn start(&mut self) -> AnyResult<()> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        self.starts += 1;
        let _ = writeln!(log, "===== {} start #{} =====", self.role, self.starts);
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg(self.role)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("SOAK_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the {}: {e}", self.role))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Restarts the process if it ended by itself (which it should never do); returns a
    /// description of the exit.
    fn supervise(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                let what = format!("the {} exited by itself ({status})", self.role);
                self.unexpected_exits.push(what.clone());
                if !interrupted()
                    && let Err(error) = self.start()
                {
                    return Some(format!("{what}; restarting it failed: {error}"));
                }
                Some(what)
            }
            _ => None,
        }
    }
}

/// A PostgreSQL cluster of the soak's own (`initdb` + `pg_ctl`, run as `postgres`).
struct PgCluster {
    /// "master" or "replica", for messages.
    label: &'static str,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    started: AtomicBool,
}

impl PgCluster {
    fn new(label: &'static str, dir: PathBuf, bin: PathBuf, port: u16) -> PgCluster {
        PgCluster {
            label,
            dir,
            bin,
            port,
            started: AtomicBool::new(false),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self) -> Command {
        let mut command = Command::new("runuser");
        command
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .current_dir("/tmp");
        command
    }

    /// `initdb`, then `pg_ctl start`; and the database `database` created in it.
    fn init_and_start(&self, database: &str) -> AnyResult<()> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        run(
            Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&self.dir),
            "chown the PostgreSQL directory",
        )?;
        run(
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(self.bin.join("initdb"))
                .arg("-D")
                .arg(self.data())
                .arg("-A")
                .arg("trust")
                .arg("-U")
                .arg("postgres")
                .current_dir("/tmp"),
            &format!("initdb of the {} cluster", self.label),
        )?;
        self.started.store(true, Ordering::SeqCst);
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        run(
            self.pg_ctl().arg("-o").arg(options).arg("-w").arg("start"),
            &format!("pg_ctl start of the {} cluster", self.label),
        )?;
        let mut admin = connect(&self.url("postgres"))?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .map_err(|e| format!("CREATE DATABASE {database} ({}): {e}", self.label))
    }

    fn restart(&self, mode: &str) -> AnyResult<()> {
        run(
            self.pg_ctl().arg("-w").arg("-m").arg(mode).arg("restart"),
            &format!("pg_ctl restart -m {mode} of the {} cluster", self.label),
        )
        .map(|_| ())
    }

    fn stop(&self) {
        if !self.started.load(Ordering::SeqCst) {
            return;
        }
        let stopped = run(
            self.pg_ctl().arg("-w").arg("-m").arg("fast").arg("stop"),
            "pg_ctl stop",
        )
        .or_else(|_| {
            run(
                self.pg_ctl()
                    .arg("-w")
                    .arg("-m")
                    .arg("immediate")
                    .arg("stop"),
                "pg_ctl stop -m immediate",
            )
        });
        if let Err(error) = stopped {
            eprintln!("warning: {error}");
            kill_pid_file(
                &self.data().join("postmaster.pid"),
                &format!("the {} PostgreSQL", self.label),
            );
        }
    }
}

/// A MariaDB server of the soak's own: a data directory initialised by `mariadb-install-db`,
/// its own port and socket, `mariadbd` run as `mysql` (a child of the soak).
struct MariaServer {
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    starts: AtomicU64,
    started: AtomicBool,
}

const MARIADB_DATABASE: &str = "cqrs_soak_replica";

impl MariaServer {
    fn new(dir: PathBuf, port: u16) -> MariaServer {
        MariaServer {
            dir,
            port,
            child: Mutex::new(None),
            starts: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The socket, the pid file and the error log (a directory `mysql` may write).
    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn socket(&self) -> PathBuf {
        self.run_dir().join("mariadbd.sock")
    }

    fn error_log(&self) -> PathBuf {
        self.run_dir().join("error.log")
    }

    fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    fn admin(&self) -> Command {
        let mut command = Command::new("mariadb-admin");
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--user=root")
            .current_dir("/tmp");
        command
    }

    /// `mariadb-install-db` into a fresh data directory, the server started, and the
    /// replica's database created (`root@127.0.0.1` has no password: `normal` authentication).
    fn install_and_start(&self) -> AnyResult<()> {
        fs::create_dir_all(self.run_dir()).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        run(
            Command::new("chown")
                .arg("-R")
                .arg("mysql:mysql")
                .arg(&self.dir),
            "chown the MariaDB directory",
        )?;
        run(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg("--user=mysql")
                .arg(format!("--datadir={}", self.data().display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .current_dir("/tmp"),
            "mariadb-install-db",
        )?;
        self.start()?;
        let mut admin = MysqlConnection::establish(&self.url("mysql"))
            .map_err(|e| format!("connect to the replica MariaDB: {e}"))?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {MARIADB_DATABASE} CHARACTER SET utf8mb4"
            ))
            .map_err(|e| format!("CREATE DATABASE {MARIADB_DATABASE}: {e}"))
    }

    /// Starts `mariadbd` on the data directory and waits until it answers (after a crash, once
    /// InnoDB's recovery is done).
    fn start(&self) -> AnyResult<()> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mariadbd.out"))
            .map_err(|e| format!("mariadbd.out: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        self.started.store(true, Ordering::SeqCst);
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.run_dir().join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", self.error_log().display()))
            .arg("--user=mysql")
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=128M")
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start mariadbd: {e}"))?;
        *lock(&self.child) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if run(self.admin().arg("ping"), "mariadb-admin ping").is_ok() {
                return Ok(());
            }
            if let Some(child) = lock(&self.child).as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "mariadbd (start #{n}) exited ({status}); its log: {}",
                    tail(&self.error_log(), 10)
                ));
            }
            if Instant::now() >= deadline || interrupted() {
                return Err(format!(
                    "mariadbd (start #{n}) does not answer after 180 s; its log: {}",
                    tail(&self.error_log(), 10)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits up to `timeout` for the server process to end; kills it after that.
    fn reap(&self, timeout: Duration) -> bool {
        let mut guard = lock(&self.child);
        let Some(child) = guard.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let clean = loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break true,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        *guard = None;
        clean
    }

    /// A clean shutdown (`mariadb-admin shutdown`, which waits for the server to stop).
    fn shutdown(&self) -> AnyResult<()> {
        run(self.admin().arg("shutdown"), "mariadb-admin shutdown")?;
        if self.reap(Duration::from_secs(60)) {
            Ok(())
        } else {
            Err("mariadbd did not exit within 60 s of `mariadb-admin shutdown`: killed".to_owned())
        }
    }

    /// A crash: SIGKILL of `mariadbd`.
    fn crash(&self) -> AnyResult<u32> {
        let mut guard = lock(&self.child);
        let child = guard.as_mut().ok_or("mariadbd is not running")?;
        let pid = child.id();
        child.kill().map_err(|e| format!("kill -9 mariadbd: {e}"))?;
        let _ = child.wait();
        *guard = None;
        Ok(pid)
    }

    fn stop(&self) {
        if !self.started.load(Ordering::SeqCst) {
            return;
        }
        if lock(&self.child).is_none() {
            return;
        }
        if let Err(error) = self.shutdown() {
            eprintln!("warning: {error}");
            let _ = self.crash();
        }
    }
}

/// The last `lines` lines of a file, on one line.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// The replica's database.
enum ReplicaDb {
    Postgres(PgCluster),
    Mariadb(MariaServer),
    /// The file.
    Sqlite(PathBuf),
}

/// A connection to the replica's database, for the comparison.
enum ReplicaConn {
    Postgres(PgConnection),
    Mariadb(MysqlConnection),
    Sqlite(SqliteConnection),
}

impl ReplicaConn {
    fn open(backend: Backend, url: &str) -> AnyResult<ReplicaConn> {
        let conn = match backend {
            Backend::Postgres => PgConnection::establish(url).map(ReplicaConn::Postgres),
            Backend::Mariadb => open_set_up::<MysqlConnection>(url).map(ReplicaConn::Mariadb),
            Backend::Sqlite => open_set_up::<SqliteConnection>(url).map(ReplicaConn::Sqlite),
        };
        conn.map_err(|e| format!("connect to the replica {url}: {e}"))
    }

    fn rows(&mut self) -> QueryResult<BTreeMap<i64, Row>> {
        match self {
            ReplicaConn::Postgres(conn) => {
                use replica_schema::item::dsl;
                let rows: Vec<ItemReplica> = dsl::item.order(dsl::id).load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        (
                            r.id,
                            Row::new(r.name, r.qty, r.price, r.cqrs_revision, r.cqrs_updated),
                        )
                    })
                    .collect())
            }
            ReplicaConn::Mariadb(conn) => {
                use mysql_replica_schema::item::dsl;
                let rows: Vec<ItemReplicaMariadb> = dsl::item.order(dsl::id).load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        (
                            r.id,
                            Row::new(
                                r.name,
                                r.qty,
                                r.price,
                                r.cqrs_revision,
                                r.cqrs_updated.and_utc(),
                            ),
                        )
                    })
                    .collect())
            }
            ReplicaConn::Sqlite(conn) => {
                use sqlite_replica_schema::item::dsl;
                let rows: Vec<ItemReplicaSqlite> = dsl::item.order(dsl::id).load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        (
                            r.id,
                            Row::new(r.name, r.qty, r.price, r.cqrs_revision, r.cqrs_updated),
                        )
                    })
                    .collect())
            }
        }
    }

    /// The replica's table and the replica state table.
    fn create_tables(&mut self) -> AnyResult<()> {
        match self {
            ReplicaConn::Postgres(conn) => {
                conn.batch_execute(ITEM_DDL)
                    .map_err(|e| format!("replica DDL: {e}"))?;
                conn.run_replica_migrations()
            }
            ReplicaConn::Mariadb(conn) => {
                conn.batch_execute(ITEM_DDL_MARIADB)
                    .map_err(|e| format!("replica DDL: {e}"))?;
                conn.run_replica_migrations()
            }
            ReplicaConn::Sqlite(conn) => {
                conn.batch_execute(ITEM_DDL_SQLITE)
                    .map_err(|e| format!("replica DDL: {e}"))?;
                conn.run_replica_migrations()
            }
        }
        .map_err(|e| format!("replica migrations: {e}"))
    }
}

struct Infra {
    dir: PathBuf,
    logs: PathBuf,
    keep_logs: bool,
    backend: Backend,
    amqp_port: u16,
    amqp_dist_port: u16,
    master: PgCluster,
    replica: ReplicaDb,
    master_url: String,
    replica_url: String,
    amqp_url: String,
    rabbit_started: AtomicBool,
    torn_down: AtomicBool,
    relay: Mutex<Proc>,
    worker: Mutex<Proc>,
}

const MASTER_DATABASE: &str = "cqrs_soak_master";
const PG_REPLICA_DATABASE: &str = "cqrs_soak_replica";

impl Infra {
    fn new(options: &Options) -> AnyResult<Infra> {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/cqrs_soak_{pid}"));
        let logs = dir.join("logs");
        let pg_bin = std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        let master = PgCluster::new(
            "master",
            dir.join("pg_master"),
            pg_bin.clone(),
            options.master_port,
        );
        let master_url = master.url(MASTER_DATABASE);
        let (replica, replica_url) = match options.replica {
            Backend::Postgres => {
                let cluster = PgCluster::new(
                    "replica",
                    dir.join("pg_replica"),
                    pg_bin,
                    options.replica_port,
                );
                let url = cluster.url(PG_REPLICA_DATABASE);
                (ReplicaDb::Postgres(cluster), url)
            }
            Backend::Mariadb => {
                let server = MariaServer::new(dir.join("mariadb"), options.replica_port);
                let url = server.url(MARIADB_DATABASE);
                (ReplicaDb::Mariadb(server), url)
            }
            Backend::Sqlite => {
                let path = dir.join("replica.sqlite3");
                let url = path.display().to_string();
                (ReplicaDb::Sqlite(path), url)
            }
        };
        let amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", options.amqp_port);
        let relay = Proc::new(
            "relay",
            vec![
                "--master-url".into(),
                master_url.clone(),
                "--amqp-url".into(),
                amqp_url.clone(),
            ],
            logs.join("relay.log"),
        );
        let worker = Proc::new(
            "worker",
            vec![
                "--backend".into(),
                options.replica.flag().into(),
                "--replica-url".into(),
                replica_url.clone(),
                "--amqp-url".into(),
                amqp_url.clone(),
                "--queue".into(),
                QUEUE.into(),
            ],
            logs.join("worker.log"),
        );
        Ok(Infra {
            dir,
            logs,
            keep_logs: options.keep_logs,
            backend: options.replica,
            amqp_port: options.amqp_port,
            amqp_dist_port: options.amqp_dist_port,
            master,
            replica,
            master_url,
            replica_url,
            amqp_url,
            rabbit_started: AtomicBool::new(false),
            torn_down: AtomicBool::new(false),
            relay: Mutex::new(relay),
            worker: Mutex::new(worker),
        })
    }

    fn rabbit_dir(&self) -> PathBuf {
        self.dir.join("rabbit")
    }

    fn rabbit_pid_file(&self) -> PathBuf {
        self.rabbit_dir()
            .join("mnesia")
            .join(format!("{RABBIT_NODE}.pid"))
    }

    fn check_ports(&self) -> AnyResult<()> {
        let mut ports = vec![
            ("--amqp-port", self.amqp_port),
            ("--amqp-dist-port", self.amqp_dist_port),
            ("--master-port", self.master.port),
        ];
        match &self.replica {
            ReplicaDb::Postgres(cluster) => ports.push(("--replica-port", cluster.port)),
            ReplicaDb::Mariadb(server) => ports.push(("--replica-port", server.port)),
            ReplicaDb::Sqlite(_) => {}
        }
        for (flag, port) in ports {
            if !port_is_free(port) {
                return Err(format!(
                    "port {port} on 127.0.0.1 ({flag}) is in use (another soak still running? \
                     `ps aux | grep cqrs_soak`); choose others with --amqp-port, \
                     --amqp-dist-port, --master-port, --replica-port"
                ));
            }
        }
        Ok(())
    }

    fn make_dirs(&self) -> AnyResult<()> {
        fs::create_dir_all(&self.logs).map_err(|e| format!("{}: {e}", self.logs.display()))?;
        let rabbit = self.rabbit_dir();
        fs::create_dir_all(rabbit.join("mnesia")).map_err(|e| e.to_string())?;
        fs::create_dir_all(rabbit.join("log")).map_err(|e| e.to_string())?;
        fs::write(rabbit.join("enabled_plugins"), "[].\n").map_err(|e| e.to_string())?;
        fs::write(
            rabbit.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.local = 127.0.0.1:{}\nloopback_users.guest = true\n",
                self.amqp_port
            ),
        )
        .map_err(|e| e.to_string())?;
        // Our own env file, so that /etc/rabbitmq/rabbitmq-env.conf (the shared node's
        // NODENAME) is not read by the node.
        fs::write(
            rabbit.join("rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS=127.0.0.1\n\
             export ERL_FLAGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n",
        )
        .map_err(|e| e.to_string())?;
        run(
            Command::new("chown")
                .arg("-R")
                .arg("rabbitmq:rabbitmq")
                .arg(&rabbit),
            "chown the RabbitMQ directory",
        )?;
        // The users of the services must reach their directories.
        run(
            Command::new("chmod").arg("755").arg(&self.dir),
            "chmod the soak directory",
        )?;
        Ok(())
    }

    fn rabbitmqctl(&self, args: &[&str], what: &str) -> AnyResult<String> {
        run(
            Command::new("rabbitmqctl")
                .arg("-n")
                .arg(RABBIT_NODE)
                .args(args)
                .current_dir("/tmp"),
            what,
        )
    }

    fn start_rabbit(&self) -> AnyResult<()> {
        let r = self.rabbit_dir();
        self.rabbit_started.store(true, Ordering::SeqCst);
        run(
            Command::new("rabbitmq-server")
                .arg("-detached")
                .current_dir("/tmp")
                .env("RABBITMQ_NODENAME", RABBIT_NODE)
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
                .env("RABBITMQ_DIST_PORT", self.amqp_dist_port.to_string())
                .env("RABBITMQ_MNESIA_BASE", r.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", r.join("log"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", r.join("enabled_plugins"))
                .env("RABBITMQ_CONFIG_FILE", r.join("rabbitmq.conf"))
                .env("RABBITMQ_CONF_ENV_FILE", r.join("rabbitmq-env.conf"))
                .env("RABBITMQ_PID_FILE", self.rabbit_pid_file()),
            "rabbitmq-server -detached",
        )?;
        self.await_rabbit(Duration::from_secs(90))
    }

    /// `await_startup` fails while the node is not yet registered with epmd: try again.
    fn await_rabbit(&self, timeout: Duration) -> AnyResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rabbitmqctl(&["await_startup", "--timeout", "30"], "await_startup") {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline || interrupted() => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// The master's cluster with its database, the outbox and the table.
    fn start_master(&self) -> AnyResult<()> {
        self.master.init_and_start(MASTER_DATABASE)?;
        let mut master = connect(&self.master_url)?;
        master
            .batch_execute(ITEM_DDL)
            .map_err(|e| format!("master DDL: {e}"))?;
        master
            .run_outbox_migrations()
            .map_err(|e| format!("outbox migrations: {e}"))
    }

    /// The replica's database (a cluster, a server or a file), its table and its state table.
    fn start_replica(&self) -> AnyResult<String> {
        let what = match &self.replica {
            ReplicaDb::Postgres(cluster) => {
                cluster.init_and_start(PG_REPLICA_DATABASE)?;
                format!(
                    "replica PostgreSQL cluster on 127.0.0.1:{} ({})",
                    cluster.port,
                    cluster.data().display()
                )
            }
            ReplicaDb::Mariadb(server) => {
                server.install_and_start()?;
                let mut conn = MysqlConnection::establish(&self.replica_url)
                    .map_err(|e| format!("connect to the replica MariaDB: {e}"))?;
                let version: String = diesel_version(&mut conn);
                format!(
                    "replica MariaDB {version} (a private mariadbd) on 127.0.0.1:{} ({})",
                    server.port,
                    server.data().display()
                )
            }
            ReplicaDb::Sqlite(path) => format!("replica SQLite file {}", path.display()),
        };
        ReplicaConn::open(self.backend, &self.replica_url)?.create_tables()?;
        Ok(what)
    }

    /// Restarts the replica's database: alternately a clean restart and a crash (see
    /// [`inject`]); on SQLite, which has no server, a kill of the worker while it writes.
    fn restart_replica(&self, nth: u32) -> AnyResult<String> {
        let clean = nth % 2 == 1;
        match &self.replica {
            ReplicaDb::Postgres(cluster) => {
                let mode = if clean { "fast" } else { "immediate" };
                cluster.restart(mode)?;
                Ok(format!(
                    "replica PostgreSQL restart (pg_ctl restart -m {mode})"
                ))
            }
            ReplicaDb::Mariadb(server) => {
                let how = if clean {
                    server.shutdown()?;
                    "clean: mariadb-admin shutdown".to_owned()
                } else {
                    let pid = server.crash()?;
                    format!("crash: kill -9 of mariadbd (pid {pid})")
                };
                server.start()?;
                Ok(format!(
                    "replica MariaDB restart ({how}, then a new mariadbd on the same data \
                     directory)"
                ))
            }
            ReplicaDb::Sqlite(path) => {
                // The moment the worker writes: its write-ahead log changes. After a broker
                // restart the worker may still be reconnecting, idle: wait for it (up to 30 s;
                // the writers go on meanwhile).
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                let stamp = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
                let first = stamp(&wal);
                let waited = Instant::now();
                let writing = loop {
                    let now = stamp(&wal);
                    if now.is_some() && now != first {
                        break true;
                    }
                    if waited.elapsed() >= Duration::from_secs(30) || interrupted() {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let waited = waited.elapsed().as_secs_f64();
                let mut worker = lock(&self.worker);
                let pid = worker.pid();
                worker.kill();
                worker.kills += 1;
                worker.start()?;
                Ok(format!(
                    "SQLite has no server to restart: kill -9 of the worker (pid {pid:?}) {} \
                     and a new one (pid {:?})",
                    if writing {
                        format!(
                            "while it wrote (its WAL file had just changed, after {waited:.1} s \
                             of watching)"
                        )
                    } else {
                        format!("(its WAL file did not change in {waited:.0} s: it was idle)")
                    },
                    worker.pid()
                ))
            }
        }
    }

    /// Declares the exchange, the replica's queue and its bindings before anything is
    /// written: otherwise the relay's first messages would be unroutable (and dropped, as no
    /// replica wanted them).
    fn declare_topology(&self, rt: &tokio::runtime::Runtime) -> AnyResult<()> {
        let config = self.broker_config()?;
        rt.block_on(async {
            let transport = RabbitMqTransport::new(config.clone());
            let result = transport
                .declare(&Topology::from_config(&config, [CQRS_ID]))
                .await;
            transport.close().await;
            result
        })
        .map_err(|e| format!("declare the topology: {e}"))
    }

    fn broker_config(&self) -> AnyResult<Config> {
        Config::builder()
            .amqp_url(&self.amqp_url)
            .exchange(EXCHANGE)
            .queue(QUEUE)
            .connection_name("cqrs-soak")
            .build()
            .map_err(|e| e.to_string())
    }

    /// Messages ready and unacknowledged in the replica's queue and its dead-letter queue.
    fn queue_depths(&self) -> String {
        match self.rabbitmqctl(
            &[
                "list_queues",
                "-q",
                "name",
                "messages",
                "messages_unacknowledged",
            ],
            "list_queues",
        ) {
            Ok(text) => text
                .lines()
                .filter(|line| line.contains(QUEUE))
                .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; "),
            Err(error) => format!("(list_queues failed: {error})"),
        }
    }

    /// Every message of the replica's dead-letter queue: its depth, then each one read with
    /// `basic.get` and left in the queue.
    fn dead_letters(&self, rt: &tokio::runtime::Runtime) -> AnyResult<(u32, Vec<DeadLetter>)> {
        let config = self.broker_config()?;
        let queue = config
            .dead_letter_queue()
            .ok_or("no dead-letter queue configured")?
            .to_owned();
        rt.block_on(async {
            let transport = RabbitMqTransport::new(config);
            let result = async {
                let depth = transport.queue_depth(&queue).await?;
                let mut browser = transport.browse(&queue).await?;
                let mut letters = Vec::new();
                let mut held = Vec::new();
                while letters.len() < depth as usize {
                    let Some(delivery) = browser.next().await? else {
                        break;
                    };
                    letters.push(DeadLetter {
                        reason: delivery
                            .header(DEAD_LETTER_REASON_HEADER)
                            .unwrap_or("(no x-cqrs-dead-letter-reason header)")
                            .to_owned(),
                        routing_key: delivery.routing_key().to_owned(),
                        body: String::from_utf8_lossy(delivery.body()).into_owned(),
                    });
                    held.push(delivery);
                }
                browser.close().await;
                drop(held);
                Ok::<_, cqrs_diesel::TransportError>((depth, letters))
            }
            .await;
            transport.close().await;
            result
        })
        .map_err(|e| format!("read the dead-letter queue {queue}: {e}"))
    }

    /// Stops and removes everything this soak started. Idempotent.
    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&self.relay).kill();
        lock(&self.worker).kill();
        if self.rabbit_started.load(Ordering::SeqCst) {
            let pid_file = self.rabbit_pid_file();
            let pid_arg = pid_file.display().to_string();
            let stopped = if pid_file.exists() {
                self.rabbitmqctl(&["stop", &pid_arg], "stop the RabbitMQ node")
            } else {
                self.rabbitmqctl(&["stop"], "stop the RabbitMQ node")
            };
            if let Err(error) = stopped {
                eprintln!("warning: {error}");
                kill_pid_file(&pid_file, "the RabbitMQ node");
            }
        }
        self.master.stop();
        match &self.replica {
            ReplicaDb::Postgres(cluster) => cluster.stop(),
            ReplicaDb::Mariadb(server) => server.stop(),
            ReplicaDb::Sqlite(_) => {}
        }
        if self.keep_logs {
            for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if entry.path() != self.logs {
                    let _ =
                        fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
                }
            }
            println!("logs kept in {}", self.logs.display());
        } else if let Err(error) = fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {error}", self.dir.display());
        }
    }
}

/// One message of the dead-letter queue.
struct DeadLetter {
    reason: String,
    routing_key: String,
    body: String,
}

/// `SELECT VERSION()` on MariaDB, or "?".
fn diesel_version(conn: &mut MysqlConnection) -> String {
    cqrs_diesel::diesel::select(cqrs_diesel::diesel::dsl::sql::<
        cqrs_diesel::diesel::sql_types::Text,
    >("VERSION()"))
    .get_result::<String>(conn)
    .unwrap_or_else(|_| "?".to_owned())
}

/// SIGKILL the process whose pid is the first line of `pid_file` (a last resort).
fn kill_pid_file(pid_file: &Path, what: &str) {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return;
    };
    if let Some(pid) = text.lines().next().map(str::trim).filter(|p| !p.is_empty()) {
        eprintln!("warning: killing {what} (pid {pid}) with SIGKILL");
        let _ = run(Command::new("kill").arg("-9").arg(pid), "kill -9");
    }
}

fn connect(url: &str) -> AnyResult<PgConnection> {
    PgConnection::establish(url).map_err(|e| format!("connect to {url}: {e}"))
}

/// Tears the infrastructure down when dropped: at the end, on an error, on a panic.
struct Teardown(Arc<Infra>);

impl Drop for Teardown {
    fn drop(&mut self) {
        println!(
            "cleaning up (children, RabbitMQ node, master PostgreSQL, replica database, temp dir)"
        );
        self.0.teardown();
    }
}
// ------------------------------------------------------------------------------------------
// The writers.
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
enum TxError {
    /// The rollback the soak asked for.
    Rollback,
    Cqrs(cqrs_diesel::Error),
    Diesel(cqrs_diesel::diesel::result::Error),
}

impl From<cqrs_diesel::diesel::result::Error> for TxError {
    fn from(error: cqrs_diesel::diesel::result::Error) -> Self {
        TxError::Diesel(error)
    }
}

impl From<cqrs_diesel::Error> for TxError {
    fn from(error: cqrs_diesel::Error) -> Self {
        TxError::Cqrs(error)
    }
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxError::Rollback => f.write_str("rolled back"),
            TxError::Cqrs(e) => write!(f, "{e}"),
            TxError::Diesel(e) => write!(f, "{e}"),
        }
    }
}

/// Expects the rollback the soak asked for; anything else is an error.
fn expect_rollback<T>(result: Result<T, TxError>) -> Result<(), TxError> {
    match result {
        Err(TxError::Rollback) => Ok(()),
        Ok(_) => Err(TxError::Cqrs(cqrs_diesel::Error::Task(
            "a transaction meant to roll back committed".to_owned(),
        ))),
        Err(other) => Err(other),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    Create,
    Recreate,
    Update,
    AtomicDoubleUpdate,
    Delete,
    BulkUpdate,
    RolledBackCreate,
    RolledBackUpdate,
    RolledBackDelete,
    RolledBackUpdateThenDelete,
    SavepointRolledBackUpdate,
    SavepointRolledBackDelete,
    HotUpdate,
    HotAtomicUpdate,
    HotRolledBackUpdate,
    /// A write that failed with the master unavailable, but that the master's table shows
    /// committed (COMMIT's answer was lost with the connection): not retried.
    CommittedAnswerLost,
}

#[derive(Default)]
struct WriterReport {
    ops: BTreeMap<Op, u64>,
    /// Ids with at least one committed create.
    created: HashSet<i64>,
    /// Per id, the names written by transactions (or savepoints) that rolled back.
    rolled_back: HashMap<i64, HashSet<String>>,
    /// Time spent waiting for a fault to finish (see [`Shared::hold`]).
    held: Duration,
    /// Writes that failed with the master unavailable (each failed attempt counts).
    master_down: u64,
    /// Of those, the ones retried (they had not committed).
    retried: u64,
    /// Of those, the ones the re-read showed committed (their answer was lost).
    answer_lost: u64,
    /// Own ids whose existence the re-read after a failure changed in the writer's memory.
    resynced: u64,
    /// Time spent waiting for the master and re-reading.
    down_time: Duration,
    /// The errors with the master unavailable, by first line.
    down_errors: BTreeMap<String, u64>,
    error: Option<String>,
}

/// What the write being made leaves on the master if it commits: how the writer tells, after
/// losing the connection, whether it did.
#[derive(Clone)]
enum Probe {
    /// Nothing (a write meant to roll back).
    Nothing,
    /// This row (the values sent: name, qty and price).
    Row(Item),
    /// No row with this id.
    Absent(i64),
}

struct Shared {
    /// Writes claimed by the writers (the fault schedule follows it).
    claimed: AtomicU64,
    /// Writes done.
    completed: AtomicU64,
    /// Faults injected (or attempted).
    faults_done: AtomicU64,
    /// A writer failed: all stop.
    stop: AtomicBool,
    /// The write counts at which the faults are due (see [`schedule`]).
    due: Vec<u64>,
}

impl Shared {
    /// Holds a writer about to make write `n` while the fault before the last one due is not
    /// done: the faults then happen at their write counts even when one takes longer than the
    /// writes between two of them, and writes go on during each fault. The time held.
    fn hold(&self, n: u64) -> Duration {
        let due = self.due.iter().filter(|&&at| at <= n).count() as u64;
        let started = Instant::now();
        while due > 0
            && self.faults_done.load(Ordering::SeqCst) + 1 < due
            && !self.stop.load(Ordering::Relaxed)
            && !interrupted()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        started.elapsed()
    }
}

const NAME_CHARS: &[char] = &[
    'a', 'b', 'c', 'x', 'y', 'z', 'A', 'Q', 'Z', '0', '7', '9', ' ', '-', '_', '\'', '"', '\\',
    '%', ',', '{', '}', 'é', 'ß', 'Ж', 'ñ', '中', '文', '😀', '\u{200d}', '\t', '\n',
];

fn random_name(rng: &mut fastrand::Rng) -> String {
    let len = rng.usize(0..=24);
    (0..len)
        .map(|_| NAME_CHARS[rng.usize(..NAME_CHARS.len())])
        .collect()
}

fn random_price(rng: &mut fastrand::Rng) -> f64 {
    const SPECIAL: [f64; 10] = [
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        0.1,
        1.0 / 3.0,
    ];
    if rng.u8(..16) == 0 {
        return SPECIAL[rng.usize(..SPECIAL.len())];
    }
    loop {
        let value = f64::from_bits(rng.u64(..));
        if value.is_finite() {
            return value;
        }
    }
}

fn random_item(rng: &mut fastrand::Rng, id: i64) -> Item {
    Item {
        id,
        name: random_name(rng),
        qty: rng.i64(..),
        price: random_price(rng),
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    }
}

struct Writer {
    thread: usize,
    rng: fastrand::Rng,
    url: String,
    conn: PgConnection,
    /// What the current write leaves if it commits.
    probe: Probe,
    /// This thread's ids (id % threads == thread) and whether each exists on the master now.
    own: Vec<(i64, bool)>,
    hot: Vec<i64>,
    rollback_pct: u32,
    rolled_back_seq: u64,
    report: WriterReport,
}

impl Writer {
    fn rolled_back_item(&mut self, id: i64) -> Item {
        self.rolled_back_seq += 1;
        let mut item = random_item(&mut self.rng, id);
        item.name = format!(
            "rolled back {}-{} {}",
            self.thread, self.rolled_back_seq, item.name
        );
        self.report
            .rolled_back
            .entry(id)
            .or_default()
            .insert(item.name.clone());
        item
    }

    fn count(&mut self, op: Op) {
        *self.report.ops.entry(op).or_default() += 1;
    }

    fn one(&mut self) -> Result<(), TxError> {
        self.probe = Probe::Nothing;
        if !self.hot.is_empty() && self.rng.u32(..100) < 10 {
            return self.hot_op();
        }
        let slot = self.rng.usize(..self.own.len());
        let (id, exists) = self.own[slot];
        let roll = self.rng.u32(..100);
        let rb = self.rollback_pct;
        if roll < rb {
            return self.rolled_back_op(id, exists);
        }
        if roll < rb + 5 && exists {
            return self.savepoint_op(id);
        }
        if roll < rb + 8 && exists {
            return self.bulk_update_op(id);
        }
        if !exists {
            let item = random_item(&mut self.rng, id);
            self.probe = Probe::Row(item.clone());
            item.save_and_publish(&mut self.conn)?;
            self.own[slot].1 = true;
            let op = if self.report.created.insert(id) {
                Op::Create
            } else {
                Op::Recreate
            };
            self.count(op);
            return Ok(());
        }
        match self.rng.u32(..100) {
            0..=54 => self.update(id, Op::Update)?,
            55..=74 => self.atomic_double_update(id, Op::AtomicDoubleUpdate)?,
            _ => {
                self.probe = Probe::Absent(id);
                let deleted = random_item(&mut self.rng, id).delete_and_publish(&mut self.conn)?;
                if !deleted {
                    return Err(TxError::Cqrs(cqrs_diesel::Error::Task(format!(
                        "id {id} should exist but delete_and_publish found no row"
                    ))));
                }
                self.own[slot].1 = false;
                self.count(Op::Delete);
            }
        }
        Ok(())
    }

    fn rolled_back_op(&mut self, id: i64, exists: bool) -> Result<(), TxError> {
        let plain = self.rng.bool();
        let kind = if exists { self.rng.u32(..3) } else { 3 };
        let item = self.rolled_back_item(id);
        let body = |c: &mut PgConnection| -> Result<(), TxError> {
            match kind {
                0 => {
                    item.save_and_publish(c)?;
                }
                1 => {
                    item.delete_and_publish(c)?;
                }
                2 => {
                    let stored = item.save_and_publish(c)?;
                    stored.delete_and_publish(c)?;
                }
                _ => {
                    item.save_and_publish(c)?;
                }
            }
            Err(TxError::Rollback)
        };
        // Half in a plain Diesel transaction, half in `atomic`.
        let result = if plain {
            self.conn.transaction(body)
        } else {
            cqrs_diesel::atomic(&mut self.conn, body)
        };
        expect_rollback(result)?;
        self.count(match kind {
            0 => Op::RolledBackUpdate,
            1 => Op::RolledBackDelete,
            2 => Op::RolledBackUpdateThenDelete,
            _ => Op::RolledBackCreate,
        });
        Ok(())
    }

    /// A committed transaction with a rolled-back savepoint in it: the committed write stands,
    /// the savepoint's write (an update, or a delete) must never reach the replica.
    fn savepoint_op(&mut self, id: i64) -> Result<(), TxError> {
        let before = random_item(&mut self.rng, id);
        let after = random_item(&mut self.rng, id);
        let rolled_back = self.rolled_back_item(id);
        let delete = self.rng.bool();
        let use_atomic = self.rng.bool();
        self.probe = Probe::Row(after.clone());
        let body = |c: &mut PgConnection| -> Result<(), TxError> {
            before.save_and_publish(c)?;
            let inner = c.transaction(|c| -> Result<(), TxError> {
                if delete {
                    rolled_back.delete_and_publish(c)?;
                } else {
                    rolled_back.save_and_publish(c)?;
                }
                Err(TxError::Rollback)
            });
            expect_rollback(inner)?;
            after.save_and_publish(c)?;
            Ok(())
        };
        if use_atomic {
            cqrs_diesel::atomic(&mut self.conn, body)?;
        } else {
            self.conn.transaction(body)?;
        }
        self.count(if delete {
            Op::SavepointRolledBackDelete
        } else {
            Op::SavepointRolledBackUpdate
        });
        Ok(())
    }

    /// One `bulk_update_and_publish` of `id` (which exists) and up to 7 more existing ids.
    fn bulk_update_op(&mut self, id: i64) -> Result<(), TxError> {
        let mut rows = vec![random_item(&mut self.rng, id)];
        let mut seen = HashSet::from([id]);
        for _ in 0..self.rng.usize(0..=7) {
            let (id, exists) = self.own[self.rng.usize(..self.own.len())];
            if exists && seen.insert(id) {
                rows.push(random_item(&mut self.rng, id));
            }
        }
        self.probe = Probe::Row(rows[0].clone());
        let updated = Item::bulk_update_and_publish(&mut self.conn, &rows)?;
        if updated.len() != rows.len() {
            return Err(TxError::Cqrs(cqrs_diesel::Error::Task(format!(
                "bulk update of {} existing rows updated {}",
                rows.len(),
                updated.len()
            ))));
        }
        self.count(Op::BulkUpdate);
        Ok(())
    }

    /// Saves new values of row `id`, counted as `op`.
    fn update(&mut self, id: i64, op: Op) -> Result<(), TxError> {
        let item = random_item(&mut self.rng, id);
        self.probe = Probe::Row(item.clone());
        item.save_and_publish(&mut self.conn)?;
        self.count(op);
        Ok(())
    }

    /// Saves row `id` twice in one `atomic` block (one revision, one message), counted as
    /// `op`.
    fn atomic_double_update(&mut self, id: i64, op: Op) -> Result<(), TxError> {
        let first = random_item(&mut self.rng, id);
        let second = random_item(&mut self.rng, id);
        self.probe = Probe::Row(second.clone());
        cqrs_diesel::atomic(&mut self.conn, |c| -> Result<(), TxError> {
            first.save_and_publish(c)?;
            second.save_and_publish(c)?;
            Ok(())
        })?;
        self.count(op);
        Ok(())
    }

    /// The hot rows: every thread updates them, so their updates contend for the row lock.
    fn hot_op(&mut self) -> Result<(), TxError> {
        let id = self.hot[self.rng.usize(..self.hot.len())];
        match self.rng.u32(..100) {
            0..=69 => self.update(id, Op::HotUpdate)?,
            70..=84 => self.atomic_double_update(id, Op::HotAtomicUpdate)?,
            _ => {
                let item = self.rolled_back_item(id);
                expect_rollback(self.conn.transaction(|c| -> Result<(), TxError> {
                    item.save_and_publish(c)?;
                    Err(TxError::Rollback)
                }))?;
                self.count(Op::HotRolledBackUpdate);
            }
        }
        Ok(())
    }
}

impl Writer {
    /// Whether `error` means that the master is unavailable: the error says so, or the
    /// connection no longer answers.
    fn master_down(&mut self, error: &TxError) -> bool {
        use cqrs_diesel::diesel::result::{DatabaseErrorKind, Error as DieselError};
        let unavailable = match error {
            TxError::Rollback => return false,
            TxError::Cqrs(e) => e.is_unavailable(),
            TxError::Diesel(DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )) => true,
            TxError::Diesel(_) => false,
        };
        unavailable || self.conn.batch_execute("SELECT 1").is_err()
    }

    /// After a write failed with the master unavailable: waits for the master (a new
    /// connection every 250 ms, up to 180 s), re-reads which of this thread's ids exist (a
    /// create or a delete may have committed even though its answer was lost) and whether the
    /// failed write's row is on the master. True when the write committed.
    fn recover(&mut self, shared: &Shared) -> Result<bool, String> {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            if shared.stop.load(Ordering::Relaxed) || interrupted() {
                return Err("stopped while waiting for the master".to_owned());
            }
            if started.elapsed() > Duration::from_secs(180) {
                return Err(format!(
                    "the master is still unavailable after 180 s: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
            let mut conn = match PgConnection::establish(&self.url) {
                Ok(conn) => conn,
                Err(error) => {
                    last = error.to_string();
                    continue;
                }
            };
            match self.reread(&mut conn) {
                Ok(committed) => {
                    self.conn = conn;
                    return Ok(committed);
                }
                Err(error) => last = error.to_string(),
            }
        }
    }

    fn reread(&mut self, conn: &mut PgConnection) -> QueryResult<bool> {
        use master_schema::item::dsl;
        let existing: HashSet<i64> = dsl::item
            .select(dsl::id)
            .load::<i64>(conn)?
            .into_iter()
            .collect();
        let stored: Option<Item> = match &self.probe {
            Probe::Row(item) => dsl::item.find(item.id).first(conn).optional()?,
            _ => None,
        };
        for (id, exists) in &mut self.own {
            let now = existing.contains(id);
            if now != *exists {
                self.report.resynced += 1;
                *exists = now;
            }
            // Only this thread creates its ids: one that exists had a committed create.
            if now {
                self.report.created.insert(*id);
            }
        }
        Ok(match &self.probe {
            Probe::Nothing => false,
            Probe::Row(item) => stored.is_some_and(|row| {
                row.name == item.name
                    && row.qty == item.qty
                    && row.price.to_bits() == item.price.to_bits()
            }),
            Probe::Absent(id) => !existing.contains(id),
        })
    }
}

/// The first line of an error, for counting errors by kind.
fn first_line(error: &TxError) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(120).collect()
}

fn writer_thread(
    thread: usize,
    options: &Options,
    master_url: &str,
    hot: Vec<i64>,
    shared: &Shared,
) -> WriterReport {
    let mut report = WriterReport::default();
    let conn = match connect(master_url) {
        Ok(conn) => conn,
        Err(error) => {
            report.error = Some(error);
            shared.stop.store(true, Ordering::SeqCst);
            return report;
        }
    };
    let threads = options.threads as i64;
    let own = (1..=options.ids)
        .filter(|id| id % threads == thread as i64)
        .map(|id| (id, false))
        .collect();
    let seed = options
        .seed
        .wrapping_add((thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut writer = Writer {
        thread,
        rng: fastrand::Rng::with_seed(seed),
        url: master_url.to_owned(),
        conn,
        probe: Probe::Nothing,
        own,
        hot,
        rollback_pct: options.rollback_pct,
        rolled_back_seq: 0,
        report,
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) || interrupted() {
            break;
        }
        let n = shared.claimed.fetch_add(1, Ordering::SeqCst);
        if n >= options.writes {
            break;
        }
        writer.report.held += shared.hold(n);
        // A write that fails with the master unavailable is made again once the master is
        // back (the same operation: the random generator is set back), unless it committed.
        let mut attempts = 0u32;
        let failure = loop {
            let rng = writer.rng.clone();
            let error = match writer.one() {
                Ok(()) => break None,
                Err(error) => error,
            };
            if !writer.master_down(&error) {
                break Some(format!("writer {thread}, write #{n}: {error}"));
            }
            attempts += 1;
            writer.report.master_down += 1;
            *writer
                .report
                .down_errors
                .entry(first_line(&error))
                .or_default() += 1;
            let started = Instant::now();
            let recovered = writer.recover(shared);
            writer.report.down_time += started.elapsed();
            match recovered {
                Ok(true) => {
                    writer.report.answer_lost += 1;
                    writer.count(Op::CommittedAnswerLost);
                    break None;
                }
                Ok(false) if attempts < 50 => {
                    writer.rng = rng;
                    writer.report.retried += 1;
                }
                Ok(false) => {
                    break Some(format!(
                        "writer {thread}, write #{n}: failed {attempts} times with the master \
                         unavailable, last: {error}"
                    ));
                }
                Err(why) => {
                    break Some(format!("writer {thread}, write #{n}: {error}; then {why}"));
                }
            }
        };
        if let Some(error) = failure {
            writer.report.error = Some(error);
            shared.stop.store(true, Ordering::SeqCst);
            break;
        }
        shared.completed.fetch_add(1, Ordering::SeqCst);
    }
    writer.report
}
// ------------------------------------------------------------------------------------------
// Faults: a schedule over the write count, and a supervisor of the children.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    KillRelay,
    KillWorker,
    BrokerRestart,
    ReplicaDbRestart,
    MasterDbRestart,
}

/// The order of the faults: each is followed by one that does not mend what it broke (after
/// the replica's database restarts, the worker keeps its broken connection and must reopen it
/// by itself; after the master's, the relay and the writers must reconnect by themselves).
/// With the default 10 faults each is injected twice (once as a clean restart and once as a
/// crash, for the databases), and the last one, at the last write, is a master restart.
const ROTATION: [Fault; 5] = [
    Fault::KillWorker,
    Fault::BrokerRestart,
    Fault::ReplicaDbRestart,
    Fault::KillRelay,
    Fault::MasterDbRestart,
];

/// The `k`-th fault (from 0) is injected once `(k + 1) * W / N` writes have been claimed.
fn schedule(writes: u64, faults: u64) -> Vec<(u64, Fault)> {
    (0..faults)
        .map(|k| {
            let at = (writes * (k + 1) / faults).max(1);
            (at, ROTATION[(k % ROTATION.len() as u64) as usize])
        })
        .collect()
}

#[derive(Default)]
struct FaultReport {
    injected: BTreeMap<Fault, u32>,
    failures: Vec<String>,
    unexpected: Vec<String>,
}

fn inject(infra: &Infra, fault: Fault, nth: u32, broker_down: Duration) -> AnyResult<String> {
    let started = Instant::now();
    let what = match fault {
        Fault::KillRelay => {
            let mut relay = lock(&infra.relay);
            let pid = relay.pid();
            relay.kill();
            relay.kills += 1;
            relay.start()?;
            format!(
                "kill -9 relay (pid {pid:?}) and start a new one (pid {:?})",
                relay.pid()
            )
        }
        Fault::KillWorker => {
            let mut worker = lock(&infra.worker);
            let pid = worker.pid();
            worker.kill();
            worker.kills += 1;
            worker.start()?;
            format!(
                "kill -9 worker (pid {pid:?}) and start a new one (pid {:?})",
                worker.pid()
            )
        }
        Fault::BrokerRestart => {
            infra.rabbitmqctl(&["stop_app"], "rabbitmqctl stop_app")?;
            std::thread::sleep(broker_down);
            infra.rabbitmqctl(&["start_app"], "rabbitmqctl start_app")?;
            format!(
                "broker restart (stop_app, {} ms down, start_app)",
                broker_down.as_millis()
            )
        }
        // Alternately a clean restart and a crash restart (WAL recovery).
        Fault::ReplicaDbRestart => infra.restart_replica(nth)?,
        Fault::MasterDbRestart => {
            let mode = if nth % 2 == 1 { "fast" } else { "immediate" };
            infra.master.restart(mode)?;
            format!("master PostgreSQL restart (pg_ctl restart -m {mode})")
        }
    };
    Ok(format!(
        "{what}, took {:.1} s",
        started.elapsed().as_secs_f64()
    ))
}

fn supervisor(
    infra: &Infra,
    options: &Options,
    shared: &Shared,
    done: &AtomicBool,
    start: Instant,
) -> FaultReport {
    let mut report = FaultReport::default();
    let plan = schedule(options.writes, options.faults);
    let mut next = 0usize;
    let mut next_progress = 1u64;
    let mut master: Option<PgConnection> = None;
    loop {
        for proc in [&infra.relay, &infra.worker] {
            if let Some(exit) = lock(proc).supervise() {
                println!("!! {exit}; started again");
                report.unexpected.push(exit);
            }
        }
        if done.load(Ordering::SeqCst) || interrupted() {
            break;
        }
        let claimed = shared.claimed.load(Ordering::SeqCst).min(options.writes);
        let completed = shared.completed.load(Ordering::SeqCst);
        let mut pending = || {
            outbox_pending(&infra.master_url, &mut master)
                .map_or_else(|| "?".to_owned(), |n| n.to_string())
        };
        if next < plan.len() && claimed >= plan[next].0 && !shared.stop.load(Ordering::SeqCst) {
            let (at, fault) = plan[next];
            next += 1;
            let nth = {
                let n = report.injected.entry(fault).or_default();
                *n += 1;
                *n
            };
            let backlog = pending();
            match inject(infra, fault, nth, options.broker_down) {
                Ok(what) => println!(
                    "[{:>6.1} s] fault {next}/{} at write {at} ({completed} done, outbox {backlog}): {what}",
                    start.elapsed().as_secs_f64(),
                    plan.len()
                ),
                Err(error) => {
                    println!("!! fault {next} ({fault:?}) could not be injected: {error}");
                    report.failures.push(error);
                }
            }
            shared.faults_done.fetch_add(1, Ordering::SeqCst);
        } else if options.faults == 0 && completed >= options.writes * next_progress / 10 {
            println!(
                "[{:>6.1} s] {completed} writes done, outbox {}",
                start.elapsed().as_secs_f64(),
                pending()
            );
            next_progress += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report
}

/// The outbox's size on the master through `conn`, (re)connecting when needed; `None` while the
/// master is unavailable.
fn outbox_pending(url: &str, conn: &mut Option<PgConnection>) -> Option<i64> {
    if conn.is_none() {
        *conn = PgConnection::establish(url).ok();
    }
    match conn.as_mut()?.outbox_pending() {
        Ok(n) => Some(n),
        Err(_) => {
            *conn = None;
            None
        }
    }
}
// ------------------------------------------------------------------------------------------
// Comparison.
// ------------------------------------------------------------------------------------------

fn master_rows(conn: &mut PgConnection) -> QueryResult<BTreeMap<i64, Row>> {
    use master_schema::item::dsl;
    let rows: Vec<Item> = dsl::item.order(dsl::id).load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.id,
                Row::new(r.name, r.qty, r.price, r.cqrs_revision, r.cqrs_updated),
            )
        })
        .collect())
}

/// The master's rows as the replica's backend can hold them: on MariaDB and SQLite a `-0.0`
/// price is stored as `0.0` (docs/DESIGN.md, "Values each backend cannot represent"), so it is
/// compared as `0.0` there. The number of rows concerned.
fn as_replica_holds(backend: Backend, rows: &mut BTreeMap<i64, Row>) -> usize {
    if backend.keeps_negative_zero() {
        return 0;
    }
    let mut n = 0;
    for row in rows.values_mut() {
        if row.price_bits == (-0.0f64).to_bits() {
            row.price_bits = 0.0f64.to_bits();
            n += 1;
        }
    }
    n
}

/// The master's rows, as the replica's backend can hold them (see [`as_replica_holds`]).
fn master_rows_for(backend: Backend, conn: &mut PgConnection) -> QueryResult<BTreeMap<i64, Row>> {
    let mut rows = master_rows(conn)?;
    as_replica_holds(backend, &mut rows);
    Ok(rows)
}

#[derive(Default)]
struct Comparison {
    master_rows: usize,
    replica_rows: usize,
    /// On the master, not on the replica.
    missing: Vec<i64>,
    /// On both, different (and the replica's row is not a rolled-back write).
    wrong: Vec<i64>,
    /// The replica's row carries a rolled-back write, or a row the master never committed.
    phantom: Vec<i64>,
    /// Deleted on the master (its last committed operation), present on the replica.
    resurrected: Vec<i64>,
}

impl Comparison {
    fn lost(&self) -> usize {
        self.missing.len() + self.wrong.len()
    }

    fn clean(&self) -> bool {
        self.lost() == 0 && self.phantom.is_empty() && self.resurrected.is_empty()
    }
}

fn compare(
    master: &BTreeMap<i64, Row>,
    replica: &BTreeMap<i64, Row>,
    created: &HashSet<i64>,
    rolled_back: &HashMap<i64, HashSet<String>>,
) -> Comparison {
    let mut out = Comparison {
        master_rows: master.len(),
        replica_rows: replica.len(),
        ..Comparison::default()
    };
    let is_rolled_back = |id: &i64, row: &Row| {
        rolled_back
            .get(id)
            .is_some_and(|names| names.contains(&row.name))
    };
    let ids: std::collections::BTreeSet<i64> =
        master.keys().chain(replica.keys()).copied().collect();
    for id in ids {
        match (master.get(&id), replica.get(&id)) {
            (Some(m), Some(r)) if m == r => {}
            (Some(_), Some(r)) if is_rolled_back(&id, r) => out.phantom.push(id),
            (Some(_), Some(_)) => out.wrong.push(id),
            (Some(_), None) => out.missing.push(id),
            (None, Some(r)) if is_rolled_back(&id, r) || !created.contains(&id) => {
                out.phantom.push(id)
            }
            (None, Some(_)) => out.resurrected.push(id),
            (None, None) => {}
        }
    }
    out
}

/// Shows that [`compare`] sees each kind of damage: it compares the master with a copy of it
/// damaged in memory (a row removed, a field changed, a rolled-back write, a deleted row
/// brought back) and expects exactly those findings.
fn self_check(
    master: &BTreeMap<i64, Row>,
    created: &HashSet<i64>,
    rolled_back: &HashMap<i64, HashSet<String>>,
) -> AnyResult<String> {
    let mut replica = master.clone();
    let mut ids = master.keys().copied();
    let (Some(missing), Some(wrong)) = (ids.next(), ids.next()) else {
        return Ok("skipped (fewer than 2 master rows)".to_owned());
    };
    replica.remove(&missing);
    if let Some(row) = replica.get_mut(&wrong) {
        row.price_bits ^= 1;
    }
    let mut expected = (1, 1, 0, 0);
    let phantom = rolled_back
        .iter()
        .find(|(id, _)| **id != missing && **id != wrong)
        .and_then(|(id, names)| Some((*id, names.iter().next()?.clone())));
    let template = master.get(&wrong).cloned().ok_or("no template row")?;
    let phantom_id = phantom.as_ref().map(|p| p.0);
    if let Some((id, name)) = phantom {
        replica.insert(
            id,
            Row {
                name,
                ..template.clone()
            },
        );
        expected.2 = 1;
    }
    if let Some(&id) = created
        .iter()
        .find(|id| !master.contains_key(id) && Some(**id) != phantom_id)
    {
        replica.insert(id, template);
        expected.3 = 1;
    }
    let c = compare(master, &replica, created, rolled_back);
    let found = (
        c.missing.len(),
        c.wrong.len(),
        c.phantom.len(),
        c.resurrected.len(),
    );
    if found == expected {
        Ok(format!(
            "ok (a damaged copy of the master shows missing {}, wrong {}, phantom {}, resurrected {})",
            found.0, found.1, found.2, found.3
        ))
    } else {
        Err(format!(
            "expected (missing, wrong, phantom, resurrected) = {expected:?}, found {found:?}"
        ))
    }
}

fn print_examples(
    label: &str,
    ids: &[i64],
    master: &BTreeMap<i64, Row>,
    replica: &BTreeMap<i64, Row>,
) {
    for id in ids.iter().take(5) {
        let m = master.get(id);
        let r = replica.get(id);
        let diff = match (m, r) {
            (Some(m), Some(r)) => format!(" (differs in {})", m.differences(r).join(", ")),
            _ => String::new(),
        };
        println!("    {label} id {id}{diff}");
        println!(
            "      master : {}",
            m.map_or_else(|| "(no row)".to_owned(), Row::show)
        );
        println!(
            "      replica: {}",
            r.map_or_else(|| "(no row)".to_owned(), Row::show)
        );
    }
    if ids.len() > 5 {
        println!("    ... and {} more", ids.len() - 5);
    }
}

/// `text` without its ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Log lines at WARN and ERROR in a child's log.
fn log_levels(path: &Path) -> (usize, usize) {
    let Ok(file) = File::open(path) else {
        return (0, 0);
    };
    let mut warn = 0;
    let mut error = 0;
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        let line = strip_ansi(&line);
        if line.contains(" WARN ") {
            warn += 1;
        } else if line.contains(" ERROR ") {
            error += 1;
        }
    }
    (warn, error)
}

// ------------------------------------------------------------------------------------------
// The soak.
// ------------------------------------------------------------------------------------------

fn soak_main(options: Options) -> AnyResult<ExitCode> {
    let wall = Instant::now();
    println!(
        "soak: {} writes from {} threads over {} ids (+{} hot ids), {} replica, seed {}, {} faults",
        options.writes,
        options.threads,
        options.ids,
        options.hot,
        options.replica.name(),
        options.seed,
        options.faults
    );
    println!("reproduce: {}", options.command_line());

    let rt = runtime()?;
    rt.spawn(async {
        cqrs_diesel::shutdown_signal().await;
        eprintln!("interrupted: stopping and cleaning up");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });

    let infra = Arc::new(Infra::new(&options)?);
    infra.check_ports()?;
    let guard = Teardown(Arc::clone(&infra));
    infra.make_dirs()?;

    let setup = Instant::now();
    infra.start_rabbit()?;
    println!(
        "RabbitMQ node {RABBIT_NODE} on 127.0.0.1:{} is up",
        options.amqp_port
    );
    infra.start_master()?;
    println!(
        "master PostgreSQL cluster on 127.0.0.1:{} is up ({}), database {MASTER_DATABASE}",
        options.master_port,
        infra.master.data().display()
    );
    let replica = infra.start_replica()?;
    println!("{replica} is up");
    infra.declare_topology(&rt)?;
    lock(&infra.worker).start()?;
    lock(&infra.relay).start()?;
    println!(
        "relay and worker started ({:.1} s of setup)",
        setup.elapsed().as_secs_f64()
    );
    if interrupted() {
        drop(guard);
        return Ok(ExitCode::from(130));
    }

    // The hot rows exist before the writers start (one bulk create), and are never deleted.
    let hot: Vec<i64> = (1..=options.hot).map(|i| options.ids + i).collect();
    if !hot.is_empty() {
        let mut rng = fastrand::Rng::with_seed(options.seed);
        let rows: Vec<Item> = hot.iter().map(|&id| random_item(&mut rng, id)).collect();
        let mut conn = connect(&infra.master_url)?;
        Item::bulk_create_and_publish(&mut conn, &rows)
            .map_err(|e| format!("bulk create of the hot rows: {e}"))?;
    }

    let shared = Shared {
        claimed: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        faults_done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        due: schedule(options.writes, options.faults)
            .into_iter()
            .map(|(at, _)| at)
            .collect(),
    };
    let done = AtomicBool::new(false);
    let writes_started = Instant::now();
    let (reports, writes_elapsed, faults, converged, quiet, created, rolled_back) =
        std::thread::scope(|scope| {
            let supervisor =
                scope.spawn(|| supervisor(&infra, &options, &shared, &done, writes_started));
            let writers: Vec<_> = (0..options.threads)
                .map(|t| {
                    let hot = hot.clone();
                    let (options, shared, url) = (&options, &shared, infra.master_url.as_str());
                    scope.spawn(move || writer_thread(t, options, url, hot, shared))
                })
                .collect();
            let reports: Vec<WriterReport> = writers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| WriterReport {
                        error: Some("a writer thread panicked".to_owned()),
                        ..WriterReport::default()
                    })
                })
                .collect();
            let writes_elapsed = writes_started.elapsed();
            let completed = shared.completed.load(Ordering::SeqCst);
            println!(
                "[{:>6.1} s] writers done: {completed} writes, {:.0} writes/s",
                writes_elapsed.as_secs_f64(),
                completed as f64 / writes_elapsed.as_secs_f64()
            );

            let mut created = HashSet::new();
            let mut rolled_back: HashMap<i64, HashSet<String>> = HashMap::new();
            for report in &reports {
                created.extend(report.created.iter().copied());
                for (id, names) in &report.rolled_back {
                    rolled_back
                        .entry(*id)
                        .or_default()
                        .extend(names.iter().cloned());
                }
            }
            created.extend(hot.iter().copied());

            // The clock runs from the end of the writes; the faults still due (the last one
            // is due at the last write) are injected first.
            let writers_ok = reports.iter().all(|r| r.error.is_none());
            let converge_start = Instant::now();
            while writers_ok
                && !interrupted()
                && shared.faults_done.load(Ordering::SeqCst) < options.faults
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            if options.faults > 0 {
                println!(
                    "[{:>6.1} s] last fault done {:.1} s after the writers finished; waiting for the replica",
                    writes_started.elapsed().as_secs_f64(),
                    converge_start.elapsed().as_secs_f64()
                );
            }
            let faults_over = converge_start.elapsed();
            let converged = if writers_ok && !interrupted() {
                converge(&infra, &options, &created, &rolled_back, converge_start)
            } else if interrupted() {
                Err("interrupted".to_owned())
            } else {
                Err("the writers failed".to_owned())
            };
            let quiet = match &converged {
                Ok((time, snapshot)) => {
                    println!(
                        "[{:>6.1} s] the replica equals the master ({:.2} s after the writers \
                         finished); watching it for {} s more",
                        writes_started.elapsed().as_secs_f64(),
                        time.as_secs_f64(),
                        options.quiet.as_secs()
                    );
                    Some(quiet_period(
                        &infra,
                        &options,
                        &created,
                        &rolled_back,
                        snapshot,
                    ))
                }
                Err(_) => None,
            };
            let converged = converged.map(|(time, _)| (time, time.saturating_sub(faults_over)));
            done.store(true, Ordering::SeqCst);
            let faults = supervisor.join().unwrap_or_default();
            (
                reports,
                writes_elapsed,
                faults,
                converged,
                quiet,
                created,
                rolled_back,
            )
        });

    // The final comparison, whatever happened.
    let tables = connect(&infra.master_url)
        .and_then(|mut m| master_rows(&mut m).map_err(|e| e.to_string()))
        .and_then(|m| {
            ReplicaConn::open(infra.backend, &infra.replica_url)
                .and_then(|mut r| r.rows().map_err(|e| e.to_string()))
                .map(|r| (m, r))
        });
    // The dead letters, read before the broker goes.
    let dead_letters = infra.dead_letters(&rt);

    // ---- the report ----
    let mut failed = Vec::new();
    println!();
    println!(
        "=== soak report (seed {}, {} replica) ===",
        options.seed,
        options.replica.name()
    );
    println!("replica backend  : {replica}");
    for report in &reports {
        if let Some(error) = &report.error {
            println!("writer error: {error}");
            failed.push("a writer failed".to_owned());
        }
    }
    let mut ops: BTreeMap<Op, u64> = BTreeMap::new();
    for report in &reports {
        for (op, n) in &report.ops {
            *ops.entry(*op).or_default() += n;
        }
    }
    let total: u64 = ops.values().sum();
    let threads = reports.len().max(1) as f64;
    let held = reports.iter().map(|r| r.held.as_secs_f64()).sum::<f64>() / threads;
    let down = reports
        .iter()
        .map(|r| r.down_time.as_secs_f64())
        .sum::<f64>()
        / threads;
    let working = (writes_elapsed.as_secs_f64() - held).max(1e-3);
    let writes_per_s = total as f64 / writes_elapsed.as_secs_f64();
    println!(
        "writes           : {total} in {:.1} s = {writes_per_s:.0} writes/s ({} threads); held \
         {held:.1} s per thread waiting for a fault to finish, {:.0} writes/s without that; \
         {down:.1} s per thread waiting for the master",
        writes_elapsed.as_secs_f64(),
        options.threads,
        total as f64 / working
    );
    println!(
        "  by kind        : {}",
        ops.iter()
            .map(|(op, n)| format!("{op:?} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let sum = |f: fn(&WriterReport) -> u64| reports.iter().map(f).sum::<u64>();
    let master_restarts = faults
        .injected
        .get(&Fault::MasterDbRestart)
        .copied()
        .unwrap_or(0);
    println!(
        "master restarts  : {master_restarts} ({}); writes that failed with the master \
         unavailable: {}, retried after a pause: {}, committed although their answer was lost \
         (found by re-reading the row): {}; own ids whose existence the re-read corrected: {}",
        match master_restarts {
            0 => "none".to_owned(),
            1 => "pg_ctl restart -m fast".to_owned(),
            n => format!(
                "pg_ctl restart -m fast {}, -m immediate {}",
                n.div_ceil(2),
                n / 2
            ),
        },
        sum(|r| r.master_down),
        sum(|r| r.retried),
        sum(|r| r.answer_lost),
        sum(|r| r.resynced),
    );
    let mut down_errors: BTreeMap<&str, u64> = BTreeMap::new();
    for report in &reports {
        for (error, n) in &report.down_errors {
            *down_errors.entry(error).or_default() += n;
        }
    }
    for (error, n) in &down_errors {
        println!("  master error   : {n} x {error:?}");
    }
    let (converge_text, converge_short) = match &converged {
        Ok((time, after_faults)) if options.faults > 0 => (
            format!(
                "{:.2} s after the writers finished ({:.2} s after the last fault was over)",
                time.as_secs_f64(),
                after_faults.as_secs_f64()
            ),
            format!(
                "{:.2} s ({:.2} s after the last fault)",
                time.as_secs_f64(),
                after_faults.as_secs_f64()
            ),
        ),
        Ok((time, _)) => (
            format!("{:.2} s after the writers finished", time.as_secs_f64()),
            format!("{:.2} s", time.as_secs_f64()),
        ),
        Err(why) => {
            failed.push(format!("did not converge: {why}"));
            (
                format!("did not converge: {why}"),
                "did not converge".to_owned(),
            )
        }
    };
    println!("time to converge : {converge_text}");
    let quiet_short = match &quiet {
        None => {
            println!("quiet period     : none (the replica never equalled the master)");
            "-".to_owned()
        }
        Some(q) => {
            let head = format!(
                "{:.1} s, {} comparisons{}",
                q.duration.as_secs_f64(),
                q.checks,
                if q.read_errors > 0 {
                    format!(" ({} reads failed)", q.read_errors)
                } else {
                    String::new()
                }
            );
            match &q.first_change {
                None if q.checks > 0 => {
                    println!("quiet period     : {head}: the replica stayed equal to the master");
                    "held".to_owned()
                }
                None => {
                    println!("quiet period     : {head}: no comparison could be made");
                    failed.push("no comparison in the quiet period".to_owned());
                    "no comparison".to_owned()
                }
                Some(change) => {
                    println!(
                        "quiet period     : FAILED ({head}); {}",
                        if q.equal_at_end {
                            "equal again at its end"
                        } else {
                            "still different at its end"
                        }
                    );
                    for line in change.lines() {
                        println!("    {line}");
                    }
                    failed.push("the replica changed after it had converged".to_owned());
                    "CHANGED".to_owned()
                }
            }
        }
    };
    let mut figures = None;
    match &tables {
        Ok(_) if interrupted() => {
            println!("comparison       : none (interrupted before the replica could converge)");
        }
        Ok((master, r)) => {
            let mut m = master.clone();
            let zeros = as_replica_holds(options.replica, &mut m);
            let m = &m;
            let c = compare(m, r, &created, &rolled_back);
            println!(
                "rows             : master {}, replica {}",
                c.master_rows, c.replica_rows
            );
            if !options.replica.keeps_negative_zero() {
                println!(
                    "-0.0 prices      : {zeros} master rows hold -0.0, compared as 0.0 ({} \
                     stores -0.0 as 0.0)",
                    options.replica.name()
                );
            }
            println!(
                "lost             : {} (missing on the replica {}, different {})",
                c.lost(),
                c.missing.len(),
                c.wrong.len()
            );
            println!("phantom          : {}", c.phantom.len());
            println!("resurrected      : {}", c.resurrected.len());
            println!("wrong            : {}", c.wrong.len());
            print_examples("missing", &c.missing, m, r);
            print_examples("wrong", &c.wrong, m, r);
            print_examples("phantom", &c.phantom, m, r);
            print_examples("resurrected", &c.resurrected, m, r);
            if !c.clean() {
                failed.push("the replica differs from the master".to_owned());
            }
            figures = Some((
                c.lost(),
                c.phantom.len(),
                c.resurrected.len(),
                c.wrong.len(),
            ));
            match self_check(m, &created, &rolled_back) {
                Ok(what) => println!("comparison check : {what}"),
                Err(error) => {
                    println!("comparison check : FAILED: {error}");
                    failed.push("the comparison's self-check failed".to_owned());
                }
            }
        }
        Err(error) => {
            println!("comparison       : impossible: {error}");
            failed.push(format!("no comparison: {error}"));
        }
    }
    let dead_short = match &dead_letters {
        Ok((depth, letters)) => {
            println!("dead letters     : {depth}");
            if *depth > 0 {
                failed.push(format!("{depth} dead letter(s)"));
                let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
                for letter in letters {
                    *reasons.entry(&letter.reason).or_default() += 1;
                }
                for (reason, n) in &reasons {
                    println!("  reason         : {n} x {reason}");
                }
                for letter in letters.iter().take(5) {
                    let body: String = letter.body.chars().take(400).collect();
                    println!(
                        "  dead letter    : routing key {}, reason {:?}, body {body}",
                        letter.routing_key, letter.reason
                    );
                }
                if letters.len() > 5 {
                    println!("    ... and {} more", letters.len() - 5);
                }
            }
            depth.to_string()
        }
        Err(error) => {
            println!("dead letters     : cannot be counted: {error}");
            failed.push("the dead letters could not be counted".to_owned());
            "?".to_owned()
        }
    };
    let injected: u32 = faults.injected.values().sum();
    if injected == 0 {
        println!("faults injected  : 0");
    } else {
        println!(
            "faults injected  : {injected} ({})",
            faults
                .injected
                .iter()
                .map(|(f, n)| format!("{f:?} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for failure in &faults.failures {
        println!("  fault failed   : {failure}");
        failed.push("a fault could not be injected".to_owned());
    }
    {
        let relay = lock(&infra.relay);
        let worker = lock(&infra.worker);
        let (rw, re) = log_levels(&relay.log);
        let (ww, we) = log_levels(&worker.log);
        println!(
            "relay processes  : {} started, {} killed, {} exited by themselves; log: {rw} WARN, {re} ERROR lines",
            relay.starts,
            relay.kills,
            relay.unexpected_exits.len()
        );
        println!(
            "worker processes : {} started, {} killed, {} exited by themselves; log: {ww} WARN, {we} ERROR lines",
            worker.starts,
            worker.kills,
            worker.unexpected_exits.len()
        );
    }
    for exit in &faults.unexpected {
        println!("  unexpected     : {exit}");
        failed.push(exit.clone());
    }
    println!("queues           : {}", infra.queue_depths());
    if interrupted() {
        failed.push("interrupted".to_owned());
    }
    println!("reproduce        : {}", options.command_line());
    let wall_time = wall.elapsed();
    println!("wall time        : {:.1} s", wall_time.as_secs_f64());
    let show = |n: Option<usize>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    println!(
        "| replica | seed | writes | lost | phantom | resurrected | wrong | dead letters | time \
         to converge | quiet {} s | faults | master restarts | writes/s | wall |",
        options.quiet.as_secs()
    );
    println!(
        "| {} | {} | {total} | {} | {} | {} | {} | {dead_short} | {converge_short} | \
         {quiet_short} | {injected} | {master_restarts} | {writes_per_s:.0} | {:.0} s |",
        options.replica.flag(),
        options.seed,
        show(figures.map(|f| f.0)),
        show(figures.map(|f| f.1)),
        show(figures.map(|f| f.2)),
        show(figures.map(|f| f.3)),
        wall_time.as_secs_f64()
    );
    drop(guard);
    if failed.is_empty() {
        println!(
            "RESULT: PASS (lost 0, phantom 0, resurrected 0, wrong 0, dead letters 0, quiet \
             period held)"
        );
        Ok(ExitCode::SUCCESS)
    } else if interrupted() {
        println!("RESULT: INTERRUPTED");
        Ok(ExitCode::from(130))
    } else {
        failed.dedup();
        println!("RESULT: FAIL ({})", failed.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

/// Reads the master (as the replica's backend holds it) and the replica, each through its
/// connection, reconnecting when one was lost.
fn read_both(
    infra: &Infra,
    master: &mut Option<PgConnection>,
    replica: &mut Option<ReplicaConn>,
) -> AnyResult<(BTreeMap<i64, Row>, BTreeMap<i64, Row>)> {
    if master.is_none() {
        *master = Some(connect(&infra.master_url)?);
    }
    let m = match master.as_mut().map(|c| master_rows_for(infra.backend, c)) {
        Some(Ok(rows)) => rows,
        Some(Err(error)) => {
            *master = None;
            return Err(format!("read the master: {error}"));
        }
        None => unreachable!(),
    };
    if replica.is_none() {
        *replica = Some(ReplicaConn::open(infra.backend, &infra.replica_url)?);
    }
    let r = match replica.as_mut().map(ReplicaConn::rows) {
        Some(Ok(rows)) => rows,
        Some(Err(error)) => {
            *replica = None;
            return Err(format!("read the replica: {error}"));
        }
        None => unreachable!(),
    };
    Ok((m, r))
}

/// Polls every 200 ms until the outbox is empty and the replica equals the master; the time it
/// took and the table then, or why it gave up.
fn converge(
    infra: &Infra,
    options: &Options,
    created: &HashSet<i64>,
    rolled_back: &HashMap<i64, HashSet<String>>,
    start: Instant,
) -> AnyResult<(Duration, BTreeMap<i64, Row>)> {
    let mut master: Option<PgConnection> = None;
    let mut outbox: Option<PgConnection> = None;
    let mut replica: Option<ReplicaConn> = None;
    let mut next_note = Duration::from_secs(10);
    loop {
        if interrupted() {
            return Err("interrupted".to_owned());
        }
        let pending = outbox_pending(&infra.master_url, &mut outbox);
        let last = match read_both(infra, &mut master, &mut replica) {
            Ok((m, r)) => {
                if pending == Some(0) && m == r {
                    return Ok((start.elapsed(), m));
                }
                let c = compare(&m, &r, created, rolled_back);
                format!(
                    "outbox {}, missing {}, wrong {}, phantom {}, resurrected {}",
                    pending.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                    c.missing.len(),
                    c.wrong.len(),
                    c.phantom.len(),
                    c.resurrected.len()
                )
            }
            Err(error) => error,
        };
        let elapsed = start.elapsed();
        if elapsed >= options.converge_timeout {
            return Err(format!(
                "gave up after {} s ({last})",
                options.converge_timeout.as_secs()
            ));
        }
        if elapsed >= next_note {
            println!(
                "  converging for {:.0} s: {last}; queues {}",
                elapsed.as_secs_f64(),
                infra.queue_depths()
            );
            next_note += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the quiet period after convergence saw.
struct Quiet {
    duration: Duration,
    checks: u32,
    read_errors: u32,
    /// The first difference seen, described.
    first_change: Option<String>,
    equal_at_end: bool,
}

/// Compares the master and the replica every 200 ms for `--quiet-secs` after the replica first
/// equalled the master (`snapshot`, the table then): neither may change any more.
fn quiet_period(
    infra: &Infra,
    options: &Options,
    created: &HashSet<i64>,
    rolled_back: &HashMap<i64, HashSet<String>>,
    snapshot: &BTreeMap<i64, Row>,
) -> Quiet {
    let start = Instant::now();
    let mut master: Option<PgConnection> = None;
    let mut outbox: Option<PgConnection> = None;
    let mut replica: Option<ReplicaConn> = None;
    let mut quiet = Quiet {
        duration: Duration::ZERO,
        checks: 0,
        read_errors: 0,
        first_change: None,
        equal_at_end: true,
    };
    while start.elapsed() < options.quiet && !interrupted() {
        std::thread::sleep(Duration::from_millis(200));
        let pending = outbox_pending(&infra.master_url, &mut outbox);
        let (m, r) = match read_both(infra, &mut master, &mut replica) {
            Ok(tables) => tables,
            Err(error) => {
                quiet.read_errors += 1;
                if quiet.read_errors <= 3 {
                    println!("  quiet period: {error}");
                }
                continue;
            }
        };
        quiet.checks += 1;
        let equal = m == r && m == *snapshot && pending.is_none_or(|n| n == 0);
        quiet.equal_at_end = equal;
        if equal || quiet.first_change.is_some() {
            continue;
        }
        let mut text = format!(
            "{:.1} s into the quiet period (comparison {}):",
            start.elapsed().as_secs_f64(),
            quiet.checks
        );
        if let Some(n) = pending.filter(|n| *n != 0) {
            text.push_str(&format!("\nthe outbox holds {n} entries again"));
        }
        if m != *snapshot {
            let changed = changed_ids(snapshot, &m);
            text.push_str(&format!(
                "\nthe master changed ({} rows): ids {:?}",
                changed.len(),
                &changed[..changed.len().min(10)]
            ));
        }
        if m != r {
            let c = compare(&m, &r, created, rolled_back);
            text.push_str(&format!(
                "\nthe replica differs from the master: missing {}, wrong {}, phantom {}, \
                 resurrected {}",
                c.missing.len(),
                c.wrong.len(),
                c.phantom.len(),
                c.resurrected.len()
            ));
        }
        let changed = changed_ids(snapshot, &r);
        text.push_str(&format!(
            "\nreplica rows changed since it converged: {}",
            changed.len()
        ));
        let show = |row: Option<&Row>| row.map_or_else(|| "(no row)".to_owned(), Row::show);
        for id in changed.iter().take(5) {
            text.push_str(&format!(
                "\n  id {id}\n    at convergence: {}\n    replica now   : {}\n    master now    : {}",
                show(snapshot.get(id)),
                show(r.get(id)),
                show(m.get(id))
            ));
        }
        println!(
            "!! the replica changed after it had converged: {}",
            text.replace('\n', "\n   ")
        );
        quiet.first_change = Some(text);
    }
    quiet.duration = start.elapsed();
    quiet
}

/// The ids whose rows differ between two tables (present in one only, or different).
fn changed_ids(before: &BTreeMap<i64, Row>, after: &BTreeMap<i64, Row>) -> Vec<i64> {
    let ids: std::collections::BTreeSet<i64> = before.keys().chain(after.keys()).copied().collect();
    ids.into_iter()
        .filter(|id| before.get(id) != after.get(id))
        .collect()
}
