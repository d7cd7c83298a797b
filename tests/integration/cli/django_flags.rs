//! Every command under its django-cqrs name takes django-cqrs 3.1.0's own flag spellings
//! (`-cid`, `-f`, `-p`, `--clear True`, `-w`, ...), run for real against the test databases
//! and the broker.

use std::sync::Arc;
use std::time::Duration;

use cqrs_diesel::cli::{Cli, CliError};
use cqrs_diesel::diesel::SqliteConnection;
use cqrs_diesel::transport::OutgoingMessage;
use cqrs_diesel::{Config, CqrsConnection, RabbitMqTransport, Topology, Transport};
use serde_json::Value;
use tokio::sync::Notify;

use super::{Dir, Master, lines, listed_keys, ok, replica_rows, run};
use crate::db::{SqliteDb, TestDb};
use crate::replica::author;
use crate::replica::models::{AuthorRow, SqliteAuthorReplica};
use crate::support::{Capture, cleanup, config_builder};

/// A header for hand-written diff files (readers ignore the time).
const AT: &str = "2026-11-28 18:21:11.123456+00:00";

/// A SQLite replica with the author table and authors `ids` loaded, its configuration and
/// its commands.
async fn sqlite_replica(tag: &str, ids: &[i64]) -> (SqliteDb, Config, Cli<SqliteConnection>) {
    let db = SqliteDb::new(tag);
    db.execute(SqliteAuthorReplica::DDL);
    db.connect()
        .run_replica_migrations()
        .expect("replica migration");
    let config = config_builder(tag).build().expect("config");
    let cli = Cli::new(config.clone(), db.connector()).replica::<SqliteAuthorReplica>();
    if !ids.is_empty() {
        let dir = Dir::new(tag);
        let dump = dir.file("seed.dump");
        let records: Vec<String> = ids
            .iter()
            .map(|&id| author("SYNC", id, &format!("name-{id}"), 1)["instance_data"].to_string())
            .collect();
        std::fs::write(&dump, format!("author\n{}\n", records.join("\n"))).unwrap();
        ok(&cli, &["bulk-load", "-i", &dump]).await;
    }
    (db, config, cli)
}

/// The ids of the replica's rows.
fn ids(db: &SqliteDb) -> Vec<i64> {
    replica_rows::<SqliteAuthorReplica>(&mut db.connect())
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

/// Waits until `queue` holds `n` ready messages.
async fn wait_depth(transport: &RabbitMqTransport, queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let depth = transport.queue_depth(queue).await.expect("queue depth");
        if depth == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {depth} messages, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next `n` SYNCs on the capture, as (routing key, pk) sorted by pk, and nothing else.
async fn syncs(capture: &mut Capture, n: usize) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = capture
        .take(n, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|(key, body)| {
            assert_eq!(body["signal_type"], "SYNC");
            (key, body["instance_pk"].as_i64().unwrap())
        })
        .collect();
    out.sort_by_key(|(_, pk)| *pk);
    assert!(
        capture.is_quiet_for(Duration::from_millis(300)).await,
        "nothing else is published"
    );
    out
}

fn routed(key: &str, pks: impl IntoIterator<Item = i64>) -> Vec<(String, i64)> {
    pks.into_iter().map(|pk| (key.to_owned(), pk)).collect()
}

/// A master with authors 1..=n whose exchange exists, and a capture of what it publishes.
async fn publishing_master(n: i32) -> (Master, Capture) {
    let master = Master::standalone(n);
    let transport = RabbitMqTransport::new(master.config.clone());
    transport
        .declare(&Topology::exchange_only(master.config.exchange()))
        .await
        .unwrap();
    transport.close().await;
    let capture = Capture::bind(master.config.exchange()).await;
    (master, capture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_sync_accepts_dash_cid_filter_queue_batch_and_progress() {
    let (master, mut capture) = publishing_master(5).await;
    let cli = &master.cli;

    let report = ok(
        cli,
        &[
            "cqrs_sync",
            "-cid",
            "author",
            "-f",
            r#"{"id__in":[1]}"#,
            "-p",
            "-b",
            "10",
        ],
    )
    .await;
    assert_eq!(report.written, 1);
    assert_eq!(syncs(&mut capture, 1).await, routed("author", [1]));

    ok(
        cli,
        &[
            "cqrs_sync",
            "--cqrs-id",
            "author",
            "--filter",
            r#"{"id__in": [2, 3]}"#,
            "--queue",
            "payments",
            "--batch",
            "1",
            "--progress",
        ],
    )
    .await;
    assert_eq!(
        syncs(&mut capture, 2).await,
        routed("cqrs.payments.author", [2, 3])
    );

    // django-cqrs's README spelling: every row (`-f={}`) to one replica.
    let report = ok(cli, &["cqrs_sync", "-cid=author", "-f={}", "-q=replica"]).await;
    assert_eq!(report.written, 5);
    assert_eq!(
        syncs(&mut capture, 5).await,
        routed("cqrs.replica.author", 1..=5)
    );
    cleanup(master.config.exchange(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_bulk_dump_accepts_c_output_batch_progress_and_dash_f_for_force() {
    let master = Master::standalone(5);
    let dir = Dir::new("django_dump");
    let dump = dir.file("author.dump");

    let report = ok(
        &master.cli,
        &["cqrs_bulk_dump", "-c", "author", "--progress", "-o", &dump],
    )
    .await;
    assert_eq!(report.written, 5);
    let written = lines(&dump);
    assert_eq!((written.len(), written[0].as_str()), (6, "author"));

    // Not replaced without the force flag...
    let error = run(
        &master.cli,
        &[
            "cqrs_bulk_dump",
            "--cqrs-id",
            "author",
            "-o",
            &dump,
            "-b",
            "2",
        ],
    )
    .await
    .unwrap_err();
    assert!(matches!(error, CliError::OutputExists(_)), "{error}");

    // ... which django-cqrs spells -f (no value after it), last or before an option.
    ok(
        &master.cli,
        &[
            "cqrs_bulk_dump",
            "-cid",
            "author",
            "--pk",
            "1,2",
            "-o",
            &dump,
            "-b",
            "1",
            "-p",
            "-f",
        ],
    )
    .await;
    assert_eq!(lines(&dump).len(), 3);
    ok(
        &master.cli,
        &[
            "cqrs_bulk_dump",
            "-f",
            "--cqrs-id=author",
            "--output",
            &dump,
            "--batch=2",
            "--filter",
            r#"{"id__lte": 3}"#,
        ],
    )
    .await;
    assert_eq!(lines(&dump).len(), 4);

    // `-f JSON` is still our --filter.
    let report = ok(
        &master.cli,
        &[
            "cqrs_bulk_dump",
            "-c",
            "author",
            "--force",
            "-o",
            &dump,
            "-f",
            r#"{"id": 5}"#,
        ],
    )
    .await;
    assert_eq!(report.written, 1);
    let written = lines(&dump);
    assert_eq!(written.len(), 2);
    let record: Value = serde_json::from_str(&written[1]).unwrap();
    assert_eq!(record["id"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_bulk_load_accepts_input_batch_and_a_clear_value() {
    let master = Master::standalone(4);
    let dir = Dir::new("django_load");
    let dump = dir.file("author.dump");
    ok(
        &master.cli,
        &["cqrs_bulk_dump", "-c", "author", "-o", &dump],
    )
    .await;
    let stale = dir.file("stale.dump");
    let stale_line = author("SYNC", 999, "stale", 3)["instance_data"].to_string();
    std::fs::write(&stale, format!("author\n{stale_line}\n")).unwrap();
    let (db, _, cli) = sqlite_replica("django_load", &[]).await;

    // django-cqrs's README spelling: `-i=FILE`.
    let report = ok(&cli, &["cqrs_bulk_load", &format!("-i={dump}"), "-b", "2"]).await;
    assert_eq!(report.written, 4);
    ok(&cli, &["cqrs_bulk_load", "--input", &stale]).await;
    assert_eq!(ids(&db), vec![1, 2, 3, 4, 999]);

    // --clear with django-cqrs's value (type=bool), in each spelling.
    for clear in [
        &["--clear=true"][..],
        &["-c", "True"],
        &["--clear", "1"],
        &["-c"],
    ] {
        ok(&cli, &["cqrs_bulk_load", "-i", &stale]).await;
        assert!(ids(&db).contains(&999));
        let mut args = vec!["cqrs_bulk_load", "--input", &dump, "--batch=3"];
        args.extend_from_slice(clear);
        let report = ok(&cli, &args).await;
        assert_eq!(report.written, 4, "{clear:?}");
        assert_eq!(
            replica_rows::<SqliteAuthorReplica>(&mut db.connect()),
            master.rows(),
            "{clear:?} cleared the stale row"
        );
    }

    // A false value is refused (django-cqrs would clear), and nothing is touched.
    ok(&cli, &["cqrs_bulk_load", "-i", &stale]).await;
    let error = run(&cli, &["cqrs_bulk_load", "-i", &dump, "--clear", "False"])
        .await
        .unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("even False"), "{error}");
    assert_eq!(ids(&db), vec![1, 2, 3, 4, 999]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_diff_master_accepts_dash_cid_filter_and_batch() {
    let master = Master::standalone(6);
    let dir = Dir::new("django_diff_master");
    let out = dir.file("master.diff");
    let pairs = |path: &str| -> Vec<Vec<(i64, i64)>> {
        lines(path)
            .iter()
            .skip(1)
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };

    let report = ok(
        &master.cli,
        &[
            "cqrs_diff_master",
            "-cid",
            "author",
            "-f",
            r#"{"id__lte": 4}"#,
            "-b",
            "2",
            "-o",
            &out,
        ],
    )
    .await;
    assert_eq!(report.written, 4);
    assert!(lines(&out)[0].starts_with("author,"));
    assert_eq!(
        pairs(&out),
        vec![vec![(1, 0), (2, 0)], vec![(3, 0), (4, 0)]]
    );

    ok(
        &master.cli,
        &[
            "cqrs_diff_master",
            "--cqrs-id=author",
            "--filter={\"id__gte\": 5}",
            "--batch=1",
            "-o",
            &out,
        ],
    )
    .await;
    assert_eq!(
        pairs(&out),
        vec![vec![(5, 2)], vec![(6, 0)]],
        "author 5 was updated twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_diff_replica_answers_to_its_name_without_flags_of_its_own() {
    let (db, _, cli) = sqlite_replica("django_diff_replica", &[1, 2, 3]).await;
    let dir = Dir::new("django_diff_replica");
    let (input, out) = (dir.file("master.diff"), dir.file("replica.diff"));
    // Author 2 differs in revision, 4 is missing.
    std::fs::write(&input, format!("author,{AT}\n[[1, 1], [2, 5], [4, 1]]\n")).unwrap();
    let report = ok(&cli, &["cqrs_diff_replica", "-i", &input, "-o", &out]).await;
    assert_eq!((report.processed, report.written), (3, 2));
    assert!(lines(&out)[0].starts_with(&format!("author,{AT},")));
    assert_eq!(listed_keys(&out), vec![2, 4]);
    assert_eq!(ids(&db), vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_diff_sync_accepts_batch_and_progress() {
    let (master, mut capture) = publishing_master(5).await;
    let dir = Dir::new("django_diff_sync");
    let input = dir.file("replica.diff");

    std::fs::write(&input, format!("author,{AT},payments\n[1, 2]\n[3]\n")).unwrap();
    let report = ok(
        &master.cli,
        &["cqrs_diff_sync", "-i", &input, "-b", "1", "-p"],
    )
    .await;
    assert_eq!(report.written, 3);
    assert_eq!(
        syncs(&mut capture, 3).await,
        routed("cqrs.payments.author", 1..=3)
    );

    std::fs::write(&input, format!("author,{AT},None\n[4, 5]\n")).unwrap();
    ok(
        &master.cli,
        &[
            "cqrs_diff_sync",
            "--input",
            &input,
            "--batch=2",
            "--progress",
        ],
    )
    .await;
    assert_eq!(syncs(&mut capture, 2).await, routed("author", [4, 5]));
    cleanup(master.config.exchange(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_deleted_diff_replica_accepts_dash_cid_batch_and_only_an_empty_filter() {
    let (_db, _, cli) = sqlite_replica("django_deleted_diff_replica", &[1, 2, 3, 4, 5]).await;
    let dir = Dir::new("django_deleted_diff_replica");
    let out = dir.file("replica.keys");

    let report = ok(
        &cli,
        &[
            "cqrs_deleted_diff_replica",
            "-cid",
            "author",
            "-f",
            "{}",
            "-b",
            "2",
            "-o",
            &out,
        ],
    )
    .await;
    assert_eq!(report.written, 5);
    assert_eq!(lines(&out).len(), 1 + 3, "one line per batch of 2");
    assert_eq!(listed_keys(&out), vec![1, 2, 3, 4, 5]);
    ok(
        &cli,
        &[
            "cqrs_deleted_diff_replica",
            "--cqrs-id=author",
            "--batch=5",
            "-o",
            &out,
        ],
    )
    .await;
    assert_eq!(lines(&out).len(), 2);

    // A narrower filter would be widened: refused, with the reason.
    let error = run(
        &cli,
        &[
            "cqrs_deleted_diff_replica",
            "-cid",
            "author",
            "--filter",
            r#"{"id__in": [1]}"#,
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("only {} is"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_deleted_diff_master_answers_to_its_name_without_flags_of_its_own() {
    let master = Master::standalone(3);
    let dir = Dir::new("django_deleted_diff_master");
    let (input, out) = (dir.file("replica.keys"), dir.file("gone.keys"));
    std::fs::write(&input, format!("author,{AT}\n[1, 2]\n[3, 999]\n")).unwrap();
    let report = ok(
        &master.cli,
        &["cqrs_deleted_diff_master", "-i", &input, "-o", &out],
    )
    .await;
    assert_eq!((report.processed, report.written), (4, 1));
    assert_eq!(lines(&out)[0], format!("author,{AT}"));
    assert_eq!(listed_keys(&out), vec![999]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_deleted_sync_replica_answers_to_its_name_without_flags_of_its_own() {
    let (db, _, cli) = sqlite_replica("django_deleted_sync", &[1, 2, 3]).await;
    let dir = Dir::new("django_deleted_sync");
    let input = dir.file("gone.keys");
    std::fs::write(&input, format!("author,{AT}\n[2]\n")).unwrap();
    let report = ok(&cli, &["cqrs_deleted_sync_replica", "-i", &input]).await;
    assert_eq!(report.written, 1);
    assert_eq!(ids(&db), vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_dead_letters_answers_to_retry_dump_and_purge() {
    let (_db, config, cli) = sqlite_replica("django_dead", &[]).await;
    let dir = Dir::new("django_dead");
    let dump = dir.file("dead.jsonl");
    // The first dump declares the service's topology; the queue is empty.
    let report = ok(&cli, &["cqrs_dead_letters", "dump", "-o", &dump]).await;
    assert_eq!(report.written, 0);

    let transport = RabbitMqTransport::new(config.clone());
    let (queue, dead_letter_queue) = (config.queue().unwrap(), config.dead_letter_queue().unwrap());
    let dead_letter = |id: i64| {
        OutgoingMessage::new(
            format!("cqrs.{dead_letter_queue}.author"),
            author("SAVE", id, "dead", 1).to_string().into_bytes(),
        )
    };
    for id in [1, 2] {
        transport.publish_confirmed(&dead_letter(id)).await.unwrap();
    }
    wait_depth(&transport, dead_letter_queue, 2).await;
    let report = ok(&cli, &["cqrs_dead_letters", "dump", "-o", &dump]).await;
    assert_eq!(report.written, 2);
    assert_eq!(lines(&dump).len(), 2);
    wait_depth(&transport, dead_letter_queue, 2).await;
    let report = ok(&cli, &["cqrs_dead_letters", "retry"]).await;
    assert_eq!(report.written, 2);
    wait_depth(&transport, queue, 2).await;
    transport.publish_confirmed(&dead_letter(3)).await.unwrap();
    wait_depth(&transport, dead_letter_queue, 1).await;
    let report = ok(&cli, &["cqrs_dead_letters", "purge"]).await;
    assert_eq!(report.written, 1);
    wait_depth(&transport, dead_letter_queue, 0).await;
    wait_depth(&transport, queue, 2).await;
    transport.close().await;
    cleanup(config.exchange(), &[queue, dead_letter_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_consume_accepts_workers_cqrs_id_reload_and_timeouts_and_consumes() {
    let db = SqliteDb::new("django_consume");
    db.execute(SqliteAuthorReplica::DDL);
    db.connect().run_replica_migrations().unwrap();
    let config = config_builder("django_consume").build().unwrap();
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let cli = Cli::new(config.clone(), db.connector())
        .replica::<SqliteAuthorReplica>()
        .shutdown_on(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        });
    // Each flag is accepted (the ignored ones with a warning on standard error).
    let consumer = tokio::spawn(async move {
        cli.try_run_from([
            "cqrs",
            "cqrs_consume",
            "-w",
            "2",
            "-cid",
            "author",
            "--reload",
            "--ignore-paths",
            "env,node_modules",
            "--sigint-timeout",
            "5",
            "--sigkill-timeout",
            "1",
        ])
        .await
    });

    super::consume_one_save(&config, &db).await;
    stop.notify_one();
    let report = tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("consume stops on the signal")
        .unwrap()
        .expect("consume ends cleanly");
    assert_eq!(report.written, 1);
    cleanup(
        config.exchange(),
        &[config.queue().unwrap(), config.dead_letter_queue().unwrap()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_consume_with_dash_cid_consumes_only_that_model_and_dead_letters_the_others() {
    use crate::replica::only_cqrs_ids::{Book, book, publish};

    let db = SqliteDb::new("django_consume_cid");
    db.execute(SqliteAuthorReplica::DDL);
    db.connect().run_replica_migrations().unwrap();
    let config = config_builder("django_consume_cid").build().unwrap();
    let transport = RabbitMqTransport::new(config.clone());
    // Bindings of an earlier, unlimited run; a book waits in the queue.
    transport
        .declare(&Topology::from_config(&config, ["author", "book"]))
        .await
        .unwrap();
    publish(&transport, "book", &book(3)).await.unwrap();
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let cli = Cli::new(config.clone(), db.connector())
        .replica::<SqliteAuthorReplica>()
        .custom_replica::<Book>()
        .shutdown_on(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        });
    let consumer = tokio::spawn(async move {
        cli.try_run_from(["cqrs", "cqrs_consume", "-cid", "author"])
            .await
    });

    super::consume_one_save(&config, &db).await;
    let dead_letter_queue = config.dead_letter_queue().unwrap();
    wait_depth(&transport, dead_letter_queue, 1).await;
    stop.notify_one();
    let report = tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("consume stops on the signal")
        .unwrap()
        .expect("consume ends cleanly");
    assert_eq!(
        (report.processed, report.written, report.skipped),
        (2, 1, 1)
    );
    assert_eq!(ids(&db), vec![7]);
    let dead = crate::replica::dead_letters(dead_letter_queue).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].0.contains(r#""cqrs_id":"book""#), "{dead:?}");
    assert!(
        dead[0].1.contains("not consumed by this worker"),
        "{dead:?}"
    );
    transport.close().await;
    cleanup(
        config.exchange(),
        &[config.queue().unwrap(), dead_letter_queue],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cqrs_consume_with_an_unregistered_cqrs_id_fails_at_start_with_usage_exit_code() {
    let (_db, _, cli) = sqlite_replica("django_consume_unknown", &[]).await;
    let error = run(&cli, &["cqrs_consume", "--cqrs-id", "film"])
        .await
        .unwrap_err();
    assert_eq!(error.exit_code(), 2, "{error}");
    assert!(
        error.to_string().contains("`film`") && error.to_string().contains("`author`"),
        "{error}"
    );
}
