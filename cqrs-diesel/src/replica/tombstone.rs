//! Tombstones: what a DELETE leaves behind so that a late SAVE cannot resurrect the row.

use diesel::prelude::*;

diesel::table! {
    /// The tombstone table created by the replica migrations.
    cqrs_tombstone (cqrs_id, pk) {
        /// The model's `cqrs_id`.
        cqrs_id -> Text,
        /// The primary key as text (strings as they are, other values as JSON).
        pk -> Text,
        /// The DELETE's revision.
        revision -> BigInt,
        /// The DELETE's `cqrs_updated`, in microseconds since the Unix epoch.
        updated_us -> BigInt,
    }
}

/// A tombstone to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = cqrs_tombstone)]
#[doc(hidden)]
pub struct NewTombstone<'a> {
    pub cqrs_id: &'a str,
    pub pk: &'a str,
    pub revision: i64,
    pub updated_us: i64,
}

/// The replica migration for PostgreSQL, to copy into your own migrations.
pub const POSTGRES_REPLICA_UP_SQL: &str = include_str!(
    "../../migrations/postgres-replica/2026-11-28-100000_create_cqrs_tombstone/up.sql"
);
/// The replica migration for MySQL/MariaDB, to copy into your own migrations.
pub const MYSQL_REPLICA_UP_SQL: &str =
    include_str!("../../migrations/mysql-replica/2026-11-28-100000_create_cqrs_tombstone/up.sql");
/// The replica migration for SQLite, to copy into your own migrations.
pub const SQLITE_REPLICA_UP_SQL: &str =
    include_str!("../../migrations/sqlite-replica/2026-11-28-100000_create_cqrs_tombstone/up.sql");

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES_REPLICA_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/postgres-replica");
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_REPLICA_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql-replica");
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_REPLICA_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/sqlite-replica");
