//! [`NatsConsumer`]: the deliveries of one queue's durable pull consumer, and their
//! [`Settle`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind};
use cqrs_core::{Backoff, Consumer, Delivery, Error, Result, Settle};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::EXPIRATION_HEADER;
use crate::subject::{consumer_name, routing_key, stream_name};
use crate::transport::{Shared, management_error as lost};

/// Deliveries handed out and not settled, by delivery id, with the consumer they came from.
#[derive(Default)]
pub(crate) struct Inflight {
    map: std::sync::Mutex<HashMap<u64, (u64, Acker)>>,
}

impl Inflight {
    fn insert(&self, id: u64, consumer: u64, acker: Acker) {
        if let Ok(mut map) = self.map.lock() {
            map.insert(id, (consumer, acker));
        }
    }

    fn take(&self, id: u64) -> Option<Acker> {
        self.map.lock().ok()?.remove(&id).map(|(_, acker)| acker)
    }

    fn take_consumer(&self, consumer: Option<u64>) -> Vec<Acker> {
        let Ok(mut map) = self.map.lock() else {
            return Vec::new();
        };
        let ids: Vec<u64> = map
            .iter()
            .filter(|(_, (c, _))| consumer.is_none_or(|wanted| *c == wanted))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| map.remove(&id).map(|(_, acker)| acker))
            .collect()
    }

    /// Nak's every unsettled delivery (the transport closes).
    pub(crate) async fn nak_all(&self) {
        nak(self.take_consumer(None)).await;
    }
}

async fn nak(ackers: Vec<Acker>) {
    for acker in ackers {
        if let Err(error) = acker.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%error, "nak of an unsettled delivery failed; it comes again after ack_wait");
        }
    }
}

/// The deliveries of one queue (a durable JetStream pull consumer). Reconnects by itself;
/// dropping it nak's what it handed out and was not settled, so that comes again at once.
pub struct NatsConsumer {
    shared: Arc<Shared>,
    queue: String,
    prefetch: u16,
    id: u64,
    messages: Option<pull::Stream>,
    shutdown: watch::Receiver<bool>,
    backoff: Backoff,
}

impl NatsConsumer {
    pub(crate) async fn start(shared: Arc<Shared>, queue: &str, prefetch: u16) -> Result<Self> {
        shared.check_open()?;
        shared.wait_connected().await?;
        let shutdown = shared.shutdown.subscribe();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut consumer = NatsConsumer {
            shared,
            queue: queue.to_owned(),
            prefetch: prefetch.max(1),
            id,
            messages: None,
            shutdown,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        };
        consumer.attach().await?;
        Ok(consumer)
    }

    /// Finds the durable consumer (declaring the topologies again when it is gone), sets its
    /// `max_ack_pending` to the prefetch and starts pulling.
    async fn attach(&mut self) -> Result<()> {
        let stream_name = stream_name(&self.shared.options.exchange);
        let name = consumer_name(&self.queue);
        let mut redeclared = false;
        let consumer = loop {
            let found = match self.shared.js.get_stream_no_info(&stream_name).await {
                Ok(stream) => match stream.get_consumer::<pull::Config>(&name).await {
                    Ok(consumer) => Some((stream, consumer)),
                    Err(e) if not_found(&e.to_string()) => None,
                    Err(e) => return Err(lost("consumer.info", e)),
                },
                Err(e) if not_found(&e.to_string()) => None,
                Err(e) => return Err(lost("stream.info", e)),
            };
            match found {
                Some(found) => break found,
                None if !redeclared && self.shared.redeclare(&self.queue).await? => {
                    redeclared = true;
                }
                None => {
                    return Err(Error::Refused {
                        operation: "consume",
                        reason: format!(
                            "queue `{}` is not declared (no consumer `{name}` on stream `{stream_name}`)",
                            self.queue
                        ),
                    });
                }
            }
        };
        let (stream, mut consumer) = consumer;
        let mut config = consumer.cached_info().config.clone();
        let prefetch = i64::from(self.prefetch);
        if config.max_ack_pending != prefetch {
            config.max_ack_pending = prefetch;
            let config = pull::Config {
                durable_name: config.durable_name,
                filter_subjects: config.filter_subjects,
                filter_subject: config.filter_subject,
                ack_policy: config.ack_policy,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                max_ack_pending: prefetch,
                ..Default::default()
            };
            consumer = stream
                .update_consumer(config)
                .await
                .map_err(|e| lost("consumer.update", e))?;
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(usize::from(self.prefetch))
            .expires(Duration::from_secs(10))
            .heartbeat(Duration::from_secs(3))
            .messages()
            .await
            .map_err(|e| lost("consumer.next", e))?;
        tracing::info!(queue = %self.queue, prefetch = self.prefetch, "consuming from NATS");
        self.messages = Some(messages);
        Ok(())
    }

    /// Makes a delivery of `message`; `None` when it expired (it is terminated).
    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let (redelivered, published_nanos) = match message.info() {
            Ok(info) => (info.delivered > 1, info.published.unix_timestamp_nanos()),
            Err(error) => {
                tracing::warn!(%error, "not a JetStream delivery; skipped");
                return None;
            }
        };
        let (message, acker) = message.split();
        let mut headers = Vec::new();
        let mut expiration = None;
        if let Some(map) = &message.headers {
            for (name, values) in map.iter() {
                let name = name.to_string();
                let Some(value) = values.first() else {
                    continue;
                };
                if name == EXPIRATION_HEADER {
                    expiration = value
                        .as_str()
                        .parse::<u64>()
                        .ok()
                        .map(Duration::from_millis);
                } else if !name.starts_with("Nats-") {
                    headers.push((name, value.as_str().to_owned()));
                }
            }
        }
        headers.sort();
        if let Some(ttl) = expiration {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            if published_nanos + ttl.as_nanos() as i128 <= now {
                tracing::debug!(subject = %message.subject, "dropping an expired message");
                if let Err(error) = acker.ack_with(AckKind::Term).await {
                    tracing::debug!(%error, "terminating an expired message failed");
                }
                return None;
            }
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.inflight.insert(id, self.id, acker);
        let key = routing_key(&self.shared.options.exchange, message.subject.as_str()).to_owned();
        let settle = NatsSettle {
            shared: Arc::clone(&self.shared),
            id,
        };
        let mut delivery = Delivery::new(message.payload.to_vec(), key, settle)
            .with_redelivered(redelivered)
            .with_headers(headers);
        if let Some(ttl) = expiration {
            delivery = delivery.with_expiration(ttl);
        }
        Some(delivery)
    }

    async fn pause(&mut self) {
        let delay = self.backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.wait_for(|closed| *closed) => {}
        }
    }
}

fn not_found(reason: &str) -> bool {
    reason.contains("not found")
}

impl Consumer for NatsConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.shared.check_open().is_err() {
                self.messages = None;
                return None;
            }
            if self.messages.is_none() {
                if let Err(error) = self.shared.wait_connected().await {
                    if matches!(error, Error::Closed) {
                        return None;
                    }
                    self.pause().await;
                    continue;
                }
                match self.attach().await {
                    Ok(()) => self.backoff.reset(),
                    Err(Error::Closed) => return None,
                    Err(error) if !error.is_retryable() => return Some(Err(error)),
                    Err(error) => {
                        tracing::warn!(queue = %self.queue, %error, "cannot consume from NATS yet; trying again");
                        self.pause().await;
                        continue;
                    }
                }
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            let item = tokio::select! {
                item = messages.next() => item,
                _ = self.shutdown.wait_for(|closed| *closed) => {
                    self.messages = None;
                    return None;
                }
            };
            match item {
                Some(Ok(message)) => {
                    if let Some(delivery) = self.delivery(message).await {
                        return Some(Ok(delivery));
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.queue, %error, "NATS pull stream failed; pulling anew");
                    self.messages = None;
                    self.pause().await;
                }
                None => self.messages = None,
            }
        }
    }
}

impl Drop for NatsConsumer {
    fn drop(&mut self) {
        // Unsubscribe first (synchronously queued before the naks): the server then skips this
        // consumer's pending pull request and hands the nak'ed messages to a live one.
        self.messages = None;
        let unsettled = self.shared.inflight.take_consumer(Some(self.id));
        if unsettled.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(nak(unsettled));
            }
            Err(_) => tracing::debug!(
                count = unsettled.len(),
                "no runtime to nak unsettled deliveries; they come again after ack_wait"
            ),
        }
    }
}

/// Acknowledges or rejects one delivery of a [`NatsConsumer`].
struct NatsSettle {
    shared: Arc<Shared>,
    id: u64,
}

impl NatsSettle {
    fn settle(
        self: Box<Self>,
        kind: AckKind,
        operation: &'static str,
    ) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let acker = self
                .shared
                .inflight
                .take(self.id)
                .ok_or(Error::ConnectionLost {
                    operation,
                    reason: "the consumer this delivery came from has ended; it comes again"
                        .to_owned(),
                })?;
            acker
                .ack_with(kind)
                .await
                .map_err(|e| Error::ConnectionLost {
                    operation,
                    reason: e.to_string(),
                })
        })
    }
}

impl Settle for NatsSettle {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.settle(AckKind::Ack, "ack")
    }

    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        if requeue {
            self.settle(AckKind::Nak(None), "nak")
        } else {
            self.settle(AckKind::Term, "term")
        }
    }
}
