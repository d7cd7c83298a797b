//! A NATS JetStream transport for the CQRS replication layer: [`NatsTransport`] implements
//! cqrs-core's [`Transport`](cqrs_core::Transport), [`Consumer`](cqrs_core::Consumer) and
//! [`Settle`](cqrs_core::Settle) from its public items only, so the outbox relay, the consumer
//! runtime and the replica run over NATS exactly as over RabbitMQ.
//!
//! # How the RabbitMQ topology maps onto JetStream
//!
//! - **Exchange → stream.** Each exchange is one durable (file storage) stream named
//!   [`stream_name`]`(exchange)` (`cqrs_<exchange>`), holding the subjects `<exchange>.>`, with
//!   *interest* retention: a message is kept until every consumer whose filter matches it has
//!   acknowledged (or terminated) it, as a RabbitMQ message is kept until every bound queue has
//!   it acknowledged.
//! - **Routing key → subject.** A message published with routing key `rk` to exchange `ex` has
//!   the subject `ex.rk` ([`subject`]); routing keys keep their dots (`cqrs.replica.author` on
//!   `cqrs` is `cqrs.cqrs.replica.author`). A publish through the default exchange
//!   (`OutgoingMessage::exchange == Some("")`, routing key = a queue's name) goes to
//!   `ex._queue.<queue>` ([`queue_subject`]) in the configured exchange's stream. So routing
//!   keys must not start with `_queue.`, and exchange names must be valid subject tokens.
//! - **Queue → durable pull consumer.** The replica queue and its dead-letter queue are each a
//!   durable consumer named after the queue ([`consumer_name`]) whose filter subjects are the
//!   subjects of its [`Topology::bindings`](cqrs_core::Topology::bindings) plus its own
//!   `ex._queue.<queue>`. Declaring again adds filter subjects (bindings are additive, as in
//!   RabbitMQ). Explicit acknowledgement, unlimited deliveries.
//!
//! # Guarantees
//!
//! - **Confirms.** A [`Confirmation`](cqrs_core::Confirmation) resolves `Ok` only after the
//!   stream's PubAck (the message is stored). A lost connection or a publish timeout is
//!   [`Error::ConnectionLost`](cqrs_core::Error::ConnectionLost), a JetStream error reply
//!   [`Error::Nacked`](cqrs_core::Error::Nacked) (both retryable).
//! - **Deduplication.** Every publish carries `Nats-Msg-Id` = [`message_id`]: a hash of the
//!   subject, the body and the headers. The same message published again within the stream's
//!   duplicate window ([`NatsOptions::duplicate_window`], 2 minutes by default) is stored once.
//! - **Unroutable.** Before publishing, the transport checks that some consumer of the stream
//!   has a filter matching the subject (the filters are cached per stream and re-read from the
//!   server on a miss); when none has, the confirmation is
//!   [`Error::Unroutable`](cqrs_core::Error::Unroutable) and nothing is published. A stream that
//!   does not exist (an explicit exchange nobody declared) is unroutable too. A consumer deleted
//!   behind the transport's back is noticed only on the next miss: until then publishes to it
//!   are accepted and dropped by interest retention.
//! - **Expiration.** A message with an expiration carries it in the `Cqrs-Expiration-Ms` header
//!   (given back by [`Delivery::expiration`](cqrs_core::Delivery::expiration)). On a server
//!   with per-message TTL (2.11+, the stream has `allow_msg_ttl`) it also carries `Nats-TTL`
//!   (whole seconds, rounded up) and the server removes it; in any case the consumer drops
//!   (terminates) a delivery whose publish time plus expiration has passed, so sub-second
//!   expirations hold too.
//! - **Order, at least once, prefetch.** One publisher's messages are stored in call order and
//!   delivered in stream order. A delivery neither acknowledged nor rejected is nak'ed when its
//!   consumer is dropped or the transport closed (so it comes again at once, `redelivered`
//!   set: JetStream's delivery count above 1), and by the server after `ack_wait` when the
//!   connection is gone. `prefetch` is the consumer's `max_ack_pending`: it is a property of
//!   the durable consumer, so shared by every process consuming the same queue (RabbitMQ's is
//!   per consumer).
//! - **Reconnection.** async-nats reconnects by itself; a consumer whose pull stream fails
//!   (missed heartbeats, a restarted server, a deleted consumer) makes a new one, declaring the
//!   topologies declared through this transport again if the consumer is gone.
//! - Needs nats-server 2.10+ (consumers with several filter subjects).
//!
//! ```no_run
//! # async fn run() -> cqrs_core::Result<()> {
//! use cqrs_core::{Config, Consumer, OutgoingMessage, Topology, Transport};
//! use cqrs_nats::{NatsOptions, NatsTransport};
//!
//! let config = Config::builder().queue("replica").build()?;
//! let transport = NatsTransport::connect(NatsOptions::new("nats://127.0.0.1:4222")).await?;
//! transport.declare(&Topology::from_config(&config, ["author"])).await?;
//! transport
//!     .publish_confirmed(&OutgoingMessage::new("author", br#"{"signal_type":"SAVE"}"#.to_vec()))
//!     .await?;
//! let mut consumer = transport.consume("replica", 10).await?;
//! if let Some(delivery) = consumer.next().await {
//!     delivery?.ack().await?;
//! }
//! transport.close().await;
//! # Ok(())
//! # }
//! ```

mod consumer;
mod subject;
mod transport;

use std::time::Duration;

pub use consumer::NatsConsumer;
pub use subject::{
    DEFAULT_EXCHANGE_TOKEN, consumer_name, matches, message_id, queue_subject, routing_key,
    stream_name, stream_subjects, subject,
};
pub use transport::NatsTransport;

/// The header that carries a message's expiration, in milliseconds.
pub const EXPIRATION_HEADER: &str = "Cqrs-Expiration-Ms";

/// How to reach NATS and how to lay out the streams: the URL, the exchange and JetStream
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    url: String,
    exchange: String,
    ack_wait: Duration,
    duplicate_window: Duration,
    connect_timeout: Duration,
    publish_timeout: Duration,
}

impl NatsOptions {
    /// Options for the server(s) at `url` (`nats://host:port`, comma separated for several),
    /// the exchange `cqrs`, `ack_wait` 30 s, duplicate window 2 min, connect timeout 5 s,
    /// publish timeout 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            exchange: "cqrs".to_owned(),
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
        }
    }

    /// Options from the environment: the URL from `CQRS_NATS_URL` (default
    /// `nats://127.0.0.1:4222`), the exchange from `CQRS_EXCHANGE` (default `cqrs`).
    pub fn from_env() -> Self {
        let url =
            std::env::var("CQRS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let options = NatsOptions::new(url);
        match std::env::var("CQRS_EXCHANGE") {
            Ok(exchange) if !exchange.is_empty() => options.exchange(exchange),
            _ => options,
        }
    }

    /// The exchange of `config` (`CQRS_EXCHANGE`) instead of `cqrs`.
    pub fn with_config(self, config: &cqrs_core::Config) -> Self {
        self.exchange(config.exchange())
    }

    /// The exchange (so the stream and the subject prefix) publishes go to.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// How long the server waits for a delivery's acknowledgement before delivering it again
    /// (what brings back the deliveries of a consumer whose connection died).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The stream's duplicate window: how long a `Nats-Msg-Id` is remembered.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How long an operation waits for a connection before failing with
    /// [`Error::Connect`](cqrs_core::Error::Connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a confirmation waits for its PubAck before failing with
    /// [`Error::ConnectionLost`](cqrs_core::Error::ConnectionLost).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// The URL, its password masked.
    pub fn redacted_url(&self) -> String {
        self.url
            .split(',')
            .map(|url| match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://***@{}", &url[..scheme], &url[at + 1..])
                }
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The configured exchange.
    pub fn exchange_name(&self) -> &str {
        &self.exchange
    }
}
