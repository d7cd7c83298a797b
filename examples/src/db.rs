//! Choosing the database from a URL, and the pool of diesel-async connections the request
//! handlers write through.
//!
//! Diesel's connection type is a compile-time choice, so the services are generic over the
//! backend ([`Database`], implemented by Diesel's sync connection types, each naming its
//! diesel-async counterpart) and [`DatabaseUrl`] picks the type once, at start-up. The request
//! handlers run on async connections from a deadpool pool ([`Db`]); the outbox relay and the
//! replica worker, whose work comes in batches, open sync connections of their own
//! ([`Database::open`]).

use std::future::Future;
use std::time::Duration;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use cqrs_diesel::{Awaiting, CqrsConnection, Exec, SessionSetup};
use deadpool::Runtime;
use deadpool::managed::{Manager, Object, Pool};
use diesel::result::ConnectionError;
use diesel::{MysqlConnection, PgConnection, SqliteConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMariadbConnection, AsyncPgConnection};
use serde::{Deserialize, Deserializer, Serializer};

use crate::error::{ApiError, ServiceError};

/// Why no pooled connection could be had: the pool's wait or the connection's set-up timed
/// out, or the database refused the connection.
pub type PoolError = deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>;

/// A connection checked out of a service's pool ([`Db::conn`]); it derefs to the backend's
/// diesel-async connection (pass `&mut *conn`) and goes back to the pool when dropped.
pub type Pooled<C> = Object<<C as Database>::Manager>;

/// A database URL, sorted by backend.
///
/// - `postgres://...` or `postgresql://...`: PostgreSQL;
/// - `mysql://...` or `mariadb://...`: MySQL / MariaDB;
/// - anything else is a SQLite file: a path, `sqlite://path` or a `file:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL URL.
    Postgres(String),
    /// A MySQL/MariaDB URL (`mariadb://` is rewritten to `mysql://`, which Diesel expects).
    Mysql(String),
    /// The path (or `file:` URI) of a SQLite database file.
    Sqlite(String),
}

impl DatabaseUrl {
    /// Sorts `url` by its scheme (see the type's documentation).
    pub fn parse(url: &str) -> DatabaseUrl {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DatabaseUrl::Postgres(url.to_owned())
        } else if url.starts_with("mysql://") {
            DatabaseUrl::Mysql(url.to_owned())
        } else if let Some(rest) = url.strip_prefix("mariadb://") {
            DatabaseUrl::Mysql(format!("mysql://{rest}"))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            DatabaseUrl::Sqlite(path.to_owned())
        } else {
            DatabaseUrl::Sqlite(url.to_owned())
        }
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::Postgres(_) => "PostgreSQL",
            DatabaseUrl::Mysql(_) => "MySQL/MariaDB",
            DatabaseUrl::Sqlite(_) => "SQLite",
        }
    }
}

/// A backend the example services run on, named by its sync Diesel connection type: one of
/// the three, each connection set up by the library's [`SessionSetup`] (MySQL/MariaDB: strict
/// SQL mode and `READ COMMITTED`; SQLite: a busy timeout, WAL and `synchronous = NORMAL`, so
/// that the relay, the replica worker and the handlers wait for each other's writes instead of
/// failing).
pub trait Database: CqrsConnection {
    /// The backend's diesel-async connection, which the request handlers write through:
    /// `AsyncPgConnection`, `AsyncMariadbConnection`, or `SyncConnectionWrapper<SqliteConnection>`
    /// (SQLite has no async driver: the wrapper runs each statement on Tokio's blocking
    /// threads).
    type Async: AsyncConnection + Exec<Mode = Awaiting>;

    /// The pool manager of [`Self::Async`] connections: diesel-async's
    /// [`AsyncDieselConnectionManager`], named here so that generic code can build a pool of
    /// it.
    type Manager: Manager<Type = Self::Async, Error = diesel_async::pooled_connection::PoolError>
        + Send
        + Sync
        + 'static;

    /// The manager of connections to `url` created as `config` says.
    fn manager(url: &str, config: ManagerConfig<Self::Async>) -> Self::Manager;

    /// Opens a prepared sync connection (for the outbox relay and the replica worker, which
    /// open their own, and for creating the tables at start-up).
    fn open(url: &str) -> Result<Self, ConnectionError> {
        let mut conn = Self::establish(url)?;
        SessionSetup::new()
            .apply(&mut conn)
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }

    /// Opens a prepared async connection: what the pool of [`Db`] runs for each new
    /// connection.
    fn open_async(
        url: String,
    ) -> impl Future<Output = Result<Self::Async, ConnectionError>> + Send {
        async move {
            let mut conn = Self::Async::establish(&url).await?;
            SessionSetup::new()
                .apply_async(&mut conn)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
    }
}

impl Database for PgConnection {
    type Async = AsyncPgConnection;
    type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

    fn manager(url: &str, config: ManagerConfig<Self::Async>) -> Self::Manager {
        AsyncDieselConnectionManager::new_with_config(url, config)
    }
}

/// MariaDB: the request handlers write through Diesel's MariaDB backend
/// (`AsyncMariadbConnection`, `mariadb://`), whose `INSERT ... RETURNING` saves the read-back
/// the MySQL backend needs; the relay and the replica worker keep `MysqlConnection`.
impl Database for MysqlConnection {
    type Async = AsyncMariadbConnection;
    type Manager = AsyncDieselConnectionManager<AsyncMariadbConnection>;

    fn manager(url: &str, config: ManagerConfig<Self::Async>) -> Self::Manager {
        let url = match url.split_once("://") {
            Some((_, rest)) => format!("mariadb://{rest}"),
            None => url.to_owned(),
        };
        AsyncDieselConnectionManager::new_with_config(url, config)
    }
}

impl Database for SqliteConnection {
    type Async = SyncConnectionWrapper<SqliteConnection>;
    type Manager = AsyncDieselConnectionManager<SyncConnectionWrapper<SqliteConnection>>;

    fn manager(url: &str, config: ManagerConfig<Self::Async>) -> Self::Manager {
        AsyncDieselConnectionManager::new_with_config(url, config)
    }
}

/// How many connections a service's pool holds at most.
const POOL_SIZE: usize = 8;

/// How long a request waits for a pooled connection, and a new connection for its set-up,
/// before it is answered 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

/// A service's database: a pool of the backend's diesel-async connections, and its URL (the
/// relay and the replica worker open sync connections of their own with it).
pub struct Db<C: Database> {
    pool: Pool<C::Manager>,
    url: String,
}

impl<C: Database> Clone for Db<C> {
    fn clone(&self) -> Self {
        Db {
            pool: self.pool.clone(),
            url: self.url.clone(),
        }
    }
}

impl<C: Database> std::fmt::Debug for Db<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl<C: Database> Db<C> {
    /// Connects to the database at `url` (of `C`'s backend), waiting up to 10 s for the
    /// first connection, and runs `setup` once on a sync connection of its own (creating
    /// tables, running the library's migrations, which are sync).
    pub async fn connect(
        url: &str,
        setup: impl FnOnce(&mut C) -> Result<(), ServiceError> + Send + 'static,
    ) -> Result<Self, ServiceError> {
        let mut config = ManagerConfig::default();
        config.custom_setup = Box::new(|url| Box::pin(C::open_async(url.to_owned())));
        let pool = Pool::builder(C::manager(url, config))
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()?;
        // The first connection: the database answers, and the pool keeps it for the first
        // request.
        drop(pool.get().await?);
        let setup_url = url.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut conn = C::open(&setup_url)?;
            setup(&mut conn)
        })
        .await??;
        Ok(Db {
            pool,
            url: url.to_owned(),
        })
    }

    /// The URL connections are opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the database answers `SELECT 1` on a pooled connection within `within`: the
    /// database check of `/readyz`.
    pub async fn ping(&self, within: Duration) -> Result<(), String> {
        let ping = async {
            let mut conn = self.pool.get().await.map_err(|error| error.to_string())?;
            diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "SELECT 1")
                .await
                .map_err(|error| error.to_string())
        };
        tokio::time::timeout(within, ping)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {within:?}")))
    }

    /// A connection from the pool (503 when none comes within 10 s).
    pub async fn conn(&self) -> Result<Pooled<C>, ApiError> {
        Ok(self.pool.get().await?)
    }
}

/// The current time in UTC at the microsecond precision the databases store: the example
/// stores UTC in portable `TIMESTAMP` columns (see the crate documentation).
pub fn now_utc() -> NaiveDateTime {
    Utc::now().trunc_subsecs(6).naive_utc()
}

/// Serializes a `NaiveDateTime` holding UTC as RFC 3339 with a `Z`, for JSON responses.
pub fn serialize_utc<S: Serializer>(at: &NaiveDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&at.and_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// Reads what [`serialize_utc`] writes (any RFC 3339 time, converted to UTC).
pub fn deserialize_utc<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<NaiveDateTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|at| at.naive_utc())
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("postgres://u@h/db"),
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://h/db"),
            DatabaseUrl::Postgres("postgresql://h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("mysql://root@h/db"),
            DatabaseUrl::Mysql("mysql://root@h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("mariadb://root@h/db"),
            DatabaseUrl::Mysql("mysql://root@h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/a.db"),
            DatabaseUrl::Sqlite("data/a.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse(" accounts.sqlite3 "),
            DatabaseUrl::Sqlite("accounts.sqlite3".into())
        );
    }

    /// One text column named `value`.
    #[derive(diesel::QueryableByName)]
    struct Value {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }

    /// Reads one text value from the database on `conn`.
    async fn read<C>(conn: &mut C, sql: &str) -> diesel::QueryResult<String>
    where
        C: diesel_async::AsyncConnection,
        diesel::query_builder::SqlQuery: diesel_async::methods::LoadQuery<'static, C, Value>,
    {
        let value: Value =
            diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql.to_owned()), conn).await?;
        Ok(value.value)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pooled_sqlite_connections_get_the_session_setup() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("setup.sqlite3").display().to_string();
        let db = Db::<SqliteConnection>::connect(&url, |_| Ok(()))
            .await
            .unwrap();
        let mut conn = db.conn().await.unwrap();
        let timeout = read(
            &mut *conn,
            "SELECT CAST(timeout AS TEXT) AS value FROM pragma_busy_timeout",
        )
        .await
        .unwrap();
        assert_eq!(timeout, "5000");
        let journal = read(
            &mut *conn,
            "SELECT journal_mode AS value FROM pragma_journal_mode",
        )
        .await
        .unwrap();
        assert_eq!(journal, "wal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pooled_mariadb_connections_get_the_session_setup() {
        let url = std::env::var("MYSQL_DATABASE_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        let db = Db::<MysqlConnection>::connect(&url, |_| Ok(()))
            .await
            .unwrap();
        let mut conn = db.conn().await.unwrap();
        let modes = read(&mut *conn, "SELECT @@SESSION.sql_mode AS value")
            .await
            .unwrap();
        for mode in cqrs_diesel::MYSQL_STRICT_MODES.split(',') {
            assert!(modes.split(',').any(|set| set == mode), "{mode} in {modes}");
        }
        // MariaDB and MySQL 5.7 name it `tx_isolation`, MySQL 8 `transaction_isolation`.
        let isolation = match read(&mut *conn, "SELECT @@SESSION.tx_isolation AS value").await {
            Ok(isolation) => isolation,
            Err(_) => read(
                &mut *conn,
                "SELECT @@SESSION.transaction_isolation AS value",
            )
            .await
            .unwrap(),
        };
        assert_eq!(isolation, "READ-COMMITTED");
    }

    #[test]
    fn utc_times_round_trip_through_json() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct At(
            #[serde(serialize_with = "serialize_utc", deserialize_with = "deserialize_utc")]
            NaiveDateTime,
        );
        let at = At(now_utc());
        let json = serde_json::to_string(&at).unwrap();
        assert!(json.ends_with("Z\""), "{json}");
        assert_eq!(serde_json::from_str::<At>(&json).unwrap(), at);
    }
}
