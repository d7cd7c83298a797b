//! The row operations master writes are made of, written once for every backend and both
//! executors, from the statements of [`statements`](super::statements): PostgreSQL and SQLite
//! return written rows with `RETURNING`, MariaDB (its own backend) those of an `INSERT` or a
//! `DELETE`; the MySQL backend reads them back in the same transaction.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::QueryResult;
use serde_json::Value;

use super::columns::{Loaded, MasterColumns, RowOf};
use super::statements::{Filter, Keys, Kind, Stmt};
use super::{RowFilter, UpdatedAt, decode_key, sql};
use crate::exec::{Dialect, DialectKind, Exec, Int};

/// The error of a write that must return its row and returned none.
fn missing_row() -> diesel::result::Error {
    diesel::result::Error::NotFound
}

/// Runs a statement returning rows of `M`.
async fn load<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    statement: Stmt<'_, M, E::Backend>,
) -> QueryResult<Vec<M>> {
    let rows: Vec<Loaded<M>> = conn.load(statement).await?;
    Ok(rows.into_iter().map(|row| row.0).collect())
}

/// Runs a statement returning at most one row of `M`.
async fn load_first<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    statement: Stmt<'_, M, E::Backend>,
) -> QueryResult<Option<M>> {
    Ok(load(conn, statement).await?.into_iter().next())
}

fn returns_rows<DB: Dialect>() -> bool {
    DB::KIND.returns_rows()
}

/// Runs a write: its rows as `RETURNING` gives them where the backend has it, otherwise `None`
/// (MySQL/MariaDB), and the caller reads them back in the same transaction.
async fn returning<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    statement: Stmt<'_, M, E::Backend>,
) -> QueryResult<Option<Vec<M>>> {
    if returns_rows::<E::Backend>() {
        return load(conn, statement).await.map(Some);
    }
    conn.execute(statement).await?;
    Ok(None)
}

/// The time a write stamps, in the model's type.
fn at<M: MasterColumns<DB>, DB: Dialect>(now: DateTime<Utc>) -> M::Updated {
    <M::Updated as UpdatedAt>::from_utc(now)
}

/// The time to stamp updated `rows` with. PostgreSQL and MySQL/MariaDB keep the stamp from
/// going backwards in SQL (`GREATEST(now, stored + 1 µs)`): the clock's now. SQLite stores
/// times as text and has no arithmetic on it at the microsecond, so the stored times are read
/// first and the stamp is never at or before any of them; the write transaction (`BEGIN
/// IMMEDIATE`) already holds the database's one write lock, so no other writer changes them in
/// between.
async fn stamp<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    rows: &[&M],
    now: DateTime<Utc>,
) -> QueryResult<M::Updated> {
    if E::Backend::KIND != DialectKind::Sqlite {
        return Ok(at::<M, E::Backend>(now));
    }
    let stored = load(conn, select(Keys::Rows(rows), false)).await?;
    let latest = stored
        .iter()
        .filter_map(|row| {
            row.cqrs_updated_wire()
                .as_str()
                .and_then(|at| cqrs_core::parse_timestamp(at).ok())
        })
        .map(|at| at.with_timezone(&Utc))
        .max();
    let at = match latest {
        Some(latest) if latest >= now => latest + TimeDelta::microseconds(1),
        _ => now,
    };
    Ok(<M::Updated as UpdatedAt>::from_utc(at))
}

fn select<'a, M: MasterColumns<DB>, DB: Dialect>(
    keys: Keys<'a, M, DB>,
    lock: bool,
) -> Stmt<'a, M, DB> {
    Stmt::new(Kind::Select { keys, lock })
}

fn insert<'a, M: MasterColumns<DB>, DB: Dialect>(
    rows: &'a [&'a M],
    now: &'a M::Updated,
    with_key: bool,
    upsert: bool,
) -> Stmt<'a, M, DB> {
    Stmt::new(Kind::Insert {
        rows,
        now,
        with_key,
        upsert,
    })
}

/// Reads the stored row with `row`'s key, locking it (`FOR UPDATE`, where the backend has it)
/// when `lock` is set.
pub(crate) async fn find<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    row: &M,
    lock: bool,
) -> QueryResult<Option<M>> {
    let rows = [row];
    load_first(conn, select(Keys::Rows(&rows), lock)).await
}

/// Reads (and with `lock`, locks) the stored rows with these rows' keys, in key order.
pub(crate) async fn find_many<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    rows: &[&M],
    lock: bool,
) -> QueryResult<Vec<M>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    load(conn, select(Keys::Rows(rows), lock)).await
}

/// Updates the stored row with `row`'s values and a new stamp, bumping the revision when
/// `bump` is set; `None` when no row matched.
pub(crate) async fn update<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    row: &M,
    bump: bool,
    now: DateTime<Utc>,
) -> QueryResult<Option<M>> {
    let kind = E::Backend::KIND;
    if bump && kind.returns_rows() && !kind.returns_updated_rows() {
        // MariaDB returns no rows from an `UPDATE` but does from an `INSERT`: the caller has
        // read and locked the row, so the upsert updates it and returns it, one statement
        // instead of the update and a read.
        return upsert(conn, row, now).await.map(Some);
    }
    let now = stamp(conn, &[row], now).await?;
    let update = Stmt::new(Kind::Update {
        row,
        now: &now,
        bump,
    });
    if kind.returns_updated_rows() {
        return load_first(conn, update).await;
    }
    conn.execute(update).await?;
    find(conn, row, false).await
}

/// Inserts `row` (with its key) stamped now.
pub(crate) async fn insert_one<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    row: &M,
    now: DateTime<Utc>,
) -> QueryResult<M> {
    let now = at::<M, E::Backend>(now);
    let rows = [row];
    let statement = insert(&rows, &now, true, false);
    let stored = match returning(conn, statement).await? {
        Some(stored) => stored.into_iter().next(),
        None => find(conn, row, false).await?,
    };
    stored.ok_or_else(missing_row)
}

/// Inserts `row` or, when its key exists, updates the stored row with its values and bumps
/// the revision, in one statement; the stamp never at or before the stored one.
pub(crate) async fn upsert<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    row: &M,
    now: DateTime<Utc>,
) -> QueryResult<M> {
    let now = stamp(conn, &[row], now).await?;
    let rows = [row];
    let statement = insert(&rows, &now, true, true);
    if let Some(stored) = returning(conn, statement).await? {
        let stored = stored.into_iter().next().ok_or_else(missing_row)?;
        return same_keys::<M, E>(&rows, vec![stored]).map(|mut one| one.remove(0));
    }
    // `ON DUPLICATE KEY UPDATE` acts on a conflict with any unique key: a row that collided
    // with another row on another unique column updated that row, and this one does not
    // exist. The write's transaction rolls that back.
    find(conn, row, false)
        .await?
        .ok_or_else(|| sql::collided_on_another_unique_key(M::CQRS_ID))
}

/// The rows an upsert returned, checked to be the rows it was given (same keys, same order):
/// on MariaDB, `ON DUPLICATE KEY UPDATE ... RETURNING` returns the row it updated, which is
/// another row when the insert collided with it on a unique key other than the primary key.
/// The write's transaction rolls that update back.
fn same_keys<M: RowOf<E>, E: Exec>(sent: &[&M], stored: Vec<M>) -> QueryResult<Vec<M>> {
    use cqrs_core::WireValue;
    // `ON CONFLICT (pk)` (PostgreSQL, SQLite) cannot update another row: nothing to compare.
    if !E::Backend::KIND.mysql_like() {
        return Ok(stored);
    }
    let collided = stored.len() != sent.len()
        || sent
            .iter()
            .zip(&stored)
            .any(|(sent, stored)| sent.cqrs_key().to_wire() != stored.cqrs_key().to_wire());
    if collided {
        return Err(sql::collided_on_another_unique_key(M::CQRS_ID));
    }
    Ok(stored)
}

/// Inserts `row` without its key, which the database generates; the row as stored.
pub(crate) async fn insert_generated<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    row: &M,
    now: DateTime<Utc>,
) -> QueryResult<M> {
    let now = at::<M, E::Backend>(now);
    let rows = [row];
    let statement = insert(&rows, &now, false, false);
    let stored = match returning(conn, statement).await? {
        Some(stored) => stored.into_iter().next(),
        // The generated key and the row in one read.
        None => load_first(conn, Stmt::new(Kind::SelectLastInsert)).await?,
    };
    stored.ok_or_else(missing_row)
}

/// [`insert_generated`] for several rows, in one statement where the keys can be known: the
/// stored rows in the order of `rows`.
pub(crate) async fn insert_many_generated<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    rows: &[&M],
    now: DateTime<Utc>,
) -> QueryResult<Vec<M>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let stamped = at::<M, E::Backend>(now);
    if returns_rows::<E::Backend>() {
        // The rows come back in the order of the VALUES list.
        return load(conn, insert(rows, &stamped, false, false)).await;
    }
    let Some(step) = sql::consecutive_insert_ids(conn).await? else {
        // Interleaved auto-increment: a multi-row insert's keys may have gaps.
        let mut stored = Vec::with_capacity(rows.len());
        for row in rows {
            stored.push(insert_generated(conn, *row, now).await?);
        }
        return Ok(stored);
    };
    conn.execute(insert(rows, &stamped, false, false)).await?;
    let first_id = sql::last_insert_id(conn).await?;
    let keys = sql::insert_id_range(first_id, step, rows.len())?
        .into_iter()
        .map(sql::key_from_insert_id::<M::Pk>)
        .collect::<QueryResult<Vec<_>>>()?;
    // Keys rise with the VALUES list, and the read is in key order.
    let stored = load(conn, select(Keys::Owned(keys), false)).await?;
    sql::expect_rows(stored.len(), rows.len())?;
    Ok(stored)
}

/// Deletes the stored row with `row`'s key and returns it as it was.
pub(crate) async fn delete<M: RowOf<E>, E: Exec>(conn: &mut E, row: &M) -> QueryResult<Option<M>> {
    let statement = Stmt::new(Kind::Delete { row });
    if returns_rows::<E::Backend>() {
        return load_first(conn, statement).await;
    }
    let Some(old) = find(conn, row, true).await? else {
        return Ok(None);
    };
    conn.execute(statement).await?;
    Ok(Some(old))
}

/// Inserts the rows (with their keys) in one statement.
pub(crate) async fn insert_many<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    rows: &[&M],
    now: DateTime<Utc>,
) -> QueryResult<Vec<M>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let now = at::<M, E::Backend>(now);
    let statement = insert(rows, &now, true, false);
    match returning(conn, statement).await? {
        Some(stored) => Ok(stored),
        None => find_many(conn, rows, false).await,
    }
}

/// Updates the rows, which must exist and be distinct, in one statement, bumping each
/// revision in SQL.
pub(crate) async fn update_many<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    rows: &[&M],
    now: DateTime<Utc>,
) -> QueryResult<Vec<M>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let now = stamp(conn, rows, now).await?;
    let statement = insert(rows, &now, true, true);
    match returning(conn, statement).await? {
        Some(stored) => same_keys::<M, E>(rows, stored),
        None => find_many(conn, rows, false).await,
    }
}

/// `filter` with its keys and time decoded for `M`.
fn decode_filter<M: MasterColumns<DB>, DB: Dialect>(
    filter: &RowFilter,
) -> QueryResult<Filter<M, DB>> {
    Ok(Filter {
        pks: filter
            .pks
            .as_ref()
            .map(|keys| keys.iter().map(decode_key::<M::Pk>).collect())
            .transpose()?,
        pk_from: filter.pk_from.as_ref().map(decode_key).transpose()?,
        pk_to: filter.pk_to.as_ref().map(decode_key).transpose()?,
        updated_since: filter.updated_since.map(UpdatedAt::from_utc),
        sql: filter.sql.clone(),
    })
}

/// How many rows match `filter`.
pub(crate) async fn count<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    filter: &RowFilter,
) -> QueryResult<i64> {
    let statement: Stmt<'_, M, E::Backend> = Stmt::new(Kind::Count {
        filter: decode_filter(filter)?,
    });
    let counts: Vec<Int> = conn.load(statement).await?;
    Ok(counts.first().map_or(0, |count| count.0))
}

/// Up to `limit` rows matching `filter`, in key order, after the key `after`.
pub(crate) async fn page<M: RowOf<E>, E: Exec>(
    conn: &mut E,
    filter: &RowFilter,
    after: Option<&Value>,
    limit: i64,
) -> QueryResult<Vec<M>> {
    let statement = Stmt::new(Kind::Page {
        filter: decode_filter(filter)?,
        after: after.map(decode_key).transpose()?,
        limit,
    });
    load(conn, statement).await
}
