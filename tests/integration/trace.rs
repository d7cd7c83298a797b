//! W3C trace context across the broker, on the real PostgreSQL and RabbitMQ: a write inside a
//! span that continues an incoming `traceparent` (as an HTTP handler's would), published by
//! the relay, applied by the consumer runtime; an in-memory OpenTelemetry exporter shows one
//! trace from the handler to the worker.
//!
//! Each test installs its subscriber for its own thread only and runs on a current-thread
//! runtime, so every task it spawns (relay stages, dispatcher, workers) records into it and
//! no other test sees it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use cqrs_diesel::diesel::Connection;
use cqrs_diesel::outbox::OutboxEntry;
use cqrs_diesel::trace::TraceContext;
use cqrs_diesel::{
    Config, ConsumerRuntime, CqrsConnection, ManualClock, MasterConfig, MasterModel, OutboxRelay,
    RabbitMqTransport, Replicas, Topology, Transport,
};
use diesel::prelude::*;
use futures_util::StreamExt;
use lapin::types::AMQPValue;
use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

use crate::authors::{PgAuthorReplica, pg_schema};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};
use crate::master::models::{Author, PgAuthor};
use crate::support::{cleanup, config_builder, exclusive_consumer, raw_connection};

/// The trace of the incoming request.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The caller's span, the handler span's remote parent.
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE";
const WAIT: Duration = Duration::from_secs(20);

/// An OpenTelemetry pipeline into memory, as this thread's `tracing` subscriber.
struct Telemetry {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Telemetry {
    fn install() -> Telemetry {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("cqrs-trace-test"));
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        Telemetry {
            exporter,
            provider,
            _guard: guard,
        }
    }

    /// The spans ended so far.
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().expect("flush the spans");
        self.exporter.get_finished_spans().expect("read the spans")
    }
}

/// The span of an HTTP handler that received `traceparent`/`tracestate` from its caller.
fn handler_span() -> tracing::Span {
    let span = tracing::info_span!("POST /authors");
    let mut incoming = HashMap::new();
    incoming.insert(
        "traceparent".to_owned(),
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"),
    );
    incoming.insert("tracestate".to_owned(), TRACESTATE.to_owned());
    span.set_parent(TraceContextPropagator::new().extract(&incoming))
        .expect("the OpenTelemetry layer is installed");
    span
}

fn span_id(span: &tracing::Span) -> SpanId {
    span.context().span().span_context().span_id()
}

fn author(id: i32) -> PgAuthor {
    let joined = Utc.with_ymd_and_hms(2031, 3, 4, 5, 0, 0).single().unwrap();
    PgAuthor::new(id, "Ada", None, None, joined, true, 1.5, Uuid::nil(), None)
}

/// A master database (author table, outbox) and an exchange of its own with the replica
/// queue bound for `author`.
struct Master {
    db: PgDb,
    config: Config,
    transport: RabbitMqTransport,
}

impl Master {
    async fn new(tag: &str, config: Config) -> Master {
        let db = PgDb::new(tag);
        db.execute(PgAuthor::DDL);
        db.connect()
            .run_outbox_migrations()
            .expect("outbox migration");
        let transport = RabbitMqTransport::new(config.clone());
        transport
            .declare(&Topology::from_config(&config, ["author"]))
            .await
            .expect("declare the topology");
        Master {
            db,
            config,
            transport,
        }
    }

    fn outbox(&self) -> Vec<OutboxEntry> {
        self.db.connect().outbox_peek(100).expect("read the outbox")
    }

    async fn drain(&self) -> usize {
        OutboxRelay::new(self.transport.clone(), self.db.connector())
            .drain()
            .await
            .expect("the relay drains the outbox")
    }

    async fn teardown(self) {
        self.transport.close().await;
        let queue = self.config.queue().unwrap_or_default().to_owned();
        let dead = self
            .config
            .dead_letter_queue()
            .unwrap_or_default()
            .to_owned();
        cleanup(self.config.exchange(), &[&queue, &dead]).await;
    }
}

/// One message read with plain lapin: its body and its text headers.
struct Received {
    body: Vec<u8>,
    headers: HashMap<String, String>,
    other_headers: Vec<String>,
}

async fn receive(consumer: &mut lapin::Consumer) -> Received {
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a message arrives")
        .expect("the consumer is open")
        .expect("a delivery");
    let mut headers = HashMap::new();
    let mut other_headers = Vec::new();
    if let Some(table) = delivery.properties.headers().as_ref() {
        for (key, value) in table.inner() {
            match value {
                AMQPValue::LongString(text) => {
                    headers.insert(key.to_string(), text.to_string());
                }
                _ => other_headers.push(key.to_string()),
            }
        }
    }
    Received {
        body: delivery.data,
        headers,
        other_headers,
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
            panic!("no span named {name:?} among {names:?}")
        })
}

#[tokio::test]
async fn the_worker_continues_the_trace_of_the_write_through_the_publish_span() {
    let telemetry = Telemetry::install();
    let master = Master::new("trace_master", config_builder("trace").build().unwrap()).await;
    let replica = PgDb::new("trace_replica");
    replica.execute(PgAuthor::DDL);
    replica
        .connect()
        .run_replica_migrations()
        .expect("replica migration");
    let queue = master.config.queue().unwrap().to_owned();
    let exchange = master.config.exchange().to_owned();
    let lapin = raw_connection().await;
    let (_channel, mut capture) = exclusive_consumer(&lapin, &exchange, "#", "trace").await;

    // The write, inside the handler's span: one statement on PostgreSQL (no transaction).
    let handler = handler_span();
    let handler_id = span_id(&handler);
    handler
        .in_scope(|| author(1).save_and_publish(&mut master.db.connect()))
        .expect("the write");

    let stored = master.outbox();
    let stored = TraceContext::from_column(stored[0].trace_context.as_deref().expect("stored"))
        .expect("a readable trace context");
    assert_eq!(
        stored.traceparent,
        format!("00-{TRACE_ID}-{handler_id}-01"),
        "the write's span is the parent the outbox keeps"
    );
    assert_eq!(stored.tracestate.as_deref(), Some(TRACESTATE));

    assert_eq!(master.drain().await, 1);
    let sent = receive(&mut capture).await;

    let runtime = ConsumerRuntime::new(
        master.transport.clone(),
        master.config.clone(),
        Replicas::new(replica.connector()).register::<PgAuthorReplica>(),
    )
    .batch_wait(Duration::from_millis(5))
    .spawn();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows: i64 = pg_schema::author::table
            .count()
            .get_result(&mut replica.connect())
            .expect("count replica rows");
        if rows == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the row is applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = runtime.shutdown().await.expect("the runtime stops");
    assert_eq!(stats.applied(), 1);
    drop(handler);

    let spans = telemetry.spans();
    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    let handler = named(&spans, "POST /authors");
    let publish = named(&spans, &format!("publish {exchange}:author"));
    let process = named(&spans, &format!("process {queue}"));
    let apply = named(&spans, &format!("apply {queue}"));
    for span in [handler, publish, process, apply] {
        assert_eq!(span.span_context.trace_id(), trace_id, "{}", span.name);
    }
    assert_eq!(
        handler.parent_span_id,
        SpanId::from_hex(CALLER_SPAN_ID).unwrap()
    );
    assert_eq!(publish.parent_span_id, handler.span_context.span_id());
    assert_eq!(process.parent_span_id, publish.span_context.span_id());
    assert!(
        process.parent_span_is_remote,
        "the parent came in the headers"
    );
    assert_eq!(apply.parent_span_id, process.span_context.span_id());

    // What went over the wire: text headers naming the publish span, beside `x-cqrs-seq`.
    assert_eq!(
        sent.headers.get("traceparent"),
        Some(&format!(
            "00-{TRACE_ID}-{}-01",
            publish.span_context.span_id()
        ))
    );
    assert_eq!(
        sent.headers.get("tracestate").map(String::as_str),
        Some(TRACESTATE)
    );
    assert!(sent.headers.contains_key("x-cqrs-seq"));
    assert!(sent.other_headers.is_empty(), "{:?}", sent.other_headers);

    assert_eq!(
        attribute(publish, "messaging.system").map(|v| v.as_str()),
        Some("rabbitmq".into())
    );
    assert_eq!(
        attribute(publish, "messaging.rabbitmq.destination.routing_key").map(|v| v.as_str()),
        Some("author".into())
    );
    assert_eq!(
        attribute(process, "messaging.destination.name").map(|v| v.as_str()),
        Some(queue.as_str().into())
    );
    assert_eq!(publish.span_kind, opentelemetry::trace::SpanKind::Producer);
    assert_eq!(process.span_kind, opentelemetry::trace::SpanKind::Consumer);
    master.teardown().await;
}

/// The same row written at the same time, once inside a sampled span and once outside any:
/// only `trace_context` and the trace headers differ; the body is the same, byte for byte, in the
/// outbox and on the wire (django-cqrs services read only the body).
#[tokio::test]
async fn the_body_is_the_same_bytes_with_and_without_a_trace_context() {
    let _telemetry = Telemetry::install();
    let config = config_builder("trace_body").build().unwrap();
    let traced = Master::new("trace_body_a", config.clone()).await;
    let untraced = Master::new("trace_body_b", config.clone()).await;
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2031, 3, 4, 6, 0, 0).single().unwrap());
    let writes = MasterConfig::new()
        .with_clock(clock.clock())
        .with_message_ttl(Some(Duration::from_secs(3600)));
    let lapin = raw_connection().await;
    let (_channel, mut capture) =
        exclusive_consumer(&lapin, config.exchange(), "#", "trace_body").await;

    // In a transaction of the caller's: the general path (BEGIN, upsert, outbox insert).
    let save = |db: &PgDb| {
        db.connect()
            .transaction(|conn| writes.save(&author(7), conn))
            .expect("the write")
    };
    handler_span().in_scope(|| save(&traced.db));
    save(&untraced.db);

    let (a, b) = (traced.outbox(), untraced.outbox());
    assert!(
        a[0].trace_context.is_some(),
        "the traced write keeps its context"
    );
    assert_eq!(b[0].trace_context, None, "no span, no context");
    assert_eq!(a[0].body, b[0].body);

    assert_eq!(traced.drain().await, 1);
    let with_trace = receive(&mut capture).await;
    assert_eq!(untraced.drain().await, 1);
    let without_trace = receive(&mut capture).await;
    assert_eq!(with_trace.body, without_trace.body);
    assert_eq!(with_trace.body, a[0].body.as_bytes());
    let trace_of = |received: &Received| {
        received
            .headers
            .get("traceparent")
            .map(|traceparent| traceparent.contains(TRACE_ID))
    };
    assert_eq!(trace_of(&with_trace), Some(true), "the write's trace");
    // No stored context: the relay's publish span starts a trace of its own.
    assert_eq!(trace_of(&without_trace), Some(false), "a new trace");
    assert!(!without_trace.headers.contains_key("tracestate"));
    traced.teardown().await;
    untraced.teardown().await;
}

/// A context the caller decided not to sample is not stored: sampling is the caller's
/// decision, and an unsampled trace has nothing to continue.
#[tokio::test]
async fn a_write_under_an_unsampled_span_stores_no_trace_context() {
    let _telemetry = Telemetry::install();
    let master = Master::new(
        "trace_unsampled",
        config_builder("trace_uns").build().unwrap(),
    )
    .await;
    let span = tracing::info_span!("unsampled handler");
    let mut incoming = HashMap::new();
    incoming.insert(
        "traceparent".to_owned(),
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-00"),
    );
    span.set_parent(TraceContextPropagator::new().extract(&incoming))
        .expect("the OpenTelemetry layer is installed");

    span.in_scope(|| author(3).save_and_publish(&mut master.db.connect()))
        .expect("the write");

    assert_eq!(master.outbox()[0].trace_context, None);
    master.teardown().await;
}

/// Bulk writes store the context on every entry they queue.
#[tokio::test]
async fn a_bulk_create_stores_the_trace_context_on_every_entry() {
    let _telemetry = Telemetry::install();
    let master = Master::new("trace_bulk", config_builder("trace_bulk").build().unwrap()).await;
    let handler = handler_span();
    let expected = format!("00-{TRACE_ID}-{}-01", span_id(&handler));

    handler
        .in_scope(|| {
            PgAuthor::bulk_create_and_publish(&mut master.db.connect(), &[author(1), author(2)])
        })
        .expect("the bulk write");

    let entries = master.outbox();
    assert_eq!(entries.len(), 2);
    for entry in entries {
        let context = TraceContext::from_column(entry.trace_context.as_deref().unwrap()).unwrap();
        assert_eq!(context.traceparent, expected);
    }
    master.teardown().await;
}

/// Inside `atomic`, a second save of a row rewrites its entry: the entry then carries the
/// context of the write that rewrote it.
#[tokio::test]
async fn an_atomic_rewrite_stores_the_context_of_the_last_write() {
    let _telemetry = Telemetry::install();
    let master = Master::new(
        "trace_atomic",
        config_builder("trace_atomic").build().unwrap(),
    )
    .await;
    let mut conn = master.db.connect();
    let (first, second) = (handler_span(), handler_span());
    let expected = format!("00-{TRACE_ID}-{}-01", span_id(&second));

    cqrs_diesel::atomic(&mut conn, |conn| {
        let mut row = first.in_scope(|| author(4).save_and_publish(conn))?;
        row.set_name("Grace");
        second.in_scope(|| row.save_and_publish(conn))
    })
    .expect("the atomic block");

    let entries = master.outbox();
    assert_eq!(entries.len(), 1, "one message for the block");
    let context = TraceContext::from_column(entries[0].trace_context.as_deref().unwrap()).unwrap();
    assert_eq!(context.traceparent, expected);
    master.teardown().await;
}

/// MariaDB and SQLite write the context too (a text bind where PostgreSQL's test binds it in
/// the one-statement write).
fn a_save_stores_the_span_context<D: TestDb>(db: D, save: impl FnOnce(&mut D::Conn)) {
    let _telemetry = Telemetry::install();
    db.connect()
        .run_outbox_migrations()
        .expect("outbox migration");
    let handler = handler_span();
    let expected = format!("00-{TRACE_ID}-{}-01", span_id(&handler));

    handler.in_scope(|| save(&mut db.connect()));

    let entries = db.connect().outbox_peek(10).expect("read the outbox");
    assert_eq!(entries.len(), 1);
    let context = TraceContext::from_column(entries[0].trace_context.as_deref().unwrap()).unwrap();
    assert_eq!(context.traceparent, expected);
    assert_eq!(context.tracestate.as_deref(), Some(TRACESTATE));
}

#[test]
fn a_mariadb_save_stores_the_span_context() {
    use crate::master::models::MysqlAuthor;
    let db = MysqlDb::new("trace_save");
    db.execute(MysqlAuthor::DDL);
    a_save_stores_the_span_context(db, |conn| {
        let joined = Utc.with_ymd_and_hms(2031, 3, 4, 5, 0, 0).single().unwrap();
        let row = MysqlAuthor::new(1, "Ada", None, None, joined, true, 1.5, Uuid::nil(), None);
        row.save_and_publish(conn).expect("the write");
    });
}

#[test]
fn a_sqlite_save_stores_the_span_context() {
    use crate::master::models::SqliteAuthor;
    let db = SqliteDb::new("trace_save");
    db.execute(SqliteAuthor::DDL);
    a_save_stores_the_span_context(db, |conn| {
        let joined = Utc.with_ymd_and_hms(2031, 3, 4, 5, 0, 0).single().unwrap();
        let row = SqliteAuthor::new(1, "Ada", None, None, joined, true, 1.5, Uuid::nil(), None);
        row.save_and_publish(conn).expect("the write");
    });
}
