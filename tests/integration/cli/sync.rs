//! `sync` publishes a SYNC of exactly the selected rows, with the right routing key.

use std::time::Duration;

use cqrs_diesel::cli::Cli;
use cqrs_diesel::{RabbitMqTransport, Topology, Transport};
use serde_json::Value;

use super::{Master, ok, run};
use crate::db::TestDb;
use crate::master::models::PgAuthor;
use crate::support::{Capture, config_builder};

/// The SYNCs the capture receives, as (routing key, pk), sorted by pk; checks each body.
async fn received(capture: &mut Capture, n: usize) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = capture
        .take(n, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|(key, body)| {
            assert_eq!(body["signal_type"], "SYNC");
            assert_eq!(body["cqrs_id"], "author");
            assert_eq!(body["instance_pk"], body["instance_data"]["id"]);
            assert_eq!(body["retries"], 0);
            assert!(body["expires"].is_string(), "{body}");
            (key, body["instance_pk"].as_i64().expect("an integer pk"))
        })
        .collect();
    out.sort_by_key(|(_, pk)| *pk);
    assert!(
        capture.is_quiet_for(Duration::from_millis(300)).await,
        "nothing else is published"
    );
    out
}

fn broadcast(pks: impl IntoIterator<Item = i64>) -> Vec<(String, i64)> {
    pks.into_iter()
        .map(|pk| ("author".to_owned(), pk))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_publishes_exactly_the_selected_rows() {
    let master = Master::standalone(20);
    master.db.execute(
        "UPDATE author SET cqrs_updated = '2020-01-01T00:00:00Z' WHERE id <= 10;
         UPDATE author SET cqrs_updated = '2022-06-01T12:00:00Z' WHERE id > 10;",
    );
    let transport = RabbitMqTransport::new(master.config.clone());
    transport
        .declare(&Topology::exchange_only(master.config.exchange()))
        .await
        .unwrap();
    let mut capture = Capture::bind(master.config.exchange()).await;
    let cli = &master.cli;

    // A list of primary keys.
    let report = ok(cli, &["sync", "-c", "author", "--pk", "2,4", "--pk", "6"]).await;
    assert_eq!(
        (report.processed, report.written, report.skipped),
        (3, 3, 0)
    );
    assert_eq!(received(&mut capture, 3).await, broadcast([2, 4, 6]));

    // A range.
    ok(
        cli,
        &["sync", "-c", "author", "--pk-from", "5", "--pk-to", "8"],
    )
    .await;
    assert_eq!(received(&mut capture, 4).await, broadcast(5..=8));

    // Updated since a time (both spellings).
    ok(
        cli,
        &[
            "sync",
            "-c",
            "author",
            "--since",
            "2021-01-01 00:00:00",
            "--batch",
            "3",
        ],
    )
    .await;
    assert_eq!(received(&mut capture, 10).await, broadcast(11..=20));
    ok(
        cli,
        &[
            "sync",
            "-c",
            "author",
            "--since",
            "2022-06-01T12:00:00+00:00",
            "--pk-to",
            "12",
        ],
    )
    .await;
    assert_eq!(received(&mut capture, 2).await, broadcast([11, 12]));

    // A raw SQL condition.
    ok(
        cli,
        &[
            "sync",
            "-c",
            "author",
            "--where",
            "name LIKE 'author-1_' AND active",
        ],
    )
    .await;
    assert_eq!(received(&mut capture, 4).await, broadcast([12, 14, 16, 18]));

    // django-cqrs filter kwargs.
    ok(
        cli,
        &[
            "sync",
            "-c",
            "author",
            "--filter",
            r#"{"id__in": [1, 3], "id__gte": 2}"#,
        ],
    )
    .await;
    assert_eq!(received(&mut capture, 1).await, broadcast([3]));

    // To one replica queue only.
    ok(
        cli,
        &["sync", "-c", "author", "--pk", "9", "--queue", "payments"],
    )
    .await;
    assert_eq!(
        received(&mut capture, 1).await,
        vec![("cqrs.payments.author".to_owned(), 9)]
    );

    // Every row, in batches.
    let report = ok(cli, &["sync", "-c", "author", "--all", "--batch", "7"]).await;
    assert_eq!(report.written, 20);
    assert_eq!(received(&mut capture, 20).await, broadcast(1..=20));

    // Nothing selected: nothing published, and it is not an error.
    let report = ok(cli, &["sync", "-c", "author", "--pk", "404"]).await;
    assert_eq!(report.written, 0);
    assert!(
        report.summary.contains("no `author` row"),
        "{}",
        report.summary
    );
    assert!(capture.is_quiet_for(Duration::from_millis(200)).await);

    // The body is the master's SYNC of the row as stored.
    ok(cli, &["sync", "-c", "author", "--pk", "5"]).await;
    let (_, body) = capture
        .take(1, Duration::from_secs(10))
        .await
        .pop()
        .unwrap();
    assert_eq!(body["instance_data"]["name"], "renamed-5");
    assert_eq!(body["instance_data"]["cqrs_revision"], 2);
    assert_eq!(
        body["previous_data"],
        Value::Null,
        "a SYNC of a stored row has no previous data, as django-cqrs's cqrs_sync sends"
    );

    // Unroutable: no queue is bound on an exchange of its own.
    let lonely = config_builder("cli_unroutable").build().unwrap();
    let lonely_cli = Cli::new(lonely.clone(), master.db.connector()).master::<PgAuthor>();
    let error = run(
        &lonely_cli,
        &["sync", "-c", "author", "--pk", "1", "--queue", "nobody"],
    )
    .await
    .unwrap_err();
    assert_eq!(error.exit_code(), 1);
    assert!(error.to_string().contains("unroutable"), "{error}");
    assert!(error.to_string().contains("cqrs.nobody.author"), "{error}");
    crate::support::cleanup(lonely.exchange(), &[]).await;
    transport.close().await;
    crate::support::cleanup(master.config.exchange(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_builds_its_messages_with_the_clis_master_config() {
    let master = Master::standalone(3);
    let transport = RabbitMqTransport::new(master.config.clone());
    transport
        .declare(&Topology::exchange_only(master.config.exchange()))
        .await
        .unwrap();
    let mut capture = Capture::bind(master.config.exchange()).await;
    // Given after the model was added: it applies to it all the same.
    let cli = master.cli.clone().with_master_config(
        cqrs_diesel::MasterConfig::from_config(&master.config)
            .with_meta_function(|message| {
                let mut meta = serde_json::Map::new();
                meta.insert("by".into(), Value::from("cli"));
                meta.insert("signal".into(), Value::from(message.signal.as_str()));
                Some(meta)
            })
            .with_correlation_function(|message| Some(format!("sync-{}", message.instance_pk))),
    );

    ok(&cli, &["sync", "-c", "author", "--all"]).await;
    let mut got = capture.take(3, Duration::from_secs(10)).await;
    got.sort_by_key(|(_, body)| body["instance_pk"].as_i64());
    for (i, (_, body)) in got.iter().enumerate() {
        assert_eq!(
            body["meta"],
            serde_json::json!({"by": "cli", "signal": "SYNC"}),
            "{body}"
        );
        assert_eq!(body["correlation_id"], format!("sync-{}", i + 1), "{body}");
    }
}
