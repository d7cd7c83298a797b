use cqrs_diesel::ReplicaModel;

diesel::table! {
    author (id) {
        id -> Integer,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Datetime,
    }
}

// A replica writes to MariaDB through the MySQL backend: `mariadb` is for master models.
#[derive(ReplicaModel)]
#[cqrs(id = "author", table = author, backends(mysql, mariadb))]
struct Author {
    id: i32,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::NaiveDateTime,
}

fn main() {}
