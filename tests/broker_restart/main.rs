//! The transport across a real broker restart: while the broker is down, publishing fails with
//! a retryable error after `connect_timeout`; once it is back, publishing and consuming resume
//! by themselves, and persistent messages published before the restart are still there.
//!
//! The broker is a node of its own (cqrs-r1@localhost on port 5711, started by
//! `scripts/rabbitmq-cluster.sh` and torn down however the test ends), stopped with
//! `rabbitmqctl stop` and started again on its data: no test stops the machine's shared broker.

#[allow(dead_code)]
#[path = "../common/cluster.rs"]
mod cluster;
// Shared with the integration binary; this test uses only part of it.
#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

use std::collections::HashSet;
use std::time::Duration;

use cqrs_diesel::transport::{Consumer, OutgoingMessage};
use cqrs_diesel::{Config, RabbitMqTransport, Topology, Transport};

use cluster::Cluster;
use support::unique;

async fn publish_until_confirmed(transport: &RabbitMqTransport, message: &OutgoingMessage) {
    for _ in 0..600 {
        match transport.publish_confirmed(message).await {
            Ok(()) => return,
            Err(error) if error.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("publish failed for good: {error}"),
        }
    }
    panic!("no confirm within a minute of retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_survives_a_broker_restart_and_persistent_messages_survive_it_too() {
    let broker = tokio::task::spawn_blocking(|| Cluster::start("cqrs-r", 1, 5711))
        .await
        .expect("starting the broker's node");
    let config = Config::builder()
        .amqp_url(&broker.url(1))
        .exchange(unique("restart_x"))
        .queue(unique("restart_q"))
        .connect_timeout(Duration::from_secs(2))
        .reconnect_min_delay(Duration::from_millis(100))
        .reconnect_max_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let queue = config.queue().unwrap().to_owned();
    let transport = RabbitMqTransport::new(config.clone());
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await
        .unwrap();

    // Published, confirmed, not yet consumed: must survive the restart.
    let before: Vec<OutgoingMessage> = (0..300)
        .map(|n| OutgoingMessage::new("author", n.to_string()))
        .collect();
    transport.publish_all(&before, 100).await.unwrap();

    let broker = tokio::task::spawn_blocking(move || {
        broker.stop_node(1).expect("rabbitmqctl stop");
        broker
    })
    .await
    .expect("stopping the broker");
    let down = transport
        .publish_confirmed(&OutgoingMessage::new("author", "during outage"))
        .await;
    let error = down.expect_err("no broker, no confirm");
    assert!(error.is_retryable(), "an outage is retryable: {error}");
    let broker = tokio::task::spawn_blocking(move || {
        broker.start_node(1).expect("starting the broker again");
        broker
    })
    .await
    .expect("starting the broker");

    // Consuming starts after the restart; publishing goes on.
    let mut consumer = transport.consume(&queue, 100).await.unwrap();
    for n in 300..600 {
        publish_until_confirmed(&transport, &OutgoingMessage::new("author", n.to_string())).await;
    }
    let mut seen = HashSet::new();
    while seen.len() < 600 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("deliveries keep coming")
            .expect("consumer open")
            .expect("no consumer error");
        let n: u32 = std::str::from_utf8(delivery.body())
            .unwrap()
            .parse()
            .unwrap();
        seen.insert(n);
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen, (0..600).collect::<HashSet<u32>>());
    drop(consumer);
    transport.close().await;
    // The node, its queues and exchange go with it.
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .expect("tearing the broker down");
}
