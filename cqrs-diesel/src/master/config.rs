//! [`MasterConfig`]: the clock and message TTL master writes use, and the write methods that
//! take them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use cqrs_core::Clock;
use serde_json::{Map, Value};

use super::message::{CorrelationFunction, MessageContext, MetaFunction};
use super::write::{self, Awaited, BulkInsert, Ready};
use super::{AsyncInsert, MasterModel, MasterStore};
use crate::error::{Error, Result};
use crate::exec::Blocking;
use crate::exec::{Exec, Mode, Ret};

/// What master writes read from outside the database: the clock they stamp rows and messages
/// with, the time to live written into the `expires` of their messages, and the functions that
/// give every message its `meta` and `correlation_id` (django-cqrs's
/// `CQRS['master']['meta_function']` and `['correlation_function']`).
///
/// Build one at start-up, keep it in the application's state and hand it to the writes
/// (`master.save(&row, conn)`); the write methods of [`MasterModel`] use
/// [`MasterConfig::DEFAULT`]. Nothing is shared between two
/// configurations, so two masters in one process (or two tests in one binary) can run on
/// clocks of their own.
///
/// ```
/// use std::time::Duration;
/// use cqrs_diesel::MasterConfig;
///
/// // From the service's configuration (`CQRS_MESSAGE_TTL`, its clock)...
/// # fn from(config: &cqrs_diesel::Config) -> MasterConfig {
/// let master = MasterConfig::from_config(config);
/// # master }
/// // ... or by hand.
/// let master = MasterConfig::new().with_message_ttl(Some(Duration::from_secs(3600)));
/// assert_eq!(master.message_ttl(), Some(Duration::from_secs(3600)));
/// ```
///
/// Every message of every model of this master gets a `meta` and a `correlation_id` from the
/// functions, unless the model's own [`MasterHooks::meta`](super::MasterHooks::meta) or
/// [`MasterHooks::correlation_id`](super::MasterHooks::correlation_id) returns `Some`:
///
/// ```
/// use cqrs_diesel::{MasterConfig, MessageContext};
/// use serde_json::{Map, json};
///
/// let master = MasterConfig::new()
///     .with_meta_function(|message: &MessageContext<'_>| {
///         let mut meta = Map::new();
///         meta.insert("service".into(), json!("accounts"));
///         meta.insert("signal".into(), json!(message.signal.as_str()));
///         Some(meta)
///     })
///     .with_correlation_function(|message: &MessageContext<'_>| {
///         Some(format!("{}:{}", message.cqrs_id, message.instance_pk))
///     });
/// assert!(master.meta_function().is_some());
/// ```
#[derive(Clone)]
pub struct MasterConfig {
    clock: Clock,
    message_ttl: Option<Duration>,
    meta_function: Option<MetaFunction>,
    correlation_function: Option<CorrelationFunction>,
}

impl std::fmt::Debug for MasterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterConfig")
            .field("clock", &self.clock)
            .field("message_ttl", &self.message_ttl)
            .field("meta_function", &self.meta_function.as_ref().map(|_| "Fn"))
            .field(
                "correlation_function",
                &self.correlation_function.as_ref().map(|_| "Fn"),
            )
            .finish()
    }
}

/// Two configurations are equal when their clocks and TTLs are, and they hold the same
/// functions (the same `Arc`s) or none.
impl PartialEq for MasterConfig {
    fn eq(&self, other: &Self) -> bool {
        fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        self.clock == other.clock
            && self.message_ttl == other.message_ttl
            && same(&self.meta_function, &other.meta_function)
            && same(&self.correlation_function, &other.correlation_function)
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig::DEFAULT
    }
}

impl MasterConfig {
    /// The system clock and django-cqrs's default time to live, 86400 s.
    pub const DEFAULT: MasterConfig = MasterConfig {
        clock: Clock::system(),
        message_ttl: Some(Duration::from_secs(86_400)),
        meta_function: None,
        correlation_function: None,
    };

    /// [`MasterConfig::DEFAULT`].
    pub const fn new() -> Self {
        MasterConfig::DEFAULT
    }

    /// The clock and the message TTL of a service's [`Config`](cqrs_core::Config)
    /// (`CQRS_MESSAGE_TTL`).
    pub fn from_config(config: &cqrs_core::Config) -> Self {
        MasterConfig {
            clock: config.clock().clone(),
            message_ttl: config.message_ttl(),
            meta_function: None,
            correlation_function: None,
        }
    }

    /// Reads the time from `clock` (tests pass a [`ManualClock`](cqrs_core::ManualClock)'s).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Writes messages that expire `ttl` after they are queued (`None`: never).
    pub fn with_message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.message_ttl = ttl;
        self
    }

    /// Gives every message of this master the `meta` `function` returns (`None`: `{}`), for
    /// the models whose [`MasterHooks::meta`](super::MasterHooks::meta) returns `None` (the
    /// default). django-cqrs's `CQRS['master']['meta_function']`.
    ///
    /// A write with a meta or correlation function runs on the general path (begin, write,
    /// read back, queue, commit) also where it would otherwise be one statement
    /// (PostgreSQL), so that the function sees the message as it is sent.
    pub fn with_meta_function<F>(mut self, function: F) -> Self
    where
        F: Fn(&MessageContext<'_>) -> Option<Map<String, Value>> + Send + Sync + 'static,
    {
        self.meta_function = Some(Arc::new(function));
        self
    }

    /// Gives every message of this master the `correlation_id` `function` returns (`None`:
    /// `null`), for the models whose
    /// [`MasterHooks::correlation_id`](super::MasterHooks::correlation_id) returns `None` (the
    /// default). django-cqrs's `CQRS['master']['correlation_function']`.
    pub fn with_correlation_function<F>(mut self, function: F) -> Self
    where
        F: Fn(&MessageContext<'_>) -> Option<String> + Send + Sync + 'static,
    {
        self.correlation_function = Some(Arc::new(function));
        self
    }

    /// The meta function, if any.
    pub fn meta_function(&self) -> Option<&MetaFunction> {
        self.meta_function.as_ref()
    }

    /// The correlation function, if any.
    pub fn correlation_function(&self) -> Option<&CorrelationFunction> {
        self.correlation_function.as_ref()
    }

    /// Whether a function of this configuration looks at each message: the writes then build
    /// messages from the rows as stored (no one-statement path).
    pub(crate) fn has_message_functions(&self) -> bool {
        self.meta_function.is_some() || self.correlation_function.is_some()
    }

    /// The time to live of messages.
    pub fn message_ttl(&self) -> Option<Duration> {
        self.message_ttl
    }

    /// The clock writes read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The current time at the microsecond precision databases store.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    /// [`MasterModel::save_and_publish`] with this configuration.
    pub fn save<'a, M, C>(&'a self, row: &'a M, conn: &'a mut C) -> Ret<'a, C, M>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::save(self, row, conn))
    }

    /// [`MasterModel::insert_and_publish`] with this configuration.
    pub fn insert<'a, M, C>(&'a self, row: &'a M, conn: &'a mut C) -> Ret<'a, C, M>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::insert_generated(self, row, conn))
    }

    /// [`MasterModel::delete_and_publish`] with this configuration.
    pub fn delete<'a, M, C>(&'a self, row: &'a M, conn: &'a mut C) -> Ret<'a, C, bool>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::delete(self, row, conn))
    }

    /// [`MasterModel::bulk_create_and_publish`] with this configuration.
    pub fn bulk_create<'a, M, C>(&'a self, conn: &'a mut C, rows: &'a [M]) -> Ret<'a, C, Vec<M>>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::bulk_insert(self, conn, rows, BulkInsert::WithKeys))
    }

    /// [`MasterModel::bulk_insert_and_publish`] with this configuration.
    pub fn bulk_insert<'a, M, C>(&'a self, conn: &'a mut C, rows: &'a [M]) -> Ret<'a, C, Vec<M>>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::bulk_insert(
            self,
            conn,
            rows,
            BulkInsert::GeneratedKeys,
        ))
    }

    /// [`MasterModel::bulk_update_and_publish`] with this configuration.
    pub fn bulk_update<'a, M, C>(&'a self, conn: &'a mut C, rows: &'a [M]) -> Ret<'a, C, Vec<M>>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::bulk_update(self, conn, rows))
    }

    /// [`MasterModel::cqrs_sync`] with this configuration.
    pub fn sync<'a, M, C>(
        &'a self,
        row: &'a M,
        conn: &'a mut C,
        queue: Option<&'a str>,
    ) -> Ret<'a, C, bool>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::sync(self, row, conn, queue))
    }

    /// Queues a SYNC of each of `rows` as stored now, to every replica (`queue` `None`) or to
    /// the replica queue `queue` only, in one transaction, a page (one statement's rows) at a
    /// time: the model's [`relate_cqrs_serialization`](super::MasterHooks::relate_cqrs_serialization)
    /// runs once per page. Rows that no longer exist, and those
    /// [`is_sync_instance`](super::MasterHooks::is_sync_instance) refuses, are skipped (as
    /// django-cqrs's `cqrs_sync` command skips them). Returns how many SYNCs were queued.
    ///
    /// ```no_run
    /// # use cqrs_diesel::{MasterConfig, MasterModel, MasterStore};
    /// # fn demo<Account>(conn: &mut diesel::PgConnection, accounts: Vec<Account>) -> cqrs_diesel::Result<()>
    /// # where Account: MasterModel + MasterStore<diesel::PgConnection> {
    /// let master = MasterConfig::new();
    /// let queued = master.bulk_sync(conn, &accounts, Some("payments_replica"))?;
    /// # let _ = queued;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bulk_sync<'a, M, C>(
        &'a self,
        conn: &'a mut C,
        rows: &'a [M],
        queue: Option<&'a str>,
    ) -> Ret<'a, C, usize>
    where
        C: Exec,
        M: MasterStore<C>,
    {
        <C::Mode as Mode>::ret(write::bulk_sync(self, conn, rows, queue))
    }

    /// [`MasterModel::bulk_insert_with_and_publish`] with this configuration (sync
    /// connections: `insert` runs Diesel statements of yours).
    pub fn insert_with<M, C, F>(&self, conn: &mut C, insert: F) -> Result<Vec<M>>
    where
        C: Exec<Mode = Blocking>,
        M: MasterStore<C>,
        F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Vec<M>> + Send,
    {
        crate::exec::run_ready(write::insert_with(self, conn, Ready(insert), identity))
    }

    /// [`MasterModel::bulk_insert_with_and_publish_async`] with this configuration: `insert`
    /// is an async closure (diesel-async statements of yours on an async connection).
    pub fn insert_with_async<'a, M, C, F>(
        &'a self,
        conn: &'a mut C,
        insert: F,
    ) -> Ret<'a, C, Vec<M>>
    where
        C: Exec,
        M: MasterStore<C>,
        F: for<'c> AsyncInsert<&'c mut C, diesel::QueryResult<Vec<M>>, Fut: Send> + Send + 'a,
    {
        <C::Mode as Mode>::ret(write::insert_with(self, conn, Awaited(insert), identity))
    }

    /// [`MasterModel::insert_with_and_publish_async`] with this configuration.
    pub fn insert_one_with_async<'a, M, C, F>(&'a self, conn: &'a mut C, insert: F) -> Ret<'a, C, M>
    where
        C: Exec,
        M: MasterStore<C>,
        F: for<'c> AsyncInsert<&'c mut C, diesel::QueryResult<M>, Fut: Send> + Send + 'a,
    {
        <C::Mode as Mode>::ret(async move {
            one(write::insert_with(self, conn, Awaited(insert), |row| vec![row]).await?)
        })
    }
}

fn identity<M>(rows: Vec<M>) -> Vec<M> {
    rows
}

/// [`MasterConfig::DEFAULT`], where the write methods of [`MasterModel`] borrow it from.
pub(crate) static SYSTEM: MasterConfig = MasterConfig::DEFAULT;

/// The one row a `insert_with` returned.
pub(crate) fn one<M: MasterModel>(mut stored: Vec<M>) -> Result<M> {
    stored.pop().ok_or_else(|| Error::NotFound {
        cqrs_id: M::CQRS_ID,
        pk: "(the row `insert` returned)".to_owned(),
    })
}
