//! [`NatsTransport`]: declare, publish with PubAck confirms, probe, close.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer::pull, context::PublishErrorKind, stream};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use cqrs_core::{Confirmation, Error, OutgoingMessage, Result, Topology, Transport};
use futures_util::TryStreamExt;
use tokio::sync::watch;

use crate::consumer::{Inflight, NatsConsumer};
use crate::subject::{
    consumer_name, matches, message_id, queue_subject, stream_name, stream_subjects, subject,
};
use crate::{EXPIRATION_HEADER, NatsOptions};

/// The NATS JetStream transport (see the [crate documentation](crate) for the mapping and the
/// guarantees). A cheap-to-clone handle over one NATS connection.
#[derive(Clone)]
pub struct NatsTransport {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) options: NatsOptions,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) closed: AtomicBool,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Every topology declared through this transport, declared again by a consumer whose
    /// durable consumer disappeared (a server that lost its store).
    topologies: std::sync::Mutex<Vec<Topology>>,
    /// The filter subjects of each stream's consumers, by stream name: the unroutable check.
    routes: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Deliveries handed out and not yet settled, of every consumer.
    pub(crate) inflight: Inflight,
    pub(crate) next_id: AtomicU64,
}

impl NatsTransport {
    /// Connects to the server(s) of `options`. The connection is made in the background and
    /// re-made after it is lost: this fails only on an invalid URL; operations wait up to
    /// the connect timeout for a connection.
    pub async fn connect(options: NatsOptions) -> Result<Self> {
        let url = options.redacted_url();
        let client = async_nats::ConnectOptions::new()
            .name("cqrs-nats")
            .connection_timeout(options.connect_timeout)
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let url = url.clone();
                async move { tracing::info!(%url, %event, "NATS connection event") }
            })
            .connect(options.url.as_str())
            .await
            .map_err(|e| Error::Config {
                setting: "CQRS_NATS_URL",
                reason: format!("cannot use {}: {e}", options.redacted_url()),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .max_ack_inflight(16_384)
            .build(client.clone());
        let (shutdown, _) = watch::channel(false);
        Ok(NatsTransport {
            shared: Arc::new(Shared {
                options,
                client,
                js,
                closed: AtomicBool::new(false),
                shutdown,
                topologies: std::sync::Mutex::new(Vec::new()),
                routes: std::sync::Mutex::new(HashMap::new()),
                inflight: Inflight::default(),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The options this transport was made with.
    pub fn options(&self) -> &NatsOptions {
        &self.shared.options
    }

    /// The underlying async-nats client (for tests and tools: inspecting streams, raw
    /// publishes).
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }
}

impl Shared {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Waits up to the connect timeout for a live connection whose server has introduced
    /// itself: the client reports `Connected` a moment before it keeps the server's `INFO`,
    /// and until then the server's version (which decides the features used) reads empty.
    pub(crate) async fn wait_connected(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.options.connect_timeout;
        loop {
            self.check_open()?;
            if self.client.connection_state() == State::Connected
                && !self.client.server_info().version.is_empty()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Connect {
                    url: self.options.redacted_url(),
                    reason: format!(
                        "no connection to NATS within {:?}",
                        self.options.connect_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server keeps per-message TTLs (2.11+), and whether it has consumers with
    /// several filter subjects (2.10+).
    fn server_features(&self) -> (bool, bool) {
        let version = self.client.server_info().version;
        let mut parts = version
            .trim_start_matches('v')
            .split(['.', '-'])
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        let at_least = |ma: u32, mi: u32| (major, minor) >= (ma, mi);
        (at_least(2, 11), at_least(2, 10))
    }

    async fn ensure_stream(&self, exchange: &str) -> Result<stream::Stream> {
        let (ttl, _) = self.server_features();
        let config = stream::Config {
            name: stream_name(exchange),
            subjects: vec![stream_subjects(exchange)],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            duplicate_window: self.options.duplicate_window,
            allow_message_ttl: ttl,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| management_error("stream.create", e))
    }

    /// Creates the durable consumer of `queue`, or adds `filters` to the one that exists.
    async fn ensure_consumer(
        &self,
        stream: &stream::Stream,
        queue: &str,
        filters: BTreeSet<String>,
    ) -> Result<()> {
        let name = consumer_name(queue);
        let existing = match stream.get_consumer::<pull::Config>(&name).await {
            Ok(consumer) => Some(consumer.cached_info().config.clone()),
            Err(e) if e.to_string().contains("not found") => None,
            Err(e) => return Err(management_error("consumer.info", e)),
        };
        let mut wanted = filters;
        let max_ack_pending = match &existing {
            Some(config) => {
                let had: BTreeSet<String> = all_filters(config).into_iter().collect();
                if wanted.is_subset(&had) {
                    return Ok(());
                }
                wanted.extend(had);
                config.max_ack_pending
            }
            None => 1_000,
        };
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subjects: wanted.into_iter().collect(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            max_deliver: -1,
            max_ack_pending,
            ..Default::default()
        };
        if existing.is_some() {
            stream
                .update_consumer(config)
                .await
                .map_err(|e| management_error("consumer.update", e))?;
        } else {
            stream
                .create_consumer(config)
                .await
                .map_err(|e| management_error("consumer.create", e))?;
        }
        tracing::info!(queue, consumer = %name, "declared the NATS consumer of the queue");
        Ok(())
    }

    pub(crate) async fn declare(&self, topology: &Topology) -> Result<()> {
        self.check_open()?;
        self.wait_connected().await?;
        let (_, several_filters) = self.server_features();
        if !several_filters {
            return Err(Error::Refused {
                operation: "consumer.create",
                reason: format!(
                    "nats-server {} has no consumers with several filter subjects; 2.10 or later is needed",
                    self.client.server_info().version
                ),
            });
        }
        let exchange = topology.exchange.as_str();
        let stream = self.ensure_stream(exchange).await?;
        if let Some(replica) = &topology.replica {
            let mut by_queue: HashMap<&str, BTreeSet<String>> = HashMap::new();
            for queue in [&replica.queue, &replica.dead_letter_queue] {
                by_queue
                    .entry(queue.as_str())
                    .or_default()
                    .insert(queue_subject(exchange, queue));
            }
            for (queue, routing_key) in topology.bindings() {
                by_queue
                    .entry(queue)
                    .or_default()
                    .insert(subject(exchange, &routing_key));
            }
            let mut queues: Vec<_> = by_queue.into_iter().collect();
            queues.sort();
            for (queue, filters) in queues {
                self.ensure_consumer(&stream, queue, filters).await?;
            }
        }
        if let Ok(mut topologies) = self.topologies.lock()
            && !topologies.contains(topology)
        {
            topologies.push(topology.clone());
        }
        self.refresh_routes(&stream_name(exchange)).await
    }

    /// Declares again every topology that has `queue` (a consumer found its durable consumer
    /// gone).
    pub(crate) async fn redeclare(&self, queue: &str) -> Result<bool> {
        let topologies: Vec<Topology> = match self.topologies.lock() {
            Ok(topologies) => topologies.clone(),
            Err(_) => Vec::new(),
        };
        let mut found = false;
        for topology in topologies.iter().filter(|t| {
            t.replica
                .as_ref()
                .is_some_and(|r| r.queue == queue || r.dead_letter_queue == queue)
        }) {
            self.declare(topology).await?;
            found = true;
        }
        Ok(found)
    }

    /// Reads the filter subjects of the consumers of `stream` again.
    async fn refresh_routes(&self, stream: &str) -> Result<()> {
        let filters = match self.js.get_stream_no_info(stream).await {
            Ok(handle) => {
                let infos: Vec<jetstream::consumer::Info> = handle
                    .consumers()
                    .try_collect()
                    .await
                    .map_err(|e| management_error("consumer.list", e))?;
                infos.iter().flat_map(|i| all_filters(&i.config)).collect()
            }
            Err(e) => {
                tracing::debug!(stream, error = %e, "no stream to route to");
                Vec::new()
            }
        };
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(stream.to_owned(), filters);
        }
        Ok(())
    }

    fn cached_route(&self, stream: &str, subject: &str) -> bool {
        self.routes.lock().is_ok_and(|routes| {
            routes
                .get(stream)
                .is_some_and(|filters| filters.iter().any(|f| matches(f, subject)))
        })
    }

    /// Whether some consumer of `stream` takes `subject` (re-reading the filters on a miss).
    async fn routable(&self, stream: &str, subject: &str) -> Result<bool> {
        if self.cached_route(stream, subject) {
            return Ok(true);
        }
        self.refresh_routes(stream).await?;
        Ok(self.cached_route(stream, subject))
    }

    pub(crate) async fn publish(&self, message: &OutgoingMessage) -> Result<Confirmation> {
        self.check_open()?;
        let configured = self.options.exchange.as_str();
        let (stream, subject, exchange) = match message.exchange.as_deref() {
            Some("") => (
                stream_name(configured),
                queue_subject(configured, &message.routing_key),
                "",
            ),
            Some(other) => (
                stream_name(other),
                subject(other, &message.routing_key),
                other,
            ),
            None => (
                stream_name(configured),
                subject(configured, &message.routing_key),
                configured,
            ),
        };
        self.wait_connected().await?;
        if !self.routable(&stream, &subject).await? {
            tracing::warn!(exchange, routing_key = %message.routing_key, %subject, "unroutable publish: no consumer takes the subject");
            return Ok(Confirmation::ready(Err(Error::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: message.routing_key.clone(),
            })));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            let name: HeaderName = name.parse().map_err(|_| Error::Refused {
                operation: "publish",
                reason: format!("`{name}` is not a valid NATS header name"),
            })?;
            headers.append(name, HeaderValue::from_lossy(value));
        }
        if let Some(ttl) = message.expiration {
            headers.insert(EXPIRATION_HEADER, ttl.as_millis().to_string());
            if self.server_features().0 {
                let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                headers.insert("Nats-TTL", secs.max(1).to_string());
            }
        }
        let id = message_id(&subject, &message.body, &message.headers);
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(message.body.clone()))
            .headers(headers)
            .message_id(id);
        let routing_key = message.routing_key.clone();
        let exchange = exchange.to_owned();
        let ack = self
            .js
            .send_publish(subject, publish)
            .await
            .map_err(|e| publish_error(e, &exchange, &routing_key))?;
        Ok(Confirmation::new(async move {
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(%routing_key, sequence = ack.sequence, "duplicate publish, stored once");
                    }
                    Ok(())
                }
                Err(e) => Err(publish_error(e, &exchange, &routing_key)),
            }
        }))
    }
}

fn all_filters(config: &jetstream::consumer::Config) -> Vec<String> {
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    filters
}

/// A failed management request: a JetStream error reply is a refusal, anything else (a
/// timeout, no responders, a lost connection) a retryable lost connection.
pub(crate) fn management_error(operation: &'static str, error: impl std::fmt::Display) -> Error {
    let reason = error.to_string();
    if reason.contains("(code ") || reason.contains("jetstream error") {
        Error::Refused { operation, reason }
    } else {
        Error::ConnectionLost { operation, reason }
    }
}

fn publish_error(
    error: jetstream::context::PublishError,
    exchange: &str,
    routing_key: &str,
) -> Error {
    match error.kind() {
        PublishErrorKind::StreamNotFound => Error::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        },
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Error::ConnectionLost {
            operation: "publish",
            reason: error.to_string(),
        },
        PublishErrorKind::MaxPayloadExceeded => Error::Refused {
            operation: "publish",
            reason: error.to_string(),
        },
        _ => {
            tracing::warn!(exchange, routing_key, %error, "JetStream did not store the message");
            Error::Nacked {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            }
        }
    }
}

impl Transport for NatsTransport {
    type Consumer = NatsConsumer;

    async fn declare(&self, topology: &Topology) -> Result<()> {
        self.shared.declare(topology).await
    }

    async fn publish(&self, message: &OutgoingMessage) -> Result<Confirmation> {
        self.shared.publish(message).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<NatsConsumer> {
        NatsConsumer::start(Arc::clone(&self.shared), queue, prefetch).await
    }

    async fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.shared.shutdown.send(true);
        // Consumers waiting in `next` see the signal and stop pulling; then what consumers
        // handed out and was not settled is nak'ed, so it comes again at once (a consumer
        // still pulling may receive it again and lose it with the connection: then it comes
        // again after `ack_wait`).
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.shared.inflight.nak_all().await;
        if tokio::time::timeout(Duration::from_secs(2), self.shared.client.flush())
            .await
            .is_err()
        {
            tracing::warn!("NATS flush on close timed out");
        }
        if let Err(error) = self.shared.client.drain().await {
            tracing::debug!(%error, "NATS drain on close");
        }
        tracing::info!("NATS transport closed");
    }

    async fn probe(&self) -> Result<()> {
        self.shared.wait_connected().await?;
        match tokio::time::timeout(
            self.shared.options.connect_timeout,
            self.shared.js.query_account(),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::Connect {
                url: self.shared.options.redacted_url(),
                reason: format!("JetStream does not answer: {e}"),
            }),
            Err(_) => Err(Error::Connect {
                url: self.shared.options.redacted_url(),
                reason: "JetStream did not answer in time".to_owned(),
            }),
        }
    }

    fn exchange(&self) -> Option<&str> {
        Some(&self.shared.options.exchange)
    }
}
