//! The diff pipelines between a PostgreSQL master and a MariaDB replica whose worker runs:
//! changed and missing rows are repaired by SYNCs to the replica's queue, extra rows deleted.

use std::time::Duration;

use cqrs_diesel::Replicas;
use cqrs_diesel::cli::Cli;
use cqrs_diesel::diesel::MysqlConnection;
use serde_json::Value;

use super::{Dir, Master, lines, listed_keys, ok, replica_rows};
use crate::db::{MysqlDb, TestDb};
use crate::replica::Worker;
use crate::replica::models::{AuthorRow, MysqlAuthorReplica};
use crate::support::{Capture, config_builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_pipelines_repair_a_damaged_replica() {
    // The replica: a MariaDB worker consuming its queue.
    let db = MysqlDb::new("cli_diff");
    let replicas = Replicas::new(db.connector()).register::<MysqlAuthorReplica>();
    let worker = Worker::start(db, MysqlAuthorReplica::DDL, replicas).await;
    let replica_cli: Cli<MysqlConnection> =
        Cli::new(worker.config.clone(), worker.db.connector()).replica::<MysqlAuthorReplica>();
    let queue = worker.queue().to_owned();

    // The master, on the same exchange, with 30 authors.
    let master_config = config_builder("cli_diff_master")
        .exchange(worker.config.exchange())
        .build()
        .unwrap();
    let master = Master::new(30, master_config);
    let mut capture = Capture::bind(worker.config.exchange()).await;

    // The replica starts equal (through the dump), then is damaged.
    let dir = Dir::new("cli_diff");
    let dump = dir.file("author.dump");
    ok(&master.cli, &["bulk-dump", "-c", "author", "-o", &dump]).await;
    ok(&replica_cli, &["bulk-load", "-i", &dump]).await;
    assert_eq!(
        replica_rows::<MysqlAuthorReplica>(&mut worker.db.connect()),
        master.rows()
    );
    worker.db.execute(
        "UPDATE author SET name = 'changed', cqrs_revision = cqrs_revision + 7 WHERE id = 3;
         UPDATE author SET name = 'behind', cqrs_revision = 0 WHERE id = 10;
         DELETE FROM author WHERE id IN (7, 21);
         INSERT INTO author (id, name, joined_at, active, score, external_id, cqrs_revision, cqrs_updated)
             VALUES (999, 'extra', '2024-01-01', 1, 0, 'x', 0, '2024-01-01'),
                    (1000, 'extra', '2024-01-01', 1, 0, 'y', 4, '2024-01-01');",
    );
    assert_ne!(
        replica_rows::<MysqlAuthorReplica>(&mut worker.db.connect()),
        master.rows()
    );

    // master: diff-master | replica: diff-replica | master: diff-sync
    let (master_diff, replica_diff) = (dir.file("master.diff"), dir.file("replica.diff"));
    let report = ok(
        &master.cli,
        &[
            "diff-master",
            "-c",
            "author",
            "-o",
            &master_diff,
            "--batch",
            "8",
        ],
    )
    .await;
    assert_eq!(report.written, 30);
    let master_lines = lines(&master_diff);
    let (id, time) = master_lines[0].split_once(',').unwrap();
    assert_eq!(id, "author");
    assert!(cqrs_diesel::wire::parse_timestamp(time).is_ok(), "{time}");
    assert_eq!(master_lines.len(), 1 + 4, "one line per batch of 8");
    let first: Vec<(i64, i64)> = serde_json::from_str(&master_lines[1]).unwrap();
    assert_eq!(
        first[4],
        (5, 2),
        "[pk, revision] pairs: author 5 was updated twice"
    );

    let report = ok(
        &replica_cli,
        &["diff-replica", "-i", &master_diff, "-o", &replica_diff],
    )
    .await;
    assert_eq!((report.processed, report.written), (30, 4));
    assert_eq!(
        lines(&replica_diff)[0],
        format!("{},{queue}", master_lines[0])
    );
    assert_eq!(listed_keys(&replica_diff), vec![3, 7, 10, 21]);

    let report = ok(&master.cli, &["diff-sync", "-i", &replica_diff]).await;
    assert_eq!(report.written, 4);
    let mut sent = capture.take(4, Duration::from_secs(10)).await;
    sent.sort_by_key(|(_, body)| body["instance_pk"].as_i64());
    for ((routing_key, body), id) in sent.iter().zip([3, 7, 10, 21]) {
        assert_eq!(
            routing_key,
            &format!("cqrs.{queue}.author"),
            "aimed at the replica's queue"
        );
        assert_eq!(body["signal_type"], "SYNC");
        assert_eq!(body["instance_pk"], id);
    }
    worker.wait("the SYNCs applied", |s| s.synced >= 4).await;

    // replica: deleted-diff-replica | master: deleted-diff-master | replica: deleted-sync-replica
    let (replica_keys, gone) = (dir.file("replica.keys"), dir.file("gone.keys"));
    let report = ok(
        &replica_cli,
        &[
            "deleted-diff-replica",
            "-c",
            "author",
            "-o",
            &replica_keys,
            "--batch",
            "8",
        ],
    )
    .await;
    assert_eq!(report.written, 32);
    assert_eq!(lines(&replica_keys).len(), 1 + 4);
    assert!(lines(&replica_keys)[0].starts_with("author,"));
    let report = ok(
        &master.cli,
        &["deleted-diff-master", "-i", &replica_keys, "-o", &gone],
    )
    .await;
    assert_eq!((report.processed, report.written), (32, 2));
    assert_eq!(lines(&gone)[0], lines(&replica_keys)[0]);
    assert_eq!(listed_keys(&gone), vec![999, 1000]);
    let report = ok(&replica_cli, &["deleted-sync-replica", "-i", &gone]).await;
    assert_eq!(report.written, 2);

    let repaired = replica_rows::<MysqlAuthorReplica>(&mut worker.db.connect());
    assert_eq!(
        repaired,
        master.rows(),
        "the replica equals the master again"
    );
    assert_eq!(
        repaired
            .iter()
            .find(|row| row["id"] == 3)
            .map(|row| row["name"].clone()),
        Some(Value::from("author-3"))
    );

    // A second round finds nothing.
    ok(
        &master.cli,
        &["diff-master", "-c", "author", "-o", &master_diff],
    )
    .await;
    let report = ok(
        &replica_cli,
        &["diff-replica", "-i", &master_diff, "-o", &replica_diff],
    )
    .await;
    assert_eq!(report.written, 0);
    assert_eq!(lines(&replica_diff).len(), 1, "only the header");
    assert!(capture.is_quiet_for(Duration::from_millis(200)).await);
}
