use cqrs_diesel::ReplicaModel;

diesel::table! {
    author (id) {
        id -> Integer,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(ReplicaModel)]
#[cqrs(id = "author", table = author, only_direct_sync)]
struct Misspelt {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

#[derive(ReplicaModel)]
#[cqrs(id = "author", table = author)]
struct NoRevision {
    id: i32,
    name: String,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

#[derive(ReplicaModel)]
#[cqrs(id = "author", table = author, retry_delay = "soon")]
struct BadDelay {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

#[derive(ReplicaModel)]
#[cqrs(id = "author", table = author)]
struct BadField {
    id: i32,
    #[cqrs(rename = "full_name")]
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
