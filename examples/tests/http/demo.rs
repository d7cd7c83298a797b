//! The demo's main logic, as `cargo run -p cqrs-examples --bin demo` runs it.

use std::time::Duration;

use cqrs_examples::demo::{self, DemoOptions, TransportKind};

use crate::support::amqp_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_succeeds_on_rabbitmq() {
    let options = DemoOptions {
        amqp_url: amqp_url(),
        ..DemoOptions::default()
    };
    let mut out = Vec::new();
    let report = demo::run(&options, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();

    assert_eq!(report.transport, TransportKind::RabbitMq, "{out}");
    assert_eq!(report.before.len(), 2);
    assert!(report.after_old_name.is_empty());
    assert_eq!(report.after_new_name.len(), 2);
    assert!(report.rename_lag < options.replication_timeout);
    assert!(
        out.contains("GET /payments?account.name=Pavel (before the rename)"),
        "{out}"
    );
    assert!(out.contains("Pasha"), "{out}");
    assert!(out.contains("replication lag"), "{out}");
    assert!(out.contains("done"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_falls_back_to_the_in_memory_transport() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = DemoOptions {
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        broker_timeout: Duration::from_millis(500),
        ..DemoOptions::default()
    };
    let mut out = Vec::new();
    let report = demo::run(&options, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();

    assert_eq!(report.transport, TransportKind::InMemory, "{out}");
    assert!(out.contains("notice: no RabbitMQ answered"), "{out}");
    assert!(out.contains("in-memory"), "{out}");
    assert_eq!(report.after_new_name.len(), 2, "{out}");
}
