//! Rows inserted from an `Insertable` value of the application's (`NewNote`, without the key the
//! database generates) with `insert_with_and_publish` and `bulk_insert_with_and_publish`: the
//! stored row comes back with its key, its SAVE is queued in the same transaction, and an
//! insert that does not stamp `cqrs_updated` with the time given writes nothing.

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::{CqrsConnection, Error, MasterModel};

use diesel::prelude::*;
use serde_json::Value;

use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

macro_rules! backend {
    (
        $module:ident, $db:ty, $conn:ty, $backend:ident, $updated:ty, $updated_sql:ident,
        $to_updated:expr, $ddl:expr, insert = $insert:expr, insert_many = $insert_many:expr
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

            #[derive(Debug, Clone, MasterModel, Queryable, Selectable)]
            #[diesel(table_name = memo)]
            #[cqrs(id = "memo", table = memo, backends($backend))]
            pub struct Memo {
                pub id: i64,
                pub text: String,
                pub cqrs_revision: i32,
                pub cqrs_updated: $updated,
            }

            #[derive(Insertable)]
            #[diesel(table_name = memo)]
            pub struct NewMemo<'a> {
                pub text: &'a str,
            }

            fn database() -> $db {
                let db = <$db>::new("insertable");
                db.execute($ddl);
                db.connect().run_outbox_migrations().unwrap();
                db
            }

            /// The bodies in the outbox, in order.
            fn outbox(conn: &mut $conn) -> Vec<Value> {
                use cqrs_diesel::outbox::cqrs_outbox::dsl;
                dsl::cqrs_outbox
                    .order(dsl::id)
                    .select(dsl::body)
                    .load::<String>(conn)
                    .unwrap()
                    .iter()
                    .map(|body| serde_json::from_str(body).unwrap())
                    .collect()
            }

            fn to_updated(at: DateTime<Utc>) -> $updated {
                ($to_updated)(at)
            }

            #[allow(clippy::redundant_closure_call)]
            fn insert(conn: &mut $conn, new: &NewMemo<'_>, at: $updated) -> QueryResult<Memo> {
                ($insert)(conn, new, at)
            }

            #[allow(clippy::redundant_closure_call)]
            fn insert_many(
                conn: &mut $conn,
                new: &[NewMemo<'_>],
                at: $updated,
            ) -> QueryResult<Vec<Memo>> {
                ($insert_many)(conn, new, at)
            }

            #[test]
            fn an_insertable_row_comes_back_with_its_key_and_its_message() {
                let db = database();
                let mut conn = db.connect();
                let new = NewMemo { text: "first" };
                let stored = Memo::insert_with_and_publish(&mut conn, |conn, now| {
                    insert(conn, &new, to_updated(now))
                })
                .unwrap();
                assert!(stored.id > 0);
                assert_eq!(stored.text, "first");
                let bodies = outbox(&mut conn);
                assert_eq!(bodies.len(), 1);
                assert_eq!(bodies[0]["signal_type"], "SAVE");
                assert_eq!(bodies[0]["instance_pk"], stored.id);
                assert_eq!(bodies[0]["instance_data"]["id"], stored.id);
                assert_eq!(bodies[0]["instance_data"]["text"], "first");
            }

            #[test]
            fn insertable_rows_in_bulk_come_back_in_order_each_with_a_message() {
                let db = database();
                let mut conn = db.connect();
                let new: Vec<NewMemo<'_>> = ["a", "b", "c"]
                    .iter()
                    .map(|text| NewMemo { text })
                    .collect();
                let stored = Memo::bulk_insert_with_and_publish(&mut conn, |conn, now| {
                    insert_many(conn, &new, to_updated(now))
                })
                .unwrap();
                let texts: Vec<&str> = stored.iter().map(|row| row.text.as_str()).collect();
                assert_eq!(texts, ["a", "b", "c"]);
                let keys: Vec<Value> = stored.iter().map(|row| Value::from(row.id)).collect();
                let sent: Vec<Value> = outbox(&mut conn)
                    .iter()
                    .map(|body| body["instance_pk"].clone())
                    .collect();
                assert_eq!(sent, keys);
            }

            #[test]
            fn an_insert_without_the_given_time_writes_nothing() {
                let db = database();
                let mut conn = db.connect();
                let new = NewMemo { text: "late" };
                let error = Memo::insert_with_and_publish(&mut conn, |conn, _now| {
                    insert(
                        conn,
                        &new,
                        to_updated(DateTime::from_timestamp(0, 0).unwrap()),
                    )
                })
                .unwrap_err();
                assert!(matches!(error, Error::Unstamped { .. }), "{error}");
                assert!(outbox(&mut conn).is_empty());
                let rows: i64 = memo::table.count().get_result(&mut conn).unwrap();
                assert_eq!(rows, 0);
            }
        }
    };
}

backend!(
    pg,
    PgDb,
    diesel::PgConnection,
    postgres,
    DateTime<Utc>,
    Timestamptz,
    |at: DateTime<Utc>| at,
    "CREATE TABLE memo (id BIGSERIAL PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)",
    insert = |conn: &mut diesel::PgConnection, new: &NewMemo<'_>, at| {
        diesel::insert_into(memo::table)
            .values((new, memo::cqrs_updated.eq(at)))
            .returning(Memo::as_returning())
            .get_result(conn)
    },
    insert_many = |conn: &mut diesel::PgConnection, new: &[NewMemo<'_>], at: DateTime<Utc>| {
        let values: Vec<_> = new
            .iter()
            .map(|new| (new, memo::cqrs_updated.eq(at)))
            .collect();
        diesel::insert_into(memo::table)
            .values(values)
            .returning(Memo::as_returning())
            .get_results(conn)
    }
);

backend!(
    sqlite,
    SqliteDb,
    diesel::SqliteConnection,
    sqlite,
    DateTime<Utc>,
    TimestamptzSqlite,
    |at: DateTime<Utc>| at,
    "CREATE TABLE memo (id INTEGER PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)",
    insert = |conn: &mut diesel::SqliteConnection, new: &NewMemo<'_>, at| {
        diesel::insert_into(memo::table)
            .values((new, memo::cqrs_updated.eq(at)))
            .returning(Memo::as_returning())
            .get_result(conn)
    },
    insert_many = |conn: &mut diesel::SqliteConnection, new: &[NewMemo<'_>], at: DateTime<Utc>| {
        new.iter()
            .map(|new| {
                diesel::insert_into(memo::table)
                    .values((new, memo::cqrs_updated.eq(at)))
                    .returning(Memo::as_returning())
                    .get_result(conn)
            })
            .collect()
    }
);

/// MySQL/MariaDB have no `RETURNING`: the insert reads its row back by `LAST_INSERT_ID()`.
fn mysql_last_insert_id(conn: &mut diesel::MysqlConnection) -> QueryResult<i64> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "CAST(LAST_INSERT_ID() AS SIGNED)",
    ))
    .get_result(conn)
}

backend!(
    mysql,
    MysqlDb,
    diesel::MysqlConnection,
    mysql,
    NaiveDateTime,
    Datetime,
    |at: DateTime<Utc>| at.naive_utc(),
    "CREATE TABLE memo (id BIGINT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(255) NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)",
    insert = |conn: &mut diesel::MysqlConnection, new: &NewMemo<'_>, at: NaiveDateTime| {
        diesel::insert_into(memo::table)
            .values((new, memo::cqrs_updated.eq(at)))
            .execute(conn)?;
        let id = mysql_last_insert_id(conn)?;
        memo::table
            .find(id)
            .select(Memo::as_select())
            .get_result(conn)
    },
    insert_many = |conn: &mut diesel::MysqlConnection, new: &[NewMemo<'_>], at: NaiveDateTime| {
        new.iter()
            .map(|new| {
                diesel::insert_into(memo::table)
                    .values((new, memo::cqrs_updated.eq(at)))
                    .execute(conn)?;
                let id = mysql_last_insert_id(conn)?;
                memo::table
                    .find(id)
                    .select(Memo::as_select())
                    .get_result(conn)
            })
            .collect()
    }
);
