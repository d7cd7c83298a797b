//! The RabbitMQ side: a raw lapin loop (publish with confirms, consume with acks) on its own
//! durable queue, and the clean-up of what our `RabbitMqTransport` declared.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use crate::BoxError;

pub struct Raw {
    connection: Connection,
    exchange: String,
    queue: String,
}

impl Raw {
    pub async fn new(url: &str, tag: &str) -> Result<Raw, BoxError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let exchange = format!("bench_raw_x_{tag}");
        let queue = format!("bench_raw_q_{tag}");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "author".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Raw {
            connection,
            exchange,
            queue,
        })
    }

    pub async fn publish(&self, bodies: &[Vec<u8>], window: usize) -> Result<Duration, BoxError> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let started = Instant::now();
        let mut in_flight = VecDeque::with_capacity(window);
        for body in bodies {
            if in_flight.len() >= window
                && let Some(confirm) = in_flight.pop_front()
            {
                let confirmation: lapin::Confirmation = confirm.await?;
                assert!(confirmation.is_ack());
            }
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "author".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    BasicProperties::default()
                        .with_content_type("text/plain".into())
                        .with_delivery_mode(2),
                )
                .await?;
            in_flight.push_back(confirm);
        }
        for confirm in in_flight {
            assert!(confirm.await?.is_ack());
        }
        let elapsed = started.elapsed();
        channel.close(200, "done".into()).await?;
        Ok(elapsed)
    }

    pub async fn consume(&self, count: usize, prefetch: u16) -> Result<Duration, BoxError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let started = Instant::now();
        let mut seen = 0;
        while seen < count {
            let delivery = consumer.next().await.ok_or("consumer ended")??;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            seen += 1;
        }
        let elapsed = started.elapsed();
        channel.close(200, "done".into()).await?;
        Ok(elapsed)
    }

    pub async fn cleanup(self) -> Result<(), BoxError> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
        self.connection.close(200, "done".into()).await?;
        Ok(())
    }
}

/// Deletes the queues and the exchange our transport declared for the bench.
pub async fn cleanup_ours(url: &str, exchange: &str, queue: &str) -> Result<(), BoxError> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in [queue.to_owned(), format!("dead_letter_{queue}")] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}
