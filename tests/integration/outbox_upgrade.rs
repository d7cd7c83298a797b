//! The outbox's second migration (`trace_context`, `created_at`) on an outbox created by the
//! first one only, as a service deployed before it has: entries are kept with their ids, ids
//! never go back (replicas order a row's messages by them), and `created_at` is filled in.

use cqrs_diesel::CqrsConnection;
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::sql_types::BigInt;
use cqrs_diesel::diesel::{QueryableByName, RunQueryDsl};
use cqrs_diesel::outbox::{MYSQL_UP_SQL, NewOutboxEntry, POSTGRES_UP_SQL, SQLITE_UP_SQL};

use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

/// How the first migration left a database: its table, and its version recorded where
/// Diesel's migration harness looks (`__diesel_schema_migrations`).
fn migrate_old<D: TestDb>(db: &D, old_up_sql: &str) {
    db.execute(old_up_sql);
    db.execute(
        "CREATE TABLE __diesel_schema_migrations (
            version VARCHAR(50) PRIMARY KEY NOT NULL,
            run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20261128000000');",
    );
}

/// Writes entries 1..=`written` on the old table, then deletes those above `kept`.
fn fill_old<D: TestDb>(db: &D, written: usize, kept: usize) {
    let mut conn = db.connect();
    for n in 1..=written {
        conn.batch_execute(&format!(
            "INSERT INTO cqrs_outbox (cqrs_id, routing_key, body) VALUES ('author', 'author', \
             '{{\"n\":{n}}}')"
        ))
        .unwrap();
    }
    conn.batch_execute(&format!("DELETE FROM cqrs_outbox WHERE id > {kept}"))
        .unwrap();
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Counts outbox rows with a filter in SQL.
trait CountRows {
    fn count_where(&mut self, filter: &str) -> i64;
}

macro_rules! count_rows {
    ($($conn:ty),*) => {$(
        impl CountRows for $conn {
            fn count_where(&mut self, filter: &str) -> i64 {
                let query = format!("SELECT COUNT(*) AS n FROM cqrs_outbox WHERE {filter}");
                let counts: Vec<Count> = cqrs_diesel::diesel::sql_query(query)
                    .load(self)
                    .unwrap_or_else(|error| panic!("{filter}: {error}"));
                counts.first().map_or(0, |count| count.n)
            }
        }
    )*};
}

count_rows!(
    cqrs_diesel::diesel::PgConnection,
    cqrs_diesel::diesel::MysqlConnection,
    cqrs_diesel::diesel::SqliteConnection
);

fn count<C: CountRows>(conn: &mut C, filter: &str) -> i64 {
    conn.count_where(filter)
}

/// Queues one entry the way the library does (not naming `created_at`) and returns its id.
fn queue_new<C: CqrsConnection>(conn: &mut C) -> i64 {
    conn.outbox_insert_many(&[NewOutboxEntry {
        cqrs_id: "author",
        routing_key: "author",
        body: r#"{"n":"new"}"#,
    }])
    .unwrap();
    let entries = conn.outbox_peek(100).unwrap();
    entries.iter().map(|entry| entry.id).max().unwrap()
}

fn upgrade_keeps_entries_and_ids_go_on_above_every_used_one<D>(db: D, old: &str)
where
    D: TestDb,
    D::Conn: CountRows,
{
    migrate_old(&db, old);
    fill_old(&db, 5, 3);
    let mut conn = db.connect();

    conn.run_outbox_migrations().unwrap();

    let entries = conn.outbox_peek(100).unwrap();
    let kept: Vec<(i64, &str)> = entries.iter().map(|e| (e.id, e.body.as_str())).collect();
    assert_eq!(
        kept,
        [(1, r#"{"n":1}"#), (2, r#"{"n":2}"#), (3, r#"{"n":3}"#)]
    );
    assert!(entries.iter().all(|entry| entry.trace_context.is_none()));
    assert_eq!(count(&mut conn, "created_at IS NOT NULL"), 3);
    let next = queue_new(&mut conn);
    assert!(
        next > 5,
        "the next id {next} comes after the deleted 4 and 5"
    );
    assert_eq!(count(&mut conn, "created_at IS NOT NULL"), 4);
}

fn upgrade_of_an_emptied_outbox_keeps_ids_going_up<D>(db: D, old: &str)
where
    D: TestDb,
    D::Conn: CountRows,
{
    migrate_old(&db, old);
    fill_old(&db, 4, 0);
    let mut conn = db.connect();
    assert_eq!(conn.outbox_pending().unwrap(), 0);

    conn.run_outbox_migrations().unwrap();

    let next = queue_new(&mut conn);
    assert!(next > 4, "the next id {next} comes after the deleted 1..=4");
    assert_eq!(count(&mut conn, "created_at IS NOT NULL"), 1);
}

#[test]
fn postgres_upgrade_keeps_entries_and_ids_go_on_above_every_used_one() {
    let db = PgDb::new("upgrade_kept");
    upgrade_keeps_entries_and_ids_go_on_above_every_used_one(db, POSTGRES_UP_SQL);
}

#[test]
fn mariadb_upgrade_keeps_entries_and_ids_go_on_above_every_used_one() {
    let db = MysqlDb::new("upgrade_kept");
    upgrade_keeps_entries_and_ids_go_on_above_every_used_one(db, MYSQL_UP_SQL);
}

#[test]
fn sqlite_upgrade_keeps_entries_and_ids_go_on_above_every_used_one() {
    let db = SqliteDb::new("upgrade_kept");
    upgrade_keeps_entries_and_ids_go_on_above_every_used_one(db, SQLITE_UP_SQL);
}

#[test]
fn postgres_upgrade_of_an_emptied_outbox_keeps_ids_going_up() {
    let db = PgDb::new("upgrade_empty");
    upgrade_of_an_emptied_outbox_keeps_ids_going_up(db, POSTGRES_UP_SQL);
}

#[test]
fn mariadb_upgrade_of_an_emptied_outbox_keeps_ids_going_up() {
    let db = MysqlDb::new("upgrade_empty");
    upgrade_of_an_emptied_outbox_keeps_ids_going_up(db, MYSQL_UP_SQL);
}

#[test]
fn sqlite_upgrade_of_an_emptied_outbox_keeps_ids_going_up() {
    let db = SqliteDb::new("upgrade_empty");
    upgrade_of_an_emptied_outbox_keeps_ids_going_up(db, SQLITE_UP_SQL);
}

/// The new columns are the database's business: a version that names only the first
/// migration's columns (as every version before this one does) keeps writing.
#[test]
fn sqlite_writes_naming_only_the_old_columns_work_after_the_upgrade() {
    let db = SqliteDb::new("upgrade_old_writer");
    migrate_old(&db, SQLITE_UP_SQL);
    let mut conn = db.connect();
    conn.run_outbox_migrations().unwrap();

    fill_old(&db, 2, 2);

    let entries = conn.outbox_peek(100).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        count(
            &mut conn,
            "created_at IS NOT NULL AND trace_context IS NULL"
        ),
        2
    );
}
