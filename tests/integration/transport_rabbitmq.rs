//! `RabbitMqTransport` against the real broker, what only RabbitMQ has: the topology as
//! rabbitmqctl lists it, quorum queues, AMQP properties, cluster URLs, a dropped runtime. The
//! behaviours every transport shares (confirms, ack/reject, routing) are in
//! `transport_scenarios.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use cqrs_diesel::transport::{
    OutgoingMessage, QueueType, dead_letter_routing_key, direct_routing_key,
};
use cqrs_diesel::{Config, RabbitMqTransport, Topology, Transport, TransportError as Error};
use lapin::options::BasicGetOptions;

use crate::brokers::{Broker, RabbitMq};
use crate::support::{cleanup, config_builder, rabbitmqctl, raw_connection};
use crate::transport_scenarios::next_within;

/// The shared scenarios' set-up, on RabbitMQ.
type Setup = crate::transport_scenarios::Setup<RabbitMq>;

fn bindings_of(exchange: &str) -> BTreeSet<(String, String)> {
    let out = rabbitmqctl(&[
        "list_bindings",
        "--formatter",
        "json",
        "source_name",
        "destination_name",
        "routing_key",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json from rabbitmqctl");
    rows.iter()
        .filter(|row| row["source_name"] == exchange)
        .map(|row| {
            (
                row["destination_name"].as_str().unwrap().to_owned(),
                row["routing_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn queue_info(name: &str) -> serde_json::Value {
    let out = rabbitmqctl(&[
        "list_queues",
        "--formatter",
        "json",
        "name",
        "durable",
        "exclusive",
        "auto_delete",
        "type",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json from rabbitmqctl");
    rows.into_iter()
        .find(|row| row["name"] == name)
        .unwrap_or_else(|| panic!("queue {name} exists on the broker"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_topology_matches_wire_md_on_the_broker() {
    let setup = Setup::new("topology", &["author", "book"]).await;
    let (q, dlq) = (setup.queue.clone(), setup.dlq.clone());
    assert_eq!(
        dlq,
        format!("dead_letter_{q}"),
        "default dead-letter queue name"
    );

    let expected: BTreeSet<(String, String)> = ["author", "book"]
        .iter()
        .flat_map(|id| {
            [
                (q.clone(), id.to_string()),
                (q.clone(), direct_routing_key(&q, id)),
                (dlq.clone(), dead_letter_routing_key(&dlq, id)),
            ]
        })
        .collect();
    assert_eq!(bindings_of(setup.config.exchange()), expected);

    let exchanges = rabbitmqctl(&[
        "list_exchanges",
        "--formatter",
        "json",
        "name",
        "type",
        "durable",
    ]);
    let exchanges: Vec<serde_json::Value> = serde_json::from_str(&exchanges).unwrap();
    let exchange = exchanges
        .iter()
        .find(|row| row["name"] == setup.config.exchange())
        .expect("exchange exists");
    assert_eq!(exchange["type"], "topic");
    assert_eq!(exchange["durable"], true);
    for name in [&q, &dlq] {
        let info = queue_info(name);
        assert_eq!(info["durable"], true, "{name} durable");
        assert_eq!(info["exclusive"], false, "{name} not exclusive");
        assert_eq!(info["auto_delete"], false, "{name} not auto-delete");
        assert_eq!(info["type"], "classic", "{name} classic by default");
    }

    // Declaring twice is harmless.
    setup
        .transport
        .declare(&Topology::from_config(&setup.config, ["author", "book"]))
        .await
        .expect("declaration is idempotent");

    // And the routing does what the bindings say.
    for (key, body) in [
        ("author".to_owned(), "broadcast"),
        (direct_routing_key(&q, "book"), "direct"),
        (dead_letter_routing_key(&dlq, "author"), "dead"),
    ] {
        setup
            .transport
            .publish_confirmed(&OutgoingMessage::new(key, body))
            .await
            .unwrap();
    }
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let mut got = Vec::new();
    for queue in [&q, &q, &dlq] {
        let message = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        got.push((
            queue.clone(),
            String::from_utf8(message.delivery.data.clone()).unwrap(),
        ));
    }
    assert_eq!(
        got,
        vec![
            (q.clone(), "broadcast".to_owned()),
            (q.clone(), "direct".to_owned()),
            (dlq.clone(), "dead".to_owned())
        ]
    );
    let _ = connection.close(200, "".into()).await;
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_are_declared_when_configured() {
    let config = config_builder("quorum")
        .queue_type(QueueType::Quorum)
        .build()
        .unwrap();
    let setup = Setup::with(config, &["author"]).await;
    assert_eq!(queue_info(&setup.queue)["type"], "quorum");
    assert_eq!(queue_info(&setup.dlq)["type"], "quorum");
    setup
        .transport
        .publish_confirmed(&OutgoingMessage::new("author", "q"))
        .await
        .unwrap();
    let mut consumer = setup.transport.consume(&setup.queue, 5).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    assert_eq!(delivery.body(), b"q");
    delivery.ack().await.unwrap();
    drop(consumer);
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_persistent_text_plain_with_expiration_and_headers() {
    let setup = Setup::new("props", &["author"]).await;
    let message = OutgoingMessage::new(dead_letter_routing_key(&setup.dlq, "author"), "{}")
        .with_expiration(Duration::from_secs(864_000))
        .with_header("x-cqrs-error", "missing key `cqrs_id`");
    setup.transport.publish_confirmed(&message).await.unwrap();

    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let got = channel
        .basic_get(setup.dlq.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is in the dead-letter queue");
    let properties = &got.delivery.properties;
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(
        properties.expiration().as_ref().map(|s| s.as_str()),
        Some("864000000")
    );
    let headers = properties.headers().as_ref().expect("headers");
    assert_eq!(
        headers
            .inner()
            .get("x-cqrs-error")
            .map(|v| format!("{v:?}")),
        Some(format!(
            "{:?}",
            lapin::types::AMQPValue::LongString("missing key `cqrs_id`".into())
        ))
    );
    let _ = connection.close(200, "".into()).await;

    // And our consumer reads them back.
    setup.transport.publish_confirmed(&message).await.unwrap();
    let mut consumer = setup.transport.consume(&setup.dlq, 5).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    assert_eq!(
        delivery.header("x-cqrs-error"),
        Some("missing key `cqrs_id`")
    );
    assert_eq!(delivery.expiration(), Some(Duration::from_secs(864_000)));
    delivery.ack().await.unwrap();
    drop(consumer);
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_gives_a_retryable_connect_error() {
    let config = Config::builder()
        .amqp_url("amqp://guest:guest@127.0.0.1:1/%2f")
        .connect_timeout(Duration::from_millis(700))
        .reconnect_min_delay(Duration::from_millis(50))
        .reconnect_max_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let transport = RabbitMqTransport::new(config);
    let started = std::time::Instant::now();
    let result = transport
        .publish(&OutgoingMessage::new("author", "x"))
        .await;
    match result {
        Err(error @ Error::Connect { .. }) => assert!(error.is_retryable()),
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gives up after connect_timeout, not for ever"
    );
    transport.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_list_skips_a_dead_node() {
    let config = config_builder("cluster")
        .amqp_urls([
            "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
            crate::support::amqp_url(),
        ])
        .build()
        .unwrap();
    let setup = Setup::with(config, &["author"]).await;
    setup
        .transport
        .publish_confirmed(&OutgoingMessage::new("author", "via second node"))
        .await
        .expect("published through the live node");
    assert_eq!(RabbitMq::depth(&setup.config, &setup.queue).await, 1);
    setup.teardown().await;
}

/// Runs the `transport_drop` binary (a service that drops its Tokio runtime with its transport
/// open) and returns its standard error, after checking that it published and exited 0.
fn run_transport_drop(mode: &str) -> String {
    let exchange = crate::support::unique("transport_drop");
    let queue = format!("{exchange}_q");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_transport_drop"));
    command
        .env("CQRS_AMQP_URL", crate::support::amqp_url())
        .env("CQRS_EXCHANGE", &exchange)
        .env("CQRS_QUEUE", &queue)
        .env("RUST_BACKTRACE", "0");
    command.arg(mode);
    let output = command.output().expect("start transport_drop");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success() && stdout.contains("published"),
        "transport_drop failed ({}): {stdout}{stderr}",
        output.status
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(cleanup(&exchange, &[&queue]));
    stderr
}

#[test]
fn a_runtime_dropped_with_a_publishing_transport_open_prints_nothing() {
    let stderr = run_transport_drop("publish");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "nothing at all: {stderr}");
}

#[test]
fn a_runtime_dropped_with_a_consuming_transport_open_prints_nothing() {
    let stderr = run_transport_drop("consume");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "nothing at all: {stderr}");
}

#[test]
fn a_runtime_dropped_while_transports_connect_prints_nothing() {
    let stderr = run_transport_drop("connecting");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "nothing at all: {stderr}");
}
