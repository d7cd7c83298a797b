//! Replica models shaped like the golden fixture's `author`, once per backend (defined in
//! `tests/common/authors.rs`), and how the scenarios read them back.

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
    /// `cqrs_updated` as the master writes it in `instance_data`.
    fn updated_wire(&self) -> serde_json::Value;
    /// The replica's states of `author` rows: (pk, revision, `cqrs_updated` in µs, deleted).
    fn load_states(conn: &mut Self::Conn) -> Vec<(String, i64, i64, bool)>;
}

/// A row of `cqrs_replica_state`, read with plain SQL.
#[derive(diesel::QueryableByName)]
struct StateRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pk: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    revision: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    updated_us: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
}

pub use crate::authors::{
    MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica, mysql_schema, pg_schema,
    sqlite_schema,
};

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
            fn updated_wire(&self) -> serde_json::Value {
                use cqrs_diesel::__private::UtcWire;
                self.cqrs_updated.to_wire_utc()
            }
            fn load_states(conn: &mut $conn) -> Vec<(String, i64, i64, bool)> {
                use diesel::RunQueryDsl;
                diesel::sql_query(
                    "SELECT pk, revision, updated_us, deleted FROM cqrs_replica_state \
                     WHERE cqrs_id = 'author' ORDER BY pk",
                )
                .load::<StateRow>(conn)
                .expect("load the replica states")
                .into_iter()
                .map(|row| (row.pk, row.revision, row.updated_us, row.deleted))
                .collect()
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
