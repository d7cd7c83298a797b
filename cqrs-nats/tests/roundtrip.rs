//! Against the NATS server of `CQRS_TEST_NATS_URL` (default `nats://127.0.0.1:4223`, started by
//! scripts/setup.sh): declare, publish with confirms, consume, settle.

use std::time::Duration;

use cqrs_core::{Config, Consumer, Error, OutgoingMessage, Topology, Transport};
use cqrs_nats::{NatsOptions, NatsTransport};

fn url() -> String {
    std::env::var("CQRS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4223".to_owned())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_consume_ack_reject_and_unroutable() {
    let exchange = unique("ex");
    let queue = unique("q");
    let transport = NatsTransport::connect(NatsOptions::new(url()).exchange(&exchange))
        .await
        .unwrap();
    transport.probe().await.unwrap();
    let config = Config::builder()
        .exchange(&exchange)
        .queue(&queue)
        .build()
        .unwrap();
    let topology = Topology::from_config(&config, ["author"]);
    transport.declare(&topology).await.unwrap();
    transport.declare(&topology).await.unwrap();

    let unroutable = transport
        .publish_confirmed(&OutgoingMessage::new("book", "x"))
        .await;
    assert!(
        matches!(unroutable, Err(Error::Unroutable { .. })),
        "{unroutable:?}"
    );

    for i in 0..3 {
        transport
            .publish_confirmed(
                &OutgoingMessage::new("author", format!("m{i}")).with_header("x-a", "b"),
            )
            .await
            .unwrap();
    }
    let mut consumer = transport.consume(&queue, 10).await.unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    assert_eq!(first.body(), b"m0");
    assert_eq!(first.routing_key(), "author");
    assert_eq!(first.header("x-a"), Some("b"));
    assert!(!first.redelivered());
    first.reject(true).await.unwrap();
    let again = consumer.next().await.unwrap().unwrap();
    // A nak'ed message comes again; JetStream may hand out the next ones first.
    let mut seen = vec![(again.body().to_vec(), again.redelivered())];
    again.ack().await.unwrap();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((d.body().to_vec(), d.redelivered()));
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (b"m0".to_vec(), true),
            (b"m1".to_vec(), false),
            (b"m2".to_vec(), false)
        ]
    );
    transport.close().await;
    assert!(consumer.next().await.is_none());
    assert!(matches!(
        transport
            .publish(&OutgoingMessage::new("author", "late"))
            .await,
        Err(Error::Closed)
    ));
}
