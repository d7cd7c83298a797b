//! bulk-dump on a PostgreSQL master, bulk-load into SQLite and MariaDB replicas.

use cqrs_diesel::CqrsConnection;
use cqrs_diesel::cli::{Cli, CliError};
use serde_json::Value;

use super::{Dir, Master, lines, ok, replica_rows, run};
use crate::db::{MysqlDb, SqliteDb, TestDb};
use crate::replica::author;
use crate::replica::models::{AuthorRow, MysqlAuthorReplica, SqliteAuthorReplica};
use crate::support::config_builder;

/// A replica database with the author table and the tombstone table, and its commands.
fn replica<D: TestDb, R: AuthorRow<Conn = D::Conn> + cqrs_diesel::ReplicaStore<D::Conn>>(
    db: &D,
    ddl: &str,
) -> Cli<D::Conn> {
    db.execute(ddl);
    db.connect()
        .run_replica_migrations()
        .expect("replica migration");
    let config = config_builder("cli_replica").build().expect("config");
    Cli::new(config, db.connector()).replica::<R>()
}

const KEYS: [&str; 11] = [
    "id",
    "name",
    "email",
    "birth_date",
    "joined_at",
    "active",
    "score",
    "external_id",
    "bio",
    "cqrs_revision",
    "cqrs_updated",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_then_load_round_trips_to_sqlite_and_mariadb() {
    let master = Master::standalone(25);
    let dir = Dir::new("cli_dump");
    let dump = dir.file("author.dump");

    let report = ok(
        &master.cli,
        &["bulk-dump", "-c", "author", "-o", &dump, "--batch", "7"],
    )
    .await;
    assert_eq!((report.processed, report.written), (25, 25));

    // The reference's format, line by line: the cqrs_id, then one instance_data per line.
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(text.ends_with('\n'));
    let lines = lines(&dump);
    assert_eq!(lines.len(), 26);
    assert_eq!(lines[0], "author");
    let expected = master.rows();
    for (i, line) in lines[1..].iter().enumerate() {
        let data: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        let mut expected_keys = KEYS.to_vec();
        expected_keys.sort_unstable();
        assert_eq!(sorted_keys, expected_keys, "line {}", i + 2);
        assert_eq!(
            data["id"],
            Value::from(i as i64 + 1),
            "rows in primary-key order"
        );
        let updated = data["cqrs_updated"].as_str().unwrap();
        assert!(cqrs_diesel::wire::parse_timestamp(updated).is_ok() && updated.ends_with("+00:00"));
        let mut without_updated = data.clone();
        without_updated.remove("cqrs_updated");
        assert_eq!(
            Value::Object(without_updated),
            expected[i],
            "line {}",
            i + 2
        );
    }
    assert_eq!(
        dir.names(),
        vec!["author.dump"],
        "no temporary file is left"
    );

    // An existing dump is not overwritten without --force.
    let error = run(&master.cli, &["bulk-dump", "-c", "author", "-o", &dump])
        .await
        .unwrap_err();
    assert!(matches!(error, CliError::OutputExists(_)), "{error}");
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("--force"), "{error}");

    // A filtered dump.
    let part = dir.file("part.dump");
    let report = ok(
        &master.cli,
        &[
            "bulk-dump",
            "-c",
            "author",
            "--pk-from",
            "5",
            "--pk-to",
            "9",
            "-o",
            &part,
        ],
    )
    .await;
    assert_eq!(report.written, 5);
    assert_eq!(super::lines(&part).len(), 6);

    // Into SQLite, with a stale extra row that --clear removes.
    let sqlite = SqliteDb::new("cli_load");
    let sqlite_cli = replica::<_, SqliteAuthorReplica>(&sqlite, SqliteAuthorReplica::DDL);
    let report = ok(&sqlite_cli, &["bulk-load", "-i", &part]).await;
    assert_eq!(report.written, 5);
    let extra = dir.file("extra.dump");
    let extra_line = author("SYNC", 999, "stale", 3)["instance_data"].to_string();
    std::fs::write(&extra, format!("author\n{extra_line}\n")).unwrap();
    ok(&sqlite_cli, &["bulk-load", "-i", &extra]).await;
    assert_eq!(
        replica_rows::<SqliteAuthorReplica>(&mut sqlite.connect()).len(),
        6
    );
    let report = ok(
        &sqlite_cli,
        &["bulk-load", "-i", &dump, "--clear", "--batch", "10"],
    )
    .await;
    assert_eq!((report.processed, report.written), (25, 25));
    assert_eq!(
        replica_rows::<SqliteAuthorReplica>(&mut sqlite.connect()),
        expected,
        "the SQLite replica equals the master"
    );

    // Into MariaDB, over rows that are already there (written whatever their revision).
    let mariadb = MysqlDb::new("cli_load");
    let mariadb_cli = replica::<_, MysqlAuthorReplica>(&mariadb, MysqlAuthorReplica::DDL);
    ok(&mariadb_cli, &["bulk-load", "-i", &extra]).await;
    ok(&mariadb_cli, &["bulk-load", "-i", &dump]).await;
    let mut rows = replica_rows::<MysqlAuthorReplica>(&mut mariadb.connect());
    assert_eq!(
        rows.pop().map(|row| row["id"].clone()),
        Some(Value::from(999))
    );
    assert_eq!(rows, expected, "the MariaDB replica equals the master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_reports_each_rejected_line_and_loads_the_others() {
    let sqlite = SqliteDb::new("cli_load_bad");
    // A CHECK the records' decoding cannot see: the database refuses a negative score.
    let ddl = SqliteAuthorReplica::DDL.replace(
        "score DOUBLE NOT NULL",
        "score DOUBLE NOT NULL CHECK (score >= 0)",
    );
    assert_ne!(ddl, SqliteAuthorReplica::DDL);
    let cli = replica::<_, SqliteAuthorReplica>(&sqlite, &ddl);
    let dir = Dir::new("cli_load_bad");
    let file = dir.file("bad.dump");
    let record =
        |id: i64| author("SYNC", id, &format!("name-{id}"), 1)["instance_data"].to_string();
    let mut missing_name = author("SYNC", 3, "x", 1)["instance_data"].clone();
    missing_name.as_object_mut().unwrap().remove("name");
    let mut negative = author("SYNC", 6, "negative", 1)["instance_data"].clone();
    negative["score"] = Value::from(-1.0);
    let text = [
        "author".to_owned(),      // 1
        record(1),                // 2
        "{not json".to_owned(),   // 3
        record(2),                // 4
        missing_name.to_string(), // 5
        "[1, 2]".to_owned(),      // 6
        record(4),                // 7
        negative.to_string(),     // 8
        record(5),                // 9
        String::new(),            // 10: blank, ignored
    ]
    .join("\n");
    std::fs::write(&file, text).unwrap();

    let error = run(&cli, &["bulk-load", "-i", &file, "--batch", "3"])
        .await
        .unwrap_err();
    assert_eq!(error.exit_code(), 1);
    let CliError::Rejected { loaded, rejected } = &error else {
        panic!("expected rejected records, got {error}");
    };
    assert_eq!(*loaded, 4);
    let lines: Vec<usize> = rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![3, 5, 6, 8], "{rejected:?}");
    let reason = |line: usize| &rejected.iter().find(|r| r.line == line).unwrap().reason;
    assert!(reason(3).contains("not JSON"), "{}", reason(3));
    assert!(reason(5).contains("name"), "{}", reason(5));
    assert!(reason(6).contains("JSON object"), "{}", reason(6));
    assert!(reason(8).to_lowercase().contains("check"), "{}", reason(8));
    assert!(error.to_string().contains("lines 3, 5, 6, 8"), "{error}");
    let ids: Vec<i64> = replica_rows::<SqliteAuthorReplica>(&mut sqlite.connect())
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 4, 5], "the good records are loaded");
}
