//! The replica state table: for every row a replica has applied a message to, where the last
//! message applied stands in the row's order and whether it was a DELETE (see
//! [`order`](super::order)). A DELETE's state is its tombstone: it keeps a late SAVE of an
//! earlier life from bringing the row back; a live row keeps the time of the DELETE before its
//! life (`floor_us`) for the same reason.

use diesel::prelude::*;

diesel::table! {
    /// The state table created by the replica migrations.
    cqrs_replica_state (cqrs_id, pk) {
        /// The model's `cqrs_id`.
        cqrs_id -> Text,
        /// The primary key as text (strings as they are, other values as JSON).
        pk -> Text,
        /// The revision of the last message applied.
        revision -> BigInt,
        /// Its `cqrs_updated`, in microseconds since the Unix epoch.
        updated_us -> BigInt,
        /// Whether it was a DELETE.
        deleted -> Bool,
        /// The highest outbox sequence number (`x-cqrs-seq`) among the messages applied, if
        /// any carried one.
        seq -> Nullable<BigInt>,
        /// For a live row: the `cqrs_updated` of the last DELETE applied before its life.
        floor_us -> Nullable<BigInt>,
    }
}

/// A state to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = cqrs_replica_state)]
#[doc(hidden)]
pub struct NewState<'a> {
    pub cqrs_id: &'a str,
    pub pk: &'a str,
    pub revision: i64,
    pub updated_us: i64,
    pub deleted: bool,
    pub seq: Option<i64>,
    pub floor_us: Option<i64>,
}

/// A state as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = cqrs_replica_state)]
#[doc(hidden)]
pub struct StoredState {
    pub pk: String,
    pub revision: i64,
    pub updated_us: i64,
    pub deleted: bool,
    pub seq: Option<i64>,
    pub floor_us: Option<i64>,
}

/// The revision and time a placeholder state holds (never a message's), read as no state at
/// all, so that the first message wins. The replica writes placeholders for keys it meets for
/// the first time, to have a row to lock.
pub(crate) const PLACEHOLDER: i64 = i64::MIN;

impl StoredState {
    /// Whether this is a placeholder (nothing applied yet).
    pub(crate) fn is_placeholder(&self) -> bool {
        self.revision == PLACEHOLDER && self.updated_us == PLACEHOLDER
    }
}

/// The replica migrations for PostgreSQL, to copy into your own migrations (in this order).
pub const POSTGRES_REPLICA_UP_SQL: &str = concat!(
    include_str!(
        "../../migrations/postgres-replica/2026-11-28-100000_create_cqrs_tombstone/up.sql"
    ),
    include_str!(
        "../../migrations/postgres-replica/2026-12-01-000000_create_cqrs_replica_state/up.sql"
    ),
    include_str!(
        "../../migrations/postgres-replica/2026-12-07-000000_cqrs_replica_state_order/up.sql"
    ),
);
/// The replica migrations for MySQL/MariaDB, to copy into your own migrations (in this order).
pub const MYSQL_REPLICA_UP_SQL: &str = concat!(
    include_str!("../../migrations/mysql-replica/2026-11-28-100000_create_cqrs_tombstone/up.sql"),
    include_str!(
        "../../migrations/mysql-replica/2026-12-01-000000_create_cqrs_replica_state/up.sql"
    ),
    include_str!(
        "../../migrations/mysql-replica/2026-12-07-000000_cqrs_replica_state_order/up.sql"
    ),
);
/// The replica migrations for SQLite, to copy into your own migrations (in this order).
pub const SQLITE_REPLICA_UP_SQL: &str = concat!(
    include_str!("../../migrations/sqlite-replica/2026-11-28-100000_create_cqrs_tombstone/up.sql"),
    include_str!(
        "../../migrations/sqlite-replica/2026-12-01-000000_create_cqrs_replica_state/up.sql"
    ),
    include_str!(
        "../../migrations/sqlite-replica/2026-12-07-000000_cqrs_replica_state_order/up.sql"
    ),
);

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES_REPLICA_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/postgres-replica");
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_REPLICA_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/mysql-replica");
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_REPLICA_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/sqlite-replica");
