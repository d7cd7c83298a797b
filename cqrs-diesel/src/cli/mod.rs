//! Operator commands, the Rust form of django-cqrs's management commands: a [clap] command
//! tree a service mounts in its own binary with its registered models.
//!
//! ```no_run
//! # use cqrs_diesel::{MasterModel, ReplicaModel};
//! # diesel::table! { account (id) { id -> BigInt, name -> Text, cqrs_revision -> Integer, cqrs_updated -> Timestamptz, } }
//! # diesel::table! { customer_ref (id) { id -> BigInt, name -> Text, cqrs_revision -> Integer, cqrs_updated -> Timestamptz, } }
//! # #[derive(Debug, Clone, MasterModel)]
//! # #[cqrs(id = "account", table = account, backends(postgres))]
//! # struct Account { id: i64, name: String, cqrs_revision: i32, cqrs_updated: chrono::DateTime<chrono::Utc> }
//! # #[derive(Debug, Clone, ReplicaModel)]
//! # #[cqrs(id = "customer", table = customer_ref, backends(postgres))]
//! # struct CustomerRef { id: i64, name: String, cqrs_revision: i32, cqrs_updated: chrono::DateTime<chrono::Utc> }
//! use std::process::ExitCode;
//!
//! use cqrs_diesel::cli::{Cli, clap};
//! use cqrs_diesel::diesel::{Connection, PgConnection};
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     let config = match cqrs_diesel::Config::from_env() {
//!         Ok(config) => config,
//!         Err(error) => {
//!             eprintln!("error: {error}");
//!             return ExitCode::from(2);
//!         }
//!     };
//!     let url = std::env::var("DATABASE_URL").unwrap_or_default();
//!     let cli = Cli::new(config, move || PgConnection::establish(&url))
//!         .master::<Account>()
//!         .replica::<CustomerRef>();
//!
//!     // The service's own command line, with the operator commands under `cqrs`:
//!     // `accounts cqrs sync --cqrs-id account --pk 1,2`, `accounts cqrs dead-letters dump`, ...
//!     let matches = clap::Command::new("accounts")
//!         .subcommand(clap::Command::new("serve").about("Serve HTTP"))
//!         .subcommand(cqrs_diesel::cli::command())
//!         .get_matches();
//!     match matches.subcommand() {
//!         Some(("cqrs", matches)) => cli.run_matches(matches).await,
//!         _ => ExitCode::SUCCESS, // serve ...
//!     }
//!     // Or, for a binary that is only the operator tool: `cqrs_diesel::cli::run(cli).await`.
//! }
//! ```
//!
//! # Commands
//!
//! | command | side | what it does |
//! | --- | --- | --- |
//! | `sync --cqrs-id X (FILTER... \| --all) [--queue Q] [--batch N]` | master | publishes a SYNC of each selected row, to `<cqrs_id>` (every replica) or `cqrs.<Q>.<cqrs_id>` |
//! | `bulk-dump --cqrs-id X [FILTER...] [-o FILE\|-] [--force] [--batch N]` | master | writes the rows to a dump file (default `<cqrs_id>.dump`) |
//! | `bulk-load -i FILE\|- [--clear] [--batch N]` | replica | writes a dump's records, as SYNCs would, one transaction per batch |
//! | `diff-master --cqrs-id X [FILTER...] [-o FILE] [--batch N]` | master | diff step 1 |
//! | `diff-replica [-i FILE] [-o FILE]` | replica | diff step 2 |
//! | `diff-sync [-i FILE] [--batch N]` | master | diff step 3: SYNCs what differs to the replica's queue |
//! | `deleted-diff-replica --cqrs-id X [-o FILE] [--batch N]` | replica | deleted rows, step 1 |
//! | `deleted-diff-master [-i FILE] [-o FILE]` | master | step 2: keys the master no longer has |
//! | `deleted-sync-replica [-i FILE]` | replica | step 3: deletes those replica rows |
//! | `dead-letters dump [-o FILE] [--bodies]`, `dead-letters retry`, `dead-letters purge` | replica | the dead-letter queue |
//! | `consume` | replica | the replica consumer, until SIGTERM/SIGINT |
//! | `relay [--drain]` | master | the outbox relay, until SIGTERM/SIGINT (or until the outbox is empty) |
//!
//! `FILTER` is any of `--pk 1,2,3`, `--pk-from A`, `--pk-to B`, `--since TIME`,
//! `--where "SQL"`, and `--filter '{"id__in": [1, 2]}'` (django-cqrs kwargs: `pk`/`id`,
//! `__in`, `__gte`, `__lte`, `cqrs_updated__gte`); all given must hold. Each command also
//! answers to django-cqrs's name (`cqrs_sync`, `cqrs_bulk_dump`, ...). Input `-i -` is
//! standard input and output `-o -` standard output, so the diffs run as pipes:
//!
//! ```text
//! master diff-master -c author | replica diff-replica | master diff-sync
//! replica deleted-diff-replica -c author | master deleted-diff-master | replica deleted-sync-replica
//! ```
//!
//! # File formats (django-cqrs's, so files can be exchanged with Django services)
//!
//! - **Bulk dump**: first line the `cqrs_id`, then one `instance_data` JSON object per line.
//! - **diff-master**: first line `<cqrs_id>,<time>` (the time as Python's `str()` of an aware
//!   datetime, `2026-11-28 18:21:11.123456+00:00`; readers ignore it), then one JSON array of
//!   `[pk, cqrs_revision]` pairs per batch. Rows the model does not publish
//!   (`is_sync_instance`) are left out, as in django-cqrs.
//! - **diff-replica**: first line `<the master's first line>,<queue>` (`None` when the
//!   service has no queue: diff-sync then broadcasts), then JSON arrays of the primary keys
//!   whose revision differs or that the replica lacks.
//! - **deleted-diff-replica**: first line `<cqrs_id>,<time>`, then JSON arrays of the
//!   replica's primary keys; **deleted-diff-master** repeats the first line, then JSON arrays of
//!   the keys the master does not have.
//! - **dead-letters dump**: one JSON object per dead letter:
//!   `{"routing_key": ..., "reason": ..., "dead_lettered_at": ..., "original_routing_key": ..., "body": ...}`
//!   where `body` is the message body as JSON, or as a string when it is not JSON, and the
//!   others come from the message and its `x-cqrs-dead-letter-*` headers (null when absent).
//!   `--bodies` prints only the bodies, one per line, as django-cqrs does.
//!
//! # Behaviour
//!
//! Data goes to standard output or `-o FILE`; messages, the summary and a progress bar (rate
//! and ETA, only when standard error is a terminal) go to standard error. A file is written
//! under a temporary name beside the target and renamed at the end: a failed command leaves
//! no half-written file. `bulk-load` reports each refused record as `line N: reason`, loads
//! the others, and exits with 1 when any was refused. Errors are one line `error: ...`; the
//! exit code is 2 for bad usage or input (unknown `cqrs_id`, malformed filter, unreadable or
//! malformed file), 1 for runtime failures (database, broker), 0 on success.

mod args;
mod dead_letters;
mod error;
mod io;
mod publish;
mod rows;
mod services;

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use diesel::result::ConnectionError;

pub use clap;
pub use error::CliError;

use crate::connection::CqrsConnection;
use crate::ops::{MasterOps, Operations, ReplicaOps};
use crate::replica::{CustomReplica, ReplicaStore, Replicas};
use crate::{Config, MasterConfig, MasterStore};
use args::{CliArgs, Command, DeadLetters};

pub(crate) type Connect<C> = Arc<dyn Fn() -> Result<C, ConnectionError> + Send + Sync>;
type Register<C> = Arc<dyn Fn(Replicas<C>) -> Replicas<C> + Send + Sync>;
type Shutdown = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The operator commands of one service: its configuration, its database and its models.
///
/// Build it with [`Cli::new`] and the models, then run it with [`run`] (a binary that is only
/// the tool), or mount [`command`] in the service's own clap command and call
/// [`Cli::run_matches`]. See the [module documentation](self) for the commands and formats.
pub struct Cli<C: CqrsConnection> {
    config: Config,
    /// `None` for a service without a database ([`Cli::without_database`]).
    connect: Option<Connect<C>>,
    ops: Operations<C>,
    consumers: Vec<Register<C>>,
    consumer_ids: Vec<&'static str>,
    shutdown: Shutdown,
}

impl<C: CqrsConnection> Clone for Cli<C> {
    fn clone(&self) -> Self {
        Cli {
            config: self.config.clone(),
            connect: self.connect.clone(),
            ops: self.ops.clone(),
            consumers: self.consumers.clone(),
            consumer_ids: self.consumer_ids.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<C: CqrsConnection> std::fmt::Debug for Cli<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("backend", &C::BACKEND)
            .field("masters", &self.ops.master_ids())
            .field("replicas", &self.consumer_ids)
            .finish_non_exhaustive()
    }
}

/// What a command did, as its summary line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Rows, records, keys or messages read.
    pub processed: u64,
    /// Records or keys written, messages published, rows loaded or deleted.
    pub written: u64,
    /// Rows left out (not published by the model, not found).
    pub skipped: u64,
    /// The summary printed on standard error.
    pub summary: String,
}

impl<C: CqrsConnection> Cli<C> {
    /// The commands for this configuration (broker, queue names, TTLs) and database: `connect`
    /// opens a connection (commands use one at a time).
    pub fn new(
        config: Config,
        connect: impl Fn() -> Result<C, ConnectionError> + Send + Sync + 'static,
    ) -> Self {
        Cli {
            ops: Operations::new().with_master_config(MasterConfig::from_config(&config)),
            config,
            connect: Some(Arc::new(connect)),
            consumers: Vec::new(),
            consumer_ids: Vec::new(),
            shutdown: Arc::new(|| Box::pin(crate::shutdown_signal())),
        }
    }

    /// The commands of a service without a database, whose replicas are all custom handlers
    /// ([`Cli::custom_replica`]): `consume` and `dead-letters` work; the row commands and
    /// `relay` report that there is no database.
    pub fn without_database(config: Config) -> Self {
        Cli {
            ops: Operations::new().with_master_config(MasterConfig::from_config(&config)),
            config,
            connect: None,
            consumers: Vec::new(),
            consumer_ids: Vec::new(),
            shutdown: Arc::new(|| Box::pin(crate::shutdown_signal())),
        }
    }

    /// Builds the SYNC messages of `sync` and `diff-sync` and the `bulk-dump` records with
    /// `master` instead of the default, [`MasterConfig::from_config`] of the configuration:
    /// pass the service's own configuration, so that its meta and correlation functions
    /// ([`MasterConfig::with_meta_function`]) apply to the operator commands' messages too.
    /// Applies to every master model, added before or after.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # fn demo(config: cqrs_diesel::Config) {
    /// use cqrs_diesel::{MasterConfig, cli::Cli};
    /// use diesel::{Connection, PgConnection};
    ///
    /// let master = MasterConfig::from_config(&config)
    ///     .with_correlation_function(|message| Some(format!("sync:{}", message.instance_pk)));
    /// let cli = Cli::new(config, || PgConnection::establish("postgres://postgres@127.0.0.1/test"))
    ///     .with_master_config(master);
    /// # let _ = cli;
    /// # }
    /// ```
    pub fn with_master_config(mut self, master: MasterConfig) -> Self {
        self.ops = self.ops.with_master_config(master);
        self
    }

    /// Adds a master model: `sync`, `bulk-dump`, `diff-master`, `diff-sync` and
    /// `deleted-diff-master` serve it.
    pub fn master<M: MasterStore<C>>(mut self) -> Self {
        self.ops = self.ops.master::<M>();
        self
    }

    /// Adds a replica model: `bulk-load`, `diff-replica`, `deleted-diff-replica` and
    /// `deleted-sync-replica` serve it, and `consume` applies its messages.
    pub fn replica<M: ReplicaStore<C>>(mut self) -> Self {
        self.ops = self.ops.replica::<M>();
        self.consumers
            .push(Arc::new(|replicas: Replicas<C>| replicas.register::<M>()));
        self.consumer_ids.push(M::CQRS_ID);
        self
    }

    /// Adds a replica model with custom handlers: only `consume` serves it (the row commands
    /// need a table).
    pub fn custom_replica<M: CustomReplica>(mut self) -> Self {
        self.consumers.push(Arc::new(|replicas: Replicas<C>| {
            replicas.register_custom::<M>()
        }));
        self.consumer_ids.push(M::CQRS_ID);
        self
    }

    /// Ends `consume` and `relay` when `signal` resolves, instead of on SIGTERM or SIGINT
    /// (for tests, or a service with its own shutdown).
    pub fn shutdown_on<F, Fut>(mut self, signal: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Arc::new(move || Box::pin(signal()));
        self
    }

    /// The command tree (the same as the free function [`command`]).
    pub fn command() -> clap::Command {
        command()
    }

    /// Runs the command of `matches` (of [`command`], mounted anywhere in the service's own
    /// command line), prints its errors and returns the exit code.
    pub async fn run_matches(&self, matches: &clap::ArgMatches) -> ExitCode {
        exit(self.try_run_matches(matches).await)
    }

    /// Parses `args` (`argv[0]` first), runs the command, prints its errors and returns the
    /// exit code.
    pub async fn run_from<I, T>(&self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        exit(self.try_run_from(args).await)
    }

    /// Like [`run_from`](Cli::run_from), without printing the error: for tests and callers
    /// with their own reporting. Summaries and per-record reports are still printed on
    /// standard error.
    pub async fn try_run_from<I, T>(&self, args: I) -> Result<Report, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args::django_spellings(args))?;
        self.try_run_matches(&matches).await
    }

    /// Like [`run_matches`](Cli::run_matches), without printing the error.
    pub async fn try_run_matches(&self, matches: &clap::ArgMatches) -> Result<Report, CliError> {
        let args = CliArgs::from_arg_matches(matches)?;
        let report = match args.command {
            Command::Sync(args) => publish::sync(self, args).await?,
            Command::BulkDump(args) => rows::bulk_dump(self, args).await?,
            Command::BulkLoad(args) => rows::bulk_load(self, args).await?,
            Command::DiffMaster(args) => rows::diff_master(self, args).await?,
            Command::DiffReplica(args) => rows::diff_replica(self, args).await?,
            Command::DiffSync(args) => publish::diff_sync(self, args).await?,
            Command::DeletedDiffReplica(args) => rows::deleted_diff_replica(self, args).await?,
            Command::DeletedDiffMaster(args) => rows::deleted_diff_master(self, args).await?,
            Command::DeletedSyncReplica(args) => rows::deleted_sync_replica(self, args).await?,
            Command::DeadLetters(DeadLetters::Dump(args)) => dead_letters::dump(self, args).await?,
            Command::DeadLetters(DeadLetters::Retry) => dead_letters::retry(self).await?,
            Command::DeadLetters(DeadLetters::Purge) => dead_letters::purge(self).await?,
            Command::Consume => {
                services::consume(
                    self,
                    args::consume_workers(matches),
                    args::consume_cqrs_ids(matches),
                )
                .await?
            }
            Command::Relay(args) => services::relay(self, args).await?,
        };
        io::stderr_line(&report.summary);
        Ok(report)
    }

    /// A database connection (an error that says so for a service without a database).
    pub(crate) fn connect(&self) -> Connect<C> {
        match &self.connect {
            Some(connect) => {
                let connect = connect.clone();
                Arc::new(move || {
                    let mut conn = connect()?;
                    conn.prepare_session()
                        .map_err(ConnectionError::CouldntSetupConfiguration)?;
                    Ok(conn)
                })
            }
            None => Arc::new(|| {
                Err(ConnectionError::BadConnection(
                    "this service has no database (Cli::without_database): only `consume` \
                     (custom replicas) and `dead-letters` work"
                        .to_owned(),
                ))
            }),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn operations(&self) -> Operations<C> {
        self.ops.clone()
    }

    /// The master model `cqrs_id`, or the error listing the registered ones.
    pub(crate) fn check_master(&self, cqrs_id: &str) -> Result<(), CliError> {
        master_of(&self.ops, cqrs_id).map(|_| ())
    }

    /// The replica model `cqrs_id`, or the error listing the registered ones.
    pub(crate) fn check_replica(&self, cqrs_id: &str) -> Result<(), CliError> {
        replica_of(&self.ops, cqrs_id).map(|_| ())
    }

    /// The registry `consume` runs.
    pub(crate) fn replicas(&self) -> Option<Replicas<C>> {
        if self.consumers.is_empty() {
            return None;
        }
        let replicas = match self.connect.clone() {
            Some(connect) => Replicas::new(move || connect()),
            None => Replicas::without_database(),
        };
        Some(self.consumers.iter().fold(replicas, |r, add| add(r)))
    }

    /// Every replica `cqrs_id` (table and custom models).
    pub(crate) fn replica_ids(&self) -> &[&'static str] {
        &self.consumer_ids
    }

    pub(crate) fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (self.shutdown)()
    }
}

/// The master model `cqrs_id` of `ops`, or the error listing the registered ones.
pub(crate) fn master_of<'a, C: CqrsConnection>(
    ops: &'a Operations<C>,
    cqrs_id: &str,
) -> Result<&'a dyn MasterOps<C>, CliError> {
    ops.master_ops(cqrs_id)
        .ok_or_else(|| CliError::UnknownCqrsId {
            side: "master",
            cqrs_id: cqrs_id.to_owned(),
            known: ops.master_ids(),
        })
}

/// The replica model `cqrs_id` of `ops`, or the error listing the registered ones.
pub(crate) fn replica_of<'a, C: CqrsConnection>(
    ops: &'a Operations<C>,
    cqrs_id: &str,
) -> Result<&'a dyn ReplicaOps<C>, CliError> {
    ops.replica_ops(cqrs_id)
        .ok_or_else(|| CliError::UnknownCqrsId {
            side: "replica",
            cqrs_id: cqrs_id.to_owned(),
            known: ops.replica_ids(),
        })
}

/// Runs `f` on a blocking thread (database and file work).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, CliError>
where
    F: FnOnce() -> Result<T, CliError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(error) => Err(CliError::Runtime(crate::Error::Task(format!(
            "an operator command task did not finish: {error}"
        )))),
    }
}

/// The operator command tree, named `cqrs`: mount it in the service's own command line
/// (`.subcommand(cqrs_diesel::cli::command())`, renamed with `.name(...)` if wanted) and pass
/// its matches to [`Cli::run_matches`].
pub fn command() -> clap::Command {
    CliArgs::command()
}

/// Runs the command named by the process arguments and returns the exit code: the `main`
/// of a binary that is only the operator tool.
///
/// ```no_run
/// # async fn run(cli: cqrs_diesel::cli::Cli<cqrs_diesel::diesel::PgConnection>) -> std::process::ExitCode {
/// cqrs_diesel::cli::run(cli).await
/// # }
/// ```
pub async fn run<C: CqrsConnection>(cli: Cli<C>) -> ExitCode {
    cli.run_from(std::env::args_os()).await
}

/// Prints an error as clap does for usage errors, as `error: ...` for the others, and turns
/// the outcome into the exit code.
fn exit(outcome: Result<Report, CliError>) -> ExitCode {
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(CliError::Usage(error)) => {
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
        }
        Err(error) => {
            tracing::debug!(%error, "operator command failed");
            io::stderr_line(&format!("error: {error}"));
            ExitCode::from(error.exit_code())
        }
    }
}
