//! The session settings a connection of a CQRS service should have, for the connections an
//! application opens itself (its request handlers' pool, the `connect` closures it hands to the
//! relay and the replica worker).
//!
//! The library applies the strict-mode part to the connections it opens on its own (see
//! [`CqrsConnection::prepare_session`](crate::CqrsConnection::prepare_session)); a master's writes run on the caller's connection,
//! which only the caller can set up. [`SessionSetup`] is that setup, once per new connection:
//!
//! - **MySQL/MariaDB**: strict SQL mode ([`MYSQL_STRICT_MODES`](crate::MYSQL_STRICT_MODES)
//!   added to the session's `sql_mode`), so that a value the column cannot hold is refused
//!   instead of stored truncated or as a zero date and then published as the caller wrote it;
//!   and the `READ COMMITTED` isolation level (Django's default on MySQL), under which InnoDB
//!   takes no gap locks for searches: in `REPEATABLE READ`, two transactions creating rows with
//!   new keys in the same gap lock it for each other and one fails with a deadlock.
//! - **SQLite**: a busy timeout (writers, the relay and the worker wait for each other instead
//!   of failing with `SQLITE_BUSY`), write-ahead logging (readers do not wait for writers; the
//!   setting is the database file's, kept across connections) and `synchronous = NORMAL`
//!   (durable at each checkpoint, not each commit; safe against corruption in WAL mode).
//! - **PostgreSQL**: nothing.
//!
//! ```no_run
//! use cqrs_diesel::SessionSetup;
//! use diesel::r2d2::{ConnectionManager, Pool};
//! use diesel::SqliteConnection;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::builder()
//!     .connection_customizer(Box::new(SessionSetup::new()))
//!     .build(ConnectionManager::<SqliteConnection>::new("service.db"))?;
//! # let _ = pool;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use diesel::QueryResult;
use diesel::r2d2::{CustomizeConnection, R2D2Connection};

#[cfg(feature = "async")]
use crate::Awaiting;
use crate::connection::{Backend, MYSQL_STRICT_MODES};
use crate::{Blocking, Dialect, DialectKind, Exec};

/// The settings of [the module](self), applied to one connection by [`apply`](Self::apply) (a
/// sync connection), by `apply_async` (a diesel-async connection, with the `async` feature) or
/// to every connection an r2d2 pool opens (it is a `CustomizeConnection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSetup {
    sqlite_busy_timeout: Duration,
    sqlite_wal: bool,
    mysql_read_committed: bool,
}

impl Default for SessionSetup {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionSetup {
    /// The settings described in [the module](self): a 5 s SQLite busy timeout and WAL,
    /// MySQL/MariaDB in strict mode and `READ COMMITTED`.
    pub const fn new() -> Self {
        SessionSetup {
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_wal: true,
            mysql_read_committed: true,
        }
    }

    /// Whether MySQL/MariaDB sessions use `READ COMMITTED` (default on). Off keeps the
    /// server's level (InnoDB's default is `REPEATABLE READ`), for an application that relies
    /// on it; concurrent creates may then deadlock, and writes that own their transaction run
    /// again a few times when they do (see [`Error::is_conflict`](crate::Error::is_conflict)).
    pub const fn mysql_read_committed(mut self, on: bool) -> Self {
        self.mysql_read_committed = on;
        self
    }

    /// How long a SQLite connection waits for another's write lock before `SQLITE_BUSY`
    /// (milliseconds are kept; default 5 s).
    pub const fn sqlite_busy_timeout(mut self, timeout: Duration) -> Self {
        self.sqlite_busy_timeout = timeout;
        self
    }

    /// Whether to switch a SQLite database to write-ahead logging (default on). Off for a
    /// database on a file system without shared memory (some network mounts), where WAL is
    /// unavailable.
    pub const fn sqlite_wal(mut self, on: bool) -> Self {
        self.sqlite_wal = on;
        self
    }

    /// Applies the settings to `conn`. Run it before the connection's first transaction:
    /// SQLite cannot change its journal mode inside one.
    pub fn apply<C>(&self, conn: &mut C) -> QueryResult<()>
    where
        C: Exec<Mode = Blocking> + diesel::connection::SimpleConnection,
    {
        for statement in self.statements(backend_of::<C::Backend>()) {
            conn.batch_execute(&statement)?;
        }
        Ok(())
    }

    /// [`apply`](Self::apply) on a diesel-async connection: `AsyncPgConnection`,
    /// `AsyncMysqlConnection` or `SyncConnectionWrapper<SqliteConnection>` (whose statements
    /// run on Tokio's blocking threads, as all of its statements do). The same statements as
    /// `apply`; run it before the connection's first transaction.
    ///
    /// For a pool of diesel-async connections (deadpool, bb8), run it in the connection
    /// manager's `ManagerConfig::custom_setup`, after `establish`, so that every connection the
    /// pool opens is set up once (the example services of this repository do).
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use cqrs_diesel::SessionSetup;
    /// use diesel::ConnectionError;
    /// use diesel_async::{AsyncConnection, AsyncPgConnection};
    ///
    /// let mut conn = AsyncPgConnection::establish("postgres://localhost/service").await?;
    /// SessionSetup::new()
    ///     .apply_async(&mut conn)
    ///     .await
    ///     .map_err(ConnectionError::CouldntSetupConfiguration)?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "async")]
    pub async fn apply_async<C>(&self, conn: &mut C) -> QueryResult<()>
    where
        C: Exec<Mode = Awaiting> + diesel_async::SimpleAsyncConnection,
    {
        for statement in self.statements(backend_of::<C::Backend>()) {
            conn.batch_execute(&statement).await?;
        }
        Ok(())
    }

    /// The statements [`apply`](Self::apply) and `apply_async` run on a new connection to
    /// `backend`, in order, each a `batch_execute` of its own: the one place their SQL is
    /// written.
    pub(crate) fn statements(&self, backend: Backend) -> Vec<String> {
        match backend {
            Backend::Postgres => Vec::new(),
            Backend::Mysql => {
                let mut statements = vec![mysql_strict_mode_statement()];
                if self.mysql_read_committed {
                    statements.push(MYSQL_READ_COMMITTED.to_owned());
                }
                statements
            }
            Backend::Sqlite => vec![self.sqlite_pragmas()],
        }
    }

    fn sqlite_pragmas(&self) -> String {
        let millis = self.sqlite_busy_timeout.as_millis().min(i32::MAX as u128);
        let mut pragmas = format!("PRAGMA busy_timeout = {millis}; PRAGMA synchronous = NORMAL;");
        if self.sqlite_wal {
            pragmas.push_str(" PRAGMA journal_mode = WAL;");
        }
        pragmas
    }
}

/// Makes every later transaction of a MySQL/MariaDB session `READ COMMITTED`.
const MYSQL_READ_COMMITTED: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// The statement that adds [`MYSQL_STRICT_MODES`] to a MySQL/MariaDB session's `sql_mode`
/// (keeping the modes the session has).
pub(crate) fn mysql_strict_mode_statement() -> String {
    format!(
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), \
         '{MYSQL_STRICT_MODES}')"
    )
}

/// The session settings' backend for a dialect: both MariaDB backends take MySQL's.
fn backend_of<DB: Dialect>() -> Backend {
    match DB::KIND {
        DialectKind::Postgres => Backend::Postgres,
        DialectKind::Mysql | DialectKind::Mariadb => Backend::Mysql,
        DialectKind::Sqlite => Backend::Sqlite,
    }
}

impl<C> CustomizeConnection<C, diesel::r2d2::Error> for SessionSetup
where
    C: Exec<Mode = Blocking> + R2D2Connection,
{
    fn on_acquire(&self, conn: &mut C) -> Result<(), diesel::r2d2::Error> {
        self.apply(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_pragmas_follow_the_settings() {
        assert_eq!(
            SessionSetup::new().statements(Backend::Sqlite),
            ["PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; PRAGMA journal_mode = WAL;"]
        );
        let custom = SessionSetup::new()
            .sqlite_busy_timeout(Duration::from_millis(250))
            .sqlite_wal(false)
            .statements(Backend::Sqlite);
        assert_eq!(
            custom,
            ["PRAGMA busy_timeout = 250; PRAGMA synchronous = NORMAL;"]
        );
    }

    #[test]
    fn mysql_sessions_are_strict_and_read_committed_unless_asked_not_to_be() {
        let strict = "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), \
                      'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO')";
        assert_eq!(
            SessionSetup::new().statements(Backend::Mysql),
            [
                strict,
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
            ]
        );
        assert_eq!(
            SessionSetup::new()
                .mysql_read_committed(false)
                .statements(Backend::Mysql),
            [strict]
        );
    }

    #[test]
    fn postgres_sessions_need_nothing() {
        assert!(SessionSetup::new().statements(Backend::Postgres).is_empty());
    }

    /// `PRAGMA busy_timeout` as a connection reports it.
    #[cfg(feature = "sqlite")]
    #[derive(diesel::QueryableByName)]
    struct BusyTimeout {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        timeout: i32,
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn apply_sets_up_a_sqlite_connection() {
        use diesel::{Connection, RunQueryDsl, SqliteConnection};
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        SessionSetup::new()
            .sqlite_busy_timeout(Duration::from_millis(1234))
            .apply(&mut conn)
            .unwrap();
        let busy: BusyTimeout = diesel::sql_query("PRAGMA busy_timeout")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(busy.timeout, 1234);
    }

    #[cfg(all(feature = "sqlite", feature = "async"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn apply_async_sets_up_a_wrapped_sqlite_connection() {
        use diesel::SqliteConnection;
        use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(":memory:")
            .await
            .unwrap();
        SessionSetup::new()
            .sqlite_busy_timeout(Duration::from_millis(4321))
            .apply_async(&mut conn)
            .await
            .unwrap();
        let busy: BusyTimeout = diesel::sql_query("PRAGMA busy_timeout")
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(busy.timeout, 4321);
    }
}
