//! What a failed statement means, decided from the database's own error code: a conflict with
//! a concurrent transaction (run it again now), an unavailable database (wait, reconnect, run
//! it again), or anything else (the statement or its values are at fault).
//!
//! # Where the code comes from
//!
//! Diesel 2.3 keeps a database error as a [`DatabaseErrorKind`](Kind) and a
//! [`DatabaseErrorInformation`] whose only backend-neutral content is the message text; it maps a
//! handful of codes to kinds and drops the code itself. So, per backend:
//!
//! - **PostgreSQL.** The SQLSTATE is in the `PGresult` Diesel keeps, but its
//!   `DatabaseErrorInformation` (message, detail, hint, table, column, constraint, position)
//!   does not expose it, and the trait cannot be downcast. The kinds carry 40001
//!   (`SerializationFailure`), 25006 (`ReadOnlyTransaction`, which is also what a hot standby
//!   answers) and class 08 plus a broken connection (`ClosedConnection`,
//!   `UnableToSendCommand`). Every other code (40P01 deadlock, 55P03 lock timeout, 53100 disk
//!   full, 57P01 shutdown...) arrives as `Unknown` and is recognised by the server's primary
//!   message, matched whole (or by the fixed text around its one parameter): the English
//!   texts of the server's message catalogue. A server whose `lc_messages` is another language
//!   sends translated texts, which this does not recognise: those errors count as *other*, as
//!   before this module (a session cannot choose its language without superuser rights).
//! - **MySQL / MariaDB.** The kinds carry 1213 (`SerializationFailure`) and 1792
//!   (`ReadOnlyTransaction`); everything else is `Unknown` with the text. The server keeps the
//!   failed statement's conditions in the session's diagnostics area, which Diesel's
//!   `ROLLBACK` (a statement without tables) leaves as it is (verified on MariaDB 10.11). So
//!   [`classify_on`] reads the error number back on the same connection with
//!   `GET DIAGNOSTICS`, and takes it only when the condition's text is the very text Diesel
//!   reported (so it cannot belong to another statement), whatever the session's
//!   `lc_messages`. Where that is not possible (the error alone, as in
//!   [`Error::is_conflict`](crate::Error::is_conflict)), the texts below decide: MariaDB's and
//!   MySQL's English texts, and the client library's for a lost connection (2006, 2013, 2055,
//!   which no query can read back: the connection is gone).
//! - **SQLite.** Diesel reports `sqlite3_errmsg`, which for the codes below is the fixed text
//!   `sqlite3_errstr` returns for the primary result code (the extended code is not
//!   available), or for `SQLITE_LOCKED` that text followed by the table or schema name. Those
//!   texts are in effect the code.
//!
//! A connection that cannot be opened is [`Error::Connect`](crate::Error::Connect), unavailable
//! without any code.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind as Kind, Error as DieselError};

use crate::connection::CqrsConnection;

/// What a failed statement means for whoever would run it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The transaction lost to a concurrent one (a serialization failure, a deadlock, a lock
    /// wait timeout, SQLite's busy or locked database) and was rolled back: running it again
    /// may succeed at once.
    Conflict,
    /// The database cannot take the write now (the connection is lost, the database or the
    /// transaction is read-only, the disk is full, too many connections, the server is shutting
    /// down): the same write fails until the server is back or writable; reconnect and try
    /// again later.
    Unavailable,
    /// The statement ran longer than the session's statement timeout (`CQRS_QUERY_TIMEOUT`)
    /// and the server cancelled it: PostgreSQL 57014 with the text of a statement timeout (not
    /// a cancel request), MariaDB 1969 `ER_STATEMENT_TIMEOUT`, MySQL 3024 `ER_QUERY_TIMEOUT`.
    /// Nothing of the transaction is kept; the same statement may finish later (a lock
    /// released, a lighter load).
    TimedOut,
    /// Anything else: the statement or its values are at fault.
    Other,
}

/// A database's own code for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbCode {
    /// A PostgreSQL SQLSTATE.
    Postgres(&'static str),
    /// A MySQL/MariaDB error number (server errors below 2000, client errors from 2000).
    Mysql(u32),
    /// A SQLite result code (primary or extended).
    Sqlite(i32),
}

impl DbCode {
    /// What this code means.
    pub(crate) fn class(self) -> ErrorClass {
        match self {
            DbCode::Postgres(sqlstate) => postgres_class(sqlstate),
            DbCode::Mysql(errno) => mysql_class(errno),
            DbCode::Sqlite(code) => sqlite_class(code),
        }
    }
}

/// What a PostgreSQL SQLSTATE means.
///
/// Conflicts: 40001 `serialization_failure`, 40P01 `deadlock_detected`, 55P03
/// `lock_not_available` (`lock_timeout`, `NOWAIT`). Unavailable: class 08 (connection
/// exception), 25006 `read_only_sql_transaction` (a read-only database or a standby), 53100
/// `disk_full`, 53300 `too_many_connections`, 57P01 `admin_shutdown`, 57P02 `crash_shutdown`,
/// 57P03 `cannot_connect_now`, 58030 `io_error`. Not 53200 `out_of_memory`: a statement too
/// large for the server's memory would fail forever, so it must fail its message instead of
/// holding the queue.
pub(crate) fn postgres_class(sqlstate: &str) -> ErrorClass {
    match sqlstate {
        "40001" | "40P01" | "55P03" => ErrorClass::Conflict,
        // Reached only from the statement timeout's text (57014 is also a cancel request, whose
        // text is not recognised and stays *other*).
        "57014" => ErrorClass::TimedOut,
        "25006" | "53100" | "53300" | "57P01" | "57P02" | "57P03" | "58030" => {
            ErrorClass::Unavailable
        }
        _ if sqlstate.len() == 5 && sqlstate.starts_with("08") => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

/// What a MySQL/MariaDB error number means.
///
/// Conflicts: 1213 `ER_LOCK_DEADLOCK`, 1205 `ER_LOCK_WAIT_TIMEOUT` (also `NOWAIT` on MariaDB),
/// 1020 `ER_CHECKREAD` (MariaDB's snapshot isolation: the row changed since the transaction's
/// snapshot). Unavailable: 1290 `ER_OPTION_PREVENTS_STATEMENT` (`--read-only`; the
/// replica's statements meet no other option that refuses them), 1836 `ER_READ_ONLY_MODE`,
/// 1792 `ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION`, 1021 `ER_DISK_FULL`, 1114
/// `ER_RECORD_FILE_FULL`, 1040 `ER_CON_COUNT_ERROR`, 1203 `ER_TOO_MANY_USER_CONNECTIONS`, 1053
/// `ER_SERVER_SHUTDOWN`, 1927 `ER_CONNECTION_KILLED` (MariaDB), 1158 to 1161 (network read and
/// write errors), and the client's 2002, 2003, 2006 (`CR_SERVER_GONE_ERROR`), 2013
/// (`CR_SERVER_LOST`), 2055 (`CR_SERVER_LOST_EXTENDED`).
pub(crate) fn mysql_class(errno: u32) -> ErrorClass {
    match errno {
        1213 | 1205 | 1020 => ErrorClass::Conflict,
        1969 | 3024 => ErrorClass::TimedOut,
        1290
        | 1836
        | 1792
        | 1021
        | 1114
        | 1040
        | 1203
        | 1053
        | 1927
        | 1158..=1161
        | 2002
        | 2003
        | 2006
        | 2013
        | 2055 => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

/// SQLite's primary result codes this module knows (stable values of the C API).
mod sqlite {
    pub(super) const BUSY: i32 = 5;
    pub(super) const LOCKED: i32 = 6;
    pub(super) const READONLY: i32 = 8;
    pub(super) const IOERR: i32 = 10;
    pub(super) const FULL: i32 = 13;
    pub(super) const CANTOPEN: i32 = 14;
}

/// What a SQLite result code (primary or extended: the primary code is its low byte) means.
///
/// Conflicts: `SQLITE_BUSY`, `SQLITE_LOCKED`. Unavailable: `SQLITE_READONLY`, `SQLITE_FULL`,
/// `SQLITE_IOERR`, `SQLITE_CANTOPEN`.
pub(crate) fn sqlite_class(code: i32) -> ErrorClass {
    match code & 0xff {
        sqlite::BUSY | sqlite::LOCKED => ErrorClass::Conflict,
        sqlite::READONLY | sqlite::FULL | sqlite::IOERR | sqlite::CANTOPEN => {
            ErrorClass::Unavailable
        }
        _ => ErrorClass::Other,
    }
}

/// Messages that are, whole, the text of one code (see the module documentation for why
/// PostgreSQL, MySQL fallbacks and SQLite are read from their texts).
const EXACT_TEXTS: &[(&str, DbCode)] = &[
    ("deadlock detected", DbCode::Postgres("40P01")),
    (
        "canceling statement due to statement timeout",
        DbCode::Postgres("57014"),
    ),
    (
        "Query execution was interrupted (max_statement_time exceeded)",
        DbCode::Mysql(1969),
    ),
    (
        "Query execution was interrupted, maximum statement execution time exceeded",
        DbCode::Mysql(3024),
    ),
    (
        "canceling statement due to lock timeout",
        DbCode::Postgres("55P03"),
    ),
    (
        "terminating connection due to administrator command",
        DbCode::Postgres("57P01"),
    ),
    (
        "terminating connection because of crash of another server process",
        DbCode::Postgres("57P02"),
    ),
    (
        "the database system is shutting down",
        DbCode::Postgres("57P03"),
    ),
    (
        "the database system is starting up",
        DbCode::Postgres("57P03"),
    ),
    ("sorry, too many clients already", DbCode::Postgres("53300")),
    (
        "Deadlock found when trying to get lock; try restarting transaction",
        DbCode::Mysql(1213),
    ),
    (
        "Lock wait timeout exceeded; try restarting transaction",
        DbCode::Mysql(1205),
    ),
    (
        "The MariaDB server is running with the --read-only option so it cannot execute this \
         statement",
        DbCode::Mysql(1290),
    ),
    (
        "The MySQL server is running with the --read-only option so it cannot execute this \
         statement",
        DbCode::Mysql(1290),
    ),
    (
        "The MySQL server is running with the --super-read-only option so it cannot execute \
         this statement",
        DbCode::Mysql(1290),
    ),
    ("Running in read-only mode", DbCode::Mysql(1836)),
    (
        "Cannot execute statement in a READ ONLY transaction",
        DbCode::Mysql(1792),
    ),
    ("Too many connections", DbCode::Mysql(1040)),
    ("Server shutdown in progress", DbCode::Mysql(1053)),
    ("Connection was killed", DbCode::Mysql(1927)),
    // MariaDB Connector/C, then libmysqlclient.
    ("Server has gone away", DbCode::Mysql(2006)),
    ("MySQL server has gone away", DbCode::Mysql(2006)),
    (
        "Lost connection to server during query",
        DbCode::Mysql(2013),
    ),
    (
        "Lost connection to MySQL server during query",
        DbCode::Mysql(2013),
    ),
    // `sqlite3_errstr` of each primary code.
    ("database is locked", DbCode::Sqlite(sqlite::BUSY)),
    ("database table is locked", DbCode::Sqlite(sqlite::LOCKED)),
    (
        "attempt to write a readonly database",
        DbCode::Sqlite(sqlite::READONLY),
    ),
    ("disk I/O error", DbCode::Sqlite(sqlite::IOERR)),
    ("database or disk is full", DbCode::Sqlite(sqlite::FULL)),
    (
        "unable to open database file",
        DbCode::Sqlite(sqlite::CANTOPEN),
    ),
];

/// Texts of one code with one parameter: (the text before it, the text after it).
const PATTERNS: &[(&str, &str, DbCode)] = &[
    (
        "could not obtain lock on row in relation \"",
        "\"",
        DbCode::Postgres("55P03"),
    ),
    (
        "could not obtain lock on relation \"",
        "\"",
        DbCode::Postgres("55P03"),
    ),
    // `could not extend file "...": %m` (and other writes) when `%m` is ENOSPC.
    (
        "could not ",
        ": No space left on device",
        DbCode::Postgres("53100"),
    ),
    (
        "too many connections for role \"",
        "\"",
        DbCode::Postgres("53300"),
    ),
    (
        "too many connections for database \"",
        "\"",
        DbCode::Postgres("53300"),
    ),
    (
        "Record has changed since last read in table '",
        "'; try restarting transaction",
        DbCode::Mysql(1020),
    ),
    ("Disk full (", ")", DbCode::Mysql(1021)),
    ("The table '", "' is full", DbCode::Mysql(1114)),
    ("Lost connection to server at '", "", DbCode::Mysql(2055)),
    (
        "Lost connection to MySQL server at '",
        "",
        DbCode::Mysql(2055),
    ),
    // SQLITE_LOCKED with the name of the table or schema.
    (
        "database table is locked: ",
        "",
        DbCode::Sqlite(sqlite::LOCKED),
    ),
    (
        "database schema is locked: ",
        "",
        DbCode::Sqlite(sqlite::LOCKED),
    ),
];

/// The code whose text `message` is, when it is one of the texts above.
pub(crate) fn code_of_text(message: &str) -> Option<DbCode> {
    if let Some((_, code)) = EXACT_TEXTS.iter().find(|(text, _)| *text == message) {
        return Some(*code);
    }
    PATTERNS
        .iter()
        .find(|(head, tail, _)| {
            message.len() > head.len() + tail.len()
                && message.starts_with(head)
                && message.ends_with(tail)
        })
        .map(|(_, _, code)| *code)
}

/// What `error` means, from the error alone: its kind where Diesel mapped the code, otherwise
/// its text (see the module documentation).
pub(crate) fn classify(error: &DieselError) -> ErrorClass {
    match error {
        DieselError::DatabaseError(kind, info) => classify_database(kind, info.as_ref()),
        // COMMIT failed, then ROLLBACK too: the worse of the two.
        DieselError::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => match (classify(commit_error), classify(rollback_error)) {
            (ErrorClass::Unavailable, _) | (_, ErrorClass::Unavailable) => ErrorClass::Unavailable,
            (commit, _) => commit,
        },
        _ => ErrorClass::Other,
    }
}

fn classify_database(
    kind: &Kind,
    info: &(dyn DatabaseErrorInformation + Send + Sync),
) -> ErrorClass {
    match kind {
        // PostgreSQL 40001, MySQL/MariaDB 1213.
        Kind::SerializationFailure => ErrorClass::Conflict,
        // PostgreSQL 25006, MySQL/MariaDB 1792.
        Kind::ReadOnlyTransaction => ErrorClass::Unavailable,
        // PostgreSQL class 08, or the connection broke.
        Kind::ClosedConnection | Kind::UnableToSendCommand => ErrorClass::Unavailable,
        Kind::Unknown => code_of_text(info.message()).map_or(ErrorClass::Other, DbCode::class),
        // Constraint violations: the values are at fault.
        _ => ErrorClass::Other,
    }
}

/// What `error`, just returned by a statement on `conn` (and rolled back), means. Unlike
/// [`classify`], this asks the connection: on MySQL/MariaDB for the error number (see the
/// module documentation), and on every backend whether it still answers at all: a statement
/// that failed because the server went away reports all sorts of errors, and a connection that
/// no longer answers makes it an outage, not a bad message.
pub(crate) fn classify_on<C: CqrsConnection>(conn: &mut C, error: &DieselError) -> ErrorClass {
    #[cfg(feature = "mysql")]
    #[allow(irrefutable_let_patterns)]
    if let crate::connection::DbConn::Mysql(mysql) = crate::exec::Exec::db_conn(conn)
        && let DieselError::DatabaseError(Kind::Unknown, info) = error
    {
        match mysql::error_number(mysql, info.message()) {
            Ok(Some(errno)) => return mysql_class(errno),
            Ok(None) => {
                tracing::debug!(
                    error = info.message(),
                    "the diagnostics area no longer holds this error; judging it by its text"
                );
            }
            Err(diagnostics) => {
                tracing::debug!(%diagnostics, "cannot read the error number back");
            }
        }
    }
    match classify(error) {
        ErrorClass::Other if conn.batch_execute("SELECT 1").is_err() => ErrorClass::Unavailable,
        class => class,
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::{Nullable, Text};

    /// The first and the last condition of the diagnostics area, as `GET DIAGNOSTICS` copied
    /// them into session variables.
    #[derive(QueryableByName)]
    struct Conditions {
        #[diesel(sql_type = Nullable<Text>)]
        first_number: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        first_text: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        last_number: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        last_text: Option<String>,
    }

    /// The error number of the condition whose text is `message` in the session's diagnostics
    /// area (the conditions of its last statement that used a table: `ROLLBACK` keeps them), or
    /// `None` when neither its first nor its last condition has that text (another statement
    /// ran since).
    ///
    /// `SHOW ERRORS` would list them in one statement, but Diesel runs every query that returns
    /// rows as a prepared statement, and MariaDB prepares `SHOW ERRORS` without result metadata
    /// (Diesel: "No metadata exists"). So `GET DIAGNOSTICS` (which leaves the area as it is)
    /// copies the conditions into session variables through the text protocol, and a `SELECT`
    /// reads them. A variable left from an earlier call whose text is this message's belongs to
    /// an error of the same text, hence of the same number.
    pub(super) fn error_number(
        conn: &mut MysqlConnection,
        message: &str,
    ) -> QueryResult<Option<u32>> {
        conn.batch_execute(
            "GET DIAGNOSTICS @cqrs_conditions = NUMBER; \
             GET DIAGNOSTICS CONDITION 1 \
                 @cqrs_first_number = MYSQL_ERRNO, @cqrs_first_text = MESSAGE_TEXT; \
             GET DIAGNOSTICS CONDITION @cqrs_conditions \
                 @cqrs_last_number = MYSQL_ERRNO, @cqrs_last_text = MESSAGE_TEXT",
        )?;
        let conditions: Conditions = diesel::sql_query(
            "SELECT CAST(@cqrs_first_number AS CHAR) AS first_number, \
                 CAST(@cqrs_first_text AS CHAR) AS first_text, \
                 CAST(@cqrs_last_number AS CHAR) AS last_number, \
                 CAST(@cqrs_last_text AS CHAR) AS last_text",
        )
        .get_result(conn)?;
        let number_of = |number: Option<String>, text: Option<String>| {
            (text.as_deref() == Some(message))
                .then(|| number.and_then(|number| number.parse::<u32>().ok()))
                .flatten()
        };
        Ok(number_of(conditions.last_number, conditions.last_text)
            .or_else(|| number_of(conditions.first_number, conditions.first_text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ErrorClass::{Conflict, Other, TimedOut, Unavailable};

    #[test]
    fn postgres_sqlstates() {
        for (sqlstate, class) in [
            ("40001", Conflict),
            ("40P01", Conflict),
            ("55P03", Conflict),
            ("25006", Unavailable),
            ("53100", Unavailable),
            ("53300", Unavailable),
            ("57P01", Unavailable),
            ("57P02", Unavailable),
            ("57P03", Unavailable),
            ("58030", Unavailable),
            ("08000", Unavailable),
            ("08006", Unavailable),
            ("08P01", Unavailable),
            ("53200", Other),
            ("23505", Other),
            ("22001", Other),
            ("57014", TimedOut), // only met through the statement timeout's text
            ("08", Other),
        ] {
            assert_eq!(postgres_class(sqlstate), class, "{sqlstate}");
        }
    }

    #[test]
    fn mysql_error_numbers() {
        for (errno, class) in [
            (1213, Conflict),
            (1205, Conflict),
            (1020, Conflict),
            (1290, Unavailable),
            (1836, Unavailable),
            (1792, Unavailable),
            (1021, Unavailable),
            (1114, Unavailable),
            (1040, Unavailable),
            (1203, Unavailable),
            (1053, Unavailable),
            (1927, Unavailable),
            (1158, Unavailable),
            (1161, Unavailable),
            (2006, Unavailable),
            (2013, Unavailable),
            (2055, Unavailable),
            (1062, Other),
            (1406, Other),
            (1452, Other),
            (1146, Other),
        ] {
            assert_eq!(mysql_class(errno), class, "{errno}");
        }
    }

    #[test]
    fn sqlite_result_codes_primary_and_extended() {
        for (code, class) in [
            (5, Conflict),                 // SQLITE_BUSY
            (5 | (3 << 8), Conflict),      // SQLITE_BUSY_TIMEOUT
            (6, Conflict),                 // SQLITE_LOCKED
            (6 | (1 << 8), Conflict),      // SQLITE_LOCKED_SHAREDCACHE
            (8, Unavailable),              // SQLITE_READONLY
            (8 | (1 << 8), Unavailable),   // SQLITE_READONLY_RECOVERY
            (10, Unavailable),             // SQLITE_IOERR
            (10 | (13 << 8), Unavailable), // SQLITE_IOERR_FSYNC
            (13, Unavailable),             // SQLITE_FULL
            (14, Unavailable),             // SQLITE_CANTOPEN
            (19, Other),                   // SQLITE_CONSTRAINT
            (19 | (8 << 8), Other),        // SQLITE_CONSTRAINT_PRIMARYKEY
            (1, Other),                    // SQLITE_ERROR
            (11, Other),                   // SQLITE_CORRUPT
        ] {
            assert_eq!(sqlite_class(code), class, "{code}");
        }
    }

    #[test]
    fn texts_name_their_codes() {
        for (message, code) in [
            ("deadlock detected", DbCode::Postgres("40P01")),
            (
                "could not obtain lock on row in relation \"author\"",
                DbCode::Postgres("55P03"),
            ),
            (
                "could not extend file \"base/16384/16385\": No space left on device",
                DbCode::Postgres("53100"),
            ),
            (
                "Lock wait timeout exceeded; try restarting transaction",
                DbCode::Mysql(1205),
            ),
            ("The table 'author' is full", DbCode::Mysql(1114)),
            (
                "Disk full (./test/author.ibd); waiting for someone to free some space... \
                 (errno: 28 \"No space left on device\")",
                DbCode::Mysql(1021),
            ),
            (
                "Lost connection to server at 'handshake: reading initial communication \
                 packet', system error: 104",
                DbCode::Mysql(2055),
            ),
            ("database is locked", DbCode::Sqlite(5)),
            ("database table is locked: author", DbCode::Sqlite(6)),
        ] {
            assert_eq!(code_of_text(message), Some(code), "{message}");
        }
    }

    #[test]
    fn statement_timeouts_are_their_own_class_and_a_cancel_request_is_not_one() {
        for message in [
            "canceling statement due to statement timeout",
            "Query execution was interrupted (max_statement_time exceeded)",
            "Query execution was interrupted, maximum statement execution time exceeded",
        ] {
            assert_eq!(
                classify(&database(Kind::Unknown, message)),
                TimedOut,
                "{message}"
            );
        }
        assert_eq!(mysql_class(1969), TimedOut);
        assert_eq!(mysql_class(3024), TimedOut);
        assert_eq!(
            classify(&database(
                Kind::Unknown,
                "canceling statement due to user request"
            )),
            Other,
            "57014 from a cancel request is not a timeout"
        );
        let timeout = crate::Error::Database(database(
            Kind::Unknown,
            "canceling statement due to statement timeout",
        ));
        assert!(timeout.is_timeout() && !timeout.is_conflict());
    }

    #[test]
    fn texts_that_only_resemble_a_code_name_none() {
        for message in [
            // A value or a name that quotes a code's text is not that code.
            "value \"deadlock detected\" is too long for type character varying(5)",
            "Duplicate entry 'database is locked' for key 'PRIMARY'",
            "deadlock detected in the application",
            "could not obtain lock on ",
            "The table '' is full and more",
            "Data too long for column 'bio' at row 1",
            "duplicate key value violates unique constraint \"author_pkey\"",
            "",
        ] {
            assert_eq!(code_of_text(message), None, "{message}");
        }
    }

    fn database(kind: Kind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn kinds_diesel_maps_decide_before_the_text() {
        assert_eq!(
            classify(&database(
                Kind::SerializationFailure,
                "could not serialize access"
            )),
            Conflict
        );
        assert_eq!(
            classify(&database(
                Kind::ReadOnlyTransaction,
                "cannot execute INSERT in a read-only transaction"
            )),
            Unavailable
        );
        assert_eq!(
            classify(&database(
                Kind::ClosedConnection,
                "server closed the connection"
            )),
            Unavailable
        );
        assert_eq!(
            classify(&database(
                Kind::UnableToSendCommand,
                "no connection to the server"
            )),
            Unavailable
        );
        // A constraint violation whose text happens to be a known one is still a violation.
        assert_eq!(
            classify(&database(Kind::UniqueViolation, "database is locked")),
            Other
        );
        assert_eq!(classify(&DieselError::NotFound), Other);
    }

    #[test]
    fn a_failed_commit_and_rollback_is_the_worse_of_the_two() {
        let error = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(database(Kind::ClosedConnection, "gone")),
            commit_error: Box::new(database(Kind::SerializationFailure, "conflict")),
        };
        assert_eq!(classify(&error), Unavailable);
        let error = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(DieselError::BrokenTransactionManager),
            commit_error: Box::new(database(Kind::SerializationFailure, "conflict")),
        };
        assert_eq!(classify(&error), Conflict);
    }

    /// The texts above are the linked SQLite's own (`sqlite3_errstr`) for their codes.
    #[cfg(feature = "sqlite")]
    #[test]
    #[allow(unsafe_code)]
    fn sqlite_texts_are_the_library_texts() {
        use libsqlite3_sys as ffi;
        for (constant, code) in [
            (ffi::SQLITE_BUSY, sqlite::BUSY),
            (ffi::SQLITE_LOCKED, sqlite::LOCKED),
            (ffi::SQLITE_READONLY, sqlite::READONLY),
            (ffi::SQLITE_IOERR, sqlite::IOERR),
            (ffi::SQLITE_FULL, sqlite::FULL),
            (ffi::SQLITE_CANTOPEN, sqlite::CANTOPEN),
        ] {
            assert_eq!(constant, code);
            // SAFETY: `sqlite3_errstr` returns a pointer to a static, NUL-terminated string.
            let text = unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errstr(code)) };
            let text = text.to_str().unwrap();
            assert_eq!(code_of_text(text), Some(DbCode::Sqlite(code)), "{text}");
        }
    }

    /// Real SQLite errors, through Diesel, classified by [`classify_on`].
    #[cfg(feature = "sqlite")]
    mod sqlite_errors {
        use super::*;
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, RunQueryDsl, SqliteConnection};

        struct File(std::path::PathBuf);

        impl File {
            fn new() -> File {
                File(
                    std::env::temp_dir()
                        .join(format!("db-errors-{}.sqlite3", uuid::Uuid::new_v4())),
                )
            }
            fn connect(&self) -> SqliteConnection {
                let mut conn = SqliteConnection::establish(&self.0.to_string_lossy()).unwrap();
                conn.batch_execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
                    .unwrap();
                conn
            }
        }

        impl Drop for File {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }

        #[test]
        fn a_write_behind_another_writer_is_a_conflict() {
            let file = File::new();
            let mut holder = file.connect();
            let mut writer = file.connect();
            holder.batch_execute("BEGIN IMMEDIATE").unwrap();
            writer.batch_execute("PRAGMA busy_timeout = 0").unwrap();
            let error = diesel::sql_query("INSERT INTO t (v) VALUES ('x')")
                .execute(&mut writer)
                .unwrap_err();
            assert_eq!(classify_on(&mut writer, &error), Conflict, "{error}");
        }

        #[test]
        fn a_write_to_a_read_only_database_is_unavailable() {
            let file = File::new();
            let mut conn = file.connect();
            conn.batch_execute("PRAGMA query_only = ON").unwrap();
            let error = diesel::sql_query("INSERT INTO t (v) VALUES ('x')")
                .execute(&mut conn)
                .unwrap_err();
            assert_eq!(classify_on(&mut conn, &error), Unavailable, "{error}");
        }

        #[test]
        fn a_write_to_a_full_database_is_unavailable() {
            let file = File::new();
            let mut conn = file.connect();
            // Below the file's size, SQLite takes its size as the limit.
            conn.batch_execute("PRAGMA max_page_count = 1").unwrap();
            let error = diesel::sql_query("INSERT INTO t (v) VALUES (zeroblob(100000))")
                .execute(&mut conn)
                .unwrap_err();
            assert_eq!(classify_on(&mut conn, &error), Unavailable, "{error}");
        }

        #[test]
        fn a_constraint_violation_is_neither() {
            let file = File::new();
            let mut conn = file.connect();
            conn.batch_execute("INSERT INTO t (id, v) VALUES (1, 'x')")
                .unwrap();
            let error = diesel::sql_query("INSERT INTO t (id, v) VALUES (1, 'y')")
                .execute(&mut conn)
                .unwrap_err();
            assert_eq!(classify_on(&mut conn, &error), Other, "{error}");
        }
    }
}
