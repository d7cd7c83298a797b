//! Every golden message of django-cqrs 3.1.0, published as the reference publishes it, is
//! applied to a replica shaped like its `author`, on each backend.

use cqrs_diesel::{ReplicaStore, Replicas};

use super::Worker;
use super::models::{AuthorRow, MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};
use crate::master::golden;

async fn golden_messages_apply<D, M>(db: D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;
    let lines = golden();
    for (i, body) in lines.iter().enumerate() {
        // Line 4 is a SYNC the reference sent to one replica queue: here, to ours.
        if i == 3 {
            worker.direct(body).await;
        } else {
            worker.broadcast(body).await;
        }
    }
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
