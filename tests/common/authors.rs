//! The `author` table of the golden fixture, once per backend (column types differ: MariaDB has
//! no UUID or aware timestamp type, SQLite stores both as text), and its replica models: shared
//! by the integration tests and the replica process they start (`replica_process`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use cqrs_diesel::ReplicaModel;
use uuid::Uuid;

pub mod pg_schema {
    diesel::table! {
        author (id) {
            id -> Integer,
            name -> Text,
            email -> Nullable<Text>,
            birth_date -> Nullable<Date>,
            joined_at -> Timestamptz,
            active -> Bool,
            score -> Double,
            external_id -> Uuid,
            bio -> Nullable<Text>,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

pub mod mysql_schema {
    diesel::table! {
        author (id) {
            id -> Integer,
            name -> Text,
            email -> Nullable<Text>,
            birth_date -> Nullable<Date>,
            joined_at -> Datetime,
            active -> Bool,
            score -> Double,
            external_id -> Text,
            bio -> Nullable<Text>,
            cqrs_revision -> Integer,
            cqrs_updated -> Datetime,
        }
    }
}

pub mod sqlite_schema {
    diesel::table! {
        author (id) {
            id -> Integer,
            name -> Text,
            email -> Nullable<Text>,
            birth_date -> Nullable<Date>,
            joined_at -> TimestamptzSqlite,
            active -> Bool,
            score -> Double,
            external_id -> Text,
            bio -> Nullable<Text>,
            cqrs_revision -> Integer,
            cqrs_updated -> TimestamptzSqlite,
        }
    }
}

#[derive(Debug, Clone, PartialEq, ReplicaModel, diesel::Queryable)]
#[cqrs(id = "author", table = pg_schema::author, backends(postgres))]
pub struct PgAuthorReplica {
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

#[derive(Debug, Clone, PartialEq, ReplicaModel, diesel::Queryable)]
#[cqrs(id = "author", table = mysql_schema::author, backends(mysql))]
pub struct MysqlAuthorReplica {
    pub id: i32,
    pub name: String,
    pub email: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub joined_at: NaiveDateTime,
    pub active: bool,
    pub score: f64,
    pub external_id: String,
    pub bio: Option<String>,
    pub cqrs_revision: i32,
    pub cqrs_updated: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, ReplicaModel, diesel::Queryable)]
#[cqrs(id = "author", table = sqlite_schema::author, backends(sqlite))]
pub struct SqliteAuthorReplica {
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

/// `fields()` on each replica row type: every field but the key, as text (the float with its
/// bits), so tests compare a replica row with a master row field by field.
macro_rules! fields_as_text {
    ($($row:ty),*) => {$(
        impl $row {
            /// Every field but the key, by name, as text.
            #[allow(dead_code)]
            pub fn fields(&self) -> Vec<(&'static str, String)> {
                vec![
                    ("name", format!("{:?}", self.name)),
                    ("email", format!("{:?}", self.email)),
                    ("birth_date", format!("{:?}", self.birth_date)),
                    ("joined_at", format!("{:?}", self.joined_at)),
                    ("active", format!("{:?}", self.active)),
                    ("score", format!("{:?} ({:#x})", self.score, self.score.to_bits())),
                    ("external_id", format!("{:?}", self.external_id)),
                    ("bio", format!("{:?}", self.bio)),
                    ("cqrs_revision", format!("{:?}", self.cqrs_revision)),
                    ("cqrs_updated", format!("{:?}", self.cqrs_updated)),
                ]
            }
        }
    )*};
}

fields_as_text!(PgAuthorReplica, MysqlAuthorReplica, SqliteAuthorReplica);
