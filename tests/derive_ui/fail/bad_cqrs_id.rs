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
#[cqrs(id = "author.*", table = author)]
struct Author {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

#[derive(MasterModel)]
#[cqrs(id = "", table = author)]
struct Empty {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
