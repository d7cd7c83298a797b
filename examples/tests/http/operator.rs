//! The operator commands mounted in the accounts binary (`accounts cqrs ...`), run as a real
//! process: a closed standard output or standard error ends a command with its documented exit
//! code, never a panic (exit code 101, "failed printing to stderr").

use std::io::Read;
use std::process::{Command, Stdio};

use cqrs_examples::accounts::AccountsDb;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};

/// A SQLite accounts database with `rows` accounts, in a directory removed at the end.
fn accounts_database(rows: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("accounts.sqlite3");
    let url = path.to_string_lossy().into_owned();
    let mut conn = SqliteConnection::establish(&url).expect("open the database");
    conn.batch_execute(<SqliteConnection as AccountsDb>::SCHEMA)
        .expect("create the table");
    conn.batch_execute(&format!(
        "WITH RECURSIVE n(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM n WHERE id < {rows}) \
         INSERT INTO account (id, name, email, cqrs_revision, cqrs_updated) \
         SELECT id, 'name ' || id, 'a' || id || '@example.com', 0, '2026-01-01 00:00:00.000000' \
         FROM n WHERE {rows} > 0"
    ))
    .expect("insert the accounts");
    (dir, url)
}

fn operator(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_accounts"));
    command
        .arg("cqrs")
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null());
    command
}

#[test]
fn a_closed_stderr_ends_a_failing_command_with_its_exit_code() {
    let (_dir, url) = accounts_database(0);
    // An unknown cqrs_id is bad input (exit code 2); its one-line error goes to stderr, which
    // is a pipe whose reading end is closed before the command writes.
    let mut child = operator(&url, &["diff-master", "-c", "no_such_model"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the accounts binary");
    drop(child.stderr.take());
    let status = child.wait().expect("the command ends");
    assert_eq!(status.code(), Some(2), "{status:?}");
}

#[test]
fn a_closed_stderr_ends_a_successful_command_with_exit_code_zero() {
    let (_dir, url) = accounts_database(3);
    let out = tempfile::tempdir().expect("a temporary directory");
    let dump = out.path().join("account.dump");
    let mut child = operator(
        &url,
        &["bulk-dump", "-c", "account", "-o", &dump.to_string_lossy()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the accounts binary");
    drop(child.stderr.take());
    let status = child.wait().expect("the command ends");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let written = std::fs::read_to_string(&dump).expect("the dump was written");
    assert_eq!(written.lines().count(), 4, "the cqrs_id and three rows");
}

#[test]
fn a_closed_stdout_ends_diff_master_quietly_with_exit_code_one() {
    // Enough rows that the output does not fit in the pipe after the reader has gone.
    let (_dir, url) = accounts_database(20_000);
    let mut child = operator(&url, &["diff-master", "-c", "account", "--batch", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the accounts binary");
    // Like `| head -c 400`: read a little, then close the pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = [0u8; 400];
    stdout.read_exact(&mut head).expect("the first 400 bytes");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("the command ends");
    assert!(
        String::from_utf8_lossy(&head).starts_with("account,"),
        "the diff header came first"
    );
    assert_eq!(status.code(), Some(1), "{status:?}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
}
