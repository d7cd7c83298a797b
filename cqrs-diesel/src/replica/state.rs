//! The replica state table: for every row a replica has applied a message to, where the last
//! message applied stands in the row's order and whether it was a DELETE (see
//! [`order`](super::order)). A DELETE's state is its tombstone: it keeps a late SAVE of an
//! earlier life from bringing the row back; a live row keeps the time of the DELETE before its
//! life (`floor_us`) for the same reason.

use diesel::QueryResult;
use diesel::deserialize::QueryableByName;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::row::NamedRow;

use crate::exec::{Dialect, Exec};
use crate::master::push_columns;
use crate::replica::sql::{push_replace, rows_per_statement};

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
#[derive(Debug, Clone)]
pub(crate) struct NewState<'a> {
    pub(crate) cqrs_id: &'a str,
    pub(crate) pk: &'a str,
    pub(crate) revision: i64,
    pub(crate) updated_us: i64,
    pub(crate) deleted: bool,
    pub(crate) seq: Option<i64>,
    pub(crate) floor_us: Option<i64>,
}

/// A state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredState {
    pub(crate) pk: String,
    pub(crate) revision: i64,
    pub(crate) updated_us: i64,
    pub(crate) deleted: bool,
    pub(crate) seq: Option<i64>,
    pub(crate) floor_us: Option<i64>,
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

/// The table's name.
const TABLE: &str = "cqrs_replica_state";
/// The key of a state.
const KEY: [&str; 2] = ["cqrs_id", "pk"];
/// Every column of a state, as a state row is written.
const COLUMNS: [&str; 7] = [
    "cqrs_id",
    "pk",
    "revision",
    "updated_us",
    "deleted",
    "seq",
    "floor_us",
];
/// The columns a stored state is read from (its `cqrs_id` is known).
const READ: [&str; 6] = ["pk", "revision", "updated_us", "deleted", "seq", "floor_us"];

/// `"a", "b", ...`
fn push_names<DB: Dialect>(out: &mut AstPass<'_, '_, DB>, names: &[&str]) -> QueryResult<()> {
    push_columns(out, None, 0..names.len(), names)
}

impl<DB: Dialect> QueryableByName<DB> for StoredState {
    fn build<'a>(row: &impl NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        Ok(StoredState {
            pk: DB::read_text(row, "pk")?,
            revision: DB::read_bigint(row, "revision")?,
            updated_us: DB::read_bigint(row, "updated_us")?,
            deleted: DB::read_bool(row, "deleted")?,
            seq: DB::read_optional_bigint(row, "seq")?,
            floor_us: DB::read_optional_bigint(row, "floor_us")?,
        })
    }
}

/// The statements of the state table.
enum StateStmt<'a> {
    /// Inserts a placeholder for each key of `cqrs_id` without a state; a state that exists is
    /// left as it is but written to itself, which locks it, and, where the backend returns
    /// rows, returned.
    Placeholders {
        cqrs_id: &'a str,
        keys: &'a [String],
    },
    /// The states of these keys of `cqrs_id` in key order, locked where the backend locks
    /// rows (after `Placeholders` on a backend without `RETURNING`).
    Select {
        cqrs_id: &'a str,
        keys: &'a [String],
    },
    /// Writes these states, replacing the stored ones.
    Record(&'a [NewState<'a>]),
    /// Deletes every state of a `cqrs_id`.
    Clear(&'a str),
}

/// The placeholder state's values, bound by reference.
const PLACEHOLDER_VALUES: (i64, bool, Option<i64>) = (PLACEHOLDER, true, None);

impl StateStmt<'_> {
    /// `INSERT INTO cqrs_replica_state (...) VALUES (...), ...` of `count` rows, the values of
    /// row `n` written by `row`.
    fn push_insert<'b, DB: Dialect>(
        out: &mut AstPass<'_, 'b, DB>,
        count: usize,
        mut row: impl FnMut(&mut AstPass<'_, 'b, DB>, usize) -> QueryResult<()>,
    ) -> QueryResult<()> {
        if !DB::KIND.caches_batches() {
            out.unsafe_to_cache_prepared();
        }
        out.push_sql("INSERT INTO ");
        out.push_identifier(TABLE)?;
        out.push_sql(" (");
        push_names(out, &COLUMNS)?;
        out.push_sql(") VALUES ");
        for n in 0..count {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_sql("(");
            row(out, n)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

impl<DB: Dialect> QueryFragment<DB> for StateStmt<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let kind = DB::KIND;
        match self {
            StateStmt::Placeholders { cqrs_id, keys } => {
                let (revision, deleted, none) = &PLACEHOLDER_VALUES;
                Self::push_insert(&mut out, keys.len(), |out, n| {
                    DB::bind_text(out, cqrs_id)?;
                    out.push_sql(", ");
                    DB::bind_text(out, &keys[n])?;
                    out.push_sql(", ");
                    DB::bind_i64(out, revision)?;
                    out.push_sql(", ");
                    DB::bind_i64(out, revision)?;
                    out.push_sql(", ");
                    DB::bind_bool(out, deleted)?;
                    out.push_sql(", ");
                    DB::bind_optional_i64(out, none)?;
                    out.push_sql(", ");
                    DB::bind_optional_i64(out, none)
                })?;
                // A column set to itself: a no-op that keeps other errors errors (`INSERT
                // IGNORE` and `ON CONFLICT DO NOTHING` would neither lock nor return the row).
                if kind.mysql_like() {
                    out.push_sql(" ON DUPLICATE KEY UPDATE ");
                    out.push_identifier("revision")?;
                    out.push_sql(" = ");
                    out.push_identifier("revision")?;
                } else {
                    out.push_sql(" ON CONFLICT (");
                    push_names(&mut out, &KEY)?;
                    out.push_sql(") DO UPDATE SET ");
                    out.push_identifier("revision")?;
                    out.push_sql(" = ");
                    out.push_identifier(TABLE)?;
                    out.push_sql(".");
                    out.push_identifier("revision")?;
                }
                if kind.returns_rows() {
                    out.push_sql(" RETURNING ");
                    push_names(&mut out, &READ)?;
                }
            }
            StateStmt::Select { cqrs_id, keys } => {
                out.unsafe_to_cache_prepared();
                out.push_sql("SELECT ");
                push_names(&mut out, &READ)?;
                out.push_sql(" FROM ");
                out.push_identifier(TABLE)?;
                out.push_sql(" WHERE ");
                out.push_identifier("cqrs_id")?;
                out.push_sql(" = ");
                DB::bind_text(&mut out, cqrs_id)?;
                out.push_sql(" AND ");
                out.push_identifier("pk")?;
                out.push_sql(" IN (");
                for (n, key) in keys.iter().enumerate() {
                    if n > 0 {
                        out.push_sql(", ");
                    }
                    DB::bind_text(&mut out, key)?;
                }
                out.push_sql(") ORDER BY ");
                out.push_identifier("pk")?;
                if kind.locks_rows() {
                    out.push_sql(" FOR UPDATE");
                }
            }
            StateStmt::Record(entries) => {
                Self::push_insert(&mut out, entries.len(), |out, n| {
                    let entry = &entries[n];
                    DB::bind_text(out, entry.cqrs_id)?;
                    out.push_sql(", ");
                    DB::bind_text(out, entry.pk)?;
                    out.push_sql(", ");
                    DB::bind_i64(out, &entry.revision)?;
                    out.push_sql(", ");
                    DB::bind_i64(out, &entry.updated_us)?;
                    out.push_sql(", ");
                    DB::bind_bool(out, &entry.deleted)?;
                    out.push_sql(", ");
                    DB::bind_optional_i64(out, &entry.seq)?;
                    out.push_sql(", ");
                    DB::bind_optional_i64(out, &entry.floor_us)
                })?;
                push_replace(&mut out, &KEY, COLUMNS[2..].iter().copied())?;
            }
            StateStmt::Clear(cqrs_id) => {
                out.push_sql("DELETE FROM ");
                out.push_identifier(TABLE)?;
                out.push_sql(" WHERE ");
                out.push_identifier("cqrs_id")?;
                out.push_sql(" = ");
                DB::bind_text(&mut out, cqrs_id)?;
            }
        }
        Ok(())
    }
}

/// Keys and states per statement (7 binds each).
fn per_statement() -> usize {
    rows_per_statement(COLUMNS.len())
}

/// Locks the state rows of `keys` (sorted, without duplicates) of `cqrs_id` for the rest of the
/// transaction, creating placeholders for keys without one, and returns them: one statement
/// per chunk of keys where the backend returns rows (`INSERT ... ON CONFLICT ... RETURNING`,
/// PostgreSQL and SQLite), an insert and a locking `SELECT` on MySQL/MariaDB. Rows are inserted
/// and locked in the order of the keys. SQLite's write transaction (`BEGIN IMMEDIATE`) already
/// holds the database's one write lock: it needs no row lock.
pub(crate) async fn lock<E: Exec>(
    conn: &mut E,
    cqrs_id: &str,
    keys: &[String],
) -> QueryResult<Vec<StoredState>> {
    let mut states = Vec::with_capacity(keys.len());
    for keys in keys.chunks(per_statement()) {
        let placeholders = StateStmt::Placeholders { cqrs_id, keys };
        if E::Backend::KIND.returns_rows() {
            states.extend(conn.load::<StoredState, _>(placeholders).await?);
        } else {
            conn.execute(placeholders).await?;
            let select = StateStmt::Select { cqrs_id, keys };
            states.extend(conn.load::<StoredState, _>(select).await?);
        }
    }
    Ok(states)
}

/// Records these states (replacing the stored ones); returns how many rows the statements
/// reported.
pub(crate) async fn record<E: Exec>(conn: &mut E, entries: &[NewState<'_>]) -> QueryResult<usize> {
    let mut written = 0;
    for chunk in entries.chunks(per_statement()) {
        written += conn.execute(StateStmt::Record(chunk)).await?;
    }
    Ok(written)
}

/// Forgets every state of `cqrs_id` (`bulk-load --clear`).
pub(crate) async fn clear<E: Exec>(conn: &mut E, cqrs_id: &str) -> QueryResult<usize> {
    conn.execute(StateStmt::Clear(cqrs_id)).await
}

#[cfg(all(test, feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod tests {
    //! The SQL of the state table's statements on each backend.

    use super::*;
    use crate::replica::sql::tests::sql;

    #[test]
    fn placeholders_lock_and_return_the_states_in_one_statement_where_the_backend_returns_rows() {
        let keys = ["1".to_owned(), "2".to_owned()];
        let [pg, mysql, sqlite] = sql(&StateStmt::Placeholders {
            cqrs_id: "note",
            keys: &keys,
        });
        let insert = |q: &str| {
            format!(
                "INSERT INTO {q}cqrs_replica_state{q} ({q}cqrs_id{q}, {q}pk{q}, {q}revision{q}, \
                 {q}updated_us{q}, {q}deleted{q}, {q}seq{q}, {q}floor_us{q}) VALUES "
            )
        };
        assert_eq!(
            pg,
            format!(
                "{}($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14) ON CONFLICT \
                 (\"cqrs_id\", \"pk\") DO UPDATE SET \"revision\" = \
                 \"cqrs_replica_state\".\"revision\" RETURNING \"pk\", \"revision\", \
                 \"updated_us\", \"deleted\", \"seq\", \"floor_us\"",
                insert("\"")
            )
        );
        assert_eq!(
            mysql,
            format!(
                "{}(?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
                 `revision` = `revision`",
                insert("`")
            )
        );
        assert_eq!(
            sqlite,
            format!(
                "{}(?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (`cqrs_id`, `pk`) DO \
                 UPDATE SET `revision` = `cqrs_replica_state`.`revision` RETURNING `pk`, \
                 `revision`, `updated_us`, `deleted`, `seq`, `floor_us`",
                insert("`")
            )
        );
    }

    #[test]
    fn without_returning_the_states_are_read_back_locked_in_key_order() {
        let keys = ["1".to_owned(), "2".to_owned()];
        let [_, mysql, _] = sql(&StateStmt::Select {
            cqrs_id: "note",
            keys: &keys,
        });
        assert_eq!(
            mysql,
            "SELECT `pk`, `revision`, `updated_us`, `deleted`, `seq`, `floor_us` FROM \
             `cqrs_replica_state` WHERE `cqrs_id` = ? AND `pk` IN (?, ?) ORDER BY `pk` FOR \
             UPDATE"
        );
    }

    #[test]
    fn recording_states_replaces_every_column_but_the_key() {
        let entry = NewState {
            cqrs_id: "note",
            pk: "1",
            revision: 2,
            updated_us: 3,
            deleted: false,
            seq: None,
            floor_us: None,
        };
        let [pg, mysql, _] = sql(&StateStmt::Record(std::slice::from_ref(&entry)));
        assert!(
            pg.ends_with(
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (\"cqrs_id\", \"pk\") DO UPDATE \
                 SET \"revision\" = excluded.\"revision\", \"updated_us\" = \
                 excluded.\"updated_us\", \"deleted\" = excluded.\"deleted\", \"seq\" = \
                 excluded.\"seq\", \"floor_us\" = excluded.\"floor_us\""
            ),
            "{pg}"
        );
        assert!(
            mysql.ends_with(
                "ON DUPLICATE KEY UPDATE `revision` = VALUES(`revision`), `updated_us` = \
                 VALUES(`updated_us`), `deleted` = VALUES(`deleted`), `seq` = VALUES(`seq`), \
                 `floor_us` = VALUES(`floor_us`)"
            ),
            "{mysql}"
        );
    }

    #[test]
    fn clearing_forgets_the_states_of_one_cqrs_id() {
        let [pg, ..] = sql(&StateStmt::Clear("note"));
        assert_eq!(
            pg,
            "DELETE FROM \"cqrs_replica_state\" WHERE \"cqrs_id\" = $1"
        );
    }
}
