//! The payments API: the local join with the replica, and what it refuses.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Services;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_joined_with_the_replicated_account_names() {
    let services = Services::in_memory().await;
    let pavel = services.create_account("Pavel", "pavel@example.com").await;
    let maria = services.create_account("Maria", "maria@example.com").await;
    let (pavel, maria) = (pavel["id"].as_i64().unwrap(), maria["id"].as_i64().unwrap());

    let first = services.create_payment(pavel, 1250).await;
    assert_eq!(first["id"], 1);
    assert_eq!(first["account_id"], pavel);
    assert_eq!(first["amount_cents"], 1250);
    services.create_payment(maria, 4200).await;
    services.create_payment(pavel, 990).await;
    // A payment for an account the replica does not know (yet): accepted, name unknown.
    services.create_payment(99, 100).await;

    services
        .wait_for_payments("Pavel", 2, Duration::from_secs(5))
        .await;
    services
        .wait_for_payments("Maria", 1, Duration::from_secs(5))
        .await;

    let found = services.payments(Some("Pavel")).await;
    assert_eq!(
        found
            .iter()
            .map(|p| (p.id, p.amount_cents))
            .collect::<Vec<_>>(),
        [(1, 1250), (3, 990)]
    );
    assert!(found.iter().all(|p| p.account.id == pavel));
    assert!(
        found
            .iter()
            .all(|p| p.account.name.as_deref() == Some("Pavel"))
    );

    // Without a filter: every payment, with its account's name when the replica has it.
    let all = services.payments(None).await;
    let names: Vec<(i64, Option<&str>)> = all
        .iter()
        .map(|p| (p.id, p.account.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (1, Some("Pavel")),
            (2, Some("Maria")),
            (3, Some("Pavel")),
            (4, None)
        ]
    );

    // No account has this name.
    assert!(services.payments(Some("Nobody")).await.is_empty());

    services.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payments_are_refused() {
    let services = Services::in_memory().await;
    let http = &services.http;

    for (body, status) in [
        (json!({"account_id": 1, "amount_cents": 0}), 422),
        (json!({"account_id": 1, "amount_cents": -5}), 422),
        (json!({"account_id": 0, "amount_cents": 5}), 422),
        (json!({"account_id": 1}), 422),
        (json!({"account_id": "one", "amount_cents": 5}), 422),
    ] {
        let response = http
            .post(services.payments_url("/payments"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string(), "{error}");
    }
    let response = http
        .post(services.payments_url("/payments"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    assert!(
        services.payments(None).await.is_empty(),
        "nothing was recorded"
    );
    services.stop().await;
}
