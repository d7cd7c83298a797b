//! The transport contract from outside the library: a `Settle` and a whole `Transport` written
//! with public items only, the way a third transport (another broker) would be.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_diesel::transport::{
    Confirmation, Consumer, Delivery, InMemoryConsumer, InMemoryTransport, OutgoingMessage, Settle,
};
use cqrs_diesel::wire::{Expiry, Payload, SignalType};
use cqrs_diesel::{Config, ConsumerRuntime, Topology, Transport, TransportError};
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::consumer_runtime::Recorder;

/// What was settled, in order: `(routing key, "ack" | "requeue" | "drop")`.
type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

/// Records how its delivery was settled, then hands it on to `inner` (when there is one).
struct Recorded {
    routing_key: String,
    log: Log,
    inner: Option<Delivery>,
}

impl Settle for Recorded {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        Box::pin(async move {
            self.log.lock().unwrap().push((self.routing_key, "ack"));
            match self.inner {
                Some(inner) => inner.ack().await,
                None => Ok(()),
            }
        })
    }

    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), TransportError>> {
        Box::pin(async move {
            let what = if requeue { "requeue" } else { "drop" };
            self.log.lock().unwrap().push((self.routing_key, what));
            match self.inner {
                Some(inner) => inner.reject(requeue).await,
                None => Ok(()),
            }
        })
    }
}

#[tokio::test]
async fn a_delivery_built_from_public_items_settles_through_its_settle() {
    let log = Log::default();
    let settle = |key: &str| Recorded {
        routing_key: key.to_owned(),
        log: Arc::clone(&log),
        inner: None,
    };

    let delivery = Delivery::new(b"{}".to_vec(), "cqrs.q.author", settle("cqrs.q.author"))
        .with_redelivered(true)
        .with_header("x-cqrs-seq", "7")
        .with_header("traceparent", "00-abc-def-01")
        .with_expiration(Duration::from_secs(60));
    assert_eq!(delivery.body(), b"{}");
    assert_eq!(delivery.routing_key(), "cqrs.q.author");
    assert!(delivery.redelivered());
    assert_eq!(delivery.header("x-cqrs-seq"), Some("7"));
    assert_eq!(delivery.headers().len(), 2);
    assert_eq!(delivery.expiration(), Some(Duration::from_secs(60)));
    delivery.ack().await.unwrap();

    let plain = Delivery::new(b"x".to_vec(), "author", settle("author"));
    assert!(!plain.redelivered());
    assert!(plain.headers().is_empty());
    assert_eq!(plain.expiration(), None);
    plain.reject(true).await.unwrap();

    let replaced = Delivery::new(b"y".to_vec(), "book", settle("book"))
        .with_header("a", "1")
        .with_headers(vec![("b".to_owned(), "2".to_owned())]);
    assert_eq!(replaced.header("a"), None);
    assert_eq!(replaced.header("b"), Some("2"));
    replaced.reject(false).await.unwrap();

    assert_eq!(
        *log.lock().unwrap(),
        [
            ("cqrs.q.author".to_owned(), "ack"),
            ("author".to_owned(), "requeue"),
            ("book".to_owned(), "drop"),
        ]
    );
}

/// A transport of its own: the in-memory broker underneath, every delivery rebuilt with a
/// `Settle` of this crate that records, then settles the original.
#[derive(Clone)]
struct Wrapped {
    inner: InMemoryTransport,
    log: Log,
}

struct WrappedConsumer {
    inner: InMemoryConsumer,
    log: Log,
}

impl Transport for Wrapped {
    type Consumer = WrappedConsumer;

    async fn declare(&self, topology: &Topology) -> Result<(), TransportError> {
        self.inner.declare(topology).await
    }

    async fn publish(&self, message: &OutgoingMessage) -> Result<Confirmation, TransportError> {
        self.inner.publish(message).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<WrappedConsumer, TransportError> {
        Ok(WrappedConsumer {
            inner: self.inner.consume(queue, prefetch).await?,
            log: Arc::clone(&self.log),
        })
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

impl Consumer for WrappedConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        let inner = match self.inner.next().await? {
            Ok(inner) => inner,
            Err(error) => return Some(Err(error)),
        };
        let (body, routing_key) = (inner.body().to_vec(), inner.routing_key().to_owned());
        let (redelivered, headers) = (inner.redelivered(), inner.headers().to_vec());
        let expiration = inner.expiration();
        let settle = Recorded {
            routing_key: routing_key.clone(),
            log: Arc::clone(&self.log),
            inner: Some(inner),
        };
        let delivery = Delivery::new(body, routing_key, settle)
            .with_redelivered(redelivered)
            .with_headers(headers);
        Some(Ok(match expiration {
            Some(ttl) => delivery.with_expiration(ttl),
            None => delivery,
        }))
    }
}

fn body(pk: i64) -> Vec<u8> {
    let serde_json::Value::Object(data) = json!({"id": pk, "cqrs_revision": 1}) else {
        unreachable!()
    };
    Payload::new(SignalType::Save, "author", json!(pk), data)
        .with_expires(Expiry::Never)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_runtime_runs_over_a_transport_written_outside_the_library() {
    let config = Config::builder().queue("custom").build().unwrap();
    let log = Log::default();
    let transport = Wrapped {
        inner: InMemoryTransport::new(&config),
        log: Arc::clone(&log),
    };
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await
        .unwrap();
    for pk in [1, 2] {
        transport
            .publish_confirmed(&OutgoingMessage::new("author", body(pk)))
            .await
            .unwrap();
    }
    // Unreadable: the runtime dead-letters it (a publish of its own), then acknowledges it.
    transport
        .publish_confirmed(&OutgoingMessage::new("author", b"{not json".to_vec()))
        .await
        .unwrap();

    let authors = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config.clone(), authors.clone())
        .batch_wait(Duration::from_millis(5))
        .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.lock().unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every delivery settled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.shutdown().await.unwrap();

    let mut applied = authors.applied();
    applied.sort_unstable();
    assert_eq!(applied, [1, 2]);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(
        *log.lock().unwrap(),
        vec![("author".to_owned(), "ack"); 3],
        "each delivery acknowledged once, through the Settle of this crate"
    );

    // The dead letter reached the dead-letter queue through the wrapped transport.
    let mut dead = transport
        .inner
        .consume("dead_letter_custom", 10)
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(1), dead.next())
        .await
        .expect("a dead letter")
        .expect("the consumer is open")
        .unwrap();
    assert_eq!(letter.body(), b"{not json");
    transport.close().await;
}
