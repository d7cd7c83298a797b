//! Apply semantics on each backend: create, update, gaps, out-of-order and duplicate
//! revisions, SYNC (also lowering), DELETE with tombstones, late SAVE after DELETE, a re-created
//! row, and a worker stopped and restarted in the middle of a stream.

use std::collections::HashMap;

use cqrs_diesel::{ReplicaStore, Replicas};

use super::models::{AuthorRow, MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica};
use super::{Worker, author, author_at, author_delete, author_delete_at};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

fn rows<D, M>(worker: &Worker<D>) -> HashMap<i32, (String, i32)>
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn>,
{
    M::load_all(&mut worker.db.connect())
        .into_iter()
        .map(|row| (row.id(), (row.name().to_owned(), row.revision())))
        .collect()
}

async fn revisions_are_guarded<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;

    // Phase 1: creates and in-order updates, one of them skipping a revision.
    worker.broadcast(&author("SAVE", 1, "a0", 0)).await;
    worker.broadcast(&author("SAVE", 2, "b0", 0)).await;
    worker.broadcast(&author("SAVE", 3, "c0", 0)).await;
    worker.wait_settled(3).await;
    worker.broadcast(&author("SAVE", 1, "a1", 1)).await;
    worker.broadcast(&author("SAVE", 2, "b3", 3)).await; // gap of 2
    let stats = worker.wait_settled(5).await;
    assert_eq!(stats.created, 3);
    assert_eq!(stats.updated, 2);

    // Phase 2: an older revision, a duplicate: the stored rows win.
    worker.broadcast(&author("SAVE", 2, "b1-late", 1)).await;
    worker.broadcast(&author("SAVE", 1, "a1-again", 1)).await;
    let stats = worker.wait_settled(7).await;
    assert_eq!(stats.skipped_old, 1);
    assert_eq!(stats.duplicates, 1);

    // Phase 3: a SYNC at the stored revision rewrites the row (a repair of drifted values); a
    // SYNC below it changes nothing, even stamped later (within a life the revision decides,
    // not the clocks); DELETE; a late SAVE cannot resurrect.
    worker
        .broadcast(&author_at(
            "SYNC",
            2,
            "b-synced",
            3,
            "2026-11-28 18:25:00.000000+00:00",
        ))
        .await;
    worker
        .broadcast(&author_at(
            "SYNC",
            2,
            "b-lower",
            2,
            "2026-11-28 18:26:00.000000+00:00",
        ))
        .await;
    worker.broadcast(&author_delete(3, 1)).await;
    worker.wait_settled(10).await;
    worker.broadcast(&author("SAVE", 3, "c0-late", 0)).await;
    let stats = worker.wait_settled(11).await;
    assert_eq!(stats.synced, 1);
    assert_eq!(stats.deleted, 1);
    assert_eq!(stats.skipped_old, 2, "{stats:?}");
    assert_eq!(stats.tombstoned, 1, "{stats:?}");

    let stored = rows::<D, M>(&worker);
    assert_eq!(stored.get(&1), Some(&("a1".to_owned(), 1)));
    assert_eq!(stored.get(&2), Some(&("b-synced".to_owned(), 3)));
    assert_eq!(stored.get(&3), None, "no resurrection after DELETE");

    // A row created again after its deletion (revision 0, but later) does come back.
    worker
        .broadcast(&author_at(
            "SAVE",
            3,
            "c-again",
            0,
            "2026-11-28 18:30:00.000000+00:00",
        ))
        .await;
    worker.wait_settled(12).await;
    assert_eq!(
        rows::<D, M>(&worker).get(&3),
        Some(&("c-again".to_owned(), 0))
    );
    // A SYNC of a deleted row (the master has it, written after the delete) repairs it too.
    worker.broadcast(&author_delete(1, 2)).await;
    worker.wait_settled(13).await;
    worker
        .broadcast(&author_at(
            "SYNC",
            1,
            "a-repaired",
            1,
            "2026-11-28 18:31:00.000000+00:00",
        ))
        .await;
    worker.wait_settled(14).await;
    assert_eq!(
        rows::<D, M>(&worker).get(&1),
        Some(&("a-repaired".to_owned(), 1))
    );
    assert_eq!(worker.stats().dead_lettered, 0);
}

/// Many revisions of the same rows in one stream: batches hold several messages per row, of
/// which only the newest is written; the result is the newest revision of each row.
async fn batches_keep_the_newest_revision<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    // Revisions of 20 rows, interleaved, with every message sent twice and some reordered.
    let mut sent = 0;
    for revision in 0..10i64 {
        for id in 1..=20i64 {
            let body = author("SAVE", id, &format!("{id}@{revision}"), revision);
            worker.broadcast(&body).await;
            worker.broadcast(&body).await;
            sent += 2;
        }
        if revision % 3 == 2 {
            // A late copy of an earlier revision.
            worker
                .broadcast(&author("SAVE", 7, "stale", revision - 2))
                .await;
            sent += 1;
        }
    }
    let stats = worker.wait_settled(sent).await;
    let stored = rows::<D, M>(&worker);
    assert_eq!(stored.len(), 20);
    for id in 1..=20 {
        assert_eq!(stored[&id], (format!("{id}@9"), 9), "row {id}");
    }
    assert!(stats.batches < sent, "messages were applied in batches");
    assert_eq!(stats.dead_lettered, 0);
}

/// A stream whose revisions all rise by one, applied in batches that hold several revisions of
/// each row: no gap is counted (nor logged), since the superseded revisions were in the batch.
async fn consecutive_revisions_in_one_batch_are_no_gap<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let mut worker = Worker::start(db, M::DDL, replicas.clone()).await;
    worker.broadcast(&author("SAVE", 1, "first", 0)).await;
    worker.wait_settled(1).await;
    // The rest of the stream waits in the queue, so that batches are full.
    worker.stop().await;
    for revision in 1..=5i64 {
        for id in 1..=10i64 {
            let body = author("SAVE", id, &format!("{id}@{revision}"), revision);
            worker.broadcast(&body).await;
        }
    }
    worker.restart(replicas.clone());
    let stats = worker.wait_settled(50).await;
    assert!(stats.batches < 50, "several revisions per batch: {stats:?}");
    let stored = rows::<D, M>(&worker);
    assert_eq!(stored[&1], ("1@5".to_owned(), 5));
    assert_eq!(replicas.gaps(), 0);
}

/// A worker stopped in the middle of a stream and a new one started on the same queue
/// converge to the newest revision of every row; nothing is lost or left in the queue.
async fn restart_converges<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let connector = db.connector();
    let mut worker = Worker::start(db, M::DDL, Replicas::new(connector).register::<M>()).await;
    // The whole stream waits in the queue before a worker takes it.
    worker.stop().await;
    let rows_count = 100i64;
    let revisions = 10i64;
    for revision in 0..revisions {
        for id in 1..=rows_count {
            worker
                .broadcast(&author("SAVE", id, &format!("v{revision}"), revision))
                .await;
        }
    }
    let total = (rows_count * revisions) as u64;
    worker.restart(Replicas::new(worker.db.connector()).register::<M>());
    worker
        .wait("a part of the stream", |s| s.applied() >= total / 4)
        .await;
    let first = worker.stop().await;
    assert!(first.applied() < total, "stopped in the middle: {first:?}");
    worker.restart(Replicas::new(worker.db.connector()).register::<M>());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stored = rows::<D, M>(&worker);
        if stored.len() == rows_count as usize && stored.values().all(|(_, r)| *r == 9) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica did not converge: {} rows",
            stored.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = worker.stop().await;
    assert_eq!(first.dead_lettered + second.dead_lettered, 0);
    assert!(
        first.received + second.received >= total,
        "every message was received ({} + {})",
        first.received,
        second.received
    );
}

/// Old tombstones can be purged; a row deleted before the cut-off then accepts a SAVE again.
async fn tombstones_can_be_purged<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    use chrono::TimeZone;
    use cqrs_diesel::CqrsConnection;
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    worker.broadcast(&author("SAVE", 1, "a", 0)).await;
    worker.broadcast(&author("SAVE", 2, "b", 0)).await;
    worker.wait_settled(2).await;
    worker.broadcast(&author_delete(1, 1)).await; // cqrs_updated 18:22:01
    worker.broadcast(&author_delete(2, 30)).await; // cqrs_updated 18:22:30
    worker.wait_settled(4).await;
    let cut_off = chrono::Utc
        .with_ymd_and_hms(2026, 11, 28, 18, 22, 15)
        .unwrap();
    let purged = worker.db.connect().purge_tombstones(cut_off).unwrap();
    assert_eq!(purged, 1, "only the tombstone older than the cut-off");
    // The late SAVEs: row 1 has no tombstone any more, row 2 still has one.
    worker.broadcast(&author("SAVE", 1, "a-late", 0)).await;
    worker.broadcast(&author("SAVE", 2, "b-late", 0)).await;
    let stats = worker.wait_settled(6).await;
    assert_eq!(stats.tombstoned, 1, "{stats:?}");
    let stored = rows::<D, M>(&worker);
    assert_eq!(stored.get(&1), Some(&("a-late".to_owned(), 0)));
    assert_eq!(stored.get(&2), None);
}

/// The report's history of one row: SAVE r0, SAVE r5, DELETE r6, then the row created again
/// (revision 0 again, as django-cqrs masters do) 1 ms after the delete.
fn two_lives(id: i64) -> Vec<serde_json::Value> {
    vec![
        author_at("SAVE", id, "first", 0, "2026-11-28 18:00:00.000000+00:00"),
        author_at(
            "SAVE",
            id,
            "first-r5",
            5,
            "2026-11-28 18:00:05.000000+00:00",
        ),
        super::author_delete_at(id, 6, "2026-11-28 18:00:06.000000+00:00"),
        author_at("SAVE", id, "second", 0, "2026-11-28 18:00:06.001000+00:00"),
    ]
}

/// Publishes `bodies` while no worker runs, so that they are applied in one batch.
async fn in_one_batch<D, M>(db: D, bodies: &[serde_json::Value]) -> Worker<D>
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let mut worker = Worker::start(db, M::DDL, replicas.clone()).await;
    worker.stop().await;
    for body in bodies {
        worker.broadcast(body).await;
    }
    // With the default wait of a few milliseconds, a loaded machine may deliver the last
    // messages after the first batch has closed.
    worker.restart_batched(replicas, bodies.len());
    let stats = worker.wait_settled(bodies.len() as u64).await;
    assert_eq!(stats.batches, 1, "one batch: {stats:?}");
    worker
}

async fn a_row_deleted_and_created_again_in_one_batch_is_kept<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let worker = in_one_batch::<D, M>(db, &two_lives(1)).await;
    assert_eq!(
        rows::<D, M>(&worker).get(&1),
        Some(&("second".to_owned(), 0))
    );
}

/// [`two_lives`], the second life deleted too, then a late copy of the first life's r5 (a
/// relay republishing after a crash, a retry): the tombstone keeps only the last delete, whose
/// time ranks above the copy.
fn late_copy_history(id: i64) -> Vec<serde_json::Value> {
    let mut history = two_lives(id);
    history.push(super::author_delete_at(
        id,
        1,
        "2026-11-28 18:00:07.000000+00:00",
    ));
    history.push(history[1].clone());
    history
}

async fn a_late_copy_of_an_earlier_life_does_not_resurrect_the_row<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    let history = late_copy_history(1);
    for (n, body) in history.iter().enumerate() {
        worker.broadcast(body).await;
        worker.wait_settled(n as u64 + 1).await;
    }
    let stats = worker.stats();
    assert_eq!(stats.tombstoned, 1, "{stats:?}");
    assert_eq!(rows::<D, M>(&worker).get(&1), None, "no resurrection");
}

async fn a_late_copy_of_an_earlier_life_in_the_same_batch_does_not_resurrect_the_row<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let worker = in_one_batch::<D, M>(db, &late_copy_history(1)).await;
    assert_eq!(rows::<D, M>(&worker).get(&1), None, "no resurrection");
}

/// `2026-11-28 18:21:00` plus `micros`, as a `cqrs_updated`.
fn at(micros: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-28T18:21:00Z")
        .expect("a valid time")
        .with_timezone(&chrono::Utc);
    cqrs_diesel::wire::format_timestamp(&(base + chrono::Duration::microseconds(micros)))
}

/// A django-cqrs master on two web hosts, the second one's clock 2 s behind the first's: host A
/// creates and renames each row, then host B renames it again, half a second later. The second
/// rename is stamped 1.5 s before the first; the replica must end at it (revision 2) for every
/// row, as the master and django-cqrs's own replica do.
async fn two_hosts_with_skewed_clocks_end_at_the_last_revision<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    const SECOND: i64 = 1_000_000;
    for id in 1..=20i64 {
        let start = id * 10 * SECOND;
        let host_a = |real: i64| at(start + real);
        let host_b = |real: i64| at(start + real - 2 * SECOND);
        worker
            .broadcast(&author_at("SAVE", id, "created on A", 0, &host_a(0)))
            .await;
        worker
            .broadcast(&author_at("SAVE", id, "renamed on A", 1, &host_a(SECOND)))
            .await;
        worker
            .broadcast(&author_at(
                "SAVE",
                id,
                "renamed on B",
                2,
                &host_b(SECOND + SECOND / 2),
            ))
            .await;
    }
    let stats = worker.wait_settled(60).await;
    let stored = rows::<D, M>(&worker);
    for id in 1..=20 {
        assert_eq!(
            stored.get(&id),
            Some(&("renamed on B".to_owned(), 2)),
            "row {id}: {stats:?}"
        );
    }
}

/// Two processes of a django-cqrs master update one row at once: each stamps `cqrs_updated`
/// before it takes the row lock, so the update that commits second (revision 2) carries the
/// earlier stamp. Delivered in the order of the commits or the other way round, the replica ends
/// at revision 2.
async fn concurrent_updates_whose_stamps_commit_out_of_order_end_at_the_later_revision<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    for id in [1i64, 2] {
        worker
            .broadcast(&author_at("SAVE", id, "created", 0, &at(0)))
            .await;
    }
    worker.wait_settled(2).await;
    // Row 1 in the order of the commits, row 2 with the later revision first.
    let first = |id| author_at("SAVE", id, "committed first", 1, &at(20_000));
    let second = |id| author_at("SAVE", id, "committed second", 2, &at(10_000));
    worker.broadcast(&first(1)).await;
    worker.broadcast(&second(1)).await;
    worker.broadcast(&second(2)).await;
    worker.broadcast(&first(2)).await;
    let stats = worker.wait_settled(6).await;
    let stored = rows::<D, M>(&worker);
    for id in [1, 2] {
        assert_eq!(
            stored.get(&id),
            Some(&("committed second".to_owned(), 2)),
            "row {id}: {stats:?}"
        );
    }
    assert_eq!(
        stats.skipped_old, 1,
        "the late revision 1 of row 2: {stats:?}"
    );
}

/// A cqrs-diesel master whose clock stepped back between a delete and the re-create: the
/// re-create is stamped before the DELETE, which time alone would take for a late message of
/// the deleted life (docs/DESIGN.md, case A). Its `x-cqrs-seq` places it after the DELETE, and
/// a late copy of the DELETE then changes nothing.
async fn the_master_sequence_orders_a_recreate_stamped_before_its_delete<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    let delete = author_delete_at(1, 1, &at(20_000_000));
    worker
        .broadcast_with_seq(&author_at("SAVE", 1, "first life", 0, &at(10_000_000)), 7)
        .await;
    worker.wait_settled(1).await;
    worker.broadcast_with_seq(&delete, 8).await;
    worker.wait_settled(2).await;
    worker
        .broadcast_with_seq(&author_at("SAVE", 1, "second life", 0, &at(5_000_000)), 9)
        .await;
    worker.broadcast_with_seq(&delete, 8).await;
    let stats = worker.wait_settled(4).await;
    assert_eq!(
        rows::<D, M>(&worker).get(&1),
        Some(&("second life".to_owned(), 0)),
        "{stats:?}"
    );
    assert_eq!(stats.created, 2, "{stats:?}");
    assert_eq!(
        stats.skipped_old, 1,
        "the late copy of the DELETE: {stats:?}"
    );
}

macro_rules! on_every_backend {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario::<_, PgAuthorReplica>(PgDb::new("r")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$scenario::<_, MysqlAuthorReplica>(MysqlDb::new("r")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario::<_, SqliteAuthorReplica>(SqliteDb::new("r")).await;
            }
        }
    };
}

on_every_backend!(revisions_are_guarded);
on_every_backend!(batches_keep_the_newest_revision);
on_every_backend!(restart_converges);
on_every_backend!(tombstones_can_be_purged);
on_every_backend!(consecutive_revisions_in_one_batch_are_no_gap);
on_every_backend!(a_row_deleted_and_created_again_in_one_batch_is_kept);
on_every_backend!(a_late_copy_of_an_earlier_life_does_not_resurrect_the_row);
on_every_backend!(a_late_copy_of_an_earlier_life_in_the_same_batch_does_not_resurrect_the_row);
on_every_backend!(two_hosts_with_skewed_clocks_end_at_the_last_revision);
on_every_backend!(concurrent_updates_whose_stamps_commit_out_of_order_end_at_the_later_revision);
on_every_backend!(the_master_sequence_orders_a_recreate_stamped_before_its_delete);
