//! The transport abstraction: publish with confirmation, consume with ack / reject, declare
//! the broker topology of docs/WIRE.md.
//!
//! # Writing a transport
//!
//! The relay, the consumer runtime and the operator commands speak to a broker only through
//! three traits: [`Transport`] (declare, publish, consume, probe, close), [`Consumer`] (the
//! deliveries of one queue) and [`Settle`] (acknowledge or reject one [`Delivery`]). A
//! transport outside this crate implements the three and builds its deliveries with
//! [`Delivery::new`]. [`RabbitMqTransport`](crate::RabbitMqTransport) and
//! [`InMemoryTransport`](crate::InMemoryTransport) are two implementations written that way.
//! What the library relies on:
//!
//! - **Confirmed means durable.** The [`Confirmation`] of a [`Transport::publish`] resolves to
//!   `Ok` only once the broker has durably accepted the message (persisted and routed to every
//!   bound queue): the outbox relay deletes the outbox entry on that `Ok`, and the consumer
//!   runtime acknowledges the original of a retry or dead letter on it. Anything short of that
//!   is an error: a retryable one ([`Error::ConnectionLost`], [`Error::Nacked`],
//!   [`Error::Connect`]) when publishing again may succeed, [`Error::Unroutable`] when no
//!   queue is bound to the routing key (publishes are *mandatory*).
//! - **Order.** [`Transport::publish`] hands messages over in call order and returns once the
//!   message is handed over, before its confirmation: the relay keeps many confirmations in
//!   flight and relies on the broker delivering one queue's messages in the order they were
//!   handed over (one row's changes are applied in order).
//! - **At least once.** A delivery that is neither acknowledged nor rejected comes again
//!   (marked [`redelivered`](Delivery::redelivered)) once the consumer it came from ends:
//!   dropped, its connection lost, the transport closed. Dropping a [`Settle`] must not
//!   acknowledge. Duplicates are fine (the replica orders messages by revision); losses are
//!   not. A [`Consumer`] reconnects by itself after a lost connection and reports through
//!   [`Consumer::next`]'s `Err` only what reconnecting cannot mend; it honours `prefetch` (at
//!   most that many deliveries handed out and not yet settled).
//! - **Topology.** [`Transport::declare`] creates, idempotently, the topic exchange
//!   ([`Topology::exchange`]) and, when [`Topology::replica`] is set, the replica queue, its
//!   dead-letter queue (both durable, of the configured [`QueueType`]) and every binding of
//!   [`Topology::bindings`]. Messages published with [`OutgoingMessage::exchange`] `Some("")`
//!   go to the queue named by their routing key, with no binding (the default exchange).
//! - **Properties.** A delivery carries the routing key the message was published with, its
//!   string headers and its expiration ([`OutgoingMessage::headers`],
//!   [`OutgoingMessage::expiration`]); a message whose expiration passes while it waits in a
//!   queue is dropped by the broker.
//! - **Dead letters and retries need nothing of the transport.** The consumer runtime
//!   publishes a dead letter itself, to the dead-letter routing key
//!   ([`dead_letter_routing_key`], or the dead-letter queue through the default exchange when
//!   the `cqrs_id` is unknown), and a retry to the replica's direct routing key
//!   ([`direct_routing_key`]), holding retries in its own delay queue until they are due; it
//!   acknowledges the original once the copy is confirmed. No broker-side dead-lettering or
//!   delayed delivery is used.
//! - **Probe and close.** [`Transport::probe`] answers a readiness probe: `Ok` when the broker
//!   can be reached now (connecting if needed), otherwise the error a publish would meet.
//!   [`Transport::close`] ends the transport's consumers (their [`Consumer::next`] returns
//!   `None`; what they handed out and was not settled comes again), waits briefly for
//!   confirmations in flight, and makes every later operation fail with [`Error::Closed`].
//!   Closing twice is harmless.
//!
//! A [`Settle`] for a broker whose deliveries are settled by tag (the shape of most clients):
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use cqrs_core::{Delivery, Result, Settle};
//! use futures_util::future::BoxFuture;
//!
//! /// What the broker was told, by delivery tag.
//! type Settled = Arc<Mutex<Vec<(u64, &'static str)>>>;
//!
//! struct ByTag {
//!     tag: u64,
//!     log: Settled,
//! }
//!
//! impl Settle for ByTag {
//!     fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
//!         Box::pin(async move {
//!             self.log.lock().unwrap().push((self.tag, "ack"));
//!             Ok(())
//!         })
//!     }
//!
//!     fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
//!         Box::pin(async move {
//!             let what = if requeue { "requeue" } else { "drop" };
//!             self.log.lock().unwrap().push((self.tag, what));
//!             Ok(())
//!         })
//!     }
//! }
//!
//! # futures_util::FutureExt::now_or_never(async {
//! let log = Settled::default();
//! let delivery = Delivery::new(
//!     br#"{"signal_type":"SAVE"}"#.to_vec(),
//!     "account",
//!     ByTag { tag: 7, log: Arc::clone(&log) },
//! )
//! .with_redelivered(true)
//! .with_header("x-cqrs-seq", "1");
//! assert_eq!(delivery.routing_key(), "account");
//! assert_eq!(delivery.header("x-cqrs-seq"), Some("1"));
//! delivery.ack().await?;
//! assert_eq!(*log.lock().unwrap(), [(7, "ack")]);
//! # Ok::<(), cqrs_core::Error>(())
//! # }).unwrap()?;
//! # Ok::<(), cqrs_core::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{Config, QueueType};
use crate::error::{Error, Result};

/// A message body with its routing key, ready to publish to the configured exchange (or to the
/// exchange named in [`OutgoingMessage::exchange`]).
///
/// Every message is published persistent (`delivery_mode` 2), `content_type` `text/plain` and
/// mandatory, as docs/WIRE.md says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The exchange to publish to instead of the configured one; `None` (the usual case) for
    /// the configured exchange. `Some("")` is the broker's default exchange, which routes a
    /// message to the queue named by its routing key: see [`OutgoingMessage::to_queue`].
    pub exchange: Option<String>,
    /// `<cqrs_id>` for broadcasts, `cqrs.<queue>.<cqrs_id>` for a message aimed at one queue;
    /// the queue's name when published through the default exchange.
    pub routing_key: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Per-message time to live (the `expiration` property), used for dead letters.
    pub expiration: Option<Duration>,
    /// String headers, for example the reason a message was dead-lettered.
    pub headers: Vec<(String, String)>,
}

impl OutgoingMessage {
    /// A message to the configured exchange, with no expiration and no headers.
    pub fn new(routing_key: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        OutgoingMessage {
            exchange: None,
            routing_key: routing_key.into(),
            body: body.into(),
            expiration: None,
            headers: Vec::new(),
        }
    }

    /// A message straight to `queue` through the broker's default exchange (`""`), which
    /// needs no binding. Used to dead-letter a message whose `cqrs_id` is unknown or unreadable,
    /// for which the dead-letter queue has no binding.
    pub fn to_queue(queue: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        OutgoingMessage {
            exchange: Some(String::new()),
            ..OutgoingMessage::new(queue, body)
        }
    }

    /// The exchange this message goes to, given the configured one.
    pub fn exchange_or<'a>(&'a self, configured: &'a str) -> &'a str {
        self.exchange.as_deref().unwrap_or(configured)
    }

    /// Sets the per-message expiration.
    pub fn with_expiration(mut self, ttl: Duration) -> Self {
        self.expiration = Some(ttl);
        self
    }

    /// Adds a string header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The routing key of a message aimed at one replica queue only: `cqrs.<queue>.<cqrs_id>`.
///
/// Used for a SYNC to one service and for a replica's own retries.
pub fn direct_routing_key(queue: &str, cqrs_id: &str) -> String {
    format!("cqrs.{queue}.{cqrs_id}")
}

/// The routing key that reaches a replica's dead-letter queue: `cqrs.<dead_letter_queue>.<cqrs_id>`.
pub fn dead_letter_routing_key(dead_letter_queue: &str, cqrs_id: &str) -> String {
    format!("cqrs.{dead_letter_queue}.{cqrs_id}")
}

/// The broker objects a service needs, as docs/WIRE.md describes them.
///
/// A master-only service declares just the exchange. A replica service adds its queue, its
/// dead-letter queue and, for each `cqrs_id` it consumes, three bindings (see
/// [`Topology::bindings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The topic exchange (durable).
    pub exchange: String,
    /// The replica's queues, if this service consumes.
    pub replica: Option<ReplicaQueues>,
}

/// The queues of one replica service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaQueues {
    /// The replica's queue (durable, not exclusive).
    pub queue: String,
    /// Its dead-letter queue (durable).
    pub dead_letter_queue: String,
    /// Classic or quorum queues.
    pub queue_type: QueueType,
    /// The `cqrs_id`s this service consumes.
    pub cqrs_ids: Vec<String>,
}

impl Topology {
    /// Only the exchange: what a master-only service needs.
    pub fn exchange_only(exchange: impl Into<String>) -> Self {
        Topology {
            exchange: exchange.into(),
            replica: None,
        }
    }

    /// The topology the configuration describes for these `cqrs_id`s: the exchange and, when a
    /// queue is configured, the replica queues and their bindings.
    pub fn from_config<I, S>(config: &Config, cqrs_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let replica = match (config.queue(), config.dead_letter_queue()) {
            (Some(queue), Some(dead_letter_queue)) => Some(ReplicaQueues {
                queue: queue.to_owned(),
                dead_letter_queue: dead_letter_queue.to_owned(),
                queue_type: config.queue_type(),
                cqrs_ids: cqrs_ids.into_iter().map(Into::into).collect(),
            }),
            _ => None,
        };
        Topology {
            exchange: config.exchange().to_owned(),
            replica,
        }
    }

    /// Every `(queue, routing key)` binding to the exchange, three per `cqrs_id`:
    /// `<cqrs_id>` and `cqrs.<queue>.<cqrs_id>` to the queue, and
    /// `cqrs.<dead_letter_queue>.<cqrs_id>` to the dead-letter queue.
    pub fn bindings(&self) -> Vec<(&str, String)> {
        let Some(replica) = &self.replica else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(replica.cqrs_ids.len() * 3);
        for cqrs_id in &replica.cqrs_ids {
            out.push((replica.queue.as_str(), cqrs_id.clone()));
            out.push((
                replica.queue.as_str(),
                direct_routing_key(&replica.queue, cqrs_id),
            ));
            out.push((
                replica.dead_letter_queue.as_str(),
                dead_letter_routing_key(&replica.dead_letter_queue, cqrs_id),
            ));
        }
        out
    }
}

/// The broker's answer to one publish, to be awaited.
///
/// [`Transport::publish`] returns once the message is handed to the broker connection, in
/// call order; this future resolves when the broker has confirmed it (or reported it
/// unroutable, or the connection was lost before the confirm arrived). Keeping many of them in
/// flight is how a publisher reaches the broker's throughput: see [`Transport::publish_all`].
#[must_use = "a publish is only known to be safe once its confirmation resolves to Ok"]
pub struct Confirmation {
    inner: Pin<Box<dyn Future<Output = Result<()>> + Send>>,
}

impl Confirmation {
    /// A confirmation that is already settled.
    pub fn ready(result: Result<()>) -> Self {
        Confirmation::new(std::future::ready(result))
    }

    /// Wraps a future that settles the confirmation (for transport implementations).
    pub fn new(future: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        Confirmation {
            inner: Box::pin(future),
        }
    }
}

impl Future for Confirmation {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confirmation").finish_non_exhaustive()
    }
}

/// How [`Transport::publish_all`] failed: the messages before `confirmed` are confirmed, the
/// rest must be published again (some of them may arrive twice: delivery is at least once).
#[derive(Debug, thiserror::Error)]
#[error("{confirmed} message(s) confirmed before a publish failed: {error}")]
pub struct PartialPublish {
    /// How many messages, from the start of the slice, are confirmed.
    pub confirmed: usize,
    /// The first failure.
    #[source]
    pub error: Error,
}

/// A transport that can publish with confirmation, consume with ack/reject, and declare the
/// topology of docs/WIRE.md.
///
/// Implementations are cheap to clone handles over shared connections, so one transport can
/// serve a relay, a consumer and request handlers at once.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The stream of deliveries from one queue.
    type Consumer: Consumer;

    /// Declares the exchange, and the replica queues with their bindings when the topology has
    /// them. Idempotent.
    fn declare(&self, topology: &Topology) -> impl Future<Output = Result<()>> + Send;

    /// Publishes one message to the configured exchange. Returns once it is handed over, in
    /// call order; the [`Confirmation`] resolves when the broker confirms it.
    fn publish(
        &self,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<Confirmation>> + Send;

    /// Starts consuming `queue` with at most `prefetch` unacknowledged deliveries in flight.
    fn consume(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> impl Future<Output = Result<Self::Consumer>> + Send;

    /// Closes the transport: consumers end, further operations fail with [`Error::Closed`].
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Checks that the broker can be reached now, connecting if the transport holds no live
    /// connection: what a readiness probe asks. The default answers `Ok` (a transport without
    /// a connection of its own); implementations should fail with the error a publish would
    /// meet ([`Error::Connect`], [`Error::Closed`], ...).
    fn probe(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The exchange [`publish`](Self::publish) sends to, for telemetry (the relay's
    /// `publish <exchange>:<routing key>` spans); `None` when the transport does not say.
    fn exchange(&self) -> Option<&str> {
        None
    }

    /// Publishes one message and waits for its confirmation.
    fn publish_confirmed(
        &self,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<()>> + Send {
        async move { self.publish(message).await?.await }
    }

    /// Publishes `messages` in order with up to `window` confirmations in flight, and waits for
    /// all of them. This is the fast way to publish many messages.
    fn publish_all(
        &self,
        messages: &[OutgoingMessage],
        window: usize,
    ) -> impl Future<Output = Result<(), PartialPublish>> + Send {
        async move {
            let window = window.max(1);
            let mut in_flight = std::collections::VecDeque::with_capacity(window);
            let mut confirmed = 0usize;
            for message in messages {
                if in_flight.len() >= window {
                    settle_oldest(&mut in_flight, &mut confirmed).await?;
                }
                match self.publish(message).await {
                    Ok(confirmation) => in_flight.push_back(confirmation),
                    Err(error) => {
                        // Let the ones already handed over settle, to report an exact prefix.
                        while !in_flight.is_empty() {
                            settle_oldest(&mut in_flight, &mut confirmed).await?;
                        }
                        return Err(PartialPublish { confirmed, error });
                    }
                }
            }
            while !in_flight.is_empty() {
                settle_oldest(&mut in_flight, &mut confirmed).await?;
            }
            Ok(())
        }
    }
}

async fn settle_oldest(
    in_flight: &mut std::collections::VecDeque<Confirmation>,
    confirmed: &mut usize,
) -> Result<(), PartialPublish> {
    if let Some(confirmation) = in_flight.pop_front() {
        if let Err(error) = confirmation.await {
            return Err(PartialPublish {
                confirmed: *confirmed,
                error,
            });
        }
        *confirmed += 1;
    }
    Ok(())
}

/// A stream of deliveries from one queue.
pub trait Consumer: Send + 'static {
    /// The next delivery. `None` once the consumer is finished (the transport was closed).
    /// An `Err` is a failure that reconnecting cannot mend (the queue was deleted, access was
    /// refused); the consumer is finished after it. Lost connections are not reported here:
    /// the consumer reconnects by itself and unacknowledged deliveries come again.
    fn next(&mut self) -> impl Future<Output = Option<Result<Delivery>>> + Send;
}

/// How one [`Delivery`] is settled with the broker it came from: what a transport attaches to
/// every delivery it hands out.
///
/// [`Delivery::ack`] and [`Delivery::reject`] consume the delivery and call one of these
/// methods exactly once. A settlement that is dropped without either (its delivery was dropped)
/// must leave the message unacknowledged: the broker delivers it again once the consumer it
/// came from ends.
///
/// Errors: when the channel (or consumer) the delivery came from is gone, fail with
/// [`Error::ConnectionLost`] (retryable: the broker delivers the message again to a live
/// consumer); when the broker refuses the operation, [`Error::Refused`].
pub trait Settle: Send + 'static {
    /// Acknowledges the delivery: the broker forgets the message.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>>;

    /// Rejects the delivery. With `requeue` the broker delivers it again (marked redelivered);
    /// without, the broker drops it.
    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>>;
}

/// One message received from a queue. Acknowledge it once it is applied, or reject it.
///
/// Dropping a delivery without acknowledging leaves it unacknowledged until its consumer ends,
/// when the broker delivers it again.
///
/// A transport builds its deliveries with [`Delivery::new`], attaching the [`Settle`] that
/// acknowledges or rejects the message with its broker.
pub struct Delivery {
    body: Vec<u8>,
    routing_key: String,
    redelivered: bool,
    headers: Vec<(String, String)>,
    expiration: Option<Duration>,
    settle: Box<dyn Settle>,
}

impl Delivery {
    /// A delivery of `body`, published with `routing_key`, that `settle` acknowledges or
    /// rejects. Not redelivered, no headers, no expiration: set them with
    /// [`with_redelivered`](Self::with_redelivered), [`with_header`](Self::with_header),
    /// [`with_headers`](Self::with_headers) and [`with_expiration`](Self::with_expiration).
    pub fn new(
        body: impl Into<Vec<u8>>,
        routing_key: impl Into<String>,
        settle: impl Settle,
    ) -> Self {
        Delivery {
            body: body.into(),
            routing_key: routing_key.into(),
            redelivered: false,
            headers: Vec::new(),
            expiration: None,
            settle: Box::new(settle),
        }
    }

    /// Marks whether the broker delivered this message before (the AMQP `redelivered` flag).
    pub fn with_redelivered(mut self, redelivered: bool) -> Self {
        self.redelivered = redelivered;
        self
    }

    /// Adds a string header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the string headers (a transport drops headers whose values are not strings).
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the per-message expiration it was published with.
    pub fn with_expiration(mut self, ttl: Duration) -> Self {
        self.expiration = Some(ttl);
        self
    }

    /// The message body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The routing key it was published with: tells a SYNC aimed at this queue
    /// (`cqrs.<queue>.<cqrs_id>`) from a broadcast one (`<cqrs_id>`).
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// Whether the broker delivered this message before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// A string header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All string headers.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The per-message expiration it was published with, if any.
    pub fn expiration(&self) -> Option<Duration> {
        self.expiration
    }

    /// Acknowledges the delivery: the broker forgets it.
    ///
    /// Fails with [`Error::ConnectionLost`] if the channel it came from is gone; the broker
    /// then delivers it again to a live consumer.
    pub async fn ack(self) -> Result<()> {
        self.settle.ack().await
    }

    /// Rejects the delivery. With `requeue` the broker delivers it again; without, it is
    /// dropped (publish it to the dead-letter routing key first to keep it).
    pub async fn reject(self, requeue: bool) -> Result<()> {
        self.settle.reject(requeue).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("redelivered", &self.redelivered)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_follow_wire_md() {
        assert_eq!(
            direct_routing_key("replica_b", "author"),
            "cqrs.replica_b.author"
        );
        assert_eq!(
            dead_letter_routing_key("dead_letter_replica_b", "author"),
            "cqrs.dead_letter_replica_b.author"
        );
    }

    #[test]
    fn replica_topology_has_three_bindings_per_cqrs_id() {
        let config = Config::builder().queue("payments").build().unwrap();
        let topology = Topology::from_config(&config, ["account", "user"]);
        assert_eq!(topology.exchange, "cqrs");
        assert_eq!(
            topology.bindings(),
            vec![
                ("payments", "account".to_owned()),
                ("payments", "cqrs.payments.account".to_owned()),
                (
                    "dead_letter_payments",
                    "cqrs.dead_letter_payments.account".to_owned()
                ),
                ("payments", "user".to_owned()),
                ("payments", "cqrs.payments.user".to_owned()),
                (
                    "dead_letter_payments",
                    "cqrs.dead_letter_payments.user".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn master_only_topology_has_no_bindings() {
        let config = Config::builder().build().unwrap();
        let topology = Topology::from_config(&config, ["account"]);
        assert!(topology.replica.is_none());
        assert!(topology.bindings().is_empty());
    }
}
