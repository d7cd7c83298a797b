//! `OutboxRelay` against the real databases and broker: order, routing keys, several relays
//! on one database, an unreachable broker, wake-up on commit, shutdown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_diesel::outbox::{NewOutboxEntry, notify_commit};
use cqrs_diesel::transport::{Consumer, RabbitMqConsumer, direct_routing_key};
use cqrs_diesel::{Config, CqrsConnection, OutboxRelay, RabbitMqTransport, Topology, Transport};

use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};
use crate::support::{cleanup, config_builder};

/// A replica queue bound to `author` (and `cqrs.<queue>.author`) on an exchange of its own.
struct Broker {
    config: Config,
    transport: RabbitMqTransport,
    queue: String,
}

impl Broker {
    async fn new(tag: &str) -> Broker {
        let config = config_builder(tag).build().unwrap();
        let transport = RabbitMqTransport::new(config.clone());
        transport
            .declare(&Topology::from_config(&config, ["author"]))
            .await
            .expect("topology declared");
        Broker {
            queue: config.queue().unwrap().to_owned(),
            config,
            transport,
        }
    }

    /// A transport to the same exchange on a closed port: every publish fails after `timeout`.
    fn unreachable(&self, timeout: Duration) -> RabbitMqTransport {
        let config = Config::builder()
            .amqp_url("amqp://guest:guest@127.0.0.1:1/%2f")
            .exchange(self.config.exchange())
            .connect_timeout(timeout)
            .reconnect_min_delay(Duration::from_millis(20))
            .reconnect_max_delay(Duration::from_millis(100))
            .build()
            .unwrap();
        RabbitMqTransport::new(config)
    }

    async fn consumer(&self) -> RabbitMqConsumer {
        self.transport.consume(&self.queue, 1000).await.unwrap()
    }

    async fn teardown(self) {
        self.transport.close().await;
        let dead_letters = self.config.dead_letter_queue().unwrap().to_owned();
        cleanup(self.config.exchange(), &[&self.queue, &dead_letters]).await;
    }
}

/// Takes `count` deliveries (acknowledged) as `(routing key, body)`, then checks that no
/// further one arrives for a moment.
async fn take_exactly(consumer: &mut RabbitMqConsumer, count: usize) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} deliveries arrived", got.len()))
            .expect("consumer open")
            .expect("no consumer error");
        got.push((
            delivery.routing_key().to_owned(),
            String::from_utf8(delivery.body().to_vec()).unwrap(),
        ));
        delivery.ack().await.unwrap();
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(extra.is_err(), "no delivery beyond the {count} expected");
    got
}

/// The body of the next delivery (acknowledged).
async fn next_body(consumer: &mut RabbitMqConsumer) -> String {
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery")
        .expect("consumer open")
        .expect("no consumer error");
    let body = String::from_utf8(delivery.body().to_vec()).unwrap();
    delivery.ack().await.unwrap();
    body
}

fn body(n: usize) -> String {
    format!(r#"{{"signal_type":"SAVE","cqrs_id":"author","instance_pk":{n}}}"#)
}

/// Writes entries `range` in one transaction; the routing key of each is given by `key`.
fn insert<C: CqrsConnection>(
    conn: &mut C,
    range: std::ops::Range<usize>,
    key: impl Fn(usize) -> String,
) {
    let rows: Vec<(String, String)> = range.map(|n| (key(n), body(n))).collect();
    for chunk in rows.chunks(1000) {
        let entries: Vec<NewOutboxEntry<'_>> = chunk
            .iter()
            .map(|(routing_key, body)| NewOutboxEntry {
                cqrs_id: "author",
                routing_key,
                body,
            })
            .collect();
        conn.outbox_insert_many(&entries).unwrap();
    }
}

fn prepare<D: TestDb>(db: &D) -> D::Conn {
    let mut conn = db.connect();
    conn.run_outbox_migrations().unwrap();
    conn
}

async fn publishes_in_id_order_with_keys_and_bodies<D: TestDb>(db: D, tag: &str) {
    let broker = Broker::new(tag).await;
    let mut conn = prepare(&db);
    let direct = direct_routing_key(&broker.queue, "author");
    let key = |n: usize| {
        if n.is_multiple_of(3) {
            direct.clone()
        } else {
            "author".to_owned()
        }
    };
    insert(&mut conn, 0..300, key);
    let mut consumer = broker.consumer().await;

    let published = OutboxRelay::new(broker.transport.clone(), db.connector())
        .batch_size(64)
        .drain()
        .await
        .unwrap();

    assert_eq!(published, 300);
    let expected: Vec<(String, String)> = (0..300).map(|n| (key(n), body(n))).collect();
    assert_eq!(take_exactly(&mut consumer, 300).await, expected);
    assert_eq!(conn.outbox_pending().unwrap(), 0, "the outbox is empty");
    broker.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_entries_are_published_in_id_order_and_deleted() {
    publishes_in_id_order_with_keys_and_bodies(PgDb::new("relay_order"), "relay_order_pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_entries_are_published_in_id_order_and_deleted() {
    publishes_in_id_order_with_keys_and_bodies(MysqlDb::new("relay_order"), "relay_order_my").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_entries_are_published_in_id_order_and_deleted() {
    publishes_in_id_order_with_keys_and_bodies(SqliteDb::new("relay_order"), "relay_order_lite")
        .await;
}

/// Two relays, each with its own connections, share the outbox: row locks that skip locked
/// rows keep their batches apart.
async fn two_relays_deliver_each_entry_once<D: TestDb>(db: D, tag: &str) {
    const ENTRIES: usize = 5000;
    let broker = Broker::new(tag).await;
    let mut conn = prepare(&db);
    insert(&mut conn, 0..ENTRIES, |_| "author".to_owned());
    let mut consumer = broker.consumer().await;

    let relays: Vec<_> = (0..2)
        .map(|_| {
            let mut relay = OutboxRelay::new(broker.transport.clone(), db.connector())
                .batch_size(50)
                .confirm_window(100);
            tokio::spawn(async move { relay.drain().await.unwrap() })
        })
        .collect();
    let mut drained = Vec::new();
    for relay in relays {
        drained.push(relay.await.unwrap());
    }

    assert_eq!(drained.iter().sum::<usize>(), ENTRIES, "{drained:?}");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, body) in take_exactly(&mut consumer, ENTRIES).await {
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen.len(), ENTRIES, "every entry arrived");
    assert!(seen.values().all(|&n| n == 1), "none arrived twice");
    assert_eq!(conn.outbox_pending().unwrap(), 0);
    broker.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_postgres_database_deliver_each_entry_once() {
    two_relays_deliver_each_entry_once(PgDb::new("relay_two"), "relay_two_pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_mariadb_database_deliver_each_entry_once() {
    two_relays_deliver_each_entry_once(MysqlDb::new("relay_two"), "relay_two_my").await;
}

/// While the relay cannot reach the broker, it keeps trying, deletes nothing and does not hold
/// up writers; a relay that reaches the broker then delivers every entry once.
async fn entries_wait_for_an_unreachable_broker<D: TestDb>(db: D, tag: &str) {
    let broker = Broker::new(tag).await;
    let mut conn = prepare(&db);
    insert(&mut conn, 0..200, |_| "author".to_owned());
    let mut consumer = broker.consumer().await;

    // Each attempt holds its batch for the whole connect timeout before it fails: a write that
    // waited for that batch would take about 5 s, one that does not takes milliseconds.
    let stuck = OutboxRelay::new(broker.unreachable(Duration::from_secs(5)), db.connector())
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(10), Duration::from_millis(50))
        .spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    insert(&mut conn, 200..201, |_| "author".to_owned());
    let write_took = started.elapsed();
    assert!(
        write_took < Duration::from_secs(4),
        "a write waited {write_took:?} for the relay's batch"
    );
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let stats = stuck.shutdown().await;
    assert_eq!(stats.published, 0);
    assert!(stats.errors >= 1, "{stats:?}");
    assert_eq!(conn.outbox_pending().unwrap(), 201, "nothing was deleted");

    let published = OutboxRelay::new(broker.transport.clone(), db.connector())
        .drain()
        .await
        .unwrap();
    assert_eq!(published, 201);
    let got = take_exactly(&mut consumer, 201).await;
    let bodies: Vec<String> = got.into_iter().map(|(_, body)| body).collect();
    assert_eq!(bodies, (0..201).map(body).collect::<Vec<_>>());
    assert_eq!(conn.outbox_pending().unwrap(), 0);
    broker.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_entries_wait_while_the_broker_is_unreachable() {
    entries_wait_for_an_unreachable_broker(PgDb::new("relay_down"), "relay_down_pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_entries_wait_while_the_broker_is_unreachable() {
    entries_wait_for_an_unreachable_broker(MysqlDb::new("relay_down"), "relay_down_my").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_entries_wait_while_the_broker_is_unreachable() {
    entries_wait_for_an_unreachable_broker(SqliteDb::new("relay_down"), "relay_down_lite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_notification_wakes_an_idle_relay_at_once() {
    let db = PgDb::new("relay_wake");
    let broker = Broker::new("relay_wake").await;
    let mut conn = prepare(&db);
    let mut consumer = broker.consumer().await;
    let relay = OutboxRelay::new(broker.transport.clone(), db.connector())
        .poll_interval(Duration::from_secs(60))
        .spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Committed, then notified.
    insert(&mut conn, 0..1, |_| "author".to_owned());
    let started = Instant::now();
    notify_commit();
    assert_eq!(next_body(&mut consumer).await, body(0));
    let latency = started.elapsed();

    // Notified while the write is still on its way: the relay looks again shortly after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    notify_commit();
    tokio::time::sleep(Duration::from_millis(15)).await;
    insert(&mut conn, 1..2, |_| "author".to_owned());
    let late = Instant::now();
    assert_eq!(next_body(&mut consumer).await, body(1));
    let late_latency = late.elapsed();

    let stats = relay.shutdown().await;
    assert_eq!(stats.published, 2);
    // Without the notification the relay would look again after its 60 s poll interval.
    assert!(latency < Duration::from_secs(20), "woken after {latency:?}");
    assert!(
        late_latency < Duration::from_secs(20),
        "late commit found after {late_latency:?}"
    );
    broker.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_the_stats_and_ends_the_task() {
    let db = PgDb::new("relay_stop");
    let broker = Broker::new("relay_stop").await;
    let mut conn = prepare(&db);
    insert(&mut conn, 0..120, |_| "author".to_owned());
    let mut consumer = broker.consumer().await;
    let relay = OutboxRelay::new(broker.transport.clone(), db.connector())
        .batch_size(25)
        .poll_interval(Duration::from_secs(60))
        .spawn();

    take_exactly(&mut consumer, 120).await;
    assert_eq!(relay.stats().published, 120, "observable while running");
    assert!(!relay.is_finished());
    let stats = tokio::time::timeout(Duration::from_secs(30), relay.shutdown())
        .await
        .expect("an idle relay stops at once");
    assert_eq!(stats.published, 120);
    assert_eq!(stats.batches, 5);
    assert_eq!(stats.errors, 0);
    assert_eq!(conn.outbox_pending().unwrap(), 0);
    broker.teardown().await;
}

/// Each message goes out with its outbox entry's id in `x-cqrs-seq`, rising in publication
/// order, and its body byte for byte as stored (django-cqrs reads only the body).
async fn each_message_carries_its_outbox_id_and_its_body_unchanged<D: TestDb>(db: D, tag: &str) {
    let broker = Broker::new(tag).await;
    let mut conn = prepare(&db);
    insert(&mut conn, 0..20, |_| "author".to_owned());
    let mut consumer = broker.consumer().await;
    OutboxRelay::new(broker.transport.clone(), db.connector())
        .drain()
        .await
        .unwrap();
    let mut previous = 0i64;
    for n in 0..20 {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a delivery")
            .expect("consumer open")
            .expect("no consumer error");
        let seq = delivery.header(cqrs_diesel::wire::SEQ_HEADER);
        let seq: i64 = seq
            .and_then(|seq| seq.parse().ok())
            .expect("an x-cqrs-seq id");
        assert!(seq > previous, "ids rise: {seq} after {previous}");
        previous = seq;
        assert_eq!(delivery.body(), body(n).as_bytes());
        delivery.ack().await.unwrap();
    }
    broker.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_carries_its_outbox_id_and_its_body_unchanged_on_postgres() {
    each_message_carries_its_outbox_id_and_its_body_unchanged(PgDb::new("rseq"), "rseq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_carries_its_outbox_id_and_its_body_unchanged_on_mariadb() {
    each_message_carries_its_outbox_id_and_its_body_unchanged(MysqlDb::new("rseq"), "rseq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_carries_its_outbox_id_and_its_body_unchanged_on_sqlite() {
    each_message_carries_its_outbox_id_and_its_body_unchanged(SqliteDb::new("rseq"), "rseq").await;
}

/// The relay's health follows the outbox and the broker: with the broker unreachable it
/// reports the waiting entries, the age of the oldest (by the database's clock) and the
/// error, and is not ready; once a relay reaches the broker, the outbox empties and it is.
async fn health_reports_the_backlog_and_the_broker<D: TestDb>(db: D, tag: &str, age_sql: &str) {
    use diesel::connection::SimpleConnection;
    let broker = Broker::new(tag).await;
    let mut conn = prepare(&db);
    insert(&mut conn, 0..50, |_| "author".to_owned());
    conn.batch_execute(age_sql).unwrap();

    let stuck = OutboxRelay::new(
        broker.unreachable(Duration::from_millis(300)),
        db.connector(),
    )
    .poll_interval(Duration::from_millis(50))
    .backlog_interval(Duration::from_millis(50))
    .retry_delays(Duration::from_millis(10), Duration::from_millis(50))
    .spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health = stuck.health().await;
        if health.backlog.is_some() && health.last_error.is_some() {
            break health;
        }
        assert!(Instant::now() < deadline, "no backlog measured: {health:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (backlog, _) = health.backlog.unwrap();
    assert_eq!(backlog.entries, 50, "{health:?}");
    assert!(
        backlog.oldest_age >= Duration::from_secs(590)
            && backlog.oldest_age < Duration::from_secs(3600),
        "the oldest entry is about ten minutes old: {health:?}"
    );
    assert!(health.running && !health.broker_reachable, "{health:?}");
    assert!(health.broker_error.is_some(), "{health:?}");
    assert_eq!(health.last_published, None, "{health:?}");
    assert!(!health.is_ready(Duration::from_secs(3600)), "{health:?}");
    stuck.shutdown().await;

    let relay = OutboxRelay::new(broker.transport.clone(), db.connector())
        .poll_interval(Duration::from_millis(50))
        .backlog_interval(Duration::from_millis(50))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health = relay.health().await;
        if health
            .backlog
            .is_some_and(|(backlog, _)| backlog.entries == 0)
        {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not empty: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(health.broker_reachable, "{health:?}");
    assert!(health.last_published.is_some(), "{health:?}");
    assert_eq!(health.stats.published, 50, "{health:?}");
    assert_eq!(health.backlog.unwrap().0.oldest_age, Duration::ZERO);
    assert!(health.is_ready(Duration::from_secs(1)), "{health:?}");
    relay.shutdown().await;
    broker.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_health_reports_the_backlog_and_the_broker() {
    health_reports_the_backlog_and_the_broker(
        PgDb::new("relay_health"),
        "relay_health_pg",
        "UPDATE cqrs_outbox SET created_at = now() - interval '10 minutes'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_relay_health_reports_the_backlog_and_the_broker() {
    health_reports_the_backlog_and_the_broker(
        MysqlDb::new("relay_health"),
        "relay_health_my",
        "UPDATE cqrs_outbox SET created_at = NOW(6) - INTERVAL 10 MINUTE",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_health_reports_the_backlog_and_the_broker() {
    health_reports_the_backlog_and_the_broker(
        SqliteDb::new("relay_health"),
        "relay_health_sq",
        "UPDATE cqrs_outbox SET created_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '-600 seconds')",
    )
    .await;
}
