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
use crate::exec::{Dialect, DialectKind};

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
                if dialect.returns_updated_rows() {
                    push_returning::<M, DB>(&mut out, dialect)?;
                }
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
    if !dialect.mysql_like() {
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
        if dialect.mysql_like() {
            out.push_sql("VALUES(");
            out.push_identifier(columns[c])?;
            out.push_sql(")");
        } else {
            out.push_sql("excluded.");
            out.push_identifier(columns[c])?;
        }
        Ok(())
    };
    if dialect.mysql_like() {
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
        if !dialect.caches_returning() {
            out.unsafe_to_cache_prepared();
        }
        out.push_sql(" RETURNING ");
        push_columns(out, None, 0..M::COLUMNS.len(), M::COLUMNS)?;
    }
    Ok(())
}

/// The end of `GREATEST(now, stored`: one microsecond after the stored time.
fn later(dialect: DialectKind) -> &'static str {
    match dialect {
        DialectKind::Mysql | DialectKind::Mariadb => " + INTERVAL 1 MICROSECOND)",
        _ => " + interval '1 microsecond')",
    }
}

impl<M: MasterColumns<DB>, DB: Dialect> QueryFragment<DB> for Stmt<'_, M, DB> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.walk(out)
    }
}

#[cfg(all(
    test,
    feature = "postgres",
    feature = "mysql",
    feature = "mariadb",
    feature = "sqlite"
))]
mod tests;
