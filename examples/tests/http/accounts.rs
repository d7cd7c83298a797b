//! The accounts API: create, read, partial update, and what it refuses.

use serde_json::{Value, json};

use crate::support::Services;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_created_read_and_patched() {
    let services = Services::in_memory().await;
    let http = &services.http;

    let response = http
        .post(services.accounts_url("/accounts"))
        .json(&json!({"name": "Pavel", "email": "pavel@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/accounts/1");
    let pavel: Value = response.json().await.unwrap();
    assert_eq!(pavel["id"], 1);
    assert_eq!(pavel["name"], "Pavel");
    assert_eq!(pavel["email"], "pavel@example.com");
    assert_eq!(pavel["revision"], 0);
    assert!(pavel["updated_at"].as_str().unwrap().ends_with('Z'));

    let maria = services.create_account("Maria", "maria@example.com").await;
    assert_eq!(maria["id"], 2, "ids are allocated in order");

    let fetched: Value = http
        .get(services.accounts_url("/accounts/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, pavel);

    // A partial update changes only the fields given and bumps the revision.
    let renamed = services.patch_account(1, json!({"name": "Pasha"})).await;
    assert_eq!(renamed["name"], "Pasha");
    assert_eq!(renamed["email"], "pavel@example.com");
    assert_eq!(renamed["revision"], 1);
    let moved = services
        .patch_account(1, json!({"email": "pasha@example.com"}))
        .await;
    assert_eq!(moved["name"], "Pasha");
    assert_eq!(moved["email"], "pasha@example.com");
    assert_eq!(moved["revision"], 2);

    // A patch that changes nothing writes nothing.
    let unchanged = services.patch_account(1, json!({"name": "Pasha"})).await;
    assert_eq!(unchanged, moved);
    let empty = services.patch_account(1, json!({})).await;
    assert_eq!(empty, moved);

    let fetched: Value = http
        .get(services.accounts_url("/accounts/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, moved);
    let maria_now: Value = http
        .get(services.accounts_url("/accounts/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(maria_now, maria, "the other account is untouched");

    services.stop().await;
}

/// Sends `request` and returns the status and the JSON error body.
async fn refused(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "an error message: {body}"
    );
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_their_status() {
    let services = Services::in_memory().await;
    let http = &services.http;
    services.create_account("Pavel", "pavel@example.com").await;

    // Unknown ids.
    let (status, body) = refused(
        http.patch(services.accounts_url("/accounts/42"))
            .json(&json!({"name": "Nobody"})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "account 42 not found");
    let (status, _) = refused(http.get(services.accounts_url("/accounts/42"))).await;
    assert_eq!(status, 404);

    // Malformed JSON, wrong types, missing and unknown fields, no JSON content type.
    let (status, _) = refused(
        http.post(services.accounts_url("/accounts"))
            .header("content-type", "application/json")
            .body("{\"name\": \"Pavel\""),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = refused(
        http.patch(services.accounts_url("/accounts/1"))
            .header("content-type", "application/json")
            .body("not json"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = refused(
        http.post(services.accounts_url("/accounts"))
            .json(&json!({"name": "Pavel"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = refused(
        http.post(services.accounts_url("/accounts"))
            .json(&json!({"name": 7, "email": "x@example.com"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = refused(
        http.patch(services.accounts_url("/accounts/1"))
            .json(&json!({"nickname": "Pasha"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = refused(
        http.post(services.accounts_url("/accounts"))
            .body("{\"name\": \"Pavel\", \"email\": \"pavel@example.com\"}"),
    )
    .await;
    assert_eq!(status, 415);

    // Values the service does not accept.
    let (status, _) = refused(
        http.post(services.accounts_url("/accounts"))
            .json(&json!({"name": "  ", "email": "x@example.com"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = refused(
        http.patch(services.accounts_url("/accounts/1"))
            .json(&json!({"email": "not an address"})),
    )
    .await;
    assert_eq!(status, 422);

    // A path parameter that is not an id.
    let (status, _) = refused(http.get(services.accounts_url("/accounts/pavel"))).await;
    assert_eq!(status, 400);

    // Nothing above changed the account.
    let pavel: Value = http
        .get(services.accounts_url("/accounts/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pavel["name"], "Pavel");
    assert_eq!(pavel["revision"], 0);

    services.stop().await;
}
