//! How a scenario writes: through sync Diesel connections or diesel-async ones. Each master
//! scenario is written once, generic over [`Side`], and run with both ([`Blocking`],
//! [`Async`]) on every backend: one scenario body, two executors.

use std::future::Future;
use std::pin::Pin;

use cqrs_diesel::diesel::{Connection, MariadbConnection};
use cqrs_diesel::{Exec, MasterStore, Mode, Ret};
use futures_util::FutureExt;

use diesel_async::AsyncMariadbConnection;

use crate::db::{MysqlDb, TestDb};

/// The body of a transaction: a future borrowing the connection.
pub type Body<'c, T> = Pin<Box<dyn Future<Output = cqrs_diesel::Result<T>> + Send + 'c>>;

/// What a write method returned on `C`, settled: the result of a sync write, the awaited
/// result of an async one.
pub async fn done<'a, C: Exec, T: Send + 'a>(ret: Ret<'a, C, T>) -> cqrs_diesel::Result<T> {
    <C::Mode as Mode>::settle(ret).await
}

/// Settles a write method's result on connection type `$conn` (see [`done`]).
macro_rules! w {
    ($conn:ty, $write:expr) => {
        $crate::master::side::done::<$conn, _>($write).await
    };
}
pub(crate) use w;

/// One way of reaching a test database's master.
pub trait Side<D: TestDb>: Send + Sync + 'static {
    /// The connection writes go through: of `D`'s backend, or, on MariaDB, of Diesel's MariaDB
    /// backend beside its MySQL one.
    type Conn: Exec;

    /// A new connection.
    fn open(db: &D) -> impl Future<Output = Self::Conn> + Send;

    /// Runs `body` in [`cqrs_diesel::atomic`] (sync) or [`cqrs_diesel::atomic_async`].
    fn atomic<'a, T: Send + 'static>(
        conn: &'a mut Self::Conn,
        body: impl for<'c> FnOnce(&'c mut Self::Conn) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a;

    /// Runs `body` in a plain Diesel transaction (Diesel's or diesel-async's `transaction`).
    fn transaction<'a, T: Send + 'static>(
        conn: &'a mut Self::Conn,
        body: impl for<'c> FnOnce(&'c mut Self::Conn) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a;

    /// Runs a writer of its own, concurrently with the others: on a blocking thread for sync
    /// connections, as a task for async ones.
    fn spawn<T: Send + 'static>(
        writer: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T>;
}

/// Sync connections (`PgConnection`, `MysqlConnection`, `SqliteConnection`).
pub struct Blocking;

/// A sync connection's write, which is ready at once.
fn ready<T>(body: impl Future<Output = T>) -> T {
    body.now_or_never()
        .expect("a write on a sync connection is ready at once")
}

/// [`Side::atomic`] on a sync connection: `cqrs_diesel::atomic`.
fn atomic_now<C, T>(
    conn: &mut C,
    body: impl for<'c> FnOnce(&'c mut C) -> Body<'c, T>,
) -> cqrs_diesel::Result<T>
where
    C: Exec<Mode = cqrs_diesel::Blocking> + Connection,
{
    cqrs_diesel::atomic(conn, |conn| ready(body(conn)))
}

/// [`Side::transaction`] on a sync connection: Diesel's `transaction`.
fn transaction_now<C, T>(
    conn: &mut C,
    body: impl for<'c> FnOnce(&'c mut C) -> Body<'c, T>,
) -> cqrs_diesel::Result<T>
where
    C: Connection,
{
    conn.transaction(|conn| ready(body(conn)))
}

/// [`Side::atomic`] on a diesel-async connection: `cqrs_diesel::atomic_async`.
fn atomic_awaited<'a, C, T: Send + 'static>(
    conn: &'a mut C,
    body: impl for<'c> FnOnce(&'c mut C) -> Body<'c, T> + Send + 'static,
) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a
where
    C: Exec<Mode = cqrs_diesel::Awaiting>,
{
    cqrs_diesel::atomic_async(conn, async move |conn| body(conn).await)
}

/// [`Side::transaction`] on a diesel-async connection: diesel-async's `transaction`.
fn transaction_awaited<'a, C, T: Send + 'static>(
    conn: &'a mut C,
    body: impl for<'c> FnOnce(&'c mut C) -> Body<'c, T> + Send + 'static,
) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a
where
    C: diesel_async::AsyncConnection + Send,
{
    diesel_async::AsyncConnection::transaction(conn, async move |conn| body(conn).await)
}

impl<D: TestDb> Side<D> for Blocking {
    type Conn = D::Conn;

    fn open(db: &D) -> impl Future<Output = D::Conn> + Send {
        std::future::ready(db.connect())
    }

    fn atomic<'a, T: Send + 'static>(
        conn: &'a mut D::Conn,
        body: impl for<'c> FnOnce(&'c mut D::Conn) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        std::future::ready(atomic_now(conn, body))
    }

    fn transaction<'a, T: Send + 'static>(
        conn: &'a mut D::Conn,
        body: impl for<'c> FnOnce(&'c mut D::Conn) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        std::future::ready(transaction_now(conn, body))
    }

    fn spawn<T: Send + 'static>(
        writer: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        tokio::task::spawn_blocking(move || ready(writer))
    }
}

/// diesel-async connections (`AsyncPgConnection`, `AsyncMysqlConnection`,
/// `SyncConnectionWrapper<SqliteConnection>`).
pub struct Async;

impl<D: TestDb> Side<D> for Async {
    type Conn = D::AsyncConn;

    fn open(db: &D) -> impl Future<Output = D::AsyncConn> + Send {
        db.connect_async()
    }

    fn atomic<'a, T: Send + 'static>(
        conn: &'a mut D::AsyncConn,
        body: impl for<'c> FnOnce(&'c mut D::AsyncConn) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        atomic_awaited(conn, body)
    }

    fn transaction<'a, T: Send + 'static>(
        conn: &'a mut D::AsyncConn,
        body: impl for<'c> FnOnce(&'c mut D::AsyncConn) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        transaction_awaited(conn, body)
    }

    fn spawn<T: Send + 'static>(
        writer: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        tokio::spawn(writer)
    }
}

/// Sync connections through Diesel's MariaDB backend (`MariadbConnection`) to a MariaDB
/// test database, whose relay and checks use its MySQL-backend connections.
pub struct MariadbBlocking;

impl Side<MysqlDb> for MariadbBlocking {
    type Conn = MariadbConnection;

    fn open(db: &MysqlDb) -> impl Future<Output = MariadbConnection> + Send {
        std::future::ready(
            MariadbConnection::establish(&db.mariadb_url()).expect("MariaDB accepts connections"),
        )
    }

    fn atomic<'a, T: Send + 'static>(
        conn: &'a mut MariadbConnection,
        body: impl for<'c> FnOnce(&'c mut MariadbConnection) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        std::future::ready(atomic_now(conn, body))
    }

    fn transaction<'a, T: Send + 'static>(
        conn: &'a mut MariadbConnection,
        body: impl for<'c> FnOnce(&'c mut MariadbConnection) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        std::future::ready(transaction_now(conn, body))
    }

    fn spawn<T: Send + 'static>(
        writer: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        <Blocking as Side<MysqlDb>>::spawn(writer)
    }
}

/// diesel-async connections through Diesel's MariaDB backend (`AsyncMariadbConnection`).
pub struct MariadbAsync;

impl Side<MysqlDb> for MariadbAsync {
    type Conn = AsyncMariadbConnection;

    fn open(db: &MysqlDb) -> impl Future<Output = AsyncMariadbConnection> + Send {
        let url = db.mariadb_url();
        async move {
            <AsyncMariadbConnection as diesel_async::AsyncConnection>::establish(&url)
                .await
                .expect("MariaDB accepts async connections")
        }
    }

    fn atomic<'a, T: Send + 'static>(
        conn: &'a mut AsyncMariadbConnection,
        body: impl for<'c> FnOnce(&'c mut AsyncMariadbConnection) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        atomic_awaited(conn, body)
    }

    fn transaction<'a, T: Send + 'static>(
        conn: &'a mut AsyncMariadbConnection,
        body: impl for<'c> FnOnce(&'c mut AsyncMariadbConnection) -> Body<'c, T> + Send + 'static,
    ) -> impl Future<Output = cqrs_diesel::Result<T>> + Send + 'a {
        transaction_awaited(conn, body)
    }

    fn spawn<T: Send + 'static>(
        writer: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        tokio::spawn(writer)
    }
}

/// Reads the stored row back.
pub async fn reload<C: Exec, M: MasterStore<C> + Send>(conn: &mut C, row: &M) -> Option<M> {
    done::<C, _>(row.cqrs_find(conn, false))
        .await
        .expect("read the row back")
}

/// Runs `$scenario::<D, M, X>(db)` for both sides on every backend, as one test module per
/// scenario holding `{postgres,mariadb,sqlite}_{sync,async}`, and
/// `mariadb_backend_{sync,async}` for MariaDB through Diesel's MariaDB backend (the MySQL
/// model, which lists both backends, unless `mariadb_backend = Model` names another).
macro_rules! on_every_backend_and_side {
    ($scenario:ident, $pg:ty, $mysql:ty, $sqlite:ty) => {
        $crate::master::side::on_every_backend_and_side!(
            $scenario,
            $pg,
            $mysql,
            $sqlite,
            mariadb_backend = $mysql
        );
    };
    ($scenario:ident, $pg:ty, $mysql:ty, $sqlite:ty, mariadb_backend = $mariadb:ty) => {
        mod $scenario {
            use super::*;
            use $crate::db::{MysqlDb, PgDb, SqliteDb};
            use $crate::master::side::{Async, Blocking, MariadbAsync, MariadbBlocking};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_sync() {
                super::$scenario::<_, $pg, Blocking>(PgDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_async() {
                super::$scenario::<_, $pg, Async>(PgDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb_sync() {
                super::$scenario::<_, $mysql, Blocking>(MysqlDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb_async() {
                super::$scenario::<_, $mysql, Async>(MysqlDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb_backend_sync() {
                super::$scenario::<_, $mariadb, MariadbBlocking>(MysqlDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb_backend_async() {
                super::$scenario::<_, $mariadb, MariadbAsync>(MysqlDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_sync() {
                super::$scenario::<_, $sqlite, Blocking>(SqliteDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_async() {
                super::$scenario::<_, $sqlite, Async>(SqliteDb::new("m")).await;
            }
        }
    };
}
pub(crate) use on_every_backend_and_side;

/// Runs `$scenario::<X>(db)` on both sides of PostgreSQL only, as one test module per scenario
/// holding `postgres_{sync,async}`: for what only PostgreSQL has (its one-statement writes).
macro_rules! on_postgres_sides {
    ($scenario:ident) => {
        mod $scenario {
            use $crate::db::PgDb;
            use $crate::master::side::{Async, Blocking};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_sync() {
                super::$scenario::<Blocking>(PgDb::new("m")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_async() {
                super::$scenario::<Async>(PgDb::new("m")).await;
            }
        }
    };
}
pub(crate) use on_postgres_sides;
