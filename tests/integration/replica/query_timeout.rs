//! `CQRS_QUERY_TIMEOUT`: a replica statement held longer than the timeout (here behind another
//! transaction's lock on the row's state) is cancelled by the database, and its batch is tried
//! again after the retry delay, spending no retries, until it applies.

use std::time::Duration;

use cqrs_diesel::Replicas;

use super::models::{AuthorRow, MysqlAuthorReplica, PgAuthorReplica};
use super::{Worker, author};
use crate::db::{MysqlDb, PgDb, TestDb};

async fn a_statement_over_the_query_timeout_is_retried_until_it_applies<D, M>(db: D)
where
    D: TestDb + 'static,
    M: AuthorRow<Conn = D::Conn> + cqrs_diesel::ReplicaStore<D::Conn>,
{
    let holder_connect = db.connector();
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start_with(db, M::DDL, replicas, |b| {
        b.query_timeout(Some(Duration::from_millis(300)))
            .log_timed_out_queries(true)
            .retry_delay(Duration::from_millis(100))
            .max_retries(Some(0))
    })
    .await;
    // Another transaction holds the state row of author 1 until told to let go.
    let (holder, release_tx) = super::lock_author_state(move || holder_connect().expect("connect"));
    worker
        .broadcast(&author("SAVE", 1, "after the lock", 0))
        .await;
    let stats = worker
        .wait("a timed-out batch retried twice", |s| {
            s.timeout_retries >= 2
        })
        .await;
    assert_eq!(stats.applied() + stats.dead_lettered, 0, "{stats:?}");
    release_tx.send(()).expect("release the lock");
    holder.join().expect("the holder ends");
    let stats = worker
        .wait("the message applied", |s| s.applied() >= 1)
        .await;
    assert_eq!(
        (stats.created, stats.retried, stats.dead_lettered),
        (1, 0, 0),
        "with max_retries = 0, a timeout spends no retry: {stats:?}"
    );
    let names: Vec<String> = M::load_all(&mut worker.db.connect())
        .iter()
        .map(|row| row.name().to_owned())
        .collect();
    assert_eq!(names, ["after the lock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_query_timeout_is_retried_until_it_applies_on_postgres() {
    a_statement_over_the_query_timeout_is_retried_until_it_applies::<_, PgAuthorReplica>(
        PgDb::new("rqt"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_query_timeout_is_retried_until_it_applies_on_mariadb() {
    a_statement_over_the_query_timeout_is_retried_until_it_applies::<_, MysqlAuthorReplica>(
        MysqlDb::new("rqt"),
    )
    .await;
}
