//! The relay's logic against SQLite files and the in-memory broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_core::{
    Config, Confirmation, Consumer, InMemoryConsumer, InMemoryTransport, OutgoingMessage, Topology,
    Transport,
};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};

use super::*;
use crate::outbox::NewOutboxEntry;

/// A SQLite file of its own with the outbox table, removed on drop.
struct Db {
    path: PathBuf,
}

impl Db {
    fn new() -> Db {
        let path = std::env::temp_dir().join(format!("relay-{}.sqlite3", uuid::Uuid::new_v4()));
        let db = Db { path };
        let mut conn = db.connect();
        conn.batch_execute("PRAGMA journal_mode = WAL").unwrap();
        conn.run_outbox_migrations().unwrap();
        db
    }

    fn connector(&self) -> impl Fn() -> Result<SqliteConnection, ConnectionError> + use<> {
        let path = self.path.to_string_lossy().into_owned();
        move || {
            let mut conn = SqliteConnection::establish(&path)?;
            conn.batch_execute("PRAGMA busy_timeout = 5000")
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
    }

    fn connect(&self) -> SqliteConnection {
        (self.connector())().unwrap()
    }

    /// Inserts entries with bodies `{"n":<n>}` for `range`, all with `routing_key`.
    fn insert(&self, range: std::ops::Range<usize>, routing_key: &str) {
        let bodies: Vec<String> = range.map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        let entries: Vec<NewOutboxEntry<'_>> = bodies
            .iter()
            .map(|body| NewOutboxEntry {
                cqrs_id: "author",
                routing_key,
                body,
            })
            .collect();
        self.connect().outbox_insert_many(&entries).unwrap();
    }

    fn pending(&self) -> i64 {
        self.connect().outbox_pending().unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn broker() -> InMemoryTransport {
    let config = Config::builder().queue("replica").build().unwrap();
    let transport = InMemoryTransport::new(&config);
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await
        .unwrap();
    transport
}

/// The bodies waiting in the replica queue, in order (acknowledged).
async fn received(transport: &InMemoryTransport) -> Vec<String> {
    let mut consumer = transport.consume("replica", 1000).await.unwrap();
    let mut bodies = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(50), consumer.next()).await
    {
        let delivery = delivery.unwrap();
        bodies.push(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    bodies
}

fn bodies(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!(r#"{{"n":{n}}}"#)).collect()
}

#[tokio::test]
async fn drain_publishes_in_id_order_and_empties_the_outbox() {
    let db = Db::new();
    let transport = broker().await;
    db.insert(0..257, "author");
    let mut relay = OutboxRelay::new(transport.clone(), db.connector())
        .batch_size(20)
        .confirm_window(7);
    assert_eq!(relay.drain().await.unwrap(), 257);
    assert_eq!(db.pending(), 0);
    assert_eq!(received(&transport).await, bodies(0..257));
    let stats = relay.stats();
    assert_eq!(stats.published, 257);
    assert_eq!(stats.batches, 13);
    assert_eq!(relay.drain().await.unwrap(), 0, "nothing left");
}

#[tokio::test]
async fn unroutable_entries_are_dropped_and_counted() {
    let db = Db::new();
    let transport = broker().await;
    db.insert(0..3, "author");
    db.insert(3..5, "nobody_listens");
    let mut relay = OutboxRelay::new(transport.clone(), db.connector());
    assert_eq!(relay.drain().await.unwrap(), 5);
    assert_eq!(db.pending(), 0);
    assert_eq!(received(&transport).await, bodies(0..3));
    assert_eq!(relay.stats().unroutable, 2);
}

#[tokio::test]
async fn a_refused_publish_keeps_every_entry() {
    let db = Db::new();
    // No exchange declared: the in-memory broker refuses the publish.
    let transport = InMemoryTransport::with_exchange("missing");
    db.insert(0..10, "author");
    let mut relay = OutboxRelay::new(transport, db.connector());
    let error = relay.drain().await.unwrap_err();
    assert!(matches!(
        error,
        Error::Transport(cqrs_core::Error::Refused { .. })
    ));
    assert_eq!(db.pending(), 10);
    assert_eq!(relay.stats().errors, 1);
}

/// Delegates to the in-memory broker, except that the confirmation of publish number
/// `nack_at` (0-based) is a nack.
#[derive(Clone)]
struct NackOnce {
    inner: InMemoryTransport,
    published: Arc<AtomicUsize>,
    nack_at: usize,
}

impl Transport for NackOnce {
    type Consumer = InMemoryConsumer;

    async fn declare(&self, topology: &Topology) -> cqrs_core::Result<()> {
        self.inner.declare(topology).await
    }

    async fn publish(&self, message: &OutgoingMessage) -> cqrs_core::Result<Confirmation> {
        if self.published.fetch_add(1, Ordering::SeqCst) == self.nack_at {
            return Ok(Confirmation::ready(Err(cqrs_core::Error::Nacked {
                exchange: "cqrs".into(),
                routing_key: message.routing_key.clone(),
            })));
        }
        self.inner.publish(message).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> cqrs_core::Result<InMemoryConsumer> {
        self.inner.consume(queue, prefetch).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[tokio::test]
async fn a_failed_confirmation_deletes_only_the_entries_confirmed_before_it() {
    let db = Db::new();
    let inner = broker().await;
    db.insert(0..50, "author");
    let transport = NackOnce {
        inner: inner.clone(),
        published: Arc::new(AtomicUsize::new(0)),
        nack_at: 23,
    };
    let mut relay = OutboxRelay::new(transport, db.connector()).batch_size(10);
    let error = relay.drain().await.unwrap_err();
    assert!(matches!(
        error,
        Error::Transport(cqrs_core::Error::Nacked { .. })
    ));
    assert!(error.is_retryable());
    assert_eq!(relay.stats().published, 23);
    assert_eq!(db.pending(), 27, "the nacked entry and all after it stay");

    // The next attempt publishes the rest, in order, the nacked entry first. Entries handed
    // over after the nack but before the relay saw it arrive twice (at least once).
    assert_eq!(relay.drain().await.unwrap(), 27);
    assert_eq!(db.pending(), 0);
    let got = received(&inner).await;
    let retried = got.len() - 27;
    assert_eq!(got[..23], bodies(0..23)[..]);
    assert_eq!(got[23..retried], bodies(24..retried + 1)[..]);
    assert_eq!(got[retried..], bodies(23..50)[..]);
}

#[tokio::test]
async fn a_spawned_relay_wakes_on_commit_and_stops_on_shutdown() {
    let db = Db::new();
    let transport = broker().await;
    let relay = OutboxRelay::new(transport.clone(), db.connector())
        .poll_interval(Duration::from_secs(60))
        .spawn();
    tokio::time::sleep(Duration::from_millis(100)).await;

    db.insert(0..3, "author");
    crate::outbox::notify_commit();
    let mut consumer = transport.consume("replica", 10).await.unwrap();
    for expected in bodies(0..3) {
        let delivery = tokio::time::timeout(Duration::from_secs(2), consumer.next())
            .await
            .expect("delivered long before the poll interval")
            .unwrap()
            .unwrap();
        assert_eq!(delivery.body(), expected.as_bytes());
        delivery.ack().await.unwrap();
    }

    let stats = tokio::time::timeout(Duration::from_secs(2), relay.shutdown())
        .await
        .expect("an idle relay stops at once");
    assert_eq!(stats.published, 3);
    assert_eq!(db.pending(), 0);
}

#[tokio::test]
async fn a_closed_transport_ends_the_relay() {
    let db = Db::new();
    let transport = broker().await;
    db.insert(0..1, "author");
    transport.close().await;
    let stats = tokio::time::timeout(
        Duration::from_secs(2),
        OutboxRelay::new(transport, db.connector()).run_until(std::future::pending()),
    )
    .await
    .expect("the relay gives up on a closed transport");
    assert_eq!(stats.published, 0);
    assert_eq!(stats.errors, 1);
    assert_eq!(db.pending(), 1);
}

/// Delegates to the in-memory broker, except that no confirmation ever arrives: a broker
/// blocking its publishers for a resource alarm.
#[derive(Clone)]
struct NeverConfirms {
    inner: InMemoryTransport,
}

impl Transport for NeverConfirms {
    type Consumer = InMemoryConsumer;

    async fn declare(&self, topology: &Topology) -> cqrs_core::Result<()> {
        self.inner.declare(topology).await
    }

    async fn publish(&self, _message: &OutgoingMessage) -> cqrs_core::Result<Confirmation> {
        Ok(Confirmation::new(std::future::pending()))
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> cqrs_core::Result<InMemoryConsumer> {
        self.inner.consume(queue, prefetch).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[tokio::test]
async fn a_confirmation_that_never_comes_ends_the_pass_after_the_confirm_timeout() {
    let db = Db::new();
    db.insert(0..5, "author");
    let transport = NeverConfirms {
        inner: broker().await,
    };
    let mut relay =
        OutboxRelay::new(transport, db.connector()).confirm_timeout(Duration::from_millis(200));
    let error = tokio::time::timeout(Duration::from_secs(10), relay.drain())
        .await
        .expect("the pass gives up after the confirm timeout")
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transport(cqrs_core::Error::ConfirmTimeout { waited }) if waited == Duration::from_millis(200)
        ),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(relay.stats().published, 0);
    assert_eq!(db.pending(), 5, "unconfirmed entries stay in the outbox");
}

#[tokio::test]
async fn a_relay_waiting_for_confirmations_stops_within_the_confirm_timeout() {
    let db = Db::new();
    db.insert(0..5, "author");
    let transport = NeverConfirms {
        inner: broker().await,
    };
    let relay = OutboxRelay::new(transport, db.connector())
        .confirm_timeout(Duration::from_millis(300))
        .spawn();
    // Let it publish and start waiting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = tokio::time::timeout(Duration::from_secs(10), relay.shutdown())
        .await
        .expect("the shutdown waits at most the confirm timeout");
    assert_eq!(stats.published, 0);
    assert_eq!(db.pending(), 5);
}
