//! [`MasterConfig`]: the clock and message TTL master writes use, and the write methods that
//! take them.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use cqrs_core::Clock;

use super::write::{self, BulkInsert};
use super::{MasterModel, MasterStore};
use crate::connection::CqrsConnection;
use crate::error::{Error, Result};
use crate::exec::{Exec, Mode, Ret};

/// What master writes read from outside the database: the clock they stamp rows and messages
/// with, and the time to live written into the `expires` of their messages.
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
#[derive(Debug, Clone, PartialEq)]
pub struct MasterConfig {
    clock: Clock,
    message_ttl: Option<Duration>,
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

    /// [`MasterModel::bulk_insert_with_and_publish`] with this configuration (sync
    /// connections: `insert` runs Diesel statements of yours).
    pub fn insert_with<M, C, F>(&self, conn: &mut C, insert: F) -> Result<Vec<M>>
    where
        C: CqrsConnection,
        M: MasterStore<C>,
        F: FnMut(&mut C, DateTime<Utc>) -> diesel::QueryResult<Vec<M>> + Send,
    {
        crate::exec::run_ready(write::insert_with(self, conn, insert))
    }
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
