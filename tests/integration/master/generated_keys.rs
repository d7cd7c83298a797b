//! Rows whose key the database generates (`BIGSERIAL`, `AUTO_INCREMENT`, SQLite's `INTEGER
//! PRIMARY KEY`): `insert_and_publish` and `bulk_insert_and_publish` return the stored rows with
//! their new keys, and their messages carry those keys.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::{MasterModel, MasterStore};

use super::{Setup, WAIT};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

/// What the tests need from a note model on any backend.
trait Note: MasterModel + Clone + std::fmt::Debug + Send + Sync + 'static {
    const DDL: &'static str;
    fn new(text: &str) -> Self;
    fn id(&self) -> i64;
    fn text(&self) -> &str;
}

macro_rules! note_model {
    ($module:ident, $model:ident, $updated:ty, $updated_sql:ident, $backend:ident, $now:expr, $ddl:expr) => {
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
        #[cqrs(id = "note", table = $module::note, backends($backend))]
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
    postgres,
    epoch(),
    "CREATE TABLE note (id BIGSERIAL PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)"
);
note_model!(
    mysql_note,
    MysqlNote,
    NaiveDateTime,
    Datetime,
    mysql,
    epoch().naive_utc(),
    "CREATE TABLE note (id BIGINT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(255) NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)"
);
note_model!(
    sqlite_note,
    SqliteNote,
    DateTime<Utc>,
    TimestamptzSqlite,
    sqlite,
    epoch(),
    "CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT NOT NULL,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)"
);

async fn setup<D: TestDb, M: Note>(db: D) -> Setup<D> {
    db.execute(M::DDL);
    Setup::new_with_ddl(db).await
}

/// Every key in the table.
fn stored_keys<C: cqrs_diesel::CqrsConnection, M: Note + MasterStore<C>>(
    conn: &mut C,
) -> BTreeSet<i64> {
    M::cqrs_select_page(conn, &Default::default(), None, i64::MAX)
        .unwrap()
        .iter()
        .map(Note::id)
        .collect()
}

async fn single_insert<D, M>(db: D)
where
    D: TestDb + 'static,
    M: Note + MasterStore<D::Conn>,
{
    let mut setup = setup::<D, M>(db).await;
    let mut conn = setup.db.connect();
    let first = M::new("first").insert_and_publish(&mut conn).unwrap();
    let second = M::new("second").insert_and_publish(&mut conn).unwrap();
    assert!(first.id() > 0, "{first:?}");
    assert_ne!(first.id(), second.id());
    assert_eq!((first.text(), second.text()), ("first", "second"));
    assert_eq!(
        stored_keys::<_, M>(&mut conn),
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

async fn bulk_insert<D, M>(db: D)
where
    D: TestDb + 'static,
    M: Note + MasterStore<D::Conn>,
{
    let setup = setup::<D, M>(db).await;
    let mut conn = setup.db.connect();
    let rows: Vec<M> = (0..50).map(|i| M::new(&format!("note {i}"))).collect();
    let stored = M::bulk_insert_and_publish(&mut conn, &rows).unwrap();
    let texts: Vec<&str> = stored.iter().map(Note::text).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("note {i}")).collect();
    assert_eq!(texts, expected, "the rows come back in the order given");
    let keys: BTreeSet<i64> = stored.iter().map(Note::id).collect();
    assert_eq!(keys.len(), 50, "every row has a key of its own");
    assert_eq!(stored_keys::<_, M>(&mut conn), keys);
    assert_eq!(setup.outbox_len(), 50);
}

/// 8 threads insert single rows and batches at once: no key is given twice, none is lost,
/// and each thread gets back the keys of its own rows.
async fn concurrent_inserts<D, M>(db: D)
where
    D: TestDb + 'static,
    M: Note + MasterStore<D::Conn>,
{
    const THREADS: usize = 8;
    const SINGLES: usize = 20;
    const BATCH: usize = 10;
    let setup = setup::<D, M>(db).await;
    let returned: Vec<(String, i64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let mut conn = setup.db.connect();
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..SINGLES {
                        let row = M::new(&format!("t{thread} single {i}"))
                            .insert_and_publish(&mut conn)
                            .unwrap_or_else(|e| panic!("insert: {e}"));
                        out.push((row.text().to_owned(), row.id()));
                    }
                    let batch: Vec<M> = (0..BATCH)
                        .map(|i| M::new(&format!("t{thread} batch {i}")))
                        .collect();
                    for row in M::bulk_insert_and_publish(&mut conn, &batch)
                        .unwrap_or_else(|e| panic!("bulk insert: {e}"))
                    {
                        out.push((row.text().to_owned(), row.id()));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("writer thread"))
            .collect()
    });
    let total = THREADS * (SINGLES + BATCH);
    assert_eq!(returned.len(), total);
    let keys: BTreeSet<i64> = returned.iter().map(|(_, id)| *id).collect();
    assert_eq!(keys.len(), total, "no key was returned twice");
    let mut conn = setup.db.connect();
    let stored = M::cqrs_select_page(&mut conn, &Default::default(), None, i64::MAX).unwrap();
    assert_eq!(stored.len(), total, "no row was lost");
    for row in &stored {
        assert!(
            returned.contains(&(row.text().to_owned(), row.id())),
            "stored {row:?} is not what its writer got back"
        );
    }
    assert_eq!(setup.outbox_len(), total as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_comes_back_with_the_row_and_its_message_on_postgres() {
    single_insert::<_, PgNote>(PgDb::new("genkey")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_comes_back_with_the_row_and_its_message_on_mariadb() {
    single_insert::<_, MysqlNote>(MysqlDb::new("genkey")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_comes_back_with_the_row_and_its_message_on_sqlite() {
    single_insert::<_, SqliteNote>(SqliteDb::new("genkey")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_inserts_return_every_row_in_order_with_its_key_on_postgres() {
    bulk_insert::<_, PgNote>(PgDb::new("genkey_bulk")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_inserts_return_every_row_in_order_with_its_key_on_mariadb() {
    bulk_insert::<_, MysqlNote>(MysqlDb::new("genkey_bulk")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_inserts_return_every_row_in_order_with_its_key_on_sqlite() {
    bulk_insert::<_, SqliteNote>(SqliteDb::new("genkey_bulk")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generated_key_inserts_lose_and_repeat_no_key_on_postgres() {
    concurrent_inserts::<_, PgNote>(PgDb::new("genkey_conc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generated_key_inserts_lose_and_repeat_no_key_on_mariadb() {
    concurrent_inserts::<_, MysqlNote>(MysqlDb::new("genkey_conc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generated_key_inserts_lose_and_repeat_no_key_on_sqlite() {
    concurrent_inserts::<_, SqliteNote>(SqliteDb::new("genkey_conc")).await;
}

/// Inside `atomic`, a row inserted with a generated key and saved again is one message with
/// its final state, as for any other row.
async fn insert_then_save_in_one_block<D, M>(db: D)
where
    D: TestDb + 'static,
    M: Note + MasterStore<D::Conn>,
{
    let setup = setup::<D, M>(db).await;
    let mut conn = setup.db.connect();
    let saved = cqrs_diesel::atomic(&mut conn, |conn| {
        let stored = M::new("draft").insert_and_publish(conn)?;
        stored.save_and_publish(conn)
    })
    .unwrap();
    assert_eq!(setup.outbox_len(), 1, "one message for the block");
    assert_eq!(saved.text(), "draft");
    assert_eq!(stored_keys::<_, M>(&mut conn), BTreeSet::from([saved.id()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_insert_and_a_save_in_one_atomic_block_are_one_message_on_postgres() {
    insert_then_save_in_one_block::<_, PgNote>(PgDb::new("genkey_atomic")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_insert_and_a_save_in_one_atomic_block_are_one_message_on_mariadb() {
    insert_then_save_in_one_block::<_, MysqlNote>(MysqlDb::new("genkey_atomic")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_insert_and_a_save_in_one_atomic_block_are_one_message_on_sqlite() {
    insert_then_save_in_one_block::<_, SqliteNote>(SqliteDb::new("genkey_atomic")).await;
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
