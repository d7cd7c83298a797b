//! Bad input gives one clear error and a non-zero exit code, and writes nothing.

use std::process::ExitCode;

use cqrs_diesel::cli::{Cli, CliError};
use cqrs_diesel::diesel::PgConnection;
use cqrs_diesel::diesel::result::ConnectionError;

use super::{Dir, Master, run};
use crate::master::models::PgAuthor;
use crate::support::config_builder;

/// Runs `args`, expects an error with `code`, and returns its message.
async fn fails(cli: &Cli<PgConnection>, args: &[&str], code: u8) -> String {
    let error = run(cli, args)
        .await
        .err()
        .unwrap_or_else(|| panic!("cqrs {args:?} should fail"));
    assert_eq!(error.exit_code(), code, "cqrs {args:?}: {error}");
    let message = error.to_string();
    assert!(!message.is_empty());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_a_clear_error_and_a_non_zero_exit_code() {
    let master = Master::standalone(3);
    let cli = &master.cli;
    let dir = Dir::new("cli_bad");

    // Unknown cqrs_id: the registered ones are listed.
    let message = fails(cli, &["sync", "-c", "nope", "--all"], 2).await;
    assert!(message.contains("unknown cqrs_id `nope`"), "{message}");
    assert!(message.contains("`author`"), "{message}");
    let message = fails(cli, &["bulk-dump", "-c", "nope", "-o", &dir.file("x")], 2).await;
    assert!(message.contains("`nope`"), "{message}");
    // Only masters are registered here: a replica command names the side.
    let message = fails(cli, &["deleted-diff-replica", "-c", "author"], 2).await;
    assert!(message.contains("registers no replica model"), "{message}");
    let unknown = dir.file("unknown.dump");
    std::fs::write(&unknown, "account\n{}\n").unwrap();
    let message = fails(cli, &["diff-sync", "-i", &unknown], 2).await;
    assert!(message.contains("names no queue"), "{message}");
    std::fs::write(
        &unknown,
        "account,2024-01-01 00:00:00+00:00,payments\n[1]\n",
    )
    .unwrap();
    let message = fails(cli, &["diff-sync", "-i", &unknown], 2).await;
    assert!(message.contains("unknown cqrs_id `account`"), "{message}");

    // Unreadable input: a missing file, a directory, an empty file.
    let missing = dir.file("missing.diff");
    let message = fails(cli, &["deleted-diff-master", "-i", &missing], 2).await;
    assert!(
        message.contains("cannot read") && message.contains("missing.diff"),
        "{message}"
    );
    let message = fails(cli, &["deleted-diff-master", "-i", &dir.file("")], 2).await;
    assert!(message.contains("directory"), "{message}");
    let empty = dir.file("empty.diff");
    std::fs::write(&empty, "").unwrap();
    let message = fails(cli, &["deleted-diff-master", "-i", &empty], 2).await;
    assert!(message.contains("empty"), "{message}");

    // A malformed line: the error names the file and the line, no output file is left.
    let malformed = dir.file("malformed.diff");
    std::fs::write(
        &malformed,
        "author,2024-01-01 00:00:00+00:00\n[1, 2]\n{\"id\": 3}\n",
    )
    .unwrap();
    let out = dir.file("out.diff");
    let message = fails(
        cli,
        &["deleted-diff-master", "-i", &malformed, "-o", &out],
        2,
    )
    .await;
    assert!(message.contains("malformed.diff: line 3"), "{message}");
    assert!(message.contains("JSON array of primary keys"), "{message}");
    assert!(
        !dir.names().iter().any(|name| name.contains("out.diff")),
        "{:?}",
        dir.names()
    );
    // A key of the wrong type for the model.
    std::fs::write(&malformed, "author,2024-01-01 00:00:00+00:00\n[\"abc\"]\n").unwrap();
    let message = fails(
        cli,
        &["deleted-diff-master", "-i", &malformed, "-o", &out],
        2,
    )
    .await;
    assert!(
        message.contains("line 2") && message.contains("abc"),
        "{message}"
    );

    // Malformed filters: a missing value, a bad time, unsupported kwargs, refused SQL, a
    // primary key of the wrong type, no filter at all.
    let message = fails(cli, &["sync", "-c", "author", "--pk-from"], 2).await;
    assert!(message.contains("--pk-from"), "{message}");
    let message = fails(cli, &["sync", "-c", "author", "--since", "last tuesday"], 2).await;
    assert!(
        message.contains("--since") && message.contains("RFC 3339"),
        "{message}"
    );
    let message = fails(
        cli,
        &["sync", "-c", "author", "--filter", r#"{"name": "x"}"#],
        2,
    )
    .await;
    assert!(message.contains("unsupported key `name`"), "{message}");
    let message = fails(
        cli,
        &[
            "bulk-dump",
            "-c",
            "author",
            "-o",
            &out,
            "--where",
            "no_such_column = 1",
        ],
        2,
    )
    .await;
    assert!(
        message.contains("--where") && message.contains("no_such_column"),
        "{message}"
    );
    let message = fails(
        cli,
        &["diff-master", "-c", "author", "-o", &out, "--pk", "abc"],
        2,
    )
    .await;
    assert!(
        message.contains("bad filter") && message.contains("abc"),
        "{message}"
    );
    let message = fails(cli, &["sync", "-c", "author"], 2).await;
    assert!(message.contains("--all"), "{message}");
    assert!(
        !dir.names().iter().any(|name| name.contains("out.diff")),
        "{:?}",
        dir.names()
    );

    // The exit codes of `run_from`, which prints the error.
    assert_eq!(
        cli.run_from(["cqrs", "sync", "-c", "nope", "--all"]).await,
        ExitCode::from(2)
    );
    assert_eq!(
        cli.run_from(["cqrs", "frobnicate"]).await,
        ExitCode::from(2)
    );
    assert_eq!(cli.run_from(["cqrs", "--help"]).await, ExitCode::SUCCESS);
    assert!(matches!(
        run(cli, &["--version"]).await,
        Err(CliError::Usage(_))
    ));

    // A database that cannot be reached is a runtime failure (1), and leaves no file.
    let down = Cli::new(config_builder("cli_down").build().unwrap(), || {
        Err(ConnectionError::BadConnection("the server is down".into()))
    })
    .master::<PgAuthor>();
    let dump = dir.file("down.dump");
    let message = fails(&down, &["bulk-dump", "-c", "author", "-o", &dump], 1).await;
    assert!(message.contains("the server is down"), "{message}");
    assert!(
        !dir.names().iter().any(|name| name.contains("down.dump")),
        "{:?}",
        dir.names()
    );
}
