//! Replica models shaped like the golden fixture's `author`, once per backend, plus a mapped
//! model (renamed fields, master keys it lacks).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use cqrs_diesel::ReplicaModel;
use uuid::Uuid;

/// What the scenarios read back from any backend.
pub trait AuthorRow: std::fmt::Debug + Send + Sync + 'static {
    const DDL: &'static str;
    type Conn: cqrs_diesel::CqrsConnection;
    /// Every stored row, by id.
    fn load_all(conn: &mut Self::Conn) -> Vec<Self>
    where
        Self: Sized;
    fn id(&self) -> i32;
    fn name(&self) -> &str;
    fn revision(&self) -> i32;
    /// Every field but `cqrs_updated` as the master writes it in `instance_data`.
    fn wire_fields(&self) -> serde_json::Value;
}

pub use crate::master::models::{mysql_schema, pg_schema, sqlite_schema};

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

macro_rules! author_row {
    ($ty:ty, $master:ty, $schema:ident, $conn:ty) => {
        impl AuthorRow for $ty {
            const DDL: &'static str = <$master as crate::master::Author>::DDL;
            type Conn = $conn;
            fn load_all(conn: &mut $conn) -> Vec<Self> {
                use diesel::prelude::*;
                $schema::author::table
                    .order($schema::author::id)
                    .load(conn)
                    .expect("load the replica rows")
            }
            fn id(&self) -> i32 {
                self.id
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn revision(&self) -> i32 {
                self.cqrs_revision
            }
            fn wire_fields(&self) -> serde_json::Value {
                use cqrs_diesel::WireValue;
                use cqrs_diesel::__private::UtcWire;
                serde_json::json!({
                    "cqrs_revision": self.cqrs_revision,
                    "id": self.id,
                    "name": self.name,
                    "email": self.email,
                    "birth_date": self.birth_date.to_wire(),
                    "joined_at": self.joined_at.to_wire_utc(),
                    "active": self.active,
                    "score": self.score,
                    "external_id": self.external_id.to_string(),
                    "bio": self.bio,
                })
            }
        }
    };
}

author_row!(
    PgAuthorReplica,
    crate::master::models::PgAuthor,
    pg_schema,
    diesel::PgConnection
);
author_row!(
    MysqlAuthorReplica,
    crate::master::models::MysqlAuthor,
    mysql_schema,
    diesel::MysqlConnection
);
author_row!(
    SqliteAuthorReplica,
    crate::master::models::SqliteAuthor,
    sqlite_schema,
    diesel::SqliteConnection
);
