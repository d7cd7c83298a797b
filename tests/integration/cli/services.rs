//! `relay --drain` and `consume` as processes of their own.

use std::sync::Arc;
use std::time::Duration;

use cqrs_diesel::cli::Cli;
use cqrs_diesel::{CqrsConnection, RabbitMqTransport, Topology, Transport};
use tokio::sync::Notify;

use super::{Master, ok};
use crate::db::{SqliteDb, TestDb};
use crate::replica::author;
use crate::replica::models::{AuthorRow, SqliteAuthorReplica};
use crate::support::{Capture, cleanup, config_builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_drain_publishes_the_outbox() {
    let master = Master::standalone(5);
    let transport = RabbitMqTransport::new(master.config.clone());
    transport
        .declare(&Topology::exchange_only(master.config.exchange()))
        .await
        .unwrap();
    let mut capture = Capture::bind(master.config.exchange()).await;
    // 5 creates, then two updates of author 5.
    let report = ok(&master.cli, &["relay", "--drain"]).await;
    assert_eq!(report.written, 7);
    assert_eq!(master.db.connect().outbox_pending().unwrap(), 0);
    let messages = capture.take(7, Duration::from_secs(10)).await;
    assert!(
        messages
            .iter()
            .all(|(key, body)| key == "author" && body["signal_type"] == "SAVE")
    );
    transport.close().await;
    cleanup(master.config.exchange(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_applies_messages_until_shut_down() {
    let db = SqliteDb::new("cli_consume");
    db.execute(SqliteAuthorReplica::DDL);
    db.connect().run_replica_migrations().unwrap();
    let config = config_builder("cli_consume").build().unwrap();
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let cli = Cli::new(config.clone(), db.connector())
        .replica::<SqliteAuthorReplica>()
        .shutdown_on(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        });
    let consumer = tokio::spawn(async move {
        let args = ["cqrs", "consume"];
        cli.try_run_from(args).await
    });

    // The consumer declares its topology (the publish is unroutable until its bindings
    // exist); then a master's SAVE reaches it.
    let queue = config.queue().unwrap();
    super::consume_one_save(&config, &db).await;
    let transport = RabbitMqTransport::new(config.clone());
    assert_eq!(
        SqliteAuthorReplica::load_all(&mut db.connect())[0].name(),
        "consumed"
    );

    stop.notify_one();
    let report = tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("consume stops on the signal")
        .unwrap()
        .expect("consume ends cleanly");
    assert_eq!(report.written, 1);
    transport.close().await;
    cleanup(
        config.exchange(),
        &[queue, config.dead_letter_queue().unwrap()],
    )
    .await;
}

/// What the database-less replica of the next test received.
static NAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A replica without a table: it keeps names in memory.
#[derive(Debug, Clone, cqrs_diesel::ReplicaModel)]
#[cqrs(id = "author", custom)]
struct AuthorName {
    id: i64,
    name: String,
}

impl cqrs_diesel::CustomReplica for AuthorName {
    fn cqrs_create(
        conn: Option<cqrs_diesel::DbConn<'_>>,
        row: Self,
        _message: cqrs_diesel::MessageInfo<'_>,
    ) -> Result<(), cqrs_diesel::HookError> {
        assert!(conn.is_none());
        NAMES.lock().map_err(|_| "poisoned")?.push(row.name);
        Ok(())
    }

    fn cqrs_delete(
        _conn: Option<cqrs_diesel::DbConn<'_>>,
        _key: i64,
        _message: cqrs_diesel::MessageInfo<'_>,
    ) -> Result<(), cqrs_diesel::HookError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_runs_without_a_database_for_custom_replicas() {
    let config = config_builder("cli_nodb").build().unwrap();
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let cli = Cli::<diesel::SqliteConnection>::without_database(config.clone())
        .custom_replica::<AuthorName>()
        .shutdown_on(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        });
    // The row commands have no table model to work on.
    let error = cli
        .try_run_from(["cqrs", "deleted-diff-replica", "-c", "author"])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("`author`"), "{error}");
    let consumer = tokio::spawn(async move { cli.try_run_from(["cqrs", "consume"]).await });

    super::publish_when_routed(&config, &author("SAVE", 3, "in memory", 0)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while NAMES.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SAVE is handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(NAMES.lock().unwrap().clone(), vec!["in memory".to_owned()]);
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
