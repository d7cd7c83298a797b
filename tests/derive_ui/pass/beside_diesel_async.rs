//! Models derived in a module that imports diesel-async's `RunQueryDsl` (as an async service
//! does) beside Diesel's prelude: the generated code names the methods it calls, so neither
//! import makes them ambiguous.

use cqrs_diesel::{MasterModel, MasterStore, ReplicaModel, ReplicaStore};
#[allow(unused_imports)]
use diesel::prelude::*;
#[allow(unused_imports)]
use diesel_async::RunQueryDsl;

diesel::table! {
    note (id) {
        id -> BigInt,
        text -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "note", table = note, backends(postgres))]
struct Note {
    id: i64,
    text: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "note", table = note, backends(postgres))]
struct NoteRef {
    id: i64,
    text: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn master_on<C: cqrs_diesel::Exec, M: MasterStore<C>>() {}
fn replica_on<C: cqrs_diesel::CqrsConnection, M: ReplicaStore<C>>() {}

#[test]
fn models_derive_beside_diesel_async_s_run_query_dsl() {
    master_on::<diesel::PgConnection, Note>();
    master_on::<diesel_async::AsyncPgConnection, Note>();
    replica_on::<diesel::PgConnection, NoteRef>();
}
