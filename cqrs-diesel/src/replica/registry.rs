//! [`Replicas`]: the registry of a service's replica models, and the [`Applier`] the consumer
//! runtime drives.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cqrs_core::{Applied, Applier, BatchError, Incoming, ModelPolicy, Payload, SignalType};
use diesel::result::ConnectionError;
use serde_json::Value;

use crate::connection::CqrsConnection;
use crate::error::Error;
use crate::replica::model::{CustomReplica, MessageInfo, ReplicaModel, ReplicaStore, key_text};
use crate::replica::sql::rows_per_statement;
use crate::replica::tombstone::NewTombstone;

type Connect<C> = Arc<dyn Fn() -> Result<C, ConnectionError> + Send + Sync>;

/// A message decoded for its model, ready to apply (the runtime's `Applier::Prepared`).
pub struct Prepared {
    cqrs_id: &'static str,
    signal: SignalType,
    direct: bool,
    key_text: String,
    revision: i64,
    updated_us: i64,
    key: Box<dyn Any + Send + Sync>,
    row: Option<Box<dyn Any + Send + Sync>>,
    payload: Payload,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("cqrs_id", &self.cqrs_id)
            .field("signal", &self.signal)
            .field("pk", &self.key_text)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// What one registered model does with its messages (type-erased over the model).
trait ModelApply<C>: Send + Sync {
    fn cqrs_id(&self) -> &'static str;
    fn policy(&self) -> ModelPolicy;
    fn needs_database(&self) -> bool;
    fn decode(&self, incoming: &Incoming) -> Result<Prepared, String>;
    fn apply(
        &self,
        conn: Option<&mut C>,
        items: &[&Prepared],
        counters: &Counters,
    ) -> Result<Vec<Applied>, Error>;
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
}

impl<C: CqrsConnection> Replicas<C> {
    /// A registry writing to the database `connect` opens (one connection per worker, opened
    /// again after a failure).
    pub fn new(connect: impl Fn() -> Result<C, ConnectionError> + Send + Sync + 'static) -> Self {
        Replicas {
            models: HashMap::new(),
            connect: Some(Arc::new(connect)),
            connections: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
        }
    }

    /// A registry without a database, for services whose replicas are all custom handlers
    /// that write elsewhere (`C` is then only a type parameter: choose any backend).
    pub fn without_database() -> Self {
        Replicas {
            models: HashMap::new(),
            connect: None,
            connections: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
        }
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

    fn checkout(&self, worker: usize) -> Result<Option<C>, BatchError> {
        let Some(connect) = &self.connect else {
            return Ok(None);
        };
        let cached = match self.connections.lock() {
            Ok(mut pool) => pool.remove(&worker),
            Err(poisoned) => poisoned.into_inner().remove(&worker),
        };
        match cached {
            Some(conn) => Ok(Some(conn)),
            None => connect()
                .map(Some)
                .map_err(|error| BatchError::Unavailable(format!("cannot connect: {error}"))),
        }
    }

    fn checkin(&self, worker: usize, conn: C) {
        match self.connections.lock() {
            Ok(mut pool) => pool.insert(worker, conn),
            Err(poisoned) => poisoned.into_inner().insert(worker, conn),
        };
    }
}

impl<C: CqrsConnection> Clone for Replicas<C> {
    fn clone(&self) -> Self {
        Replicas {
            models: self.models.clone(),
            connect: self.connect.clone(),
            connections: self.connections.clone(),
            counters: self.counters.clone(),
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

/// Whether the connection still answers (to tell a lost database from a bad message).
fn connection_alive<C: CqrsConnection>(conn: &mut C) -> bool {
    conn.batch_execute("SELECT 1").is_ok()
}

impl<C: CqrsConnection> Applier for Replicas<C> {
    type Prepared = Prepared;

    fn cqrs_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.models.keys().map(|id| (*id).to_owned()).collect();
        ids.sort();
        ids
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
        let task = tokio::task::spawn_blocking(move || {
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
                return apply_all(&this.models, None, &batch, &this.counters)
                    .map_err(|error| BatchError::Failed(error.to_string()));
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
                    if connection_alive(&mut conn) {
                        this.checkin(worker, conn);
                        Err(BatchError::Failed(error.to_string()))
                    } else {
                        Err(BatchError::Unavailable(error.to_string()))
                    }
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

        // The message that decides each row, as if the batch were applied one by one: a SYNC
        // or DELETE always takes over; a SAVE only over an older revision.
        let mut winner: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            match winner.get(item.key_text.as_str()) {
                Some(&w)
                    if item.signal == SignalType::Save && items[w].revision >= item.revision => {}
                _ => {
                    winner.insert(item.key_text.as_str(), i);
                }
            }
        }
        // The SAVE revisions each row has in this batch: one that a later SAVE of the batch
        // superseded is no gap between the stored revision and the winner.
        let mut batch_revisions: HashMap<&str, Vec<i64>> = HashMap::new();
        for item in items.iter().filter(|item| item.signal == SignalType::Save) {
            batch_revisions
                .entry(item.key_text.as_str())
                .or_default()
                .push(item.revision);
        }
        let mut saves = Vec::new();
        let mut syncs = Vec::new();
        let mut deletes = Vec::new();
        let mut winners: Vec<usize> = winner.into_values().collect();
        winners.sort_unstable();
        for i in winners {
            match items[i].signal {
                SignalType::Save => saves.push(i),
                SignalType::Sync => syncs.push(i),
                SignalType::Delete => deletes.push(i),
            }
        }

        // Stored revisions, to report what the guarded statements did.
        let mut keys = Vec::with_capacity(saves.len() + syncs.len());
        for &i in saves.iter().chain(&syncs) {
            keys.push(downcast_key::<M>(items[i])?.clone());
        }
        let stored: HashMap<M::Pk, i64> = if keys.is_empty() {
            HashMap::new()
        } else {
            M::cqrs_stored_revisions(&keys, conn)?.into_iter().collect()
        };

        for (indexes, force) in [(&saves, false), (&syncs, true)] {
            for chunk in indexes.chunks(rows_per_statement(M::COLUMN_COUNT)) {
                let rows: Vec<&M> = chunk
                    .iter()
                    .map(|&i| downcast_row::<M>(items[i]))
                    .collect::<Result<_, _>>()?;
                let keys_text: Vec<String> =
                    chunk.iter().map(|&i| items[i].key_text.clone()).collect();
                let updated: Vec<i64> = chunk.iter().map(|&i| items[i].updated_us).collect();
                let written = M::cqrs_write(&rows, &keys_text, &updated, force, conn)?;
                if force {
                    conn.tombstones_clear(M::CQRS_ID, &keys_text)?;
                }
                let written: std::collections::HashSet<M::Pk> = match written {
                    Some(keys) => keys.into_iter().collect(),
                    None => {
                        // No RETURNING (MySQL/MariaDB): read the revisions back instead. A
                        // row now at the incoming revision, and not at it before, was written.
                        let keys: Vec<M::Pk> = rows.iter().map(|row| row.cqrs_key()).collect();
                        let incoming: HashMap<&M::Pk, i64> = keys
                            .iter()
                            .zip(chunk)
                            .map(|(key, &i)| (key, items[i].revision))
                            .collect();
                        M::cqrs_stored_revisions(&keys, conn)?
                            .into_iter()
                            .filter(|(key, after)| {
                                incoming.get(key) == Some(after) && stored.get(key) != Some(after)
                            })
                            .map(|(key, _)| key)
                            .collect()
                    }
                };
                for (&i, row) in chunk.iter().zip(&rows) {
                    let key = row.cqrs_key();
                    let incoming = items[i].revision;
                    let before = stored.get(&key).copied();
                    let was_written = written.contains(&key);
                    let seen = batch_revisions
                        .get(items[i].key_text.as_str())
                        .map_or(&[][..], Vec::as_slice);
                    outcomes[i] = classify(
                        M::CQRS_ID,
                        &items[i].key_text,
                        Revisions {
                            incoming,
                            before,
                            seen,
                        },
                        was_written,
                        force,
                        counters,
                    );
                }
            }
        }

        for chunk in deletes.chunks(rows_per_statement(4)) {
            let keys: Vec<M::Pk> = chunk
                .iter()
                .map(|&i| downcast_key::<M>(items[i]).cloned())
                .collect::<Result<_, _>>()?;
            M::cqrs_delete_keys(&keys, conn)?;
            let tombstones: Vec<NewTombstone<'_>> = chunk
                .iter()
                .map(|&i| NewTombstone {
                    cqrs_id: M::CQRS_ID,
                    pk: &items[i].key_text,
                    revision: items[i].revision,
                    updated_us: items[i].updated_us,
                })
                .collect();
            conn.tombstones_record(&tombstones)?;
            for &i in chunk {
                outcomes[i] = Applied::Deleted;
                tracing::debug!(cqrs_id = M::CQRS_ID, pk = %items[i].key_text, revision = items[i].revision, "deleted");
            }
        }
        Ok(outcomes)
    }
}

/// What a guarded write did to one row, from the stored revision before it and whether the
/// statement wrote the row.
/// The revisions [`classify`] judges one row by.
struct Revisions<'a> {
    /// The message's.
    incoming: i64,
    /// The stored row's before the statement, if there was one.
    before: Option<i64>,
    /// Every SAVE revision of the row in this batch.
    seen: &'a [i64],
}

fn classify(
    cqrs_id: &'static str,
    key: &str,
    revisions: Revisions<'_>,
    written: bool,
    force: bool,
    counters: &Counters,
) -> Applied {
    let Revisions {
        incoming,
        before,
        seen,
    } = revisions;
    if force {
        if let Some(stored) = before.filter(|&stored| stored > incoming) {
            counters.downgrades.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                cqrs_id,
                pk = key,
                stored,
                incoming,
                "SYNC lowered the revision"
            );
        }
        return Applied::Synced;
    }
    let applied = match (before, written) {
        (None, false) => Applied::Tombstoned,
        (None, true) => Applied::Created,
        (Some(stored), true) => {
            note_gap(cqrs_id, key, stored, incoming, seen, counters);
            Applied::Updated
        }
        (Some(stored), false) if stored == incoming => Applied::Duplicate,
        (Some(stored), false) if stored > incoming => Applied::SkippedOld,
        // A stored row older than the message, yet not written: a tombstone newer than it.
        (Some(_), false) => Applied::Tombstoned,
    };
    match applied {
        Applied::SkippedOld | Applied::Duplicate | Applied::Tombstoned => {
            tracing::debug!(cqrs_id, pk = key, incoming, stored = ?before, outcome = ?applied, "not applied");
        }
        _ => tracing::trace!(cqrs_id, pk = key, incoming, outcome = ?applied, "applied"),
    }
    applied
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
                    M::cqrs_delete(conn.as_deref_mut().map(C::as_db_conn), key, message)
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
                    let exists = M::cqrs_exists(conn.as_deref_mut().map(C::as_db_conn), &key)
                        .map_err(hook("cqrs_exists"))?;
                    if exists {
                        M::cqrs_update(conn.as_deref_mut().map(C::as_db_conn), row, message)
                            .map_err(hook("cqrs_update"))?;
                    } else {
                        M::cqrs_create(conn.as_deref_mut().map(C::as_db_conn), row, message)
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
