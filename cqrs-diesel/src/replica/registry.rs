//! [`Replicas`]: the registry of a service's replica models, and the [`Applier`] the consumer
//! runtime drives.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::{
    Applied, Applier, BatchError, Incoming, ModelPolicy, Payload, RetryChoice, SignalType,
};
use diesel::result::{ConnectionError, QueryResult};
use serde_json::Value;

use crate::connection::CqrsConnection;
use crate::error::Error;
use crate::replica::model::{CustomReplica, MessageInfo, ReplicaModel, ReplicaStore, key_text};
use crate::replica::order::{self, Stored, Verdict};
use crate::replica::sql::{ready, rows_per_statement};
use crate::replica::state::{self, NewState};

type Connect<C> = Arc<dyn Fn() -> Result<C, ConnectionError> + Send + Sync>;

/// A message decoded for its model, ready to apply (the runtime's `Applier::Prepared`).
pub struct Prepared {
    cqrs_id: &'static str,
    signal: SignalType,
    direct: bool,
    key_text: String,
    revision: i64,
    updated_us: i64,
    seq: Option<i64>,
    key: Box<dyn Any + Send + Sync>,
    row: Option<Box<dyn Any + Send + Sync>>,
    payload: Payload,
}

impl Prepared {
    /// What the order of its primary key's messages needs of this message.
    fn ordered(&self) -> order::Message {
        order::Message {
            signal: self.signal,
            revision: self.revision,
            updated_us: self.updated_us,
            seq: self.seq,
        }
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("cqrs_id", &self.cqrs_id)
            .field("signal", &self.signal)
            .field("pk", &self.key_text)
            .field("revision", &self.revision)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// What one registered model does with its messages (type-erased over the model).
trait ModelApply<C>: Send + Sync {
    fn cqrs_id(&self) -> &'static str;
    fn policy(&self) -> ModelPolicy;
    fn needs_database(&self) -> bool;
    /// The model's [`ReplicaHooks`](crate::ReplicaHooks) answer for a failed message.
    fn retry_choice(&self, retries: u32, error: &Error, would_retry: bool) -> RetryChoice;
    fn decode(&self, incoming: &Incoming) -> Result<Prepared, String>;
    fn apply(
        &self,
        conn: Option<&mut C>,
        items: &[&Prepared],
        counters: &Counters,
    ) -> Result<Vec<Applied>, Error>;
}

/// Asks `M`'s [`ReplicaHooks`](crate::ReplicaHooks); `None` fields where it keeps the default.
fn hook_choice<M: crate::ReplicaHooks>(
    retries: u32,
    error: &Error,
    would_retry: bool,
) -> RetryChoice {
    let retry = M::should_retry_cqrs(retries, error, would_retry);
    RetryChoice {
        retry: (retry != would_retry).then_some(retry),
        delay: if retry {
            M::get_cqrs_retry_delay(retries)
        } else {
            None
        },
    }
}

/// Counters the statements keep besides the runtime's (see [`Replicas::gaps`]).
#[derive(Debug, Default)]
struct Counters {
    gaps: AtomicU64,
    downgrades: AtomicU64,
}

/// The replica models of a service and the database they are written to: what
/// [`ConsumerRuntime`](cqrs_core::ConsumerRuntime) applies messages with.
///
/// ```no_run
/// use cqrs_diesel::diesel::{Connection, PgConnection};
/// use cqrs_diesel::{Config, ConsumerRuntime, RabbitMqTransport, Replicas, ReplicaModel};
///
/// diesel::table! {
///     account_ref (id) {
///         id -> BigInt,
///         name -> Text,
///         cqrs_revision -> Integer,
///         cqrs_updated -> Timestamptz,
///     }
/// }
///
/// #[derive(Debug, Clone, ReplicaModel)]
/// #[cqrs(id = "account", table = account_ref, backends(postgres))]
/// struct AccountRef {
///     id: i64,
///     name: String,
///     cqrs_revision: i32,
///     cqrs_updated: chrono::DateTime<chrono::Utc>,
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::from_env()?; // CQRS_QUEUE=payments_replica, ...
/// let replicas = Replicas::new(|| PgConnection::establish("postgres://postgres@127.0.0.1/payments"))
///     .register::<AccountRef>();
/// let stats = ConsumerRuntime::new(RabbitMqTransport::new(config.clone()), config, replicas)
///     .run_until(cqrs_diesel::shutdown_signal())
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct Replicas<C: CqrsConnection> {
    models: HashMap<&'static str, Arc<dyn ModelApply<C>>>,
    connect: Option<Connect<C>>,
    connections: Arc<Mutex<HashMap<usize, C>>>,
    counters: Arc<Counters>,
    limits: SessionLimits,
    /// The last statement that failed on each worker's connection, recorded only when timed
    /// out statements are logged.
    failed_statements: Arc<Mutex<HashMap<usize, String>>>,
    /// The typed error of each worker's last failed batch, for the retry hooks.
    failed_errors: Arc<Mutex<HashMap<usize, Error>>>,
}

/// What the worker's sessions are limited to (`CQRS_QUERY_TIMEOUT`,
/// `CQRS_LOG_TIMED_OUT_QUERIES`).
#[derive(Debug, Clone, Copy, Default)]
struct SessionLimits {
    query_timeout: Option<Duration>,
    log_timed_out_queries: bool,
}

/// A registry's maps stay usable after a panic elsewhere: each update is one insert or remove.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the warning that SQLite has no statement timeout was logged.
static SQLITE_TIMEOUT_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sets the statement timeout of a new worker session: PostgreSQL `statement_timeout` (ms),
/// MariaDB `max_statement_time` (seconds, fractional), or, where that variable does not exist
/// (MySQL), `max_execution_time` (ms; MySQL applies it to `SELECT`s only). SQLite has no
/// statement timeout: a warning, once per process.
fn set_statement_timeout<C: CqrsConnection>(conn: &mut C, timeout: Duration) -> QueryResult<()> {
    let millis = timeout.as_millis().max(1);
    match C::BACKEND {
        crate::Backend::Postgres => {
            conn.batch_execute(&format!("SET statement_timeout = {millis}"))
        }
        crate::Backend::Mysql => {
            let seconds = format!("{}.{:06}", timeout.as_secs(), timeout.subsec_micros());
            match conn.batch_execute(&format!("SET SESSION max_statement_time = {seconds}")) {
                Ok(()) => Ok(()),
                Err(mariadb) => {
                    tracing::debug!(
                        error = %mariadb,
                        "no max_statement_time (not MariaDB): using MySQL's max_execution_time, \
                         which bounds SELECT statements only"
                    );
                    conn.batch_execute(&format!("SET SESSION max_execution_time = {millis}"))
                }
            }
        }
        crate::Backend::Sqlite => {
            if !SQLITE_TIMEOUT_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    timeout_ms = u64::try_from(millis).unwrap_or(u64::MAX),
                    "CQRS_QUERY_TIMEOUT is set, but SQLite has no statement timeout: replica \
                     statements on SQLite run without one (a locked database still fails after \
                     the connection's busy_timeout)"
                );
            }
            Ok(())
        }
    }
}

impl<C: CqrsConnection> Replicas<C> {
    /// A registry writing to the database `connect` opens (one connection per worker, opened
    /// again after a failure).
    pub fn new(connect: impl Fn() -> Result<C, ConnectionError> + Send + Sync + 'static) -> Self {
        Replicas::with_connect(Some(Arc::new(connect)))
    }

    /// A registry without a database, for services whose replicas are all custom handlers
    /// that write elsewhere (`C` is then only a type parameter: choose any backend).
    pub fn without_database() -> Self {
        Replicas::with_connect(None)
    }

    /// Registers a replica model written with the default revision-guarded statements.
    ///
    /// # Panics
    ///
    /// When the registry has no database, or when another model has the same `cqrs_id`:
    /// both are programming errors found at start-up.
    #[allow(clippy::panic)]
    pub fn register<M: ReplicaStore<C>>(mut self) -> Self {
        assert!(
            self.connect.is_some(),
            "`{}` is written to a database, but this registry has none (Replicas::new)",
            M::CQRS_ID
        );
        self.insert(Arc::new(Derived::<M>(PhantomData)));
        self
    }

    /// Registers a replica model whose [`CustomReplica`] handlers replace the default
    /// create/update/delete.
    ///
    /// # Panics
    ///
    /// When another model has the same `cqrs_id`.
    pub fn register_custom<M: CustomReplica>(mut self) -> Self {
        self.insert(Arc::new(Custom::<M>(PhantomData)));
        self
    }

    #[allow(clippy::panic)]
    fn insert(&mut self, model: Arc<dyn ModelApply<C>>) {
        let id = model.cqrs_id();
        if self.models.insert(id, model).is_some() {
            panic!("two replica models are registered for the cqrs_id `{id}`");
        }
    }

    /// Updates applied whose revision jumped by more than one (earlier revisions were lost
    /// or are still on their way): each is also logged.
    pub fn gaps(&self) -> u64 {
        self.counters.gaps.load(Ordering::Relaxed)
    }

    /// SYNCs that lowered a stored revision (a repair).
    pub fn downgrades(&self) -> u64 {
        self.counters.downgrades.load(Ordering::Relaxed)
    }

    fn with_connect(connect: Option<Connect<C>>) -> Self {
        Replicas {
            models: HashMap::new(),
            connect,
            connections: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
            limits: SessionLimits::default(),
            failed_statements: Arc::new(Mutex::new(HashMap::new())),
            failed_errors: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn checkout(&self, worker: usize) -> Result<Option<C>, BatchError> {
        let Some(connect) = &self.connect else {
            return Ok(None);
        };
        let cached = lock(&self.connections).remove(&worker);
        match cached {
            Some(conn) => Ok(Some(conn)),
            None => {
                let mut conn = connect()
                    .map_err(|error| BatchError::Unavailable(format!("cannot connect: {error}")))?;
                conn.prepare_session().map_err(|error| {
                    BatchError::Unavailable(format!("cannot prepare the session: {error}"))
                })?;
                if let Some(timeout) = self.limits.query_timeout {
                    set_statement_timeout(&mut conn, timeout).map_err(|error| {
                        BatchError::Unavailable(format!(
                            "cannot set the statement timeout (CQRS_QUERY_TIMEOUT): {error}"
                        ))
                    })?;
                    if self.limits.log_timed_out_queries {
                        let failed = Arc::clone(&self.failed_statements);
                        conn.set_instrumentation(
                            move |event: diesel::connection::InstrumentationEvent<'_>| {
                                if let diesel::connection::InstrumentationEvent::FinishQuery {
                                    query,
                                    error: Some(_),
                                    ..
                                } = event
                                {
                                    lock(&failed).insert(worker, query.to_string());
                                }
                            },
                        );
                    }
                }
                Ok(Some(conn))
            }
        }
    }

    /// Keeps the typed error of `worker`'s failed batch for [`Applier::retry_choice`].
    fn keep_failure(&self, worker: usize, error: Error) {
        lock(&self.failed_errors).insert(worker, error);
    }

    fn checkin(&self, worker: usize, conn: C) {
        lock(&self.connections).insert(worker, conn);
    }
}

impl<C: CqrsConnection> Clone for Replicas<C> {
    fn clone(&self) -> Self {
        Replicas {
            models: self.models.clone(),
            connect: self.connect.clone(),
            connections: self.connections.clone(),
            counters: self.counters.clone(),
            limits: self.limits,
            failed_statements: self.failed_statements.clone(),
            failed_errors: self.failed_errors.clone(),
        }
    }
}

/// Applies `batch` (in one transaction when there is a connection), model by model.
fn apply_all<C: CqrsConnection>(
    models: &HashMap<&'static str, Arc<dyn ModelApply<C>>>,
    mut conn: Option<&mut C>,
    batch: &[Arc<Prepared>],
    counters: &Counters,
) -> Result<Vec<Applied>, Error> {
    let mut outcomes = vec![Applied::Ignored; batch.len()];
    let mut groups: Vec<(&'static str, Vec<usize>)> = Vec::new();
    for (i, item) in batch.iter().enumerate() {
        match groups.iter_mut().find(|(id, _)| *id == item.cqrs_id) {
            Some((_, indexes)) => indexes.push(i),
            None => groups.push((item.cqrs_id, vec![i])),
        }
    }
    for (cqrs_id, indexes) in groups {
        let Some(model) = models.get(cqrs_id) else {
            continue;
        };
        let items: Vec<&Prepared> = indexes.iter().map(|&i| batch[i].as_ref()).collect();
        let applied = model.apply(conn.as_deref_mut(), &items, counters)?;
        for (i, outcome) in indexes.into_iter().zip(applied) {
            outcomes[i] = outcome;
        }
    }
    Ok(outcomes)
}

/// What a failed batch means for the runtime, decided from the database's error code (see
/// [`Error::is_unavailable`] and [`Error::is_conflict`]; on MySQL/MariaDB the number is read
/// back from `conn`, which also tells whether the connection still answers):
///
/// - an unavailable database (lost connection, read-only database or transaction, disk full,
///   too many connections, shutdown) is [`BatchError::Unavailable`]: the runtime holds the batch
///   unacknowledged and tries it again after a back-off, and `apply` drops the connection, so
///   the next attempt reconnects (and reaches the writable server after a failover);
/// - a conflict with a concurrent transaction (serialization failure, deadlock, lock wait
///   timeout, SQLite busy or locked) is [`BatchError::Conflict`]: the same batch again after a
///   short pause;
///
/// neither spends any message's retries. Anything else is [`BatchError::Failed`], split to
/// find the failing message.
///
/// A statement cancelled by the session's timeout (`CQRS_QUERY_TIMEOUT`) is
/// [`Error::QueryTimeout`] and [`BatchError::TimedOut`]: the same batch again after the retry
/// delay, spending no retries; it is logged at WARN, with the statement when
/// `CQRS_LOG_TIMED_OUT_QUERIES` is on.
fn batch_error<C: CqrsConnection>(
    error: Error,
    conn: &mut C,
    limits: SessionLimits,
    statement: Option<String>,
    worker: usize,
) -> (Error, BatchError) {
    use crate::db_errors::ErrorClass;
    let class = error.class_on(conn);
    let error = match (class, error, limits.query_timeout) {
        (ErrorClass::TimedOut, Error::Database(source), Some(timeout)) => {
            let statement = statement.filter(|_| limits.log_timed_out_queries);
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            match &statement {
                Some(sql) => tracing::warn!(
                    worker,
                    timeout_ms,
                    statement = %sql,
                    error = %source,
                    "replica statement timed out (CQRS_QUERY_TIMEOUT); the batch is tried again"
                ),
                None => tracing::warn!(
                    worker,
                    timeout_ms,
                    "replica statement timed out (CQRS_QUERY_TIMEOUT); the batch is tried again \
                     (CQRS_LOG_TIMED_OUT_QUERIES=true logs the statement)"
                ),
            }
            Error::QueryTimeout {
                timeout,
                statement,
                source,
            }
        }
        (_, error, _) => error,
    };
    let text = error.to_string();
    let outcome = match class {
        ErrorClass::Unavailable => BatchError::Unavailable(text),
        ErrorClass::Conflict => BatchError::Conflict(text),
        ErrorClass::TimedOut => BatchError::TimedOut(text),
        ErrorClass::Other => BatchError::Failed(text),
    };
    (error, outcome)
}

impl<C: CqrsConnection> Applier for Replicas<C> {
    type Prepared = Prepared;

    fn cqrs_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.models.keys().map(|id| (*id).to_owned()).collect();
        ids.sort();
        ids
    }

    /// Takes `CQRS_QUERY_TIMEOUT` and `CQRS_LOG_TIMED_OUT_QUERIES` for the worker's sessions.
    fn configure(&mut self, config: &cqrs_core::Config) {
        self.limits = SessionLimits {
            query_timeout: config.query_timeout(),
            log_timed_out_queries: config.log_timed_out_queries(),
        };
    }

    /// Asks the failed message's model ([`ReplicaHooks`](crate::ReplicaHooks)) with the typed
    /// error this worker's last batch failed with.
    fn retry_choice(
        &self,
        worker: usize,
        prepared: &Prepared,
        retries: u32,
        error: &str,
        would_retry: bool,
    ) -> RetryChoice {
        let Some(model) = self.models.get(prepared.cqrs_id) else {
            return RetryChoice::default();
        };
        let typed = lock(&self.failed_errors).remove(&worker);
        // A failure without a typed error (a panic, a lost task) reaches the hook as a task
        // error.
        let typed = typed.unwrap_or_else(|| Error::Task(error.to_owned()));
        model.retry_choice(retries, &typed, would_retry)
    }

    fn policy(&self, cqrs_id: &str) -> Option<ModelPolicy> {
        self.models.get(cqrs_id).map(|model| model.policy())
    }

    fn prepare(&self, incoming: &Incoming) -> Result<Prepared, String> {
        let model = self
            .models
            .get(incoming.payload.cqrs_id.as_str())
            .ok_or_else(|| {
                format!(
                    "no replica model for cqrs_id `{}`",
                    incoming.payload.cqrs_id
                )
            })?;
        model.decode(incoming)
    }

    async fn apply(
        &self,
        worker: usize,
        batch: Vec<Arc<Prepared>>,
    ) -> Result<Vec<Applied>, BatchError> {
        let this = self.clone();
        // The batch's `apply` span goes along to the blocking thread, so what the handlers
        // log and trace there is inside it.
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let needs_database = batch.iter().any(|item| {
                this.models
                    .get(item.cqrs_id)
                    .is_some_and(|model| model.needs_database())
            });
            let conn = if needs_database || this.connect.is_some() {
                this.checkout(worker)?
            } else {
                None
            };
            let Some(mut conn) = conn else {
                return apply_all(&this.models, None, &batch, &this.counters).map_err(|error| {
                    let outcome = BatchError::Failed(error.to_string());
                    this.keep_failure(worker, error);
                    outcome
                });
            };
            let result = conn.write_transaction(|conn| {
                apply_all(&this.models, Some(conn), &batch, &this.counters)
            });
            match result {
                Ok(outcomes) => {
                    this.checkin(worker, conn);
                    Ok(outcomes)
                }
                Err(error) => {
                    let statement = lock(&this.failed_statements).remove(&worker);
                    let (error, outcome) =
                        batch_error(error, &mut conn, this.limits, statement, worker);
                    if matches!(outcome, BatchError::Failed(_)) {
                        this.keep_failure(worker, error);
                    }
                    if !matches!(outcome, BatchError::Unavailable(_)) {
                        this.checkin(worker, conn);
                    }
                    Err(outcome)
                }
            }
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(BatchError::Failed(format!(
                "the apply task did not finish: {error}"
            ))),
        }
    }
}

/// `cqrs_updated` of `instance_data` in microseconds since the epoch (0 when absent or
/// unreadable: then only the revision guards against resurrection).
fn updated_micros(payload: &Payload) -> i64 {
    payload
        .instance_data
        .get("cqrs_updated")
        .and_then(Value::as_str)
        .and_then(|s| cqrs_core::parse_timestamp(s).ok())
        .map_or(0, |ts| ts.timestamp_micros())
}

fn wire_revision(payload: &Payload) -> Result<i64, String> {
    match payload.instance_data.get("cqrs_revision") {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value.as_i64().ok_or_else(|| {
            format!("instance_data.cqrs_revision: expected an integer, found {value}")
        }),
    }
}

/// Decoding shared by derived and custom models.
fn decode_message<M: ReplicaModel>(incoming: &Incoming) -> Result<Prepared, String> {
    let payload = &incoming.payload;
    let key = M::cqrs_decode_pk(&payload.instance_pk)?;
    let (row, revision, updated_us) = match payload.signal_type {
        SignalType::Delete => {
            let updated = match updated_micros(payload) {
                0 => incoming.received_at.timestamp_micros(),
                micros => micros,
            };
            (None, wire_revision(payload)?, updated)
        }
        SignalType::Save | SignalType::Sync => {
            let row = M::cqrs_decode(&payload.instance_data)?;
            if row.cqrs_key() != key {
                return Err(format!(
                    "instance_pk {} differs from the primary key in instance_data",
                    payload.instance_pk
                ));
            }
            let revision = match row.cqrs_revision() {
                Some(revision) => revision,
                None => wire_revision(payload)?,
            };
            let row: Box<dyn Any + Send + Sync> = Box::new(row);
            (Some(row), revision, updated_micros(payload))
        }
    };
    Ok(Prepared {
        cqrs_id: M::CQRS_ID,
        signal: payload.signal_type,
        direct: incoming.direct,
        key_text: key_text(&payload.instance_pk),
        revision,
        updated_us,
        seq: incoming.seq,
        key: Box::new(key),
        row,
        payload: payload.clone(),
    })
}

fn downcast_key<M: ReplicaModel>(item: &Prepared) -> Result<&M::Pk, Error> {
    item.key
        .downcast_ref::<M::Pk>()
        .ok_or_else(|| Error::Task(format!("a `{}` key of another type", M::CQRS_ID)))
}

fn downcast_row<M: ReplicaModel>(item: &Prepared) -> Result<&M, Error> {
    item.row
        .as_ref()
        .and_then(|row| row.downcast_ref::<M>())
        .ok_or_else(|| Error::Task(format!("a `{}` message without its row", M::CQRS_ID)))
}

struct Derived<M>(PhantomData<fn() -> M>);

impl<M, C> ModelApply<C> for Derived<M>
where
    C: CqrsConnection,
    M: ReplicaStore<C>,
{
    fn cqrs_id(&self) -> &'static str {
        M::CQRS_ID
    }

    fn policy(&self) -> ModelPolicy {
        M::cqrs_policy()
    }

    fn needs_database(&self) -> bool {
        true
    }

    fn retry_choice(&self, retries: u32, error: &Error, would_retry: bool) -> RetryChoice {
        hook_choice::<M>(retries, error, would_retry)
    }

    fn decode(&self, incoming: &Incoming) -> Result<Prepared, String> {
        decode_message::<M>(incoming)
    }

    fn apply(
        &self,
        conn: Option<&mut C>,
        items: &[&Prepared],
        counters: &Counters,
    ) -> Result<Vec<Applied>, Error> {
        let conn = conn.ok_or_else(|| Error::Task("a replica model without a database".into()))?;
        let mut outcomes = vec![Applied::Superseded; items.len()];

        // 1. The messages of each row, in the order received.
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            by_key.entry(item.key_text.as_str()).or_default().push(i);
        }

        // 2. What the replica holds for those keys, locked until the transaction ends. Every
        // process locks keys in one order (sorted), so that two cannot wait for each other.
        let keys: Vec<String> = by_key.keys().map(|key| (*key).to_owned()).collect();
        let mut stored: HashMap<String, Stored> = HashMap::with_capacity(keys.len());
        let mut first_seen = Vec::new();
        for state in ready(state::lock(conn, M::CQRS_ID, &keys))? {
            if state.is_placeholder() {
                first_seen.push(state.pk.clone());
                stored.insert(state.pk, Stored::Nothing);
            } else {
                let kept = order::State {
                    revision: state.revision,
                    updated_us: state.updated_us,
                    deleted: state.deleted,
                    seq: state.seq,
                    floor_us: state.floor_us,
                };
                stored.insert(state.pk, Stored::State(kept));
            }
        }
        first_seen.sort_unstable();
        legacy_rows::<M, C>(items, &by_key, &first_seen, &mut stored, conn)?;

        // 3. Each row's messages decided one after the other; the last one applied is written,
        // and the state it leaves kept.
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        let mut ends = Vec::new();
        for (key, indexes) in &by_key {
            let before = stored.get(*key).copied().unwrap_or(Stored::Nothing);
            let folded = order::fold(before, indexes.iter().map(|&i| items[i].ordered()));
            for (&i, &verdict) in indexes.iter().zip(&folded.verdicts) {
                outcomes[i] = match verdict {
                    Verdict::Apply => Applied::Superseded,
                    Verdict::Duplicate => Applied::Duplicate,
                    Verdict::Old => Applied::SkippedOld,
                    Verdict::Tombstoned => Applied::Tombstoned,
                };
                if verdict != Verdict::Apply {
                    log_skipped(M::CQRS_ID, items[i], before, outcomes[i]);
                }
            }
            let (Some(w), Stored::State(end)) = (folded.winner, folded.end) else {
                continue;
            };
            let i = indexes[w];
            let item = items[i];
            let batch_saves = indexes
                .iter()
                .filter(|&&j| items[j].signal == SignalType::Save)
                .map(|&j| items[j].revision);
            outcomes[i] = outcome(M::CQRS_ID, item, before, batch_saves, counters);
            match item.signal {
                SignalType::Save | SignalType::Sync => writes.push(i),
                SignalType::Delete => deletes.push(i),
            }
            ends.push((i, end));
        }
        for chunk in writes.chunks(rows_per_statement(M::COLUMN_COUNT)) {
            let rows: Vec<&M> = chunk
                .iter()
                .map(|&i| downcast_row::<M>(items[i]))
                .collect::<Result<_, _>>()?;
            M::cqrs_write(&rows, conn)?;
        }
        for chunk in deletes.chunks(rows_per_statement(4)) {
            let keys: Vec<M::Pk> = chunk
                .iter()
                .map(|&i| downcast_key::<M>(items[i]).cloned())
                .collect::<Result<_, _>>()?;
            M::cqrs_delete_keys(&keys, conn)?;
        }
        let states: Vec<NewState<'_>> = ends
            .iter()
            .map(|&(i, end)| NewState {
                cqrs_id: M::CQRS_ID,
                pk: &items[i].key_text,
                revision: end.revision,
                updated_us: end.updated_us,
                deleted: end.deleted,
                seq: end.seq,
                floor_us: end.floor_us,
            })
            .collect();
        ready(state::record(conn, &states))?;
        Ok(outcomes)
    }
}

/// Rows the replica holds without a state (written before it kept states): their stored
/// revision decides, as the revision guard did (see [`Stored::LegacyRow`]). Only keys met for
/// the first time (`first_seen`, sorted) need the look-up.
fn legacy_rows<M, C>(
    items: &[&Prepared],
    by_key: &BTreeMap<&str, Vec<usize>>,
    first_seen: &[String],
    stored: &mut HashMap<String, Stored>,
    conn: &mut C,
) -> Result<(), Error>
where
    C: CqrsConnection,
    M: ReplicaStore<C>,
{
    if first_seen.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(first_seen.len());
    for text in first_seen {
        if let Some(&i) = by_key
            .get(text.as_str())
            .and_then(|indexes| indexes.first())
        {
            keys.push(downcast_key::<M>(items[i])?.clone());
        }
    }
    for (key, revision) in M::cqrs_stored_revisions(&keys, conn)? {
        let text = key_text(&M::cqrs_encode_pk(&key));
        stored.insert(text, Stored::LegacyRow { revision });
    }
    Ok(())
}

/// What applying `item` over `before` (the row as it was before the batch) did, counted and
/// logged; `batch_saves` are the revisions of the batch's SAVEs of the same row (no gap is
/// counted for them).
fn outcome(
    cqrs_id: &'static str,
    item: &Prepared,
    before: Stored,
    batch_saves: impl Iterator<Item = i64>,
    counters: &Counters,
) -> Applied {
    let live = match before {
        Stored::Nothing => None,
        Stored::LegacyRow { revision } => Some(revision),
        Stored::State(state) => (!state.deleted).then_some(state.revision),
    };
    let key = item.key_text.as_str();
    let incoming = item.revision;
    let applied = match item.signal {
        SignalType::Delete => Applied::Deleted,
        SignalType::Sync => {
            if let Some(stored) = live.filter(|&stored| stored > incoming) {
                counters.downgrades.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    cqrs_id,
                    pk = key,
                    stored,
                    incoming,
                    "SYNC lowered the revision"
                );
            }
            Applied::Synced
        }
        SignalType::Save => match live {
            None => Applied::Created,
            Some(stored) => {
                let seen: Vec<i64> = batch_saves.collect();
                note_gap(cqrs_id, key, stored, incoming, &seen, counters);
                Applied::Updated
            }
        },
    };
    tracing::trace!(cqrs_id, pk = key, incoming, outcome = ?applied, "applied");
    applied
}

/// Logs a message that changed nothing, and why.
fn log_skipped(cqrs_id: &'static str, item: &Prepared, before: Stored, outcome: Applied) {
    tracing::debug!(
        cqrs_id,
        pk = item.key_text.as_str(),
        incoming = item.revision,
        seq = item.seq,
        stored = ?before,
        outcome = ?outcome,
        "not applied"
    );
}

/// Counts and logs the revisions between the stored one and the applied one that this replica
/// has not seen: neither stored nor in the batch. A gap is not an error (the master may have
/// saved a row twice in one transaction, or a message is still on its way and will be skipped
/// as old), so it is logged at DEBUG; [`Replicas::gaps`] counts them.
fn note_gap(
    cqrs_id: &'static str,
    key: &str,
    stored: i64,
    incoming: i64,
    seen: &[i64],
    counters: &Counters,
) {
    let gap = missing_revisions(stored, incoming, seen);
    if gap > 0 {
        counters.gaps.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(cqrs_id, pk = key, stored, incoming, gap, "revision gap");
    }
}

/// How many revisions strictly between `stored` and `incoming` are not in `seen`.
fn missing_revisions(stored: i64, incoming: i64, seen: &[i64]) -> i64 {
    let between = incoming.saturating_sub(stored).saturating_sub(1).max(0);
    let mut inside: Vec<i64> = seen
        .iter()
        .copied()
        .filter(|&r| r > stored && r < incoming)
        .collect();
    inside.sort_unstable();
    inside.dedup();
    between - inside.len() as i64
}

struct Custom<M>(PhantomData<fn() -> M>);

impl<M, C> ModelApply<C> for Custom<M>
where
    C: CqrsConnection,
    M: CustomReplica,
{
    fn cqrs_id(&self) -> &'static str {
        M::CQRS_ID
    }

    fn policy(&self) -> ModelPolicy {
        M::cqrs_policy()
    }

    fn needs_database(&self) -> bool {
        false
    }

    fn retry_choice(&self, retries: u32, error: &Error, would_retry: bool) -> RetryChoice {
        hook_choice::<M>(retries, error, would_retry)
    }

    fn decode(&self, incoming: &Incoming) -> Result<Prepared, String> {
        decode_message::<M>(incoming)
    }

    fn apply(
        &self,
        mut conn: Option<&mut C>,
        items: &[&Prepared],
        _counters: &Counters,
    ) -> Result<Vec<Applied>, Error> {
        let hook = |name: &'static str| {
            move |error: crate::HookError| Error::Hook {
                cqrs_id: M::CQRS_ID,
                hook: name,
                reason: error.to_string(),
            }
        };
        for item in items {
            let message = MessageInfo {
                signal_type: item.signal,
                direct: item.direct,
                payload: &item.payload,
                meta: if M::RECEIVES_META {
                    item.payload.meta.as_ref()
                } else {
                    None
                },
            };
            let key = downcast_key::<M>(item)?.clone();
            match item.signal {
                SignalType::Delete => {
                    M::cqrs_delete(
                        conn.as_deref_mut().map(crate::exec::Exec::db_conn),
                        key,
                        message,
                    )
                    .map_err(hook("cqrs_delete"))?;
                }
                SignalType::Save | SignalType::Sync => {
                    let row = M::cqrs_decode(&item.payload.instance_data).map_err(|reason| {
                        Error::Hook {
                            cqrs_id: M::CQRS_ID,
                            hook: "decode",
                            reason,
                        }
                    })?;
                    let exists =
                        M::cqrs_exists(conn.as_deref_mut().map(crate::exec::Exec::db_conn), &key)
                            .map_err(hook("cqrs_exists"))?;
                    if exists {
                        M::cqrs_update(
                            conn.as_deref_mut().map(crate::exec::Exec::db_conn),
                            row,
                            message,
                        )
                        .map_err(hook("cqrs_update"))?;
                    } else {
                        M::cqrs_create(
                            conn.as_deref_mut().map(crate::exec::Exec::db_conn),
                            row,
                            message,
                        )
                        .map_err(hook("cqrs_create"))?;
                    }
                }
            }
        }
        Ok(vec![Applied::Handled; items.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::missing_revisions;

    #[test]
    fn revisions_superseded_in_the_batch_are_no_gap() {
        assert_eq!(missing_revisions(5, 8, &[6, 7, 8]), 0);
        assert_eq!(missing_revisions(5, 6, &[6]), 0);
    }

    #[test]
    fn revisions_neither_stored_nor_in_the_batch_are_a_gap() {
        assert_eq!(missing_revisions(5, 8, &[8]), 2);
        assert_eq!(
            missing_revisions(5, 8, &[7, 7, 8]),
            1,
            "duplicates count once"
        );
        assert_eq!(missing_revisions(5, 5, &[]), 0);
        assert_eq!(missing_revisions(5, 3, &[]), 0, "older: no gap");
    }
}
