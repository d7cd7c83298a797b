//! Databases of their own for each test: a PostgreSQL schema, a MariaDB database or a SQLite
//! file, dropped at the end, so tests (and their outbox tables) never see each other's rows.

use std::path::PathBuf;

use std::future::Future;

use cqrs_diesel::diesel::SqliteConnection as SyncSqlite;
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::result::ConnectionError;
use cqrs_diesel::diesel::{Connection, MysqlConnection, PgConnection, SqliteConnection};
use cqrs_diesel::{Awaiting, CqrsConnection, Exec};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection,
};

use crate::support::unique;

/// `PG_DATABASE_URL`, or this machine's local PostgreSQL.
pub fn pg_url() -> String {
    std::env::var("PG_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `MYSQL_DATABASE_URL`, or this machine's local MariaDB.
pub fn mysql_url() -> String {
    std::env::var("MYSQL_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A test database: a place to connect to, and a factory relays can call from other threads.
pub trait TestDb: Send + Sync {
    type Conn: CqrsConnection;
    /// The diesel-async connection to the same database.
    type AsyncConn: Exec<Mode = Awaiting, Backend = <Self::Conn as Exec>::Backend>
        + diesel_async::AsyncConnection;

    /// A new async connection, set up as [`connect`](Self::connect) sets up a sync one.
    fn connect_async(&self) -> impl Future<Output = Self::AsyncConn> + Send;

    /// A connector that can be moved into a relay.
    fn connector(&self) -> Box<dyn Fn() -> Result<Self::Conn, ConnectionError> + Send + Sync>;

    /// How the `replica_process` binary finds this database (`CQRS_TEST_*` variables).
    fn process_env(&self) -> Vec<(&'static str, String)>;

    /// A new connection (panics when the database is unreachable: the tests need it).
    fn connect(&self) -> Self::Conn {
        (self.connector())().expect("the test database accepts connections")
    }

    /// Runs SQL statements (schema set-up).
    fn execute(&self, sql: &str) {
        self.connect()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A PostgreSQL schema of its own, put first on the `search_path` of every connection.
pub struct PgDb {
    pub schema: String,
}

impl PgDb {
    pub fn new(tag: &str) -> Self {
        let schema = unique(tag).to_lowercase();
        let mut conn = PgConnection::establish(&pg_url()).expect("PostgreSQL is up");
        conn.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .expect("create schema");
        PgDb { schema }
    }
}

impl TestDb for PgDb {
    type Conn = PgConnection;
    type AsyncConn = AsyncPgConnection;

    fn connect_async(&self) -> impl Future<Output = AsyncPgConnection> + Send {
        let schema = self.schema.clone();
        async move {
            let mut conn = AsyncPgConnection::establish(&pg_url())
                .await
                .expect("PostgreSQL accepts async connections");
            conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
                .await
                .expect("set the search path");
            conn
        }
    }

    fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CQRS_TEST_BACKEND", "postgres".into()),
            ("CQRS_TEST_DATABASE_URL", pg_url()),
            ("CQRS_TEST_PG_SCHEMA", self.schema.clone()),
        ]
    }

    fn connector(&self) -> Box<dyn Fn() -> Result<PgConnection, ConnectionError> + Send + Sync> {
        let url = pg_url();
        let schema = self.schema.clone();
        Box::new(move || {
            let mut conn = PgConnection::establish(&url)?;
            conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&pg_url()) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema));
        }
    }
}

/// A MariaDB database of its own.
pub struct MysqlDb {
    pub database: String,
}

impl MysqlDb {
    pub fn new(tag: &str) -> Self {
        let database = unique(tag).to_lowercase().replace('-', "_");
        let mut conn = MysqlConnection::establish(&mysql_url()).expect("MariaDB is up");
        conn.batch_execute(&format!("CREATE DATABASE `{database}`"))
            .expect("create database");
        MysqlDb { database }
    }

    pub fn url(&self) -> String {
        let base = mysql_url();
        let server = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(head, _)| head);
        format!("{server}/{}", self.database)
    }

    /// The same database's URL for Diesel's MariaDB backend (`mariadb://`).
    pub fn mariadb_url(&self) -> String {
        let url = self.url();
        match url.split_once("://") {
            Some((_, rest)) => format!("mariadb://{rest}"),
            None => url,
        }
    }
}

impl TestDb for MysqlDb {
    type Conn = MysqlConnection;
    type AsyncConn = AsyncMysqlConnection;

    fn connect_async(&self) -> impl Future<Output = AsyncMysqlConnection> + Send {
        let url = self.url();
        async move {
            AsyncMysqlConnection::establish(&url)
                .await
                .expect("MariaDB accepts async connections")
        }
    }

    fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CQRS_TEST_BACKEND", "mariadb".into()),
            ("CQRS_TEST_DATABASE_URL", self.url()),
        ]
    }

    fn connector(&self) -> Box<dyn Fn() -> Result<MysqlConnection, ConnectionError> + Send + Sync> {
        let url = self.url();
        Box::new(move || MysqlConnection::establish(&url))
    }
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = MysqlConnection::establish(&mysql_url()) {
            let _ = conn.batch_execute(&format!("DROP DATABASE `{}`", self.database));
        }
    }
}

/// A SQLite file of its own (WAL, busy timeout), removed at the end.
pub struct SqliteDb {
    pub path: PathBuf,
}

impl SqliteDb {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.sqlite3", unique(tag)));
        let db = SqliteDb { path };
        db.execute("PRAGMA journal_mode = WAL");
        db
    }
}

impl TestDb for SqliteDb {
    type Conn = SqliteConnection;
    type AsyncConn = SyncConnectionWrapper<SyncSqlite>;

    fn connect_async(&self) -> impl Future<Output = Self::AsyncConn> + Send {
        std::future::ready(SyncConnectionWrapper::new(self.connect()))
    }

    fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CQRS_TEST_BACKEND", "sqlite".into()),
            (
                "CQRS_TEST_DATABASE_URL",
                self.path.to_string_lossy().into_owned(),
            ),
        ]
    }

    fn connector(
        &self,
    ) -> Box<dyn Fn() -> Result<SqliteConnection, ConnectionError> + Send + Sync> {
        let path = self.path.to_string_lossy().into_owned();
        Box::new(move || {
            let mut conn = SqliteConnection::establish(&path)?;
            conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
