//! The RabbitMQ transport on lapin: publisher confirms, mandatory publishing, reconnection.

mod browse;
mod connect;
mod consumer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{Config, QueueType};
use crate::error::{Error, Result};
use crate::transport::{Confirmation, OutgoingMessage, Settle, Topology, Transport};

pub use browse::QueueBrowser;
pub use consumer::RabbitMqConsumer;

/// The RabbitMQ transport.
///
/// - Topology as docs/WIRE.md: a durable topic exchange, durable replica and dead-letter queues
///   (classic, or quorum by configuration), three bindings per `cqrs_id`.
/// - Every publish is persistent, mandatory, `text/plain`, on a channel with publisher confirms:
///   a [`Confirmation`] resolves to `Ok` only once the broker has taken responsibility, and to
///   [`Error::Unroutable`] when no queue is bound to the routing key.
/// - Connections are made lazily and re-made after the broker drops them, trying the configured
///   URLs in turn with exponential backoff and jitter. Publishing waits up to
///   `connect_timeout` for a connection, then fails with a retryable [`Error::Connect`].
///   Consumers reconnect by themselves for as long as the transport is open.
/// - Publishing and consuming use separate connections, so broker flow control on publishers
///   never stalls consumers.
/// - Passwords are never logged: URLs appear only in their redacted form.
/// - Connections run on a runtime of the library's own (one thread, `cqrs-amqp-io`), not on
///   the caller's: an application that drops its Tokio runtime with a transport still open
///   prints nothing and its connections still close cleanly. [`close`](Transport::close) (or
///   dropping the last handle) closes them; call `close` where the application ends, to let
///   confirms in flight arrive.
///
/// ```no_run
/// # async fn run() -> cqrs_core::Result<()> {
/// use cqrs_core::{Config, OutgoingMessage, RabbitMqTransport, Topology, Transport};
///
/// let config = Config::from_env()?;
/// let transport = RabbitMqTransport::new(config.clone());
/// transport.declare(&Topology::from_config(&config, ["account"])).await?;
/// transport
///     .publish_confirmed(&OutgoingMessage::new("account", br#"{"signal_type":"SAVE"}"#.to_vec()))
///     .await?;
/// transport.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RabbitMqTransport {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: Config,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    publisher: Mutex<PublisherState>,
    /// Every topology declared through this transport, declared again by consumers when they
    /// subscribe anew (a broker that lost its data, a queue deleted by an operator).
    topologies: std::sync::Mutex<Vec<Topology>>,
}

struct PublisherState {
    live: Option<PublisherLink>,
    cursor: usize,
    backoff: Backoff,
}

struct PublisherLink {
    connection: Connection,
    channel: Channel,
}

impl Shared {
    /// Records a declared topology (once).
    fn remember(&self, topology: &Topology) {
        let mut known = match self.topologies.lock() {
            Ok(known) => known,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !known.contains(topology) {
            known.push(topology.clone());
        }
    }

    /// The topologies declared so far.
    fn declared(&self) -> Vec<Topology> {
        match self.topologies.lock() {
            Ok(known) => known.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Declares again, on `connection`, every topology declared through the transport. Failures
/// are logged: subscribing reports what matters.
pub(crate) async fn redeclare(shared: &Shared, connection: &Connection) {
    for topology in shared.declared() {
        let result = match connection.create_channel().await {
            Ok(channel) => {
                let result = declare_on(&channel, &topology).await;
                if channel.status().connected() {
                    let _ = channel.close(200, "topology declared".into()).await;
                }
                result
            }
            Err(error) => Err(map_lapin("channel.open", error)),
        };
        if let Err(error) = result {
            tracing::warn!(exchange = %topology.exchange, %error, "cannot declare the topology again");
        }
    }
}

/// The last handle of a transport that was not [`close`](Transport::close)d closes its
/// publishing connection (consumers close theirs as their tasks end), on the runtime the
/// connections run on, so that the broker sees a clean close rather than a dropped socket,
/// whether or not the application's runtime is still there.
impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(link) = self.publisher.get_mut().live.take() {
            connect::close_in_background(link.connection);
        }
    }
}

impl std::fmt::Debug for RabbitMqTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqTransport")
            .field("urls", &self.shared.config.amqp_urls())
            .field("exchange", &self.shared.config.exchange())
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl RabbitMqTransport {
    /// A transport for this configuration. No connection is made until the first operation.
    pub fn new(config: Config) -> Self {
        let (shutdown, _) = watch::channel(false);
        let backoff = Backoff::new(config.reconnect_min_delay(), config.reconnect_max_delay());
        RabbitMqTransport {
            shared: Arc::new(Shared {
                config,
                closed: AtomicBool::new(false),
                shutdown,
                publisher: Mutex::new(PublisherState {
                    live: None,
                    cursor: 0,
                    backoff,
                }),
                topologies: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    /// A transport that has connected once already, to report a wrong URL or credentials at
    /// start-up rather than at the first publish.
    pub async fn connect(config: Config) -> Result<Self> {
        let transport = RabbitMqTransport::new(config);
        transport.publish_channel().await?;
        Ok(transport)
    }

    /// The configuration this transport was made with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The publishing channel, connecting (with backoff, up to `connect_timeout`) if needed.
    async fn publish_channel(&self) -> Result<Channel> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.connect_timeout();
        let mut state = tokio::time::timeout_at(deadline, shared.publisher.lock())
            .await
            .map_err(|_| Error::Connect {
                url: connect::url_list(&shared.config),
                reason: "timed out waiting for another task's reconnection".to_owned(),
            })?;
        if let Some(link) = &state.live {
            if link.channel.status().connected() && link.connection.status().connected() {
                return Ok(link.channel.clone());
            }
            tracing::info!("publishing connection to RabbitMQ lost, reconnecting");
        }
        if let Some(old) = state.live.take() {
            connect::close_quietly(&old.connection).await;
        }
        let PublisherState {
            cursor, backoff, ..
        } = &mut *state;
        let connection =
            connect::connect(shared, "publisher", cursor, backoff, Some(deadline)).await?;
        let channel = open_confirm_channel(&connection).await;
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => {
                connect::close_quietly(&connection).await;
                return Err(error);
            }
        };
        state.live = Some(PublisherLink {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// A new channel on the publishing connection (connecting first if needed), for
    /// operations that may close their channel, such as declarations.
    async fn side_channel(&self) -> Result<Channel> {
        self.publish_channel().await?;
        let state = self.shared.publisher.lock().await;
        let link = state.live.as_ref().ok_or_else(|| Error::ConnectionLost {
            operation: "channel.open",
            reason: "the connection was lost while opening a channel".to_owned(),
        })?;
        link.connection
            .create_channel()
            .await
            .map_err(|e| map_lapin("channel.open", e))
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

/// Forgets the publishing link if it is still `channel` (closing its connection), so the next
/// publish connects anew.
async fn forget_publish_link(shared: &Shared, channel: &Channel) {
    let mut state = shared.publisher.lock().await;
    if state
        .live
        .as_ref()
        .is_some_and(|link| link.channel.id() == channel.id())
        && let Some(old) = state.live.take()
    {
        connect::close_quietly(&old.connection).await;
    }
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| map_lapin("channel.open", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| map_lapin("confirm.select", e))?;
    Ok(channel)
}

pub(crate) fn short(value: &str, what: &'static str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|_| Error::InvalidValue {
        key: what.to_owned(),
        reason: format!(
            "{} bytes long; AMQP names and routing keys are at most 255 bytes",
            value.len()
        ),
    })
}

fn properties(message: &OutgoingMessage) -> Result<BasicProperties> {
    let mut properties = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2);
    if let Some(ttl) = message.expiration {
        properties = properties.with_expiration(ttl.as_millis().to_string().into());
    }
    if !message.headers.is_empty() {
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                short(name, "header name")?,
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        properties = properties.with_headers(headers);
    }
    Ok(properties)
}

impl Transport for RabbitMqTransport {
    type Consumer = RabbitMqConsumer;

    /// Uses the publishing connection: reuses it while it is up, else connects (trying the
    /// URLs in turn, up to `connect_timeout`), as the next publish would.
    async fn probe(&self) -> Result<()> {
        self.check_open()?;
        self.publish_channel().await.map(drop)
    }

    fn exchange(&self) -> Option<&str> {
        Some(self.shared.config.exchange())
    }

    async fn declare(&self, topology: &Topology) -> Result<()> {
        self.check_open()?;
        // Declarations that fail close their channel: use a channel of their own.
        let channel = self.side_channel().await?;
        let result = declare_on(&channel, topology).await;
        if channel.status().connected() {
            let _ = channel.close(200, "topology declared".into()).await;
        }
        if result.is_ok() {
            self.shared.remember(topology);
        }
        result
    }

    async fn publish(&self, message: &OutgoingMessage) -> Result<Confirmation> {
        self.check_open()?;
        let exchange = short(
            message.exchange_or(self.shared.config.exchange()),
            "exchange",
        )?;
        let routing_key = short(&message.routing_key, "routing_key")?;
        let properties = properties(message)?;
        let channel = self.publish_channel().await?;
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let published = channel
            .basic_publish(
                exchange.clone(),
                routing_key.clone(),
                options,
                &message.body,
                properties,
            )
            .await;
        let confirm = match published {
            Ok(confirm) => confirm,
            Err(error) => {
                let error = map_lapin("basic.publish", error);
                if error.is_retryable() {
                    forget_publish_link(&self.shared, &channel).await;
                }
                return Err(error);
            }
        };
        let shared = Arc::clone(&self.shared);
        Ok(Confirmation::new(async move {
            match confirm.await {
                Ok(lapin::Confirmation::Ack(None)) => Ok(()),
                Ok(lapin::Confirmation::Ack(Some(_returned))) => Err(Error::Unroutable {
                    exchange: exchange.to_string(),
                    routing_key: routing_key.to_string(),
                }),
                Ok(lapin::Confirmation::Nack(_)) => {
                    // Seen in tests/cluster (RabbitMQ 3.10): after a quorum queue's leader was
                    // killed, a channel opened meanwhile went on being nacked for 7-8 s, while
                    // a new channel published at once. So the next publish takes a new
                    // connection and channel.
                    tracing::warn!(
                        exchange = %exchange,
                        routing_key = %routing_key,
                        "RabbitMQ nacked a publish; the next publish opens a new connection"
                    );
                    forget_publish_link(&shared, &channel).await;
                    Err(Error::Nacked {
                        exchange: exchange.to_string(),
                        routing_key: routing_key.to_string(),
                    })
                }
                Ok(lapin::Confirmation::NotRequested) => Err(Error::Nacked {
                    exchange: exchange.to_string(),
                    routing_key: routing_key.to_string(),
                }),
                Err(error) => Err(map_lapin("publisher confirm", error)),
            }
        }))
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<RabbitMqConsumer> {
        self.check_open()?;
        short(queue, "queue")?;
        consumer::start(Arc::clone(&self.shared), queue.to_owned(), prefetch).await
    }

    async fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.shutdown.send_replace(true);
        let mut state = self.shared.publisher.lock().await;
        if let Some(link) = state.live.take() {
            if link.channel.status().connected() {
                // Let confirms in flight arrive before the connection goes.
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), link.channel.wait_for_confirms())
                        .await;
            }
            connect::close_quietly(&link.connection).await;
        }
        tracing::info!("RabbitMQ transport closed");
    }
}

async fn declare_on(channel: &Channel, topology: &Topology) -> Result<()> {
    let exchange = short(&topology.exchange, "exchange")?;
    channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_lapin("exchange.declare", e))?;
    let Some(replica) = &topology.replica else {
        return Ok(());
    };
    let mut arguments = FieldTable::default();
    if replica.queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(QueueType::Quorum.as_str().into()),
        );
    }
    for queue in [&replica.queue, &replica.dead_letter_queue] {
        channel
            .queue_declare(
                short(queue, "queue")?,
                QueueDeclareOptions {
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    ..QueueDeclareOptions::default()
                },
                arguments.clone(),
            )
            .await
            .map_err(|e| map_lapin("queue.declare", e))?;
    }
    for (queue, routing_key) in topology.bindings() {
        channel
            .queue_bind(
                short(queue, "queue")?,
                exchange.clone(),
                short(&routing_key, "routing_key")?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map_lapin("queue.bind", e))?;
    }
    tracing::info!(
        exchange = %topology.exchange,
        queue = %replica.queue,
        dead_letter_queue = %replica.dead_letter_queue,
        queue_type = replica.queue_type.as_str(),
        cqrs_ids = replica.cqrs_ids.len(),
        "RabbitMQ topology declared"
    );
    Ok(())
}

/// Sorts a lapin error into ours: refusals of the broker are final, everything else means the
/// connection or channel is gone and the transport will reconnect.
pub(crate) fn map_lapin(operation: &'static str, error: lapin::Error) -> Error {
    if let lapin::ErrorKind::ProtocolError(amqp) = error.kind() {
        let refused = matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::RESOURCELOCKED
                    | AMQPSoftError::CONTENTTOOLARGE
            ) | AMQPErrorKind::Hard(
                AMQPHardError::NOTALLOWED
                    | AMQPHardError::COMMANDINVALID
                    | AMQPHardError::SYNTAXERROR
                    | AMQPHardError::NOTIMPLEMENTED
            )
        );
        if refused {
            return Error::Refused {
                operation,
                reason: amqp.to_string(),
            };
        }
    }
    Error::ConnectionLost {
        operation,
        reason: error.to_string(),
    }
}

/// Settles one RabbitMQ delivery on the channel it came from.
pub(crate) struct RabbitSettle(pub(crate) lapin::Acker);

/// How long settling one delivery may take: an acknowledgement on a connection that died
/// without lapin noticing could otherwise wait for ever and hold its worker (and the runtime's
/// shutdown) with it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Settle for RabbitSettle {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { bounded("basic.ack", self.0.ack(BasicAckOptions::default())).await })
    }

    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            bounded(
                "basic.reject",
                self.0.reject(BasicRejectOptions { requeue }),
            )
            .await
        })
    }
}

async fn bounded(
    operation: &'static str,
    settle: impl Future<Output = lapin::Result<bool>>,
) -> Result<()> {
    match tokio::time::timeout(SETTLE_TIMEOUT, settle).await {
        Ok(result) => settled(operation, result),
        Err(_) => Err(Error::ConnectionLost {
            operation,
            reason: format!(
                "not sent within {SETTLE_TIMEOUT:?}; the broker delivers it again once its \
                 channel is gone"
            ),
        }),
    }
}

fn settled(operation: &'static str, result: lapin::Result<bool>) -> Result<()> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::ConnectionLost {
            operation,
            reason: "the channel of this delivery is closed (or it was settled already); the broker delivers it again".to_owned(),
        }),
        Err(error) => Err(map_lapin(operation, error)),
    }
}
