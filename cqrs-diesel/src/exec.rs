//! How master writes run: one [`Exec`] trait that both a sync Diesel connection and (with the
//! `async` feature) a diesel-async connection implement, so that every write is written once,
//! as `async` code over `Exec`, and run by either.
//!
//! A sync connection's futures are ready at once: its statements run in the call that builds
//! them. The sync methods drive such a future by polling it once ([`run_ready`]); an async
//! connection's methods return it boxed for the caller to await.
//!
//! What differs between backends is a [`Dialect`], implemented by Diesel's backend types: row
//! locks, `RETURNING`, the conflict clause, the stamp that never goes backwards, and how a
//! number is read back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::deserialize::QueryableByName;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::row::NamedRow;
use diesel::sql_types::Untyped;

use crate::connection::DbConn;
use crate::error::{Error, Result};
use crate::master::SinglePlan;
use crate::master::columns::MasterColumns;

/// The backends the master side writes to, as the statements tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialectKind {
    /// PostgreSQL: `RETURNING`, row locks, one-statement writes.
    Postgres,
    /// MySQL or MariaDB through Diesel's MySQL backend (`MysqlConnection`): no `RETURNING`,
    /// written rows are read back.
    Mysql,
    /// MariaDB through Diesel's MariaDB backend (`MariadbConnection`): MySQL's syntax, and
    /// `INSERT`/`DELETE ... RETURNING` (MariaDB 10.5+; an `UPDATE` is still read back).
    Mariadb,
    /// SQLite: `RETURNING`, one writer at a time instead of row locks.
    Sqlite,
}

impl DialectKind {
    /// Whether `SELECT ... FOR UPDATE` locks rows (SQLite serialises writers instead).
    pub(crate) fn locks_rows(self) -> bool {
        self != DialectKind::Sqlite
    }

    /// Whether `INSERT` and `DELETE` return their rows with `RETURNING`.
    pub(crate) fn returns_rows(self) -> bool {
        self != DialectKind::Mysql
    }

    /// Whether `UPDATE` returns its rows with `RETURNING` (MariaDB's does not).
    pub(crate) fn returns_updated_rows(self) -> bool {
        matches!(self, DialectKind::Postgres | DialectKind::Sqlite)
    }

    /// Whether statements are written in MySQL's syntax: `ON DUPLICATE KEY UPDATE` (which
    /// acts on a conflict with any unique key), `VALUES(c)`, `INTERVAL 1 MICROSECOND`.
    pub(crate) fn mysql_like(self) -> bool {
        matches!(self, DialectKind::Mysql | DialectKind::Mariadb)
    }

    /// Whether a statement with `RETURNING` may be kept prepared. Not on Diesel's MariaDB
    /// backend: there a kept statement with `RETURNING` whose execution the server refuses
    /// (a unique key, a foreign key) can leave the sync client waiting for ever for an answer
    /// the server never sends (seen with MariaDB 10.11 and its client library, libmariadb3), so each is
    /// prepared anew, at the price of one more round trip.
    pub(crate) fn caches_returning(self) -> bool {
        self != DialectKind::Mariadb
    }

    /// Whether a statement of a varying number of rows is worth keeping prepared: Diesel keys
    /// its cache by the SQL text, one per row count, which PostgreSQL plans once for a steady
    /// stream of full batches; the other backends prepare anew.
    pub(crate) fn caches_batches(self) -> bool {
        self == DialectKind::Postgres
    }
}

/// A Diesel backend the master side writes to (`Pg`, `Mysql`, `Mariadb`, `Sqlite`): what its statements
/// need to know about it. Implemented by this crate; not meant to be implemented elsewhere.
pub trait Dialect: Backend + Send + Sync + 'static {
    /// Which backend this is.
    const KIND: DialectKind;

    /// Reads the integer column `column` of a row (a count, a generated id).
    #[doc(hidden)]
    fn read_i64<'a>(
        row: &impl NamedRow<'a, Self>,
        column: &str,
    ) -> diesel::deserialize::Result<i64>;

    /// Binds a text value.
    #[doc(hidden)]
    fn bind_text<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b str) -> QueryResult<()>;

    /// Binds a nullable text value.
    #[doc(hidden)]
    fn bind_optional_text<'b>(
        out: &mut AstPass<'_, 'b, Self>,
        value: &'b Option<String>,
    ) -> QueryResult<()>;

    /// Binds a `BIGINT` value.
    #[doc(hidden)]
    fn bind_i64<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b i64) -> QueryResult<()>;

    /// Runs `plan` as one statement (see [`SinglePlan`]) where the backend can (PostgreSQL):
    /// the row as stored, or as it was for a delete (`None` when no row had the key).
    #[doc(hidden)]
    fn single<'a, M, E>(
        conn: &'a mut E,
        row: &'a M,
        plan: &'a SinglePlan,
    ) -> impl Future<Output = QueryResult<Option<M>>> + Send + 'a
    where
        M: MasterColumns<Self>,
        E: Exec<Backend = Self>,
    {
        let _ = (conn, row, plan);
        std::future::ready(Err(diesel::result::Error::QueryBuilderError(
            "no one-statement writes on this backend".into(),
        )))
    }

    /// Reads the signed `BIGINT` column `column` of a row.
    #[doc(hidden)]
    fn read_bigint<'a>(
        row: &impl NamedRow<'a, Self>,
        column: &str,
    ) -> diesel::deserialize::Result<i64>;

    /// Reads the nullable `BIGINT` column `column` of a row.
    #[doc(hidden)]
    fn read_optional_bigint<'a>(
        row: &impl NamedRow<'a, Self>,
        column: &str,
    ) -> diesel::deserialize::Result<Option<i64>>;

    /// Reads the text column `column` of a row.
    #[doc(hidden)]
    fn read_text<'a>(
        row: &impl NamedRow<'a, Self>,
        column: &str,
    ) -> diesel::deserialize::Result<String>;

    /// Reads the boolean column `column` of a row.
    #[doc(hidden)]
    fn read_bool<'a>(
        row: &impl NamedRow<'a, Self>,
        column: &str,
    ) -> diesel::deserialize::Result<bool>;

    /// Binds a boolean value.
    #[doc(hidden)]
    fn bind_bool<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b bool) -> QueryResult<()>;

    /// Binds a nullable `BIGINT` value.
    #[doc(hidden)]
    fn bind_optional_i64<'b>(
        out: &mut AstPass<'_, 'b, Self>,
        value: &'b Option<i64>,
    ) -> QueryResult<()>;
}

macro_rules! dialect {
    ($feature:literal, $backend:ty, $kind:expr, $int:ty, $rust:ty $(, $single:item)?) => {
        #[cfg(feature = $feature)]
        impl Dialect for $backend {
            const KIND: DialectKind = $kind;

            fn read_i64<'a>(
                row: &impl NamedRow<'a, Self>,
                column: &str,
            ) -> diesel::deserialize::Result<i64> {
                let value = NamedRow::get::<$int, $rust>(row, column)?;
                // `u64` (MySQL) can exceed `i64`; an `i64` converts as it is.
                i64::try_from(value).map_err(Into::into)
            }

            fn bind_text<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b str) -> QueryResult<()> {
                out.push_bind_param::<diesel::sql_types::Text, str>(value)
            }

            fn bind_optional_text<'b>(
                out: &mut AstPass<'_, 'b, Self>,
                value: &'b Option<String>,
            ) -> QueryResult<()> {
                out.push_bind_param::<
                    diesel::sql_types::Nullable<diesel::sql_types::Text>,
                    Option<String>,
                >(value)
            }

            fn bind_i64<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b i64) -> QueryResult<()> {
                out.push_bind_param::<diesel::sql_types::BigInt, i64>(value)
            }

            $($single)?

            fn read_bigint<'a>(
                row: &impl NamedRow<'a, Self>,
                column: &str,
            ) -> diesel::deserialize::Result<i64> {
                NamedRow::get::<diesel::sql_types::BigInt, i64>(row, column)
            }

            fn read_optional_bigint<'a>(
                row: &impl NamedRow<'a, Self>,
                column: &str,
            ) -> diesel::deserialize::Result<Option<i64>> {
                NamedRow::get::<
                    diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
                    Option<i64>,
                >(row, column)
            }

            fn read_text<'a>(
                row: &impl NamedRow<'a, Self>,
                column: &str,
            ) -> diesel::deserialize::Result<String> {
                NamedRow::get::<diesel::sql_types::Text, String>(row, column)
            }

            fn read_bool<'a>(
                row: &impl NamedRow<'a, Self>,
                column: &str,
            ) -> diesel::deserialize::Result<bool> {
                NamedRow::get::<diesel::sql_types::Bool, bool>(row, column)
            }

            fn bind_bool<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b bool) -> QueryResult<()> {
                out.push_bind_param::<diesel::sql_types::Bool, bool>(value)
            }

            fn bind_optional_i64<'b>(
                out: &mut AstPass<'_, 'b, Self>,
                value: &'b Option<i64>,
            ) -> QueryResult<()> {
                out.push_bind_param::<
                    diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
                    Option<i64>,
                >(value)
            }
        }
    };
}

dialect!(
    "postgres",
    diesel::pg::Pg,
    DialectKind::Postgres,
    diesel::sql_types::BigInt,
    i64,
    async fn single<'a, M, E>(
        conn: &'a mut E,
        row: &'a M,
        plan: &'a SinglePlan,
    ) -> QueryResult<Option<M>>
    where
        M: MasterColumns<Self>,
        E: Exec<Backend = Self>,
    {
        let now = <M::Updated as crate::master::UpdatedAt>::from_utc(plan.now());
        let statement = crate::master::single::SingleWrite::new(row, plan, &now);
        let rows: Vec<crate::master::columns::Loaded<M>> = conn.load(statement).await?;
        Ok(rows.into_iter().next().map(|row| row.0))
    }
);
// `LAST_INSERT_ID()` is unsigned; counts fit either way.
dialect!(
    "mysql",
    diesel::mysql::Mysql,
    DialectKind::Mysql,
    diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
    u64
);
dialect!(
    "mariadb",
    diesel::mariadb::Mariadb,
    DialectKind::Mariadb,
    diesel::sql_types::BigInt,
    i64
);
dialect!(
    "sqlite",
    diesel::sqlite::Sqlite,
    DialectKind::Sqlite,
    diesel::sql_types::BigInt,
    i64
);

/// One integer column named `n` (a count, an id read back), as statements alias it.
pub(crate) struct Int(pub(crate) i64);

impl<DB: Dialect> QueryableByName<DB> for Int {
    fn build<'a>(row: &impl NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        DB::read_i64(row, "n").map(Int)
    }
}

/// A statement of fixed text, without binds.
pub(crate) struct Sql(pub(crate) &'static str);

impl<DB: Backend> QueryFragment<DB> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

/// Any statement, run untyped: its rows are read by column name ([`QueryableByName`]), so one
/// generic loader serves every statement on every connection, sync or async. Not cached by
/// type: Diesel keys its prepared statements by SQL text instead.
pub(crate) struct Run<Q>(pub(crate) Q);

impl<Q> QueryId for Run<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Run<Q> {
    type SqlType = Untyped;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Run<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }
}

// Gives it Diesel's `RunQueryDsl`, and diesel-async's.
impl<Q> diesel::query_dsl::RunQueryDslSupport for Run<Q> {}

/// The future an async write returns.
pub type WriteFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// How a connection's write methods return: at once ([`Blocking`]) or as a future
/// ([`Awaiting`]).
pub trait Mode {
    /// What a write method returns.
    type Ret<'a, T: Send + 'a>: Send + 'a;

    /// Turns a write into what the write method returns.
    #[doc(hidden)]
    fn ret<'a, T: Send + 'a>(
        write: impl Future<Output = Result<T>> + Send + 'a,
    ) -> Self::Ret<'a, T>;

    /// What a write method returned, as a future of its result whatever the mode: for code
    /// written once for sync and async connections
    /// (`C::Mode::settle(row.save_and_publish(conn)).await`).
    fn settle<'a, T: Send + 'a>(
        ret: Self::Ret<'a, T>,
    ) -> impl Future<Output = Result<T>> + Send + 'a;
}

/// Sync connections: a write method returns its [`Result`].
#[derive(Debug)]
pub enum Blocking {}

impl Mode for Blocking {
    type Ret<'a, T: Send + 'a> = Result<T>;

    fn ret<'a, T: Send + 'a>(write: impl Future<Output = Result<T>> + Send + 'a) -> Result<T> {
        run_ready(write)
    }

    fn settle<'a, T: Send + 'a>(ret: Result<T>) -> impl Future<Output = Result<T>> + Send + 'a {
        std::future::ready(ret)
    }
}

/// Async connections: a write method returns a future of its [`Result`], to `.await`.
#[derive(Debug)]
pub enum Awaiting {}

impl Mode for Awaiting {
    type Ret<'a, T: Send + 'a> = WriteFuture<'a, T>;

    fn ret<'a, T: Send + 'a>(
        write: impl Future<Output = Result<T>> + Send + 'a,
    ) -> WriteFuture<'a, T> {
        Box::pin(write)
    }

    fn settle<'a, T: Send + 'a>(
        ret: WriteFuture<'a, T>,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        ret
    }
}

/// What a write method returns on connection `C`: `Result<T>` on a sync connection, a
/// [`WriteFuture`] on an async one.
pub type Ret<'a, C, T> = <<C as Exec>::Mode as Mode>::Ret<'a, T>;

/// A connection master writes run on: a sync Diesel connection (`PgConnection`,
/// `MysqlConnection`, `MariadbConnection`, `SqliteConnection`) or, with the `async` feature, a
/// diesel-async one (`AsyncPgConnection`, `AsyncMysqlConnection`, `AsyncMariadbConnection`,
/// `SyncConnectionWrapper<SqliteConnection>`).
/// Implemented by this crate.
pub trait Exec: Send + Sized + 'static {
    /// The Diesel backend.
    type Backend: Dialect;

    /// Whether write methods return at once or as a future.
    type Mode: Mode;

    /// Runs a statement and reads its rows by column name.
    #[doc(hidden)]
    fn load<U, Q>(&mut self, query: Q) -> impl Future<Output = QueryResult<Vec<U>>> + Send
    where
        U: QueryableByName<Self::Backend> + Send + 'static,
        Q: QueryFragment<Self::Backend> + Send;

    /// Runs a statement and returns how many rows it affected.
    #[doc(hidden)]
    fn execute<Q>(&mut self, query: Q) -> impl Future<Output = QueryResult<usize>> + Send
    where
        Q: QueryFragment<Self::Backend> + Send;

    /// Begins a transaction suitable for writes (`BEGIN IMMEDIATE` on SQLite), or a savepoint
    /// when one is open.
    #[doc(hidden)]
    fn begin(&mut self) -> impl Future<Output = QueryResult<()>> + Send;

    /// Commits the innermost transaction or savepoint.
    #[doc(hidden)]
    fn commit(&mut self) -> impl Future<Output = QueryResult<()>> + Send;

    /// Rolls back the innermost transaction or savepoint.
    #[doc(hidden)]
    fn rollback(&mut self) -> impl Future<Output = QueryResult<()>> + Send;

    /// The depth of the open transaction (0 when none is).
    #[doc(hidden)]
    fn depth(&mut self) -> u32;

    /// Whether the connection's transaction manager cannot be trusted any more (a transaction
    /// statement was cancelled half way, or failed to roll back).
    #[doc(hidden)]
    fn broken(&mut self) -> bool;

    /// The connection tagged with its backend, as [`MasterHooks`](crate::MasterHooks) receive
    /// it.
    fn db_conn(&mut self) -> DbConn<'_>;

    /// Waits before a write runs again after a conflict: the thread sleeps on a sync
    /// connection, the task on an async one.
    #[doc(hidden)]
    fn pause(duration: Duration) -> impl Future<Output = ()> + Send;
}

/// Runs a future that is ready at once, as every future of a sync connection is.
pub(crate) fn run_ready<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(Error::Task(
            "a write on a sync connection waited for something; this is a bug".to_owned(),
        )),
    }
}

/// [`Exec`] for a sync Diesel connection.
macro_rules! sync_exec {
    ($feature:literal, $conn:ty, $variant:ident, $begin:expr) => {
        #[cfg(feature = $feature)]
        impl Exec for $conn {
            type Backend = <$conn as diesel::Connection>::Backend;
            type Mode = Blocking;

            fn load<U, Q>(&mut self, query: Q) -> impl Future<Output = QueryResult<Vec<U>>> + Send
            where
                U: QueryableByName<Self::Backend> + Send + 'static,
                Q: QueryFragment<Self::Backend> + Send,
            {
                std::future::ready(diesel::RunQueryDsl::load(Run(query), self))
            }

            fn execute<Q>(&mut self, query: Q) -> impl Future<Output = QueryResult<usize>> + Send
            where
                Q: QueryFragment<Self::Backend> + Send,
            {
                std::future::ready(diesel::RunQueryDsl::execute(Run(query), self))
            }

            fn begin(&mut self) -> impl Future<Output = QueryResult<()>> + Send {
                let begin: fn(&mut $conn) -> QueryResult<()> = $begin;
                std::future::ready(begin(self))
            }

            fn commit(&mut self) -> impl Future<Output = QueryResult<()>> + Send {
                use diesel::connection::{Connection, TransactionManager};
                std::future::ready(
                    <$conn as Connection>::TransactionManager::commit_transaction(self),
                )
            }

            fn rollback(&mut self) -> impl Future<Output = QueryResult<()>> + Send {
                use diesel::connection::{Connection, TransactionManager};
                std::future::ready(
                    <$conn as Connection>::TransactionManager::rollback_transaction(self),
                )
            }

            fn depth(&mut self) -> u32 {
                crate::connection::transaction_depth(self)
            }

            fn broken(&mut self) -> bool {
                use diesel::connection::{Connection, TransactionManager};
                <$conn as Connection>::TransactionManager::transaction_manager_status_mut(self)
                    .transaction_depth()
                    .is_err()
            }

            fn db_conn(&mut self) -> DbConn<'_> {
                DbConn::$variant(self)
            }

            fn pause(duration: Duration) -> impl Future<Output = ()> + Send {
                std::thread::sleep(duration);
                std::future::ready(())
            }
        }
    };
}

sync_exec!("postgres", diesel::PgConnection, Pg, |conn| {
    use diesel::connection::{Connection, TransactionManager};
    <diesel::PgConnection as Connection>::TransactionManager::begin_transaction(conn)
});
sync_exec!("mysql", diesel::MysqlConnection, Mysql, |conn| {
    use diesel::connection::{Connection, TransactionManager};
    <diesel::MysqlConnection as Connection>::TransactionManager::begin_transaction(conn)
});
sync_exec!("mariadb", diesel::MariadbConnection, Mariadb, |conn| {
    use diesel::connection::{Connection, TransactionManager};
    <diesel::MariadbConnection as Connection>::TransactionManager::begin_transaction(conn)
});
sync_exec!("sqlite", diesel::SqliteConnection, Sqlite, sqlite_begin);

/// Begins a write transaction on SQLite: a top-level one takes the database's write lock at
/// once (`BEGIN IMMEDIATE`), so that a read followed by a write cannot fail with `SQLITE_BUSY`
/// half way.
#[cfg(feature = "sqlite")]
fn sqlite_begin(conn: &mut diesel::SqliteConnection) -> QueryResult<()> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    if crate::connection::transaction_depth(conn) == 0 {
        AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE")
    } else {
        AnsiTransactionManager::begin_transaction(conn)
    }
}

#[cfg(feature = "async")]
pub(crate) mod asynchronous {
    //! [`Exec`] for diesel-async connections.

    use super::*;
    use diesel_async::{AsyncConnection, RunQueryDsl, TransactionManager};

    macro_rules! async_exec {
        ($feature:literal, $conn:ty, $variant:ident, $begin:expr) => {
            #[cfg(feature = $feature)]
            impl Exec for $conn {
                type Backend = <$conn as diesel_async::AsyncConnectionCore>::Backend;
                type Mode = Awaiting;

                fn load<U, Q>(
                    &mut self,
                    query: Q,
                ) -> impl Future<Output = QueryResult<Vec<U>>> + Send
                where
                    U: QueryableByName<Self::Backend> + Send + 'static,
                    Q: QueryFragment<Self::Backend> + Send,
                {
                    RunQueryDsl::load(Run(query), self)
                }

                fn execute<Q>(
                    &mut self,
                    query: Q,
                ) -> impl Future<Output = QueryResult<usize>> + Send
                where
                    Q: QueryFragment<Self::Backend> + Send,
                {
                    RunQueryDsl::execute(Run(query), self)
                }

                fn begin(&mut self) -> impl Future<Output = QueryResult<()>> + Send {
                    $begin(self)
                }

                fn commit(&mut self) -> impl Future<Output = QueryResult<()>> + Send {
                    <$conn as AsyncConnection>::TransactionManager::commit_transaction(self)
                }

                fn rollback(&mut self) -> impl Future<Output = QueryResult<()>> + Send {
                    <$conn as AsyncConnection>::TransactionManager::rollback_transaction(self)
                }

                fn depth(&mut self) -> u32 {
                    <$conn as AsyncConnection>::TransactionManager::transaction_manager_status_mut(
                        self,
                    )
                    .transaction_depth()
                    .ok()
                    .flatten()
                    .map_or(0, |depth| depth.get())
                }

                fn broken(&mut self) -> bool {
                    // True inside any open transaction too: only meaningful at depth 0.
                    <$conn as AsyncConnection>::TransactionManager::is_broken_transaction_manager(
                        self,
                    )
                }

                fn db_conn(&mut self) -> DbConn<'_> {
                    DbConn::$variant(self)
                }

                fn pause(duration: Duration) -> impl Future<Output = ()> + Send {
                    tokio::time::sleep(duration)
                }
            }
        };
    }

    async_exec!(
        "postgres",
        diesel_async::AsyncPgConnection,
        AsyncPg,
        <diesel_async::AsyncPgConnection as AsyncConnection>::TransactionManager::begin_transaction
    );
    async_exec!(
        "mysql",
        diesel_async::AsyncMysqlConnection,
        AsyncMysql,
        <diesel_async::AsyncMysqlConnection as AsyncConnection>::TransactionManager::begin_transaction
    );

    async_exec!(
        "mariadb",
        diesel_async::AsyncMariadbConnection,
        AsyncMariadb,
        <diesel_async::AsyncMariadbConnection as AsyncConnection>::TransactionManager::begin_transaction
    );

    #[cfg(feature = "sqlite")]
    type AsyncSqlite =
        diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

    #[cfg(feature = "sqlite")]
    fn begin_sqlite(conn: &mut AsyncSqlite) -> impl Future<Output = QueryResult<()>> + Send + '_ {
        // On the wrapped connection, as the sync executor begins.
        conn.spawn_blocking(super::sqlite_begin)
    }

    async_exec!("sqlite", AsyncSqlite, AsyncSqlite, begin_sqlite);
}
