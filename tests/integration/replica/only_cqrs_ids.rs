//! A consumer limited to some models (`ConsumerRuntime::only_cqrs_ids`, django-cqrs's
//! `cqrs_consume --cqrs-id`): binds only theirs, dead-letters the other models' messages.

use std::time::Duration;

use cqrs_diesel::transport::{OutgoingMessage, direct_routing_key};
use cqrs_diesel::{
    ConsumerRuntime, CqrsConnection, CustomReplica, DbConn, HookError, MessageInfo,
    RabbitMqTransport, ReplicaModel, Replicas, Topology, Transport, TransportError,
};

use super::author;
use super::models::{AuthorRow, SqliteAuthorReplica};
use crate::cli::replica_rows;
use crate::db::{SqliteDb, TestDb};
use crate::support::{cleanup, config_builder};

/// A second model, `book`, that keeps nothing.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "book", custom)]
pub struct Book {
    pub id: i64,
}

impl CustomReplica for Book {
    fn cqrs_create(
        _conn: Option<DbConn<'_>>,
        _row: Self,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        Ok(())
    }

    fn cqrs_delete(
        _conn: Option<DbConn<'_>>,
        _key: i64,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        Ok(())
    }
}

pub fn book(id: i64) -> serde_json::Value {
    serde_json::json!({
        "signal_type": "SAVE",
        "cqrs_id": "book",
        "instance_data": {"id": id, "cqrs_revision": 0},
        "instance_pk": id,
        "previous_data": null,
        "correlation_id": null,
        "retries": 0,
        "expires": null,
    })
}

fn sqlite_replicas(tag: &str) -> (SqliteDb, Replicas<diesel::SqliteConnection>) {
    let db = SqliteDb::new(tag);
    db.execute(SqliteAuthorReplica::DDL);
    db.connect().run_replica_migrations().expect("migrations");
    let replicas = Replicas::new(db.connector())
        .register::<SqliteAuthorReplica>()
        .register_custom::<Book>();
    (db, replicas)
}

pub async fn publish(
    transport: &RabbitMqTransport,
    key: &str,
    body: &serde_json::Value,
) -> Result<(), TransportError> {
    transport
        .publish_confirmed(&OutgoingMessage::new(key, body.to_string().into_bytes()))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_limited_to_one_cqrs_id_binds_only_that_id() {
    let (db, replicas) = sqlite_replicas("only_binds");
    let config = config_builder("only_binds").build().unwrap();
    let transport = RabbitMqTransport::new(config.clone());
    let handle = ConsumerRuntime::new(transport.clone(), config.clone(), replicas)
        .only_cqrs_ids(["author"])
        .spawn();

    // Routed once the runtime has declared its queue and bindings.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while publish(&transport, "author", &author("SAVE", 1, "Ann", 0))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "author is bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queue = config.queue().unwrap();
    for key in ["book".to_owned(), direct_routing_key(queue, "book")] {
        match publish(&transport, &key, &book(2)).await {
            Err(TransportError::Unroutable { .. }) => {}
            other => panic!("{key} must not be bound: {other:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handle.stats().created < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!((stats.received, stats.created), (1, 1));
    assert_eq!(
        replica_rows::<SqliteAuthorReplica>(&mut db.connect()).len(),
        1
    );
    transport.close().await;
    cleanup(
        config.exchange(),
        &[queue, config.dead_letter_queue().unwrap()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_limited_to_one_cqrs_id_dead_letters_another_models_message_in_its_queue() {
    let (db, replicas) = sqlite_replicas("only_dead");
    let config = config_builder("only_dead").build().unwrap();
    let transport = RabbitMqTransport::new(config.clone());
    // An earlier, unlimited run bound the queue for both models; a book waits in it.
    transport
        .declare(&Topology::from_config(&config, ["author", "book"]))
        .await
        .unwrap();
    publish(&transport, "book", &book(5)).await.unwrap();
    publish(&transport, "author", &author("SAVE", 6, "Ann", 0))
        .await
        .unwrap();

    let handle = ConsumerRuntime::new(transport.clone(), config.clone(), replicas)
        .only_cqrs_ids(["author"])
        .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handle.stats().dead_lettered + handle.stats().applied() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        (stats.created, stats.handled),
        (1, 0),
        "the book was not applied"
    );
    assert_eq!((stats.dead_lettered, stats.not_selected), (1, 1));
    assert_eq!(
        replica_rows::<SqliteAuthorReplica>(&mut db.connect()).len(),
        1
    );

    let dead_letter_queue = config.dead_letter_queue().unwrap();
    let dead = super::dead_letters(dead_letter_queue).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (body, reason) = &dead[0];
    assert!(body.contains(r#""cqrs_id":"book""#), "{body}");
    assert!(
        reason.contains("cqrs_id `book` is not consumed by this worker")
            && reason.contains("`author`"),
        "{reason}"
    );
    transport.close().await;
    cleanup(
        config.exchange(),
        &[config.queue().unwrap(), dead_letter_queue],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_limited_to_an_unregistered_cqrs_id_fails_at_start_naming_the_registered_ones() {
    let (_db, replicas) = sqlite_replicas("only_unknown");
    let config = config_builder("only_unknown").build().unwrap();
    let error = cqrs_diesel::run_consumer_only(config, replicas, ["film"])
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("`film`") && text.contains("`author`, `book`"),
        "{text}"
    );
}
