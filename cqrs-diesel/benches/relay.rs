//! Relay benchmark: `OutboxRelay::drain` of a pre-filled PostgreSQL outbox against a raw lapin
//! publish-with-confirms loop of the same bodies, in one run.
//!
//! Each round fills the outbox with the messages (not timed; the table is vacuumed first so
//! that rounds start alike), then times both sides, alternating which goes first: the raw loop
//! publishes the bodies, persistent and mandatory, with the same window of confirms in flight;
//! the relay locks, publishes, awaits the confirms and deletes every entry. Both queues are
//! purged after each round. The best round of each is reported with the ratio.
//!
//! Run: `cargo bench -p cqrs-diesel --bench relay`
//! Settings (environment): `PG_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! a schema of its own is created and dropped), `AMQP_URL` (default the local broker),
//! `BENCH_MESSAGES` (50000), `BENCH_ROUNDS` (3), `BENCH_WINDOW` (1000 confirms in flight),
//! `BENCH_BATCH` (1000 entries per relay batch), `BENCH_DEPTH` (3 batches in flight).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cqrs_diesel::outbox::NewOutboxEntry;
use cqrs_diesel::{Config, CqrsConnection, OutboxRelay, RabbitMqTransport, Topology, Transport};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ConnectionProperties, ExchangeKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A SAVE of an `account` row as django-cqrs writes it (about 450 bytes).
fn body(n: usize) -> String {
    format!(
        concat!(
            r#"{{"signal_type":"SAVE","cqrs_id":"account","instance_data":{{"id":{n},"#,
            r#""name":"Pavel Petrov","email":"pavel.{n}@example.com","balance":1520.75,"#,
            r#""currency":"EUR","status":"active","#,
            r#""created_at":"2026-11-02 09:14:31.204115+00:00","cqrs_revision":3,"#,
            r#""cqrs_updated":"2026-11-28 18:21:11.910419+00:00"}},"#,
            r#""previous_data":{{"name":"Pavel"}},"instance_pk":{n},"#,
            r#""correlation_id":"8c5e6e3a-2f4b-4c1d-9a7e-3b2d1f0e9c8a","retries":0,"#,
            r#""expires":"2026-11-29T18:21:11+00:00","meta":{{}}}}"#
        ),
        n = n,
    )
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Declares a durable topic exchange and queue bound to `account`.
async fn declare(channel: &Channel, exchange: &str, queue: &str) -> Result<(), BoxError> {
    channel
        .exchange_declare(
            exchange.into(),
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
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "account".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// The baseline: publish every body with confirms, `window` in flight, on a fresh channel.
async fn raw_publish(
    connection: &lapin::Connection,
    exchange: &str,
    bodies: &[String],
    window: usize,
) -> Result<Duration, BoxError> {
    let channel = connection.create_channel().await?;
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
                exchange.into(),
                "account".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
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

/// Empties the outbox's dead tuples, then writes one entry per body (not timed).
async fn fill(connect: impl Fn() -> PgConnection + Send + 'static, bodies: Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let mut conn = connect();
        conn.batch_execute("VACUUM cqrs_outbox")
            .expect("vacuum the outbox");
        for chunk in bodies.chunks(5000) {
            let entries: Vec<NewOutboxEntry<'_>> = chunk
                .iter()
                .map(|body| NewOutboxEntry {
                    cqrs_id: "account",
                    routing_key: "account",
                    body,
                })
                .collect();
            conn.outbox_insert_many(&entries).expect("fill the outbox");
        }
    })
    .await
    .expect("the fill task");
}

/// Drops the benchmark's schema at the end, also when the benchmark fails.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.url) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let pg_url = std::env::var("PG_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = env_or("BENCH_MESSAGES", 50_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let window: usize = env_or("BENCH_WINDOW", 1000);
    let batch: usize = env_or("BENCH_BATCH", 1000);
    let depth: usize = env_or("BENCH_DEPTH", 3);
    let tag = std::process::id();

    let schema = format!("bench_relay_{tag}");
    PgConnection::establish(&pg_url)?.batch_execute(&format!("CREATE SCHEMA {schema}"))?;
    let _schema = Schema {
        url: pg_url.clone(),
        name: schema.clone(),
    };
    let connector = {
        let (url, schema) = (pg_url.clone(), schema.clone());
        move || {
            let mut conn = PgConnection::establish(&url)?;
            conn.batch_execute(&format!("SET search_path TO {schema}"))
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok::<_, diesel::ConnectionError>(conn)
        }
    };
    connector()?.run_outbox_migrations()?;

    let bodies: Vec<String> = (0..count).map(body).collect();
    let mean = bodies.iter().map(String::len).sum::<usize>() / count.max(1);

    let lapin_connection =
        lapin::Connection::connect(&amqp_url, ConnectionProperties::default()).await?;
    let admin = lapin_connection.create_channel().await?;
    let (raw_exchange, raw_queue) = (
        format!("bench_relay_raw_x_{tag}"),
        format!("bench_relay_raw_q_{tag}"),
    );
    declare(&admin, &raw_exchange, &raw_queue).await?;
    let config = Config::builder()
        .amqp_url(&amqp_url)
        .exchange(format!("bench_relay_x_{tag}"))
        .queue(format!("bench_relay_q_{tag}"))
        .build()?;
    let transport = RabbitMqTransport::connect(config.clone()).await?;
    transport
        .declare(&Topology::from_config(&config, ["account"]))
        .await?;
    let our_queue = config.queue().ok_or("queue configured")?.to_owned();
    let mut relay = OutboxRelay::new(transport.clone(), connector.clone())
        .batch_size(batch)
        .confirm_window(window)
        .pipeline_depth(depth);

    println!(
        "relay benchmark: {count} outbox entries of {mean} bytes on PostgreSQL, {rounds} rounds, \
         {window} confirms in flight, batches of {batch}, {depth} in flight"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>8}",
        "round", "raw publish/s", "relay drain/s", "ratio"
    );
    let (mut best_raw, mut best_relay) = (0f64, 0f64);
    for round in 1..=rounds {
        let fill_connect = connector.clone();
        fill(move || fill_connect().expect("connect"), bodies.clone()).await;
        let drain = async {
            let started = Instant::now();
            let drained = relay.drain().await?;
            assert_eq!(drained, count, "the relay drained every entry");
            Ok::<_, BoxError>(started.elapsed())
        };
        let (raw, ours) = if round % 2 == 1 {
            let raw = raw_publish(&lapin_connection, &raw_exchange, &bodies, window).await?;
            (raw, drain.await?)
        } else {
            let ours = drain.await?;
            (
                raw_publish(&lapin_connection, &raw_exchange, &bodies, window).await?,
                ours,
            )
        };
        let (raw, ours) = (rate(count, raw), rate(count, ours));
        println!(
            "{:<8} {:>16.0} {:>16.0} {:>7.0}%",
            round,
            raw,
            ours,
            100.0 * ours / raw
        );
        best_raw = best_raw.max(raw);
        best_relay = best_relay.max(ours);
        assert_eq!(connector()?.outbox_pending()?, 0, "the outbox is empty");
        for queue in [&raw_queue, &our_queue] {
            admin
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await?;
        }
    }
    println!(
        "best    {:>16.0} {:>16.0} {:>7.0}%",
        best_raw,
        best_relay,
        100.0 * best_relay / best_raw
    );
    println!(
        "relay/raw: {:.0}% (goal: at least 80%)",
        100.0 * best_relay / best_raw
    );

    drop(relay);
    transport.close().await;
    for queue in [
        raw_queue.clone(),
        our_queue.clone(),
        format!("dead_letter_{our_queue}"),
    ] {
        admin
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [raw_exchange.as_str(), config.exchange()] {
        admin
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    lapin_connection.close(200, "done".into()).await?;
    Ok(())
}
