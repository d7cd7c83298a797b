//! What every transport must do, one generic body per behaviour, run against RabbitMQ and
//! NATS JetStream (`transport_scenarios::{rabbitmq,nats}::<scenario>`): confirms and order,
//! reject with and without requeue, unacknowledged deliveries coming back, unroutable
//! publishes, expiration, a missing queue, and publishing and consuming across a broker
//! outage.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_diesel::transport::{Consumer, Delivery, OutgoingMessage, dead_letter_routing_key};
use cqrs_diesel::{Config, Topology, Transport, TransportError as Error};

use crate::brokers::{Broker, Outage, broker_tests};

broker_tests!(
    published_messages_are_confirmed_then_consumed_in_order_and_acked,
    reject_with_requeue_redelivers_and_without_requeue_drops,
    unacked_deliveries_return_to_the_queue_when_the_consumer_is_dropped,
    unroutable_publish_is_reported_as_an_error,
    a_message_past_its_expiration_is_dropped_and_the_expiration_is_delivered,
    consuming_a_missing_queue_is_refused,
    publishing_and_consuming_resume_after_the_broker_goes_away,
);

pub async fn next_within(consumer: &mut impl Consumer, secs: u64) -> Delivery {
    tokio::time::timeout(Duration::from_secs(secs), consumer.next())
        .await
        .expect("a delivery within the timeout")
        .expect("the consumer is open")
        .expect("no consumer error")
}

/// A transport with a replica topology of its own for `cqrs_ids`.
pub struct Setup<B: Broker> {
    pub config: Config,
    pub transport: B::Transport,
    pub queue: String,
    pub dlq: String,
}

impl<B: Broker> Setup<B> {
    pub async fn new(tag: &str, cqrs_ids: &[&str]) -> Self {
        Self::with(B::config_builder(tag).build().unwrap(), cqrs_ids).await
    }

    pub async fn with(config: Config, cqrs_ids: &[&str]) -> Self {
        let transport = B::transport(&config).await;
        transport
            .declare(&Topology::from_config(&config, cqrs_ids.iter().copied()))
            .await
            .expect("topology declared");
        Setup {
            queue: config.queue().unwrap().to_owned(),
            dlq: config.dead_letter_queue().unwrap().to_owned(),
            config,
            transport,
        }
    }

    pub async fn depth(&self) -> u32 {
        B::depth(&self.config, &self.queue).await
    }

    pub async fn teardown(self) {
        self.transport.close().await;
        B::cleanup(&self.config).await;
    }
}

async fn published_messages_are_confirmed_then_consumed_in_order_and_acked<B: Broker>() {
    let setup = Setup::<B>::new("confirm", &["author"]).await;
    let messages: Vec<OutgoingMessage> = (0..200)
        .map(|i| OutgoingMessage::new("author", format!(r#"{{"n":{i}}}"#)))
        .collect();
    setup
        .transport
        .publish_all(&messages, 64)
        .await
        .expect("all confirmed");
    assert_eq!(setup.depth().await, 200);

    let mut consumer = setup.transport.consume(&setup.queue, 50).await.unwrap();
    for i in 0..200 {
        let delivery = next_within(&mut consumer, 10).await;
        assert_eq!(delivery.body(), format!(r#"{{"n":{i}}}"#).as_bytes());
        assert_eq!(delivery.routing_key(), "author");
        assert!(!delivery.redelivered());
        delivery.ack().await.expect("ack");
    }
    drop(consumer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(setup.depth().await, 0, "acked messages are gone");
    // Acked means forgotten: a new consumer gets nothing.
    let mut consumer = setup.transport.consume(&setup.queue, 50).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(nothing.is_err(), "acked messages are not delivered again");
    drop(consumer);
    setup.teardown().await;
}

async fn reject_with_requeue_redelivers_and_without_requeue_drops<B: Broker>() {
    let setup = Setup::<B>::new("reject", &["author"]).await;
    for body in ["keep", "drop"] {
        setup
            .transport
            .publish_confirmed(&OutgoingMessage::new("author", body))
            .await
            .unwrap();
    }
    let mut consumer = setup.transport.consume(&setup.queue, 10).await.unwrap();
    let first = next_within(&mut consumer, 10).await;
    let second = next_within(&mut consumer, 10).await;
    assert_eq!(first.body(), b"keep");
    assert_eq!(second.body(), b"drop");
    first.reject(true).await.unwrap();
    second.reject(false).await.unwrap();

    let again = next_within(&mut consumer, 10).await;
    assert_eq!(again.body(), b"keep");
    assert!(
        again.redelivered(),
        "a requeued message is marked redelivered"
    );
    again.ack().await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(
        nothing.is_err(),
        "the message rejected without requeue is gone"
    );
    drop(consumer);
    setup.teardown().await;
}

async fn unacked_deliveries_return_to_the_queue_when_the_consumer_is_dropped<B: Broker>() {
    let setup = Setup::<B>::new("unacked", &["author"]).await;
    setup
        .transport
        .publish_confirmed(&OutgoingMessage::new("author", "x"))
        .await
        .unwrap();
    let mut consumer = setup.transport.consume(&setup.queue, 10).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    assert!(!delivery.redelivered());
    drop(consumer);
    // The consumer is gone: acking now must fail, not pretend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = delivery.ack().await;
    assert!(
        matches!(late, Err(Error::ConnectionLost { .. })),
        "late ack: {late:?}"
    );
    let mut consumer = setup.transport.consume(&setup.queue, 10).await.unwrap();
    // Well before any broker-side acknowledgement timeout.
    let again = next_within(&mut consumer, 5).await;
    assert_eq!(again.body(), b"x");
    assert!(again.redelivered());
    again.ack().await.unwrap();
    drop(consumer);
    setup.teardown().await;
}

async fn unroutable_publish_is_reported_as_an_error<B: Broker>() {
    let setup = Setup::<B>::new("unroutable", &["author"]).await;
    let result = setup
        .transport
        .publish_confirmed(&OutgoingMessage::new("nobody_listens", "lost?"))
        .await;
    match result {
        Err(
            ref error @ Error::Unroutable {
                ref exchange,
                ref routing_key,
            },
        ) => {
            assert_eq!(exchange, setup.config.exchange());
            assert_eq!(routing_key, "nobody_listens");
            assert!(!error.is_retryable());
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    // The default exchange reaches a declared queue by name, and nothing else.
    setup
        .transport
        .publish_confirmed(&OutgoingMessage::to_queue(setup.dlq.clone(), "straight"))
        .await
        .expect("a declared queue is reachable through the default exchange");
    let stray = setup
        .transport
        .publish_confirmed(&OutgoingMessage::to_queue("no_such_queue_here", "lost?"))
        .await;
    assert!(matches!(stray, Err(Error::Unroutable { .. })), "{stray:?}");
    // The transport stays usable after an unroutable message.
    setup
        .transport
        .publish_confirmed(&OutgoingMessage::new("author", "fine"))
        .await
        .expect("next publish works");
    assert_eq!(setup.depth().await, 1);
    setup.teardown().await;
}

async fn a_message_past_its_expiration_is_dropped_and_the_expiration_is_delivered<B: Broker>() {
    let setup = Setup::<B>::new("expiry", &["author"]).await;
    let dead_key = dead_letter_routing_key(&setup.dlq, "author");
    setup
        .transport
        .publish_confirmed(
            &OutgoingMessage::new(dead_key.clone(), "short")
                .with_expiration(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    setup
        .transport
        .publish_confirmed(
            &OutgoingMessage::new(dead_key.clone(), "long")
                .with_expiration(Duration::from_secs(864_000))
                .with_header("x-cqrs-error", "missing key `cqrs_id`"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut consumer = setup.transport.consume(&setup.dlq, 5).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    assert_eq!(delivery.body(), b"long", "the expired message is gone");
    assert_eq!(delivery.routing_key(), dead_key);
    assert_eq!(delivery.expiration(), Some(Duration::from_secs(864_000)));
    assert_eq!(
        delivery.header("x-cqrs-error"),
        Some("missing key `cqrs_id`")
    );
    delivery.ack().await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(
        nothing.is_err(),
        "nothing else: the expired message never comes"
    );
    drop(consumer);
    setup.teardown().await;
}

async fn consuming_a_missing_queue_is_refused<B: Broker>() {
    let setup = Setup::<B>::new("missing", &["author"]).await;
    let result = setup
        .transport
        .consume("no_such_queue_for_cqrs_tests", 5)
        .await;
    match result {
        Err(error @ Error::Refused { .. }) => assert!(!error.is_retryable()),
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(_) => panic!("expected Refused, got a consumer"),
    }
    setup.teardown().await;
}

const TOTAL: u32 = 3000;

async fn publishing_and_consuming_resume_after_the_broker_goes_away<B: Broker>() {
    let (outage, config, transport) = B::interruptible(
        B::config_builder("reconnect")
            .connect_timeout(Duration::from_secs(10))
            .reconnect_min_delay(Duration::from_millis(50))
            .reconnect_max_delay(Duration::from_millis(500)),
    )
    .await;
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await
        .unwrap();
    let mut consumer = transport
        .consume(config.queue().unwrap(), 200)
        .await
        .unwrap();

    let received = Arc::new(Mutex::new(HashSet::new()));
    let consumer_task = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.expect("no consumer error");
                let n: u32 = std::str::from_utf8(delivery.body())
                    .unwrap()
                    .parse()
                    .unwrap();
                // An ack on a connection that died is refused; the broker redelivers: fine.
                let _ = delivery.ack().await;
                let mut seen = received.lock().unwrap();
                seen.insert(n);
                if seen.len() == TOTAL as usize {
                    return;
                }
            }
        })
    };

    let outage = Arc::new(outage);
    let mut confirmed = Vec::new();
    let mut retryable_failures = 0u32;
    let mut interruptions = Vec::new();
    for n in 0..TOTAL {
        if n == 1000 || n == 2000 {
            let outage = Arc::clone(&outage);
            interruptions.push(tokio::task::spawn_blocking(move || outage.interrupt()));
        }
        let message = OutgoingMessage::new("author", n.to_string());
        loop {
            match transport.publish_confirmed(&message).await {
                Ok(()) => {
                    confirmed.push(n);
                    break;
                }
                Err(error) if error.is_retryable() => {
                    retryable_failures += 1;
                    assert!(retryable_failures < 200, "no progress: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("publish {n} failed for good: {error}"),
            }
        }
    }
    let mut report = String::new();
    for interruption in interruptions {
        report.push_str(&interruption.await.unwrap());
    }
    eprintln!("retryable publish failures: {retryable_failures}; outage: {report}");

    tokio::time::timeout(Duration::from_secs(90), consumer_task)
        .await
        .expect("every confirmed message arrives after reconnection")
        .unwrap();
    let seen = received.lock().unwrap().clone();
    let lost: Vec<_> = confirmed.iter().filter(|n| !seen.contains(n)).collect();
    assert!(lost.is_empty(), "confirmed but never delivered: {lost:?}");
    assert_eq!(confirmed.len(), TOTAL as usize);
    transport.close().await;
    B::cleanup(&config).await;
}
