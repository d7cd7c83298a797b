//! A write whose future is dropped (a client that went away, a timeout) at any of its await
//! points publishes nothing that was not committed, and never leaves a connection inside an
//! open transaction for the next user: a pool discards such a connection, and on a bare one the
//! next write refuses to run inside the abandoned transaction.
//!
//! Each test cuts the same write at its first await point, then at its second, and so on until
//! the write finishes uncut, and checks the database and the connection after every cut.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::Poll;

use cqrs_diesel::diesel;
use cqrs_diesel::{CqrsConnection, Exec, MasterStore, RowFilter, atomic_async};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager};
use serde_json::Value;

use super::models::{MysqlAuthor, PgAuthor};
use super::{Author, Setup};
use crate::db::{MysqlDb, PgDb, TestDb, pg_url};

/// Polls `write` until it has been pending `cuts` times, each time waiting until it is woken,
/// and drops it there. `Some(output)` when it finished first.
async fn cut_after<F: Future>(write: F, cuts: usize) -> Option<F::Output> {
    let mut write = std::pin::pin!(write);
    let mut pending = 0;
    std::future::poll_fn(|cx| match write.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if pending == cuts => Poll::Ready(None),
        Poll::Pending => {
            pending += 1;
            Poll::Pending
        }
    })
    .await
}

/// The write that is cut: an `atomic` block saving row `id` twice (a transaction on every
/// backend), then a plain save of it (one statement on PostgreSQL, a transaction on MariaDB).
async fn write<C, M>(conn: &mut C, id: i32) -> cqrs_diesel::Result<M>
where
    C: Exec<Mode = cqrs_diesel::Awaiting> + AsyncConnection,
    M: Author + MasterStore<C>,
{
    let row = author::<M>(id);
    let stored = atomic_async(conn, async move |conn| {
        let mut stored = row.save_and_publish(conn).await?;
        stored.set_name("second");
        stored.save_and_publish(conn).await
    })
    .await?;
    let mut again = stored.clone();
    again.set_name("third");
    again.save_and_publish(conn).await
}

/// Row `id` as the writes here first save it.
fn author<M: Author>(id: i32) -> M {
    M::new(
        id,
        "first",
        None,
        None,
        chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
        true,
        1.0,
        uuid::Uuid::from_u128(id as u128),
        None,
    )
}

/// Abandons a write inside its transaction: an `atomic` block that saves row `id` and then
/// waits forever, cut by a timeout. Leaves `conn` inside the block's transaction, marked.
async fn abandon<C, M>(conn: &mut C, id: i32)
where
    C: Exec<Mode = cqrs_diesel::Awaiting> + AsyncConnection,
    M: Author + MasterStore<C>,
{
    let row = author::<M>(id);
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        atomic_async(conn, async move |conn| {
            row.save_and_publish(conn).await?;
            std::future::pending::<()>().await;
            Ok::<_, cqrs_diesel::Error>(())
        }),
    )
    .await;
    assert!(cut.is_err(), "the write was cut: {cut:?}");
    assert!(conn.depth() > 0, "the cut write left its transaction open");
    let refused = write::<_, M>(conn, id + 1).await;
    assert!(
        matches!(refused, Err(cqrs_diesel::Error::AbandonedTransaction)),
        "a write inside the abandoned transaction is refused: {refused:?}"
    );
}

/// Checks, from a connection of its own, that the outbox holds exactly the messages of what
/// was committed: each committed row's revisions 0 to its stored one, once each, and nothing
/// for a row that is not there. Returns the committed rows.
fn assert_committed_and_queued_agree<D, M>(db: &D, cut: usize) -> BTreeMap<i32, i32>
where
    D: TestDb,
    M: Author + MasterStore<D::Conn>,
{
    use cqrs_diesel::diesel::connection::{Connection, SimpleConnection};
    let mut conn = db.connect();
    let all = RowFilter::default();
    // Rows and outbox from one snapshot: a cut write's COMMIT may still be on its way to the
    // server, and must not land between the two reads.
    const REPEATABLE_READ: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ";
    let postgres = <D::Conn as CqrsConnection>::BACKEND == cqrs_diesel::Backend::Postgres;
    if !postgres {
        // MySQL/MariaDB: for the next transaction, whose first read takes the snapshot.
        conn.batch_execute(REPEATABLE_READ)
            .expect("repeatable read");
    }
    let (stored, entries) = conn
        .transaction::<_, cqrs_diesel::diesel::result::Error, _>(|conn| {
            if postgres {
                conn.batch_execute(REPEATABLE_READ)?;
            }
            let stored = M::cqrs_select_page(conn, &all, None, i64::MAX).map_err(|error| {
                cqrs_diesel::diesel::result::Error::QueryBuilderError(error.into())
            })?;
            Ok((stored, conn.outbox_peek(i64::MAX)?))
        })
        .expect("read the rows and the outbox");
    let rows: BTreeMap<i32, i32> = stored
        .into_iter()
        .map(|row| {
            (
                row.cqrs_pk().as_i64().expect("an integer key") as i32,
                row.revision(),
            )
        })
        .collect();
    let mut queued: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for entry in entries {
        let body: Value = serde_json::from_str(&entry.body).expect("a body is JSON");
        let pk = body["instance_pk"].as_i64().expect("an integer key") as i32;
        let revision = body["instance_data"]["cqrs_revision"]
            .as_i64()
            .expect("a revision");
        queued.entry(pk).or_default().push(revision);
    }
    for (pk, revisions) in &queued {
        let stored = rows.get(pk).unwrap_or_else(|| {
            panic!("cut {cut}: row {pk} was queued ({revisions:?}) but is not committed")
        });
        // An atomic block publishes its row once, with the block's revision.
        let expected: Vec<i64> = match stored {
            0 => vec![0],
            _ => vec![0, i64::from(*stored)],
        };
        assert_eq!(
            revisions, &expected,
            "cut {cut}: row {pk} at revision {stored} has exactly its committed messages"
        );
    }
    for pk in rows.keys() {
        assert!(
            queued.contains_key(pk),
            "cut {cut}: row {pk} was committed without its message"
        );
    }
    rows
}

/// A connection checked out of a pool; back in the pool when dropped.
type Pooled<C> = Box<dyn DerefMut<Target = C> + Send>;

/// Checks a connection out of a pool.
type Checkout<C> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Pooled<C>> + Send>> + Send>;

/// A deadpool pool of one connection (so every write gets the connection the cut one
/// returned, unless the pool discarded it), as a checkout function.
macro_rules! pool_of_one {
    ($conn:ty, $manager:expr) => {{
        let pool: Pool<$conn> = Pool::builder($manager).max_size(1).build().expect("a pool");
        let checkout: Checkout<$conn> = Box::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let conn = pool.get().await.expect("a pooled connection");
                Box::new(conn) as Pooled<$conn>
            })
        });
        checkout
    }};
}

/// Cuts the write at every await point on pooled connections.
async fn pooled<D, M>(db: D, checkout: Checkout<D::AsyncConn>)
where
    D: TestDb,
    M: Author + MasterStore<D::AsyncConn> + MasterStore<D::Conn>,
{
    let setup = Setup::new::<M>(db).await;
    let pool = checkout;
    let mut cut = 0;
    loop {
        let id = i32::try_from(cut).expect("a small id") + 1;
        let mut conn = pool().await;
        let finished = cut_after(write::<_, M>(&mut **conn, id), cut).await;
        drop(conn);
        assert_committed_and_queued_agree::<_, M>(&setup.db, cut);
        // The next user of the pool never starts inside the cut write's transaction.
        let mut next = pool().await;
        assert_eq!(
            next.depth(),
            0,
            "cut {cut}: a pooled connection in a transaction"
        );
        let again = write::<_, M>(&mut **next, 1000 + id).await;
        assert!(again.is_ok(), "cut {cut}: the next write fails: {again:?}");
        drop(next);
        assert_committed_and_queued_agree::<_, M>(&setup.db, cut);
        match finished {
            Some(result) => {
                let stored = result.expect("the uncut write succeeds");
                assert_eq!(
                    stored.revision(),
                    1,
                    "the block bumped once, the save once more"
                );
                break;
            }
            None => cut += 1,
        }
    }
    assert!(cut >= 4, "the write was cut at {cut} await points only");
}

/// Cuts the write at every await point on a bare connection, kept for the next write: that
/// write either runs (the cut left no transaction open) or refuses to run inside the abandoned
/// transaction, and then the connection is replaced, as the error says.
async fn bare<D, M>(db: D)
where
    D: TestDb,
    M: Author + MasterStore<D::AsyncConn> + MasterStore<D::Conn>,
{
    let setup = Setup::new::<M>(db).await;
    let mut conn = setup.db.connect_async().await;
    let mut cut = 0;
    let mut refused = 0;
    loop {
        let id = i32::try_from(cut).expect("a small id") + 1;
        let finished = cut_after(write::<_, M>(&mut conn, id), cut).await;
        assert_committed_and_queued_agree::<_, M>(&setup.db, cut);
        match write::<_, M>(&mut conn, 1000 + id).await {
            Ok(_) => {
                let rows = assert_committed_and_queued_agree::<_, M>(&setup.db, cut);
                assert_eq!(
                    rows.get(&(1000 + id)),
                    Some(&1),
                    "cut {cut}: a write that succeeded after the cut is committed"
                );
            }
            Err(
                cqrs_diesel::Error::AbandonedTransaction | cqrs_diesel::Error::BrokenConnection,
            ) => {
                refused += 1;
                let rows = assert_committed_and_queued_agree::<_, M>(&setup.db, cut);
                assert!(
                    !rows.contains_key(&(1000 + id)),
                    "cut {cut}: the refused write wrote nothing"
                );
                conn = setup.db.connect_async().await;
            }
            Err(other) => panic!("cut {cut}: the next write fails with {other:?}"),
        }
        assert_committed_and_queued_agree::<_, M>(&setup.db, cut);
        match finished {
            Some(result) => {
                result.expect("the uncut write succeeds");
                break;
            }
            None => cut += 1,
        }
    }
    assert!(cut >= 4, "the write was cut at {cut} await points only");
    assert!(
        refused > 0,
        "no cut left a transaction open: the test proves nothing"
    );
    eprintln!("cut at {cut} await points; {refused} left a transaction open");
}

fn pg_manager(db: &PgDb) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let schema = db.schema.clone();
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |url| {
        let set_path = format!("SET search_path TO \"{schema}\"");
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.batch_execute(&set_path)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    AsyncDieselConnectionManager::new_with_config(pg_url(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_at_any_await_point_leaves_pooled_postgres_connections_clean() {
    let db = PgDb::new("cancel");
    let checkout = pool_of_one!(AsyncPgConnection, pg_manager(&db));
    pooled::<_, PgAuthor>(db, checkout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_at_any_await_point_leaves_pooled_mariadb_connections_clean() {
    let db = MysqlDb::new("cancel");
    let checkout = pool_of_one!(
        diesel_async::AsyncMysqlConnection,
        AsyncDieselConnectionManager::new(db.url())
    );
    pooled::<_, MysqlAuthor>(db, checkout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_at_any_await_point_is_never_continued_on_a_bare_postgres_connection() {
    bare::<_, PgAuthor>(PgDb::new("cancel")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_at_any_await_point_is_never_continued_on_a_bare_mariadb_connection() {
    bare::<_, MysqlAuthor>(MysqlDb::new("cancel")).await;
}

/// After the application rolls back the transaction a cut write left open, the connection is
/// outside any transaction with the cut write's mark still on it: the mark is stale, and the
/// next write runs, commits and publishes.
async fn rolled_back<D, M>(db: D)
where
    D: TestDb,
    M: Author + MasterStore<D::AsyncConn> + MasterStore<D::Conn>,
{
    let setup = Setup::new::<M>(db).await;
    let mut conn = setup.db.connect_async().await;
    abandon::<_, M>(&mut conn, 1).await;
    <D::AsyncConn as AsyncConnection>::TransactionManager::rollback_transaction(&mut conn)
        .await
        .expect("roll back the abandoned transaction");
    assert_eq!(conn.depth(), 0);
    let stored = write::<_, M>(&mut conn, 10)
        .await
        .expect("the next write runs");
    assert_eq!(stored.revision(), 1);
    let rows = assert_committed_and_queued_agree::<_, M>(&setup.db, 0);
    assert_eq!(rows.get(&10), Some(&1), "the write is committed and queued");
    assert!(!rows.contains_key(&1), "the cut write is not");
}

/// A new connection put where a marked one was (its address, as when a pool drops the marked
/// connection and allocates the next one there) is outside any transaction: the mark is stale,
/// and its first write runs, commits and publishes.
async fn replaced<D, M>(db: D)
where
    D: TestDb,
    M: Author + MasterStore<D::AsyncConn> + MasterStore<D::Conn>,
{
    let setup = Setup::new::<M>(db).await;
    let mut conn = setup.db.connect_async().await;
    abandon::<_, M>(&mut conn, 1).await;
    let marked = std::ptr::from_ref(&conn) as usize;
    // Assigned in place: the old connection is dropped, the new one lives at its address.
    conn = setup.db.connect_async().await;
    assert_eq!(std::ptr::from_ref(&conn) as usize, marked);
    assert_eq!(conn.depth(), 0);
    let stored = write::<_, M>(&mut conn, 10)
        .await
        .expect("the next write runs");
    assert_eq!(stored.revision(), 1);
    let rows = assert_committed_and_queued_agree::<_, M>(&setup.db, 0);
    assert_eq!(rows.get(&10), Some(&1), "the write is committed and queued");
    assert!(!rows.contains_key(&1), "the cut write is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_an_abandoned_postgres_transaction_was_rolled_back_runs_and_publishes() {
    rolled_back::<_, PgAuthor>(PgDb::new("cancel")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_an_abandoned_mariadb_transaction_was_rolled_back_runs_and_publishes() {
    rolled_back::<_, MysqlAuthor>(MysqlDb::new("cancel")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_postgres_connection_at_a_marked_address_writes_and_publishes() {
    replaced::<_, PgAuthor>(PgDb::new("cancel")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mariadb_connection_at_a_marked_address_writes_and_publishes() {
    replaced::<_, MysqlAuthor>(MysqlDb::new("cancel")).await;
}
