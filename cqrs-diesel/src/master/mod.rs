//! The master side: models that publish every change of their rows.
//!
//! Derive [`MasterModel`](derive@crate::MasterModel) on a Diesel model, then write through the
//! trait's methods. Each one writes the row and the message (to the outbox table) in one
//! transaction; the [`OutboxRelay`](crate::OutboxRelay) publishes after the commit.

use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use cqrs_core::{Clock, Payload, SignalType, direct_routing_key};
use serde_json::{Map, Value};

use crate::connection::{CqrsConnection, DbConn, transaction_depth};
use crate::error::{Error, Result};
use crate::outbox::{self, NewOutboxEntry};

mod backends;
mod columns;
pub(crate) mod fallback;
pub(crate) mod registry;
mod single;
#[cfg(feature = "mysql")]
pub(crate) mod sql;
mod statements;
mod store;

pub use columns::MasterColumns;
use single::SingleKind;
pub use single::SinglePlan;
#[cfg(feature = "postgres")]
pub use single::SingleWrite;
pub use statements::Stmt;
pub(crate) use statements::push_columns;
pub use store::{MasterStore, RowFilter, UpdatedAt, UtcWire, decode_key};

use registry::{BlockGuard, PriorSave};

/// The error a [`MasterHooks`] method returns; its message ends up in [`Error::Hook`].
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Per-model behaviour a user can customise, the counterpart of django-cqrs's
/// `MasterMixin` methods. Every method has a default.
///
/// `#[derive(MasterModel)]` implements this trait with the defaults; add `#[cqrs(hooks)]` to
/// the struct and implement it yourself to override some of them.
///
/// ```
/// use cqrs_diesel::{DbConn, HookError, MasterHooks};
/// use serde_json::{Map, Value, json};
///
/// struct Account { id: i64, name: String, hidden: bool }
///
/// impl MasterHooks for Account {
///     fn serialize(&self, _conn: DbConn<'_>, data: &mut Map<String, Value>) -> Result<(), HookError> {
///         // A related row could be read through `_conn` here.
///         data.insert("display_name".into(), json!(self.name.to_uppercase()));
///         Ok(())
///     }
///     fn is_sync_instance(&self) -> bool {
///         !self.hidden
///     }
/// }
/// ```
pub trait MasterHooks {
    /// Adjusts `instance_data` of a SAVE or SYNC after the default serialization (every
    /// payload field under its wire name, plus `cqrs_revision` and `cqrs_updated`). Runs inside
    /// the write transaction, so it may read related rows through `conn`.
    fn serialize(&self, conn: DbConn<'_>, data: &mut Map<String, Value>) -> Result<(), HookError> {
        let _ = (conn, data);
        Ok(())
    }

    /// Whether `cqrs_sync` publishes this row (django-cqrs's `is_sync_instance`).
    fn is_sync_instance(&self) -> bool {
        true
    }

    /// The message's `meta` object. `None` sends `{}`, as the reference does.
    fn meta(&self) -> Option<Map<String, Value>> {
        None
    }

    /// The message's `correlation_id`.
    fn correlation_id(&self) -> Option<String> {
        None
    }

    /// An object sent as `instance_data.custom` in this row's DELETE message.
    fn delete_custom(&self) -> Option<Map<String, Value>> {
        None
    }
}

/// A Diesel model whose changes are published to replicas. Implemented by
/// `#[derive(MasterModel)]`; the write methods are provided.
///
/// Every write method runs in one database transaction, or in a savepoint of the caller's
/// transaction when one is open, and writes the row and its message (outbox entry) together: a
/// rollback publishes nothing.
///
/// ```no_run
/// use cqrs_diesel::MasterModel;
/// use diesel::prelude::*;
///
/// diesel::table! {
///     accounts (id) {
///         id -> BigInt,
///         name -> Text,
///         cqrs_revision -> Integer,
///         cqrs_updated -> Timestamptz,
///     }
/// }
///
/// #[derive(Debug, Clone, MasterModel)]
/// #[cqrs(id = "account", table = accounts, tracked(name), backends(postgres))]
/// struct Account {
///     id: i64,
///     name: String,
///     cqrs_revision: i32,
///     cqrs_updated: chrono::DateTime<chrono::Utc>,
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut conn = PgConnection::establish("postgres://postgres@127.0.0.1/test")?;
/// let account = Account { id: 1, name: "Pavel".into(), cqrs_revision: 0, cqrs_updated: chrono::Utc::now() };
/// let mut stored = account.save_and_publish(&mut conn)?; // INSERT, revision 0
/// stored.name = "Pasha".into();
/// let stored = stored.save_and_publish(&mut conn)?; // UPDATE, revision 1
/// stored.delete_and_publish(&mut conn)?;
/// # Ok(())
/// # }
/// ```
pub trait MasterModel: MasterHooks + Sized + 'static {
    /// The id master and replicas share; the routing key of broadcasts.
    const CQRS_ID: &'static str;
    /// Whether writes publish (`#[cqrs(produce = false)]` turns it off).
    const PRODUCE: bool;
    /// Wire names of the tracked fields, whose old values go to `previous_data`.
    const TRACKED_FIELDS: &'static [&'static str];
    /// How many columns one row binds (to size bulk statements).
    const COLUMN_COUNT: usize;
    /// Whether the model implements [`MasterHooks`] itself (`#[cqrs(hooks)]`). Writes of a
    /// model with its own hooks build each message from the row as stored, after the write.
    #[doc(hidden)]
    const CUSTOM_HOOKS: bool = true;
    /// Whether PostgreSQL writes the stored values of every tracked field as JSON the way
    /// their [`WireValue`](cqrs_core::WireValue)s do (booleans, integers, text, UUIDs), so that
    /// a tracked save can read the old values and write the row in one statement.
    #[doc(hidden)]
    const TRACKED_IN_SQL: bool = false;
    /// The primary key's name in `instance_data` (`None` when it is not sent).
    #[doc(hidden)]
    const PK_WIRE_NAME: Option<&'static str> = None;

    /// The primary key as it appears on the wire (`instance_pk`).
    fn cqrs_pk(&self) -> Value;

    /// The stored revision.
    fn cqrs_revision(&self) -> i64;

    /// The default `instance_data`: `cqrs_revision`, `cqrs_updated`, then every payload field
    /// under its wire name.
    fn cqrs_instance_data(&self) -> Map<String, Value>;

    /// The tracked fields' current values, under their wire names.
    fn cqrs_tracked_data(&self) -> Map<String, Value>;

    /// `cqrs_updated` as the wire writes it (`...+00:00`), without the rest of the data.
    #[doc(hidden)]
    fn cqrs_updated_wire(&self) -> Value {
        self.cqrs_instance_data()
            .get("cqrs_updated")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Checks that the wire can carry every payload field exactly
    /// ([`WireValue::check_wire`](cqrs_core::WireValue::check_wire): a NaN or an infinity
    /// cannot be). The error names the field. Every write calls it before its message is
    /// queued, inside the write's transaction, so a refused value leaves nothing written.
    fn cqrs_check_values(&self) -> Result<()> {
        Ok(())
    }

    /// Inserts the row (revision as given, normally 0) or, when a row with this primary key
    /// exists, updates it with `cqrs_revision = cqrs_revision + 1` computed in SQL; sets
    /// `cqrs_updated` to now; queues a SAVE message. Returns the row as stored.
    ///
    /// Inside [`atomic`], a second save of the same row neither bumps the revision again nor
    /// queues a second message: the first message is rewritten with the latest state.
    fn save_and_publish<C>(&self, conn: &mut C) -> Result<Self>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        save(self, conn)
    }

    /// Deletes the row and queues a DELETE message (`instance_data` holds `id`, the stored
    /// revision + 1 and `cqrs_updated`). Returns `false` when no such row existed (then nothing
    /// is published).
    fn delete_and_publish<C>(&self, conn: &mut C) -> Result<bool>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        delete(self, conn)
    }

    /// Inserts the rows with one statement per batch and queues one SAVE per row. Returns the
    /// rows as stored.
    fn bulk_create_and_publish<C>(conn: &mut C, rows: &[Self]) -> Result<Vec<Self>>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        bulk_create(conn, rows)
    }

    /// Inserts the row with a primary key the database generates (an identity or `BIGSERIAL`
    /// column, `AUTO_INCREMENT`, SQLite's `INTEGER PRIMARY KEY`): the key field's value is not
    /// written. Returns the row as stored, its new key included, and queues its SAVE in the
    /// same transaction. Use it instead of choosing keys (`max(id) + 1` races under
    /// concurrency).
    ///
    /// ```no_run
    /// # use cqrs_diesel::{MasterModel, MasterStore};
    /// # fn demo<Account>(conn: &mut diesel::PgConnection, new: Account) -> cqrs_diesel::Result<()>
    /// # where Account: MasterModel + MasterStore<diesel::PgConnection> {
    /// let stored = new.insert_and_publish(conn)?; // INSERT ... RETURNING, and a SAVE
    /// # let _ = stored;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// On MySQL/MariaDB the key is `LAST_INSERT_ID()`, so the key field must be an integer.
    fn insert_and_publish<C>(&self, conn: &mut C) -> Result<Self>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        insert_generated(self, conn)
    }

    /// [`insert_and_publish`](Self::insert_and_publish) for several rows, one statement per
    /// batch: the stored rows come back in the order of `rows`, each with its new key. On
    /// MySQL/MariaDB the keys of one statement are consecutive when `innodb_autoinc_lock_mode`
    /// is 0 or 1 (MariaDB's default); with 2 (MySQL 8's default) each row is inserted on its
    /// own, in the same transaction.
    fn bulk_insert_and_publish<C>(conn: &mut C, rows: &[Self]) -> Result<Vec<Self>>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        bulk_insert_generated(conn, rows)
    }

    /// Inserts a row with a Diesel statement of yours, typically from an `Insertable` value
    /// (a `NewAccount` without the key the database generates), and queues its SAVE in the
    /// same transaction. `insert` runs inside the write transaction with the time to stamp:
    /// it must set `cqrs_updated` to it (replicas order one row's messages by that time) and
    /// return the row as stored. Returns that row.
    ///
    /// ```no_run
    /// # use cqrs_diesel::MasterModel;
    /// # use diesel::prelude::*;
    /// # diesel::table! { account (id) { id -> BigInt, name -> Text, cqrs_revision -> Integer, cqrs_updated -> Timestamptz, } }
    /// # #[derive(Debug, Clone, MasterModel, Queryable, Selectable)]
    /// # #[diesel(table_name = account)]
    /// # #[cqrs(id = "account", table = account, backends(postgres))]
    /// # struct Account { id: i64, name: String, cqrs_revision: i32, cqrs_updated: chrono::DateTime<chrono::Utc> }
    /// #[derive(Insertable)]
    /// #[diesel(table_name = account)]
    /// struct NewAccount<'a> {
    ///     name: &'a str,
    /// }
    ///
    /// # fn demo(conn: &mut PgConnection) -> cqrs_diesel::Result<()> {
    /// let new = NewAccount { name: "Pavel" };
    /// let account = Account::insert_with_and_publish(conn, |conn, now| {
    ///     diesel::insert_into(account::table)
    ///         .values((&new, account::cqrs_updated.eq(now)))
    ///         .returning(Account::as_returning())
    ///         .get_result(conn)
    /// })?;
    /// # let _ = account;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// On MySQL/MariaDB, which have no `RETURNING`, insert and read the row back by
    /// `LAST_INSERT_ID()` inside `insert`. When the stored `cqrs_updated` is not the time
    /// given, nothing is written and the error ([`Error::Unstamped`]) says so. `insert` runs
    /// again when the database aborts the write's own transaction for a conflict with a
    /// concurrent one (see [`save_and_publish`](Self::save_and_publish)).
    fn insert_with_and_publish<C, F>(conn: &mut C, insert: F) -> Result<Self>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
        F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Self>,
    {
        let mut insert = insert;
        let mut stored = insert_with(conn, |conn, now| insert(conn, now).map(|row| vec![row]))?;
        stored.pop().ok_or_else(|| Error::NotFound {
            cqrs_id: Self::CQRS_ID,
            pk: "(the row `insert` returned)".to_owned(),
        })
    }

    /// [`insert_with_and_publish`](Self::insert_with_and_publish) for several rows: `insert`
    /// writes them (for example `insert_into(..).values(&new_rows)`, each with `cqrs_updated`
    /// set to the time given) and returns them as stored; one SAVE is queued per row, in the
    /// same transaction.
    fn bulk_insert_with_and_publish<C, F>(conn: &mut C, insert: F) -> Result<Vec<Self>>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
        F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Vec<Self>>,
    {
        insert_with(conn, insert)
    }

    /// Updates the rows that exist (others are skipped, as Django's `bulk_update` does) with
    /// one statement per batch, bumping each revision in SQL, and queues one SAVE per updated
    /// row. Returns the updated rows as stored.
    fn bulk_update_and_publish<C>(conn: &mut C, rows: &[Self]) -> Result<Vec<Self>>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        bulk_update(conn, rows)
    }

    /// Queues a SYNC of the row as stored now: to every replica when `queue` is `None`, or only
    /// to the replica queue `queue` (routing key `cqrs.<queue>.<cqrs_id>`). Returns `false`
    /// when nothing was queued because publishing is off or
    /// [`MasterHooks::is_sync_instance`] said no; [`Error::NotFound`] when the row is gone.
    fn cqrs_sync<C>(&self, conn: &mut C, queue: Option<&str>) -> Result<bool>
    where
        C: CqrsConnection,
        Self: MasterStore<C>,
    {
        sync(self, conn, queue)
    }
}

/// Runs `f` in one transaction (a savepoint when one is open) in which several saves of the
/// same row bump its revision once and publish once, with the final state, as django-cqrs
/// does inside `transaction.atomic()`.
///
/// Outside `atomic`, inside a plain Diesel transaction, every save bumps and publishes: still
/// correct, as replicas keep the newest revision, only more messages. Relays in this process
/// are woken as soon as the outermost block commits.
///
/// ```no_run
/// # use cqrs_diesel::{MasterModel, atomic};
/// # fn demo<M: MasterModel + cqrs_diesel::MasterStore<diesel::PgConnection>>(
/// #     conn: &mut diesel::PgConnection, row: M) -> cqrs_diesel::Result<()> {
/// atomic(conn, |conn| {
///     let stored = row.save_and_publish(conn)?;
///     stored.save_and_publish(conn)?; // same revision, one message
///     Ok::<_, cqrs_diesel::Error>(())
/// })?;
/// # Ok(())
/// # }
/// ```
pub fn atomic<C, T, E, F>(conn: &mut C, f: F) -> std::result::Result<T, E>
where
    C: CqrsConnection,
    F: FnOnce(&mut C) -> std::result::Result<T, E>,
    E: From<diesel::result::Error>,
{
    let top_level = transaction_depth(conn) == 0;
    let guard = BlockGuard::enter(connection_key(conn));
    let result = conn.write_transaction(f);
    let committed = guard.is_owner() && top_level && result.is_ok();
    drop(guard);
    if committed {
        outbox::notify_commit();
    }
    result
}

/// The TTL written into `expires`: `None` until set or first read from the environment.
static MESSAGE_TTL: RwLock<Option<Option<Duration>>> = RwLock::new(None);

/// Sets the time to live written into the `expires` field of messages queued from now on, in
/// this process (`None`: never expire). Without this call the first write reads
/// `CQRS_MESSAGE_TTL` from the environment (default 86400 s, django-cqrs's); services that
/// build their [`Config`](cqrs_core::Config) otherwise call it with `config.message_ttl()`.
pub fn set_message_ttl(ttl: Option<Duration>) {
    match MESSAGE_TTL.write() {
        Ok(mut guard) => *guard = Some(ttl),
        Err(poisoned) => *poisoned.into_inner() = Some(ttl),
    }
}

fn message_ttl() -> Option<Duration> {
    let current = match MESSAGE_TTL.read() {
        Ok(guard) => *guard,
        Err(poisoned) => *poisoned.into_inner(),
    };
    if let Some(ttl) = current {
        return ttl;
    }
    let ttl = match cqrs_core::Config::from_env() {
        Ok(config) => config.message_ttl(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the message TTL from the environment; using 86400 s");
            Some(Duration::from_secs(86_400))
        }
    };
    set_message_ttl(ttl);
    ttl
}

/// The clock of the master side: `None` until [`set_clock`] is called (then the system's).
static CLOCK: RwLock<Option<Clock>> = RwLock::new(None);

/// Sets where the master side of this process reads the current time: `cqrs_updated` of
/// written rows, the `expires` of queued messages, the time in diff headers. The system clock
/// unless set; tests set a [`ManualClock`](cqrs_core::ManualClock)'s.
pub fn set_clock(clock: Clock) {
    match CLOCK.write() {
        Ok(mut guard) => *guard = Some(clock),
        Err(poisoned) => *poisoned.into_inner() = Some(clock),
    }
}

/// The current time on the master side (see [`set_clock`]).
pub(crate) fn now() -> DateTime<Utc> {
    let guard = match CLOCK.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    match guard.as_ref() {
        Some(clock) => clock.now(),
        None => Utc::now(),
    }
}

fn connection_key<C>(conn: &mut C) -> usize {
    std::ptr::from_mut(conn) as usize
}

/// After a write: wake the relays unless the commit is still to come in an `atomic` block,
/// whose end wakes them. Inside a caller's plain transaction the relay may wake before the
/// commit; it then looks again shortly after (see the relay's idle back-off).
fn after_write<C>(conn: &mut C) {
    if !registry::in_block(connection_key(conn)) {
        outbox::notify_commit();
    }
}

fn pk_key<M: MasterModel>(row: &M) -> String {
    row.cqrs_pk().to_string()
}

pub(crate) fn tracked_nulls<M: MasterModel>() -> Option<Map<String, Value>> {
    if M::TRACKED_FIELDS.is_empty() {
        return None;
    }
    Some(
        M::TRACKED_FIELDS
            .iter()
            .map(|name| ((*name).to_owned(), Value::Null))
            .collect(),
    )
}

fn hook_error(cqrs_id: &'static str, hook: &'static str, error: HookError) -> Error {
    Error::Hook {
        cqrs_id,
        hook,
        reason: error.to_string(),
    }
}

/// `instance_data` of a SAVE or SYNC of `row` (as stored): the default serialization, then
/// the model's `serialize` hook.
pub(crate) fn instance_data<M, C>(row: &M, conn: &mut C) -> Result<Map<String, Value>>
where
    M: MasterModel,
    C: CqrsConnection,
{
    row.cqrs_check_values()?;
    let mut data = row.cqrs_instance_data();
    row.serialize(conn.as_db_conn(), &mut data)
        .map_err(|error| hook_error(M::CQRS_ID, "serialize", error))?;
    Ok(data)
}

/// The body of a SAVE or SYNC of `row` (as stored).
pub(crate) fn save_body<M, C>(
    row: &M,
    conn: &mut C,
    signal: SignalType,
    previous_data: Option<Map<String, Value>>,
) -> Result<String>
where
    M: MasterModel,
    C: CqrsConnection,
{
    Ok(body(row, signal, instance_data(row, conn)?, previous_data))
}

pub(crate) fn body<M: MasterModel>(
    row: &M,
    signal: SignalType,
    data: Map<String, Value>,
    previous_data: Option<Map<String, Value>>,
) -> String {
    body_with_pk(row, row.cqrs_pk(), signal, data, previous_data, now()).to_string()
}

/// [`body`] with the `instance_pk` given, its `expires` counted from `now`, as a JSON value.
pub(crate) fn body_with_pk<M: MasterModel>(
    row: &M,
    pk: Value,
    signal: SignalType,
    data: Map<String, Value>,
    previous_data: Option<Map<String, Value>>,
    now: DateTime<Utc>,
) -> Value {
    let mut payload = Payload::new(signal, M::CQRS_ID, pk, data)
        .with_ttl(now, message_ttl())
        .with_meta(row.meta().unwrap_or_default());
    payload.previous_data = previous_data;
    payload.correlation_id = row.correlation_id();
    payload.to_value()
}

/// How many times a write that owns its transaction runs again after a conflict.
const CONFLICT_RETRIES: u32 = 5;

/// Runs `f` in a write transaction. When that transaction is the write's own (no transaction
/// was open) and the database aborted it for a conflict with a concurrent one (a deadlock, a
/// serialization failure, a lock timeout: [`Error::is_conflict`]), it runs again, up to
/// [`CONFLICT_RETRIES`] times, after a pause of a few milliseconds that grows each time. Inside
/// the caller's transaction it runs once: a conflict may have rolled back more than this write
/// (InnoDB rolls back the whole transaction), so only the caller can run it again.
fn write<C, T, F>(conn: &mut C, mut f: F) -> Result<T>
where
    C: CqrsConnection,
    F: FnMut(&mut C) -> Result<T>,
{
    if transaction_depth(conn) > 0 {
        return conn.write_transaction(f);
    }
    let mut attempt = 0;
    loop {
        match conn.write_transaction(&mut f) {
            Err(error) if attempt < CONFLICT_RETRIES && error.is_conflict() => {
                attempt += 1;
                tracing::debug!(
                    attempt,
                    %error,
                    "a write conflicted with a concurrent transaction; running it again"
                );
                std::thread::sleep(Duration::from_millis(u64::from(attempt) * 2));
            }
            result => return result,
        }
    }
}

/// Runs a write of `kind` as one statement when the backend and the model allow it (see
/// [`single`]): outside any transaction (the statement is its own), for a model that publishes
/// with the default hooks and, for a save, tracks no field (whose old values the message needs
/// before it is built). `None` when it did not run, or refused itself because a stored value
/// differed from the one its message was built from, or met a concurrent transaction: then
/// the caller writes on the general path, which handles all of these.
fn write_single<M, C>(row: &M, conn: &mut C, kind: SingleKind) -> Result<Option<Option<M>>>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    if !M::SINGLE_STATEMENT
        || M::CUSTOM_HOOKS
        || !M::PRODUCE
        || (kind == SingleKind::Save && !M::TRACKED_FIELDS.is_empty() && !M::TRACKED_IN_SQL)
        || transaction_depth(conn) > 0
    {
        return Ok(None);
    }
    let Some(plan) = SinglePlan::new(row, kind, now().trunc_subsecs(6)) else {
        return Ok(None);
    };
    match row.cqrs_single(conn, &plan) {
        Ok(stored) => Ok(Some(stored)),
        Err(error) if single::refused(&error) || crate::error::is_conflict(&error) => {
            tracing::debug!(
                cqrs_id = M::CQRS_ID,
                %error,
                "the one-statement write did not apply; writing on the general path"
            );
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

fn save<M, C>(row: &M, conn: &mut C) -> Result<M>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    // Before the database sees it: some backends would store a NaN, others refuse it with
    // their own words, or turn it into NULL.
    row.cqrs_check_values()?;
    if let Some(Some(stored)) = write_single(row, conn, SingleKind::Save)? {
        after_write(conn);
        return Ok(stored);
    }
    let key = connection_key(conn);
    let stored = write(conn, |conn| save_in_transaction(row, conn, key))?;
    after_write(conn);
    Ok(stored)
}

fn save_in_transaction<M, C>(row: &M, conn: &mut C, key: usize) -> Result<M>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    let pk = pk_key(row);
    // A prior save in this `atomic` block, unless a savepoint rolled it back since.
    let prior = match registry::prior(key, M::CQRS_ID, &pk) {
        Some(prior) if conn.outbox_contains(prior.outbox_id)? => Some(prior),
        _ => None,
    };
    let (stored, previous_data) = match &prior {
        Some(prior) => {
            let stored = match row.cqrs_update(conn, false)? {
                Some(stored) => stored,
                None => row.cqrs_insert(conn)?,
            };
            (stored, prior.previous_data.clone())
        }
        None if M::TRACKED_FIELDS.is_empty() => (row.cqrs_upsert(conn)?, None),
        None => match row.cqrs_find(conn, true)? {
            Some(old) => {
                let stored = row
                    .cqrs_update(conn, true)?
                    .ok_or_else(|| Error::NotFound {
                        cqrs_id: M::CQRS_ID,
                        pk: pk.clone(),
                    })?;
                (stored, Some(old.cqrs_tracked_data()))
            }
            None => (row.cqrs_insert(conn)?, tracked_nulls::<M>()),
        },
    };
    if !M::PRODUCE {
        return Ok(stored);
    }
    let body = save_body(&stored, conn, SignalType::Save, previous_data.clone())?;
    match prior {
        Some(prior) => {
            conn.outbox_update_body(prior.outbox_id, &body)?;
        }
        None => queue_new_save::<M, C>(conn, key, pk, &body, previous_data)?,
    }
    Ok(stored)
}

/// Queues the SAVE `body` of a row that has no message in this `atomic` block yet.
fn queue_new_save<M, C>(
    conn: &mut C,
    key: usize,
    pk: String,
    body: &str,
    previous_data: Option<Map<String, Value>>,
) -> Result<()>
where
    M: MasterModel,
    C: CqrsConnection,
{
    let entry = NewOutboxEntry {
        cqrs_id: M::CQRS_ID,
        routing_key: M::CQRS_ID,
        body,
    };
    // Only an `atomic` block needs the entry's id, to rewrite it on the next save.
    if registry::in_block(key) {
        let outbox_id = conn.outbox_insert(&entry)?;
        registry::record(
            key,
            M::CQRS_ID,
            pk,
            PriorSave {
                outbox_id,
                previous_data,
            },
        );
    } else {
        conn.outbox_push(&entry)?;
    }
    Ok(())
}

fn insert_generated<M, C>(row: &M, conn: &mut C) -> Result<M>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    row.cqrs_check_values()?;
    if let Some(Some(stored)) = write_single(row, conn, SingleKind::InsertGenerated)? {
        after_write(conn);
        return Ok(stored);
    }
    let key = connection_key(conn);
    let stored = write(conn, |conn| -> Result<M> {
        let stored = row.cqrs_insert_generated(conn)?;
        if M::PRODUCE {
            let previous_data = tracked_nulls::<M>();
            let body = save_body(&stored, conn, SignalType::Save, previous_data.clone())?;
            queue_new_save::<M, C>(conn, key, pk_key(&stored), &body, previous_data)?;
        }
        Ok(stored)
    })?;
    after_write(conn);
    Ok(stored)
}

/// Runs the caller's `insert` in a write transaction, checks the stamp of every row it
/// returns, and queues their SAVEs.
fn insert_with<M, C, F>(conn: &mut C, mut insert: F) -> Result<Vec<M>>
where
    M: MasterStore<C>,
    C: CqrsConnection,
    F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Vec<M>>,
{
    let stored = write(conn, |conn| -> Result<Vec<M>> {
        let now = now().trunc_subsecs(6);
        let stored = insert(conn, now)?;
        let expected = UpdatedAt::to_wire_utc(&now);
        for row in &stored {
            row.cqrs_check_values()?;
            let found = row.cqrs_updated_wire();
            if found != expected {
                return Err(Error::Unstamped {
                    cqrs_id: M::CQRS_ID,
                    found: found.to_string(),
                    expected: expected.to_string(),
                });
            }
        }
        if M::PRODUCE {
            queue_saves(conn, &stored, |_| tracked_nulls::<M>())?;
        }
        Ok(stored)
    })?;
    after_write(conn);
    Ok(stored)
}

fn bulk_insert_generated<M, C>(conn: &mut C, rows: &[M]) -> Result<Vec<M>>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    bulk_insert(conn, rows, M::cqrs_insert_many_generated)
}

fn delete<M, C>(row: &M, conn: &mut C) -> Result<bool>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    if let Some(old) = write_single(row, conn, SingleKind::Delete)? {
        let deleted = old.is_some();
        if deleted {
            after_write(conn);
        }
        return Ok(deleted);
    }
    let key = connection_key(conn);
    let deleted = write(conn, |conn| -> Result<bool> {
        let Some(old) = row.cqrs_delete(conn)? else {
            return Ok(false);
        };
        registry::forget(key, M::CQRS_ID, &pk_key(&old));
        if !M::PRODUCE {
            return Ok(true);
        }
        let mut data = Map::with_capacity(4);
        data.insert("id".to_owned(), old.cqrs_pk());
        data.insert(
            "cqrs_revision".to_owned(),
            Value::from(old.cqrs_revision().saturating_add(1)),
        );
        data.insert(
            "cqrs_updated".to_owned(),
            UpdatedAt::to_wire_utc(&delete_time(&old)),
        );
        if let Some(custom) = old.delete_custom() {
            data.insert("custom".to_owned(), Value::Object(custom));
        }
        let body = body(&old, SignalType::Delete, data, None);
        conn.outbox_push(&NewOutboxEntry {
            cqrs_id: M::CQRS_ID,
            routing_key: M::CQRS_ID,
            body: &body,
        })?;
        Ok(true)
    })?;
    if deleted {
        after_write(conn);
    }
    Ok(deleted)
}

/// The `cqrs_updated` of a DELETE: now, but never at or before the deleted row's own time, so
/// that replicas placing a message without `x-cqrs-seq` see the DELETE after every write of
/// the life it ends (time separates lives at a DELETE: docs/DESIGN.md).
fn delete_time<M: MasterModel>(old: &M) -> DateTime<Utc> {
    let now = <DateTime<Utc> as UpdatedAt>::now();
    let stored = old
        .cqrs_updated_wire()
        .as_str()
        .and_then(|at| cqrs_core::parse_timestamp(at).ok())
        .map(|at| at.with_timezone(&Utc));
    match stored {
        Some(stored) if stored >= now => stored + chrono::TimeDelta::microseconds(1),
        _ => now,
    }
}

/// Rows per statement: within every backend's limit on bound parameters (SQLite's 32766 is the
/// lowest), and at most 1000 so that one statement stays a reasonable size.
fn rows_per_statement(columns: usize) -> usize {
    (30_000 / columns.max(1)).clamp(1, 1000)
}

fn queue_saves<M, C>(
    conn: &mut C,
    stored: &[M],
    previous: impl Fn(&M) -> Option<Map<String, Value>>,
) -> Result<()>
where
    M: MasterModel,
    C: CqrsConnection,
{
    let mut bodies = Vec::with_capacity(stored.len());
    for row in stored {
        bodies.push(save_body(row, conn, SignalType::Save, previous(row))?);
    }
    let entries: Vec<NewOutboxEntry<'_>> = bodies
        .iter()
        .map(|body| NewOutboxEntry {
            cqrs_id: M::CQRS_ID,
            routing_key: M::CQRS_ID,
            body,
        })
        .collect();
    for chunk in entries.chunks(rows_per_statement(3)) {
        conn.outbox_insert_many(chunk)?;
    }
    Ok(())
}

fn bulk_create<M, C>(conn: &mut C, rows: &[M]) -> Result<Vec<M>>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    bulk_insert(conn, rows, M::cqrs_insert_many)
}

/// Inserts `rows` with `insert`, one statement per batch, and queues a SAVE per stored row, in
/// one write transaction.
fn bulk_insert<M, C>(
    conn: &mut C,
    rows: &[M],
    insert: fn(&[&M], &mut C) -> diesel::QueryResult<Vec<M>>,
) -> Result<Vec<M>>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    rows.iter().try_for_each(MasterModel::cqrs_check_values)?;
    let stored = write(conn, |conn| -> Result<Vec<M>> {
        let mut all = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(rows_per_statement(M::COLUMN_COUNT)) {
            let refs: Vec<&M> = chunk.iter().collect();
            let stored = insert(&refs, conn)?;
            if M::PRODUCE {
                queue_saves(conn, &stored, |_| tracked_nulls::<M>())?;
            }
            all.extend(stored);
        }
        Ok(all)
    })?;
    after_write(conn);
    Ok(stored)
}

fn bulk_update<M, C>(conn: &mut C, rows: &[M]) -> Result<Vec<M>>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    rows.iter().try_for_each(MasterModel::cqrs_check_values)?;
    // One statement cannot update a row twice: the last occurrence of a primary key wins.
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut unique: Vec<&M> = rows
        .iter()
        .rev()
        .filter(|row| seen.insert(pk_key(*row)))
        .collect();
    unique.reverse();
    let stored = write(conn, |conn| -> Result<Vec<M>> {
        let mut all = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(rows_per_statement(M::COLUMN_COUNT)) {
            // Lock the rows and read their tracked values before the update.
            let old: std::collections::HashMap<String, M> = M::cqrs_find_many(chunk, conn, true)?
                .into_iter()
                .map(|row| (pk_key(&row), row))
                .collect();
            let existing: Vec<&M> = chunk
                .iter()
                .copied()
                .filter(|row| old.contains_key(&pk_key(*row)))
                .collect();
            if existing.is_empty() {
                continue;
            }
            let stored = M::cqrs_update_many(&existing, conn)?;
            if M::PRODUCE {
                queue_saves(conn, &stored, |row| {
                    if M::TRACKED_FIELDS.is_empty() {
                        None
                    } else {
                        old.get(&pk_key(row)).map(MasterModel::cqrs_tracked_data)
                    }
                })?;
            }
            all.extend(stored);
        }
        Ok(all)
    })?;
    after_write(conn);
    Ok(stored)
}

fn sync<M, C>(row: &M, conn: &mut C, queue: Option<&str>) -> Result<bool>
where
    M: MasterStore<C>,
    C: CqrsConnection,
{
    if !M::PRODUCE {
        return Ok(false);
    }
    let queued = write(conn, |conn| -> Result<bool> {
        // Locked, as every write of the row is, until the entry is queued: a concurrent update
        // or delete then commits either before the read (and the SYNC carries its result) or
        // after the entry (and gets the later outbox id), never in between, where the SYNC
        // would carry the older state with the later id.
        let stored = row.cqrs_find(conn, true)?.ok_or_else(|| Error::NotFound {
            cqrs_id: M::CQRS_ID,
            pk: pk_key(row),
        })?;
        if !stored.is_sync_instance() {
            return Ok(false);
        }
        // A row read from the database has no previous values: `null`, as django-cqrs sends
        // from its `cqrs_sync` and `cqrs_diff_sync` commands.
        let body = save_body(&stored, conn, SignalType::Sync, None)?;
        let routing_key = match queue {
            Some(queue) => direct_routing_key(queue, M::CQRS_ID),
            None => M::CQRS_ID.to_owned(),
        };
        conn.outbox_push(&NewOutboxEntry {
            cqrs_id: M::CQRS_ID,
            routing_key: &routing_key,
            body: &body,
        })?;
        Ok(true)
    })?;
    if queued {
        after_write(conn);
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_stay_under_every_backends_parameter_limit() {
        for columns in [1, 3, 9, 32, 100] {
            let rows = rows_per_statement(columns);
            assert!(rows * columns <= 32_766, "{columns} columns -> {rows} rows");
            assert!((1..=1000).contains(&rows));
        }
        assert_eq!(rows_per_statement(0), 1000);
    }
}
