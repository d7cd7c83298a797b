//! [`MasterStore`] for every model on every backend, from the statements of
//! [`statements`](super::statements): PostgreSQL and SQLite return written rows with
//! `RETURNING`; MySQL/MariaDB read them back in the same transaction.

use diesel::QueryResult;
use diesel::connection::Connection;
use serde_json::Value;

use super::statements::{CountStmt, Filter, Keys, Kind, Stmt};
use super::{MasterColumns, MasterStore, RowFilter, UpdatedAt, decode_key};

/// The one row a statement of one row returned, if any.
fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// The error of a write that must return its row and returned none.
fn missing_row() -> diesel::result::Error {
    diesel::result::Error::NotFound
}

/// Runs a statement that must return exactly one row of `M`.
fn load_one<M: MasterColumns<C>, C: Connection>(
    conn: &mut C,
    statement: Stmt<'_, M, C>,
) -> QueryResult<M> {
    first(M::cqrs_load(conn, statement)?).ok_or_else(missing_row)
}

/// `filter` with its keys and time decoded for `M`.
fn decode_filter<M: MasterColumns<C>, C: Connection>(
    filter: &RowFilter,
) -> QueryResult<Filter<M, C>> {
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

fn page<M: MasterColumns<C>, C: Connection>(
    filter: &RowFilter,
    after: Option<&Value>,
    limit: i64,
) -> QueryResult<Stmt<'static, M, C>> {
    Ok(Stmt::new(Kind::Page {
        filter: decode_filter(filter)?,
        after: after.map(decode_key).transpose()?,
        limit,
    }))
}

fn count<M: MasterColumns<C>, C: Connection>(
    filter: &RowFilter,
) -> QueryResult<CountStmt<'static, M, C>> {
    Ok(CountStmt(Stmt::new(Kind::Count {
        filter: decode_filter(filter)?,
    })))
}

fn select<'a, M: MasterColumns<C>, C: Connection>(
    keys: Keys<'a, M, C>,
    lock: bool,
) -> Stmt<'a, M, C> {
    Stmt::new(Kind::Select { keys, lock })
}

fn insert<'a, M: MasterColumns<C>, C: Connection>(
    rows: &'a [&'a M],
    now: &'a M::Updated,
    with_key: bool,
    upsert: bool,
) -> Stmt<'a, M, C> {
    Stmt::new(Kind::Insert {
        rows,
        now,
        with_key,
        upsert,
    })
}

/// The time a write stamps, in the model's type.
fn now<M: MasterColumns<C>, C: Connection>() -> M::Updated {
    <M::Updated as UpdatedAt>::now()
}

/// The time to stamp updated `rows` with where the statement keeps the stamp from going
/// backwards itself (PostgreSQL: `GREATEST(now, stored + 1 µs)` in SQL): the clock's now.
#[cfg(feature = "postgres")]
fn stamp_now<M: MasterColumns<diesel::PgConnection>>(
    _conn: &mut diesel::PgConnection,
    _rows: &[&M],
) -> QueryResult<M::Updated> {
    Ok(now::<M, diesel::PgConnection>())
}

/// The time to stamp updated `rows` with on SQLite: the clock's now, but never at or before
/// the time stored for any of them, so that a row's `cqrs_updated` never goes backwards when
/// the clock steps back. SQLite stores times as text and has no arithmetic on it at the
/// microsecond, so the stored times are read first; the write transaction (`BEGIN IMMEDIATE`)
/// already holds the database's one write lock, so no other writer changes them in between.
#[cfg(feature = "sqlite")]
fn stamp_after_stored<M: MasterColumns<diesel::SqliteConnection>>(
    conn: &mut diesel::SqliteConnection,
    rows: &[&M],
) -> QueryResult<M::Updated> {
    use chrono::{DateTime, TimeDelta, Utc};
    let now = <DateTime<Utc> as UpdatedAt>::now();
    let stored = M::cqrs_load(conn, select(Keys::Rows(rows), false))?;
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

/// `MasterStore` on a backend with `RETURNING` (PostgreSQL, SQLite).
macro_rules! returning_store {
    ($feature:literal, $conn:ty, $stamp:ident) => {
        #[cfg(feature = $feature)]
        impl<M: MasterColumns<$conn>> MasterStore<$conn> for M {
            const SINGLE_STATEMENT: bool = <M as MasterColumns<$conn>>::SINGLE_STATEMENT;

            fn cqrs_single(
                &self,
                conn: &mut $conn,
                plan: &super::SinglePlan,
            ) -> QueryResult<Option<Self>> {
                MasterColumns::cqrs_single(self, conn, plan)
            }

            fn cqrs_find(&self, conn: &mut $conn, lock: bool) -> QueryResult<Option<Self>> {
                M::cqrs_load(conn, select(Keys::Rows(&[self]), lock)).map(first)
            }

            fn cqrs_find_many(
                rows: &[&Self],
                conn: &mut $conn,
                lock: bool,
            ) -> QueryResult<Vec<Self>> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                M::cqrs_load(conn, select(Keys::Rows(rows), lock))
            }

            fn cqrs_update(&self, conn: &mut $conn, bump: bool) -> QueryResult<Option<Self>> {
                let now = $stamp::<M>(conn, &[self])?;
                let update = Stmt::new(Kind::Update {
                    row: self,
                    now: &now,
                    bump,
                });
                M::cqrs_load(conn, update).map(first)
            }

            fn cqrs_insert(&self, conn: &mut $conn) -> QueryResult<Self> {
                let now = now::<M, $conn>();
                load_one(conn, insert(&[self], &now, true, false))
            }

            fn cqrs_upsert(&self, conn: &mut $conn) -> QueryResult<Self> {
                let now = $stamp::<M>(conn, &[self])?;
                load_one(conn, insert(&[self], &now, true, true))
            }

            fn cqrs_insert_generated(&self, conn: &mut $conn) -> QueryResult<Self> {
                let now = now::<M, $conn>();
                load_one(conn, insert(&[self], &now, false, false))
            }

            fn cqrs_insert_many_generated(
                rows: &[&Self],
                conn: &mut $conn,
            ) -> QueryResult<Vec<Self>> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let now = now::<M, $conn>();
                // The rows come back in the order of the VALUES list.
                M::cqrs_load(conn, insert(rows, &now, false, false))
            }

            fn cqrs_delete(&self, conn: &mut $conn) -> QueryResult<Option<Self>> {
                M::cqrs_load(conn, Stmt::new(Kind::Delete { row: self })).map(first)
            }

            fn cqrs_insert_many(rows: &[&Self], conn: &mut $conn) -> QueryResult<Vec<Self>> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let now = now::<M, $conn>();
                M::cqrs_load(conn, insert(rows, &now, true, false))
            }

            fn cqrs_update_many(rows: &[&Self], conn: &mut $conn) -> QueryResult<Vec<Self>> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let now = $stamp::<M>(conn, rows)?;
                M::cqrs_load(conn, insert(rows, &now, true, true))
            }

            fn cqrs_count(conn: &mut $conn, filter: &RowFilter) -> QueryResult<i64> {
                diesel::RunQueryDsl::get_result(count::<M, $conn>(filter)?, conn)
            }

            fn cqrs_select_page(
                conn: &mut $conn,
                filter: &RowFilter,
                after: Option<&Value>,
                limit: i64,
            ) -> QueryResult<Vec<Self>> {
                M::cqrs_load(conn, page(filter, after, limit)?)
            }
        }
    };
}

returning_store!("postgres", diesel::PgConnection, stamp_now);
returning_store!("sqlite", diesel::SqliteConnection, stamp_after_stored);

#[cfg(feature = "mysql")]
mod mysql {
    use diesel::MysqlConnection;
    use diesel::RunQueryDsl;

    use super::*;
    use crate::master::sql::{
        collided_on_another_unique_key, consecutive_insert_ids, expect_rows, insert_id_range,
        key_from_insert_id, last_insert_id,
    };

    type C = MysqlConnection;

    /// The rows with these keys, in key order.
    fn find_keys<M: MasterColumns<C>>(conn: &mut C, keys: Vec<M::Pk>) -> QueryResult<Vec<M>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        M::cqrs_load(conn, select(Keys::Owned(keys), false))
    }

    /// MySQL/MariaDB have no `RETURNING`: each write is followed by a read of its rows in the
    /// same transaction.
    impl<M: MasterColumns<C>> MasterStore<C> for M {
        fn cqrs_find(&self, conn: &mut C, lock: bool) -> QueryResult<Option<Self>> {
            M::cqrs_load(conn, select(Keys::Rows(&[self]), lock)).map(first)
        }

        fn cqrs_find_many(rows: &[&Self], conn: &mut C, lock: bool) -> QueryResult<Vec<Self>> {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            M::cqrs_load(conn, select(Keys::Rows(rows), lock))
        }

        fn cqrs_update(&self, conn: &mut C, bump: bool) -> QueryResult<Option<Self>> {
            let now = now::<M, C>();
            Stmt::new(Kind::Update {
                row: self,
                now: &now,
                bump,
            })
            .execute(conn)?;
            self.cqrs_find(conn, false)
        }

        fn cqrs_insert(&self, conn: &mut C) -> QueryResult<Self> {
            let now = now::<M, C>();
            insert(&[self], &now, true, false).execute(conn)?;
            self.cqrs_find(conn, false)?.ok_or_else(missing_row)
        }

        fn cqrs_upsert(&self, conn: &mut C) -> QueryResult<Self> {
            let now = now::<M, C>();
            insert(&[self], &now, true, true).execute(conn)?;
            // `ON DUPLICATE KEY UPDATE` acts on a conflict with any unique key: a row that
            // collided with another row on another unique column updated that row, and this
            // one does not exist. The write's transaction rolls that back.
            self.cqrs_find(conn, false)?
                .ok_or_else(|| collided_on_another_unique_key(M::CQRS_ID))
        }

        fn cqrs_insert_generated(&self, conn: &mut C) -> QueryResult<Self> {
            let now = now::<M, C>();
            insert(&[self], &now, false, false).execute(conn)?;
            // The generated key and the row in one read.
            load_one(conn, Stmt::new(Kind::SelectLastInsert))
        }

        fn cqrs_insert_many_generated(rows: &[&Self], conn: &mut C) -> QueryResult<Vec<Self>> {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let Some(step) = consecutive_insert_ids(conn)? else {
                // Interleaved auto-increment: a multi-row insert's keys may have gaps.
                return rows
                    .iter()
                    .map(|row| row.cqrs_insert_generated(conn))
                    .collect();
            };
            let now = now::<M, C>();
            insert(rows, &now, false, false).execute(conn)?;
            let first_id = last_insert_id(conn)?;
            let keys = insert_id_range(first_id, step, rows.len())?
                .into_iter()
                .map(key_from_insert_id::<M::Pk>)
                .collect::<QueryResult<Vec<_>>>()?;
            // Keys rise with the VALUES list, and the read is in key order.
            let stored = find_keys::<M>(conn, keys)?;
            expect_rows(stored.len(), rows.len())?;
            Ok(stored)
        }

        fn cqrs_delete(&self, conn: &mut C) -> QueryResult<Option<Self>> {
            let Some(old) = self.cqrs_find(conn, true)? else {
                return Ok(None);
            };
            Stmt::new(Kind::Delete { row: self }).execute(conn)?;
            Ok(Some(old))
        }

        fn cqrs_insert_many(rows: &[&Self], conn: &mut C) -> QueryResult<Vec<Self>> {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let now = now::<M, C>();
            insert(rows, &now, true, false).execute(conn)?;
            Self::cqrs_find_many(rows, conn, false)
        }

        fn cqrs_update_many(rows: &[&Self], conn: &mut C) -> QueryResult<Vec<Self>> {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let now = now::<M, C>();
            insert(rows, &now, true, true).execute(conn)?;
            Self::cqrs_find_many(rows, conn, false)
        }

        fn cqrs_count(conn: &mut C, filter: &RowFilter) -> QueryResult<i64> {
            count::<M, C>(filter)?.get_result(conn)
        }

        fn cqrs_select_page(
            conn: &mut C,
            filter: &RowFilter,
            after: Option<&Value>,
            limit: i64,
        ) -> QueryResult<Vec<Self>> {
            M::cqrs_load(conn, page(filter, after, limit)?)
        }
    }
}
