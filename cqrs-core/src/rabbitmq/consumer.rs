//! A consumer that survives broker restarts: a background task owns the AMQP consumer and
//! re-creates it after the connection drops; deliveries reach the caller through a channel.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::{mpsc, oneshot};

use super::{RabbitSettle, Shared, connect, map_lapin, short};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::transport::{Consumer, Delivery};

/// Deliveries from one RabbitMQ queue. Dropping it cancels the consumer; what was delivered
/// and not acknowledged goes back to the queue.
pub struct RabbitMqConsumer {
    deliveries: mpsc::Receiver<Result<Delivery>>,
    queue: String,
}

impl std::fmt::Debug for RabbitMqConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqConsumer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Consumer for RabbitMqConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        self.deliveries.recv().await
    }
}

/// Starts the consumer task and waits until its first subscription succeeded (or failed for
/// good), so that a wrong queue name is reported here and not later.
pub(super) async fn start(
    shared: Arc<Shared>,
    queue: String,
    prefetch: u16,
) -> Result<RabbitMqConsumer> {
    let (sender, receiver) = mpsc::channel(usize::from(prefetch.max(1)));
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(run(
        shared,
        queue.clone(),
        prefetch.max(1),
        sender,
        ready_tx,
    ));
    match ready_rx.await {
        Ok(Ok(())) => Ok(RabbitMqConsumer {
            deliveries: receiver,
            queue,
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::Closed),
    }
}

enum Ended {
    /// The caller dropped the consumer or the transport was closed.
    Stopped,
    /// The connection went away; subscribe again.
    Lost(String),
}

async fn run(
    shared: Arc<Shared>,
    queue: String,
    prefetch: u16,
    sender: mpsc::Sender<Result<Delivery>>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Backoff::new(
        shared.config.reconnect_min_delay(),
        shared.config.reconnect_max_delay(),
    );
    let mut cursor = 0usize;
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        // The first subscription is bounded by connect_timeout so `consume()` reports an
        // unreachable broker; afterwards the consumer waits for the broker as long as it takes.
        let deadline = ready
            .as_ref()
            .map(|_| tokio::time::Instant::now() + shared.config.connect_timeout());
        let connection = match connect::connect(
            &shared,
            "consumer",
            &mut cursor,
            &mut backoff,
            deadline,
        )
        .await
        {
            Ok(connection) => connection,
            // A broker that took this consumer before and refuses it now (a vhost deleted and
            // created again, a node still starting, permissions being changed) is waited for,
            // loudly: the consumer's owner decided the settings were right.
            Err(error) if ready.is_none() && !matches!(error, Error::Closed) => {
                let delay = backoff.next_delay();
                tracing::error!(
                    queue = %queue,
                    %error,
                    retry_in = ?delay,
                    "the broker refuses the consumer it accepted before; trying again"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    _ = shutdown.wait_for(|closed| *closed) => return,
                }
            }
            Err(error) => {
                finish(&mut ready, &sender, error).await;
                return;
            }
        };
        if ready.is_none() {
            // Subscribing anew: the queue may be gone with the broker's data, or deleted by an
            // operator. Declare what this transport declared, so consuming can resume.
            super::redeclare(&shared, &connection).await;
        }
        let subscription = subscribe(&connection, &queue, prefetch).await;
        let stream = match subscription {
            Ok(stream) => stream,
            Err(error) if error.is_retryable() => {
                tracing::warn!(queue = %queue, %error, "cannot subscribe, will retry");
                connect::close_quietly(&connection).await;
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    _ = shutdown.wait_for(|closed| *closed) => return,
                }
            }
            Err(error) => {
                tracing::error!(queue = %queue, %error, "cannot consume");
                connect::close_quietly(&connection).await;
                finish(&mut ready, &sender, error).await;
                return;
            }
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        tracing::info!(queue = %queue, prefetch, "consuming");
        let ended = forward(stream, &sender, &mut shutdown).await;
        connect::close_quietly(&connection).await;
        match ended {
            Ended::Stopped => {
                tracing::debug!(queue = %queue, "consumer stopped");
                return;
            }
            Ended::Lost(reason) => {
                tracing::warn!(queue = %queue, error = %reason, "consumer lost its connection, resubscribing");
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|closed| *closed) => return,
                }
            }
        }
    }
}

async fn finish(
    ready: &mut Option<oneshot::Sender<Result<()>>>,
    sender: &mpsc::Sender<Result<Delivery>>,
    error: Error,
) {
    match ready.take() {
        Some(ready) => {
            let _ = ready.send(Err(error));
        }
        None if matches!(error, Error::Closed) => {}
        None => {
            let _ = sender.send(Err(error)).await;
        }
    }
}

async fn subscribe(
    connection: &lapin::Connection,
    queue: &str,
    prefetch: u16,
) -> Result<lapin::Consumer> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| map_lapin("channel.open", e))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| map_lapin("basic.qos", e))?;
    channel
        .basic_consume(
            short(queue, "queue")?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_lapin("basic.consume", e))
}

async fn forward(
    mut stream: lapin::Consumer,
    sender: &mpsc::Sender<Result<Delivery>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Ended {
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = sender.closed() => return Ended::Stopped,
            _ = shutdown.wait_for(|closed| *closed) => return Ended::Stopped,
        };
        match next {
            Some(Ok(delivery)) => {
                if sender.send(Ok(convert(delivery))).await.is_err() {
                    return Ended::Stopped;
                }
            }
            Some(Err(error)) => return Ended::Lost(error.to_string()),
            None => return Ended::Lost("the broker cancelled the consumer".to_owned()),
        }
    }
}

pub(super) fn convert(delivery: lapin::message::Delivery) -> Delivery {
    let headers = delivery
        .properties
        .headers()
        .as_ref()
        .map(string_headers)
        .unwrap_or_default();
    let expiration = delivery
        .properties
        .expiration()
        .as_ref()
        .and_then(|ms| ms.as_str().parse::<u64>().ok())
        .map(Duration::from_millis);
    let converted = Delivery::new(
        delivery.data,
        delivery.routing_key.to_string(),
        RabbitSettle(delivery.acker),
    )
    .with_redelivered(delivery.redelivered)
    .with_headers(headers);
    match expiration {
        Some(ttl) => converted.with_expiration(ttl),
        None => converted,
    }
}

fn string_headers(table: &FieldTable) -> Vec<(String, String)> {
    table
        .inner()
        .iter()
        .filter_map(|(key, value)| {
            let value = match value {
                AMQPValue::LongString(s) => s.to_string(),
                AMQPValue::ShortString(s) => s.to_string(),
                _ => return None,
            };
            Some((key.to_string(), value))
        })
        .collect()
}
