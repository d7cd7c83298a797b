//! Every golden message of django-cqrs 3.1.0, published as the reference publishes it, is
//! applied to a replica shaped like its `author`, on each backend, at the moment the reference
//! captured them; one TTL later the same messages are dead-lettered as expired.

use std::time::Duration;

use cqrs_diesel::{ManualClock, ReplicaStore, Replicas};
use serde_json::Value;

use super::Worker;
use super::models::{AuthorRow, MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};
use crate::master::{golden, golden_captured_at};

/// The reference's default message TTL, with which it wrote the fixture's `expires`.
const REFERENCE_TTL: Duration = Duration::from_secs(86_400);

/// Starts a worker whose clock shows `clock` and publishes every golden line as the reference
/// did (line 4 is a SYNC the reference sent to one replica queue: here, to ours).
async fn replay<D, M>(db: D, clock: &ManualClock) -> (Worker<D>, Vec<Value>)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let clock = clock.clock();
    let worker = Worker::start_with(db, M::DDL, replicas, |b| b.clock(clock)).await;
    let lines = golden();
    for (i, body) in lines.iter().enumerate() {
        if i == 3 {
            worker.direct(body).await;
        } else {
            worker.broadcast(body).await;
        }
    }
    (worker, lines)
}

async fn golden_messages_apply<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let clock = ManualClock::new(golden_captured_at());
    let (worker, lines) = replay::<D, M>(db, &clock).await;
    let stats = worker.wait_settled(lines.len() as u64).await;
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");

    let rows = M::load_all(&mut worker.db.connect());
    let ids: Vec<i32> = rows.iter().map(|row| row.id()).collect();
    assert_eq!(ids, [1, 100, 101], "author 2 was deleted");
    // Each row equals the last SAVE of it, field by field (its cqrs_updated aside).
    for (row, line) in rows.iter().zip([1usize, 8, 9]) {
        let mut expected = lines[line]["instance_data"].clone();
        if let Some(data) = expected.as_object_mut() {
            data.remove("cqrs_updated");
        }
        assert_eq!(row.wire_fields(), expected, "row {}", row.id());
    }
}

async fn golden_messages_expire_one_ttl_later<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let clock = ManualClock::new(golden_captured_at());
    clock.advance(REFERENCE_TTL);
    let (worker, lines) = replay::<D, M>(db, &clock).await;
    let stats = worker.wait_settled(lines.len() as u64).await;
    assert_eq!(stats.dead_lettered, lines.len() as u64, "{stats:?}");
    assert_eq!(stats.applied(), 0, "{stats:?}");
    assert!(M::load_all(&mut worker.db.connect()).is_empty());
    let dlq = worker
        .config
        .dead_letter_queue()
        .expect("a dead-letter queue");
    let reasons: Vec<String> = super::dead_letters(dlq)
        .await
        .into_iter()
        .map(|(_, reason)| reason)
        .collect();
    assert_eq!(reasons.len(), lines.len(), "{reasons:?}");
    assert!(
        reasons.iter().all(|reason| reason == "expired"),
        "every dead letter says why: {reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_messages_apply_on_postgres() {
    golden_messages_apply::<_, PgAuthorReplica>(PgDb::new("rg")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_messages_apply_on_mariadb() {
    golden_messages_apply::<_, MysqlAuthorReplica>(MysqlDb::new("rg")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_messages_apply_on_sqlite() {
    golden_messages_apply::<_, SqliteAuthorReplica>(SqliteDb::new("rg")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_messages_replayed_one_ttl_later_are_dead_lettered_as_expired() {
    golden_messages_expire_one_ttl_later::<_, SqliteAuthorReplica>(SqliteDb::new("rge")).await;
}
