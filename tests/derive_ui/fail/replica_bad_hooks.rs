// `hooks` on a replica is a flag: a value is an error at the attribute.
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
#[cqrs(id = "author", table = author, hooks = true)]
struct AuthorCopy {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
