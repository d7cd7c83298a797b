//! Rows whose key the database generates (`BIGSERIAL`, `AUTO_INCREMENT`, SQLite's `INTEGER
//! PRIMARY KEY`): `insert_and_publish` and `bulk_insert_and_publish` return the stored rows with
//! their new keys, and their messages carry those keys.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::{Exec, MasterModel, MasterStore};

use super::side::{Side, done, on_every_backend_and_side, w};
use super::{Setup, WAIT};
use crate::db::{PgDb, TestDb};

/// What the tests need from a note model on any backend.
trait Note: MasterModel + Clone + std::fmt::Debug + Send + Sync + 'static {
    const DDL: &'static str;
    fn new(text: &str) -> Self;
    fn id(&self) -> i64;
    fn text(&self) -> &str;
}

macro_rules! note_model {
    ($module:ident, $model:ident, $updated:ty, $updated_sql:ident, ($($backend:ident),+), $now:expr, $ddl:expr) => {
        mod $module {
            diesel::table! {
                note (id) {
                    id -> BigInt,
                    text -> Text,
                    cqrs_revision -> Integer,
                    cqrs_updated -> $updated_sql,
                }
            }
        }

        #[derive(Debug, Clone, MasterModel)]
        #[cqrs(id = "note", table = $module::note, backends($($backend),+))]
        struct $model {
            id: i64,
            text: String,
            cqrs_revision: i32,
            cqrs_updated: $updated,
        }

        impl Note for $model {
            const DDL: &'static str = $ddl;
            fn new(text: &str) -> Self {
                $model {
                    // Not written: the database chooses the key.
                    id: 0,
                    text: text.to_owned(),
                    cqrs_revision: 0,
                    cqrs_updated: $now,
                }
            }
            fn id(&self) -> i64 {
                self.id
            }
            fn text(&self) -> &str {
                &self.text
            }
        }
    };
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).unwrap()
}

note_model!(
    pg_note,
    PgNote,
    DateTime<Utc>,
    Timestamptz,
    (postgres),
    epoch(),
    "CREATE TABLE note (id BIGSERIAL PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)"
);
note_model!(
    mysql_note,
    MysqlNote,
    NaiveDateTime,
    Datetime,
    (mysql, mariadb),
    epoch().naive_utc(),
    "CREATE TABLE note (id BIGINT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(255) NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)"
);
note_model!(
    sqlite_note,
    SqliteNote,
    DateTime<Utc>,
    TimestamptzSqlite,
    (sqlite),
    epoch(),
    "CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)"
);

async fn setup<D: TestDb, M: Note>(db: D) -> Setup<D> {
    db.execute(M::DDL);
    Setup::new_with_ddl(db).await
}

/// Every row in the table.
async fn stored<C: Exec, M: Note + MasterStore<C>>(conn: &mut C) -> Vec<M> {
    let all = Default::default();
    done::<C, _>(M::cqrs_select_page(conn, &all, None, i64::MAX))
        .await
        .unwrap()
}

/// Every key in the table.
async fn stored_keys<C: Exec, M: Note + MasterStore<C>>(conn: &mut C) -> BTreeSet<i64> {
    stored::<C, M>(conn).await.iter().map(Note::id).collect()
}

async fn single_insert<D, M, X>(db: D)
where
    D: TestDb + 'static,
    X: Side<D>,
    M: Note + MasterStore<X::Conn>,
{
    let mut setup = setup::<D, M>(db).await;
    let conn = &mut X::open(&setup.db).await;
    let first = w!(X::Conn, M::new("first").insert_and_publish(conn)).unwrap();
    let second = w!(X::Conn, M::new("second").insert_and_publish(conn)).unwrap();
    assert!(first.id() > 0, "{first:?}");
    assert_ne!(first.id(), second.id());
    assert_eq!((first.text(), second.text()), ("first", "second"));
    assert_eq!(
        stored_keys::<_, M>(conn).await,
        BTreeSet::from([first.id(), second.id()])
    );

    assert_eq!(setup.drain().await, 2);
    let got = setup.capture.take(2, WAIT).await;
    let keys: Vec<i64> = got
        .iter()
        .map(|(_, body)| body["instance_pk"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, vec![first.id(), second.id()]);
    for (_, body) in &got {
        assert_eq!(body["instance_data"]["id"], body["instance_pk"]);
        assert_eq!(body["instance_data"]["cqrs_revision"], 0);
    }
}

async fn bulk_insert<D, M, X>(db: D)
where
    D: TestDb + 'static,
    X: Side<D>,
    M: Note + MasterStore<X::Conn>,
{
    let setup = setup::<D, M>(db).await;
    let conn = &mut X::open(&setup.db).await;
    let rows: Vec<M> = (0..50).map(|i| M::new(&format!("note {i}"))).collect();
    let stored = w!(X::Conn, M::bulk_insert_and_publish(conn, &rows)).unwrap();
    let texts: Vec<&str> = stored.iter().map(Note::text).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("note {i}")).collect();
    assert_eq!(texts, expected, "the rows come back in the order given");
    let keys: BTreeSet<i64> = stored.iter().map(Note::id).collect();
    assert_eq!(keys.len(), 50, "every row has a key of its own");
    assert_eq!(stored_keys::<_, M>(conn).await, keys);
    assert_eq!(setup.outbox_len(), 50);
}

/// 8 writers (threads with sync connections, tasks with async ones) insert single rows and
/// batches at once: no key is given twice, none is lost, and each writer gets back the keys
/// of its own rows.
async fn concurrent_inserts<D, M, X>(db: D)
where
    D: TestDb + 'static,
    X: Side<D>,
    M: Note + MasterStore<X::Conn>,
{
    const WRITERS: usize = 8;
    const SINGLES: usize = 20;
    const BATCH: usize = 10;
    let setup = setup::<D, M>(db).await;
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let mut conn = X::open(&setup.db).await;
        handles.push(X::spawn(async move {
            let conn = &mut conn;
            let mut out = Vec::new();
            for i in 0..SINGLES {
                let row = w!(
                    X::Conn,
                    M::new(&format!("w{writer} single {i}")).insert_and_publish(conn)
                )
                .unwrap_or_else(|e| panic!("insert: {e}"));
                out.push((row.text().to_owned(), row.id()));
            }
            let batch: Vec<M> = (0..BATCH)
                .map(|i| M::new(&format!("w{writer} batch {i}")))
                .collect();
            for row in w!(X::Conn, M::bulk_insert_and_publish(conn, &batch))
                .unwrap_or_else(|e| panic!("bulk insert: {e}"))
            {
                out.push((row.text().to_owned(), row.id()));
            }
            out
        }));
    }
    let mut returned: Vec<(String, i64)> = Vec::new();
    for handle in handles {
        returned.extend(handle.await.expect("writer"));
    }
    let total = WRITERS * (SINGLES + BATCH);
    assert_eq!(returned.len(), total);
    let keys: BTreeSet<i64> = returned.iter().map(|(_, id)| *id).collect();
    assert_eq!(keys.len(), total, "no key was returned twice");
    let conn = &mut X::open(&setup.db).await;
    let stored = stored::<_, M>(conn).await;
    assert_eq!(stored.len(), total, "no row was lost");
    for row in &stored {
        assert!(
            returned.contains(&(row.text().to_owned(), row.id())),
            "stored {row:?} is not what its writer got back"
        );
    }
    assert_eq!(setup.outbox_len(), total as i64);
}

on_every_backend_and_side!(single_insert, PgNote, MysqlNote, SqliteNote);
on_every_backend_and_side!(bulk_insert, PgNote, MysqlNote, SqliteNote);
on_every_backend_and_side!(concurrent_inserts, PgNote, MysqlNote, SqliteNote);
on_every_backend_and_side!(insert_then_save_in_one_block, PgNote, MysqlNote, SqliteNote);

/// Inside `atomic`, a row inserted with a generated key and saved again is one message with
/// its final state, as for any other row.
async fn insert_then_save_in_one_block<D, M, X>(db: D)
where
    D: TestDb + 'static,
    X: Side<D>,
    M: Note + MasterStore<X::Conn>,
{
    let setup = setup::<D, M>(db).await;
    let conn = &mut X::open(&setup.db).await;
    let saved = X::atomic(conn, |conn| {
        Box::pin(async move {
            let stored = w!(X::Conn, M::new("draft").insert_and_publish(conn))?;
            w!(X::Conn, stored.save_and_publish(conn))
        })
    })
    .await
    .unwrap();
    assert_eq!(setup.outbox_len(), 1, "one message for the block");
    assert_eq!(saved.text(), "draft");
    assert_eq!(
        stored_keys::<_, M>(conn).await,
        BTreeSet::from([saved.id()])
    );
}

/// The master's statements are kept prepared (Diesel re-prepares `UPDATE`s and upserts on every
/// call unless they are wrapped), and their number stays bounded however many writes run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_statements_stay_prepared_and_bounded_on_postgres() {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Prepared {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement: String,
    }
    let setup = setup::<_, PgNote>(PgDb::new("genkey_prepared")).await;
    let mut conn = setup.db.connect();
    let prepared = |conn: &mut diesel::PgConnection| -> Vec<String> {
        diesel::sql_query("SELECT statement FROM pg_prepared_statements")
            .load::<Prepared>(conn)
            .unwrap()
            .into_iter()
            .map(|p| p.statement)
            .collect()
    };
    let mut first_round = Vec::new();
    for round in 0..3 {
        for i in 0..20 {
            let row = PgNote::new(&format!("note {round} {i}"))
                .insert_and_publish(&mut conn)
                .unwrap();
            let row = row.save_and_publish(&mut conn).unwrap();
            assert!(row.delete_and_publish(&mut conn).unwrap());
        }
        let now = prepared(&mut conn);
        if round == 0 {
            first_round = now;
        } else {
            assert_eq!(now.len(), first_round.len(), "no new statement: {now:#?}");
        }
    }
    // Each write is one statement: the row and its outbox entry in one data-modifying CTE.
    let kept = |what: &str, test: &dyn Fn(&str) -> bool| {
        assert!(
            first_round.iter().any(|sql| test(sql)),
            "the {what} is kept prepared: {first_round:#?}"
        );
    };
    kept("save", &|sql| {
        sql.contains("ON CONFLICT") && sql.contains("GREATEST") && sql.contains("cqrs_outbox")
    });
    kept("generated-key insert", &|sql| {
        sql.contains("INSERT INTO") && !sql.contains("ON CONFLICT") && sql.contains("cqrs_outbox")
    });
    kept("delete", &|sql| {
        sql.contains("DELETE FROM") && sql.contains("cqrs_outbox")
    });
}
