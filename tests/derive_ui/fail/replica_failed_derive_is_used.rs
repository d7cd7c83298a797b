// A replica model whose attributes are wrong, registered and used as usual: the error is the
// one at the attribute, with none at the uses of the model (the derive emits fallback impls).
use cqrs_diesel::diesel::{Connection, PgConnection};
use cqrs_diesel::{ReplicaModel, ReplicaStore, Replicas};

diesel::table! {
    author (code) {
        code -> Text,
        name -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(ReplicaModel)]
#[cqrs(id = "author", table = author, pk = code, colour = "red")]
struct AuthorCopy {
    code: String,
    name: String,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn revisions(conn: &mut PgConnection) -> Vec<(String, i64)> {
    AuthorCopy::cqrs_stored_revisions(&["a".to_owned()], conn).unwrap_or_default()
}

fn main() {
    let replicas = Replicas::<PgConnection>::new(|| PgConnection::establish("postgres://"))
        .register::<AuthorCopy>();
    let _ = (replicas, revisions as fn(&mut PgConnection) -> Vec<(String, i64)>);
}
