//! The soak: a replica converges to its master under faults.
//!
//! `W` writes (creates, updates, deletes, re-creates, bulk updates, `atomic` blocks, rolled-back
//! transactions and rolled-back savepoints) from several threads go to a PostgreSQL master. The
//! outbox relay and the replica worker run as separate processes (this binary re-executed as
//! `soak relay ...` and `soak worker ...`), on a RabbitMQ node and a PostgreSQL cluster that the
//! soak starts for itself (so that it may restart them). On a schedule that is a function of
//! the write count, it kills the relay and the worker with SIGKILL and starts new ones, restarts
//! the broker (`stop_app` / `start_app`) and restarts the replica's PostgreSQL. When the writers
//! are done it waits until the outbox is empty and the replica equals the master, then compares
//! them row by row and prints what was lost, what is a phantom (a rolled-back or never committed
//! write), what was resurrected (a row deleted on the master but present on the replica) and the
//! time it took to converge. The exit code is 0 only when all of them are 0.
//!
//! ```text
//! cargo run --release -p cqrs-examples --bin soak -- --writes 5000
//! cargo run --release -p cqrs-examples --bin soak                       # 100,000 writes
//! cargo run --release -p cqrs-examples --bin soak -- --seed 42 --no-faults
//! ```
//!
//! Flags: `--writes W` (100000), `--threads T` (4), `--ids K` (5000), `--hot H` (8 rows every
//! thread updates concurrently), `--seed S` (random, printed), `--faults N` (10, one every W/N
//! writes), `--no-faults`, `--rollback-pct P` (10), `--broker-down-ms MS` (2000),
//! `--converge-timeout S` (300), `--pg-url URL` (the shared master server,
//! `postgres://postgres@127.0.0.1:5432/test`), `--amqp-port` (5682), `--amqp-dist-port`
//! (25682), `--replica-port` (5442), `--keep-logs` (keep the relay's and the worker's logs).
//!
//! How it works: each writer thread owns the ids `id % T == thread` (so it knows which exist and
//! never races another thread's create), and all threads update the `H` hot rows, whose updates
//! contend for the row lock. Fault `k` (from 1) is due at write `k * W / N`, rotating through
//! worker kill, broker restart, replica PostgreSQL restart (alternately `pg_ctl restart -m fast`
//! and `-m immediate`, a crash restart) and relay kill; a writer waits (and the wait is reported)
//! only when it would pass the next fault's write count while the previous fault is still being
//! injected. The truth is the master's final table; the writers keep in memory only which ids
//! were ever created (to tell a resurrection from a phantom) and the unique name of every
//! rolled-back write (to recognise a phantom). `SOAK_CHILD_LOG` sets the children's `RUST_LOG`
//! (default `info`); their logs are summarised (WARN/ERROR lines) at the end.
//!
//! What it needs: PostgreSQL 15's `initdb` and `pg_ctl` (`/usr/lib/postgresql/15/bin`, or
//! `PG_BIN`), `rabbitmq-server` and `rabbitmqctl`, run as root (the RabbitMQ node runs as the
//! `rabbitmq` user, with its Erlang cookie; the PostgreSQL cluster as `postgres`). Everything it
//! starts lives in `/tmp/cqrs_soak_<pid>` and is stopped and removed at the end, also after a
//! failure or Ctrl-C. The master database `cqrs_soak_<pid>` on the shared server is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::prelude::*;
use cqrs_diesel::diesel::{Connection, PgConnection};
use cqrs_diesel::{
    Config, ConsumerRuntime, CqrsConnection, MasterModel, OutboxRelay, RabbitMqTransport,
    ReplicaModel, Replicas, Topology, Transport,
};

// ------------------------------------------------------------------------------------------
// The model: one master table and its replica, of the same shape.
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

const ITEM_DDL: &str = "CREATE TABLE item (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
    qty BIGINT NOT NULL, price DOUBLE PRECISION NOT NULL, \
    cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)";

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

/// The replica's copy.
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

const USAGE: &str = "usage: soak [--writes W] [--threads T] [--ids K] [--hot H] [--seed S] \
    [--faults N | --no-faults] [--rollback-pct P] [--broker-down-ms MS] [--converge-timeout S] \
    [--pg-url URL] [--amqp-port P] [--amqp-dist-port P] [--replica-port P] [--keep-logs]\n\
    roles (started by the soak itself): soak relay --master-url U --amqp-url A \
    [--poll-ms MS]; soak worker --replica-url U --amqp-url A --queue Q";

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

/// `soak worker`: the replica worker, until SIGTERM/SIGINT (or SIGKILL).
fn worker_main(args: &[String]) -> AnyResult<ExitCode> {
    cqrs_examples::init_tracing("info");
    let flags = flags(args)?;
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
        let transport = RabbitMqTransport::new(config.clone());
        let replicas =
            Replicas::new(move || PgConnection::establish(&replica_url)).register::<ItemReplica>();
        ConsumerRuntime::new(transport, config, replicas)
            .run_until(cqrs_diesel::shutdown_signal())
            .await
    });
    match result {
        Ok(stats) => {
            eprintln!("worker stopped: {stats:?}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Err(format!("the consumer runtime failed: {error}")),
    }
}

// ------------------------------------------------------------------------------------------
// Options.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    writes: u64,
    threads: usize,
    ids: i64,
    hot: i64,
    seed: u64,
    faults: u64,
    rollback_pct: u32,
    broker_down: Duration,
    converge_timeout: Duration,
    pg_url: String,
    amqp_port: u16,
    amqp_dist_port: u16,
    replica_port: u16,
    keep_logs: bool,
}

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Options {
    fn parse(args: &[String]) -> AnyResult<Options> {
        let mut o = Options {
            writes: 100_000,
            threads: 4,
            ids: 5000,
            hot: 8,
            seed: random_seed(),
            faults: 10,
            rollback_pct: 10,
            broker_down: Duration::from_millis(2000),
            converge_timeout: Duration::from_secs(300),
            pg_url: DEFAULT_PG_URL.to_owned(),
            amqp_port: 5682,
            amqp_dist_port: 25682,
            replica_port: 5442,
            keep_logs: false,
        };
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
                "--pg-url" => o.pg_url = value()?,
                "--amqp-port" => o.amqp_port = num(flag, value()?)?,
                "--amqp-dist-port" => o.amqp_dist_port = num(flag, value()?)?,
                "--replica-port" => o.replica_port = num(flag, value()?)?,
                "--keep-logs" => o.keep_logs = true,
                other => return Err(format!("unknown flag `{other}`")),
            }
        }
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
            "cargo run --release -p cqrs-examples --bin soak -- --writes {} --seed {}",
            self.writes, self.seed
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
        if self.pg_url != DEFAULT_PG_URL {
            add(format!("--pg-url {}", self.pg_url));
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
// Infrastructure: the soak's own RabbitMQ node and PostgreSQL cluster, the master database,
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

struct Infra {
    dir: PathBuf,
    logs: PathBuf,
    pg_bin: PathBuf,
    keep_logs: bool,
    amqp_port: u16,
    amqp_dist_port: u16,
    replica_port: u16,
    admin_url: String,
    master_db: String,
    master_url: String,
    replica_url: String,
    amqp_url: String,
    rabbit_started: AtomicBool,
    pg_started: AtomicBool,
    master_created: AtomicBool,
    torn_down: AtomicBool,
    relay: Mutex<Proc>,
    worker: Mutex<Proc>,
}

impl Infra {
    fn new(options: &Options) -> AnyResult<Infra> {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/cqrs_soak_{pid}"));
        let logs = dir.join("logs");
        let pg_bin = std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        let master_db = format!("cqrs_soak_{pid}");
        let master_url = replace_database(&options.pg_url, &master_db)?;
        let replica_url = format!(
            "postgres://postgres@127.0.0.1:{}/cqrs_soak_replica",
            options.replica_port
        );
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
            pg_bin,
            keep_logs: options.keep_logs,
            amqp_port: options.amqp_port,
            amqp_dist_port: options.amqp_dist_port,
            replica_port: options.replica_port,
            admin_url: options.pg_url.clone(),
            master_db,
            master_url,
            replica_url,
            amqp_url,
            rabbit_started: AtomicBool::new(false),
            pg_started: AtomicBool::new(false),
            master_created: AtomicBool::new(false),
            torn_down: AtomicBool::new(false),
            relay: Mutex::new(relay),
            worker: Mutex::new(worker),
        })
    }

    fn rabbit_dir(&self) -> PathBuf {
        self.dir.join("rabbit")
    }

    fn pg_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }

    fn pg_data(&self) -> PathBuf {
        self.pg_dir().join("data")
    }

    fn rabbit_pid_file(&self) -> PathBuf {
        self.rabbit_dir()
            .join("mnesia")
            .join(format!("{RABBIT_NODE}.pid"))
    }

    fn check_ports(&self) -> AnyResult<()> {
        for port in [self.amqp_port, self.amqp_dist_port, self.replica_port] {
            if !port_is_free(port) {
                return Err(format!(
                    "port {port} on 127.0.0.1 is in use (another soak still running? \
                     `ps aux | grep -E 'cqrs_soak|5442|5682'`); choose others with \
                     --amqp-port, --amqp-dist-port, --replica-port"
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
        fs::create_dir_all(self.pg_dir()).map_err(|e| e.to_string())?;
        run(
            Command::new("chown")
                .arg("-R")
                .arg("rabbitmq:rabbitmq")
                .arg(&rabbit),
            "chown the RabbitMQ directory",
        )?;
        run(
            Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(self.pg_dir()),
            "chown the PostgreSQL directory",
        )?;
        // The users of the two services must reach their directories.
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

    fn pg_ctl(&self) -> Command {
        let mut command = Command::new("runuser");
        command
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(self.pg_bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.pg_data())
            .arg("-l")
            .arg(self.pg_dir().join("postgres.log"))
            .current_dir("/tmp");
        command
    }

    fn start_replica_pg(&self) -> AnyResult<()> {
        run(
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(self.pg_bin.join("initdb"))
                .arg("-D")
                .arg(self.pg_data())
                .arg("-A")
                .arg("trust")
                .arg("-U")
                .arg("postgres")
                .current_dir("/tmp"),
            "initdb",
        )?;
        self.pg_started.store(true, Ordering::SeqCst);
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.replica_port,
            self.pg_dir().display()
        );
        run(
            self.pg_ctl().arg("-o").arg(options).arg("-w").arg("start"),
            "pg_ctl start",
        )?;
        Ok(())
    }

    fn restart_replica_pg(&self, mode: &str) -> AnyResult<()> {
        run(
            self.pg_ctl().arg("-w").arg("-m").arg(mode).arg("restart"),
            "pg_ctl restart",
        )
        .map(|_| ())
    }

    fn create_databases(&self) -> AnyResult<()> {
        let mut admin = PgConnection::establish(&self.admin_url)
            .map_err(|e| format!("the master server {}: {e}", self.admin_url))?;
        self.master_created.store(true, Ordering::SeqCst);
        admin
            .batch_execute(&format!("CREATE DATABASE {}", self.master_db))
            .map_err(|e| format!("CREATE DATABASE {}: {e}", self.master_db))?;
        let mut master = connect(&self.master_url)?;
        master
            .batch_execute(ITEM_DDL)
            .map_err(|e| format!("master DDL: {e}"))?;
        master
            .run_outbox_migrations()
            .map_err(|e| format!("outbox migrations: {e}"))?;

        let replica_admin_url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.replica_port
        );
        let mut replica_admin = connect(&replica_admin_url)?;
        replica_admin
            .batch_execute("CREATE DATABASE cqrs_soak_replica")
            .map_err(|e| format!("CREATE DATABASE cqrs_soak_replica: {e}"))?;
        let mut replica = connect(&self.replica_url)?;
        replica
            .batch_execute(ITEM_DDL)
            .map_err(|e| format!("replica DDL: {e}"))?;
        replica
            .run_replica_migrations()
            .map_err(|e| format!("replica migrations: {e}"))?;
        Ok(())
    }

    /// Declares the exchange, the replica's queue and its bindings before anything is
    /// written: otherwise the relay's first messages would be unroutable (and dropped, as no
    /// replica wanted them).
    fn declare_topology(&self, rt: &tokio::runtime::Runtime) -> AnyResult<()> {
        let config = Config::builder()
            .amqp_url(&self.amqp_url)
            .exchange(EXCHANGE)
            .queue(QUEUE)
            .build()
            .map_err(|e| e.to_string())?;
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

    fn dead_letters(&self) -> Option<u64> {
        let text = self
            .rabbitmqctl(&["list_queues", "-q", "name", "messages"], "list_queues")
            .ok()?;
        text.lines().find_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            (name == format!("dead_letter_{QUEUE}"))
                .then(|| parts.next()?.parse().ok())
                .flatten()
        })
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
        if self.pg_started.load(Ordering::SeqCst) {
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
                    &self.pg_data().join("postmaster.pid"),
                    "the replica PostgreSQL",
                );
            }
        }
        if self.master_created.load(Ordering::SeqCst) {
            let dropped = PgConnection::establish(&self.admin_url)
                .map_err(|e| e.to_string())
                .and_then(|mut admin| {
                    admin
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                            self.master_db
                        ))
                        .map_err(|e| e.to_string())
                });
            if let Err(error) = dropped {
                eprintln!(
                    "warning: cannot drop the master database {}: {error}",
                    self.master_db
                );
            }
        }
        if self.keep_logs {
            let _ = fs::remove_dir_all(self.rabbit_dir());
            let _ = fs::remove_dir_all(self.pg_dir());
            println!("logs kept in {}", self.logs.display());
        } else if let Err(error) = fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {error}", self.dir.display());
        }
    }
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

fn replace_database(url: &str, database: &str) -> AnyResult<String> {
    let (base, _) = url
        .rsplit_once('/')
        .filter(|(base, _)| base.contains("://") && !base.ends_with('/'))
        .ok_or_else(|| format!("`{url}` is not a postgres://host/database URL"))?;
    Ok(format!("{base}/{database}"))
}

fn connect(url: &str) -> AnyResult<PgConnection> {
    PgConnection::establish(url).map_err(|e| format!("connect to {url}: {e}"))
}

/// Tears the infrastructure down when dropped: at the end, on an error, on a panic.
struct Teardown(Arc<Infra>);

impl Drop for Teardown {
    fn drop(&mut self) {
        println!(
            "cleaning up (children, RabbitMQ node, replica PostgreSQL, master database, temp dir)"
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
    error: Option<String>,
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
    conn: PgConnection,
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
            0..=54 => {
                random_item(&mut self.rng, id).save_and_publish(&mut self.conn)?;
                self.count(Op::Update);
            }
            55..=74 => {
                let first = random_item(&mut self.rng, id);
                let second = random_item(&mut self.rng, id);
                cqrs_diesel::atomic(&mut self.conn, |c| -> Result<(), TxError> {
                    first.save_and_publish(c)?;
                    second.save_and_publish(c)?;
                    Ok(())
                })?;
                self.count(Op::AtomicDoubleUpdate);
            }
            _ => {
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

    /// The hot rows: every thread updates them, so their updates contend for the row lock.
    fn hot_op(&mut self) -> Result<(), TxError> {
        let id = self.hot[self.rng.usize(..self.hot.len())];
        match self.rng.u32(..100) {
            0..=69 => {
                random_item(&mut self.rng, id).save_and_publish(&mut self.conn)?;
                self.count(Op::HotUpdate);
            }
            70..=84 => {
                let first = random_item(&mut self.rng, id);
                let second = random_item(&mut self.rng, id);
                cqrs_diesel::atomic(&mut self.conn, |c| -> Result<(), TxError> {
                    first.save_and_publish(c)?;
                    second.save_and_publish(c)?;
                    Ok(())
                })?;
                self.count(Op::HotAtomicUpdate);
            }
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
        conn,
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
        if let Err(error) = writer.one() {
            writer.report.error = Some(format!("writer {thread}, write #{n}: {error}"));
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
}

/// The order of the faults: each is followed by one that does not mend what it broke (after
/// the replica's PostgreSQL restarts, the worker keeps its broken connection and must reopen
/// it by itself). With the default 10 faults the last one, at the last write, is a broker
/// restart.
const ROTATION: [Fault; 4] = [
    Fault::KillWorker,
    Fault::BrokerRestart,
    Fault::ReplicaDbRestart,
    Fault::KillRelay,
];

/// The `k`-th fault (from 0) is injected once `(k + 1) * W / N` writes have been claimed.
fn schedule(writes: u64, faults: u64) -> Vec<(u64, Fault)> {
    (0..faults)
        .map(|k| {
            let at = (writes * (k + 1) / faults).max(1);
            (at, ROTATION[(k % 4) as usize])
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
        Fault::ReplicaDbRestart => {
            // Alternately a clean restart and a crash restart (WAL recovery).
            let mode = if nth % 2 == 1 { "fast" } else { "immediate" };
            infra.restart_replica_pg(mode)?;
            format!("replica PostgreSQL restart (pg_ctl restart -m {mode})")
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
    let mut master = connect(&infra.master_url).ok();
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
            master
                .as_mut()
                .and_then(|c| c.outbox_pending().ok())
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
                Row {
                    name: r.name,
                    qty: r.qty,
                    price_bits: r.price.to_bits(),
                    revision: r.cqrs_revision,
                    updated: r.cqrs_updated,
                },
            )
        })
        .collect())
}

fn replica_rows(conn: &mut PgConnection) -> QueryResult<BTreeMap<i64, Row>> {
    use replica_schema::item::dsl;
    let rows: Vec<ItemReplica> = dsl::item.order(dsl::id).load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.id,
                Row {
                    name: r.name,
                    qty: r.qty,
                    price_bits: r.price.to_bits(),
                    revision: r.cqrs_revision,
                    updated: r.cqrs_updated,
                },
            )
        })
        .collect())
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
        "soak: {} writes from {} threads over {} ids (+{} hot ids), seed {}, {} faults",
        options.writes, options.threads, options.ids, options.hot, options.seed, options.faults
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
    infra.start_replica_pg()?;
    println!(
        "replica PostgreSQL on 127.0.0.1:{} is up ({})",
        options.replica_port,
        infra.pg_data().display()
    );
    infra.create_databases()?;
    infra.declare_topology(&rt)?;
    lock(&infra.worker).start()?;
    lock(&infra.relay).start()?;
    println!(
        "master database {} on the shared server; relay and worker started ({:.1} s of setup)",
        infra.master_db,
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
    let (reports, writes_elapsed, faults, converged, created, rolled_back) = std::thread::scope(
        |scope| {
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
                    .map(|time| (time, time.saturating_sub(faults_over)))
            } else if interrupted() {
                Err("interrupted".to_owned())
            } else {
                Err("the writers failed".to_owned())
            };
            done.store(true, Ordering::SeqCst);
            let faults = supervisor.join().unwrap_or_default();
            (
                reports,
                writes_elapsed,
                faults,
                converged,
                created,
                rolled_back,
            )
        },
    );

    // The final comparison, whatever happened.
    let tables = connect(&infra.master_url)
        .and_then(|mut m| master_rows(&mut m).map_err(|e| e.to_string()))
        .and_then(|m| {
            connect(&infra.replica_url)
                .and_then(|mut r| replica_rows(&mut r).map_err(|e| e.to_string()))
                .map(|r| (m, r))
        });

    // ---- the report ----
    let mut failed = Vec::new();
    println!();
    println!("=== soak report (seed {}) ===", options.seed);
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
    let held =
        reports.iter().map(|r| r.held.as_secs_f64()).sum::<f64>() / reports.len().max(1) as f64;
    let working = (writes_elapsed.as_secs_f64() - held).max(1e-3);
    println!(
        "writes           : {total} in {:.1} s = {:.0} writes/s ({} threads); held {:.1} s per \
         thread waiting for a fault to finish, {:.0} writes/s without that",
        writes_elapsed.as_secs_f64(),
        total as f64 / writes_elapsed.as_secs_f64(),
        options.threads,
        held,
        total as f64 / working
    );
    println!(
        "  by kind        : {}",
        ops.iter()
            .map(|(op, n)| format!("{op:?} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &converged {
        Ok((time, after_faults)) if options.faults > 0 => println!(
            "time to converge : {:.2} s after the writers finished ({:.2} s after the last fault \
             was over)",
            time.as_secs_f64(),
            after_faults.as_secs_f64()
        ),
        Ok((time, _)) => println!(
            "time to converge : {:.2} s after the writers finished",
            time.as_secs_f64()
        ),
        Err(why) => {
            println!("time to converge : did not converge: {why}");
            failed.push(format!("did not converge: {why}"));
        }
    }
    match &tables {
        Ok(_) if interrupted() => {
            println!("comparison       : none (interrupted before the replica could converge)");
        }
        Ok((m, r)) => {
            let c = compare(m, r, &created, &rolled_back);
            println!(
                "rows             : master {}, replica {}",
                c.master_rows, c.replica_rows
            );
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
    if let Some(n) = infra.dead_letters()
        && n > 0
    {
        println!("dead letters     : {n} (see the worker's log)");
    }
    if interrupted() {
        failed.push("interrupted".to_owned());
    }
    println!("reproduce        : {}", options.command_line());
    println!("wall time        : {:.1} s", wall.elapsed().as_secs_f64());
    drop(guard);
    if failed.is_empty() {
        println!("RESULT: PASS (lost 0, phantom 0, resurrected 0, wrong 0)");
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

/// Polls every 200 ms until the outbox is empty and the replica equals the master; the time it
/// took, or why it gave up.
fn converge(
    infra: &Infra,
    options: &Options,
    created: &HashSet<i64>,
    rolled_back: &HashMap<i64, HashSet<String>>,
    start: Instant,
) -> AnyResult<Duration> {
    let mut master = connect(&infra.master_url)?;
    let mut replica: Option<PgConnection> = None;
    let mut last = String::new();
    let mut next_note = Duration::from_secs(10);
    loop {
        if interrupted() {
            return Err("interrupted".to_owned());
        }
        let pending = master
            .outbox_pending()
            .map_err(|e| format!("count the outbox: {e}"))?;
        let m = master_rows(&mut master).map_err(|e| format!("read the master: {e}"))?;
        if replica.is_none() {
            replica = PgConnection::establish(&infra.replica_url).ok();
        }
        let r = match replica.as_mut().map(replica_rows) {
            Some(Ok(rows)) => Some(rows),
            Some(Err(_)) => {
                replica = None;
                None
            }
            None => None,
        };
        if let Some(r) = r {
            if pending == 0 && m == r {
                return Ok(start.elapsed());
            }
            let c = compare(&m, &r, created, rolled_back);
            last = format!(
                "outbox {pending}, missing {}, wrong {}, phantom {}, resurrected {}",
                c.missing.len(),
                c.wrong.len(),
                c.phantom.len(),
                c.resurrected.len()
            );
        }
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
