//! MariaDB through Diesel's MariaDB backend (`MariadbConnection`): writes return their rows
//! with `INSERT ... RETURNING` instead of reading them back, so a save sends the statements of
//! the floor (the row, the outbox entry) and nothing else; the collision on another unique key
//! that `ON DUPLICATE KEY UPDATE` turns into an update of another row is still refused.

use chrono::{DateTime, NaiveDateTime};
use cqrs_diesel::diesel::{Connection, MariadbConnection, MysqlConnection};
use cqrs_diesel::{MasterModel, MasterStore};

use super::{Setup, Statements};
use crate::db::{MysqlDb, TestDb};

mod schema {
    diesel::table! {
        member (id) {
            id -> BigInt,
            email -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Datetime,
        }
    }
}

const DDL: &str = "CREATE TABLE member (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)";

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "member", table = schema::member, backends(mysql, mariadb))]
struct Member {
    id: i64,
    email: String,
    cqrs_revision: i32,
    cqrs_updated: NaiveDateTime,
}

/// The same table, with the email tracked (`previous_data`): a save reads the stored row first.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "member", table = schema::member, tracked(email), backends(mysql, mariadb))]
struct TrackedMember {
    id: i64,
    email: String,
    cqrs_revision: i32,
    cqrs_updated: NaiveDateTime,
}

fn member(id: i64, email: &str) -> Member {
    Member {
        id,
        email: email.to_owned(),
        cqrs_revision: 0,
        cqrs_updated: DateTime::UNIX_EPOCH.naive_utc(),
    }
}

fn tracked(id: i64, email: &str) -> TrackedMember {
    let Member {
        id,
        email,
        cqrs_revision,
        cqrs_updated,
    } = member(id, email);
    TrackedMember {
        id,
        email,
        cqrs_revision,
        cqrs_updated,
    }
}

/// The first word of each statement sent since the last look.
fn first_words(statements: &Statements) -> Vec<String> {
    statements
        .take()
        .iter()
        .map(|sql| {
            sql.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_uppercase()
        })
        .collect()
}

async fn database() -> Setup<MysqlDb> {
    let db = MysqlDb::new("mariadb_backend");
    db.execute(DDL);
    Setup::new_with_ddl(db).await
}

fn mariadb(setup: &Setup<MysqlDb>) -> MariadbConnection {
    MariadbConnection::establish(&setup.db.mariadb_url()).expect("MariaDB accepts connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_an_update_and_a_delete_read_nothing_back_on_the_mariadb_backend() {
    let setup = database().await;
    let mut conn = mariadb(&setup);
    let statements = Statements::watch(&mut conn);
    let floor = ["BEGIN", "INSERT", "INSERT", "COMMIT"];

    let stored = member(1, "ann@example.com")
        .save_and_publish(&mut conn)
        .unwrap();
    assert_eq!(first_words(&statements), floor, "create");
    let mut changed = stored.clone();
    changed.email = "anna@example.com".into();
    let changed = changed.save_and_publish(&mut conn).unwrap();
    assert_eq!(first_words(&statements), floor, "update");
    assert_eq!(changed.cqrs_revision, 1, "the row came back as stored");
    assert!(changed.delete_and_publish(&mut conn).unwrap());
    assert_eq!(
        first_words(&statements),
        ["BEGIN", "DELETE", "INSERT", "COMMIT"],
        "delete"
    );
    assert_eq!(setup.outbox_len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mysql_backend_reads_each_written_row_back() {
    // The comparison the MariaDB backend is for: the same save through `MysqlConnection`.
    let setup = database().await;
    let mut conn = setup.db.connect();
    let statements = Statements::watch::<MysqlConnection>(&mut conn);

    member(1, "ann@example.com")
        .save_and_publish(&mut conn)
        .unwrap();
    assert_eq!(
        first_words(&statements),
        ["BEGIN", "INSERT", "SELECT", "INSERT", "COMMIT"],
        "the upserted row is read back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_update_reads_the_stored_row_once_on_the_mariadb_backend() {
    let setup = database().await;
    let mut conn = mariadb(&setup);
    tracked(1, "ann@example.com")
        .save_and_publish(&mut conn)
        .unwrap();
    let statements = Statements::watch(&mut conn);

    let stored = tracked(1, "anna@example.com")
        .save_and_publish(&mut conn)
        .unwrap();
    assert_eq!(
        first_words(&statements),
        ["BEGIN", "SELECT", "INSERT", "INSERT", "COMMIT"],
        "the locking read for previous_data, then the row returned by the upsert"
    );
    assert_eq!(
        (stored.email.as_str(), stored.cqrs_revision),
        ("anna@example.com", 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_colliding_on_another_unique_column_changes_nothing_on_the_mariadb_backend() {
    let setup = database().await;
    let mut conn = mariadb(&setup);
    member(1, "ann@example.com")
        .save_and_publish(&mut conn)
        .unwrap();
    member(2, "bob@example.com")
        .save_and_publish(&mut conn)
        .unwrap();
    let before = setup.outbox_len();

    // A new row with row 1's email: `ON DUPLICATE KEY UPDATE` would update row 1 instead.
    let error = member(3, "ann@example.com")
        .save_and_publish(&mut conn)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unique key other than the primary key"),
        "the error names the collision: {error}"
    );
    assert!(
        member(2, "ann@example.com")
            .save_and_publish(&mut conn)
            .is_err(),
        "a save of row 2 with row 1's email"
    );
    assert!(
        Member::bulk_update_and_publish(&mut conn, &[member(2, "ann@example.com")]).is_err(),
        "an update of row 2 with row 1's email"
    );

    let stored = Member::cqrs_select_page(&mut conn, &Default::default(), None, 10).unwrap();
    let seen: Vec<(i64, &str, i32)> = stored
        .iter()
        .map(|m| (m.id, m.email.as_str(), m.cqrs_revision))
        .collect();
    assert_eq!(
        seen,
        [(1, "ann@example.com", 0), (2, "bob@example.com", 0)],
        "no row was changed"
    );
    assert_eq!(setup.outbox_len(), before, "no message for a failed save");
}
