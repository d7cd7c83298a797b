// Every mistake of a struct is reported at once, each at its own span, and the model's uses
// (its constant, `save_and_publish`) add no errors of their own.
use cqrs_diesel::MasterModel;

diesel::table! {
    author (id) {
        id -> Integer,
        name -> Text,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(MasterModel)]
#[cqrs(id = "author", table = author, colour = "red", id = "writer", tracked(nickname))]
struct Author {
    id: i32,
    #[cqrs(rename = "full_name", rename = "name")]
    name: String,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn publish(author: &Author, conn: &mut diesel::PgConnection) {
    let _ = Author::CQRS_ID;
    let _ = author.save_and_publish(conn);
}

fn main() {}
