//! The replica side on PostgreSQL, MariaDB and SQLite: messages published to the real
//! RabbitMQ, applied by the consumer runtime with a `Replicas` registry, checked in the
//! database.

mod custom;
mod database_down;
mod e2e;
mod failures;
mod golden;
mod model_based;
pub mod models;
pub mod only_cqrs_ids;
mod process;
mod query_timeout;
mod retry_hooks;
mod scenarios;
mod unavailable;

use std::time::Duration;

use cqrs_diesel::runtime::Applier;
use cqrs_diesel::transport::{OutgoingMessage, direct_routing_key};
use cqrs_diesel::{
    Config, ConfigBuilder, ConsumerHandle, ConsumerRuntime, ConsumerStats, CqrsConnection,
    Replicas, Topology, Transport,
};
use serde_json::{Value, json};

use lapin::options::BasicGetOptions;

use crate::brokers::{Broker, RabbitMq};
use crate::db::TestDb;
use crate::support::raw_connection;

/// A running replica worker on a test database, with its own exchange and queues, on the
/// broker `B` (RabbitMQ unless said otherwise).
pub struct Worker<D: TestDb, B: Broker = RabbitMq> {
    pub db: D,
    pub config: Config,
    pub transport: B::Transport,
    handle: Option<ConsumerHandle>,
    cqrs_ids: Vec<String>,
}

impl<D: TestDb> Worker<D> {
    /// Creates the tables (`ddl`) and the tombstone table, declares the topology and starts
    /// the runtime with `replicas`, on RabbitMQ.
    pub async fn start(db: D, ddl: &str, replicas: Replicas<D::Conn>) -> Self {
        Self::start_with(db, ddl, replicas, |builder| builder).await
    }

    /// [`Worker::start`] with a configuration of the test's choice, on RabbitMQ.
    pub async fn start_with(
        db: D,
        ddl: &str,
        replicas: Replicas<D::Conn>,
        configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) -> Self {
        Worker::<D, RabbitMq>::start_on(db, ddl, replicas, configure).await
    }
}

impl<D: TestDb, B: Broker> Worker<D, B> {
    /// [`Worker::start_with`] on the broker `B`.
    pub async fn start_on(
        db: D,
        ddl: &str,
        replicas: Replicas<D::Conn>,
        configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) -> Self {
        // `RUST_LOG=cqrs_core=debug,cqrs_diesel=debug` shows what the worker does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        if !ddl.is_empty() {
            db.execute(ddl);
        }
        db.connect()
            .run_replica_migrations()
            .expect("replica migration");
        let config = configure(B::config_builder("replica"))
            .build()
            .expect("config");
        let transport = B::transport(&config).await;
        let cqrs_ids = replicas.cqrs_ids();
        transport
            .declare(&Topology::from_config(&config, cqrs_ids.clone()))
            .await
            .expect("declare the topology");
        let mut worker = Worker {
            db,
            config,
            transport,
            handle: None,
            cqrs_ids,
        };
        worker.restart(replicas);
        worker
    }

    /// Starts a (new) runtime on the same queue.
    pub fn restart(&mut self, replicas: Replicas<D::Conn>) {
        let runtime = ConsumerRuntime::new(self.transport.clone(), self.config.clone(), replicas)
            .batch_wait(Duration::from_millis(5));
        self.handle = Some(runtime.spawn());
    }

    /// Starts a (new) runtime whose batches close at `messages` messages, waiting for them
    /// as long as a slow machine may need: the messages waiting in the queue are applied in
    /// one batch, however their deliveries are spread in time.
    pub fn restart_batched(&mut self, replicas: Replicas<D::Conn>, messages: usize) {
        let runtime = ConsumerRuntime::new(self.transport.clone(), self.config.clone(), replicas)
            .batch_size(messages)
            .batch_wait(Duration::from_secs(10));
        self.handle = Some(runtime.spawn());
    }

    pub fn queue(&self) -> &str {
        self.config.queue().expect("a replica queue")
    }

    /// Publishes a body with a routing key, as a master would.
    pub async fn publish(&self, routing_key: &str, body: &Value) {
        self.transport
            .publish_confirmed(&OutgoingMessage::new(
                routing_key,
                body.to_string().into_bytes(),
            ))
            .await
            .expect("publish");
    }

    /// Publishes a broadcast (routing key `<cqrs_id>`).
    pub async fn broadcast(&self, body: &Value) {
        let key = body["cqrs_id"].as_str().expect("cqrs_id").to_owned();
        self.publish(&key, body).await;
    }

    /// Publishes a broadcast as a cqrs-diesel master's relay does: with the outbox entry's id
    /// in the `x-cqrs-seq` header.
    pub async fn broadcast_with_seq(&self, body: &Value, seq: i64) {
        let key = body["cqrs_id"].as_str().expect("cqrs_id").to_owned();
        let message = OutgoingMessage::new(key, body.to_string().into_bytes())
            .with_header(cqrs_diesel::wire::SEQ_HEADER, seq.to_string());
        self.transport
            .publish_confirmed(&message)
            .await
            .expect("publish");
    }

    /// Publishes a message aimed at this worker's queue only.
    pub async fn direct(&self, body: &Value) {
        let key = direct_routing_key(self.queue(), body["cqrs_id"].as_str().expect("cqrs_id"));
        self.publish(&key, body).await;
    }

    pub fn stats(&self) -> ConsumerStats {
        self.handle.as_ref().expect("running").stats()
    }

    /// Waits until `done(stats)` holds (panics after 30 s).
    pub async fn wait(&self, what: &str, done: impl Fn(&ConsumerStats) -> bool) -> ConsumerStats {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` messages have been settled (applied in any way, or dead-lettered).
    pub async fn wait_settled(&self, n: u64) -> ConsumerStats {
        self.wait(&format!("{n} messages settled"), |s| {
            s.applied() + s.dead_lettered >= n
        })
        .await
    }

    /// Stops the runtime and returns its counters.
    pub async fn stop(&mut self) -> ConsumerStats {
        self.handle
            .take()
            .expect("running")
            .shutdown()
            .await
            .expect("a clean shutdown")
    }
}

impl<D: TestDb, B: Broker> Drop for Worker<D, B> {
    fn drop(&mut self) {
        let config = self.config.clone();
        let _ = &self.cqrs_ids;
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(B::cleanup(&config));
            }
        });
    }
}

/// A SAVE (or another signal) of an author row, as the reference master writes it.
pub fn author(signal: &str, id: i64, name: &str, revision: i64) -> Value {
    let updated = format!(
        "2026-11-28 18:21:{:02}.{:06}+00:00",
        revision.clamp(0, 59),
        id.rem_euclid(1_000_000)
    );
    author_at(signal, id, name, revision, &updated)
}

/// Like [`author`], with its `cqrs_updated`.
pub fn author_at(signal: &str, id: i64, name: &str, revision: i64, updated: &str) -> Value {
    json!({
        "signal_type": signal,
        "cqrs_id": "author",
        "instance_data": {
            "cqrs_revision": revision,
            "cqrs_updated": updated,
            "id": id,
            "name": name,
            "email": null,
            "birth_date": null,
            "joined_at": "2024-01-01 00:00:00+00:00",
            "active": true,
            "score": 1.5,
            "external_id": "6cf873fd-0349-4f7d-b40d-4b093cfc3cec",
            "bio": null,
            "unknown_master_field": "ignored",
        },
        "previous_data": null,
        "instance_pk": id,
        "correlation_id": null,
        "retries": 0,
        "expires": null,
        "meta": {},
    })
}

/// A DELETE of an author row (`cqrs_revision` = stored + 1, as the reference sends).
pub fn author_delete(id: i64, revision: i64) -> Value {
    let updated = format!("2026-11-28 18:22:{:02}.000000+00:00", revision.clamp(0, 59));
    author_delete_at(id, revision, &updated)
}

/// Like [`author_delete`], with its `cqrs_updated`.
pub fn author_delete_at(id: i64, revision: i64, updated: &str) -> Value {
    json!({
        "signal_type": "DELETE",
        "cqrs_id": "author",
        "instance_data": {
            "id": id,
            "cqrs_revision": revision,
            "cqrs_updated": updated,
        },
        "previous_data": null,
        "instance_pk": id,
        "correlation_id": null,
        "retries": 0,
        "expires": null,
        "meta": {},
    })
}

/// Everything in the dead-letter queue: (body, reason header).
pub async fn dead_letters(queue: &str) -> Vec<(String, String)> {
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.expect("channel");
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let reason = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| {
                headers
                    .inner()
                    .iter()
                    .find(|(key, _)| key.as_str() == "x-cqrs-dead-letter-reason")
                    .map(|(_, value)| match value {
                        lapin::types::AMQPValue::LongString(s) => s.to_string(),
                        other => format!("{other:?}"),
                    })
            })
            .unwrap_or_default();
        out.push((
            String::from_utf8_lossy(&message.delivery.data).into_owned(),
            reason,
        ));
    }
    let _ = connection.close(200, "".into()).await;
    out
}

/// Holds the replica state row of author 1 locked (`SELECT ... FOR UPDATE` in an open
/// transaction on a connection of its own, the row created first) until the returned sender
/// sends or is dropped; returns once the lock is held.
pub fn lock_author_state<C>(
    connect: impl FnOnce() -> C + Send + 'static,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>)
where
    C: cqrs_diesel::diesel::Connection,
{
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut conn = connect();
        conn.batch_execute(
            "INSERT INTO cqrs_replica_state (cqrs_id, pk, revision, updated_us, deleted) \
             VALUES ('author', '1', 0, 0, TRUE)",
        )
        .expect("a state row");
        conn.transaction(|conn| {
            conn.batch_execute(
                "SELECT * FROM cqrs_replica_state WHERE cqrs_id = 'author' AND pk = '1' FOR UPDATE",
            )?;
            let _ = locked_tx.send(());
            let _ = release_rx.recv_timeout(std::time::Duration::from_secs(60));
            Ok::<_, cqrs_diesel::diesel::result::Error>(())
        })
        .expect("the holding transaction");
    });
    locked_rx.recv().expect("the lock is held");
    (holder, release_tx)
}
