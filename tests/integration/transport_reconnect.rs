//! The RabbitMQ transport's logs and its queue re-declaration; publishing and consuming across
//! an outage is the shared scenario in `transport_scenarios.rs`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_diesel::transport::{Consumer, OutgoingMessage};
use cqrs_diesel::{Config, RabbitMqTransport, Topology, Transport, TransportError as Error};

use crate::support::rabbitmqctl;

/// A `MakeWriter` that keeps everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Current-thread runtime: the thread-local subscriber sees everything the transport logs.
#[tokio::test]
async fn the_password_never_appears_in_errors_debug_output_or_logs() {
    const PASSWORD: &str = "s3cr3t-p4ss";
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let url = crate::support::amqp_url().replacen("guest:guest@", &format!("guest:{PASSWORD}@"), 1);
    assert!(
        url.contains(PASSWORD),
        "test URL carries the password: {url}"
    );
    let config = Config::builder()
        .amqp_urls([format!("amqp://guest:{PASSWORD}@127.0.0.1:1/%2f"), url])
        .connect_timeout(Duration::from_secs(3))
        .reconnect_min_delay(Duration::from_millis(50))
        .reconnect_max_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let transport = RabbitMqTransport::new(config.clone());
    let error = transport
        .publish(&OutgoingMessage::new("author", "x"))
        .await
        .expect_err("the broker refuses a wrong password");
    assert!(
        matches!(error, Error::AccessRefused { .. }),
        "wrong password is reported as refused login, got {error:?}"
    );
    assert!(!error.is_retryable());

    let texts = [
        error.to_string(),
        format!("{error:?}"),
        format!("{config:?}"),
        format!("{transport:?}"),
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap(),
    ];
    assert!(
        texts[4].contains("cannot connect"),
        "the failed attempts were logged: {}",
        texts[4]
    );
    for text in texts {
        assert!(!text.contains(PASSWORD), "password leaked in: {text}");
    }
    transport.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_declares_its_queue_again_when_it_is_deleted() {
    let config = crate::support::config_builder("redeclare").build().unwrap();
    let queue = config.queue().unwrap().to_owned();
    let transport = RabbitMqTransport::new(config.clone());
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await
        .unwrap();
    let mut consumer = transport.consume(&queue, 10).await.unwrap();

    // An operator deletes the queue (as a broker that lost its data would have none): the
    // broker cancels the consumer, which subscribes again and declares its topology first.
    rabbitmqctl(&["delete_queue", &queue]);

    // Publishing is unroutable until the queue and its bindings are back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match transport
            .publish_confirmed(&OutgoingMessage::new("author", b"after".to_vec()))
            .await
        {
            Ok(()) => break,
            Err(Error::Unroutable { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the queue was not declared again: {error}"),
        }
    }
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery on the re-declared queue")
        .expect("the consumer is open")
        .expect("no consumer error");
    assert_eq!(delivery.body(), b"after");
    delivery.ack().await.unwrap();
    crate::support::cleanup(
        config.exchange(),
        &[&queue, config.dead_letter_queue().unwrap()],
    )
    .await;
}
