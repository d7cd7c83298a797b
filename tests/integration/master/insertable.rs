//! Rows inserted from an `Insertable` value of the application's (`NewMemo`, without the key the
//! database generates) with `insert_with_and_publish` and `bulk_insert_with_and_publish` (sync
//! connections, sync closures) and their `_async` forms (diesel-async connections, async
//! closures): the stored row comes back with its key, its SAVE is queued in the same
//! transaction, and an insert that does not stamp `cqrs_updated` with the time given writes
//! nothing.
//!
//! Each scenario is written once and run on both sides; what differs is only the application's
//! own insert, which [`Memos`] runs on each kind of connection.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::{CqrsConnection, Error, Exec, MasterModel, MasterStore, RowFilter};
use serde_json::Value;

use super::side::{Side, on_every_backend_and_side};
use crate::db::{SqliteDb, TestDb};

/// A write of the application's, boxed.
type Write<'a, T> = Pin<Box<dyn Future<Output = cqrs_diesel::Result<T>> + Send + 'a>>;

/// What the scenarios need from a memo model on any backend.
trait Memo: MasterModel + Clone + std::fmt::Debug + Send + Sync + 'static {
    const DDL: &'static str;
    fn id(&self) -> i64;
    fn text(&self) -> &str;
}

/// The application's inserts of memos on one kind of connection, through the library's
/// `insert_with` methods: the sync ones with a sync closure on a sync connection, the `_async`
/// ones with an async closure on a diesel-async connection.
trait Memos<M>: Exec {
    /// Inserts one memo stamped with the time given (`stamped`) or with the epoch.
    fn publish_one<'a>(&'a mut self, text: &'a str, stamped: bool) -> Write<'a, M>;

    /// Inserts the memos, in order, stamped with the time given.
    fn publish_many<'a>(&'a mut self, texts: &'a [&'a str]) -> Write<'a, Vec<M>>;
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).unwrap()
}

/// The application's statements on one kind of connection: sync functions (`[]`), or async
/// ones (`[async]`) whose statements are awaited (`aw!` adds `.await`).
macro_rules! statements {
    (
        $conn_ty:ty, [$($kw:tt)*], [$($aw:tt)*], $model:ident, $updated:ty,
        |$conn:ident, $text:ident, $at:ident| $insert:block,
        |$conn_many:ident, $texts:ident, $at_many:ident| $insert_many:block
    ) => {
        macro_rules! aw {
            ($e:expr) => { $e $($aw)* };
        }

        pub $($kw)* fn insert(
            $conn: &mut $conn_ty,
            $text: &str,
            $at: $updated,
        ) -> diesel::QueryResult<$model> $insert

        pub $($kw)* fn insert_many(
            $conn_many: &mut $conn_ty,
            $texts: &[&str],
            $at_many: $updated,
        ) -> diesel::QueryResult<Vec<$model>> $insert_many
    };
}

/// A model on one backend, and its inserts on the backend's sync and async connections.
/// `$insert` and `$insert_many` are written once and expanded twice ([`statements`]): with
/// Diesel's `RunQueryDsl` and no `.await`, and with diesel-async's and `.await` after each
/// statement (`aw!`).
macro_rules! backend {
    (
        $module:ident, $model:ident, $backends:tt, $sync:ty, $async:ty,
        $updated:ty, $updated_sql:ident, $to_updated:expr, $ddl:expr,
        insert = |$conn:ident, $text:ident, $at:ident| $insert:block,
        insert_many = |$conn_many:ident, $texts:ident, $at_many:ident| $insert_many:block
    ) => {
        mod $module {
            use super::*;

            diesel::table! {
                memo (id) {
                    id -> BigInt,
                    text -> Text,
                    cqrs_revision -> Integer,
                    cqrs_updated -> $updated_sql,
                }
            }

            #[derive(Debug, Clone, MasterModel, diesel::Queryable, diesel::Selectable)]
            #[diesel(table_name = memo)]
            #[cqrs(id = "memo", table = memo, backends $backends)]
            pub struct $model {
                pub id: i64,
                pub text: String,
                pub cqrs_revision: i32,
                pub cqrs_updated: $updated,
            }

            impl Memo for $model {
                const DDL: &'static str = $ddl;
                fn id(&self) -> i64 {
                    self.id
                }
                fn text(&self) -> &str {
                    &self.text
                }
            }

            #[derive(diesel::Insertable)]
            #[diesel(table_name = memo)]
            pub struct NewMemo<'a> {
                pub text: &'a str,
            }

            pub fn stamp(at: DateTime<Utc>) -> $updated {
                ($to_updated)(at)
            }

            pub mod blocking {
                use super::*;
                #[allow(unused_imports)] // `find` is only the MySQL insert's.
                use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl, SelectableHelper};
                statements!($sync, [], [], $model, $updated,
                    |$conn, $text, $at| $insert, |$conn_many, $texts, $at_many| $insert_many);
            }

            mod awaiting {
                use super::*;
                #[allow(unused_imports)]
                use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
                use diesel_async::RunQueryDsl;
                statements!($async, [async], [.await], $model, $updated,
                    |$conn, $text, $at| $insert, |$conn_many, $texts, $at_many| $insert_many);
            }

            impl Memos<$model> for $sync {
                fn publish_one<'a>(&'a mut self, text: &'a str, stamped: bool) -> Write<'a, $model> {
                    Box::pin(std::future::ready($model::insert_with_and_publish(
                        self,
                        |conn, now| {
                            blocking::insert(conn, text, stamp(if stamped { now } else { epoch() }))
                        },
                    )))
                }

                fn publish_many<'a>(&'a mut self, texts: &'a [&'a str]) -> Write<'a, Vec<$model>> {
                    Box::pin(std::future::ready($model::bulk_insert_with_and_publish(
                        self,
                        |conn, now| blocking::insert_many(conn, texts, stamp(now)),
                    )))
                }
            }

            impl Memos<$model> for $async {
                fn publish_one<'a>(&'a mut self, text: &'a str, stamped: bool) -> Write<'a, $model> {
                    // The closure borrows what it reads: its future then borrows nothing of
                    // the closure's own, as `insert_with_and_publish_async` asks.
                    Box::pin(async move {
                        $model::insert_with_and_publish_async(self, async |conn, now| {
                            let at = if stamped { now } else { epoch() };
                            awaiting::insert(conn, text, stamp(at)).await
                        })
                        .await
                    })
                }

                fn publish_many<'a>(&'a mut self, texts: &'a [&'a str]) -> Write<'a, Vec<$model>> {
                    Box::pin(async move {
                        $model::bulk_insert_with_and_publish_async(self, async |conn, now| {
                            awaiting::insert_many(conn, texts, stamp(now)).await
                        })
                        .await
                    })
                }
            }
        }
        use $module::$model;
    };
}

backend!(
    pg,
    PgMemo,
    (postgres),
    diesel::PgConnection,
    diesel_async::AsyncPgConnection,
    DateTime<Utc>,
    Timestamptz,
    |at: DateTime<Utc>| at,
    "CREATE TABLE memo (id BIGSERIAL PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)",
    insert = |conn, text, at| {
        aw!(diesel::insert_into(memo::table)
            .values((NewMemo { text }, memo::cqrs_updated.eq(at)))
            .returning(PgMemo::as_returning())
            .get_result(conn))
    },
    insert_many = |conn, texts, at| {
        let values: Vec<_> = texts
            .iter()
            .map(|text| (NewMemo { text }, memo::cqrs_updated.eq(at)))
            .collect();
        aw!(diesel::insert_into(memo::table)
            .values(values)
            .returning(PgMemo::as_returning())
            .get_results(conn))
    }
);

backend!(
    sqlite,
    SqliteMemo,
    (sqlite),
    diesel::SqliteConnection,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    DateTime<Utc>,
    TimestamptzSqlite,
    |at: DateTime<Utc>| at,
    "CREATE TABLE memo (id INTEGER PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)",
    insert = |conn, text, at| {
        aw!(diesel::insert_into(memo::table)
            .values((NewMemo { text }, memo::cqrs_updated.eq(at)))
            .returning(SqliteMemo::as_returning())
            .get_result(conn))
    },
    insert_many = |conn, texts, at| {
        // One statement per row: Diesel's SQLite backend has no multi-row `RETURNING` insert.
        let mut stored = Vec::with_capacity(texts.len());
        for text in texts {
            stored.push(aw!(diesel::insert_into(memo::table)
                .values((NewMemo { text }, memo::cqrs_updated.eq(at)))
                .returning(SqliteMemo::as_returning())
                .get_result(&mut *conn))?);
        }
        Ok(stored)
    }
);

// MySQL/MariaDB have no `RETURNING`: the insert reads its row back by `LAST_INSERT_ID()`.
backend!(
    mysql,
    MysqlMemo,
    (mysql),
    diesel::MysqlConnection,
    diesel_async::AsyncMysqlConnection,
    NaiveDateTime,
    Datetime,
    |at: DateTime<Utc>| at.naive_utc(),
    "CREATE TABLE memo (id BIGINT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(255) NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)",
    insert = |conn, text, at| {
        aw!(diesel::insert_into(memo::table)
            .values((NewMemo { text }, memo::cqrs_updated.eq(at)))
            .execute(&mut *conn))?;
        let id: i64 = aw!(
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "CAST(LAST_INSERT_ID() AS SIGNED)",
            ))
            .get_result(&mut *conn)
        )?;
        aw!(memo::table
            .find(id)
            .select(MysqlMemo::as_select())
            .get_result(conn))
    },
    insert_many = |conn, texts, at| {
        let mut stored = Vec::with_capacity(texts.len());
        for text in texts {
            aw!(diesel::insert_into(memo::table)
                .values((NewMemo { text }, memo::cqrs_updated.eq(at)))
                .execute(&mut *conn))?;
            let id: i64 = aw!(
                diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "CAST(LAST_INSERT_ID() AS SIGNED)",
                ))
                .get_result(&mut *conn)
            )?;
            stored.push(aw!(memo::table
                .find(id)
                .select(MysqlMemo::as_select())
                .get_result(&mut *conn))?);
        }
        Ok(stored)
    }
);

// MariaDB through Diesel's MariaDB backend: `RETURNING`, as on PostgreSQL.
backend!(
    mariadb_backend,
    MariadbMemo,
    (mysql, mariadb),
    diesel::MariadbConnection,
    diesel_async::AsyncMariadbConnection,
    NaiveDateTime,
    Datetime,
    |at: DateTime<Utc>| at.naive_utc(),
    "CREATE TABLE memo (id BIGINT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(255) NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)",
    insert = |conn, text, at| {
        aw!(diesel::insert_into(memo::table)
            .values((NewMemo { text }, memo::cqrs_updated.eq(at)))
            .returning(MariadbMemo::as_returning())
            .get_result(conn))
    },
    insert_many = |conn, texts, at| {
        let values: Vec<_> = texts
            .iter()
            .map(|text| (NewMemo { text }, memo::cqrs_updated.eq(at)))
            .collect();
        aw!(diesel::insert_into(memo::table)
            .values(values)
            .returning(MariadbMemo::as_returning())
            .get_results(conn))
    }
);

/// The test database with the memo table and the outbox.
fn database<D: TestDb, M: Memo>(db: D) -> D {
    db.execute(M::DDL);
    db.connect().run_outbox_migrations().unwrap();
    db
}

/// The bodies in the outbox, in order, read on a connection of their own.
fn outbox<D: TestDb>(db: &D) -> Vec<Value> {
    db.connect()
        .outbox_peek(i64::MAX)
        .unwrap()
        .iter()
        .map(|entry| serde_json::from_str(&entry.body).unwrap())
        .collect()
}

async fn an_insertable_row_comes_back_with_its_key_and_its_message<D, M, X>(db: D)
where
    D: TestDb,
    M: Memo,
    X: Side<D, Conn: Memos<M>>,
{
    let db = database::<D, M>(db);
    let mut conn = X::open(&db).await;
    let stored = conn.publish_one("first", true).await.unwrap();
    assert!(stored.id() > 0);
    assert_eq!(stored.text(), "first");
    let bodies = outbox(&db);
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["signal_type"], "SAVE");
    assert_eq!(bodies[0]["instance_pk"], stored.id());
    assert_eq!(bodies[0]["instance_data"]["id"], stored.id());
    assert_eq!(bodies[0]["instance_data"]["text"], "first");
}

on_every_backend_and_side!(
    an_insertable_row_comes_back_with_its_key_and_its_message,
    PgMemo,
    MysqlMemo,
    SqliteMemo,
    mariadb_backend = MariadbMemo
);

async fn insertable_rows_in_bulk_come_back_in_order_each_with_a_message<D, M, X>(db: D)
where
    D: TestDb,
    M: Memo,
    X: Side<D, Conn: Memos<M>>,
{
    let db = database::<D, M>(db);
    let mut conn = X::open(&db).await;
    let stored = conn.publish_many(&["a", "b", "c"]).await.unwrap();
    let texts: Vec<&str> = stored.iter().map(Memo::text).collect();
    assert_eq!(texts, ["a", "b", "c"]);
    let keys: Vec<Value> = stored.iter().map(|row| Value::from(row.id())).collect();
    let sent: Vec<Value> = outbox(&db)
        .iter()
        .map(|body| body["instance_pk"].clone())
        .collect();
    assert_eq!(sent, keys);
}

on_every_backend_and_side!(
    insertable_rows_in_bulk_come_back_in_order_each_with_a_message,
    PgMemo,
    MysqlMemo,
    SqliteMemo,
    mariadb_backend = MariadbMemo
);

async fn an_insert_without_the_given_time_writes_nothing<D, M, X>(db: D)
where
    D: TestDb,
    M: Memo + MasterStore<D::Conn>,
    X: Side<D, Conn: Memos<M>>,
{
    let db = database::<D, M>(db);
    let mut conn = X::open(&db).await;
    let error = conn.publish_one("late", false).await.unwrap_err();
    assert!(matches!(error, Error::Unstamped { .. }), "{error}");
    assert!(outbox(&db).is_empty());
    let rows = M::cqrs_count(&mut db.connect(), &RowFilter::default()).unwrap();
    assert_eq!(rows, 0);
}

on_every_backend_and_side!(
    an_insert_without_the_given_time_writes_nothing,
    PgMemo,
    MysqlMemo,
    SqliteMemo,
    mariadb_backend = MariadbMemo
);

/// The `_async` form on a sync connection: the async closure runs sync statements, so its
/// future is ready at once, and the method returns the write's `Result`.
#[test]
fn an_async_insert_on_a_sync_connection_returns_its_result() {
    let db = database::<SqliteDb, SqliteMemo>(SqliteDb::new("m"));
    let mut conn = db.connect();
    let stored: cqrs_diesel::Result<SqliteMemo> =
        SqliteMemo::insert_with_and_publish_async(&mut conn, async |conn, now| {
            sqlite::blocking::insert(conn, "sync", sqlite::stamp(now))
        });
    let stored = stored.unwrap();
    assert_eq!(stored.text(), "sync");
    let bodies = outbox(&db);
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["instance_pk"], stored.id());
}
