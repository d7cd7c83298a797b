//! Replica benchmark: how fast the consumer runtime applies django-cqrs messages to
//! PostgreSQL, against a raw lapin consume-and-ack loop of the same messages, and the
//! end-to-end lag and throughput of master → outbox → relay → broker → runtime → replica.
//!
//! Parts, in one run:
//!
//! 1. **Fixture**: N SAVE messages of an `author` row shaped like the golden fixture of
//!    django-cqrs (odd rows with every optional field set, even rows with them null: 520 bytes
//!    on average): `BENCH_ROWS` rows × N / rows revisions, interleaved (revision 0 of every
//!    row, then revision 1, ...), so a batch holds distinct rows. Each measurement starts from
//!    a queue freshly filled with `publish_all` (not timed), bound as docs/WIRE.md says
//!    (`Topology::from_config` + `declare`), and from an empty replica table.
//! 2. **Raw baseline**: a plain lapin consumer on the same queue with the runtime's prefetch
//!    (`config.prefetch()`, 1001) that parses nothing and acknowledges every delivery. Its acks
//!    are pipelined (each delivery's ack future is pushed into a `FuturesUnordered` polled
//!    alongside the consumer), as the runtime acknowledges a batch with `join_all`; the
//!    variant that awaits each ack before taking the next delivery is printed for reference.
//!    Rate = N / (first delivery → last ack completed).
//! 3. **Apply with batching**: `ConsumerRuntime` with a `Replicas` registry of one derived
//!    replica model, batch size 100 with 1 and 2 workers, and batch size 500 (first round
//!    only: it is slow). Rate = N / (first delivery received → `applied + dead_lettered`
//!    reaches N), both read from the runtime's stats every millisecond. Every run is checked:
//!    all rows at their last revision, nothing retried or dead-lettered.
//! 4. **Without batching**: the same with batch size 1, on `BENCH_UNBATCHED` messages
//!    (rows × 10 revisions; fewer messages because it is slow).
//!
//!    Parts 2–4 run `BENCH_ROUNDS` rounds, raw first in odd rounds and last in even ones; the
//!    best of each is kept. A profile follows, on the first 1000 rows: parse + prepare CPU
//!    per message (offline), the applier alone on PostgreSQL (no broker) with every statement
//!    timed through Diesel's instrumentation, the same batches written by a yardstick statement
//!    (`INSERT ... SELECT FROM unnest(<one array per column>)`, not the library's code), and
//!    one runtime run through a probe that times every `apply` call.
//! 5. **End to end**: a master model on PostgreSQL (another schema), an in-process
//!    `OutboxRelay`, a replica runtime on its own queue and exchange.
//!    - *Lag*: `BENCH_WRITERS` writer threads, each with its own connection and a ticker, do
//!      `save_and_publish` at `BENCH_LAG_RATE` writes/s in total for `BENCH_LAG_SECONDS`,
//!      spread over 100 rows. Each writer records (pk, revision, instant) right after its
//!      commit. The replica side is the `Replicas` registry wrapped in a probe (an `Applier`
//!      that delegates everything and, when an `apply` returns `Ok`, i.e. after the replica
//!      transaction committed and before the acks, records (pk, revision, instant) of every
//!      message of the batch). Lag = applied instant − commit instant, same monotonic clock,
//!      no polling (the probe costs two `Instant::now` and a vector push per message).
//!    - *Throughput*: `BENCH_E2E_WRITES` saves from the writer threads as fast as they go
//!      (first write → last message applied), and the same count of messages pre-written to
//!      the outbox in one transaction (commit → last applied: relay + broker + runtime only),
//!      against a raw lapin pipeline of the same count and body size: a publisher with
//!      confirms (1000 in flight) and a consumer with pipelined acks, as two concurrent tasks
//!      (first publish → last ack); and against the same writers doing what a service without
//!      this library would (one autocommitted upsert per save, no outbox). The CPU seconds of
//!      the replicated writes are read from `/proc/<pid>/stat` of this process (writers, relay
//!      and worker), the PostgreSQL server processes and the RabbitMQ node, before and after.
//!    - *Profile*: `save_and_publish` alone on one connection, statements timed.
//!
//! Run: `cargo bench -p cqrs-diesel --bench replica`; the issue's end-to-end settings are
//! `BENCH_WRITERS=8` (lag at 1,000 writes/s from 8 writers).
//! Settings (environment): `PG_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`;
//! two schemas of its own are created and dropped), `AMQP_URL` (default the local broker;
//! exchanges and queues of its own are deleted at the end), `BENCH_MESSAGES` (50000),
//! `BENCH_ROWS` (5000), `BENCH_UNBATCHED` (1000), `BENCH_ROUNDS` (3), `BENCH_LAG_RATE` (1000),
//! `BENCH_LAG_SECONDS` (10), `BENCH_WRITERS` (4), `BENCH_E2E_WRITES` (10000),
//! `BENCH_E2E_ROUNDS` (1), `BENCH_E2E_WORKERS` (1), `BENCH_E2E_BATCH_WAIT_MS` (the
//! configuration's batch wait, 5 ms).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_diesel::outbox::NewOutboxEntry;
use cqrs_diesel::replica::Prepared;
use cqrs_diesel::runtime::{Applied, Applier, BatchError, Incoming, ModelPolicy};
use cqrs_diesel::transport::OutgoingMessage;
use cqrs_diesel::wire::Payload;
use cqrs_diesel::{
    Config, ConsumerRuntime, ConsumerStats, CqrsConnection, MasterModel, OutboxRelay,
    RabbitMqTransport, ReplicaModel, Replicas, Topology, Transport,
};
use diesel::connection::{InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::result::ConnectionError;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ConnectionProperties, ExchangeKind};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod replica_schema {
    diesel::table! {
        author (id) {
            id -> Integer,
            name -> Text,
            email -> Nullable<Text>,
            birth_date -> Nullable<Date>,
            joined_at -> Timestamptz,
            active -> Bool,
            score -> Double,
            external_id -> Uuid,
            bio -> Nullable<Text>,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

mod master_schema {
    diesel::table! {
        author (id) {
            id -> Integer,
            name -> Text,
            email -> Nullable<Text>,
            birth_date -> Nullable<Date>,
            joined_at -> Timestamptz,
            active -> Bool,
            score -> Double,
            external_id -> Uuid,
            bio -> Nullable<Text>,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

/// The replica of the golden fixture's `author`.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", table = replica_schema::author, backends(postgres))]
struct AuthorReplica {
    id: i32,
    name: String,
    email: Option<String>,
    birth_date: Option<NaiveDate>,
    joined_at: DateTime<Utc>,
    active: bool,
    score: f64,
    external_id: Uuid,
    bio: Option<String>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// The master of the golden fixture's `author`.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "author", table = master_schema::author, tracked(name), backends(postgres))]
struct Author {
    id: i32,
    name: String,
    email: Option<String>,
    birth_date: Option<NaiveDate>,
    joined_at: DateTime<Utc>,
    active: bool,
    score: f64,
    external_id: Uuid,
    bio: Option<String>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

const AUTHOR_DDL: &str = "CREATE TABLE author (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, birth_date DATE,
    joined_at TIMESTAMPTZ NOT NULL, active BOOLEAN NOT NULL, score DOUBLE PRECISION NOT NULL,
    external_id UUID NOT NULL, bio TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0,
    cqrs_updated TIMESTAMPTZ NOT NULL)";

const BIO: &str =
    r#"Hello \"world\"\nnew line, unicode: \u041f\u0440\u0438\u0432\u0435\u0442 \u2713"#;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    messages: usize,
    rows: usize,
    unbatched: usize,
    rounds: usize,
    lag_rate: u64,
    lag_seconds: u64,
    writers: usize,
    e2e_writes: usize,
    e2e_rounds: usize,
    e2e_workers: usize,
    e2e_batch_wait_ms: Option<u64>,
}

impl Settings {
    fn from_env() -> Settings {
        let writers = env_or("BENCH_WRITERS", 4usize).max(1);
        Settings {
            messages: env_or("BENCH_MESSAGES", 50_000usize).max(1),
            rows: env_or("BENCH_ROWS", 5_000usize).max(1),
            unbatched: env_or("BENCH_UNBATCHED", 1_000usize).max(10),
            rounds: env_or("BENCH_ROUNDS", 3usize).max(1),
            lag_rate: env_or("BENCH_LAG_RATE", 1_000u64).max(1),
            lag_seconds: env_or("BENCH_LAG_SECONDS", 10u64).max(1),
            writers,
            e2e_writes: env_or("BENCH_E2E_WRITES", 10_000usize).max(writers),
            e2e_rounds: env_or("BENCH_E2E_ROUNDS", 1usize).max(1),
            e2e_workers: env_or("BENCH_E2E_WORKERS", 1usize).max(1),
            e2e_batch_wait_ms: std::env::var("BENCH_E2E_BATCH_WAIT_MS")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// A SAVE of author `id` at `revision` as django-cqrs 3.1 writes it. Like the golden fixture,
/// odd rows have every optional field set and even rows have them null (bodies of about 550
/// and 440 bytes).
fn body(id: usize, revision: usize, expires: &str) -> String {
    let previous = if revision == 0 {
        "null".to_owned()
    } else {
        format!("\"Author {id} v{}\"", revision - 1)
    };
    let (email, birth_date, bio) = if id % 2 == 1 {
        (
            format!("\"author.{id}@example.com\""),
            "\"1990-05-17\"".to_owned(),
            format!("\"{BIO}\""),
        )
    } else {
        ("null".to_owned(), "null".to_owned(), "null".to_owned())
    };
    let second = revision % 60;
    format!(
        concat!(
            r#"{{"signal_type":"SAVE","cqrs_id":"author","instance_data":{{"#,
            r#""cqrs_revision":{revision},"cqrs_updated":"2026-11-28 18:21:{second:02}.{micros:06}+00:00","#,
            r#""id":{id},"name":"Author {id} v{revision}","email":{email},"birth_date":{birth_date},"#,
            r#""joined_at":"2024-01-02 03:04:05.678901+00:00","active":true,"score":4.5,"#,
            r#""external_id":"12345678-1234-5678-1234-567812345678","bio":{bio}}},"#,
            r#""previous_data":{{"name":{previous}}},"instance_pk":{id},"correlation_id":null,"#,
            r#""retries":0,"expires":"{expires}","meta":{{}}}}"#
        ),
        revision = revision,
        second = second,
        micros = id % 1_000_000,
        id = id,
        email = email,
        birth_date = birth_date,
        bio = bio,
        previous = previous,
        expires = expires,
    )
}

/// `rows` rows (ids from `first`) × `revisions`, interleaved: every row at revision 0, then
/// every row at revision 1, ...
fn fixture(first: usize, rows: usize, revisions: usize, expires: &str) -> Vec<String> {
    (0..revisions)
        .flat_map(|revision| (first..first + rows).map(move |id| body(id, revision, expires)))
        .collect()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

type Connect = Arc<dyn Fn() -> Result<PgConnection, ConnectionError> + Send + Sync>;

fn connector(url: &str, schema: &str) -> Connect {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    Arc::new(move || {
        let mut conn = PgConnection::establish(&url)?;
        conn.batch_execute(&format!("SET search_path TO {schema}"))
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    })
}

/// Drops the benchmark's schemas at the end, also when the benchmark fails.
struct Schemas {
    url: String,
    names: Vec<String>,
}

impl Drop for Schemas {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.url) {
            for name in &self.names {
                let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
            }
        }
    }
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await?
}

/// Empties the replica table and its states (not timed).
async fn reset_replica(connect: &Connect) -> Result<(), BoxError> {
    let connect = Arc::clone(connect);
    blocking(move || {
        connect()?.batch_execute("TRUNCATE author; TRUNCATE cqrs_replica_state;")?;
        Ok(())
    })
    .await
}

/// The replica table's row count and sum of revisions.
async fn replica_state(connect: &Connect) -> Result<(i64, i64), BoxError> {
    use replica_schema::author::dsl;
    let connect = Arc::clone(connect);
    blocking(move || {
        let mut conn = connect()?;
        let count: i64 = dsl::author.count().get_result(&mut conn)?;
        let sum: Option<i64> = dsl::author
            .select(diesel::dsl::sum(dsl::cqrs_revision))
            .get_result(&mut conn)?;
        Ok((count, sum.unwrap_or(0)))
    })
    .await
}

/// Checks that the replica holds `rows` rows, each at revision `revisions - 1`.
async fn check_replica(connect: &Connect, rows: usize, revisions: usize) -> Result<(), BoxError> {
    let (count, sum) = replica_state(connect).await?;
    let expected = (rows as i64, (rows * (revisions - 1)) as i64);
    if (count, sum) != expected {
        return Err(format!(
            "replica table holds {count} rows with revisions summing to {sum}, expected {expected:?}"
        )
        .into());
    }
    Ok(())
}

/// Applies through the wrapped applier and records when each `apply` ran, and, optionally,
/// when each message's batch was committed.
struct Probe<A> {
    inner: A,
    log: Arc<ProbeLog>,
}

#[derive(Default)]
struct ProbeLog {
    /// Record (pk, revision, committed) of every applied message.
    record_messages: bool,
    prepare_nanos: AtomicU64,
    /// (worker, started, ended, size) of every successful apply.
    applies: Mutex<Vec<(usize, Instant, Instant, usize)>>,
    /// (pk, revision, committed)
    messages: Mutex<Vec<(i64, i64, Instant)>>,
}

struct Probed<P> {
    inner: Arc<P>,
    pk: i64,
    revision: i64,
}

impl<A: Applier> Applier for Probe<A> {
    type Prepared = Probed<A::Prepared>;

    fn cqrs_ids(&self) -> Vec<String> {
        self.inner.cqrs_ids()
    }

    fn policy(&self, cqrs_id: &str) -> Option<ModelPolicy> {
        self.inner.policy(cqrs_id)
    }

    fn prepare(&self, incoming: &Incoming) -> Result<Self::Prepared, String> {
        let started = Instant::now();
        let inner = self.inner.prepare(incoming)?;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.log.prepare_nanos.fetch_add(nanos, Ordering::Relaxed);
        let payload = &incoming.payload;
        Ok(Probed {
            inner: Arc::new(inner),
            pk: payload.instance_pk.as_i64().unwrap_or(-1),
            revision: payload
                .instance_data
                .get("cqrs_revision")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(-1),
        })
    }

    async fn apply(
        &self,
        worker: usize,
        batch: Vec<Arc<Self::Prepared>>,
    ) -> Result<Vec<Applied>, BatchError> {
        let inner: Vec<Arc<A::Prepared>> = batch.iter().map(|p| Arc::clone(&p.inner)).collect();
        let started = Instant::now();
        let result = self.inner.apply(worker, inner).await;
        let ended = Instant::now();
        if result.is_ok() {
            if let Ok(mut applies) = self.log.applies.lock() {
                applies.push((worker, started, ended, batch.len()));
            }
            if self.log.record_messages
                && let Ok(mut messages) = self.log.messages.lock()
            {
                messages.extend(batch.iter().map(|p| (p.pk, p.revision, ended)));
            }
        }
        result
    }
}

/// What every part needs.
struct Bench {
    settings: Settings,
    amqp_url: String,
    replica: Connect,
    master: Connect,
    expires: String,
    /// Exchanges and queues to delete at the end.
    exchanges: Vec<String>,
    queues: Vec<String>,
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
    let tag = std::process::id();
    let (replica_schema, master_schema) = (
        format!("bench_replica_r_{tag}"),
        format!("bench_replica_m_{tag}"),
    );
    let _schemas = Schemas {
        url: pg_url.clone(),
        names: vec![replica_schema.clone(), master_schema.clone()],
    };
    PgConnection::establish(&pg_url)?.batch_execute(&format!(
        "CREATE SCHEMA {replica_schema}; CREATE SCHEMA {master_schema};"
    ))?;
    let replica = connector(&pg_url, &replica_schema);
    let master = connector(&pg_url, &master_schema);
    {
        let mut conn = replica()?;
        conn.batch_execute(AUTHOR_DDL)?;
        conn.run_replica_migrations()?;
        let mut conn = master()?;
        conn.batch_execute(AUTHOR_DDL)?;
        conn.run_outbox_migrations()?;
    }
    let expires = (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    let mut bench = Bench {
        settings: Settings::from_env(),
        amqp_url,
        replica,
        master,
        expires,
        exchanges: Vec::new(),
        queues: Vec::new(),
    };
    let result = run_parts(&mut bench, tag).await;
    let cleanup = cleanup_broker(&bench).await;
    result?;
    cleanup
}

async fn run_parts(bench: &mut Bench, tag: u32) -> Result<(), BoxError> {
    let apply = apply_parts(bench, tag).await?;
    let e2e = end_to_end(bench, tag).await?;
    summary(&apply, &e2e);
    Ok(())
}

async fn cleanup_broker(bench: &Bench) -> Result<(), BoxError> {
    let connection =
        lapin::Connection::connect(&bench.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in &bench.queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in &bench.exchanges {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// The replica service's configuration on its own exchange and queue; the queue and its
/// dead-letter queue are noted for deletion.
fn replica_config(bench: &mut Bench, exchange: String, queue: String) -> Result<Config, BoxError> {
    let config = Config::builder()
        .amqp_url(&bench.amqp_url)
        .exchange(exchange.clone())
        .queue(queue)
        .build()?;
    bench.exchanges.push(exchange);
    bench
        .queues
        .extend(config.queue().into_iter().map(str::to_owned));
    bench
        .queues
        .extend(config.dead_letter_queue().into_iter().map(str::to_owned));
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Parts 2–4: draining a pre-filled queue.
// ---------------------------------------------------------------------------------------------

/// How the raw consumer acknowledges.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Acks {
    /// Every ack future is polled concurrently with the consumer.
    Pipelined,
    /// Each ack is awaited before the next delivery is taken.
    OneByOne,
}

/// Consumes `count` deliveries from `queue` on a connection of its own and acknowledges each;
/// returns the time from the first delivery to the last ack.
async fn raw_drain(
    url: &str,
    queue: &str,
    count: usize,
    prefetch: u16,
    acks: Acks,
) -> Result<Duration, BoxError> {
    let connection = lapin::Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let elapsed = consume_and_ack(&mut consumer, count, acks).await?;
    channel.close(200, "done".into()).await?;
    connection.close(200, "done".into()).await?;
    Ok(elapsed)
}

async fn consume_and_ack(
    consumer: &mut lapin::Consumer,
    count: usize,
    acks: Acks,
) -> Result<Duration, BoxError> {
    let mut started = None;
    if acks == Acks::OneByOne {
        for _ in 0..count {
            let delivery = consumer.next().await.ok_or("the consumer ended")??;
            started.get_or_insert_with(Instant::now);
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
    } else {
        let mut in_flight = FuturesUnordered::new();
        let (mut received, mut acked) = (0usize, 0usize);
        while acked < count {
            tokio::select! {
                Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
                    let _: bool = ack?;
                    acked += 1;
                }
                delivery = consumer.next(), if received < count => {
                    let delivery = delivery.ok_or("the consumer ended")??;
                    started.get_or_insert_with(Instant::now);
                    received += 1;
                    in_flight.push(async move {
                        delivery.acker.ack(BasicAckOptions::default()).await
                    });
                }
                else => return Err("nothing left to wait for".into()),
            }
        }
    }
    Ok(started.map_or(Duration::ZERO, |started| started.elapsed()))
}

/// Runs a consumer runtime on the filled queue until `count` messages are settled; returns the
/// time from the first delivery received to the last settled, and the runtime's counters.
async fn runtime_drain<A: Applier>(
    transport: &RabbitMqTransport,
    config: &Config,
    applier: A,
    batch_size: usize,
    workers: usize,
    count: usize,
) -> Result<(Duration, ConsumerStats), BoxError> {
    let handle = ConsumerRuntime::new(transport.clone(), config.clone(), applier)
        .batch_size(batch_size)
        .workers(workers)
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(300);
    let tick = Duration::from_millis(1);
    let started = loop {
        if handle.stats().received > 0 {
            break Instant::now();
        }
        if handle.is_finished() || Instant::now() > deadline {
            return Err(format!(
                "the runtime received nothing: {:?}",
                handle.shutdown().await
            )
            .into());
        }
        tokio::time::sleep(tick).await;
    };
    loop {
        let stats = handle.stats();
        if stats.applied() + stats.dead_lettered >= count as u64 {
            break;
        }
        if handle.is_finished() || Instant::now() > deadline {
            return Err(format!("the runtime stalled: {:?}", handle.shutdown().await).into());
        }
        tokio::time::sleep(tick).await;
    }
    let elapsed = started.elapsed();
    let stats = handle.shutdown().await?;
    if stats.dead_lettered > 0 || stats.retried > 0 {
        return Err(format!("messages failed: {stats:?}").into());
    }
    Ok((elapsed, stats))
}

/// A runtime configuration of part 3 or 4 (`every_round: false`: first round only).
#[derive(Clone, Copy)]
struct Variant {
    batch: usize,
    workers: usize,
    every_round: bool,
}

impl Variant {
    fn label(&self) -> String {
        format!("b{} w{}", self.batch, self.workers)
    }
}

const BATCHED: [Variant; 4] = [
    Variant {
        batch: 100,
        workers: 1,
        every_round: true,
    },
    Variant {
        batch: 100,
        workers: 2,
        every_round: true,
    },
    Variant {
        batch: 500,
        workers: 1,
        every_round: false,
    },
    Variant {
        batch: 500,
        workers: 2,
        every_round: false,
    },
];
const UNBATCHED: [Variant; 2] = [
    Variant {
        batch: 1,
        workers: 1,
        every_round: true,
    },
    Variant {
        batch: 1,
        workers: 2,
        every_round: true,
    },
];

/// The best rates of parts 2–4.
struct ApplyFigures {
    messages: usize,
    raw: f64,
    raw_one_by_one: f64,
    /// (variant, best rate)
    batched: Vec<(Variant, f64)>,
    unbatched: Vec<(Variant, f64)>,
}

struct Drain<'a> {
    bench: &'a Bench,
    transport: &'a RabbitMqTransport,
    config: &'a Config,
    queue: &'a str,
    replicas: &'a Replicas<PgConnection>,
}

impl Drain<'_> {
    async fn fill(&self, messages: &[OutgoingMessage]) -> Result<(), BoxError> {
        self.transport.publish_all(messages, 1000).await?;
        Ok(())
    }

    async fn raw(&self, messages: &[OutgoingMessage], acks: Acks) -> Result<f64, BoxError> {
        self.fill(messages).await?;
        let elapsed = raw_drain(
            &self.bench.amqp_url,
            self.queue,
            messages.len(),
            self.config.prefetch(),
            acks,
        )
        .await?;
        Ok(rate(messages.len(), elapsed))
    }

    async fn ours(
        &self,
        messages: &[OutgoingMessage],
        rows: usize,
        variant: Variant,
    ) -> Result<(f64, ConsumerStats), BoxError> {
        reset_replica(&self.bench.replica).await?;
        self.fill(messages).await?;
        let (elapsed, stats) = runtime_drain(
            self.transport,
            self.config,
            self.replicas.clone(),
            variant.batch,
            variant.workers,
            messages.len(),
        )
        .await?;
        check_replica(&self.bench.replica, rows, messages.len() / rows).await?;
        Ok((rate(messages.len(), elapsed), stats))
    }
}

fn batches_note(stats: &ConsumerStats) -> String {
    format!(
        "{} batches, avg {:.1}/batch; created {} updated {} superseded {}",
        stats.batches,
        stats.applied() as f64 / stats.batches.max(1) as f64,
        stats.created,
        stats.updated,
        stats.superseded,
    )
}

async fn apply_parts(bench: &mut Bench, tag: u32) -> Result<ApplyFigures, BoxError> {
    let settings = &bench.settings;
    let rows = settings.rows.min(settings.messages);
    let revisions = (settings.messages / rows).max(1);
    let count = rows * revisions;
    let unbatched_rows = (settings.unbatched / 10).max(1);
    let unbatched_count = unbatched_rows * 10;
    let rounds = settings.rounds;
    let bodies = fixture(1, rows, revisions, &bench.expires);
    let mean = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
    let messages: Vec<OutgoingMessage> = bodies
        .into_iter()
        .map(|b| OutgoingMessage::new("author", b.into_bytes()))
        .collect();
    let small: Vec<OutgoingMessage> = fixture(1, unbatched_rows, 10, &bench.expires)
        .into_iter()
        .map(|b| OutgoingMessage::new("author", b.into_bytes()))
        .collect();

    let config = replica_config(
        bench,
        format!("bench_replica_x_{tag}"),
        format!("bench_replica_q_{tag}"),
    )?;
    let transport = RabbitMqTransport::connect(config.clone()).await?;
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await?;
    let queue = config.queue().ok_or("a queue")?.to_owned();
    let bench: &Bench = bench;
    let replicas = Replicas::new({
        let connect = Arc::clone(&bench.replica);
        move || connect()
    })
    .register::<AuthorReplica>();
    let drain = Drain {
        bench,
        transport: &transport,
        config: &config,
        queue: &queue,
        replicas: &replicas,
    };

    println!(
        "== replica apply: {count} SAVE messages of {mean} bytes on average ({rows} rows x \
         {revisions} revisions, interleaved) per run, PostgreSQL, prefetch {}, batch wait {:?}, \
         {rounds} rounds (batch 500 and raw with acks one by one: first round only); without \
         batching {unbatched_count} messages ({unbatched_rows} rows x 10)",
        config.prefetch(),
        config.batch_wait()
    );
    let (mut raw_best, mut one_by_one_best) = (0f64, 0f64);
    let mut batched_best = vec![0f64; BATCHED.len()];
    let mut unbatched_best = vec![0f64; UNBATCHED.len()];
    for round in 1..=rounds {
        let raw_first = round % 2 == 1;
        let mut raw_rate = 0f64;
        let mut one_by_one = None;
        if raw_first {
            raw_rate = drain.raw(&messages, Acks::Pipelined).await?;
        }
        if round == 1 {
            one_by_one = Some(drain.raw(&messages, Acks::OneByOne).await?);
        }
        let mut ours = Vec::new();
        for (i, variant) in BATCHED.iter().enumerate() {
            if variant.every_round || round == 1 {
                let (r, stats) = drain.ours(&messages, rows, *variant).await?;
                batched_best[i] = batched_best[i].max(r);
                ours.push((variant.label(), r, stats));
            }
        }
        for (i, variant) in UNBATCHED.iter().enumerate() {
            if variant.every_round || round == 1 {
                let (r, stats) = drain.ours(&small, unbatched_rows, *variant).await?;
                unbatched_best[i] = unbatched_best[i].max(r);
                ours.push((variant.label(), r, stats));
            }
        }
        if !raw_first {
            raw_rate = drain.raw(&messages, Acks::Pipelined).await?;
        }
        raw_best = raw_best.max(raw_rate);
        let one_by_one_note = match one_by_one {
            Some(r) => {
                one_by_one_best = one_by_one_best.max(r);
                format!(" (acks awaited one by one: {r:.0} msg/s)")
            }
            None => String::new(),
        };
        println!(
            "round {round} ({}): raw lapin consume+ack {raw_rate:>7.0} msg/s{one_by_one_note}",
            if raw_first { "raw first" } else { "raw last" },
        );
        for (label, r, stats) in &ours {
            println!(
                "  runtime {label:<8} {r:>7.0} msg/s  {:>5.1}% of raw  ({})",
                100.0 * r / raw_rate,
                batches_note(stats)
            );
        }
    }
    println!("best of {rounds} rounds:");
    println!("  raw lapin consume+ack (pipelined acks)    {raw_best:>7.0} msg/s");
    println!("  raw lapin consume+ack (acks one by one)   {one_by_one_best:>7.0} msg/s");
    for (variant, best) in BATCHED.iter().zip(&batched_best) {
        println!(
            "  apply with batching    {:<8}           {best:>7.0} msg/s  {:>5.1}% of raw",
            variant.label(),
            100.0 * best / raw_best
        );
    }
    for (variant, best) in UNBATCHED.iter().zip(&unbatched_best) {
        println!(
            "  apply without batching {:<8}           {best:>7.0} msg/s  {:>5.1}% of raw",
            variant.label(),
            100.0 * best / raw_best
        );
    }

    profile(&drain, &messages).await?;
    transport.close().await;

    Ok(ApplyFigures {
        messages: count,
        raw: raw_best,
        raw_one_by_one: one_by_one_best,
        batched: BATCHED.iter().copied().zip(batched_best).collect(),
        unbatched: UNBATCHED.iter().copied().zip(unbatched_best).collect(),
    })
}

/// Statement times by kind (the statement's first word), from Diesel's instrumentation.
#[derive(Default)]
struct SqlTimes {
    by_kind: Mutex<std::collections::BTreeMap<String, (u64, Duration)>>,
}

impl SqlTimes {
    fn take(&self) -> Vec<(String, u64, Duration)> {
        match self.by_kind.lock() {
            Ok(mut map) => std::mem::take(&mut *map)
                .into_iter()
                .map(|(kind, (n, d))| (kind, n, d))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Keeps the first few characters written to it, then refuses more (so that formatting a
/// query with all its binds stops early).
struct Head(String);

impl std::fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.0.len() >= 12 {
                return Err(std::fmt::Error);
            }
            self.0.push(c);
        }
        Ok(())
    }
}

/// A connector whose connections report every statement's time to `times`.
fn instrumented(connect: &Connect, times: &Arc<SqlTimes>) -> Connect {
    let (connect, times) = (Arc::clone(connect), Arc::clone(times));
    Arc::new(move || {
        let mut conn = connect()?;
        let times = Arc::clone(&times);
        let mut current: Option<(Instant, String)> = None;
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let mut head = Head(String::new());
                let _ = std::fmt::write(&mut head, format_args!("{query}"));
                let kind = head
                    .0
                    .split_whitespace()
                    .next()
                    .unwrap_or("?")
                    .to_ascii_uppercase();
                current = Some((Instant::now(), kind));
            }
            InstrumentationEvent::FinishQuery { .. } => {
                if let Some((started, kind)) = current.take()
                    && let Ok(mut map) = times.by_kind.lock()
                {
                    let entry = map.entry(kind).or_default();
                    entry.0 += 1;
                    entry.1 += started.elapsed();
                }
            }
            _ => {}
        });
        Ok(conn)
    })
}

/// "BEGIN 0.05 + SELECT 0.60 + ..." in ms per batch, and the rest of `total`.
fn breakdown(times: &[(String, u64, Duration)], batches: usize, total: Duration) -> String {
    let per = |d: Duration| ms(d) / batches.max(1) as f64;
    let mut parts: Vec<String> = times
        .iter()
        .map(|(kind, _, d)| format!("{kind} {:.2}", per(*d)))
        .collect();
    let statements: Duration = times.iter().map(|t| t.2).sum();
    parts.push(format!(
        "outside statements {:.2}",
        per(total.saturating_sub(statements))
    ));
    parts.join(" + ")
}

/// The same batches written with one constant statement whose rows come as one array per
/// column (`unnest`), with a revision guard and a tombstone check, after the same
/// stored-revisions query, in one transaction per batch. Not the library's code: a yardstick
/// for the statement shape.
fn unnest_batches(
    conn: &mut PgConnection,
    rows: &[AuthorReplica],
    batch: usize,
) -> QueryResult<()> {
    use diesel::sql_types::{
        Array, BigInt, Bool, Date, Double, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
    };
    use replica_schema::author::dsl;
    const UPSERT: &str = "INSERT INTO author AS t (id, name, email, birth_date, joined_at, \
        active, score, external_id, bio, cqrs_revision, cqrs_updated) \
        SELECT v.id, v.name, v.email, v.birth_date, v.joined_at, v.active, v.score, \
        v.external_id, v.bio, v.cqrs_revision, v.cqrs_updated \
        FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) AS v(id, name, \
        email, birth_date, joined_at, active, score, external_id, bio, cqrs_revision, \
        cqrs_updated, pk_text, updated_us) \
        WHERE NOT EXISTS (SELECT 1 FROM cqrs_replica_state ts WHERE ts.cqrs_id = $14 \
        AND ts.pk = v.pk_text AND ts.deleted \
        AND (ts.updated_us, ts.revision) >= (v.updated_us, v.cqrs_revision)) \
        ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, \
        birth_date = excluded.birth_date, joined_at = excluded.joined_at, \
        active = excluded.active, score = excluded.score, external_id = excluded.external_id, \
        bio = excluded.bio, cqrs_revision = excluded.cqrs_revision, \
        cqrs_updated = excluded.cqrs_updated \
        WHERE t.cqrs_revision < excluded.cqrs_revision RETURNING id";
    for chunk in rows.chunks(batch) {
        conn.transaction(|conn| {
            let ids: Vec<i32> = chunk.iter().map(|r| r.id).collect();
            let _stored: Vec<(i32, i32)> = dsl::author
                .filter(dsl::id.eq_any(&ids))
                .select((dsl::id, dsl::cqrs_revision))
                .load(conn)?;
            diesel::sql_query(UPSERT)
                .bind::<Array<Integer>, _>(ids)
                .bind::<Array<Text>, _>(chunk.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
                .bind::<Array<Nullable<Text>>, _>(
                    chunk.iter().map(|r| r.email.clone()).collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Date>>, _>(
                    chunk.iter().map(|r| r.birth_date).collect::<Vec<_>>(),
                )
                .bind::<Array<Timestamptz>, _>(
                    chunk.iter().map(|r| r.joined_at).collect::<Vec<_>>(),
                )
                .bind::<Array<Bool>, _>(chunk.iter().map(|r| r.active).collect::<Vec<_>>())
                .bind::<Array<Double>, _>(chunk.iter().map(|r| r.score).collect::<Vec<_>>())
                .bind::<Array<SqlUuid>, _>(chunk.iter().map(|r| r.external_id).collect::<Vec<_>>())
                .bind::<Array<Nullable<Text>>, _>(
                    chunk.iter().map(|r| r.bio.clone()).collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(
                    chunk.iter().map(|r| r.cqrs_revision).collect::<Vec<_>>(),
                )
                .bind::<Array<Timestamptz>, _>(
                    chunk.iter().map(|r| r.cqrs_updated).collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(chunk.iter().map(|r| r.id.to_string()).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(
                    chunk
                        .iter()
                        .map(|r| r.cqrs_updated.timestamp_micros())
                        .collect::<Vec<_>>(),
                )
                .bind::<Text, _>("author")
                .execute(conn)?;
            Ok::<_, diesel::result::Error>(())
        })?;
    }
    Ok(())
}

/// Rows of the profile's subset: the first `PROFILE_ROWS` rows, all their revisions.
const PROFILE_ROWS: i64 = 1000;

/// Where the time of the apply goes.
async fn profile(drain: &Drain<'_>, messages: &[OutgoingMessage]) -> Result<(), BoxError> {
    println!("profile:");
    // The dispatcher's CPU per message, offline: parse the body, then the model's prepare.
    let (mut parse, mut prepare) = (Duration::ZERO, Duration::ZERO);
    let mut subset = Vec::new();
    let mut subset_messages = Vec::new();
    for message in messages {
        let started = Instant::now();
        let payload = Payload::from_slice(&message.body)?;
        let parsed = Instant::now();
        let incoming = Incoming {
            payload,
            direct: false,
            received_at: Utc::now(),
            seq: None,
        };
        let item = drain.replicas.prepare(&incoming)?;
        prepare += parsed.elapsed();
        parse += parsed - started;
        let pk = incoming.payload.instance_pk.as_i64().unwrap_or(0);
        if pk <= PROFILE_ROWS {
            let row = AuthorReplica::cqrs_decode(&incoming.payload.instance_data)?;
            subset.push((pk, Arc::new(item), row));
            subset_messages.push(message.clone());
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / messages.len() as f64;
    println!(
        "  dispatcher CPU (offline, one thread): parse {:.2} us/msg + prepare {:.2} us/msg = {:.0} msg/s",
        per(parse),
        per(prepare),
        1e6 / (per(parse) + per(prepare))
    );
    let distinct = |max_pk: i64| {
        subset
            .iter()
            .filter(|(pk, _, _)| *pk <= max_pk)
            .map(|(pk, _, _)| *pk)
            .collect::<std::collections::HashSet<i64>>()
            .len()
            .max(1)
    };
    let rows = distinct(PROFILE_ROWS);
    let revisions = subset.len() / rows;

    // The applier alone on PostgreSQL, batches one after another, statements timed.
    let times = Arc::new(SqlTimes::default());
    let replicas = Replicas::new({
        let connect = instrumented(&drain.bench.replica, &times);
        move || connect()
    })
    .register::<AuthorReplica>();
    println!(
        "  applier alone (no broker), {} messages ({rows} rows x {revisions}; batch 1: rows up to \
         id 100 only), ms per batch by statement:",
        subset.len()
    );
    for batch in [1usize, 100, 500] {
        let items: Vec<Arc<Prepared>> = subset
            .iter()
            .filter(|(pk, _, _)| batch > 1 || *pk <= 100)
            .map(|(_, item, _)| Arc::clone(item))
            .collect();
        reset_replica(&drain.bench.replica).await?;
        let _ = times.take();
        let started = Instant::now();
        for chunk in items.chunks(batch) {
            replicas.apply(0, chunk.to_vec()).await?;
        }
        let elapsed = started.elapsed();
        let batches = items.len().div_ceil(batch);
        let sql = times.take();
        let rows = if batch > 1 { rows } else { distinct(100) };
        check_replica(&drain.bench.replica, rows, items.len() / rows).await?;
        println!(
            "    Replicas::apply, batch {batch:>3}: {:>6.0} msg/s, {:.2} ms/batch = {}",
            rate(items.len(), elapsed),
            ms(elapsed) / batches as f64,
            breakdown(&sql, batches, elapsed)
        );
    }
    let plain: Vec<AuthorReplica> = subset.iter().map(|(_, _, row)| row.clone()).collect();
    for batch in [100usize, 500] {
        reset_replica(&drain.bench.replica).await?;
        let connect = instrumented(&drain.bench.replica, &times);
        let _ = times.take();
        let rows_in = plain.clone();
        let elapsed = blocking(move || {
            let mut conn = connect()?;
            let started = Instant::now();
            unnest_batches(&mut conn, &rows_in, batch)?;
            Ok(started.elapsed())
        })
        .await?;
        let batches = plain.len().div_ceil(batch);
        let sql = times.take();
        check_replica(&drain.bench.replica, rows, revisions).await?;
        println!(
            "    yardstick, unnest() upsert, batch {batch:>3}: {:>6.0} msg/s, {:.2} ms/batch = {}",
            rate(plain.len(), elapsed),
            ms(elapsed) / batches as f64,
            breakdown(&sql, batches, elapsed)
        );
    }
    drop(subset);

    // One runtime run (batch 100, 1 worker) through the probe, on the subset.
    let log = Arc::new(ProbeLog::default());
    let probe = Probe {
        inner: drain.replicas.clone(),
        log: Arc::clone(&log),
    };
    reset_replica(&drain.bench.replica).await?;
    drain.fill(&subset_messages).await?;
    let (elapsed, stats) = runtime_drain(
        drain.transport,
        drain.config,
        probe,
        100,
        1,
        subset_messages.len(),
    )
    .await?;
    check_replica(&drain.bench.replica, rows, revisions).await?;
    let applies = log.applies.lock().map_err(|_| "probe poisoned")?.clone();
    let in_apply: Duration = applies.iter().map(|(_, s, e, _)| *e - *s).sum();
    let gaps: Duration = applies
        .windows(2)
        .map(|w| w[1].1.saturating_duration_since(w[0].2))
        .sum();
    let sizes: usize = applies.iter().map(|a| a.3).sum();
    println!(
        "  runtime b100 w1 through a timing probe, {} messages: {:.0} msg/s over {:.0} ms; {} \
         batches (avg {:.1}); inside apply {:.0} ms ({:.0}%, {:.2} ms/batch); between applies \
         (acks, next batch) {:.0} ms ({:.0}%, {:.3} ms/batch); prepare {:.2} us/msg in the \
         dispatcher",
        subset_messages.len(),
        rate(subset_messages.len(), elapsed),
        ms(elapsed),
        stats.batches,
        sizes as f64 / applies.len().max(1) as f64,
        ms(in_apply),
        100.0 * in_apply.as_secs_f64() / elapsed.as_secs_f64(),
        ms(in_apply) / applies.len().max(1) as f64,
        ms(gaps),
        100.0 * gaps.as_secs_f64() / elapsed.as_secs_f64(),
        ms(gaps) / applies.len().saturating_sub(1).max(1) as f64,
        log.prepare_nanos.load(Ordering::Relaxed) as f64 / 1e3 / subset_messages.len() as f64,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 5: end to end.
// ---------------------------------------------------------------------------------------------

struct E2eFigures {
    lag: Vec<Duration>,
    lag_missing: usize,
    lag_negative: usize,
    writes_per_second: f64,
    writes: usize,
    raw: f64,
    ours_writers: f64,
    ours_outbox: f64,
}

/// One row of the golden fixture's shape, for the master side (optional fields set on odd
/// rows, null on even ones).
fn author(id: i32) -> Author {
    let full = id % 2 == 1;
    Author {
        id,
        name: format!("Author {id}"),
        email: full.then(|| format!("author.{id}@example.com")),
        birth_date: NaiveDate::from_ymd_opt(1990, 5, 17).filter(|_| full),
        joined_at: Utc::now(),
        active: true,
        score: 4.5,
        external_id: Uuid::from_u128(0x1234_5678_1234_5678_1234_5678_1234_5678),
        bio: full.then(|| "Hello \"world\"\nnew line, unicode: Привет ✓".to_owned()),
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    }
}

/// (pk, revision, committed) of one master write.
type Write = (i64, i64, Instant);

/// A writer thread: `save_and_publish` of its rows in turn, on its own connection; one write
/// every `period` from `first` until `until` (or `count` writes as fast as possible when
/// `period` is zero). Returns its writes and how far it fell behind its schedule at most.
fn writer(
    connect: Connect,
    mut rows: Vec<Author>,
    first: Instant,
    period: Duration,
    until: Instant,
    count: usize,
    plain: bool,
) -> Result<(Vec<Write>, Duration), String> {
    let mut conn = connect().map_err(|e| e.to_string())?;
    let mut writes = Vec::with_capacity(count);
    let mut behind = Duration::ZERO;
    let mut next = first;
    let mut i = 0usize;
    loop {
        if period.is_zero() {
            if i >= count {
                break;
            }
        } else {
            if next >= until {
                break;
            }
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            } else {
                behind = behind.max(now - next);
            }
            next += period;
        }
        let k = i % rows.len();
        rows[k].name = format!("Author {} w{i}", rows[k].id);
        if plain {
            plain_write(&mut conn, &rows[k]).map_err(|e| e.to_string())?;
            writes.push((i64::from(rows[k].id), 0, Instant::now()));
            i += 1;
            continue;
        }
        let stored = rows[k]
            .save_and_publish(&mut conn)
            .map_err(|e| e.to_string())?;
        writes.push((
            i64::from(stored.id),
            i64::from(stored.cqrs_revision),
            Instant::now(),
        ));
        rows[k] = stored;
        i += 1;
    }
    Ok((writes, behind))
}

/// What a service without this library runs for the same save: one autocommitted upsert of
/// the row, no outbox.
fn plain_write(conn: &mut PgConnection, row: &Author) -> QueryResult<usize> {
    use master_schema::author::dsl as a;
    diesel::insert_into(a::author)
        .values((
            a::id.eq(row.id),
            a::name.eq(&row.name),
            a::email.eq(&row.email),
            a::birth_date.eq(row.birth_date),
            a::joined_at.eq(row.joined_at),
            a::active.eq(row.active),
            a::score.eq(row.score),
            a::external_id.eq(row.external_id),
            a::bio.eq(&row.bio),
            a::cqrs_revision.eq(0),
            a::cqrs_updated.eq(Utc::now()),
        ))
        .on_conflict(a::id)
        .do_update()
        .set((
            a::name.eq(&row.name),
            a::cqrs_revision.eq(a::cqrs_revision + 1),
            a::cqrs_updated.eq(Utc::now()),
        ))
        .execute(conn)
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// CPU seconds the whole machine spent busy so far (`/proc/stat`: every state but idle and
/// iowait), an upper bound for what a phase costs (anything else running counts too).
fn machine_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / ticks_per_second()
}

/// CPU seconds used so far by this process, the PostgreSQL server processes and the RabbitMQ
/// node (`beam.smp`), from `/proc/<pid>/stat` (utime + stime). A process that ended in
/// between (a writer's PostgreSQL backend, when its connection closed) is not counted: the
/// figures are a lower bound.
fn cpu_seconds() -> [f64; 3] {
    let ticks_per_second = ticks_per_second();
    let own = std::process::id().to_string();
    let mut out = [0f64; 3];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let slot = if pid == own {
            0
        } else if comm == "postgres" {
            1
        } else if comm == "beam.smp" {
            2
        } else {
            continue;
        };
        // After ") ": state is field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        out[slot] += ticks / ticks_per_second;
    }
    out
}

/// Runs `writers` writer threads over `rows` (split between them); returns all writes, the
/// largest schedule slip and when the last writer finished.
#[allow(clippy::too_many_arguments)]
async fn run_writers(
    connect: &Connect,
    rows: Vec<Author>,
    writers: usize,
    first: Instant,
    period: Duration,
    until: Instant,
    count: usize,
    plain: bool,
) -> Result<(Vec<Write>, Duration, Instant), BoxError> {
    let per_writer = rows.len().div_ceil(writers);
    let mut threads = Vec::new();
    let mut rows = rows.into_iter();
    for w in 0..writers {
        let mine: Vec<Author> = rows.by_ref().take(per_writer).collect();
        let connect = Arc::clone(connect);
        // Staggered: writer w starts w/writers of a period later.
        let offset = period * u32::try_from(w).unwrap_or(0) / u32::try_from(writers).unwrap_or(1);
        let writes = count / writers + usize::from(w < count % writers);
        threads.push(std::thread::spawn(move || {
            writer(connect, mine, first + offset, period, until, writes, plain)
        }));
    }
    let results = blocking(move || {
        let mut out = Vec::new();
        for thread in threads {
            out.push(thread.join().map_err(|_| "a writer thread panicked")?);
        }
        Ok(out)
    })
    .await?;
    let finished = Instant::now();
    let mut all = Vec::new();
    let mut behind = Duration::ZERO;
    for result in results {
        let (writes, slip) = result?;
        all.extend(writes);
        behind = behind.max(slip);
    }
    Ok((all, behind, finished))
}

/// Waits until the runtime has settled `count` messages in total; returns when.
async fn wait_settled(
    stats: impl Fn() -> ConsumerStats,
    count: u64,
    timeout: Duration,
) -> Result<Instant, BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stats();
        if s.applied() + s.dead_lettered >= count {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {count} messages settled: {s:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(diesel::QueryableByName)]
struct BodyRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
}

/// A raw lapin pipeline: a publisher with confirms (`window` in flight) and a consumer with
/// pipelined acks, as two tasks; time from the first publish to the last ack.
async fn raw_pipeline(
    url: &str,
    exchange: &str,
    queue: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    prefetch: u16,
    window: usize,
) -> Result<Duration, BoxError> {
    let consumer_connection =
        lapin::Connection::connect(url, ConnectionProperties::default()).await?;
    let consumer_channel = consumer_connection.create_channel().await?;
    consumer_channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publisher_connection =
        lapin::Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = publisher_connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let count = bodies.len();
    let exchange = exchange.to_owned();
    let started = Instant::now();
    let consume =
        tokio::spawn(async move { consume_and_ack(&mut consumer, count, Acks::Pipelined).await });
    let publish = tokio::spawn(async move {
        let mut in_flight = std::collections::VecDeque::with_capacity(window);
        for body in bodies.iter() {
            if in_flight.len() >= window
                && let Some(confirm) = in_flight.pop_front()
            {
                let confirmation: lapin::Confirmation = confirm.await?;
                if !confirmation.is_ack() {
                    return Err::<(), BoxError>("nacked".into());
                }
            }
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
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
            if !confirm.await?.is_ack() {
                return Err("nacked".into());
            }
        }
        channel.close(200, "done".into()).await?;
        Ok(())
    });
    publish.await??;
    consume.await??;
    let elapsed = started.elapsed();
    consumer_channel.close(200, "done".into()).await?;
    consumer_connection.close(200, "done".into()).await?;
    publisher_connection.close(200, "done".into()).await?;
    Ok(elapsed)
}

async fn end_to_end(bench: &mut Bench, tag: u32) -> Result<E2eFigures, BoxError> {
    let config = replica_config(
        bench,
        format!("bench_replica_e2e_x_{tag}"),
        format!("bench_replica_e2e_q_{tag}"),
    )?;
    let (raw_exchange, raw_queue) = (
        format!("bench_replica_raw_x_{tag}"),
        format!("bench_replica_raw_q_{tag}"),
    );
    bench.exchanges.push(raw_exchange.clone());
    bench.queues.push(raw_queue.clone());
    let bench: &Bench = bench;
    let settings = &bench.settings;

    // The raw pipeline's exchange and queue.
    {
        let connection =
            lapin::Connection::connect(&bench.amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                raw_exchange.as_str().into(),
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
                raw_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                raw_queue.as_str().into(),
                raw_exchange.as_str().into(),
                "author".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        connection.close(200, "done".into()).await?;
    }

    // The replica service: its runtime on its own queue, applying through the probe.
    reset_replica(&bench.replica).await?;
    let replica_transport = RabbitMqTransport::connect(config.clone()).await?;
    replica_transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await?;
    let replicas = Replicas::new({
        let connect = Arc::clone(&bench.replica);
        move || connect()
    })
    .register::<AuthorReplica>();
    let log = Arc::new(ProbeLog {
        record_messages: true,
        ..ProbeLog::default()
    });
    let probe = Probe {
        inner: replicas,
        log: Arc::clone(&log),
    };
    let batch_wait = settings
        .e2e_batch_wait_ms
        .map_or(config.batch_wait(), Duration::from_millis);
    let runtime = ConsumerRuntime::new(replica_transport.clone(), config.clone(), probe)
        .workers(settings.e2e_workers)
        .batch_wait(batch_wait);
    println!(
        "== end to end: master PostgreSQL -> outbox -> OutboxRelay (in process) -> RabbitMQ -> \
         runtime (batch {}, wait {batch_wait:?}, {} worker(s)) -> replica PostgreSQL",
        config.batch_size(),
        settings.e2e_workers
    );
    let handle = runtime.spawn();

    // The master service: warm-up rows written before the relay starts, so their bodies can be
    // read from the outbox (the raw pipeline publishes copies of them).
    let lag_rows = 100usize;
    let master = Arc::clone(&bench.master);
    let (warm, bodies) = blocking(move || {
        let mut conn = master()?;
        let mut warm = Vec::new();
        for id in 1..=lag_rows {
            let id = i32::try_from(id)?;
            warm.push(author(id).save_and_publish(&mut conn)?);
        }
        let bodies: Vec<BodyRow> =
            diesel::sql_query("SELECT body FROM cqrs_outbox ORDER BY id").load(&mut conn)?;
        Ok((warm, bodies))
    })
    .await?;
    let body_bytes: Vec<Vec<u8>> = bodies.into_iter().map(|b| b.body.into_bytes()).collect();
    let mean = body_bytes.iter().map(Vec::len).sum::<usize>() / body_bytes.len().max(1);
    let relay_config = Config::builder()
        .amqp_url(&bench.amqp_url)
        .exchange(config.exchange())
        .build()?;
    let relay_transport = RabbitMqTransport::connect(relay_config).await?;
    let relay = OutboxRelay::new(relay_transport.clone(), {
        let connect = Arc::clone(&bench.master);
        move || connect()
    })
    .spawn();
    let mut settled = lag_rows as u64;
    wait_settled(|| handle.stats(), settled, Duration::from_secs(30)).await?;

    // Lag at a steady rate.
    let period =
        Duration::from_nanos(1_000_000_000 * settings.writers as u64 / settings.lag_rate.max(1));
    let first = Instant::now() + Duration::from_millis(50);
    let until = first + Duration::from_secs(settings.lag_seconds);
    let relay_before = relay.stats();
    let runtime_before = handle.stats();
    let (writes, behind, _) = run_writers(
        &bench.master,
        warm,
        settings.writers,
        first,
        period,
        until,
        0,
        false,
    )
    .await?;
    let wrote = writes.len();
    let elapsed = writes
        .iter()
        .map(|w| w.2)
        .max()
        .map_or(Duration::ZERO, |last| last - first);
    settled += wrote as u64;
    wait_settled(|| handle.stats(), settled, Duration::from_secs(60)).await?;
    let relay_after = relay.stats();
    let runtime_after = handle.stats();
    let applied: HashMap<(i64, i64), Instant> = log
        .messages
        .lock()
        .map_err(|_| "probe poisoned")?
        .iter()
        .map(|&(pk, revision, at)| ((pk, revision), at))
        .collect();
    let (mut lag, mut lag_missing, mut lag_negative) = (Vec::with_capacity(wrote), 0, 0);
    for (pk, revision, committed) in &writes {
        match applied.get(&(*pk, *revision)) {
            Some(at) if at < committed => {
                lag_negative += 1;
                lag.push(Duration::ZERO);
            }
            Some(at) => lag.push(*at - *committed),
            None => lag_missing += 1,
        }
    }
    lag.sort_unstable();
    let writes_per_second = rate(wrote, elapsed);
    println!(
        "lag: {wrote} save_and_publish from {} writer threads over {:.1} s = {writes_per_second:.0} \
         writes/s (target {}; largest slip behind the ticker {:.1} ms), {lag_rows} rows, bodies \
         of {mean} bytes",
        settings.writers,
        elapsed.as_secs_f64(),
        settings.lag_rate,
        ms(behind)
    );
    println!(
        "  relay: {} batches for {} messages (avg {:.1}); runtime: {} batches (avg {:.1})",
        relay_after.batches - relay_before.batches,
        relay_after.published - relay_before.published,
        (relay_after.published - relay_before.published) as f64
            / (relay_after.batches - relay_before.batches).max(1) as f64,
        runtime_after.batches - runtime_before.batches,
        (runtime_after.applied() - runtime_before.applied()) as f64
            / (runtime_after.batches - runtime_before.batches).max(1) as f64,
    );
    println!(
        "  commit -> replica committed: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, \
         mean {:.1} ms ({} measured, {lag_missing} missing, {lag_negative} applied before the \
         writer read its clock)",
        ms(percentile(&lag, 0.50)),
        ms(percentile(&lag, 0.95)),
        ms(percentile(&lag, 0.99)),
        ms(percentile(&lag, 1.0)),
        ms(lag.iter().sum::<Duration>()) / lag.len().max(1) as f64,
        lag.len()
    );

    // Throughput: as many saves as possible, and the same count pre-written to the outbox,
    // against the raw pipeline.
    let total = settings.e2e_writes;
    let raw_bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        body_bytes
            .iter()
            .cycle()
            .take(total)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let throughput_rows = (total / 20).max(settings.writers);
    let (mut raw_best, mut writers_best, mut outbox_best) = (0f64, 0f64, 0f64);
    println!(
        "throughput: {total} messages; ours = {} writer threads x {} rows (each written {}x, the \
         first an insert) and the same count written to the outbox in one transaction; raw = \
         lapin publish with confirms (1000 in flight) + consume with pipelined acks, concurrently",
        settings.writers,
        throughput_rows / settings.writers,
        total / throughput_rows
    );
    for round in 1..=settings.e2e_rounds {
        let raw_first = round % 2 == 1;
        let raw = || {
            raw_pipeline(
                &bench.amqp_url,
                &raw_exchange,
                &raw_queue,
                Arc::clone(&raw_bodies),
                config.prefetch(),
                1000,
            )
        };
        let raw_rate = if raw_first {
            rate(total, raw().await?)
        } else {
            0.0
        };

        // The same writes without this library: one autocommitted upsert each, no outbox.
        let base = i32::try_from(100_000 * round + 50_000)?;
        let rows: Vec<Author> = (0..i32::try_from(throughput_rows)?)
            .map(|i| author(base + i))
            .collect();
        let started = Instant::now();
        let (_, _, plain_done) = run_writers(
            &bench.master,
            rows,
            settings.writers,
            started,
            Duration::ZERO,
            started,
            total,
            true,
        )
        .await?;
        let plain_rate = rate(total, plain_done - started);

        // Ours with the writers.
        let base = i32::try_from(100_000 * round)?;
        let rows: Vec<Author> = (0..i32::try_from(throughput_rows)?)
            .map(|i| author(base + i))
            .collect();
        let cpu_before = cpu_seconds();
        let machine_before = machine_cpu_seconds();
        let started = Instant::now();
        let (writes, _, writers_done) = run_writers(
            &bench.master,
            rows,
            settings.writers,
            started,
            Duration::ZERO,
            started,
            total,
            false,
        )
        .await?;
        settled += writes.len() as u64;
        let done = wait_settled(|| handle.stats(), settled, Duration::from_secs(120)).await?;
        let cpu_after = cpu_seconds();
        let machine_us = (machine_cpu_seconds() - machine_before) * 1e6 / total as f64;
        let with_writers = rate(total, done - started);
        let writers_only = rate(total, writers_done - started);
        let cpu_us: Vec<f64> = (0..3)
            .map(|i| (cpu_after[i] - cpu_before[i]) * 1e6 / total as f64)
            .collect();
        println!(
            "  round {round}: plain upserts {plain_rate:>6.0} writes/s; replicated writes \
             {with_writers:>6.0} writes/s = {:.0}% of plain; CPU per replicated write: whole \
             machine {machine_us:.0} us; by process at least {:.0} us (bench process: writers, \
             relay, worker {:.0}; PostgreSQL {:.0}, without the writers' closed backends; \
             RabbitMQ {:.0})",
            100.0 * with_writers / plain_rate,
            cpu_us.iter().sum::<f64>(),
            cpu_us[0],
            cpu_us[1],
            cpu_us[2],
        );

        // Ours from a pre-written outbox.
        let base = 1_000_000 * round;
        let outbox_rows = (total / 10).max(1);
        let outbox_bodies = fixture(base, outbox_rows, total / outbox_rows, &bench.expires);
        let outbox_count = outbox_bodies.len();
        let master = Arc::clone(&bench.master);
        let started = blocking(move || {
            let mut conn = master()?;
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                for chunk in outbox_bodies.chunks(5000) {
                    let entries: Vec<NewOutboxEntry<'_>> = chunk
                        .iter()
                        .map(|body| NewOutboxEntry {
                            cqrs_id: "author",
                            routing_key: "author",
                            body,
                        })
                        .collect();
                    conn.outbox_insert_many(&entries)?;
                }
                Ok(())
            })?;
            let started = Instant::now();
            cqrs_diesel::outbox::notify_commit();
            Ok(started)
        })
        .await?;
        settled += outbox_count as u64;
        let done = wait_settled(|| handle.stats(), settled, Duration::from_secs(120)).await?;
        let from_outbox = rate(outbox_count, done - started);

        let raw_rate = if raw_first {
            raw_rate
        } else {
            rate(total, raw().await?)
        };
        raw_best = raw_best.max(raw_rate);
        writers_best = writers_best.max(with_writers);
        outbox_best = outbox_best.max(from_outbox);
        println!(
            "  round {round} ({}): raw pipeline {raw_rate:>6.0} msg/s | ours with writers \
             {with_writers:>6.0} writes/s ({:.0}% of raw; the writers alone finished at \
             {writers_only:.0} writes/s) | ours from a pre-written outbox {from_outbox:>6.0} msg/s \
             ({:.0}% of raw)",
            if raw_first { "raw first" } else { "raw last" },
            100.0 * with_writers / raw_rate,
            100.0 * from_outbox / raw_rate
        );
    }
    println!(
        "  best: raw pipeline {raw_best:.0} msg/s; ours with writers {writers_best:.0} writes/s \
         ({:.0}%); ours from the outbox {outbox_best:.0} msg/s ({:.0}%)",
        100.0 * writers_best / raw_best,
        100.0 * outbox_best / raw_best
    );

    // Where a master write's time goes: save_and_publish alone on one connection, statements
    // timed (the relay and the runtime are idle but running; what they do with these writes
    // is not measured).
    let times = Arc::new(SqlTimes::default());
    let connect = instrumented(&bench.master, &times);
    let saves = 500usize;
    let elapsed = blocking(move || {
        let mut conn = connect()?;
        let mut rows: Vec<Author> = (900_000..900_050).map(author).collect();
        let started = Instant::now();
        for i in 0..saves {
            let k = i % rows.len();
            rows[k].name = format!("Author {} p{i}", rows[k].id);
            rows[k] = rows[k].save_and_publish(&mut conn)?;
        }
        Ok(started.elapsed())
    })
    .await?;
    println!(
        "profile: save_and_publish alone, one connection, {saves} saves (50 rows): {:.0} writes/s, {:.2} ms/write = {}",
        rate(saves, elapsed),
        ms(elapsed) / saves as f64,
        breakdown(&times.take(), saves, elapsed)
    );

    let relay_stats = relay.shutdown().await;
    let stats = handle.shutdown().await?;
    relay_transport.close().await;
    replica_transport.close().await;
    if stats.dead_lettered > 0 || stats.retried > 0 || relay_stats.errors > 0 {
        return Err(format!("failures: runtime {stats:?}, relay {relay_stats:?}").into());
    }
    Ok(E2eFigures {
        lag,
        lag_missing,
        lag_negative,
        writes_per_second,
        writes: wrote,
        raw: raw_best,
        ours_writers: writers_best,
        ours_outbox: outbox_best,
    })
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

fn summary(apply: &ApplyFigures, e2e: &E2eFigures) {
    let default = apply
        .batched
        .iter()
        .find(|(v, _)| v.batch == 100 && v.workers == 1)
        .map_or(0.0, |(_, r)| *r);
    let (best_variant, best) =
        apply
            .batched
            .iter()
            .copied()
            .fold(
                (BATCHED[0], 0f64),
                |acc, (v, r)| if r > acc.1 { (v, r) } else { acc },
            );
    let unbatched = apply
        .unbatched
        .iter()
        .copied()
        .fold(
            (UNBATCHED[0], 0f64),
            |acc, (v, r)| if r > acc.1 { (v, r) } else { acc },
        );
    let p99 = percentile(&e2e.lag, 0.99);
    println!("== summary");
    println!(
        "  raw lapin consume+ack of {} messages:     {:>7.0} msg/s (acks one by one: {:.0}; issue's estimate ~30000)",
        apply.messages, apply.raw, apply.raw_one_by_one
    );
    println!(
        "  apply with batching, b100 w1 (defaults):  {:>7.0} msg/s = {:>5.1}% of raw   goal >= 70%: {}",
        default,
        100.0 * default / apply.raw,
        verdict(default >= 0.7 * apply.raw)
    );
    println!(
        "  apply with batching, best ({:<8}):      {:>7.0} msg/s = {:>5.1}% of raw   goal >= 70%: {}",
        best_variant.label(),
        best,
        100.0 * best / apply.raw,
        verdict(best >= 0.7 * apply.raw)
    );
    println!(
        "  apply without batching, best ({:<6}):    {:>7.0} msg/s = {:>5.1}% of raw   (no goal)",
        unbatched.0.label(),
        unbatched.1,
        100.0 * unbatched.1 / apply.raw
    );
    println!(
        "  end-to-end throughput with writers:        {:>7.0} writes/s = {:>5.1}% of raw pipeline ({:.0} msg/s)   goal >= 80%: {}",
        e2e.ours_writers,
        100.0 * e2e.ours_writers / e2e.raw,
        e2e.raw,
        verdict(e2e.ours_writers >= 0.8 * e2e.raw)
    );
    println!(
        "  end-to-end throughput from the outbox:     {:>7.0} msg/s = {:>5.1}% of raw pipeline   goal >= 80%: {}",
        e2e.ours_outbox,
        100.0 * e2e.ours_outbox / e2e.raw,
        verdict(e2e.ours_outbox >= 0.8 * e2e.raw)
    );
    println!(
        "  replication lag at {:.0} writes/s ({} writes): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms   goal p99 < 50 ms: {}{}",
        e2e.writes_per_second,
        e2e.writes,
        ms(percentile(&e2e.lag, 0.50)),
        ms(percentile(&e2e.lag, 0.95)),
        ms(p99),
        ms(percentile(&e2e.lag, 1.0)),
        verdict(p99 < Duration::from_millis(50) && e2e.lag_missing == 0),
        if e2e.lag_missing > 0 || e2e.lag_negative > 0 {
            format!(
                " ({} missing, {} negative)",
                e2e.lag_missing, e2e.lag_negative
            )
        } else {
            String::new()
        }
    );
}
