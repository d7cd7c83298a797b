//! The demo: both services, the outbox relay and the replica worker in one process, on two
//! SQLite files in a temporary directory, talking over the local RabbitMQ (or, when no broker
//! answers, the in-memory transport). Over HTTP, it creates accounts and payments, renames an
//! account, and shows the payments query before and after, with the replication lag it
//! measured.
//!
//! `cargo run -p cqrs-examples --bin demo` runs [`run`] and prints to standard output.

use std::io::Write;
use std::time::{Duration, Instant};

use cqrs_diesel::transport::InMemoryTransport;
use cqrs_diesel::{Config, RabbitMqTransport, Transport};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;

use crate::accounts::{self, Account};
use crate::error::ServiceError;
use crate::payments::{self, Payment, PaymentView};

/// The broker the demo uses when `CQRS_AMQP_URL` is not set: this machine's RabbitMQ.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// What the demo runs against.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The broker's URL (or a comma-separated list of a cluster's).
    pub amqp_url: String,
    /// How long to wait for the broker before falling back to the in-memory transport.
    pub broker_timeout: Duration,
    /// Skip the broker and use the in-memory transport at once.
    pub in_memory: bool,
    /// How long a change may take to reach the payments service before the demo fails.
    pub replication_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            amqp_url: DEFAULT_AMQP_URL.to_owned(),
            broker_timeout: Duration::from_secs(2),
            in_memory: false,
            replication_timeout: Duration::from_secs(10),
        }
    }
}

impl DemoOptions {
    /// The defaults, with the broker from `CQRS_AMQP_URL` when it is set, and
    /// `DEMO_IN_MEMORY=1` to skip the broker.
    pub fn from_env() -> Self {
        DemoOptions {
            amqp_url: crate::env_or("CQRS_AMQP_URL", DEFAULT_AMQP_URL),
            in_memory: matches!(
                crate::env_or("DEMO_IN_MEMORY", "").as_str(),
                "1" | "true" | "yes"
            ),
            ..DemoOptions::default()
        }
    }
}

/// Which transport carried the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The RabbitMQ broker.
    RabbitMq,
    /// The in-process broker (no RabbitMQ answered, or it was skipped).
    InMemory,
}

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The transport used.
    pub transport: TransportKind,
    /// `GET /payments?account.name=Pavel` before the rename.
    pub before: Vec<PaymentView>,
    /// `GET /payments?account.name=Pavel` after the rename (empty).
    pub after_old_name: Vec<PaymentView>,
    /// `GET /payments?account.name=Pasha` after the rename.
    pub after_new_name: Vec<PaymentView>,
    /// From the last `POST /accounts` answer until both accounts were visible in the
    /// payments service (the payments were recorded meanwhile).
    pub create_lag: Duration,
    /// From the `PATCH` answer (the master committed) until the payments service showed the
    /// new name: the replication lag.
    pub rename_lag: Duration,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A service did not start or stop.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The broker configuration is invalid.
    #[error("broker configuration: {0}")]
    Config(#[from] cqrs_diesel::TransportError),
    /// An HTTP request could not be made or its answer not be read.
    #[error("{request}: {source}")]
    Http {
        /// The request.
        request: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// A service answered with an error status.
    #[error("{request} answered {status}: {body}")]
    Status {
        /// The request.
        request: String,
        /// The answer's status.
        status: reqwest::StatusCode,
        /// The answer's body.
        body: String,
    },
    /// A change did not reach the payments service in time.
    #[error("{what} did not reach the payments service within {after:?}")]
    NotReplicated {
        /// The change.
        what: &'static str,
        /// How long the demo waited.
        after: Duration,
    },
    /// A query answered something else than expected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// Writing the output or creating the temporary directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the demo, writing what it does to `out`; everything it started is stopped and its
/// temporary files and broker objects (exchange and queues, named uniquely for this run) are
/// removed, whether it succeeds or not.
pub async fn run(
    options: &DemoOptions,
    out: &mut (dyn Write + Send),
) -> Result<DemoReport, DemoError> {
    let dir = tempfile::Builder::new().prefix("cqrs-demo-").tempdir()?;
    let suffix = unique_suffix();
    let config = Config::builder()
        // A comma-separated list is a cluster, as in `CQRS_AMQP_URL`.
        .amqp_urls(options.amqp_url.split(',').map(str::trim))
        .exchange(format!("cqrs_demo_{suffix}"))
        .queue(format!("payments_replica_demo_{suffix}"))
        .connect_timeout(options.broker_timeout)
        .build()?;
    let shown_url = config
        .amqp_urls()
        .first()
        .map_or_else(|| options.amqp_url.clone(), ToString::to_string);

    writeln!(out, "cqrs-diesel demo: accounts -> payments")?;
    let rabbit = if options.in_memory {
        writeln!(
            out,
            "notice: DEMO_IN_MEMORY is set: using the in-memory transport instead of RabbitMQ"
        )?;
        None
    } else {
        match connect_broker(&config, options.broker_timeout).await {
            Ok(transport) => Some(transport),
            Err(reason) => {
                writeln!(
                    out,
                    "notice: no RabbitMQ answered at {shown_url} ({reason});\n        \
                     falling back to the in-memory transport: messages go through an \
                     in-process broker"
                )?;
                None
            }
        }
    };

    let result = match rabbit {
        Some(transport) => {
            writeln!(
                out,
                "broker:   RabbitMQ at {shown_url}, exchange {}, queue {}",
                config.exchange(),
                config.queue().unwrap_or_default()
            )?;
            let result = run_with(transport.clone(), &config, dir.path(), options, out).await;
            transport.close().await;
            delete_broker_objects(&config).await;
            result.map(|report| DemoReport {
                transport: TransportKind::RabbitMq,
                ..report
            })
        }
        None => {
            writeln!(out, "broker:   in-memory (this process only)")?;
            let transport = InMemoryTransport::new(&config);
            run_with(transport, &config, dir.path(), options, out).await
        }
    };
    let report = result?;
    dir.close()?;
    writeln!(out, "done: all services stopped, temporary files removed")?;
    Ok(report)
}

/// Connects to RabbitMQ, giving up after `timeout`.
async fn connect_broker(config: &Config, timeout: Duration) -> Result<RabbitMqTransport, String> {
    match tokio::time::timeout(timeout, RabbitMqTransport::connect(config.clone())).await {
        Ok(Ok(transport)) => Ok(transport),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Deletes `config`'s queue, dead-letter queue and exchange from the broker (best effort: a
/// failure is logged). For runs that named them uniquely, like the demo and the tests.
pub async fn delete_broker_objects(config: &Config) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

    let Some(url) = config.amqp_urls().first() else {
        return;
    };
    let connection = match lapin::Connection::connect_uri(
        url.to_lapin(),
        lapin::ConnectionProperties::default(),
    )
    .await
    {
        Ok(connection) => connection,
        Err(error) => {
            tracing::warn!(%error, "cannot connect to delete the demo's queues");
            return;
        }
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in [config.queue(), config.dead_letter_queue()]
            .into_iter()
            .flatten()
        {
            if let Err(error) = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await
            {
                tracing::warn!(%error, queue, "cannot delete a demo queue");
            }
        }
        if let Err(error) = channel
            .exchange_delete(config.exchange().into(), ExchangeDeleteOptions::default())
            .await
        {
            tracing::warn!(%error, "cannot delete the demo's exchange");
        }
        let _ = channel.close(200, "demo done".into()).await;
    }
    let _ = connection.close(200, "demo done".into()).await;
}

/// Starts both services on `transport`, runs the scenario, and stops them.
async fn run_with<T: Transport>(
    transport: T,
    config: &Config,
    dir: &std::path::Path,
    options: &DemoOptions,
    out: &mut (dyn Write + Send),
) -> Result<DemoReport, DemoError> {
    let accounts_db = dir.join("accounts.sqlite3");
    let payments_db = dir.join("payments.sqlite3");

    // The replica first: its queue must be bound before the first account is published.
    let payments = payments::start(
        &payments_db.to_string_lossy(),
        config,
        transport.clone(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let accounts = match accounts::start(
        &accounts_db.to_string_lossy(),
        config,
        transport,
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await
    {
        Ok(accounts) => accounts,
        Err(error) => {
            let _ = payments.shutdown().await;
            return Err(error.into());
        }
    };
    writeln!(
        out,
        "accounts: {} (SQLite {})",
        accounts.url(),
        accounts_db.display()
    )?;
    writeln!(
        out,
        "payments: {} (SQLite {})",
        payments.url(),
        payments_db.display()
    )?;

    let client = Client::new(accounts.url(), payments.url());
    let result = scenario(&client, options, config.batch_wait(), out).await;

    // The master first: its relay publishes what it still holds before the replica stops.
    let stopped_accounts = accounts.shutdown().await;
    let stopped_payments = payments.shutdown().await;
    let report = result?;
    stopped_accounts?;
    stopped_payments?;
    Ok(report)
}

async fn scenario(
    client: &Client,
    options: &DemoOptions,
    batch_wait: Duration,
    out: &mut (dyn Write + Send),
) -> Result<DemoReport, DemoError> {
    writeln!(out)?;
    let pavel: Account = client
        .post_account(json!({"name": "Pavel", "email": "pavel@example.com"}), out)
        .await?;
    let maria: Account = client
        .post_account(json!({"name": "Maria", "email": "maria@example.com"}), out)
        .await?;
    let accounts_created = Instant::now();
    for (account, amount_cents) in [(&pavel, 1250), (&maria, 4200), (&pavel, 990)] {
        client
            .post_payment(
                json!({"account_id": account.id, "amount_cents": amount_cents}),
                out,
            )
            .await?;
    }

    // The accounts travel to the payments service's replica meanwhile.
    let (_, create_lag) = client
        .wait_for(
            "the new accounts",
            accounts_created,
            options.replication_timeout,
            |all: &[PaymentView]| {
                !all.is_empty() && all.iter().all(|payment| payment.account.name.is_some())
            },
            "",
        )
        .await?;
    writeln!(
        out,
        "\nboth accounts reached the payments service {} after the last POST /accounts",
        millis(create_lag)
    )?;

    let before = client.payments("Pavel").await?;
    writeln!(
        out,
        "\nGET /payments?account.name=Pavel (before the rename)"
    )?;
    print_payments(&before, out)?;
    expect_payments(&before, "Pavel", 2)?;

    let renamed = client
        .patch_account(pavel.id, json!({"name": "Pasha"}), out)
        .await?;
    let committed = Instant::now();
    if renamed.name != "Pasha" {
        return Err(DemoError::Unexpected(format!(
            "the PATCH answered {}",
            to_json(&renamed)
        )));
    }
    let (after_new_name, rename_lag) = client
        .wait_for(
            "the rename",
            committed,
            options.replication_timeout,
            |found: &[PaymentView]| found.len() == 2,
            "Pasha",
        )
        .await?;
    writeln!(
        out,
        "replication lag: the payments service showed the new name {} after the PATCH answer\n  \
         (the relay publishes with a broker confirm; the replica worker waits up to {} \
         for more messages to batch (CQRS_BATCH_WAIT), then applies them)",
        millis(rename_lag),
        millis(batch_wait)
    )?;

    let after_old_name = client.payments("Pavel").await?;
    writeln!(out, "\nGET /payments?account.name=Pavel (after the rename)")?;
    print_payments(&after_old_name, out)?;
    expect_payments(&after_old_name, "Pavel", 0)?;
    writeln!(out, "\nGET /payments?account.name=Pasha (after the rename)")?;
    print_payments(&after_new_name, out)?;
    expect_payments(&after_new_name, "Pasha", 2)?;
    writeln!(out)?;

    Ok(DemoReport {
        // Set by the caller, which knows the transport.
        transport: TransportKind::InMemory,
        before,
        after_old_name,
        after_new_name,
        create_lag,
        rename_lag,
    })
}

/// The HTTP client of the demo: the two services' base URLs.
struct Client {
    http: reqwest::Client,
    accounts: String,
    payments: String,
}

impl Client {
    fn new(accounts: String, payments: String) -> Self {
        Client {
            http: reqwest::Client::new(),
            accounts,
            payments,
        }
    }

    /// Sends `builder` and reads a JSON answer, failing on an error status.
    async fn send<T: DeserializeOwned>(
        &self,
        request: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, DemoError> {
        let http = |source| DemoError::Http {
            request: request.to_owned(),
            source,
        };
        let response = builder.send().await.map_err(http)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(DemoError::Status {
                request: request.to_owned(),
                status,
                body,
            });
        }
        response.json().await.map_err(http)
    }

    async fn post_account(
        &self,
        body: serde_json::Value,
        out: &mut (dyn Write + Send),
    ) -> Result<Account, DemoError> {
        let account: Account = self
            .send(
                "POST /accounts",
                self.http
                    .post(format!("{}/accounts", self.accounts))
                    .json(&body),
            )
            .await?;
        writeln!(out, "POST /accounts {body} -> {}", to_json(&account))?;
        Ok(account)
    }

    async fn patch_account(
        &self,
        id: i64,
        body: serde_json::Value,
        out: &mut (dyn Write + Send),
    ) -> Result<Account, DemoError> {
        let request = format!("PATCH /accounts/{id}");
        let account: Account = self
            .send(
                &request,
                self.http
                    .patch(format!("{}/accounts/{id}", self.accounts))
                    .json(&body),
            )
            .await?;
        writeln!(out, "\n{request} {body} -> {}", to_json(&account))?;
        Ok(account)
    }

    async fn post_payment(
        &self,
        body: serde_json::Value,
        out: &mut (dyn Write + Send),
    ) -> Result<Payment, DemoError> {
        let payment: Payment = self
            .send(
                "POST /payments",
                self.http
                    .post(format!("{}/payments", self.payments))
                    .json(&body),
            )
            .await?;
        writeln!(out, "POST /payments {body} -> {}", to_json(&payment))?;
        Ok(payment)
    }

    /// `GET /payments?account.name=<name>`, or every payment when `name` is empty.
    async fn payments(&self, name: &str) -> Result<Vec<PaymentView>, DemoError> {
        let mut builder = self.http.get(format!("{}/payments", self.payments));
        if !name.is_empty() {
            builder = builder.query(&[("account.name", name)]);
        }
        self.send("GET /payments", builder).await
    }

    /// Polls `GET /payments` (filtered by `name` unless it is empty) until `done` holds, and
    /// returns the last answer and the time since `since`.
    async fn wait_for(
        &self,
        what: &'static str,
        since: Instant,
        timeout: Duration,
        done: impl Fn(&[PaymentView]) -> bool,
        name: &str,
    ) -> Result<(Vec<PaymentView>, Duration), DemoError> {
        loop {
            let found = self.payments(name).await?;
            let elapsed = since.elapsed();
            if done(&found) {
                return Ok((found, elapsed));
            }
            if elapsed > timeout {
                return Err(DemoError::NotReplicated {
                    what,
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn expect_payments(found: &[PaymentView], name: &str, count: usize) -> Result<(), DemoError> {
    let matching = found
        .iter()
        .filter(|payment| payment.account.name.as_deref() == Some(name))
        .count();
    if found.len() != count || matching != count {
        return Err(DemoError::Unexpected(format!(
            "expected {count} payments of {name}, got {}",
            to_json(&found)
        )));
    }
    Ok(())
}

fn print_payments(payments: &[PaymentView], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if payments.is_empty() {
        return writeln!(out, "  (no payments)");
    }
    writeln!(
        out,
        "  {:>7}  {:>7}  {:<8}  {:>9}",
        "payment", "account", "name", "amount"
    )?;
    for payment in payments {
        writeln!(
            out,
            "  {:>7}  {:>7}  {:<8}  {:>6}.{:02}",
            payment.id,
            payment.account.id,
            payment.account.name.as_deref().unwrap_or("?"),
            payment.amount_cents / 100,
            payment.amount_cents % 100
        )?;
    }
    Ok(())
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| format!("<{error}>"))
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// A suffix no other run uses: the process id and a random part.
fn unique_suffix() -> String {
    let random: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(8)
        .collect();
    format!("{}_{random}", std::process::id())
}
