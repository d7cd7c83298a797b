//! The session settings a connection of a CQRS service should have, for the connections an
//! application opens itself (its request handlers' pool, the `connect` closures it hands to the
//! relay and the replica worker).
//!
//! The library applies the strict-mode part to the connections it opens on its own (see
//! [`CqrsConnection::prepare_session`]); a master's writes run on the caller's connection,
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
#[cfg(any(feature = "mysql", feature = "sqlite"))]
use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, R2D2Connection};

use crate::connection::{CqrsConnection, DbConn};

/// The settings of [the module](self), applied to one connection by [`apply`](Self::apply) or
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
    pub fn apply<C: CqrsConnection>(&self, conn: &mut C) -> QueryResult<()> {
        match conn.as_db_conn() {
            #[cfg(feature = "postgres")]
            DbConn::Pg(_) => Ok(()),
            #[cfg(feature = "mysql")]
            DbConn::Mysql(conn) => {
                conn.prepare_session()?;
                if self.mysql_read_committed {
                    conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
                }
                Ok(())
            }
            #[cfg(feature = "sqlite")]
            DbConn::Sqlite(conn) => conn.batch_execute(&self.sqlite_pragmas()),
            // `C` is a sync connection: never an async one.
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }

    #[cfg(any(feature = "sqlite", test))]
    fn sqlite_pragmas(&self) -> String {
        let millis = self.sqlite_busy_timeout.as_millis().min(i32::MAX as u128);
        let mut pragmas = format!("PRAGMA busy_timeout = {millis}; PRAGMA synchronous = NORMAL;");
        if self.sqlite_wal {
            pragmas.push_str(" PRAGMA journal_mode = WAL;");
        }
        pragmas
    }
}

impl<C: CqrsConnection + R2D2Connection> CustomizeConnection<C, diesel::r2d2::Error>
    for SessionSetup
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
        let default = SessionSetup::new().sqlite_pragmas();
        assert_eq!(
            default,
            "PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; PRAGMA journal_mode = WAL;"
        );
        let custom = SessionSetup::new()
            .sqlite_busy_timeout(Duration::from_millis(250))
            .sqlite_wal(false)
            .sqlite_pragmas();
        assert_eq!(
            custom,
            "PRAGMA busy_timeout = 250; PRAGMA synchronous = NORMAL;"
        );
    }
}
