//! Choosing the database from a URL, opening connections, and running Diesel (which is
//! synchronous) from async request handlers.
//!
//! Diesel's connection type is a compile-time choice, so the services are generic over it
//! ([`Database`]) and [`DatabaseUrl`] picks the type once, at start-up.

use std::time::Duration;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use cqrs_diesel::{CqrsConnection, SessionSetup};
use diesel::r2d2::{ConnectionManager, Pool, R2D2Connection};
use diesel::result::ConnectionError;
use diesel::{MysqlConnection, PgConnection, SqliteConnection};
use serde::{Deserialize, Deserializer, Serializer};

use crate::error::{ApiError, ServiceError};

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

/// A Diesel connection the example services run on: one of the three backends, each set up by
/// the library's [`SessionSetup`] (MySQL/MariaDB: strict SQL mode; SQLite: a busy timeout, WAL
/// and `synchronous = NORMAL`, so that the relay, the replica worker and the handlers wait for
/// each other's writes instead of failing).
pub trait Database: CqrsConnection + R2D2Connection {
    /// Opens a prepared connection (for the outbox relay and the replica worker, which open
    /// their own).
    fn open(url: &str) -> Result<Self, ConnectionError> {
        let mut conn = Self::establish(url)?;
        SessionSetup::new()
            .apply(&mut conn)
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}

impl Database for PgConnection {}

impl Database for MysqlConnection {}

impl Database for SqliteConnection {}

/// A service's database: a pool of connections of type `C`, and its URL (the relay and the
/// replica worker open connections of their own with it).
pub struct Db<C: R2D2Connection + 'static> {
    pool: Pool<ConnectionManager<C>>,
    url: String,
}

impl<C: R2D2Connection + 'static> Clone for Db<C> {
    fn clone(&self) -> Self {
        Db {
            pool: self.pool.clone(),
            url: self.url.clone(),
        }
    }
}

impl<C: R2D2Connection + 'static> std::fmt::Debug for Db<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("state", &self.pool.state())
            .finish_non_exhaustive()
    }
}

impl<C: Database> Db<C> {
    /// Connects to the database at `url` (of `C`'s backend), waiting up to 10 s for the
    /// first connection, and runs `setup` once on it (creating tables).
    pub async fn connect(
        url: &str,
        setup: impl FnOnce(&mut C) -> Result<(), ServiceError> + Send + 'static,
    ) -> Result<Self, ServiceError> {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || {
            let manager = ConnectionManager::<C>::new(url.clone());
            let pool = Pool::builder()
                .max_size(8)
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(10))
                .connection_customizer(Box::new(SessionSetup::new()))
                .build(manager)?;
            let mut conn = pool.get()?;
            setup(&mut conn)?;
            Ok(Db { pool, url })
        })
        .await?
    }

    /// The URL connections are opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` with a pooled connection on Tokio's blocking threads.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut C) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
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
