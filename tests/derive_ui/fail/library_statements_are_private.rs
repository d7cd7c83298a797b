// The statements only the library runs (the outbox, the relay, the replica state table) are not
// methods an application can call on its connection.
use cqrs_diesel::diesel::PgConnection;

fn push(conn: &mut PgConnection) {
    let _ = conn.outbox_delete(&[1]);
}

fn main() {}
