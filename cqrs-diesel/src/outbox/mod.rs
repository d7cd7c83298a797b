//! The transactional outbox: the table master operations write their messages to, in the
//! same transaction as the row, and that [`OutboxRelay`](crate::OutboxRelay) publishes from.
//!
//! # Creating the table
//!
//! The table ships as one Diesel migration per backend. Either run it at start-up:
//!
//! ```no_run
//! use cqrs_diesel::CqrsConnection;
//! use diesel::{Connection, PgConnection};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut conn = PgConnection::establish("postgres://postgres@127.0.0.1/test")?;
//! conn.run_outbox_migrations()?; // creates `cqrs_outbox` unless it exists
//! # Ok(())
//! # }
//! ```
//!
//! or copy the statements of your backend into migrations of your own, in this order, so that
//! `diesel migration run` creates it with the rest of your schema: the table
//! ([`POSTGRES_UP_SQL`], [`MYSQL_UP_SQL`], [`SQLITE_UP_SQL`]), then its `trace_context` and
//! `created_at` columns ([`POSTGRES_TRACE_UP_SQL`], [`MYSQL_TRACE_UP_SQL`],
//! [`SQLITE_TRACE_UP_SQL`]).
//!
//! # Upgrading
//!
//! Run the second migration (`run_outbox_migrations()` does) before deploying a version that
//! writes `trace_context`: versions before it name only `cqrs_id`, `routing_key` and `body`,
//! so they keep working on the upgraded table while both run. On SQLite the upgrade builds
//! the table anew, keeping every entry's id and the AUTOINCREMENT high-water mark. Keep `body` `NOT NULL`: PostgreSQL's one-statement writes rely
//! on that constraint to abort a write whose stored values differ from the message built for
//! it (the write then runs again on the general path).

use std::sync::LazyLock;

use diesel::prelude::*;
use tokio::sync::watch;

pub(crate) mod write;

diesel::table! {
    /// The outbox table created by this crate's migrations.
    cqrs_outbox (id) {
        /// Publication order.
        id -> BigInt,
        /// The model's `cqrs_id`, for operators and logs.
        cqrs_id -> Text,
        /// `<cqrs_id>` or `cqrs.<queue>.<cqrs_id>`.
        routing_key -> Text,
        /// The JSON body, complete.
        body -> Text,
        /// The W3C trace context of the write, as
        /// [`TraceContext::to_column`](cqrs_core::trace::TraceContext::to_column) writes it
        /// (`{"traceparent": "...", "tracestate": "..."}`); NULL without one.
        trace_context -> Nullable<Text>,
        /// When the entry was inserted, set by the database (PostgreSQL `timestamptz`,
        /// MySQL/MariaDB `DATETIME(6)` in the session's time zone, SQLite UTC text
        /// `YYYY-MM-DD HH:MM:SS.SSS`); read it as UTC.
        created_at -> Timestamp,
    }
}

/// An outbox entry about to be written.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = cqrs_outbox)]
pub struct NewOutboxEntry<'a> {
    /// The model's `cqrs_id`.
    pub cqrs_id: &'a str,
    /// The routing key to publish with.
    pub routing_key: &'a str,
    /// The JSON body.
    pub body: &'a str,
}

/// An outbox entry waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = cqrs_outbox)]
pub struct OutboxEntry {
    /// Publication order (ascending).
    pub id: i64,
    /// The model's `cqrs_id`.
    pub cqrs_id: String,
    /// The routing key to publish with.
    pub routing_key: String,
    /// The JSON body.
    pub body: String,
    /// The W3C trace context of the write that queued it (see
    /// [`TraceContext::from_column`](cqrs_core::trace::TraceContext::from_column)); `None`
    /// when the write had none.
    pub trace_context: Option<String>,
}

/// What waits in the outbox: from [`CqrsConnection::outbox_backlog`], and in the relay's
/// [`RelayHealth`](crate::RelayHealth).
///
/// [`CqrsConnection::outbox_backlog`]: crate::CqrsConnection::outbox_backlog
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxBacklog {
    /// Entries waiting to be published.
    pub entries: u64,
    /// The age of the oldest one, by the database's clock (zero when the outbox is empty).
    pub oldest_age: std::time::Duration,
}

/// The row of [`backlog_sql`].
#[derive(QueryableByName)]
pub(crate) struct BacklogRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    entries: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    oldest_age_us: i64,
}

impl BacklogRow {
    pub(crate) fn into_backlog(self) -> OutboxBacklog {
        OutboxBacklog {
            entries: u64::try_from(self.entries).unwrap_or(0),
            // A clock stepped back makes the age negative: report zero.
            oldest_age: std::time::Duration::from_micros(
                u64::try_from(self.oldest_age_us).unwrap_or(0),
            ),
        }
    }
}

/// The count and the age in microseconds of the oldest entry, per backend.
pub(crate) fn backlog_sql(backend: crate::Backend) -> &'static str {
    match backend {
        crate::Backend::Postgres => {
            "SELECT COUNT(*) AS entries, COALESCE(CAST(EXTRACT(EPOCH FROM \
             (clock_timestamp() - MIN(created_at))) * 1000000 AS BIGINT), 0) AS oldest_age_us \
             FROM cqrs_outbox"
        }
        crate::Backend::Mysql => {
            "SELECT COUNT(*) AS entries, CAST(COALESCE(TIMESTAMPDIFF(MICROSECOND, \
             MIN(created_at), NOW(6)), 0) AS SIGNED) AS oldest_age_us FROM cqrs_outbox"
        }
        crate::Backend::Sqlite => {
            "SELECT COUNT(*) AS entries, COALESCE(CAST((julianday('now') - \
             julianday(MIN(created_at))) * 86400000000.0 AS INTEGER), 0) AS oldest_age_us \
             FROM cqrs_outbox"
        }
    }
}

/// The outbox migration for PostgreSQL, to copy into your own migrations.
pub const POSTGRES_UP_SQL: &str =
    include_str!("../../migrations/postgres/2026-11-28-000000_create_cqrs_outbox/up.sql");
/// The outbox migration for MySQL/MariaDB, to copy into your own migrations.
pub const MYSQL_UP_SQL: &str =
    include_str!("../../migrations/mysql/2026-11-28-000000_create_cqrs_outbox/up.sql");
/// The outbox migration for SQLite, to copy into your own migrations.
pub const SQLITE_UP_SQL: &str =
    include_str!("../../migrations/sqlite/2026-11-28-000000_create_cqrs_outbox/up.sql");
/// The second outbox migration for PostgreSQL (`trace_context`, `created_at`), to run after
/// [`POSTGRES_UP_SQL`].
pub const POSTGRES_TRACE_UP_SQL: &str =
    include_str!("../../migrations/postgres/2026-12-08-000000_cqrs_outbox_trace_and_age/up.sql");
/// The second outbox migration for MySQL/MariaDB (`trace_context`, `created_at`), to run
/// after [`MYSQL_UP_SQL`].
pub const MYSQL_TRACE_UP_SQL: &str =
    include_str!("../../migrations/mysql/2026-12-08-000000_cqrs_outbox_trace_and_age/up.sql");
/// The second outbox migration for SQLite (`trace_context`, `created_at`: the table is built
/// anew, keeping ids and the AUTOINCREMENT high-water mark), to run after [`SQLITE_UP_SQL`].
pub const SQLITE_TRACE_UP_SQL: &str =
    include_str!("../../migrations/sqlite/2026-12-08-000000_cqrs_outbox_trace_and_age/up.sql");

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/postgres");
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql");
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/sqlite");

/// Runs the pending migrations of `source` on `conn`.
pub(crate) fn run_migrations<C>(
    conn: &mut C,
    source: diesel_migrations::EmbeddedMigrations,
) -> crate::Result<()>
where
    C: diesel_migrations::MigrationHarness<C::Backend> + diesel::Connection,
{
    conn.run_pending_migrations(source)
        .map(|_| ())
        .map_err(|error| {
            crate::Error::Database(diesel::result::Error::QueryBuilderError(
                format!("the cqrs_outbox migration failed: {error}").into(),
            ))
        })
}

/// Commits seen by this process: relays in the same process wait on it instead of polling.
static COMMITS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// Tells relays in this process that outbox entries may have been committed.
///
/// Master operations call it after their own commit (and [`atomic`](crate::atomic) after its
/// commit); call it yourself after committing a transaction in which you called master
/// operations, if you want the relay to start at once rather than at its next poll.
pub fn notify_commit() {
    COMMITS.send_modify(|count| *count = count.wrapping_add(1));
}

/// A receiver that changes whenever [`notify_commit`] is called.
pub fn subscribe_commits() -> watch::Receiver<u64> {
    COMMITS.subscribe()
}
