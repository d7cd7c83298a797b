//! The operations endpoints: `/metrics` of the real service binaries after a replicated write,
//! and `/readyz` following the broker and the outbox.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_diesel::{Config, CqrsConnection, RabbitMqTransport, Transport};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use serde_json::{Value, json};

use crate::support::{amqp_url, unique};

/// A service binary running as a child process, killed on drop.
struct ServiceProcess {
    child: Child,
    url: String,
}

impl ServiceProcess {
    fn start(binary: &str, database: &str, listen: &str, config: &Config) -> ServiceProcess {
        let mut command = Command::new(binary);
        command
            .env("DATABASE_URL", database)
            .env("LISTEN_ADDR", listen)
            .env("CQRS_AMQP_URL", amqp_url())
            .env("CQRS_EXCHANGE", config.exchange())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(queue) = config.queue() {
            command.env("CQRS_QUEUE", queue);
        }
        let child = command.spawn().expect("the service binary starts");
        ServiceProcess {
            child,
            url: format!("http://{listen}"),
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on the loopback interface (bound, then released for the child to take).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    listener.local_addr().expect("its address").to_string()
}

async fn get_text(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until `url` answers with `status`, and returns the body.
async fn wait_for(http: &reqwest::Client, url: &str, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some((got, body)) = get_text(http, url).await {
            if got == status {
                return body;
            }
            last = Some((got, body));
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {status} within {within:?}; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `series` (name and labels exactly as rendered) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until `series` of `url`'s metrics reaches `value`; returns the whole text.
async fn wait_for_sample(http: &reqwest::Client, url: &str, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = wait_for(http, url, 200, Duration::from_secs(30)).await;
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {value} at {url}; the metrics were:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_of_both_services_show_a_replicated_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config::builder()
        .amqp_url(&amqp_url())
        .exchange(unique("ops_metrics_x"))
        .queue(unique("ops_metrics_q"))
        .build()
        .expect("a valid configuration");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let payments = ServiceProcess::start(
        env!("CARGO_BIN_EXE_payments"),
        &path("payments.sqlite3"),
        &free_address(),
        &config,
    );
    let accounts_config = Config::builder()
        .amqp_url(&amqp_url())
        .exchange(config.exchange())
        .build()
        .expect("a valid configuration");
    let accounts = ServiceProcess::start(
        env!("CARGO_BIN_EXE_accounts"),
        &path("accounts.sqlite3"),
        &free_address(),
        &accounts_config,
    );
    let http = reqwest::Client::new();
    // Ready once the payments queue is bound: the write below then reaches it.
    wait_for(
        &http,
        &format!("{}/readyz", payments.url),
        200,
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        &http,
        &format!("{}/readyz", accounts.url),
        200,
        Duration::from_secs(60),
    )
    .await;

    let created = http
        .post(format!("{}/accounts", accounts.url))
        .json(&json!({"name": "Pavel", "email": "pavel@example.com"}))
        .send()
        .await
        .expect("POST /accounts answers");
    assert_eq!(created.status().as_u16(), 201, "the account is created");

    let payments_metrics = wait_for_sample(
        &http,
        &format!("{}/metrics", payments.url),
        r#"cqrs_replica_applied_total{cqrs_id="account",outcome="created"}"#,
        1.0,
    )
    .await;
    let queue = config.queue().expect("a queue");
    assert_eq!(
        sample(
            &payments_metrics,
            &format!(
                r#"messaging_client_consumed_messages_total{{cqrs_id="account",messaging_destination_name="{queue}"}}"#
            )
        ),
        Some(1.0),
        "one message consumed:\n{payments_metrics}"
    );
    assert_eq!(
        sample(
            &payments_metrics,
            r#"cqrs_replication_lag_seconds_count{cqrs_id="account"}"#
        ),
        Some(1.0),
        "one lag observation:\n{payments_metrics}"
    );
    assert!(
        sample(
            &payments_metrics,
            &format!(r#"messaging_process_duration_seconds_count{{messaging_destination_name="{queue}"}}"#)
        )
        .is_some_and(|batches| batches >= 1.0),
        "the batch's apply duration is observed:\n{payments_metrics}"
    );

    let accounts_metrics = wait_for_sample(
        &http,
        &format!("{}/metrics", accounts.url),
        r#"cqrs_relay_confirmed_total{cqrs_id="account"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &accounts_metrics,
            r#"messaging_client_sent_messages_total{cqrs_id="account"}"#
        ),
        Some(1.0),
        "one message published:\n{accounts_metrics}"
    );
    assert_eq!(
        sample(
            &accounts_metrics,
            r#"messaging_client_operation_duration_seconds_count{messaging_operation_name="send"}"#
        ),
        Some(1.0),
        "one confirm latency observed:\n{accounts_metrics}"
    );
    assert_eq!(
        sample(
            &accounts_metrics,
            "cqrs_relay_nacked_total{cqrs_id=\"account\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "nothing nacked:\n{accounts_metrics}"
    );

    drop(accounts);
    drop(payments);
    cqrs_examples::demo::delete_broker_objects(&config).await;
}

/// Runs `rabbitmqctl` and panics with its error output when it fails.
fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the tests need it on PATH, as root)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A vhost of the test's own on the local broker: "stopping the broker" for the services on
/// it is deleting the vhost, which closes their connections, without touching the broker the
/// other tests use.
struct TestVhost {
    name: String,
}

impl TestVhost {
    fn create(name: &str) {
        rabbitmqctl(&["add_vhost", name]);
        rabbitmqctl(&["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]);
    }

    fn new(tag: &str) -> TestVhost {
        let name = unique(tag);
        TestVhost::create(&name);
        TestVhost { name }
    }

    /// The test broker's URL with this vhost instead of its own.
    fn url(&self) -> String {
        let base = amqp_url();
        let server = base
            .rsplit_once('/')
            .filter(|(server, _)| server.ends_with(|c: char| c.is_ascii_digit()))
            .map_or(base.as_str(), |(server, _)| server);
        format!("{server}/{}", self.name)
    }

    fn stop(&self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
    }

    fn start_again(&self) {
        TestVhost::create(&self.name);
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

async fn readyz(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let (status, body) = get_text(http, &format!("{base}/readyz"))
        .await
        .expect("/readyz answers");
    let body = serde_json::from_str(&body).expect("/readyz answers JSON");
    (status, body)
}

/// Waits until `/readyz` answers `status`; returns its body.
async fn wait_for_readyz(http: &reqwest::Client, base: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, body) = readyz(http, base).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not turn {status} within 60 s; last: {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_broker_going_away_and_coming_back() {
    let vhost = TestVhost::new("ops_readyz");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config::builder()
        .amqp_url(&vhost.url())
        .exchange(unique("ops_readyz_x"))
        .queue(unique("ops_readyz_q"))
        .connect_timeout(Duration::from_secs(2))
        .reconnect_min_delay(Duration::from_millis(50))
        .reconnect_max_delay(Duration::from_millis(500))
        .build()
        .expect("a valid configuration");
    let transport = RabbitMqTransport::new(config.clone());
    let db = dir.path().join("accounts.sqlite3");
    let accounts = cqrs_examples::accounts::start(
        &db.to_string_lossy(),
        &config,
        transport.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port"),
    )
    .await
    .expect("the accounts service starts");
    let payments = cqrs_examples::payments::start(
        &dir.path().join("payments.sqlite3").to_string_lossy(),
        &config,
        transport.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port"),
    )
    .await
    .expect("the payments service starts");
    let http = reqwest::Client::new();

    for service in [&accounts, &payments] {
        let body = wait_for_readyz(&http, &service.url(), 200).await;
        assert_eq!(body["ready"], json!(true), "{}: {body}", service.name());
    }

    vhost.stop();
    for service in [&accounts, &payments] {
        let body = wait_for_readyz(&http, &service.url(), 503).await;
        assert_eq!(
            body["checks"]["broker"]["ok"],
            json!(false),
            "{}: the broker check fails: {body}",
            service.name()
        );
        assert_eq!(
            body["checks"]["database"]["ok"],
            json!(true),
            "{}: the database check still passes: {body}",
            service.name()
        );
    }

    vhost.start_again();
    for service in [&accounts, &payments] {
        let body = wait_for_readyz(&http, &service.url(), 200).await;
        assert_eq!(body["checks"]["broker"]["ok"], json!(true), "{body}");
    }

    accounts.shutdown().await.expect("accounts stops");
    payments.shutdown().await.expect("payments stops");
    transport.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_the_oldest_outbox_entry_passes_the_threshold() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config::builder()
        .amqp_url(&amqp_url())
        .exchange(unique("ops_outbox_age_x"))
        .build()
        .expect("a valid configuration");
    let transport = RabbitMqTransport::new(config.clone());
    let db = dir.path().join("accounts.sqlite3");
    let db = db.to_string_lossy().into_owned();
    let ops = cqrs_examples::ops::Ops {
        max_outbox_age: Duration::from_secs(60),
    };
    let accounts = cqrs_examples::accounts::start_with(
        &db,
        &config,
        transport.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port"),
        ops,
    )
    .await
    .expect("the accounts service starts");
    let http = reqwest::Client::new();
    let body = wait_for_readyz(&http, &accounts.url(), 200).await;
    assert_eq!(body["checks"]["outbox"]["ok"], json!(true), "{body}");

    // Publishes now fail while the broker answers: the exchange is gone (the accounts service
    // declares it only at start). Then an entry written ten minutes ago waits in the outbox.
    cqrs_examples::demo::delete_broker_objects(&config).await;
    let mut conn = SqliteConnection::establish(&db).expect("the accounts database opens");
    conn.batch_execute("PRAGMA busy_timeout = 5000")
        .expect("a busy timeout");
    conn.batch_execute(
        "INSERT INTO cqrs_outbox (cqrs_id, routing_key, body, created_at) \
         VALUES ('account', 'account', '{}', strftime('%Y-%m-%d %H:%M:%f', 'now', '-600 seconds'))",
    )
    .expect("an old outbox entry");
    let body = wait_for_readyz(&http, &accounts.url(), 503).await;
    assert_eq!(body["checks"]["outbox"]["ok"], json!(false), "{body}");
    assert_eq!(body["checks"]["broker"]["ok"], json!(true), "{body}");
    assert_eq!(body["checks"]["database"]["ok"], json!(true), "{body}");
    assert!(
        body["checks"]["outbox"]["details"]["oldest_age_seconds"]
            .as_f64()
            .is_some_and(|age| age > 60.0),
        "{body}"
    );
    assert_eq!(conn.outbox_pending().expect("the outbox counts"), 1);
    accounts.shutdown().await.expect("accounts stops");
    transport.close().await;
}
