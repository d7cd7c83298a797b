//! Transport benchmark: our `RabbitMqTransport` against a raw lapin loop, in one run.
//!
//! Both sides publish the same 450-byte bodies, persistent and mandatory, with publisher
//! confirms and the same window of confirms in flight, to their own durable queue; then both
//! consume their queue with the same prefetch, acknowledging every message. Rounds alternate
//! raw and ours so drift on this shared machine hits both alike; the best round of each is
//! reported with the ratio.
//!
//! Run: `cargo bench -p cqrs-core --bench transport`
//! Settings (environment): `AMQP_URL` (default the local broker), `BENCH_MESSAGES` (50000),
//! `BENCH_ROUNDS` (3), `BENCH_WINDOW` (1000 confirms in flight), `BENCH_PREFETCH` (1000).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cqrs_core::{Config, Consumer, OutgoingMessage, RabbitMqTransport, Topology, Transport};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A body shaped like a real SAVE message, padded to exactly 450 bytes.
fn body(n: usize) -> Vec<u8> {
    let mut text = format!(
        r#"{{"signal_type":"SAVE","cqrs_id":"author","instance_data":{{"id":{n},"name":"Pavel","cqrs_revision":0,"cqrs_updated":"2026-11-28 18:21:11.910419+00:00","bio":""#
    );
    let tail = r#""},"previous_data":null,"instance_pk":0,"correlation_id":null,"retries":0,"expires":null,"meta":{}}"#;
    while text.len() + tail.len() < 450 {
        text.push('x');
    }
    text.push_str(tail);
    text.into_bytes()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

struct Raw {
    connection: Connection,
    exchange: String,
    queue: String,
}

impl Raw {
    async fn new(url: &str, tag: &str) -> Result<Raw, BoxError> {
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

    async fn publish(&self, bodies: &[Vec<u8>], window: usize) -> Result<Duration, BoxError> {
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

    async fn consume(&self, count: usize, prefetch: u16) -> Result<Duration, BoxError> {
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

    async fn cleanup(self) -> Result<(), BoxError> {
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

async fn ours_publish(
    transport: &RabbitMqTransport,
    messages: &[OutgoingMessage],
    window: usize,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    transport.publish_all(messages, window).await?;
    Ok(started.elapsed())
}

async fn ours_consume(
    transport: &RabbitMqTransport,
    queue: &str,
    count: usize,
    prefetch: u16,
) -> Result<Duration, BoxError> {
    let mut consumer = transport.consume(queue, prefetch).await?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < count {
        let delivery = consumer.next().await.ok_or("consumer ended")??;
        delivery.ack().await?;
        seen += 1;
    }
    Ok(started.elapsed())
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = env_or("BENCH_MESSAGES", 50_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let window: usize = env_or("BENCH_WINDOW", 1000);
    let prefetch: u16 = env_or("BENCH_PREFETCH", 1000);
    let tag = std::process::id().to_string();

    let bodies: Vec<Vec<u8>> = (0..count).map(body).collect();
    assert!(
        bodies.iter().all(|b| b.len() == 450),
        "bodies are 450 bytes"
    );
    let messages: Vec<OutgoingMessage> = bodies
        .iter()
        .map(|b| OutgoingMessage::new("author", b.clone()))
        .collect();

    let raw = Raw::new(&url, &tag).await?;
    let config = Config::builder()
        .amqp_url(&url)
        .exchange(format!("bench_ours_x_{tag}"))
        .queue(format!("bench_ours_q_{tag}"))
        .publish_confirm_window(window)
        .build()?;
    let transport = RabbitMqTransport::connect(config.clone()).await?;
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await?;
    let our_queue = config.queue().ok_or("queue configured")?.to_owned();

    println!(
        "transport benchmark: {count} messages of 450 bytes, {rounds} rounds, {window} confirms in flight, prefetch {prefetch}"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>16} {:>16}",
        "round", "raw publish/s", "ours publish/s", "raw consume/s", "ours consume/s"
    );
    let (mut best_raw_pub, mut best_our_pub, mut best_raw_con, mut best_our_con) =
        (0f64, 0f64, 0f64, 0f64);
    for round in 1..=rounds {
        // Alternate who goes first, so neither always gets the warmer broker.
        let (raw_pub, our_pub) = if round % 2 == 1 {
            let r = raw.publish(&bodies, window).await?;
            (r, ours_publish(&transport, &messages, window).await?)
        } else {
            let o = ours_publish(&transport, &messages, window).await?;
            (raw.publish(&bodies, window).await?, o)
        };
        let (raw_con, our_con) = if round % 2 == 1 {
            let r = raw.consume(count, prefetch).await?;
            (
                r,
                ours_consume(&transport, &our_queue, count, prefetch).await?,
            )
        } else {
            let o = ours_consume(&transport, &our_queue, count, prefetch).await?;
            (raw.consume(count, prefetch).await?, o)
        };
        let figures = [
            rate(count, raw_pub),
            rate(count, our_pub),
            rate(count, raw_con),
            rate(count, our_con),
        ];
        println!(
            "{:<8} {:>16.0} {:>16.0} {:>16.0} {:>16.0}",
            round, figures[0], figures[1], figures[2], figures[3]
        );
        best_raw_pub = best_raw_pub.max(figures[0]);
        best_our_pub = best_our_pub.max(figures[1]);
        best_raw_con = best_raw_con.max(figures[2]);
        best_our_con = best_our_con.max(figures[3]);
    }
    println!(
        "best    {:>16.0} {:>16.0} {:>16.0} {:>16.0}",
        best_raw_pub, best_our_pub, best_raw_con, best_our_con
    );
    println!(
        "ours/raw: publish with confirms {:.0}%, consume and ack {:.0}% (goal: at least 90% for both)",
        100.0 * best_our_pub / best_raw_pub,
        100.0 * best_our_con / best_raw_con
    );

    transport.close().await;
    raw.cleanup().await?;
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in [our_queue.clone(), format!("dead_letter_{our_queue}")] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(config.exchange().into(), ExchangeDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}
