//! Concurrent writers on one table: every write lands once, none fails for the others.

use chrono::{TimeZone, Utc};
use cqrs_diesel::MasterStore;
use cqrs_diesel::diesel::connection::SimpleConnection;
use uuid::Uuid;

use super::models::{MysqlAuthor, PgAuthor, SqliteAuthor};
use super::{Author, Setup};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

const WRITERS: i32 = 8;
const ROWS_PER_WRITER: i32 = 40;

fn author<M: Author>(id: i32) -> M {
    M::new(
        id,
        &format!("author {id}"),
        None,
        None,
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        true,
        0.0,
        Uuid::from_u128(id as u128),
        None,
    )
}

/// `WRITERS` threads create `ROWS_PER_WRITER` rows each with interleaved keys (so their
/// inserts land in the same index gaps), then update them; every call must succeed.
fn write_concurrently<D, M>(db: &D, prepare: fn(&mut D::Conn))
where
    D: TestDb,
    M: Author + MasterStore<D::Conn>,
{
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let mut conn = db.connect();
            prepare(&mut conn);
            scope.spawn(move || {
                for n in 0..ROWS_PER_WRITER {
                    let id = n * WRITERS + writer;
                    let stored = author::<M>(id)
                        .save_and_publish(&mut conn)
                        .unwrap_or_else(|e| panic!("create {id}: {e}"));
                    stored
                        .save_and_publish(&mut conn)
                        .unwrap_or_else(|e| panic!("update {id}: {e}"));
                }
            });
        }
    });
}

async fn check<D, M>(db: D, prepare: fn(&mut D::Conn))
where
    D: TestDb + 'static,
    M: Author + MasterStore<D::Conn>,
{
    let setup = Setup::new::<M>(db).await;
    write_concurrently::<D, M>(&setup.db, prepare);
    let expected = i64::from(WRITERS * ROWS_PER_WRITER);
    assert_eq!(
        setup.outbox_len(),
        2 * expected,
        "one message per create and per update"
    );
    let mut conn = setup.db.connect();
    let stored = M::cqrs_count(&mut conn, &Default::default()).unwrap();
    assert_eq!(stored, expected, "every row created once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_postgres_all_succeed() {
    check::<_, PgAuthor>(PgDb::new("concurrent"), |_| {}).await;
}

/// InnoDB's default `REPEATABLE READ` gap-locks a missing key's range on the tracked model's
/// `SELECT ... FOR UPDATE`, so two creates in one gap deadlock; the write runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_mariadb_in_repeatable_read_all_succeed() {
    check::<_, MysqlAuthor>(MysqlDb::new("concurrent_rr"), |conn| {
        conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_mariadb_set_up_by_session_setup_all_succeed() {
    check::<_, MysqlAuthor>(MysqlDb::new("concurrent_rc"), |conn| {
        cqrs_diesel::SessionSetup::new().apply(conn).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_sqlite_all_succeed() {
    check::<_, SqliteAuthor>(SqliteDb::new("concurrent"), |_| {}).await;
}

/// The outbox's entries as (id, signal, pk), in id order.
fn outbox_entries<C>(conn: &mut C) -> Vec<(i64, String, i64)>
where
    C: cqrs_diesel::diesel::connection::LoadConnection,
    C::Backend: cqrs_diesel::diesel::backend::Backend,
    cqrs_diesel::diesel::query_builder::SqlQuery:
        cqrs_diesel::diesel::query_dsl::LoadQuery<'static, C, OutboxRow>,
{
    use cqrs_diesel::diesel::RunQueryDsl;
    cqrs_diesel::diesel::sql_query("SELECT id, body FROM cqrs_outbox ORDER BY id")
        .load::<OutboxRow>(conn)
        .expect("read the outbox")
        .into_iter()
        .map(|row| {
            let body: serde_json::Value = serde_json::from_str(&row.body).expect("a JSON body");
            let signal = body["signal_type"].as_str().unwrap_or_default().to_owned();
            (
                row.id,
                signal,
                body["instance_pk"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

#[derive(cqrs_diesel::diesel::QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = cqrs_diesel::diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = cqrs_diesel::diesel::sql_types::Text)]
    body: String,
}

/// `cqrs_sync` and `delete_and_publish` of one row at the same moment, 60 times: the SYNC is
/// queued before the DELETE (it read the row first) or not at all (the row was gone), never
/// after it, where its outbox id would place the deleted row's state after its DELETE.
fn a_sync_racing_a_delete_is_never_queued_after_it<D, M>(db: D)
where
    D: TestDb,
    D::Conn: cqrs_diesel::diesel::connection::LoadConnection,
    cqrs_diesel::diesel::query_builder::SqlQuery:
        cqrs_diesel::diesel::query_dsl::LoadQuery<'static, D::Conn, OutboxRow>,
    M: Author + MasterStore<D::Conn>,
{
    use cqrs_diesel::CqrsConnection;
    db.execute(M::DDL);
    let mut conn = db.connect();
    conn.run_outbox_migrations().expect("outbox migrations");
    const ROWS: i32 = 60;
    for id in 1..=ROWS {
        author::<M>(id).save_and_publish(&mut conn).expect("create");
    }
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let (mut deleter, mut syncer) = (db.connect(), db.connect());
        let barrier = &barrier;
        scope.spawn(move || {
            for id in 1..=ROWS {
                barrier.wait();
                author::<M>(id)
                    .delete_and_publish(&mut deleter)
                    .unwrap_or_else(|e| panic!("delete {id}: {e}"));
            }
        });
        scope.spawn(move || {
            for id in 1..=ROWS {
                barrier.wait();
                // The row may be gone already: then nothing is queued.
                let _ = author::<M>(id).cqrs_sync(&mut syncer, None);
            }
        });
    });
    let entries = outbox_entries(&mut conn);
    for id in 1..=ROWS {
        let of = |signal: &str| {
            entries
                .iter()
                .find(|(_, s, pk)| s == signal && *pk == i64::from(id))
                .map(|(entry, ..)| *entry)
        };
        let delete = of("DELETE").expect("a DELETE entry");
        if let Some(sync) = of("SYNC") {
            assert!(
                sync < delete,
                "row {id}: SYNC entry {sync} after DELETE entry {delete}"
            );
        }
    }
}

#[test]
fn a_sync_racing_a_delete_is_never_queued_after_it_on_postgres() {
    a_sync_racing_a_delete_is_never_queued_after_it::<_, PgAuthor>(PgDb::new("syncrace"));
}

#[test]
fn a_sync_racing_a_delete_is_never_queued_after_it_on_mariadb() {
    a_sync_racing_a_delete_is_never_queued_after_it::<_, MysqlAuthor>(MysqlDb::new("syncrace"));
}
