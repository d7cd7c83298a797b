//! `SessionSetup`, the settings for the connections an application opens itself: strict SQL mode
//! on a master's MySQL/MariaDB connection, WAL and a busy timeout on SQLite.

use chrono::{TimeZone, Utc};
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::sql_types::{BigInt, Text};
use cqrs_diesel::diesel::{QueryableByName, RunQueryDsl, sql_query};
use cqrs_diesel::{MasterModel, SessionSetup};
use uuid::Uuid;

use super::models::MysqlAuthor;
use super::{Author, Setup};
use crate::db::{MysqlDb, SqliteDb, TestDb};

#[derive(QueryableByName)]
struct TextValue {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn author(name: &str) -> MysqlAuthor {
    MysqlAuthor::new(
        1,
        name,
        None,
        None,
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        true,
        0.0,
        Uuid::nil(),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_write_on_a_set_up_mariadb_connection_refuses_a_too_long_value() {
    let setup = Setup::new::<MysqlAuthor>(MysqlDb::new("session_strict")).await;
    let mut conn = setup.db.connect();
    // A server whose default is not strict, as many are configured.
    conn.batch_execute("SET SESSION sql_mode = ''").unwrap();
    SessionSetup::new().apply(&mut conn).unwrap();
    let mode: TextValue = sql_query("SELECT @@SESSION.sql_mode AS value")
        .get_result(&mut conn)
        .unwrap();
    assert!(mode.value.contains("STRICT_ALL_TABLES"), "{}", mode.value);

    let error = author(&"x".repeat(300))
        .save_and_publish(&mut conn)
        .unwrap_err();
    assert!(error.to_string().contains("Data too long"), "{error}");
    let rows: Count = sql_query("SELECT COUNT(*) AS n FROM author")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(rows.n, 0, "nothing half written");
    assert_eq!(setup.outbox_len(), 0, "no message for a refused write");
}

#[test]
fn a_set_up_sqlite_connection_runs_in_wal_with_a_busy_timeout() {
    let db = SqliteDb::new("session_sqlite");
    // A fresh file, in the default rollback journal.
    let path = db.path.with_extension("fresh.sqlite3");
    let mut conn =
        <cqrs_diesel::diesel::SqliteConnection as cqrs_diesel::diesel::Connection>::establish(
            &path.to_string_lossy(),
        )
        .unwrap();
    SessionSetup::new().apply(&mut conn).unwrap();
    let journal: TextValue = sql_query("SELECT journal_mode AS value FROM pragma_journal_mode")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(journal.value, "wal");
    let timeout: Count = sql_query("SELECT timeout AS n FROM pragma_busy_timeout")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(timeout.n, 5000);
    let sync: Count = sql_query("SELECT synchronous AS n FROM pragma_synchronous")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(sync.n, 1, "synchronous = NORMAL");
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
