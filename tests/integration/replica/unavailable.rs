//! What a failed write means to the replica worker, decided from the database's error code: a
//! read-only database (as after a failover to a standby) pauses the worker without spending
//! any message's retries, until a write succeeds again; a deadlock, a serialization failure or
//! a lock wait timeout is tried again at once, also without spending them. Every test sets
//! `max_retries = 0`, so a write judged a failure of its message would dead-letter it at once.

use std::sync::mpsc;
use std::time::Duration;

use cqrs_diesel::Replicas;
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::dsl::sql;
use cqrs_diesel::diesel::result::{ConnectionError, Error as DieselError};
use cqrs_diesel::diesel::sql_types::BigInt;
use cqrs_diesel::diesel::{Connection, MysqlConnection, PgConnection, RunQueryDsl};

use super::models::{AuthorRow, MysqlAuthorReplica, PgAuthorReplica};
use super::{Worker, author, dead_letters};
use crate::db::{MysqlDb, PgDb, TestDb, mysql_url, pg_url};
use crate::support::unique;

/// `url` with its database (the last path segment) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(head, _)| head);
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A PostgreSQL database of its own (not a schema of `test`: the test makes the whole
/// database read-only), dropped at the end.
struct PgDatabase {
    name: String,
}

impl PgDatabase {
    fn new(tag: &str) -> Self {
        let name = unique(tag).to_lowercase();
        admin_pg()
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create the database");
        PgDatabase { name }
    }

    fn url(&self) -> String {
        with_database(&pg_url(), &self.name)
    }
}

impl TestDb for PgDatabase {
    type Conn = PgConnection;
    type AsyncConn = diesel_async::AsyncPgConnection;

    fn connect_async(&self) -> impl std::future::Future<Output = Self::AsyncConn> + Send {
        let url = self.url();
        async move {
            <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&url)
                .await
                .expect("PostgreSQL accepts async connections")
        }
    }

    fn connector(&self) -> Box<dyn Fn() -> Result<PgConnection, ConnectionError> + Send + Sync> {
        let url = self.url();
        Box::new(move || PgConnection::establish(&url))
    }

    fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CQRS_TEST_BACKEND", "postgres".into()),
            ("CQRS_TEST_DATABASE_URL", self.url()),
        ]
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&pg_url()) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn admin_pg() -> PgConnection {
    PgConnection::establish(&pg_url()).expect("PostgreSQL is up")
}

/// Makes a PostgreSQL database read-only for new sessions (`default_transaction_read_only`)
/// and terminates its current ones, so that every reconnect sees it: what a client meets
/// after a failover to a standby. Writable again on drop.
struct PgReadOnly {
    database: String,
}

impl PgReadOnly {
    fn on(database: &str) -> Self {
        let mut admin = admin_pg();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{database}\" SET default_transaction_read_only = on; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{database}' AND pid <> pg_backend_pid();"
            ))
            .expect("make the database read-only");
        PgReadOnly {
            database: database.to_owned(),
        }
    }
}

impl Drop for PgReadOnly {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&pg_url()) {
            let _ = admin.batch_execute(&format!(
                "ALTER DATABASE \"{}\" RESET default_transaction_read_only",
                self.database
            ));
        }
    }
}

/// A MariaDB user without any global privilege (so `read_only` applies to it: `root` has
/// `READ_ONLY ADMIN` and writes through it), with every privilege on one database.
struct MysqlUser {
    name: String,
    url: String,
}

impl MysqlUser {
    fn new(db: &MysqlDb) -> Self {
        let name = unique("rro_user");
        let password = unique("pw");
        let mut admin = MysqlConnection::establish(&mysql_url()).expect("MariaDB is up");
        admin
            .batch_execute(&format!(
                "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
                 GRANT ALL PRIVILEGES ON `{}`.* TO '{name}'@'%';",
                db.database
            ))
            .expect("create the user");
        let base = db.url();
        let (scheme, rest) = base.split_once("://").expect("a URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let url = format!("{scheme}://{name}:{password}@{host}");
        MysqlUser { name, url }
    }

    fn connector(&self) -> impl Fn() -> Result<MysqlConnection, ConnectionError> + use<> {
        let url = self.url.clone();
        move || MysqlConnection::establish(&url)
    }
}

impl Drop for MysqlUser {
    fn drop(&mut self) {
        if let Ok(mut admin) = MysqlConnection::establish(&mysql_url()) {
            let _ = admin.batch_execute(&format!("DROP USER IF EXISTS '{}'@'%'", self.name));
        }
    }
}

/// `SET GLOBAL read_only = ON` on the shared MariaDB server, `OFF` again on drop. The other
/// tests connect as `root`, whom `read_only` does not restrict, so only the users this file
/// creates see it; keep the guard's life short all the same.
struct MysqlReadOnly;

impl MysqlReadOnly {
    fn on() -> Self {
        MysqlConnection::establish(&mysql_url())
            .expect("MariaDB is up")
            .batch_execute("SET GLOBAL read_only = ON")
            .expect("make the server read-only");
        MysqlReadOnly
    }
}

impl Drop for MysqlReadOnly {
    fn drop(&mut self) {
        if let Ok(mut admin) = MysqlConnection::establish(&mysql_url()) {
            let _ = admin.batch_execute("SET GLOBAL read_only = OFF");
        }
    }
}

/// The ids of the replica's rows.
fn ids<R: AuthorRow>(conn: &mut R::Conn) -> Vec<i32> {
    R::load_all(conn).iter().map(AuthorRow::id).collect()
}

/// Publishes the SAVEs of authors `ids`.
async fn publish_authors<D: TestDb>(worker: &Worker<D>, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        worker
            .broadcast(&author("SAVE", id, &format!("author {id}"), 0))
            .await;
    }
}

/// While the database refuses writes, the worker holds its batch: it tries again (at least
/// three times, reconnecting, so it has met the refusal on a new session), applies nothing,
/// retries and dead-letters nothing.
async fn assert_paused<D: TestDb>(worker: &Worker<D>) {
    worker
        .wait("the worker to pause on the read-only database", |s| {
            s.unavailable_retries >= 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = worker.stats();
    assert_eq!(
        stats.applied(),
        1,
        "nothing applied while read-only: {stats:?}"
    );
    assert_eq!(
        (stats.retried, stats.dead_lettered, stats.batch_failures),
        (0, 0, 0),
        "a read-only database is no failing message: {stats:?}"
    );
}

/// Once writable, every message is applied (`rows`: the ids stored) and none was retried or
/// dead-lettered.
async fn assert_all_applied<D: TestDb>(worker: &Worker<D>, rows: Vec<i32>) {
    let stats = worker.stats();
    assert_eq!(
        (stats.created, stats.retried, stats.dead_lettered),
        (51, 0, 0),
        "{stats:?}"
    );
    assert_eq!(rows, (1..=51).collect::<Vec<i32>>());
    let dead = dead_letters(worker.config.dead_letter_queue().expect("dlq")).await;
    assert!(dead.is_empty(), "{dead:#?}");
}

/// The report: a replica database read-only for 20 s (as after a failover to a standby) while a
/// master created 50 rows, and all 50 messages were dead-lettered: a read-only database still
/// answers `SELECT 1`. Its 25006 now pauses the worker; once writable, every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_postgres_database_pauses_the_worker_until_it_is_writable() {
    let db = PgDatabase::new("rro");
    let replicas = Replicas::new(db.connector()).register::<PgAuthorReplica>();
    let worker = Worker::start_with(db, <PgAuthorReplica as AuthorRow>::DDL, replicas, |b| {
        b.max_retries(Some(0))
    })
    .await;
    publish_authors(&worker, 1..=1).await;
    worker.wait_settled(1).await;

    let read_only = PgReadOnly::on(&worker.db.name);
    publish_authors(&worker, 2..=51).await;
    assert_paused(&worker).await;

    drop(read_only);
    worker.wait_settled(51).await;
    let rows = ids::<PgAuthorReplica>(&mut worker.db.connect());
    assert_all_applied(&worker, rows).await;
}

/// The same on MariaDB: `read_only` refuses the worker's writes with 1290, which pauses the
/// worker; once writable again, every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_mariadb_server_pauses_the_worker_until_it_is_writable() {
    let db = MysqlDb::new("rro");
    let user = MysqlUser::new(&db);
    let replicas = Replicas::new(user.connector()).register::<MysqlAuthorReplica>();
    let worker = Worker::start_with(db, MysqlAuthorReplica::DDL, replicas, |b| {
        b.max_retries(Some(0))
    })
    .await;
    publish_authors(&worker, 1..=1).await;
    worker.wait_settled(1).await;

    let read_only = MysqlReadOnly::on();
    publish_authors(&worker, 2..=51).await;
    assert_paused(&worker).await;

    drop(read_only);
    worker.wait_settled(51).await;
    let rows = ids::<MysqlAuthorReplica>(&mut worker.db.connect());
    assert_all_applied(&worker, rows).await;
}

/// Waits until a session of `application_name` waits for a lock.
async fn wait_for_lock_wait(application_name: &str) {
    let mut admin = admin_pg();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = cqrs_diesel::diesel::select(sql::<BigInt>(&format!(
            "count(*) FROM pg_stat_activity WHERE application_name = '{application_name}' \
             AND wait_event_type = 'Lock'"
        )))
        .get_result(&mut admin)
        .expect("read pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A PostgreSQL replica worker whose sessions carry `application_name` and run `setup`.
async fn pg_worker(tag: &str, application_name: &str, setup: &'static str) -> Worker<PgDb> {
    let db = PgDb::new(tag);
    let connect = {
        let inner = db.connector();
        let application_name = application_name.to_owned();
        move || -> Result<PgConnection, ConnectionError> {
            let mut conn = inner()?;
            conn.batch_execute(&format!(
                "SET application_name = '{application_name}'; {setup}"
            ))
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
    };
    let replicas = Replicas::new(connect).register::<PgAuthorReplica>();
    let worker = Worker::start_with(db, <PgAuthorReplica as AuthorRow>::DDL, replicas, |b| {
        b.max_retries(Some(0))
    })
    .await;
    worker.broadcast(&author("SAVE", 1, "first", 0)).await;
    worker.wait_settled(1).await;
    worker
}

/// After one conflict or more, the second SAVE of author 1 is applied, and no message was
/// retried or dead-lettered.
async fn assert_applied_after_conflict(worker: &Worker<PgDb>) {
    worker
        .wait("a conflict retried", |s| s.conflict_retries >= 1)
        .await;
    let stats = worker
        .wait("the second SAVE applied", |s| s.applied() >= 2)
        .await;
    assert_eq!(
        (
            stats.created,
            stats.updated,
            stats.retried,
            stats.dead_lettered
        ),
        (1, 1, 0, 0),
        "{stats:?}"
    );
    let rows = PgAuthorReplica::load_all(&mut worker.db.connect());
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].name(), rows[0].revision()), ("second", 1));
}

/// A real deadlock: another transaction holds author 1's row and asks for its replica state,
/// which the worker's transaction holds while it waits for the row. The other transaction's
/// `deadlock_timeout` is far longer than the worker's, so the worker's check finds the cycle
/// and PostgreSQL aborts the worker's transaction (40P01), which is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_deadlock_is_retried_without_spending_the_message_retries() {
    let application_name = unique("replica_deadlock");
    // Two seconds: the other side asks for the state well within them.
    let worker = pg_worker(
        "rdeadlock",
        &application_name,
        "SET deadlock_timeout = '2s'",
    )
    .await;
    let mut other = worker.db.connect();
    let (locked_tx, locked_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let other_side = std::thread::spawn(move || {
        other.batch_execute("SET deadlock_timeout = '60s'")?;
        other.transaction(|conn| {
            conn.batch_execute("SELECT 1 FROM author WHERE id = 1 FOR UPDATE")?;
            let _ = locked_tx.send(());
            let _ = go_rx.recv_timeout(Duration::from_secs(60));
            conn.batch_execute(
                "SELECT 1 FROM cqrs_replica_state \
                 WHERE cqrs_id = 'author' AND pk = '1' FOR UPDATE",
            )
        })
    });
    locked_rx.recv().expect("the row is locked");
    worker.broadcast(&author("SAVE", 1, "second", 1)).await;
    wait_for_lock_wait(&application_name).await;
    go_tx.send(()).expect("close the cycle");
    let other_result: Result<(), DieselError> = other_side.join().expect("the other side ends");
    assert!(
        other_result.is_ok(),
        "the worker's transaction is the deadlock's victim: {other_result:?}"
    );
    assert_applied_after_conflict(&worker).await;
}

/// A real serialization failure: the worker's SERIALIZABLE transaction waits for author 1's
/// row, which a concurrent transaction updates and commits; PostgreSQL aborts the worker's
/// transaction (40001), which is tried again on a new snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_serialization_failure_is_retried_without_spending_the_message_retries() {
    let application_name = unique("replica_serializable");
    let worker = pg_worker(
        "rserial",
        &application_name,
        "SET default_transaction_isolation = 'serializable'",
    )
    .await;
    let mut other = worker.db.connect();
    let (locked_tx, locked_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let other_side = std::thread::spawn(move || {
        other.transaction(|conn| {
            conn.batch_execute("UPDATE author SET name = 'concurrent' WHERE id = 1")?;
            let _ = locked_tx.send(());
            let _ = go_rx.recv_timeout(Duration::from_secs(60));
            Ok::<_, DieselError>(())
        })
    });
    locked_rx.recv().expect("the row is updated");
    worker.broadcast(&author("SAVE", 1, "second", 1)).await;
    wait_for_lock_wait(&application_name).await;
    go_tx.send(()).expect("commit the concurrent update");
    other_side
        .join()
        .expect("the other side ends")
        .expect("the concurrent update commits");
    assert_applied_after_conflict(&worker).await;
}

/// MariaDB's lock wait timeout (1205) in a session whose messages are German: only the error
/// number, read back from the server, tells it is a conflict. Judged by its text, the message
/// would be dead-lettered (`max_retries = 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_lock_wait_timeout_is_known_by_its_number_in_any_language() {
    let db = MysqlDb::new("rlang");
    let url = db.url();
    let german = {
        let url = url.clone();
        move || -> Result<MysqlConnection, ConnectionError> {
            let mut conn = MysqlConnection::establish(&url)?;
            conn.batch_execute(
                "SET SESSION lc_messages = 'de_DE'; SET SESSION innodb_lock_wait_timeout = 1",
            )
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
    };
    let replicas = Replicas::new(german).register::<MysqlAuthorReplica>();
    let worker = Worker::start_with(db, MysqlAuthorReplica::DDL, replicas, |b| {
        b.max_retries(Some(0))
    })
    .await;
    worker.broadcast(&author("SAVE", 1, "first", 0)).await;
    worker.wait_settled(1).await;
    // Another transaction holds the state row of author 1 until told to let go.
    let mut holder = MysqlConnection::establish(&url).expect("connect");
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        holder.transaction(|conn| {
            conn.batch_execute(
                "SELECT * FROM cqrs_replica_state WHERE cqrs_id = 'author' AND pk = '1' FOR UPDATE",
            )?;
            let _ = locked_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
            Ok::<_, DieselError>(())
        })
    });
    locked_rx.recv().expect("the lock is held");
    worker.broadcast(&author("SAVE", 1, "second", 1)).await;
    worker
        .wait("a conflict retried", |s| {
            s.conflict_retries >= 1 || s.dead_lettered >= 1
        })
        .await;
    release_tx.send(()).expect("release the lock");
    holder
        .join()
        .expect("the holder ends")
        .expect("the holding transaction");
    let stats = worker
        .wait("the second SAVE settled", |s| {
            s.applied() + s.dead_lettered >= 2
        })
        .await;
    assert_eq!(
        (
            stats.created,
            stats.updated,
            stats.retried,
            stats.dead_lettered
        ),
        (1, 1, 0, 0),
        "{stats:?}"
    );
}
