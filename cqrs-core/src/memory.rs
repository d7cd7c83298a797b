//! An in-process broker: the same topology, routing and ack semantics as RabbitMQ, without a
//! network. For unit tests and for running the examples when no broker answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::transport::{
    Confirmation, Consumer, Delivery, OutgoingMessage, Settle, Topology, Transport,
};

/// A transport whose broker lives in this process.
///
/// Clones share one broker, so a master and a replica in the same process (or test) talk to
/// each other. Routing follows topic-exchange rules (and the default exchange `""` routes by
/// queue name, see [`OutgoingMessage::to_queue`]), unroutable messages are reported like
/// mandatory publishes on RabbitMQ, unacknowledged deliveries come back when their consumer
/// is dropped, and per-message expiration is honoured. Nothing survives the process.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use cqrs_core::{Config, Consumer, InMemoryTransport, OutgoingMessage, Topology, Transport};
///
/// let config = Config::builder().queue("payments").build()?;
/// let transport = InMemoryTransport::new(&config);
/// transport.declare(&Topology::from_config(&config, ["account"])).await?;
/// transport.publish_confirmed(&OutgoingMessage::new("account", b"{}".to_vec())).await?;
///
/// let mut consumer = transport.consume("payments", 10).await?;
/// let delivery = consumer.next().await.expect("a delivery")?;
/// assert_eq!(delivery.routing_key(), "account");
/// delivery.ack().await?;
/// # Ok::<(), cqrs_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct InMemoryTransport {
    broker: Arc<Broker>,
    exchange: String,
}

#[derive(Default)]
struct Broker {
    closed: AtomicBool,
    state: Mutex<BrokerState>,
}

#[derive(Default)]
struct BrokerState {
    exchanges: HashSet<String>,
    queues: HashMap<String, Arc<MemoryQueue>>,
    /// (exchange, binding key, queue)
    bindings: Vec<(String, String, String)>,
}

#[derive(Default)]
struct MemoryQueue {
    state: Mutex<QueueState>,
    changed: Notify,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<StoredMessage>,
    unacked: HashMap<u64, StoredMessage>,
    next_tag: u64,
}

#[derive(Clone)]
struct StoredMessage {
    body: Vec<u8>,
    routing_key: String,
    headers: Vec<(String, String)>,
    expiration: Option<Duration>,
    expires_at: Option<Instant>,
    redelivered: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps half-updated in a way
    // that matters more than losing the whole in-memory broker, so recover the guard.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InMemoryTransport {
    /// A new, empty broker publishing to the configured exchange.
    pub fn new(config: &Config) -> Self {
        Self::with_exchange(config.exchange())
    }

    /// A new, empty broker publishing to `exchange`.
    pub fn with_exchange(exchange: impl Into<String>) -> Self {
        InMemoryTransport {
            broker: Arc::new(Broker::default()),
            exchange: exchange.into(),
        }
    }

    /// Another handle on the same broker that publishes to `exchange`.
    pub fn for_exchange(&self, exchange: impl Into<String>) -> Self {
        InMemoryTransport {
            broker: Arc::clone(&self.broker),
            exchange: exchange.into(),
        }
    }

    /// Messages waiting in `queue` (not counting unacknowledged ones); `None` if it does not
    /// exist.
    pub fn ready_count(&self, queue: &str) -> Option<usize> {
        let queue = lock(&self.broker.state).queues.get(queue).cloned()?;
        let mut state = lock(&queue.state);
        state.drop_expired(Instant::now());
        Some(state.ready.len())
    }

    /// Messages delivered from `queue` and not yet acknowledged; `None` if it does not exist.
    pub fn unacked_count(&self, queue: &str) -> Option<usize> {
        let queue = lock(&self.broker.state).queues.get(queue).cloned()?;
        let count = lock(&queue.state).unacked.len();
        Some(count)
    }

    /// The `(queue, binding key)` pairs bound to this transport's exchange.
    pub fn bindings(&self) -> Vec<(String, String)> {
        lock(&self.broker.state)
            .bindings
            .iter()
            .filter(|(exchange, _, _)| *exchange == self.exchange)
            .map(|(_, key, queue)| (queue.clone(), key.clone()))
            .collect()
    }

    fn check_open(&self) -> Result<()> {
        if self.broker.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn route(&self, message: &OutgoingMessage) -> Result<()> {
        self.check_open()?;
        let exchange = message.exchange_or(&self.exchange);
        let targets: Vec<Arc<MemoryQueue>> = {
            let state = lock(&self.broker.state);
            if exchange.is_empty() {
                // The default exchange: every queue is bound to it by its own name.
                state
                    .queues
                    .get(&message.routing_key)
                    .cloned()
                    .into_iter()
                    .collect()
            } else {
                if !state.exchanges.contains(exchange) {
                    return Err(Error::Refused {
                        operation: "basic.publish",
                        reason: format!("NOT_FOUND - no exchange '{exchange}'"),
                    });
                }
                let mut names: Vec<&String> = state
                    .bindings
                    .iter()
                    .filter(|(bound, key, _)| {
                        bound == exchange && crate::topic::matches(key, &message.routing_key)
                    })
                    .map(|(_, _, queue)| queue)
                    .collect();
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .filter_map(|name| state.queues.get(name).cloned())
                    .collect()
            }
        };
        if targets.is_empty() {
            return Err(Error::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: message.routing_key.clone(),
            });
        }
        let stored = StoredMessage {
            body: message.body.clone(),
            routing_key: message.routing_key.clone(),
            headers: message.headers.clone(),
            expiration: message.expiration,
            expires_at: message.expiration.map(|ttl| Instant::now() + ttl),
            redelivered: false,
        };
        for queue in targets {
            lock(&queue.state).ready.push_back(stored.clone());
            queue.changed.notify_waiters();
        }
        Ok(())
    }
}

impl QueueState {
    fn drop_expired(&mut self, now: Instant) {
        self.ready
            .retain(|message| message.expires_at.is_none_or(|at| at > now));
    }
}

impl Transport for InMemoryTransport {
    type Consumer = InMemoryConsumer;

    fn exchange(&self) -> Option<&str> {
        Some(&self.exchange)
    }

    async fn declare(&self, topology: &Topology) -> Result<()> {
        self.check_open()?;
        let mut state = lock(&self.broker.state);
        state.exchanges.insert(topology.exchange.clone());
        if let Some(replica) = &topology.replica {
            for queue in [&replica.queue, &replica.dead_letter_queue] {
                state.queues.entry(queue.clone()).or_default();
            }
        }
        for (queue, key) in topology.bindings() {
            let binding = (topology.exchange.clone(), key, queue.to_owned());
            if !state.bindings.contains(&binding) {
                state.bindings.push(binding);
            }
        }
        Ok(())
    }

    async fn publish(&self, message: &OutgoingMessage) -> Result<Confirmation> {
        match self.route(message) {
            // Like a channel error on RabbitMQ, these fail the publish itself.
            Err(error @ (Error::Closed | Error::Refused { .. })) => Err(error),
            // Like a returned mandatory message: the publish went out, the confirm reports it.
            other => Ok(Confirmation::ready(other)),
        }
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<InMemoryConsumer> {
        self.check_open()?;
        let found = lock(&self.broker.state).queues.get(queue).cloned();
        let queue = found.ok_or_else(|| Error::Refused {
            operation: "basic.consume",
            reason: format!("NOT_FOUND - no queue '{queue}'"),
        })?;
        Ok(InMemoryConsumer {
            broker: Arc::clone(&self.broker),
            queue,
            prefetch: usize::from(prefetch.max(1)),
            outstanding: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    async fn probe(&self) -> Result<()> {
        if self.broker.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    async fn close(&self) {
        self.broker.closed.store(true, Ordering::Release);
        let queues: Vec<_> = lock(&self.broker.state).queues.values().cloned().collect();
        for queue in queues {
            queue.changed.notify_waiters();
        }
    }
}

/// Deliveries from one queue of an [`InMemoryTransport`].
pub struct InMemoryConsumer {
    broker: Arc<Broker>,
    queue: Arc<MemoryQueue>,
    prefetch: usize,
    outstanding: Arc<Mutex<HashSet<u64>>>,
}

impl InMemoryConsumer {
    fn try_take(&self) -> Option<Delivery> {
        let mut outstanding = lock(&self.outstanding);
        if outstanding.len() >= self.prefetch {
            return None;
        }
        let mut state = lock(&self.queue.state);
        state.drop_expired(Instant::now());
        let message = state.ready.pop_front()?;
        let tag = state.next_tag;
        state.next_tag += 1;
        state.unacked.insert(tag, message.clone());
        outstanding.insert(tag);
        let settle = MemoryAcker {
            queue: Arc::clone(&self.queue),
            outstanding: Arc::clone(&self.outstanding),
            tag,
        };
        let mut delivery = Delivery::new(message.body, message.routing_key, settle)
            .with_redelivered(message.redelivered)
            .with_headers(message.headers);
        if let Some(ttl) = message.expiration {
            delivery = delivery.with_expiration(ttl);
        }
        Some(delivery)
    }
}

impl Consumer for InMemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let changed = self.queue.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.broker.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some(delivery) = self.try_take() {
                return Some(Ok(delivery));
            }
            changed.await;
        }
    }
}

impl Drop for InMemoryConsumer {
    fn drop(&mut self) {
        // Like a closed AMQP channel: everything this consumer holds goes back to the queue.
        let tags: Vec<u64> = lock(&self.outstanding).drain().collect();
        if tags.is_empty() {
            return;
        }
        let mut state = lock(&self.queue.state);
        let mut returned: Vec<(u64, StoredMessage)> = tags
            .into_iter()
            .filter_map(|tag| state.unacked.remove(&tag).map(|message| (tag, message)))
            .collect();
        returned.sort_by_key(|(tag, _)| std::cmp::Reverse(*tag));
        for (_, mut message) in returned {
            message.redelivered = true;
            state.ready.push_front(message);
        }
        drop(state);
        self.queue.changed.notify_waiters();
    }
}

/// Settles one in-memory delivery.
struct MemoryAcker {
    queue: Arc<MemoryQueue>,
    outstanding: Arc<Mutex<HashSet<u64>>>,
    tag: u64,
}

impl MemoryAcker {
    fn settle(&self) -> Result<StoredMessage> {
        if !lock(&self.outstanding).remove(&self.tag) {
            return Err(Error::ConnectionLost {
                operation: "basic.ack",
                reason: "the consumer of this delivery is gone; it was returned to the queue"
                    .to_owned(),
            });
        }
        let message = lock(&self.queue.state).unacked.remove(&self.tag);
        self.queue.changed.notify_waiters();
        message.ok_or(Error::ConnectionLost {
            operation: "basic.ack",
            reason: "unknown delivery tag".to_owned(),
        })
    }

    fn reject_now(&self, requeue: bool) -> Result<()> {
        let mut message = self.settle()?;
        if requeue {
            message.redelivered = true;
            lock(&self.queue.state).ready.push_front(message);
            self.queue.changed.notify_waiters();
        }
        Ok(())
    }
}

impl Settle for MemoryAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(std::future::ready(self.settle().map(drop)))
    }

    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        Box::pin(std::future::ready(self.reject_now(requeue)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::direct_routing_key;

    async fn replica(queue: &str, ids: &[&str]) -> (Config, InMemoryTransport) {
        let config = Config::builder().queue(queue).build().unwrap();
        let transport = InMemoryTransport::new(&config);
        transport
            .declare(&Topology::from_config(&config, ids.iter().copied()))
            .await
            .unwrap();
        (config, transport)
    }

    async fn next_now(consumer: &mut InMemoryConsumer) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_millis(50), consumer.next())
            .await
            .ok()
            .flatten()
            .map(|d| d.unwrap())
    }

    #[tokio::test]
    async fn broadcasts_reach_every_bound_queue_and_direct_keys_only_theirs() {
        let (_, a) = replica("a", &["author"]).await;
        let b_config = Config::builder().queue("b").build().unwrap();
        a.declare(&Topology::from_config(&b_config, ["author"]))
            .await
            .unwrap();
        a.publish_confirmed(&OutgoingMessage::new("author", "all"))
            .await
            .unwrap();
        a.publish_confirmed(&OutgoingMessage::new(
            direct_routing_key("b", "author"),
            "b only",
        ))
        .await
        .unwrap();
        assert_eq!(a.ready_count("a"), Some(1));
        assert_eq!(a.ready_count("b"), Some(2));
        assert_eq!(a.ready_count("dead_letter_a"), Some(0));
    }

    #[tokio::test]
    async fn unroutable_publish_is_reported_by_its_confirmation() {
        let (_, transport) = replica("q", &["author"]).await;
        let confirmation = transport
            .publish(&OutgoingMessage::new("book", "nobody"))
            .await
            .expect("handed over");
        assert!(matches!(confirmation.await, Err(Error::Unroutable { .. })));
    }

    #[tokio::test]
    async fn publishing_to_an_undeclared_exchange_is_refused() {
        let transport = InMemoryTransport::with_exchange("nowhere");
        let result = transport
            .publish(&OutgoingMessage::new("author", "x"))
            .await;
        assert!(matches!(result, Err(Error::Refused { .. })));
    }

    #[tokio::test]
    async fn prefetch_limits_unacknowledged_deliveries() {
        let (_, transport) = replica("q", &["author"]).await;
        for i in 0..5 {
            transport
                .publish_confirmed(&OutgoingMessage::new("author", i.to_string()))
                .await
                .unwrap();
        }
        let mut consumer = transport.consume("q", 2).await.unwrap();
        let first = next_now(&mut consumer).await.unwrap();
        let _second = next_now(&mut consumer).await.unwrap();
        assert!(
            next_now(&mut consumer).await.is_none(),
            "prefetch of 2 reached"
        );
        first.ack().await.unwrap();
        let third = next_now(&mut consumer).await.unwrap();
        assert_eq!(third.body(), b"2");
        assert_eq!(transport.unacked_count("q"), Some(2));
    }

    #[tokio::test]
    async fn dropped_consumer_returns_its_unacked_messages_in_order_marked_redelivered() {
        let (_, transport) = replica("q", &["author"]).await;
        for i in 0..3 {
            transport
                .publish_confirmed(&OutgoingMessage::new("author", i.to_string()))
                .await
                .unwrap();
        }
        let mut consumer = transport.consume("q", 10).await.unwrap();
        let held: Vec<Delivery> = vec![
            next_now(&mut consumer).await.unwrap(),
            next_now(&mut consumer).await.unwrap(),
        ];
        drop(consumer);
        assert_eq!(transport.ready_count("q"), Some(3));
        for delivery in held {
            assert!(matches!(
                delivery.ack().await,
                Err(Error::ConnectionLost { .. })
            ));
        }
        let mut consumer = transport.consume("q", 10).await.unwrap();
        for (i, redelivered) in [(0, true), (1, true), (2, false)] {
            let d = next_now(&mut consumer).await.unwrap();
            assert_eq!(d.body(), i.to_string().as_bytes());
            assert_eq!(d.redelivered(), redelivered);
            d.ack().await.unwrap();
        }
        assert_eq!(transport.ready_count("q"), Some(0));
        assert_eq!(transport.unacked_count("q"), Some(0));
    }

    #[tokio::test]
    async fn reject_requeues_or_drops() {
        let (_, transport) = replica("q", &["author"]).await;
        for body in ["again", "gone"] {
            transport
                .publish_confirmed(&OutgoingMessage::new("author", body))
                .await
                .unwrap();
        }
        let mut consumer = transport.consume("q", 10).await.unwrap();
        next_now(&mut consumer)
            .await
            .unwrap()
            .reject(true)
            .await
            .unwrap();
        let again = next_now(&mut consumer).await.unwrap();
        assert_eq!(again.body(), b"again");
        assert!(again.redelivered());
        again.ack().await.unwrap();
        next_now(&mut consumer)
            .await
            .unwrap()
            .reject(false)
            .await
            .unwrap();
        assert!(next_now(&mut consumer).await.is_none());
        assert_eq!(transport.unacked_count("q"), Some(0));
    }

    #[tokio::test]
    async fn expired_messages_are_never_delivered() {
        let (_, transport) = replica("q", &["author"]).await;
        let short =
            OutgoingMessage::new("author", "short").with_expiration(Duration::from_millis(20));
        transport.publish_confirmed(&short).await.unwrap();
        transport
            .publish_confirmed(&OutgoingMessage::new("author", "long"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut consumer = transport.consume("q", 10).await.unwrap();
        assert_eq!(next_now(&mut consumer).await.unwrap().body(), b"long");
        assert!(next_now(&mut consumer).await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_publish_and_ends_on_close() {
        let (_, transport) = replica("q", &["author"]).await;
        let mut consumer = transport.consume("q", 10).await.unwrap();
        let publisher = transport.clone();
        let waiter = tokio::spawn(async move {
            let first = consumer.next().await.map(|d| d.unwrap().body().to_vec());
            let after_close = consumer.next().await.is_none();
            (first, after_close)
        });
        tokio::task::yield_now().await;
        publisher
            .publish_confirmed(&OutgoingMessage::new("author", "wake"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        publisher.close().await;
        let (first, ended) = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.as_deref(), Some(&b"wake"[..]));
        assert!(ended);
        assert!(matches!(
            publisher
                .publish(&OutgoingMessage::new("author", "late"))
                .await,
            Err(Error::Closed)
        ));
    }

    #[tokio::test]
    async fn the_default_exchange_routes_by_queue_name() {
        let (_, transport) = replica("q", &["author"]).await;
        transport
            .publish_confirmed(&OutgoingMessage::to_queue("dead_letter_q", "unbound"))
            .await
            .unwrap();
        assert_eq!(transport.ready_count("dead_letter_q"), Some(1));
        assert_eq!(transport.ready_count("q"), Some(0));
        let confirmation = transport
            .publish(&OutgoingMessage::to_queue("no_such_queue", "lost"))
            .await
            .expect("handed over");
        assert!(matches!(
            confirmation.await,
            Err(Error::Unroutable { exchange, .. }) if exchange.is_empty()
        ));
    }

    #[tokio::test]
    async fn headers_and_expiration_travel_with_the_message() {
        let (_, transport) = replica("q", &["author"]).await;
        let message = OutgoingMessage::new("author", "h")
            .with_header("x-reason", "bad")
            .with_expiration(Duration::from_secs(60));
        transport.publish_confirmed(&message).await.unwrap();
        let mut consumer = transport.consume("q", 1).await.unwrap();
        let d = next_now(&mut consumer).await.unwrap();
        assert_eq!(d.header("x-reason"), Some("bad"));
        assert_eq!(d.expiration(), Some(Duration::from_secs(60)));
    }
}
