//! The database connections this crate works with, and what differs between them.
//!
//! Diesel's `MultiConnection` cannot express upserts or row locks, so each backend has its own
//! implementation of [`CqrsConnection`]: PostgreSQL, MySQL/MariaDB and SQLite, each behind the
//! cargo feature of the same name.

use diesel::connection::{Connection, TransactionManager};
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::exec::{Blocking, Exec};
use crate::outbox::{NewOutboxEntry, OutboxEntry};

/// The statements only this crate runs (the outbox, the relay): a supertrait of
/// [`CqrsConnection`] that applications cannot name, so they stay out of the
/// connection's public methods.
mod sealed {
    use diesel::QueryResult;
    use diesel::connection::{Connection, TransactionManager};

    use crate::outbox::OutboxEntry;

    pub trait Sealed: Connection {
        /// Selects and locks up to `limit` outbox entries in id order, skipping entries another
        /// relay holds (`FOR UPDATE SKIP LOCKED` on PostgreSQL and MySQL/MariaDB; SQLite serialises
        /// writers instead). Must run inside a transaction begun by `begin_relay_transaction`.
        fn outbox_lock_batch(&mut self, limit: i64) -> QueryResult<Vec<OutboxEntry>>;

        fn outbox_delete(&mut self, ids: &[i64]) -> QueryResult<usize>;

        /// Begins a top-level transaction for a relay batch (`BEGIN IMMEDIATE` on SQLite).
        fn begin_relay_transaction(&mut self) -> QueryResult<()> {
            Self::TransactionManager::begin_transaction(self)
        }

        /// Whether a relay batch keeps its rows locked in an open transaction while it publishes
        /// them (`outbox_lock_batch` in a `begin_relay_transaction` transaction). SQLite has one
        /// writer at a time: holding its write lock while the broker answers (or times out) would
        /// stall every write of the application, so there the relay reads the batch without a
        /// transaction and deletes the confirmed entries in a short one of their own.
        const RELAY_HOLDS_ROW_LOCKS: bool = true;
    }
}

/// A Diesel connection this crate can write models and the outbox through: `PgConnection`,
/// `MysqlConnection` or `SqliteConnection` (each behind its cargo feature).
///
/// A pooled connection (`r2d2::PooledConnection`) derefs to one of these: pass `&mut *pooled`.
pub trait CqrsConnection:
    Connection
    + sealed::Sealed
    + Exec<Backend = <Self as Connection>::Backend, Mode = Blocking>
    + Send
    + 'static
{
    /// The backend, for logs and for code that must differ.
    const BACKEND: Backend;

    /// Runs `f` in a transaction suitable for writes: a savepoint when a transaction is already
    /// open (so a failure inside leaves the caller's transaction usable), otherwise a new
    /// transaction (`BEGIN IMMEDIATE` on SQLite, so that a read followed by a write cannot fail
    /// with `SQLITE_BUSY` half way).
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<DieselError>,
    {
        self.transaction(f)
    }

    /// Settings the library needs on every connection it opens itself (the replica worker's,
    /// the relay's, the operator commands'): on MySQL/MariaDB, strict SQL mode
    /// ([`MYSQL_STRICT_MODES`] added to the session's `sql_mode`), so that a value the column
    /// cannot hold (too long, out of range, an impossible date) is an error for its message
    /// instead of a silent truncation or a zero date, whatever the server's default. Nothing
    /// elsewhere. For the connections an application opens itself, use
    /// [`SessionSetup`](crate::SessionSetup), which includes this.
    fn prepare_session(&mut self) -> QueryResult<()> {
        Ok(())
    }

    /// Creates the outbox table if this connection's database does not have it yet, by running
    /// the migration shipped with this crate for the backend (see [`crate::outbox`]).
    fn run_outbox_migrations(&mut self) -> crate::Result<()>;

    /// Creates the replica state table replicas need (`cqrs_replica_state`, see
    /// [`crate::replica`]) unless it exists, by running the replica migrations shipped with this
    /// crate for the backend.
    fn run_replica_migrations(&mut self) -> crate::Result<()>;

    /// Deletes the tombstones (states of deleted rows) of deletes older than `before` (by their
    /// `cqrs_updated`), forgets as old a DELETE kept as the floor of a live row's life, and
    /// returns how many tombstones it deleted. A tombstone only matters while a SAVE older than
    /// its DELETE can still arrive: keep them at least as long as messages live
    /// (`CQRS_MESSAGE_TTL`, plus the longest outage you want to ride out), and call this
    /// periodically, for example daily with `before` = now - 30 days.
    fn purge_tombstones(&mut self, before: chrono::DateTime<chrono::Utc>) -> QueryResult<usize>;

    /// How many entries wait in the outbox (for health checks and tests).
    fn outbox_pending(&mut self) -> QueryResult<i64>;

    /// How many entries wait in the outbox and how old the oldest one is, by the database's
    /// clock (its `created_at`; MySQL/MariaDB compare it with `NOW(6)` in the session's time
    /// zone, so keep one time zone for the writers' and the relay's sessions). One `COUNT(*)`:
    /// the relay runs it every backlog interval, not per batch.
    fn outbox_backlog(&mut self) -> QueryResult<crate::outbox::OutboxBacklog>;

    /// The first `limit` entries waiting in the outbox, in publication order, without locking
    /// or removing them (for operators and tests).
    fn outbox_peek(&mut self, limit: i64) -> QueryResult<Vec<OutboxEntry>>;

    /// Queues outbox entries whose bodies you built yourself (for example to replay messages
    /// or to fill the outbox in a benchmark), with one statement; the relay publishes them in
    /// order. Returns how many were written.
    fn outbox_insert_many(&mut self, entries: &[NewOutboxEntry<'_>]) -> QueryResult<usize>;
}

/// Which database a [`CqrsConnection`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

/// A connection tagged with its backend, as [`MasterHooks`](crate::MasterHooks) receive it, so
/// that a hook can run its own Diesel queries (for example to read related rows).
///
/// A service uses one backend, so a hook usually matches the one arm it needs.
#[non_exhaustive]
pub enum DbConn<'a> {
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Pg(&'a mut diesel::PgConnection),
    /// A MySQL/MariaDB connection.
    #[cfg(feature = "mysql")]
    Mysql(&'a mut diesel::MysqlConnection),
    /// A MariaDB connection through Diesel's MariaDB backend.
    #[cfg(feature = "mariadb")]
    Mariadb(&'a mut diesel::MariadbConnection),
    /// A SQLite connection.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut diesel::SqliteConnection),
    /// An async PostgreSQL connection (diesel-async).
    #[cfg(all(feature = "async", feature = "postgres"))]
    AsyncPg(&'a mut diesel_async::AsyncPgConnection),
    /// An async MySQL/MariaDB connection (diesel-async).
    #[cfg(all(feature = "async", feature = "mysql"))]
    AsyncMysql(&'a mut diesel_async::AsyncMysqlConnection),
    /// An async MariaDB connection through Diesel's MariaDB backend (diesel-async).
    #[cfg(all(feature = "async", feature = "mariadb"))]
    AsyncMariadb(&'a mut diesel_async::AsyncMariadbConnection),
    /// A SQLite connection wrapped for async code (diesel-async).
    #[cfg(all(feature = "async", feature = "sqlite"))]
    AsyncSqlite(
        &'a mut diesel_async::sync_connection_wrapper::SyncConnectionWrapper<
            diesel::SqliteConnection,
        >,
    ),
}

impl std::fmt::Debug for DbConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            #[cfg(feature = "postgres")]
            DbConn::Pg(_) => "Pg",
            #[cfg(feature = "mysql")]
            DbConn::Mysql(_) => "Mysql",
            #[cfg(feature = "mariadb")]
            DbConn::Mariadb(_) => "Mariadb",
            #[cfg(feature = "sqlite")]
            DbConn::Sqlite(_) => "Sqlite",
            #[cfg(all(feature = "async", feature = "postgres"))]
            DbConn::AsyncPg(_) => "AsyncPg",
            #[cfg(all(feature = "async", feature = "mysql"))]
            DbConn::AsyncMysql(_) => "AsyncMysql",
            #[cfg(all(feature = "async", feature = "mariadb"))]
            DbConn::AsyncMariadb(_) => "AsyncMariadb",
            #[cfg(all(feature = "async", feature = "sqlite"))]
            DbConn::AsyncSqlite(_) => "AsyncSqlite",
        };
        f.debug_tuple("DbConn").field(&name).finish()
    }
}

/// The depth of the transaction open on `conn` (0 when none is).
pub(crate) fn transaction_depth<C: Connection>(conn: &mut C) -> u32 {
    C::TransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .map_or(0, |depth| depth.get())
}

/// The SQL modes a MySQL/MariaDB session of the library runs with, added to the server's
/// (see [`CqrsConnection::prepare_session`]).
pub const MYSQL_STRICT_MODES: &str =
    "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO";

/// The public statements every backend writes the same way.
macro_rules! shared_impl {
    () => {
        fn purge_tombstones(
            &mut self,
            before: chrono::DateTime<chrono::Utc>,
        ) -> QueryResult<usize> {
            use crate::replica::state::cqrs_replica_state::dsl;
            let before = before.timestamp_micros();
            diesel::update(dsl::cqrs_replica_state.filter(dsl::floor_us.lt(before)))
                .set(dsl::floor_us.eq(None::<i64>))
                .execute(self)?;
            diesel::delete(
                dsl::cqrs_replica_state.filter(
                    dsl::deleted
                        .eq(true)
                        .and(dsl::updated_us.lt(before))
                        .and(dsl::updated_us.ne(crate::replica::state::PLACEHOLDER)),
                ),
            )
            .execute(self)
        }

        fn outbox_insert_many(&mut self, entries: &[NewOutboxEntry<'_>]) -> QueryResult<usize> {
            crate::exec::run_ready(async {
                Ok(crate::outbox::write::push_many(self, entries).await?)
            })
            .map_err(crate::master::as_diesel_error)
        }

        fn outbox_pending(&mut self) -> QueryResult<i64> {
            use crate::outbox::cqrs_outbox::dsl;
            dsl::cqrs_outbox.count().get_result(self)
        }

        fn outbox_backlog(&mut self) -> QueryResult<crate::outbox::OutboxBacklog> {
            diesel::sql_query(crate::outbox::backlog_sql(Self::BACKEND))
                .get_result::<crate::outbox::BacklogRow>(self)
                .map(crate::outbox::BacklogRow::into_backlog)
        }

        fn outbox_peek(&mut self, limit: i64) -> QueryResult<Vec<OutboxEntry>> {
            use crate::outbox::cqrs_outbox::dsl;
            dsl::cqrs_outbox
                .order(dsl::id)
                .limit(limit)
                .select(OutboxEntry::as_select())
                .load(self)
        }
    };
}

/// The outbox statements PostgreSQL and SQLite share (both have `RETURNING`).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! returning_outbox_impl {
    () => {
        fn outbox_delete(&mut self, ids: &[i64]) -> QueryResult<usize> {
            use crate::outbox::cqrs_outbox::dsl;
            if ids.is_empty() {
                return Ok(0);
            }
            diesel::delete(dsl::cqrs_outbox.filter(dsl::id.eq_any(ids))).execute(self)
        }
    };
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use diesel::PgConnection;

    impl sealed::Sealed for PgConnection {
        returning_outbox_impl!();

        fn outbox_lock_batch(&mut self, limit: i64) -> QueryResult<Vec<OutboxEntry>> {
            use crate::outbox::cqrs_outbox::dsl;
            dsl::cqrs_outbox
                .order(dsl::id)
                .limit(limit)
                .for_update()
                .skip_locked()
                .select(OutboxEntry::as_select())
                .load(self)
        }
    }

    impl CqrsConnection for PgConnection {
        const BACKEND: Backend = Backend::Postgres;

        shared_impl!();

        fn run_outbox_migrations(&mut self) -> crate::Result<()> {
            crate::outbox::run_migrations(self, crate::outbox::POSTGRES_MIGRATIONS)
        }

        fn run_replica_migrations(&mut self) -> crate::Result<()> {
            crate::outbox::run_migrations(self, crate::replica::state::POSTGRES_REPLICA_MIGRATIONS)
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use diesel::MysqlConnection;

    impl sealed::Sealed for MysqlConnection {
        fn outbox_delete(&mut self, ids: &[i64]) -> QueryResult<usize> {
            use std::fmt::Write;
            if ids.is_empty() {
                return Ok(0);
            }
            // `id IN (..)` alone is a range scan that reads, and so waits to lock, the row after
            // the last id, which the relay's next batch (or another relay) may hold while its
            // own delete waits behind this one. The ids are locked by the caller, so all of them
            // are found and `LIMIT` stops the scan at the last. (Integers, inlined: no binds to
            // build one by one, nothing to escape.)
            let mut sql = String::from("DELETE FROM cqrs_outbox WHERE id IN (");
            for (i, id) in ids.iter().enumerate() {
                let separator = if i == 0 { "" } else { "," };
                let _ = write!(sql, "{separator}{id}");
            }
            let _ = write!(sql, ") ORDER BY id LIMIT {}", ids.len());
            diesel::sql_query(sql).execute(self)
        }

        fn outbox_lock_batch(&mut self, limit: i64) -> QueryResult<Vec<OutboxEntry>> {
            use crate::outbox::cqrs_outbox::dsl;
            dsl::cqrs_outbox
                .order(dsl::id)
                .limit(limit)
                .for_update()
                .skip_locked()
                .select(OutboxEntry::as_select())
                .load(self)
        }

        fn begin_relay_transaction(&mut self) -> QueryResult<()> {
            // Under InnoDB's default REPEATABLE READ, a locking read that reaches the end of the
            // index also locks the gap after the last row, which blocks every insert into the
            // outbox until the batch is published. READ COMMITTED locks only the rows read.
            // (The statement applies to the next transaction only.)
            diesel::connection::SimpleConnection::batch_execute(
                self,
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            )?;
            Self::TransactionManager::begin_transaction(self)
        }
    }

    impl CqrsConnection for MysqlConnection {
        const BACKEND: Backend = Backend::Mysql;

        shared_impl!();

        fn run_outbox_migrations(&mut self) -> crate::Result<()> {
            crate::outbox::run_migrations(self, crate::outbox::MYSQL_MIGRATIONS)
        }

        fn run_replica_migrations(&mut self) -> crate::Result<()> {
            crate::outbox::run_migrations(self, crate::replica::state::MYSQL_REPLICA_MIGRATIONS)
        }

        fn prepare_session(&mut self) -> QueryResult<()> {
            diesel::connection::SimpleConnection::batch_execute(
                self,
                &crate::session::mysql_strict_mode_statement(),
            )
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use diesel::SqliteConnection;
    use diesel::connection::AnsiTransactionManager;

    impl sealed::Sealed for SqliteConnection {
        returning_outbox_impl!();

        fn outbox_lock_batch(&mut self, limit: i64) -> QueryResult<Vec<OutboxEntry>> {
            use crate::outbox::cqrs_outbox::dsl;
            dsl::cqrs_outbox
                .order(dsl::id)
                .limit(limit)
                .select(OutboxEntry::as_select())
                .load(self)
        }

        fn begin_relay_transaction(&mut self) -> QueryResult<()> {
            AnsiTransactionManager::begin_transaction_sql(self, "BEGIN IMMEDIATE")
        }

        const RELAY_HOLDS_ROW_LOCKS: bool = false;
    }

    impl CqrsConnection for SqliteConnection {
        const BACKEND: Backend = Backend::Sqlite;

        shared_impl!();

        fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
        where
            F: FnOnce(&mut Self) -> Result<T, E>,
            E: From<DieselError>,
        {
            if transaction_depth(self) > 0 {
                self.transaction(f)
            } else {
                self.immediate_transaction(f)
            }
        }

        fn run_outbox_migrations(&mut self) -> crate::Result<()> {
            crate::outbox::run_migrations(self, crate::outbox::SQLITE_MIGRATIONS)
        }

        fn run_replica_migrations(&mut self) -> crate::Result<()> {
            crate::outbox::run_migrations(self, crate::replica::state::SQLITE_REPLICA_MIGRATIONS)
        }
    }
}
