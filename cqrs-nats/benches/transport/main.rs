//! Transport benchmark, in one run: our NATS JetStream transport (cqrs-nats) beside our
//! RabbitMQ transport (cqrs-core), each beside a raw client loop of its broker (raw lapin;
//! raw async-nats JetStream publish-with-ack and pull-consume-ack).
//!
//! Every side publishes the same 450-byte bodies with the same window of confirmations in
//! flight (RabbitMQ: persistent, mandatory, publisher confirms; NATS: file-stored stream,
//! PubAcks) to a durable queue of its own, then consumes it with the same prefetch,
//! acknowledging every message. Within a round the four sides alternate who goes first, so
//! drift on this shared machine hits them alike; the best round of each is reported with the
//! ratio ours/raw.
//!
//! Run: `cargo bench -p cqrs-nats --bench transport`
//! Settings (environment): `AMQP_URL` (default the local RabbitMQ), `CQRS_TEST_NATS_URL`
//! (default `nats://127.0.0.1:4223`), `BENCH_MESSAGES` (50000), `BENCH_ROUNDS` (3),
//! `BENCH_WINDOW` (1000 confirms in flight), `BENCH_PREFETCH` (1000), `BENCH_BROKERS`
//! (`rabbitmq,nats`).

mod nats;
mod rabbitmq;

use std::time::{Duration, Instant};

use cqrs_core::{Config, Consumer, OutgoingMessage, RabbitMqTransport, Topology, Transport};
use cqrs_nats::{NatsOptions, NatsTransport};

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

async fn ours_publish<T: Transport>(
    transport: &T,
    messages: &[OutgoingMessage],
    window: usize,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    transport.publish_all(messages, window).await?;
    Ok(started.elapsed())
}

async fn ours_consume<T: Transport>(
    transport: &T,
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

/// Best rates of one broker: raw publish, ours publish, raw consume, ours consume.
#[derive(Default, Clone, Copy)]
struct Best([f64; 4]);

impl Best {
    fn record(&mut self, figures: [f64; 4]) {
        for (best, figure) in self.0.iter_mut().zip(figures) {
            *best = best.max(figure);
        }
    }
}

struct Settings {
    count: usize,
    window: usize,
    prefetch: u16,
    bodies: Vec<Vec<u8>>,
    messages: Vec<OutgoingMessage>,
}

impl Settings {
    /// The bodies and messages of round `round`.
    fn fill(&mut self, round: usize) {
        let first = (round - 1) * self.count;
        self.bodies = (first..first + self.count).map(body).collect();
        assert!(
            self.bodies.iter().all(|b| b.len() == 450),
            "bodies are 450 bytes"
        );
        self.messages = self
            .bodies
            .iter()
            .map(|b| OutgoingMessage::new("author", b.clone()))
            .collect();
    }
}

/// One round of one broker: publish then consume, raw and ours, alternating who goes first.
async fn round<T: Transport, P, C>(
    settings: &Settings,
    first_raw: bool,
    transport: &T,
    queue: &str,
    raw_publish: impl Fn() -> P,
    raw_consume: impl Fn() -> C,
) -> Result<[f64; 4], BoxError>
where
    P: std::future::Future<Output = Result<Duration, BoxError>>,
    C: std::future::Future<Output = Result<Duration, BoxError>>,
{
    let Settings {
        count,
        window,
        prefetch,
        messages,
        ..
    } = settings;
    let (raw_pub, our_pub) = if first_raw {
        let r = raw_publish().await?;
        (r, ours_publish(transport, messages, *window).await?)
    } else {
        let o = ours_publish(transport, messages, *window).await?;
        (raw_publish().await?, o)
    };
    let (raw_con, our_con) = if first_raw {
        let r = raw_consume().await?;
        (r, ours_consume(transport, queue, *count, *prefetch).await?)
    } else {
        let o = ours_consume(transport, queue, *count, *prefetch).await?;
        (raw_consume().await?, o)
    };
    Ok([
        rate(*count, raw_pub),
        rate(*count, our_pub),
        rate(*count, raw_con),
        rate(*count, our_con),
    ])
}

fn print_row(label: &str, broker: &str, figures: [f64; 4]) {
    println!(
        "{label:<6} {broker:<9} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
        figures[0], figures[1], figures[2], figures[3]
    );
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let nats_url =
        std::env::var("CQRS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4223".into());
    let brokers: String = env_or("BENCH_BROKERS", "rabbitmq,nats".to_owned());
    let (with_rabbitmq, with_nats) = (brokers.contains("rabbitmq"), brokers.contains("nats"));
    let count: usize = env_or("BENCH_MESSAGES", 50_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let window: usize = env_or("BENCH_WINDOW", 1000);
    let prefetch: u16 = env_or("BENCH_PREFETCH", 1000);
    let tag = std::process::id().to_string();

    let mut settings = Settings {
        count,
        window,
        prefetch,
        bodies: Vec::new(),
        messages: Vec::new(),
    };

    let config = Config::builder()
        .amqp_url(&amqp_url)
        .exchange(format!("bench_ours_x_{tag}"))
        .queue(format!("bench_ours_q_{tag}"))
        .publish_confirm_window(window)
        .build()?;
    let topology = Topology::from_config(&config, ["author"]);
    let our_queue = config.queue().ok_or("queue configured")?.to_owned();

    let rabbit = if with_rabbitmq {
        let raw = rabbitmq::Raw::new(&amqp_url, &tag).await?;
        let transport = RabbitMqTransport::connect(config.clone()).await?;
        transport.declare(&topology).await?;
        Some((raw, transport))
    } else {
        None
    };
    let nats = if with_nats {
        let raw = nats::Raw::new(&nats_url, &tag).await?;
        let transport =
            NatsTransport::connect(NatsOptions::new(nats_url.as_str()).with_config(&config))
                .await?;
        transport.declare(&topology).await?;
        Some((raw, transport))
    } else {
        None
    };

    println!(
        "transport benchmark: {count} messages of 450 bytes, {rounds} rounds, {window} confirms in flight, prefetch {prefetch}"
    );
    println!(
        "{:<6} {:<9} {:>14} {:>14} {:>14} {:>14}",
        "round", "broker", "raw publish/s", "ours publish/s", "raw consume/s", "ours consume/s"
    );
    let (mut best_rabbit, mut best_nats) = (Best::default(), Best::default());
    for n in 1..=rounds {
        // New primary keys every round: NATS deduplicates identical messages (same subject,
        // body and headers) within the stream's duplicate window.
        settings.fill(n);
        let first_raw = n % 2 == 1;
        if let Some((raw, transport)) = &rabbit {
            let figures = round(
                &settings,
                first_raw,
                transport,
                &our_queue,
                || raw.publish(&settings.bodies, window),
                || raw.consume(count, prefetch),
            )
            .await?;
            print_row(&n.to_string(), "rabbitmq", figures);
            best_rabbit.record(figures);
        }
        if let Some((raw, transport)) = &nats {
            let figures = round(
                &settings,
                first_raw,
                transport,
                &our_queue,
                || raw.publish(&settings.bodies, window),
                || raw.consume(count, prefetch),
            )
            .await?;
            print_row(&n.to_string(), "nats", figures);
            best_nats.record(figures);
        }
    }
    for (name, best, on) in [
        ("rabbitmq", best_rabbit, with_rabbitmq),
        ("nats", best_nats, with_nats),
    ] {
        if on {
            print_row("best", name, best.0);
        }
    }
    for (name, best, on) in [
        ("rabbitmq", best_rabbit, with_rabbitmq),
        ("nats", best_nats, with_nats),
    ] {
        if on {
            println!(
                "{name}: ours/raw publish with confirms {:.0}%, consume and ack {:.0}%",
                100.0 * best.0[1] / best.0[0],
                100.0 * best.0[3] / best.0[2]
            );
        }
    }
    if with_rabbitmq && with_nats {
        println!(
            "nats/rabbitmq (ours): publish {:.0}%, consume {:.0}%",
            100.0 * best_nats.0[1] / best_rabbit.0[1],
            100.0 * best_nats.0[3] / best_rabbit.0[3]
        );
    }

    if let Some((raw, transport)) = rabbit {
        transport.close().await;
        raw.cleanup().await?;
        rabbitmq::cleanup_ours(&amqp_url, config.exchange(), &our_queue).await?;
    }
    if let Some((raw, transport)) = nats {
        transport.close().await;
        raw.cleanup().await?;
        nats::cleanup_ours(&nats_url, config.exchange()).await?;
    }
    Ok(())
}
