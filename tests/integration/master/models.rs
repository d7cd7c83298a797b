//! The golden fixture's `author` model, once per backend (column types differ: MariaDB has no
//! UUID or aware timestamp type, SQLite stores both as text).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use cqrs_diesel::MasterModel;
use uuid::Uuid;

pub use crate::authors::{mysql_schema, pg_schema, sqlite_schema};

/// What the tests need to build and read an author on any backend.
pub trait Author: MasterModel + Clone + std::fmt::Debug + Send + 'static {
    /// The DDL of the `author` table.
    const DDL: &'static str;

    #[allow(clippy::too_many_arguments)]
    fn new(
        id: i32,
        name: &str,
        email: Option<&str>,
        birth_date: Option<NaiveDate>,
        joined_at: DateTime<Utc>,
        active: bool,
        score: f64,
        external_id: Uuid,
        bio: Option<&str>,
    ) -> Self;

    fn name(&self) -> &str;
    fn set_name(&mut self, name: &str);
    fn set_active(&mut self, active: bool);
    fn set_score(&mut self, score: f64);
    fn revision(&self) -> i32;
}

#[derive(Debug, Clone, PartialEq, MasterModel)]
#[cqrs(id = "author", table = pg_schema::author, tracked(name), backends(postgres))]
pub struct PgAuthor {
    pub id: i32,
    pub name: String,
    pub email: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub joined_at: DateTime<Utc>,
    pub active: bool,
    pub score: f64,
    pub external_id: Uuid,
    pub bio: Option<String>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, MasterModel)]
#[cqrs(id = "author", table = mysql_schema::author, tracked(name), backends(mysql, mariadb))]
pub struct MysqlAuthor {
    pub id: i32,
    pub name: String,
    pub email: Option<String>,
    pub birth_date: Option<NaiveDate>,
    #[cqrs(utc)]
    pub joined_at: NaiveDateTime,
    pub active: bool,
    pub score: f64,
    pub external_id: String,
    pub bio: Option<String>,
    pub cqrs_revision: i32,
    pub cqrs_updated: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, MasterModel)]
#[cqrs(id = "author", table = sqlite_schema::author, tracked(name), backends(sqlite))]
pub struct SqliteAuthor {
    pub id: i32,
    pub name: String,
    pub email: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub joined_at: DateTime<Utc>,
    pub active: bool,
    pub score: f64,
    pub external_id: String,
    pub bio: Option<String>,
    pub cqrs_revision: i32,
    pub cqrs_updated: DateTime<Utc>,
}

macro_rules! author_accessors {
    () => {
        fn name(&self) -> &str {
            &self.name
        }
        fn set_name(&mut self, name: &str) {
            self.name = name.to_owned();
        }
        fn set_active(&mut self, active: bool) {
            self.active = active;
        }
        fn set_score(&mut self, score: f64) {
            self.score = score;
        }
        fn revision(&self) -> i32 {
            self.cqrs_revision
        }
    };
}

impl Author for PgAuthor {
    const DDL: &'static str = "CREATE TABLE author (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, birth_date DATE,
        joined_at TIMESTAMPTZ NOT NULL, active BOOLEAN NOT NULL, score DOUBLE PRECISION NOT NULL,
        external_id UUID NOT NULL, bio TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0,
        cqrs_updated TIMESTAMPTZ NOT NULL)";

    fn new(
        id: i32,
        name: &str,
        email: Option<&str>,
        birth_date: Option<NaiveDate>,
        joined_at: DateTime<Utc>,
        active: bool,
        score: f64,
        external_id: Uuid,
        bio: Option<&str>,
    ) -> Self {
        PgAuthor {
            id,
            name: name.into(),
            email: email.map(Into::into),
            birth_date,
            joined_at,
            active,
            score,
            external_id,
            bio: bio.map(Into::into),
            cqrs_revision: 0,
            cqrs_updated: Utc::now(),
        }
    }

    author_accessors!();
}

impl Author for MysqlAuthor {
    const DDL: &'static str = "CREATE TABLE author (
        id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL, email VARCHAR(255), birth_date DATE,
        joined_at DATETIME(6) NOT NULL, active BOOLEAN NOT NULL, score DOUBLE NOT NULL,
        external_id CHAR(36) NOT NULL, bio TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0,
        cqrs_updated DATETIME(6) NOT NULL) DEFAULT CHARSET = utf8mb4";

    fn new(
        id: i32,
        name: &str,
        email: Option<&str>,
        birth_date: Option<NaiveDate>,
        joined_at: DateTime<Utc>,
        active: bool,
        score: f64,
        external_id: Uuid,
        bio: Option<&str>,
    ) -> Self {
        MysqlAuthor {
            id,
            name: name.into(),
            email: email.map(Into::into),
            birth_date,
            joined_at: joined_at.naive_utc(),
            active,
            score,
            external_id: external_id.to_string(),
            bio: bio.map(Into::into),
            cqrs_revision: 0,
            cqrs_updated: Utc::now().naive_utc(),
        }
    }

    author_accessors!();
}

impl Author for SqliteAuthor {
    const DDL: &'static str = "CREATE TABLE author (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, birth_date TEXT,
        joined_at TEXT NOT NULL, active BOOLEAN NOT NULL, score DOUBLE NOT NULL,
        external_id TEXT NOT NULL, bio TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0,
        cqrs_updated TEXT NOT NULL)";

    fn new(
        id: i32,
        name: &str,
        email: Option<&str>,
        birth_date: Option<NaiveDate>,
        joined_at: DateTime<Utc>,
        active: bool,
        score: f64,
        external_id: Uuid,
        bio: Option<&str>,
    ) -> Self {
        SqliteAuthor {
            id,
            name: name.into(),
            email: email.map(Into::into),
            birth_date,
            joined_at,
            active,
            score,
            external_id: external_id.to_string(),
            bio: bio.map(Into::into),
            cqrs_revision: 0,
            cqrs_updated: Utc::now(),
        }
    }

    author_accessors!();
}
