//! The fixture the broker scenarios share: a transport on a broker, a unique exchange and
//! queue, the depth of a queue, a way to interrupt the broker, clean-up. Each scenario is one
//! generic body over [`Broker`]; [`broker_tests!`] instantiates it for RabbitMQ and for NATS
//! JetStream (`<file>::rabbitmq::<scenario>`, `<file>::nats::<scenario>`).

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use cqrs_diesel::{Config, ConfigBuilder, RabbitMqTransport, Transport};
use cqrs_nats::{NatsOptions, NatsTransport};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::support::{
    TempVhost, amqp_url_for_vhost, config_builder, rabbitmqctl, raw_connection, unique,
};

/// A broker the scenarios run against.
pub trait Broker: Send + Sync + 'static {
    /// Our transport for it.
    type Transport: Transport;
    /// What keeps an interruptible broker (or vhost) alive for one test.
    type Outage: Outage;

    /// A configuration with an exchange and queues of its own.
    fn config_builder(tag: &str) -> ConfigBuilder {
        config_builder(tag)
    }

    /// A transport for `config` on the shared test broker.
    fn transport(config: &Config) -> impl Future<Output = Self::Transport> + Send;

    /// Messages in `queue` not yet acknowledged and not handed out.
    fn depth(config: &Config, queue: &str) -> impl Future<Output = u32> + Send;

    /// Removes the exchange and the replica queues of `config` (best effort).
    fn cleanup(config: &Config) -> impl Future<Output = ()> + Send;

    /// A broker of the test's own that [`Outage::interrupt`] can cut off, with a transport
    /// on it for `config` (whose URL it replaces).
    fn interruptible(
        config: ConfigBuilder,
    ) -> impl Future<Output = (Self::Outage, Config, Self::Transport)> + Send;
}

/// Something that can cut the transport off its broker for a moment.
pub trait Outage: Send + Sync + 'static {
    /// Cuts every connection (blocking; run it on a blocking thread) and lets the broker come
    /// back.
    fn interrupt(&self) -> String;
}

/// The local RabbitMQ (`AMQP_URL`).
pub struct RabbitMq;

impl Broker for RabbitMq {
    type Transport = RabbitMqTransport;
    type Outage = TempVhost;

    async fn transport(config: &Config) -> RabbitMqTransport {
        RabbitMqTransport::new(config.clone())
    }

    async fn depth(_config: &Config, queue: &str) -> u32 {
        let connection = raw_connection().await;
        let channel = connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "".into()).await;
        declared.message_count()
    }

    async fn cleanup(config: &Config) {
        let queues: Vec<&str> = [config.queue(), config.dead_letter_queue()]
            .into_iter()
            .flatten()
            .collect();
        crate::support::cleanup(config.exchange(), &queues).await;
    }

    async fn interruptible(config: ConfigBuilder) -> (TempVhost, Config, RabbitMqTransport) {
        let vhost = TempVhost::new("cqrs_reconnect");
        let config = config
            .amqp_url(&amqp_url_for_vhost(&vhost.name))
            .build()
            .unwrap();
        let transport = RabbitMqTransport::new(config.clone());
        (vhost, config, transport)
    }
}

impl Outage for TempVhost {
    fn interrupt(&self) -> String {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "cqrs reconnection test",
        ])
    }
}

/// The NATS JetStream server of `CQRS_TEST_NATS_URL` (default `nats://127.0.0.1:4223`, the
/// one scripts/setup.sh starts).
pub struct Nats;

/// The test NATS server's URL.
pub fn nats_url() -> String {
    std::env::var("CQRS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4223".to_owned())
}

/// Our transport's options for `config` on the server at `url`.
pub fn nats_options(url: &str, config: &Config) -> NatsOptions {
    NatsOptions::new(url)
        .with_config(config)
        .connect_timeout(Duration::from_secs(10))
        .publish_timeout(Duration::from_secs(3))
}

impl Broker for Nats {
    type Transport = NatsTransport;
    type Outage = NatsServer;

    async fn transport(config: &Config) -> NatsTransport {
        NatsTransport::connect(nats_options(&nats_url(), config))
            .await
            .expect("NATS transport")
    }

    async fn depth(config: &Config, queue: &str) -> u32 {
        let client = async_nats::connect(nats_url())
            .await
            .expect("raw NATS client");
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(cqrs_nats::stream_name(config.exchange()))
            .await
            .expect("the exchange's stream");
        let info = stream
            .consumer_info(cqrs_nats::consumer_name(queue))
            .await
            .expect("the queue's consumer");
        u32::try_from(info.num_pending).unwrap_or(u32::MAX)
    }

    async fn cleanup(config: &Config) {
        if let Ok(client) = async_nats::connect(nats_url()).await {
            let js = async_nats::jetstream::new(client);
            let _ = js
                .delete_stream(cqrs_nats::stream_name(config.exchange()))
                .await;
        }
    }

    async fn interruptible(config: ConfigBuilder) -> (NatsServer, Config, NatsTransport) {
        let server = NatsServer::start();
        let config = config.build().unwrap();
        let transport = NatsTransport::connect(
            nats_options(&server.url(), &config).ack_wait(Duration::from_secs(3)),
        )
        .await
        .expect("NATS transport");
        (server, config, transport)
    }
}

/// A nats-server of the test's own (another free port, its own store directory), killed at
/// the end; [`Outage::interrupt`] kills it and starts it again on the same port and store.
pub struct NatsServer {
    port: u16,
    store: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
}

impl NatsServer {
    /// The nats-server binary: `CQRS_NATS_SERVER`, or the one scripts/setup.sh installs.
    fn binary() -> String {
        std::env::var("CQRS_NATS_SERVER")
            .unwrap_or_else(|_| "/opt/cqrs-nats-venv/bin/nats-server".to_owned())
    }

    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = std::env::temp_dir().join(unique("cqrs_nats_store"));
        let server = NatsServer {
            port,
            store,
            child: std::sync::Mutex::new(None),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&self) {
        let child = Command::new(Self::binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts (scripts/setup.sh installs it)");
        *self.child.lock().unwrap() = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Outage for NatsServer {
    fn interrupt(&self) -> String {
        self.kill();
        std::thread::sleep(Duration::from_millis(300));
        self.spawn();
        format!("nats-server on port {} restarted", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Generates, for each generic scenario `name::<B: Broker>()` of the calling module, the
/// tests `rabbitmq::name` and `nats::name`.
macro_rules! broker_tests {
    ($($name:ident),* $(,)?) => {
        mod rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<crate::brokers::RabbitMq>().await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<crate::brokers::Nats>().await
                }
            )*
        }
    };
}
pub(crate) use broker_tests;
