//! A master model for one backend, with every attribute: compiles and implements the store.

use cqrs_diesel::{MasterModel, MasterStore};

diesel::table! {
    author (id) {
        id -> Integer,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

/// A model for one backend, with every attribute.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "author", table = author, tracked(name), produce = true, backends(postgres))]
struct Author {
    id: i32,
    #[cqrs(rename = "full_name")]
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn needs_store<M: MasterStore<diesel::PgConnection>>() {}

#[test]
fn a_postgres_only_master_model_with_every_attribute_compiles() {
    needs_store::<Author>();
    assert_eq!(Author::CQRS_ID, "author");
    assert_eq!(Author::TRACKED_FIELDS, &["full_name"]);
}
