//! The master side: models that publish every change of their rows.
//!
//! Derive [`MasterModel`](derive@crate::MasterModel) on a Diesel model, then write through the
//! trait's methods. Each one writes the row and the message (to the outbox table) in one
//! transaction; the [`OutboxRelay`](crate::OutboxRelay) publishes after the commit.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::connection::DbConn;
use crate::error::{Error, Result};

mod body;
pub(crate) mod columns;
mod config;
pub(crate) mod fallback;
mod message;
pub(crate) mod registry;
mod related;
mod rows;
pub(crate) mod single;
pub(crate) mod sql;
mod statements;
mod store;
pub(crate) mod tx;
mod write;

pub use crate::exec::{Awaiting, Blocking, Dialect, DialectKind, Exec, Mode, Ret, WriteFuture};
pub(crate) use body::{body, page_instance_data};
pub use columns::MasterColumns;
pub use config::MasterConfig;
pub use message::{CorrelationFunction, MessageContext, MetaFunction};
pub use related::Related;
pub use single::SinglePlan;
pub(crate) use statements::push_columns;
pub use store::{MasterStore, RowFilter, UpdatedAt, UtcWire, decode_key};

use crate::exec::run_ready;
pub(crate) use tx::as_diesel_error;

/// The error a [`MasterHooks`] method returns; its message ends up in [`Error::Hook`].
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// The future [`MasterHooks::serialize_async`] returns.
pub type HookFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HookError>> + Send + 'a>>;

/// The future [`MasterHooks::relate_cqrs_serialization_async`] returns.
pub type RelateFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Related, HookError>> + Send + 'a>>;

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
    /// the write transaction, so it may read related rows through `conn` on a sync connection.
    /// On an async connection `conn` is one of the `DbConn::Async*` variants, which this sync
    /// method cannot query: override [`serialize_async`](Self::serialize_async) instead.
    fn serialize(&self, conn: DbConn<'_>, data: &mut Map<String, Value>) -> Result<(), HookError> {
        let _ = (conn, data);
        Ok(())
    }

    /// What every write calls to run [`serialize`](Self::serialize): by default that method.
    /// Override it to read related rows on an async connection, awaiting diesel-async queries
    /// on `DbConn::AsyncPg`, `DbConn::AsyncMysql` or `DbConn::AsyncSqlite` (and running sync
    /// ones on the sync variants, whose futures must then be ready at once: a sync write polls
    /// the hook once).
    ///
    /// ```
    /// use cqrs_diesel::{DbConn, HookError, HookFuture, MasterHooks};
    /// use serde_json::{Map, Value, json};
    ///
    /// struct Book { writer_id: i32 }
    ///
    /// impl MasterHooks for Book {
    ///     fn serialize_async<'a>(
    ///         &'a self,
    ///         conn: DbConn<'a>,
    ///         data: &'a mut Map<String, Value>,
    ///     ) -> HookFuture<'a> {
    ///         Box::pin(async move {
    ///             // `conn` is an async connection here: await a query on it.
    ///             let _ = conn;
    ///             data.insert("writer".into(), json!(self.writer_id));
    ///             Ok::<(), HookError>(())
    ///         })
    ///     }
    /// }
    /// ```
    fn serialize_async<'a>(
        &'a self,
        conn: DbConn<'a>,
        data: &'a mut Map<String, Value>,
    ) -> HookFuture<'a> {
        Box::pin(std::future::ready(self.serialize(conn, data)))
    }

    /// Loads, once for a page of rows, what their serialization reads besides the rows
    /// themselves (django-cqrs's `relate_cqrs_serialization`, which its bulk operations and
    /// `bulk_relate_cqrs_serialization` apply once per batch): typically the related rows of
    /// every row of the page, with one query. What it returns is handed to
    /// [`serialize_related`](Self::serialize_related) for each row of the page, instead of
    /// [`serialize_async`](Self::serialize_async); [`Related::none`] (the default) keeps
    /// [`serialize_async`](Self::serialize_async), so a model that does not override it pays
    /// nothing.
    ///
    /// A page is: one statement's rows of `bulk_create`/`bulk_insert`/`bulk_update`, the rows
    /// `insert_with` returned, one page (`--batch`) of the operator commands `sync`,
    /// `diff-sync` and `bulk-dump`, and the one row of a single write or `cqrs_sync`. It runs
    /// inside the write's transaction, after the rows are stored.
    ///
    /// On an async connection override [`relate_cqrs_serialization_async`](
    /// Self::relate_cqrs_serialization_async) instead.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use cqrs_diesel::{DbConn, HookError, MasterHooks, Related};
    /// use serde_json::{Map, Value, json};
    ///
    /// struct Book { id: i64, writer_id: i32 }
    ///
    /// impl MasterHooks for Book {
    ///     fn relate_cqrs_serialization(rows: &[&Self], _conn: DbConn<'_>) -> Result<Related, HookError> {
    ///         // One query for the page: SELECT id, name FROM writer WHERE id IN (...).
    ///         let writers: HashMap<i32, String> =
    ///             rows.iter().map(|book| (book.writer_id, format!("writer {}", book.writer_id))).collect();
    ///         Ok(Related::new(writers))
    ///     }
    ///
    ///     fn serialize_related(
    ///         &self,
    ///         related: &Related,
    ///         _conn: DbConn<'_>,
    ///         data: &mut Map<String, Value>,
    ///     ) -> Result<(), HookError> {
    ///         let writers = related.get::<HashMap<i32, String>>().ok_or("the page's writers")?;
    ///         data.insert("writer_name".into(), json!(writers.get(&self.writer_id)));
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn relate_cqrs_serialization(rows: &[&Self], conn: DbConn<'_>) -> Result<Related, HookError>
    where
        Self: Sized,
    {
        let _ = (rows, conn);
        Ok(Related::none())
    }

    /// What every write calls to run [`relate_cqrs_serialization`](
    /// Self::relate_cqrs_serialization): by default that method. Override it to await
    /// diesel-async queries on `DbConn::AsyncPg`, `DbConn::AsyncMysql` or `DbConn::AsyncSqlite`
    /// (on the sync variants the future must be ready at once: a sync write polls it once).
    fn relate_cqrs_serialization_async<'a>(
        rows: &'a [&'a Self],
        conn: DbConn<'a>,
    ) -> RelateFuture<'a>
    where
        Self: Sized + Sync,
    {
        Box::pin(std::future::ready(Self::relate_cqrs_serialization(
            rows, conn,
        )))
    }

    /// Adjusts `instance_data` of a SAVE or SYNC with what
    /// [`relate_cqrs_serialization`](Self::relate_cqrs_serialization) loaded for the row's
    /// page; called instead of [`serialize_async`](Self::serialize_async) when that returned
    /// something other than [`Related::none`]. By default it calls
    /// [`serialize`](Self::serialize).
    fn serialize_related(
        &self,
        related: &Related,
        conn: DbConn<'_>,
        data: &mut Map<String, Value>,
    ) -> Result<(), HookError> {
        let _ = related;
        self.serialize(conn, data)
    }

    /// Whether `cqrs_sync` publishes this row (django-cqrs's `is_sync_instance`).
    fn is_sync_instance(&self) -> bool {
        true
    }

    /// The message's `meta` object (django-cqrs's `get_cqrs_meta`). `Some` wins over the
    /// write's [`MasterConfig::with_meta_function`]; `None` (the default) leaves the `meta` to
    /// that function, and without one sends `{}`, as the reference does. A model that wants
    /// `{}` whatever the configuration returns `Some(Map::new())`.
    fn meta(&self) -> Option<Map<String, Value>> {
        None
    }

    /// The message's `correlation_id`. `Some` wins over the write's
    /// [`MasterConfig::with_correlation_function`]; `None` (the default) leaves it to that
    /// function, and without one sends `null`.
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
    fn save_and_publish<'a, C>(&'a self, conn: &'a mut C) -> Ret<'a, C, Self>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.save(self, conn)
    }

    /// Deletes the row and queues a DELETE message (`instance_data` holds `id`, the stored
    /// revision + 1 and `cqrs_updated`). Returns `false` when no such row existed (then nothing
    /// is published).
    fn delete_and_publish<'a, C>(&'a self, conn: &'a mut C) -> Ret<'a, C, bool>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.delete(self, conn)
    }

    /// Inserts the rows with one statement per batch and queues one SAVE per row. Returns the
    /// rows as stored.
    fn bulk_create_and_publish<'a, C>(conn: &'a mut C, rows: &'a [Self]) -> Ret<'a, C, Vec<Self>>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.bulk_create(conn, rows)
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
    fn insert_and_publish<'a, C>(&'a self, conn: &'a mut C) -> Ret<'a, C, Self>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.insert(self, conn)
    }

    /// [`insert_and_publish`](Self::insert_and_publish) for several rows, one statement per
    /// batch: the stored rows come back in the order of `rows`, each with its new key. On
    /// MySQL/MariaDB the keys of one statement are consecutive when `innodb_autoinc_lock_mode`
    /// is 0 or 1 (MariaDB's default); with 2 (MySQL 8's default) each row is inserted on its
    /// own, in the same transaction.
    fn bulk_insert_and_publish<'a, C>(conn: &'a mut C, rows: &'a [Self]) -> Ret<'a, C, Vec<Self>>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.bulk_insert(conn, rows)
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
        C: Exec<Mode = Blocking>,
        Self: MasterStore<C>,
        F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Self> + Send,
    {
        let mut insert = insert;
        let stored =
            config::SYSTEM.insert_with(conn, |conn, now| insert(conn, now).map(|row| vec![row]))?;
        config::one(stored)
    }

    /// [`insert_with_and_publish`](Self::insert_with_and_publish) for several rows: `insert`
    /// writes them (for example `insert_into(..).values(&new_rows)`, each with `cqrs_updated`
    /// set to the time given) and returns them as stored; one SAVE is queued per row, in the
    /// same transaction.
    fn bulk_insert_with_and_publish<C, F>(conn: &mut C, insert: F) -> Result<Vec<Self>>
    where
        C: Exec<Mode = Blocking>,
        Self: MasterStore<C>,
        F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Vec<Self>> + Send,
    {
        config::SYSTEM.insert_with(conn, insert)
    }

    /// [`insert_with_and_publish`](Self::insert_with_and_publish) where `insert` is an async
    /// closure, for diesel-async connections (`AsyncPgConnection`, `AsyncMysqlConnection`,
    /// `SyncConnectionWrapper<SqliteConnection>`, a pooled one by `&mut *conn`): it awaits
    /// your statements on the connection it is given. The same write as the sync method: one
    /// transaction (or a savepoint of the caller's), `insert` runs again after a conflict,
    /// [`Error::Unstamped`] when the stored `cqrs_updated` is not the time given, and the
    /// values are checked ([`cqrs_check_values`](Self::cqrs_check_values)) before the SAVE is
    /// queued. On a sync connection it works too, if `insert`'s future is ready at once (it
    /// runs sync Diesel statements): the method then returns the `Result`.
    ///
    /// ```no_run
    /// # #[cfg(all(feature = "async", feature = "postgres"))]
    /// # mod demo {
    /// # use cqrs_diesel::MasterModel;
    /// # use diesel::prelude::*;
    /// # use diesel_async::RunQueryDsl;
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
    /// # async fn demo(conn: &mut diesel_async::AsyncPgConnection) -> cqrs_diesel::Result<()> {
    /// let new = NewAccount { name: "Pavel" };
    /// let account = Account::insert_with_and_publish_async(conn, async |conn, now| {
    ///     diesel::insert_into(account::table)
    ///         .values((&new, account::cqrs_updated.eq(now)))
    ///         .returning(Account::as_returning())
    ///         .get_result(conn)
    ///         .await
    /// })
    /// .await?;
    /// # let _ = account;
    /// # Ok(())
    /// # }
    /// # }
    /// ```
    ///
    /// (A method of its own rather than [`insert_with_and_publish`](Self::insert_with_and_publish)
    /// taking either kind of closure: a closure's argument types are inferred from the one
    /// `Fn` or `AsyncFn` bound it is passed to, so one method for both would make every
    /// caller spell them out.)
    fn insert_with_and_publish_async<'a, C, F>(conn: &'a mut C, insert: F) -> Ret<'a, C, Self>
    where
        C: Exec,
        Self: MasterStore<C>,
        F: for<'c> AsyncInsert<&'c mut C, diesel::QueryResult<Self>, Fut: Send> + Send + 'a,
    {
        config::SYSTEM.insert_one_with_async(conn, insert)
    }

    /// [`bulk_insert_with_and_publish`](Self::bulk_insert_with_and_publish) where `insert` is
    /// an async closure, as [`insert_with_and_publish_async`](Self::insert_with_and_publish_async)
    /// takes it: it writes the rows, each with `cqrs_updated` set to the time given, and
    /// returns them as stored; one SAVE is queued per row, in the same transaction.
    ///
    /// ```no_run
    /// # #[cfg(all(feature = "async", feature = "postgres"))]
    /// # mod demo {
    /// # use cqrs_diesel::MasterModel;
    /// # use diesel::prelude::*;
    /// # use diesel_async::RunQueryDsl;
    /// # diesel::table! { account (id) { id -> BigInt, name -> Text, cqrs_revision -> Integer, cqrs_updated -> Timestamptz, } }
    /// # #[derive(Debug, Clone, MasterModel, Queryable, Selectable)]
    /// # #[diesel(table_name = account)]
    /// # #[cqrs(id = "account", table = account, backends(postgres))]
    /// # struct Account { id: i64, name: String, cqrs_revision: i32, cqrs_updated: chrono::DateTime<chrono::Utc> }
    /// # #[derive(Insertable)]
    /// # #[diesel(table_name = account)]
    /// # struct NewAccount<'a> { name: &'a str }
    /// # async fn demo(conn: &mut diesel_async::AsyncPgConnection) -> cqrs_diesel::Result<()> {
    /// let names = ["Pavel", "Olga"];
    /// let accounts = Account::bulk_insert_with_and_publish_async(conn, async |conn, now| {
    ///     let rows: Vec<_> = names
    ///         .iter()
    ///         .map(|name| (NewAccount { name }, account::cqrs_updated.eq(now)))
    ///         .collect();
    ///     diesel::insert_into(account::table)
    ///         .values(rows)
    ///         .returning(Account::as_returning())
    ///         .get_results(conn)
    ///         .await
    /// })
    /// .await?;
    /// # let _ = accounts;
    /// # Ok(())
    /// # }
    /// # }
    /// ```
    fn bulk_insert_with_and_publish_async<'a, C, F>(
        conn: &'a mut C,
        insert: F,
    ) -> Ret<'a, C, Vec<Self>>
    where
        C: Exec,
        Self: MasterStore<C>,
        F: for<'c> AsyncInsert<&'c mut C, diesel::QueryResult<Vec<Self>>, Fut: Send> + Send + 'a,
    {
        config::SYSTEM.insert_with_async(conn, insert)
    }

    /// Updates the rows that exist (others are skipped, as Django's `bulk_update` does) with
    /// one statement per batch, bumping each revision in SQL, and queues one SAVE per updated
    /// row. Returns the updated rows as stored.
    fn bulk_update_and_publish<'a, C>(conn: &'a mut C, rows: &'a [Self]) -> Ret<'a, C, Vec<Self>>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.bulk_update(conn, rows)
    }

    /// Queues a SYNC of the row as stored now: to every replica when `queue` is `None`, or only
    /// to the replica queue `queue` (routing key `cqrs.<queue>.<cqrs_id>`). Returns `false`
    /// when nothing was queued because publishing is off or
    /// [`MasterHooks::is_sync_instance`] said no; [`Error::NotFound`] when the row is gone.
    fn cqrs_sync<'a, C>(&'a self, conn: &'a mut C, queue: Option<&'a str>) -> Ret<'a, C, bool>
    where
        C: Exec,
        Self: MasterStore<C>,
    {
        config::SYSTEM.sync(self, conn, queue)
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
    C: Exec<Mode = Blocking>,
    F: FnOnce(&mut C) -> std::result::Result<T, E>,
    E: From<Error>,
{
    let block = run_ready(tx::Block::begin(conn))?;
    let result = f(conn);
    run_ready(async { Ok(block.end(conn, result).await) }).unwrap_or_else(|error| Err(error.into()))
}

/// [`atomic`] on an async connection: `f` is an async closure, as diesel-async's
/// `transaction` takes it.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn demo<M>(conn: &mut diesel_async::AsyncPgConnection, row: M) -> cqrs_diesel::Result<()>
/// # where M: cqrs_diesel::MasterModel + cqrs_diesel::MasterStore<diesel_async::AsyncPgConnection> {
/// use cqrs_diesel::{MasterModel, atomic_async};
///
/// atomic_async(conn, async |conn| {
///     let stored = row.save_and_publish(conn).await?;
///     stored.save_and_publish(conn).await?; // same revision, one message
///     Ok::<_, cqrs_diesel::Error>(())
/// })
/// .await
/// # }
/// ```
#[cfg(feature = "async")]
pub async fn atomic_async<'a, C, T, E, F>(conn: &mut C, f: F) -> std::result::Result<T, E>
where
    C: Exec<Mode = Awaiting>,
    for<'r> F: AsyncFnOnce(&'r mut C) -> std::result::Result<T, E>
        + AsyncBody<&'r mut C, std::result::Result<T, E>, Fut: Send>
        + Send
        + 'a,
    T: Send + 'a,
    E: From<Error> + Send + 'a,
{
    let block = tx::Block::begin(conn).await?;
    let result = f(conn).await;
    block.end(conn, result).await
}

/// An async closure whose future can be named, so that [`atomic_async`] can ask it to be
/// `Send` (the `AsyncFnOnce` bound alone cannot say so). Implemented for every async closure.
#[cfg(feature = "async")]
#[doc(hidden)]
pub trait AsyncBody<A, R>:
    AsyncFnOnce(A) -> R + FnOnce(A) -> <Self as AsyncBody<A, R>>::Fut
{
    /// The closure's future.
    type Fut: std::future::Future<Output = R>;
}

#[cfg(feature = "async")]
impl<F, A, Fut, R> AsyncBody<A, R> for F
where
    F: AsyncFnOnce(A) -> R + FnOnce(A) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    type Fut = Fut;
}

/// An async closure of the application's insert (`async |conn, now| ...`), as
/// [`MasterModel::insert_with_and_publish_async`] takes it: its future can be named, so that
/// the method can ask it to be `Send` (the `AsyncFnMut` bound alone cannot say so).
/// Implemented for every async closure whose future does not borrow from the closure itself
/// (one that captures the application's values by reference, or moves in what it only
/// reads by reference).
#[doc(hidden)]
pub trait AsyncInsert<A, R>:
    AsyncFnMut(A, DateTime<Utc>) -> R + FnMut(A, DateTime<Utc>) -> <Self as AsyncInsert<A, R>>::Fut
{
    /// The closure's future.
    type Fut: std::future::Future<Output = R>;
}

impl<F, A, Fut, R> AsyncInsert<A, R> for F
where
    F: AsyncFnMut(A, DateTime<Utc>) -> R + FnMut(A, DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    type Fut = Fut;
}
