//! The master side on PostgreSQL, MariaDB and SQLite: each write's outbox entry, published by
//! the relay and read back by a plain lapin consumer, against the golden fixture.

mod bulk_relate;
mod cancel;
mod concurrency;
mod config;
mod decimal;
mod generated_keys;
mod hooks;
mod insertable;
mod mariadb;
mod message_functions;
pub mod models;
mod ops;
mod outage;
mod scenarios;
mod session;
pub mod side;
mod single;
mod unique;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_diesel::diesel::connection::InstrumentationEvent;
use cqrs_diesel::{Config, CqrsConnection, OutboxRelay, RabbitMqTransport, Topology, Transport};
use serde_json::Value;

use crate::db::TestDb;
use crate::support::{Capture, config_builder};

pub use models::Author;

/// The time the library stamped on a stored row (`cqrs_updated`), read from the row: a time
/// after it is one after the library's clock, whatever today is.
pub fn stamped_at<M: cqrs_diesel::MasterModel>(row: &M) -> DateTime<Utc> {
    let wire = row.cqrs_updated_wire();
    utc(wire.as_str().expect("cqrs_updated on the wire is a string"))
}

/// A wire timestamp (`cqrs_updated`) in UTC.
fn utc(at: &str) -> DateTime<Utc> {
    cqrs_diesel::wire::parse_timestamp(at)
        .unwrap_or_else(|e| panic!("cqrs_updated {at:?} parses: {e}"))
        .with_timezone(&Utc)
}

/// A test database with the author table and the outbox, an exchange of its own, and a plain
/// consumer of that exchange.
pub struct Setup<D: TestDb> {
    pub db: D,
    pub config: Config,
    pub transport: RabbitMqTransport,
    pub capture: Capture,
}

impl<D: TestDb> Setup<D> {
    pub async fn new<M: Author>(db: D) -> Self {
        db.execute(M::DDL);
        Self::new_with_ddl(db).await
    }

    /// Like [`Setup::new`], for a database whose tables the caller created.
    pub async fn new_with_ddl(db: D) -> Self {
        db.connect()
            .run_outbox_migrations()
            .expect("outbox migration");
        let config = config_builder("master").build().expect("config");
        let transport = RabbitMqTransport::new(config.clone());
        transport
            .declare(&Topology::exchange_only(config.exchange()))
            .await
            .expect("declare the exchange");
        let capture = Capture::bind(config.exchange()).await;
        Setup {
            db,
            config,
            transport,
            capture,
        }
    }

    /// Publishes everything in the outbox, returning how many entries were published.
    pub async fn drain(&self) -> usize {
        let mut relay = OutboxRelay::new(self.transport.clone(), self.db.connector());
        relay.drain().await.expect("the relay drains the outbox")
    }

    /// How many entries wait in the outbox.
    pub fn outbox_len(&self) -> i64 {
        self.db
            .connect()
            .outbox_pending()
            .expect("count the outbox")
    }
}

impl<D: TestDb> Drop for Setup<D> {
    fn drop(&mut self) {
        let exchange = self.config.exchange().to_owned();
        // Best effort: the exclusive capture queue goes with its connection.
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(crate::support::cleanup(&exchange, &[]));
            }
        });
    }
}

/// The golden fixture, one body per line.
pub fn golden() -> Vec<Value> {
    include_str!("../../../cqrs-core/tests/fixtures/django-cqrs-3.1.0.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).expect("golden line is JSON"))
        .collect()
}

/// The moment the reference captured the golden messages: the `cqrs_updated` of its last
/// write. Replays of the fixture run at this time, so they do not age.
pub fn golden_captured_at() -> DateTime<Utc> {
    golden()
        .iter()
        .filter_map(|line| line["instance_data"]["cqrs_updated"].as_str())
        .map(utc)
        .max()
        .expect("the fixture has timestamps")
}

/// Asserts that `actual` equals `expected` field by field except the timestamps
/// (`instance_data.cqrs_updated`, `expires`), and that those are well-formed and recent.
pub fn assert_same_message(actual: &Value, expected: &Value, what: &str) {
    let mut actual = actual.clone();
    let mut expected = expected.clone();
    let updated = actual["instance_data"]["cqrs_updated"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: cqrs_updated is a string: {actual}"))
        .to_owned();
    let parsed = cqrs_diesel::wire::parse_timestamp(&updated)
        .unwrap_or_else(|e| panic!("{what}: cqrs_updated {updated:?} parses: {e}"));
    let age = Utc::now().signed_duration_since(parsed);
    assert!(
        age.num_seconds().abs() < 300,
        "{what}: cqrs_updated {updated} is now"
    );
    assert!(
        updated.ends_with("+00:00"),
        "{what}: cqrs_updated {updated} is written as the reference writes it"
    );
    let expires = actual["expires"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expires is a string"))
        .to_owned();
    let expires: DateTime<Utc> = DateTime::parse_from_rfc3339(&expires)
        .unwrap_or_else(|e| panic!("{what}: expires {expires:?} parses: {e}"))
        .with_timezone(&Utc);
    let ttl = expires.signed_duration_since(Utc::now()).num_seconds();
    assert!(
        (86_400 - 300..=86_400).contains(&ttl),
        "{what}: expires one TTL ahead, got {ttl} s"
    );
    for value in [&mut actual, &mut expected] {
        value["instance_data"]["cqrs_updated"] = Value::Null;
        value["expires"] = Value::Null;
    }
    assert_eq!(actual, expected, "{what}");
}

pub const WAIT: Duration = Duration::from_secs(15);

/// Counts the statements a connection sends (`BEGIN` and `COMMIT` included).
#[derive(Clone, Default)]
pub struct Statements(Arc<Mutex<Vec<String>>>);

impl Statements {
    /// The statements sent since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// What the connection's instrumentation calls.
    pub fn sink(&self) -> impl FnMut(InstrumentationEvent<'_>) + Send + 'static {
        let sink = self.0.clone();
        move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                sink.lock().unwrap().push(query.to_string());
            }
        }
    }
}

impl Statements {
    /// Records the statements a sync connection sends from now on.
    pub fn watch<C: cqrs_diesel::diesel::Connection>(conn: &mut C) -> Statements {
        let statements = Statements::default();
        conn.set_instrumentation(statements.sink());
        statements
    }
}
