//! Starting the services in this process on ephemeral ports, and talking to them over HTTP.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::{Connection, MysqlConnection, PgConnection};
use cqrs_diesel::transport::InMemoryTransport;
use cqrs_diesel::{Config, RabbitMqTransport, Transport};
use cqrs_examples::payments::PaymentView;
use cqrs_examples::{RunningService, accounts, payments};
use serde_json::Value;
use tokio::net::TcpListener;

/// The broker the tests use: `AMQP_URL`, or this machine's RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let random: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(8)
        .collect();
    format!(
        "{prefix}_{}_{}_{random}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A configuration with an exchange and a replica queue of its own, on the test broker.
pub fn config(tag: &str) -> Config {
    Config::builder()
        .amqp_url(&amqp_url())
        .exchange(unique(&format!("{tag}_x")))
        .queue(unique(&format!("{tag}_q")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a valid configuration")
}

/// Where the two services keep their data.
pub enum Databases {
    /// Two SQLite files in a temporary directory.
    Sqlite(tempfile::TempDir),
    /// Two databases created for the test on the servers, dropped at the end.
    Servers {
        accounts: TestDatabase,
        payments: TestDatabase,
    },
}

impl Databases {
    pub fn sqlite() -> Self {
        Databases::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    fn urls(&self) -> (String, String) {
        match self {
            Databases::Sqlite(dir) => (
                dir.path().join("accounts.sqlite3").display().to_string(),
                dir.path().join("payments.sqlite3").display().to_string(),
            ),
            Databases::Servers { accounts, payments } => (accounts.url(), payments.url()),
        }
    }
}

/// The accounts and payments services, running in this test.
pub struct Services {
    pub accounts: RunningService,
    pub payments: RunningService,
    pub http: reqwest::Client,
    _databases: Databases,
}

impl Services {
    /// Starts the payments service, then the accounts service, on `databases` and `transport`.
    pub async fn start<T: Transport>(databases: Databases, config: &Config, transport: T) -> Self {
        let (accounts_url, payments_url) = databases.urls();
        let payments = payments::start(&payments_url, config, transport.clone(), listener().await)
            .await
            .expect("the payments service starts");
        let accounts = accounts::start(&accounts_url, config, transport, listener().await)
            .await
            .expect("the accounts service starts");
        Services {
            accounts,
            payments,
            http: reqwest::Client::new(),
            _databases: databases,
        }
    }

    /// Both services on SQLite and an in-memory broker (no RabbitMQ needed).
    pub async fn in_memory() -> Self {
        let config = Config::builder()
            .queue("payments_replica")
            .build()
            .expect("a valid configuration");
        let transport = InMemoryTransport::new(&config);
        Services::start(Databases::sqlite(), &config, transport).await
    }

    /// Stops both services (the master first, as a deployment would).
    pub async fn stop(self) {
        self.accounts
            .shutdown()
            .await
            .expect("the accounts service stops cleanly");
        self.payments
            .shutdown()
            .await
            .expect("the payments service stops cleanly");
    }

    /// `url` relative to the accounts service.
    pub fn accounts_url(&self, path: &str) -> String {
        format!("{}{path}", self.accounts.url())
    }

    /// `url` relative to the payments service.
    pub fn payments_url(&self, path: &str) -> String {
        format!("{}{path}", self.payments.url())
    }

    /// `POST /accounts`, expecting 201; returns the body.
    pub async fn create_account(&self, name: &str, email: &str) -> Value {
        let response = self
            .http
            .post(self.accounts_url("/accounts"))
            .json(&serde_json::json!({"name": name, "email": email}))
            .send()
            .await
            .expect("POST /accounts");
        assert_eq!(response.status(), 201, "POST /accounts");
        response.json().await.expect("a JSON account")
    }

    /// `PATCH /accounts/{id}`, expecting 200; returns the body.
    pub async fn patch_account(&self, id: i64, patch: Value) -> Value {
        let response = self
            .http
            .patch(self.accounts_url(&format!("/accounts/{id}")))
            .json(&patch)
            .send()
            .await
            .expect("PATCH /accounts/{id}");
        assert_eq!(response.status(), 200, "PATCH /accounts/{id}");
        response.json().await.expect("a JSON account")
    }

    /// `POST /payments`, expecting 201; returns the body.
    pub async fn create_payment(&self, account_id: i64, amount_cents: i64) -> Value {
        let response = self
            .http
            .post(self.payments_url("/payments"))
            .json(&serde_json::json!({"account_id": account_id, "amount_cents": amount_cents}))
            .send()
            .await
            .expect("POST /payments");
        assert_eq!(response.status(), 201, "POST /payments");
        response.json().await.expect("a JSON payment")
    }

    /// `GET /payments`, with `?account.name=<name>` when given.
    pub async fn payments(&self, name: Option<&str>) -> Vec<PaymentView> {
        let mut request = self.http.get(self.payments_url("/payments"));
        if let Some(name) = name {
            request = request.query(&[("account.name", name)]);
        }
        let response = request.send().await.expect("GET /payments");
        assert_eq!(response.status(), 200, "GET /payments");
        response.json().await.expect("JSON payments")
    }

    /// Polls `GET /payments?account.name=<name>` until it returns `count` payments; panics
    /// after `within`. Returns how long it took.
    pub async fn wait_for_payments(&self, name: &str, count: usize, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let found = self.payments(Some(name)).await;
            if found.len() == count {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "after {within:?}, {name} has {} payments, not {count}: {found:?}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an ephemeral port")
}

/// Runs `test` with a RabbitMQ transport on `config`, then closes it and deletes the test's
/// exchange and queues, even when the test panics.
pub async fn with_rabbitmq<F, Fut>(config: Config, test: F)
where
    F: FnOnce(Config, RabbitMqTransport) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let transport = RabbitMqTransport::connect(config.clone())
        .await
        .expect("the local RabbitMQ answers (scripts/setup.sh starts it)");
    let outcome = tokio::spawn(test(config.clone(), transport.clone())).await;
    transport.close().await;
    cqrs_examples::demo::delete_broker_objects(&config).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// A database created on the PostgreSQL or MariaDB server for one test, dropped at the end.
pub enum TestDatabase {
    Postgres { admin: String, name: String },
    Mysql { admin: String, name: String },
}

fn server_of(url: &str) -> String {
    url.rsplit_once('/')
        .map_or(url, |(server, _)| server)
        .to_owned()
}

impl TestDatabase {
    /// A new database on `PG_DATABASE_URL`'s server (default: this machine's PostgreSQL).
    pub fn postgres(tag: &str) -> Self {
        let url = std::env::var("PG_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = unique(tag).to_lowercase();
        PgConnection::establish(&url)
            .expect("PostgreSQL is up (scripts/setup.sh starts it)")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create a test database");
        TestDatabase::Postgres { admin: url, name }
    }

    /// A new database on `MYSQL_DATABASE_URL`'s server (default: this machine's MariaDB).
    pub fn mysql(tag: &str) -> Self {
        let url = std::env::var("MYSQL_DATABASE_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        let name = unique(tag).to_lowercase();
        MysqlConnection::establish(&url)
            .expect("MariaDB is up (scripts/setup.sh starts it)")
            .batch_execute(&format!("CREATE DATABASE `{name}`"))
            .expect("create a test database");
        TestDatabase::Mysql { admin: url, name }
    }

    /// The database's URL, as `DATABASE_URL` would give it.
    pub fn url(&self) -> String {
        match self {
            TestDatabase::Postgres { admin, name } | TestDatabase::Mysql { admin, name } => {
                format!("{}/{name}", server_of(admin))
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match self {
            TestDatabase::Postgres { admin, name } => {
                if let Ok(mut conn) = PgConnection::establish(admin) {
                    let _ = conn.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"));
                }
            }
            TestDatabase::Mysql { admin, name } => {
                if let Ok(mut conn) = MysqlConnection::establish(admin) {
                    let _ = conn.batch_execute(&format!("DROP DATABASE `{name}`"));
                }
            }
        }
    }
}
