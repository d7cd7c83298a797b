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
