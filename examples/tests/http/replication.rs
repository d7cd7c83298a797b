//! Replication from the accounts service to the payments service through the real RabbitMQ,
//! on SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use serde_json::json;

use crate::support::{Databases, Services, TestDatabase, config, with_rabbitmq};

/// How long a change may take to reach the replica in these tests (it takes milliseconds; the
/// bound leaves room for a loaded CI machine).
const WITHIN: Duration = Duration::from_secs(10);

/// Creates an account and a payment, renames the account, and checks the payments service
/// sees each change through its replica.
async fn create_and_rename_replicate(services: &Services) {
    let pavel = services.create_account("Pavel", "pavel@example.com").await;
    let id = pavel["id"].as_i64().unwrap();
    services.create_payment(id, 1250).await;

    // POST: the new account reaches the replica.
    services.wait_for_payments("Pavel", 1, WITHIN).await;

    // PATCH: the new name replaces the old one.
    services.patch_account(id, json!({"name": "Pasha"})).await;
    let lag = services.wait_for_payments("Pasha", 1, WITHIN).await;
    assert!(services.payments(Some("Pavel")).await.is_empty());
    println!("rename replicated in {lag:?}");

    // Several updates in a row: the replica ends at the last one.
    for name in ["P1", "P2", "P3"] {
        services.patch_account(id, json!({"name": name})).await;
    }
    services.wait_for_payments("P3", 1, WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_and_patch_replicate_through_rabbitmq() {
    with_rabbitmq(config("examples_sqlite"), |config, transport| async move {
        let services = Services::start(Databases::sqlite(), &config, transport).await;
        create_and_rename_replicate(&services).await;
        services.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_on_postgres_replicate_to_payments_on_mariadb() {
    with_rabbitmq(config("examples_pg_my"), |config, transport| async move {
        let databases = Databases::Servers {
            accounts: TestDatabase::postgres("examples_accounts"),
            payments: TestDatabase::mysql("examples_payments"),
        };
        let services = Services::start(databases, &config, transport).await;
        create_and_rename_replicate(&services).await;
        services.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_on_mariadb_replicate_to_payments_on_postgres() {
    with_rabbitmq(config("examples_my_pg"), |config, transport| async move {
        let databases = Databases::Servers {
            accounts: TestDatabase::mysql("examples_accounts"),
            payments: TestDatabase::postgres("examples_payments"),
        };
        let services = Services::start(databases, &config, transport).await;
        create_and_rename_replicate(&services).await;
        services.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_replica_is_down_arrive_when_it_is_back() {
    with_rabbitmq(config("examples_restart"), |config, transport| async move {
        let dir = tempfile::tempdir().unwrap();
        let accounts_db = dir.path().join("accounts.sqlite3").display().to_string();
        let payments_db = dir.path().join("payments.sqlite3").display().to_string();
        let listen = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };

        // The payments service declares its queue, then stops: messages wait in the queue.
        let payments = cqrs_examples::payments::start(
            &payments_db,
            &config,
            transport.clone(),
            listen().await,
        )
        .await
        .unwrap();
        payments.shutdown().await.unwrap();
        let accounts = cqrs_examples::accounts::start(
            &accounts_db,
            &config,
            transport.clone(),
            listen().await,
        )
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/accounts", accounts.url()))
            .json(&json!({"name": "Pavel", "email": "pavel@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let response = http
            .patch(format!("{}/accounts/1", accounts.url()))
            .json(&json!({"name": "Pasha"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        // Back up on the same database: the queued messages are applied.
        let payments =
            cqrs_examples::payments::start(&payments_db, &config, transport, listen().await)
                .await
                .unwrap();
        let response = http
            .post(format!("{}/payments", payments.url()))
            .json(&json!({"account_id": 1, "amount_cents": 500}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let start = std::time::Instant::now();
        loop {
            let found: Vec<cqrs_examples::payments::PaymentView> = http
                .get(format!("{}/payments?account.name=Pasha", payments.url()))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if found.len() == 1 {
                break;
            }
            assert!(
                start.elapsed() < WITHIN,
                "the queued changes did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        accounts.shutdown().await.unwrap();
        payments.shutdown().await.unwrap();
    })
    .await;
}
