//! `dead-letters dump|retry|purge` on the dead-letter queue of a SQLite replica whose worker
//! runs, and the queue operations of `RabbitMqTransport` they use.

use std::time::Duration;

use cqrs_diesel::cli::{Cli, CliError};
use cqrs_diesel::transport::OutgoingMessage;
use cqrs_diesel::{RabbitMqTransport, Replicas, Transport};
use serde_json::Value;

use super::{Dir, lines, ok, replica_rows, run};
use crate::db::{SqliteDb, TestDb};
use crate::replica::models::{AuthorRow, SqliteAuthorReplica};
use crate::replica::{Worker, author};
use crate::support::Capture;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_dumped_retried_and_purged() {
    let db = SqliteDb::new("cli_dead");
    let replicas = Replicas::new(db.connector()).register::<SqliteAuthorReplica>();
    let worker = Worker::start(db, SqliteAuthorReplica::DDL, replicas).await;
    let cli =
        Cli::new(worker.config.clone(), worker.db.connector()).replica::<SqliteAuthorReplica>();
    let dead_letter_queue = worker.config.dead_letter_queue().unwrap().to_owned();
    let transport = RabbitMqTransport::new(worker.config.clone());

    // Three SAVEs that expired before they arrived, and a body that is not JSON: the worker
    // dead-letters all four at once.
    for id in 1..=3 {
        let mut body = author("SAVE", id, &format!("late-{id}"), 1);
        body["expires"] = Value::from("2020-01-01T00:00:00+00:00");
        body["retries"] = Value::from(4);
        worker.broadcast(&body).await;
    }
    worker
        .transport
        .publish_confirmed(&OutgoingMessage::new("author", b"not json".to_vec()))
        .await
        .unwrap();
    worker
        .wait("four dead letters", |s| s.dead_lettered >= 4)
        .await;
    wait_depth(&transport, &dead_letter_queue, 4).await;
    assert!(replica_rows::<SqliteAuthorReplica>(&mut worker.db.connect()).is_empty());

    // dump: one JSON object per dead letter, with its reason; they stay in the queue.
    let dir = Dir::new("cli_dead");
    let dump = dir.file("dead.jsonl");
    let report = ok(&cli, &["dead-letters", "dump", "-o", &dump]).await;
    assert_eq!(report.written, 4);
    let mut entries: Vec<Value> = lines(&dump)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    entries.sort_by_key(|e| e["body"]["instance_pk"].as_i64().unwrap_or(0));
    let unreadable = &entries[0];
    assert_eq!(unreadable["body"], "not json");
    assert!(
        unreadable["reason"].as_str().unwrap().contains("JSON"),
        "{unreadable}"
    );
    assert_eq!(unreadable["routing_key"], dead_letter_queue.as_str());
    for (entry, id) in entries[1..].iter().zip(1..) {
        assert_eq!(entry["reason"], "expired", "{entry}");
        assert_eq!(entry["body"]["instance_pk"], id);
        assert_eq!(entry["body"]["retries"], 4);
        assert_eq!(entry["original_routing_key"], "author");
        assert_eq!(
            entry["routing_key"],
            format!("cqrs.{dead_letter_queue}.author").as_str()
        );
        assert!(entry["dead_lettered_at"].is_string());
    }
    wait_depth(&transport, &dead_letter_queue, 4).await;
    let bodies = dir.file("bodies.jsonl");
    ok(&cli, &["dead-letters", "dump", "--bodies", "-o", &bodies]).await;
    let mut raw = lines(&bodies);
    raw.sort();
    assert_eq!(raw.len(), 4);
    assert_eq!(raw[0], "not json");
    wait_depth(&transport, &dead_letter_queue, 4).await;

    // retry: the three messages go back to the replica's queue with retries 0 and a new
    // expiry, the worker applies them; the unreadable one stays, and is reported.
    let mut capture = Capture::bind(worker.config.exchange()).await;
    let error = run(&cli, &["dead-letters", "retry"]).await.unwrap_err();
    assert_eq!(error.exit_code(), 1);
    let CliError::NotRetried { retried, left, .. } = &error else {
        panic!("expected dead letters left, got {error}");
    };
    assert_eq!((*retried, left.len()), (3, 1), "{error}");
    assert!(left[0].contains("not valid JSON"), "{error}");
    let mut retried_messages = capture.take(3, Duration::from_secs(10)).await;
    retried_messages.sort_by_key(|(_, body)| body["instance_pk"].as_i64());
    for ((routing_key, body), id) in retried_messages.iter().zip(1..) {
        assert_eq!(routing_key, &format!("cqrs.{}.author", worker.queue()));
        assert_eq!(body["instance_pk"], id);
        assert_eq!(body["retries"], 0);
        let expires =
            cqrs_diesel::wire::parse_timestamp(body["expires"].as_str().unwrap()).unwrap();
        assert!(expires > chrono::Utc::now(), "a new expiry: {expires}");
    }
    worker
        .wait("the retried messages applied", |s| s.created >= 3)
        .await;
    let names: Vec<Value> = replica_rows::<SqliteAuthorReplica>(&mut worker.db.connect())
        .iter()
        .map(|row| row["name"].clone())
        .collect();
    assert_eq!(names, vec!["late-1", "late-2", "late-3"]);
    wait_depth(&transport, &dead_letter_queue, 1).await;

    // purge: the rest is removed.
    let report = ok(&cli, &["dead-letters", "purge"]).await;
    assert_eq!(report.written, 1);
    wait_depth(&transport, &dead_letter_queue, 0).await;
    let report = ok(&cli, &["dead-letters", "retry"]).await;
    assert_eq!(report.written, 0);
    transport.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_can_be_measured_browsed_and_purged() {
    let config = crate::support::config_builder("cli_browse")
        .build()
        .unwrap();
    let transport = RabbitMqTransport::new(config.clone());
    transport
        .declare(&cqrs_diesel::Topology::from_config(&config, ["author"]))
        .await
        .unwrap();
    let queue = config.queue().unwrap();
    for i in 0..3 {
        transport
            .publish_confirmed(&OutgoingMessage::new(
                "author",
                format!("m{i}").into_bytes(),
            ))
            .await
            .unwrap();
    }
    wait_depth(&transport, queue, 3).await;

    // Browsing takes each message once, unacknowledged; closing puts the rest back.
    let mut browser = transport.browse(queue).await.unwrap();
    let first = browser.next().await.unwrap().unwrap();
    let second = browser.next().await.unwrap().unwrap();
    let third = browser.next().await.unwrap().unwrap();
    assert!(
        browser.next().await.unwrap().is_none(),
        "three messages only"
    );
    assert_eq!(
        [first.body(), second.body(), third.body()],
        [&b"m0"[..], b"m1", b"m2"]
    );
    assert_eq!(first.routing_key(), "author");
    first.ack().await.unwrap();
    browser.close().await;
    drop((second, third));
    wait_depth(&transport, queue, 2).await;

    assert_eq!(transport.purge_queue(queue).await.unwrap(), 2);
    assert_eq!(transport.queue_depth(queue).await.unwrap(), 0);

    // A queue that does not exist is refused, and the transport goes on.
    let error = transport
        .queue_depth("no_such_queue_here")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no_such_queue_here"), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(transport.queue_depth(queue).await.unwrap(), 0);
    transport.close().await;
    crate::support::cleanup(
        config.exchange(),
        &[queue, config.dead_letter_queue().unwrap()],
    )
    .await;
}
