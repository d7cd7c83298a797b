use cqrs_diesel::MasterModel;

diesel::table! {
    author (id) {
        id -> Integer,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(MasterModel)]
#[cqrs(id = "author", table = author, colour = "red")]
struct Author {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
