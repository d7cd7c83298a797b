// A key given twice on a replica is an error at its second use, not a silent override.
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
#[cqrs(id = "author", table = author, id = "writer", pk = id, pk = name)]
struct AuthorCopy {
    id: i32,
    #[cqrs(from = "full_name", from = "name")]
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
