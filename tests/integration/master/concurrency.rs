//! Concurrent writers on one table: every write lands once, none fails for the others. Each
//! scenario runs with sync connections (a thread per writer) and async ones (a task each).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use cqrs_diesel::{Exec, MasterStore};
use uuid::Uuid;

use super::models::{MysqlAuthor, PgAuthor, SqliteAuthor};
use super::side::{Side, w};
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

/// How a test sets up each writer's session before it writes.
#[derive(Debug, Clone, Copy)]
enum Session {
    /// As the test database connects.
    AsConnected,
    /// InnoDB's default isolation level, `REPEATABLE READ`.
    RepeatableRead,
    /// [`cqrs_diesel::SessionSetup`], as a service sets up its connections.
    Setup,
}

/// A connection whose session a test can set up, sync or async.
trait Prepare: Exec {
    fn prepare(&mut self, session: Session) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

macro_rules! prepare_sync {
    ($($conn:ty),*) => {$(
        impl Prepare for $conn {
            fn prepare(&mut self, session: Session) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
                use cqrs_diesel::diesel::connection::SimpleConnection;
                match session {
                    Session::AsConnected => {}
                    Session::RepeatableRead => self
                        .batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .unwrap(),
                    Session::Setup => cqrs_diesel::SessionSetup::new().apply(self).unwrap(),
                }
                Box::pin(std::future::ready(()))
            }
        }
    )*};
}

macro_rules! prepare_async {
    ($($conn:ty),*) => {$(
        impl Prepare for $conn {
            fn prepare(&mut self, session: Session) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
                use diesel_async::SimpleAsyncConnection;
                Box::pin(async move {
                    match session {
                        Session::AsConnected => {}
                        Session::RepeatableRead => self
                            .batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                            .await
                            .unwrap(),
                        Session::Setup => cqrs_diesel::SessionSetup::new()
                            .apply_async(self)
                            .await
                            .unwrap(),
                    }
                })
            }
        }
    )*};
}

prepare_sync!(
    cqrs_diesel::diesel::PgConnection,
    cqrs_diesel::diesel::MysqlConnection,
    cqrs_diesel::diesel::SqliteConnection
);
prepare_async!(
    diesel_async::AsyncPgConnection,
    diesel_async::AsyncMysqlConnection,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<
        cqrs_diesel::diesel::SqliteConnection,
    >
);

/// `WRITERS` writers (threads for sync connections, tasks for async ones) create
/// `ROWS_PER_WRITER` rows each with interleaved keys (so their inserts land in the same index
/// gaps), then update them; every call must succeed.
async fn write_concurrently<D, M, X>(db: &D, session: Session)
where
    D: TestDb,
    M: Author + MasterStore<X::Conn>,
    X: Side<D, Conn: Prepare>,
{
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut conn = X::open(db).await;
        conn.prepare(session).await;
        writers.push(X::spawn(async move {
            let conn = &mut conn;
            for n in 0..ROWS_PER_WRITER {
                let id = n * WRITERS + writer;
                let stored = w!(X::Conn, author::<M>(id).save_and_publish(conn))
                    .unwrap_or_else(|e| panic!("create {id}: {e}"));
                w!(X::Conn, stored.save_and_publish(conn))
                    .unwrap_or_else(|e| panic!("update {id}: {e}"));
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

async fn check<D, M, X>(db: D, session: Session)
where
    D: TestDb + 'static,
    M: Author + MasterStore<D::Conn> + MasterStore<X::Conn>,
    X: Side<D, Conn: Prepare>,
{
    let setup = Setup::new::<M>(db).await;
    write_concurrently::<D, M, X>(&setup.db, session).await;
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

/// One test module per scenario and database, holding `sync_connections` and
/// `async_connections`.
macro_rules! on_both_sides {
    ($name:ident, $run:ident::<$model:ty>($db:expr $(, $arg:expr)?)) => {
        mod $name {
            use super::*;
            use crate::master::side::{Async, Blocking};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sync_connections() {
                $run::<_, $model, Blocking>($db $(, $arg)?).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_connections() {
                $run::<_, $model, Async>($db $(, $arg)?).await;
            }
        }
    };
}

on_both_sides!(
    concurrent_creates_on_postgres_all_succeed,
    check::<PgAuthor>(PgDb::new("concurrent"), Session::AsConnected)
);

// InnoDB's default `REPEATABLE READ` gap-locks a missing key's range on the tracked model's
// `SELECT ... FOR UPDATE`, so two creates in one gap deadlock; the write runs again.
on_both_sides!(
    concurrent_creates_on_mariadb_in_repeatable_read_all_succeed,
    check::<MysqlAuthor>(MysqlDb::new("concurrent_rr"), Session::RepeatableRead)
);

on_both_sides!(
    concurrent_creates_on_mariadb_set_up_by_session_setup_all_succeed,
    check::<MysqlAuthor>(MysqlDb::new("concurrent_rc"), Session::Setup)
);

on_both_sides!(
    concurrent_creates_on_sqlite_all_succeed,
    check::<SqliteAuthor>(SqliteDb::new("concurrent"), Session::AsConnected)
);

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
async fn a_sync_racing_a_delete_is_never_queued_after_it<D, M, X>(db: D)
where
    D: TestDb,
    D::Conn: cqrs_diesel::diesel::connection::LoadConnection,
    cqrs_diesel::diesel::query_builder::SqlQuery:
        cqrs_diesel::diesel::query_dsl::LoadQuery<'static, D::Conn, OutboxRow>,
    M: Author + MasterStore<D::Conn> + MasterStore<X::Conn>,
    X: Side<D>,
{
    use cqrs_diesel::CqrsConnection;
    db.execute(M::DDL);
    let mut conn = db.connect();
    conn.run_outbox_migrations().expect("outbox migrations");
    const ROWS: i32 = 60;
    for id in 1..=ROWS {
        author::<M>(id).save_and_publish(&mut conn).expect("create");
    }
    // A thread barrier on both sides, waited for in `block_in_place`: an async writer's worker
    // hands its other tasks (the connections' own) to another thread while it waits.
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let (mut deleter, mut syncer) = (X::open(&db).await, X::open(&db).await);
    let deleting = X::spawn({
        let barrier = barrier.clone();
        async move {
            let deleter = &mut deleter;
            for id in 1..=ROWS {
                tokio::task::block_in_place(|| barrier.wait());
                w!(X::Conn, author::<M>(id).delete_and_publish(deleter))
                    .unwrap_or_else(|e| panic!("delete {id}: {e}"));
            }
        }
    });
    let syncing = X::spawn(async move {
        let syncer = &mut syncer;
        for id in 1..=ROWS {
            tokio::task::block_in_place(|| barrier.wait());
            // The row may be gone already: then nothing is queued.
            let _ = w!(X::Conn, author::<M>(id).cqrs_sync(syncer, None));
        }
    });
    deleting.await.unwrap();
    syncing.await.unwrap();
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

on_both_sides!(
    a_sync_racing_a_delete_is_never_queued_after_it_on_postgres,
    a_sync_racing_a_delete_is_never_queued_after_it::<PgAuthor>(PgDb::new("syncrace"))
);

on_both_sides!(
    a_sync_racing_a_delete_is_never_queued_after_it_on_mariadb,
    a_sync_racing_a_delete_is_never_queued_after_it::<MysqlAuthor>(MysqlDb::new("syncrace"))
);
