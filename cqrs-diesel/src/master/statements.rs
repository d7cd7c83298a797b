//! The master's statements, built once for every model from its
//! [`MasterColumns`](super::MasterColumns), one query node rendered per backend as Diesel renders
//! its own (`on_conflict_clause.rs`): identifiers quoted by the backend, every value a bind
//! parameter. What differs between backends is a [`Dialect`]: row locks (none on SQLite, which
//! serialises writers), `RETURNING` (none on MySQL/MariaDB, which read the row back), the
//! conflict clause, and the stamp that never goes backwards for one row
//! (`GREATEST(now, stored + 1 µs)`; SQLite reads the clock inside its write transaction).
//!
//! A statement of one row has one SQL text per model, so the connection keeps it prepared
//! (Diesel keys its cache by the text); statements of a varying number of rows, and the
//! operator commands' filtered pages, are prepared each time, so the cache stays bounded.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::query_builder::{AstPass, QueryFragment};

use super::MasterColumns;
use super::exec::{Dialect, DialectKind};

/// The keys a `SELECT` reads: those of rows, or decoded ones.
pub(crate) enum Keys<'a, M: MasterColumns<DB>, DB: Dialect> {
    Rows(&'a [&'a M]),
    // Decoded keys read back by MySQL/MariaDB.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    Owned(Vec<M::Pk>),
}

impl<M: MasterColumns<DB>, DB: Dialect> Keys<'_, M, DB> {
    fn len(&self) -> usize {
        match self {
            Keys::Rows(rows) => rows.len(),
            Keys::Owned(keys) => keys.len(),
        }
    }

    fn walk<'b>(&'b self, n: usize, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match self {
            Keys::Rows(rows) => rows[n].walk_value(M::PK_INDEX, out),
            Keys::Owned(keys) => M::walk_key(&keys[n], out),
        }
    }
}

/// A [`RowFilter`](super::RowFilter) with its keys and time decoded for the model.
pub(crate) struct Filter<M: MasterColumns<DB>, DB: Dialect> {
    pub(crate) pks: Option<Vec<M::Pk>>,
    pub(crate) pk_from: Option<M::Pk>,
    pub(crate) pk_to: Option<M::Pk>,
    pub(crate) updated_since: Option<M::Updated>,
    pub(crate) sql: Option<String>,
}

pub(crate) enum Kind<'a, M: MasterColumns<DB>, DB: Dialect> {
    /// `SELECT` the rows with these keys, in key order, locked when `lock`.
    Select { keys: Keys<'a, M, DB>, lock: bool },
    /// `SELECT` the row whose key MySQL/MariaDB generated last on this connection
    /// (`LAST_INSERT_ID()`), in the statement that reads it.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    SelectLastInsert,
    /// Up to `limit` rows matching `filter`, after the key `after`, in key order.
    Page {
        filter: Filter<M, DB>,
        after: Option<M::Pk>,
        limit: i64,
    },
    /// How many rows match `filter`.
    Count { filter: Filter<M, DB> },
    /// `INSERT` these rows stamped `now`, with their keys unless the database generates them;
    /// with `upsert`, a row whose key exists is updated instead, its revision bumped.
    Insert {
        rows: &'a [&'a M],
        now: &'a M::Updated,
        with_key: bool,
        upsert: bool,
    },
    /// `UPDATE` the stored row with this row's values, stamped `now`, bumping the revision
    /// when `bump`.
    Update {
        row: &'a M,
        now: &'a M::Updated,
        bump: bool,
    },
    /// `DELETE` the row with this row's key.
    Delete { row: &'a M },
}

/// One master statement of model `M` on connection type `C`. Statements that change rows
/// return them as stored (`RETURNING`) where the backend can.
#[doc(hidden)]
pub(crate) struct Stmt<'a, M: MasterColumns<DB>, DB: Dialect> {
    pub(crate) kind: Kind<'a, M, DB>,
    pub(crate) connection: PhantomData<DB>,
}

impl<'a, M: MasterColumns<DB>, DB: Dialect> Stmt<'a, M, DB> {
    pub(crate) fn new(kind: Kind<'a, M, DB>) -> Self {
        Stmt {
            kind,
            connection: PhantomData,
        }
    }
}

/// Writes `"a", "b", ...` for the columns at `indexes`, each prefixed by `qualifier.` when
/// one is given.
pub(crate) fn push_columns<DB: diesel::backend::Backend>(
    out: &mut AstPass<'_, '_, DB>,
    qualifier: Option<&str>,
    indexes: impl Iterator<Item = usize>,
    columns: &[&str],
) -> QueryResult<()> {
    for (n, c) in indexes.enumerate() {
        if n > 0 {
            out.push_sql(", ");
        }
        if let Some(qualifier) = qualifier {
            out.push_identifier(qualifier)?;
            out.push_sql(".");
        }
        out.push_identifier(columns[c])?;
    }
    Ok(())
}

impl<M: MasterColumns<DB>, DB: Dialect> Stmt<'_, M, DB> {
    fn walk<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let dialect = DB::KIND;
        let columns = M::COLUMNS;
        let all = 0..columns.len();
        let (pk, rev, upd) = (M::PK_INDEX, M::REVISION_INDEX, M::UPDATED_INDEX);
        match &self.kind {
            Kind::Select { keys, lock } => {
                if keys.len() > 1 {
                    out.unsafe_to_cache_prepared();
                }
                push_select_from::<M, DB>(&mut out)?;
                out.push_sql(" WHERE ");
                out.push_identifier(columns[pk])?;
                if keys.len() == 1 {
                    out.push_sql(" = ");
                    keys.walk(0, out.reborrow())?;
                } else {
                    out.push_sql(" IN (");
                    for n in 0..keys.len() {
                        if n > 0 {
                            out.push_sql(", ");
                        }
                        keys.walk(n, out.reborrow())?;
                    }
                    out.push_sql(") ORDER BY ");
                    out.push_identifier(columns[pk])?;
                }
                if *lock && dialect.locks_rows() {
                    out.push_sql(" FOR UPDATE");
                }
            }
            Kind::SelectLastInsert => {
                push_select_from::<M, DB>(&mut out)?;
                out.push_sql(" WHERE ");
                out.push_identifier(columns[pk])?;
                out.push_sql(" = LAST_INSERT_ID()");
            }
            Kind::Page {
                filter,
                after,
                limit,
            } => {
                out.unsafe_to_cache_prepared();
                push_select_from::<M, DB>(&mut out)?;
                self.walk_filter(filter, out.reborrow())?;
                if let Some(after) = after {
                    out.push_sql(" AND ");
                    out.push_identifier(columns[pk])?;
                    out.push_sql(" > ");
                    M::walk_key(after, out.reborrow())?;
                }
                out.push_sql(" ORDER BY ");
                out.push_identifier(columns[pk])?;
                out.push_sql(&format!(" LIMIT {}", limit.max(&0)));
            }
            Kind::Count { filter } => {
                out.unsafe_to_cache_prepared();
                out.push_sql("SELECT COUNT(*) AS n FROM ");
                M::walk_table(out.reborrow())?;
                self.walk_filter(filter, out.reborrow())?;
            }
            Kind::Insert {
                rows,
                now,
                with_key,
                upsert,
            } => {
                if rows.len() != 1 {
                    out.unsafe_to_cache_prepared();
                }
                let written: Vec<usize> = all.clone().filter(|&c| *with_key || c != pk).collect();
                out.push_sql("INSERT INTO ");
                M::walk_table(out.reborrow())?;
                out.push_sql(" (");
                push_columns(&mut out, None, written.iter().copied(), columns)?;
                out.push_sql(") VALUES ");
                for (n, row) in rows.iter().enumerate() {
                    out.push_sql(if n == 0 { "(" } else { ", (" });
                    for (i, &c) in written.iter().enumerate() {
                        if i > 0 {
                            out.push_sql(", ");
                        }
                        if c == upd {
                            M::walk_updated(now, out.reborrow())?;
                        } else {
                            row.walk_value(c, out.reborrow())?;
                        }
                    }
                    out.push_sql(")");
                }
                if *upsert {
                    push_conflict::<M, DB>(&mut out, dialect)?;
                }
                push_returning::<M, DB>(&mut out, dialect)?;
            }
            Kind::Update { row, now, bump } => {
                out.push_sql("UPDATE ");
                M::walk_table(out.reborrow())?;
                out.push_sql(" SET ");
                for (n, c) in all.clone().filter(|&c| c != pk && c != rev).enumerate() {
                    if n > 0 {
                        out.push_sql(", ");
                    }
                    out.push_identifier(columns[c])?;
                    out.push_sql(" = ");
                    if c != upd {
                        row.walk_value(c, out.reborrow())?;
                    } else if dialect == DialectKind::Sqlite {
                        M::walk_updated(now, out.reborrow())?;
                    } else {
                        out.push_sql("GREATEST(");
                        M::walk_updated(now, out.reborrow())?;
                        out.push_sql(", ");
                        push_stored::<M, DB>(&mut out, dialect, upd)?;
                        out.push_sql(later(dialect));
                    }
                }
                if *bump {
                    out.push_sql(", ");
                    out.push_identifier(columns[rev])?;
                    out.push_sql(" = ");
                    push_stored::<M, DB>(&mut out, dialect, rev)?;
                    out.push_sql(" + 1");
                }
                out.push_sql(" WHERE ");
                out.push_identifier(columns[pk])?;
                out.push_sql(" = ");
                row.walk_value(pk, out.reborrow())?;
                push_returning::<M, DB>(&mut out, dialect)?;
            }
            Kind::Delete { row } => {
                out.push_sql("DELETE FROM ");
                M::walk_table(out.reborrow())?;
                out.push_sql(" WHERE ");
                out.push_identifier(columns[pk])?;
                out.push_sql(" = ");
                row.walk_value(pk, out.reborrow())?;
                push_returning::<M, DB>(&mut out, dialect)?;
            }
        }
        Ok(())
    }

    /// ` WHERE ...` of a filter (always a `WHERE`, so that more conditions can follow).
    fn walk_filter<'b>(
        &'b self,
        filter: &'b Filter<M, DB>,
        mut out: AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        let columns = M::COLUMNS;
        let pk = columns[M::PK_INDEX];
        out.push_sql(" WHERE 1 = 1");
        if let Some(keys) = &filter.pks {
            if keys.is_empty() {
                out.push_sql(" AND 1 = 0");
            } else {
                out.push_sql(" AND ");
                out.push_identifier(pk)?;
                out.push_sql(" IN (");
                for (n, key) in keys.iter().enumerate() {
                    if n > 0 {
                        out.push_sql(", ");
                    }
                    M::walk_key(key, out.reborrow())?;
                }
                out.push_sql(")");
            }
        }
        if let Some(from) = &filter.pk_from {
            out.push_sql(" AND ");
            out.push_identifier(pk)?;
            out.push_sql(" >= ");
            M::walk_key(from, out.reborrow())?;
        }
        if let Some(to) = &filter.pk_to {
            out.push_sql(" AND ");
            out.push_identifier(pk)?;
            out.push_sql(" <= ");
            M::walk_key(to, out.reborrow())?;
        }
        if let Some(since) = &filter.updated_since {
            out.push_sql(" AND ");
            out.push_identifier(columns[M::UPDATED_INDEX])?;
            out.push_sql(" >= ");
            M::walk_updated(since, out.reborrow())?;
        }
        if let Some(sql) = &filter.sql {
            // The operator's own condition, as given (see `RowFilter::sql`).
            out.push_sql(" AND (");
            out.push_sql(sql);
            out.push_sql(")");
        }
        Ok(())
    }
}

/// Writes `SELECT <every column> FROM <table>`.
fn push_select_from<M: MasterColumns<DB>, DB: Dialect>(
    out: &mut AstPass<'_, '_, DB>,
) -> QueryResult<()> {
    out.push_sql("SELECT ");
    push_columns(out, None, 0..M::COLUMNS.len(), M::COLUMNS)?;
    out.push_sql(" FROM ");
    M::walk_table(out.reborrow())
}

/// The stored value of column `c` in an update: qualified by the table where the statement
/// could also name the proposed row.
fn push_stored<M: MasterColumns<DB>, DB: Dialect>(
    out: &mut AstPass<'_, '_, DB>,
    dialect: DialectKind,
    c: usize,
) -> QueryResult<()> {
    if dialect != DialectKind::Mysql {
        M::walk_table(out.reborrow())?;
        out.push_sql(".");
    }
    out.push_identifier(M::COLUMNS[c])
}

/// The conflict clause of an upsert: every column but the key from the proposed row, the
/// stamp never at or before the stored one, the revision bumped.
pub(crate) fn push_conflict<M: MasterColumns<DB>, DB: Dialect>(
    out: &mut AstPass<'_, '_, DB>,
    dialect: DialectKind,
) -> QueryResult<()> {
    let columns = M::COLUMNS;
    let (pk, rev, upd) = (M::PK_INDEX, M::REVISION_INDEX, M::UPDATED_INDEX);
    let proposed = |out: &mut AstPass<'_, '_, DB>, c: usize| -> QueryResult<()> {
        if dialect == DialectKind::Mysql {
            out.push_sql("VALUES(");
            out.push_identifier(columns[c])?;
            out.push_sql(")");
        } else {
            out.push_sql("excluded.");
            out.push_identifier(columns[c])?;
        }
        Ok(())
    };
    if dialect == DialectKind::Mysql {
        // On a conflict with any unique key: see `MasterStore::cqrs_upsert` for MySQL.
        out.push_sql(" ON DUPLICATE KEY UPDATE ");
    } else {
        out.push_sql(" ON CONFLICT (");
        out.push_identifier(columns[pk])?;
        out.push_sql(") DO UPDATE SET ");
    }
    for (n, c) in (0..columns.len())
        .filter(|&c| c != pk && c != rev)
        .enumerate()
    {
        if n > 0 {
            out.push_sql(", ");
        }
        out.push_identifier(columns[c])?;
        out.push_sql(" = ");
        if c == upd && dialect != DialectKind::Sqlite {
            out.push_sql("GREATEST(");
            proposed(out, c)?;
            out.push_sql(", ");
            push_stored::<M, DB>(out, dialect, upd)?;
            out.push_sql(later(dialect));
        } else {
            proposed(out, c)?;
        }
    }
    out.push_sql(", ");
    out.push_identifier(columns[rev])?;
    out.push_sql(" = ");
    push_stored::<M, DB>(out, dialect, rev)?;
    out.push_sql(" + 1");
    Ok(())
}

/// ` RETURNING <every column>` where the backend has it.
pub(crate) fn push_returning<M: MasterColumns<DB>, DB: Dialect>(
    out: &mut AstPass<'_, '_, DB>,
    dialect: DialectKind,
) -> QueryResult<()> {
    if dialect.returns_rows() {
        out.push_sql(" RETURNING ");
        push_columns(out, None, 0..M::COLUMNS.len(), M::COLUMNS)?;
    }
    Ok(())
}

/// The end of `GREATEST(now, stored`: one microsecond after the stored time.
fn later(dialect: DialectKind) -> &'static str {
    match dialect {
        DialectKind::Mysql => " + INTERVAL 1 MICROSECOND)",
        _ => " + interval '1 microsecond')",
    }
}

impl<M: MasterColumns<DB>, DB: Dialect> QueryFragment<DB> for Stmt<'_, M, DB> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.walk(out)
    }
}

#[cfg(all(test, feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod tests {
    use chrono::NaiveDateTime;
    use diesel::query_builder::QueryFragment;
    use serde_json::{Map, Value};

    use super::*;
    use crate::master::{MasterHooks, MasterModel};

    diesel::table! {
        note (id) {
            id -> BigInt,
            text -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamp,
        }
    }

    /// A model written by hand, as the derive would describe it.
    struct Note {
        id: i64,
        text: String,
        cqrs_revision: i32,
        cqrs_updated: NaiveDateTime,
    }

    impl MasterHooks for Note {}

    impl MasterModel for Note {
        const CQRS_ID: &'static str = "note";
        const PRODUCE: bool = true;
        const TRACKED_FIELDS: &'static [&'static str] = &[];
        const COLUMN_COUNT: usize = 4;

        fn cqrs_pk(&self) -> Value {
            Value::from(self.id)
        }

        fn cqrs_revision(&self) -> i64 {
            i64::from(self.cqrs_revision)
        }

        fn cqrs_instance_data(&self) -> Map<String, Value> {
            Map::new()
        }

        fn cqrs_tracked_data(&self) -> Map<String, Value> {
            Map::new()
        }
    }

    macro_rules! columns {
        ($backend:ty) => {
            impl MasterColumns<$backend> for Note {
                type Updated = NaiveDateTime;
                type Pk = i64;
                const COLUMNS: &'static [&'static str] =
                    &["id", "text", "cqrs_revision", "cqrs_updated"];
                const PK_INDEX: usize = 0;
                const REVISION_INDEX: usize = 2;
                const UPDATED_INDEX: usize = 3;
                const TRACKED_INDEXES: &'static [usize] = &[];

                fn walk_table(out: AstPass<'_, '_, $backend>) -> QueryResult<()> {
                    QueryFragment::<$backend>::walk_ast(&note::table, out)
                }

                fn walk_value<'b>(
                    &'b self,
                    index: usize,
                    mut out: AstPass<'_, 'b, $backend>,
                ) -> QueryResult<()> {
                    use diesel::sql_types::{BigInt, Integer, Text};
                    match index {
                        0 => out.push_bind_param::<BigInt, i64>(&self.id),
                        1 => out.push_bind_param::<Text, String>(&self.text),
                        2 => out.push_bind_param::<Integer, i32>(&self.cqrs_revision),
                        _ => out.push_bind_param::<diesel::sql_types::Timestamp, NaiveDateTime>(
                            &self.cqrs_updated,
                        ),
                    }
                }

                fn walk_updated<'b>(
                    at: &'b NaiveDateTime,
                    mut out: AstPass<'_, 'b, $backend>,
                ) -> QueryResult<()> {
                    out.push_bind_param::<diesel::sql_types::Timestamp, NaiveDateTime>(at)
                }

                fn walk_key<'b>(
                    key: &'b i64,
                    mut out: AstPass<'_, 'b, $backend>,
                ) -> QueryResult<()> {
                    out.push_bind_param::<diesel::sql_types::BigInt, i64>(key)
                }

                fn cqrs_key(&self) -> i64 {
                    self.id
                }

                fn from_row<'a>(
                    _: &impl diesel::row::NamedRow<'a, $backend>,
                ) -> diesel::deserialize::Result<Self> {
                    Err("not read in these tests".into())
                }
            }
        };
    }

    columns!(diesel::pg::Pg);
    columns!(diesel::mysql::Mysql);
    columns!(diesel::sqlite::Sqlite);

    fn row(id: i64) -> Note {
        Note {
            id,
            text: "a".into(),
            cqrs_revision: 0,
            cqrs_updated: NaiveDateTime::default(),
        }
    }

    /// The SQL of `kind` on each backend, without its binds.
    fn sql(kind: impl Fn() -> (Vec<Note>, bool, bool)) -> [String; 3] {
        fn text<DB, Q>(query: &Q) -> String
        where
            DB: diesel::backend::Backend + Default,
            DB::QueryBuilder: Default,
            Q: QueryFragment<DB>,
        {
            let sql = diesel::debug_query::<DB, _>(query).to_string();
            sql.split(" -- binds").next().unwrap_or_default().to_owned()
        }
        let (rows, with_key, upsert) = kind();
        let refs: Vec<&Note> = rows.iter().collect();
        let now = NaiveDateTime::default();
        fn insert<'a, DB: Dialect>(
            rows: &'a [&'a Note],
            now: &'a NaiveDateTime,
            with_key: bool,
            upsert: bool,
        ) -> Stmt<'a, Note, DB>
        where
            Note: MasterColumns<DB, Updated = NaiveDateTime>,
        {
            Stmt::new(Kind::Insert {
                rows,
                now,
                with_key,
                upsert,
            })
        }
        [
            text::<diesel::pg::Pg, _>(&insert::<diesel::pg::Pg>(&refs, &now, with_key, upsert)),
            text::<diesel::mysql::Mysql, _>(&insert::<diesel::mysql::Mysql>(
                &refs, &now, with_key, upsert,
            )),
            text::<diesel::sqlite::Sqlite, _>(&insert::<diesel::sqlite::Sqlite>(
                &refs, &now, with_key, upsert,
            )),
        ]
    }

    #[test]
    fn an_upsert_stamps_later_than_the_stored_time_and_bumps_the_revision_per_backend() {
        let [pg, mysql, sqlite] = sql(|| (vec![row(1)], true, true));
        assert_eq!(
            pg,
            "INSERT INTO \"note\" (\"id\", \"text\", \"cqrs_revision\", \"cqrs_updated\") \
             VALUES ($1, $2, $3, $4) ON CONFLICT (\"id\") DO UPDATE SET \"text\" = \
             excluded.\"text\", \"cqrs_updated\" = GREATEST(excluded.\"cqrs_updated\", \
             \"note\".\"cqrs_updated\" + interval '1 microsecond'), \"cqrs_revision\" = \
             \"note\".\"cqrs_revision\" + 1 RETURNING \"id\", \"text\", \"cqrs_revision\", \
             \"cqrs_updated\""
        );
        assert_eq!(
            mysql,
            "INSERT INTO `note` (`id`, `text`, `cqrs_revision`, `cqrs_updated`) VALUES (?, ?, \
             ?, ?) ON DUPLICATE KEY UPDATE `text` = VALUES(`text`), `cqrs_updated` = \
             GREATEST(VALUES(`cqrs_updated`), `cqrs_updated` + INTERVAL 1 MICROSECOND), \
             `cqrs_revision` = `cqrs_revision` + 1"
        );
        // SQLite: the stamp is bound as computed after reading the stored time under the write
        // lock (`stamp_after_stored`), so the statement takes it as it is.
        assert_eq!(
            sqlite,
            "INSERT INTO `note` (`id`, `text`, `cqrs_revision`, `cqrs_updated`) VALUES (?, ?, \
             ?, ?) ON CONFLICT (`id`) DO UPDATE SET `text` = excluded.`text`, `cqrs_updated` \
             = excluded.`cqrs_updated`, `cqrs_revision` = `note`.`cqrs_revision` + 1 \
             RETURNING `id`, `text`, `cqrs_revision`, `cqrs_updated`"
        );
    }

    #[test]
    fn a_generated_key_insert_leaves_the_key_out() {
        let [pg, _, _] = sql(|| (vec![row(0), row(0)], false, false));
        assert_eq!(
            pg,
            "INSERT INTO \"note\" (\"text\", \"cqrs_revision\", \"cqrs_updated\") VALUES ($1, \
             $2, $3), ($4, $5, $6) RETURNING \"id\", \"text\", \"cqrs_revision\", \
             \"cqrs_updated\""
        );
    }

    #[test]
    fn only_statements_of_one_row_are_kept_prepared() {
        let now = NaiveDateTime::default();
        let (one, two) = (row(1), row(2));
        let single = [&one];
        let pair = [&one, &two];
        let insert = |rows| {
            Stmt::<Note, diesel::pg::Pg>::new(Kind::Insert {
                rows,
                now: &now,
                with_key: true,
                upsert: false,
            })
        };
        let pg = diesel::pg::Pg;
        assert!(insert(&single).is_safe_to_cache_prepared(&pg).unwrap());
        assert!(!insert(&pair).is_safe_to_cache_prepared(&pg).unwrap());
        let select = |keys| Stmt::<Note, diesel::pg::Pg>::new(Kind::Select { keys, lock: true });
        assert!(
            select(Keys::Rows(&single))
                .is_safe_to_cache_prepared(&pg)
                .unwrap()
        );
        assert!(
            !select(Keys::Rows(&pair))
                .is_safe_to_cache_prepared(&pg)
                .unwrap()
        );
    }

    #[test]
    fn locked_reads_lock_where_the_backend_has_row_locks() {
        fn select<'a, DB: Dialect>(rows: &'a [&'a Note]) -> Stmt<'a, Note, DB>
        where
            Note: MasterColumns<DB>,
        {
            Stmt::new(Kind::Select {
                keys: Keys::Rows(rows),
                lock: true,
            })
        }
        let one = row(1);
        let rows = [&one];
        let pg =
            diesel::debug_query::<diesel::pg::Pg, _>(&select::<diesel::pg::Pg>(&rows)).to_string();
        assert!(pg.contains("WHERE \"id\" = $1 FOR UPDATE"), "{pg}");
        let sqlite = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&select::<
            diesel::sqlite::Sqlite,
        >(&rows))
        .to_string();
        assert!(!sqlite.contains("FOR UPDATE"), "{sqlite}");
    }
}
