//! Replica models, with a table and with custom handlers only: compile with their policies.

use cqrs_diesel::{ReplicaModel, ReplicaStore};

diesel::table! {
    author (id) {
        id -> Integer,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

/// A replica for one backend, with a mapping and its own retry policy.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", table = author, only_direct_syncs, max_retries = 5, retry_delay = "250ms", backends(postgres))]
struct AuthorRef {
    id: i32,
    #[cqrs(from = "full_name")]
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

/// A replica without a table: custom handlers only.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", custom, meta, max_retries = "none")]
struct AuthorEvents {
    id: i32,
    #[cqrs(default)]
    name: String,
}

fn needs_store<M: ReplicaStore<diesel::PgConnection>>() {}

#[test]
fn replica_models_with_a_table_and_with_custom_handlers_compile() {
    needs_store::<AuthorRef>();
    let policy = AuthorRef::cqrs_policy();
    assert_eq!(policy.max_retries, Some(Some(5)));
    assert_eq!(AuthorEvents::cqrs_policy().max_retries, Some(None));
    const { assert!(AuthorEvents::RECEIVES_META) };
    let data = serde_json::json!({"id": 7, "cqrs_revision": 0});
    let events = AuthorEvents::cqrs_decode(data.as_object().unwrap()).unwrap();
    assert_eq!(
        (events.id, events.name.as_str()),
        (7, ""),
        "a missing default field"
    );
}
