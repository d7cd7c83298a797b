//! Shared helpers: broker URL from the environment, unique names, rabbitmqctl, raw lapin.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cqrs_diesel::{Config, ConfigBuilder};
use lapin::{Connection, ConnectionProperties};

/// The broker the tests use: `AMQP_URL`, or this machine's local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The same broker on another virtual host.
pub fn amqp_url_for_vhost(vhost: &str) -> String {
    let base = amqp_url();
    let without_vhost = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(head, _)| head);
    format!("{without_vhost}/{vhost}")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..8)
            .unwrap_or_default()
    )
}

/// A configuration with its own exchange and queue names, on the test broker.
pub fn config_builder(tag: &str) -> ConfigBuilder {
    let queue = unique(&format!("{tag}_q"));
    Config::builder()
        .amqp_url(&amqp_url())
        .exchange(unique(&format!("{tag}_x")))
        .queue(queue)
        .connect_timeout(Duration::from_secs(5))
        .reconnect_min_delay(Duration::from_millis(50))
        .reconnect_max_delay(Duration::from_millis(500))
}

/// Runs `rabbitmqctl` and returns its standard output; panics with its error output.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the tests need it on PATH, as root)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A vhost of its own, removed on drop, so a test can close every connection of it without
/// disturbing the tests running beside it.
pub struct TempVhost {
    pub name: String,
}

impl TempVhost {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        TempVhost { name }
    }
}

impl Drop for TempVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// A plain lapin connection, for checking what our transport did without using it.
pub async fn raw_connection() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("raw lapin connects to the test broker")
}

/// Deletes queues and an exchange left by a test (best effort).
pub async fn cleanup(exchange: &str, queues: &[&str]) {
    let connection = raw_connection().await;
    if let Ok(channel) = connection.create_channel().await {
        for queue in queues {
            let _ = channel
                .queue_delete((*queue).into(), Default::default())
                .await;
        }
        let _ = channel
            .exchange_delete(exchange.into(), Default::default())
            .await;
    }
    let _ = connection.close(200, "cleanup".into()).await;
}

/// A new exclusive, auto-deleted queue named after `prefix`, bound to `exchange` with
/// `binding_key`, and a consumer of it without acknowledgements, on a channel of `connection`.
pub async fn exclusive_consumer(
    connection: &Connection,
    exchange: &str,
    binding_key: &str,
    prefix: &str,
) -> (lapin::Channel, lapin::Consumer) {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let channel = connection.create_channel().await.expect("channel");
    let queue = unique(prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the exclusive queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            binding_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the exclusive queue");
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            prefix.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume the exclusive queue");
    (channel, consumer)
}

/// A plain lapin consumer of everything published to one exchange (an exclusive queue bound
/// with `#`), to check what our code published without using our code to read it.
pub struct Capture {
    _connection: Connection,
    consumer: lapin::Consumer,
}

impl Capture {
    /// Binds a new exclusive queue to `exchange`, which must exist.
    pub async fn bind(exchange: &str) -> Capture {
        let connection = raw_connection().await;
        let (_, consumer) = exclusive_consumer(&connection, exchange, "#", "capture").await;
        Capture {
            _connection: connection,
            consumer,
        }
    }

    /// The next `n` messages as (routing key, JSON body); panics if they do not all arrive
    /// within `within`.
    pub async fn take(&mut self, n: usize, within: Duration) -> Vec<(String, serde_json::Value)> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let next = tokio::time::timeout_at(deadline, self.consumer.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
                .expect("the capture consumer is open")
                .expect("a delivery");
            let body: serde_json::Value = serde_json::from_slice(&next.data).expect("a JSON body");
            out.push((next.routing_key.to_string(), body));
        }
        out
    }

    /// Whether no message arrives within `within`.
    pub async fn is_quiet_for(&mut self, within: Duration) -> bool {
        use futures_util::StreamExt;
        tokio::time::timeout(within, self.consumer.next())
            .await
            .is_err()
    }
}
