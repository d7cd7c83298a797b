//! The error type of the Diesel side: database, transport and user hooks.

use diesel::result::{ConnectionError, Error as DieselError};

use crate::connection::CqrsConnection;
use crate::db_errors::{self, ErrorClass};

/// What went wrong in a master operation, the outbox relay or a replica apply.
///
/// Every variant says which side failed, so a caller can tell "retry the request" from "fix the
/// code": [`Error::is_retryable`] answers it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused or failed a statement. The transaction was rolled back: nothing was
    /// written and nothing will be published.
    #[error("database error: {0}")]
    Database(#[from] DieselError),

    /// A database connection could not be opened. Check the database URL and that the server
    /// is up; the relay retries by itself.
    #[error("could not connect to the database: {0}")]
    Connect(#[from] ConnectionError),

    /// The broker side failed (see [`cqrs_core::Error`] for what to do).
    #[error(transparent)]
    Transport(#[from] cqrs_core::Error),

    /// A user hook ([`MasterHooks`](crate::MasterHooks)) returned an error; the transaction was
    /// rolled back.
    #[error("the {hook} hook of `{cqrs_id}` failed: {reason}")]
    Hook {
        /// The model's `cqrs_id`.
        cqrs_id: &'static str,
        /// Which hook failed (`serialize`, `meta`, ...).
        hook: &'static str,
        /// What the hook reported.
        reason: String,
    },

    /// The row to publish does not exist (for example `cqrs_sync` of a deleted row).
    #[error("no `{cqrs_id}` row with primary key {pk}")]
    NotFound {
        /// The model's `cqrs_id`.
        cqrs_id: &'static str,
        /// The primary key, as it appears on the wire.
        pk: String,
    },

    /// A field holds a value the wire cannot carry (a NaN or an infinity in a float field):
    /// nothing was written. Store a finite value (or NULL in a nullable column), or leave the
    /// field out of the payload with `#[cqrs(skip)]`.
    #[error("`{cqrs_id}` field `{field}` cannot be replicated: {reason}")]
    UnrepresentableValue {
        /// The model's `cqrs_id`.
        cqrs_id: &'static str,
        /// The field, under its wire name.
        field: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// A row inserted by [`insert_with_and_publish`](crate::MasterModel::insert_with_and_publish)
    /// came back with another `cqrs_updated` than the time given to the insert: nothing was
    /// written. Set `cqrs_updated` to that time in the insert (replicas order one row's
    /// messages by it), in a column that keeps microseconds.
    #[error(
        "a `{cqrs_id}` row was inserted with cqrs_updated {found}, not the time given to the \
         insert ({expected}): set `cqrs_updated` to that time, in a column that keeps \
         microseconds"
    )]
    Unstamped {
        /// The model's `cqrs_id`.
        cqrs_id: &'static str,
        /// The stored `cqrs_updated`, as on the wire.
        found: String,
        /// The time given to the insert, as on the wire.
        expected: String,
    },

    /// An earlier write on this connection was abandoned inside its transaction (its future
    /// was dropped, for example by a timeout or a client that went away, or it panicked), and
    /// the connection still holds that transaction open. Nothing of it was committed, and this
    /// write refused to run inside it, where it would never be committed either. Drop the
    /// connection (a pool discards such connections by itself) or roll the transaction back
    /// before writing on it again.
    ///
    /// The library knows the connection by its address. A connection dropped after such a
    /// write leaves the mark behind until a write finds no transaction open at that address;
    /// if a new connection at the same address runs this library's write inside a transaction
    /// of its own before that, the write is refused too (a refusal, never a lost write).
    #[error(
        "an earlier write on this connection was abandoned inside its transaction; drop the \
         connection or roll that transaction back"
    )]
    AbandonedTransaction,

    /// The connection's transaction state is unknown: a `BEGIN`, `COMMIT` or `ROLLBACK` on it
    /// was cancelled half way, or a rollback failed. Drop the connection and open a new one.
    #[error("the connection's transaction state is unknown; drop it and open a new one")]
    BrokenConnection,

    /// A replica statement ran longer than `CQRS_QUERY_TIMEOUT` and the database cancelled it
    /// (PostgreSQL `statement_timeout`, MariaDB `max_statement_time`, MySQL
    /// `max_execution_time`). Nothing of its batch was kept; the consumer tries the batch again
    /// after the retry delay without spending any message's retries. Raise the timeout if such
    /// statements are expected, or look for what held them (a lock, a missing index).
    #[error(
        "a replica statement ran longer than CQRS_QUERY_TIMEOUT ({} ms) and was cancelled: {source}",
        timeout.as_millis()
    )]
    QueryTimeout {
        /// The configured timeout.
        timeout: std::time::Duration,
        /// The statement that timed out, with its binds, when `CQRS_LOG_TIMED_OUT_QUERIES` is
        /// on (the worker records it then); `None` otherwise.
        statement: Option<String>,
        /// The database's error.
        #[source]
        source: DieselError,
    },

    /// A blocking database task panicked or was cancelled; this is a bug, please report it.
    #[error("a database task did not finish: {0}")]
    Task(String),
}

impl Error {
    /// True when the same call may succeed later without any change: the database is
    /// unavailable ([`is_unavailable`](Self::is_unavailable)), the transaction lost a conflict
    /// with a concurrent one ([`is_conflict`](Self::is_conflict)), or a retryable transport
    /// error.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database(_) | Error::Connect(_) => self.is_conflict() || self.is_unavailable(),
            Error::Transport(error) => error.is_retryable(),
            Error::QueryTimeout { .. } => true,
            Error::Hook { .. }
            | Error::NotFound { .. }
            | Error::UnrepresentableValue { .. }
            | Error::Unstamped { .. }
            | Error::AbandonedTransaction
            | Error::BrokenConnection
            | Error::Task(_) => false,
        }
    }

    /// True when the database refused the statement because of a concurrent transaction: a
    /// serialization failure (PostgreSQL 40001), a deadlock (PostgreSQL 40P01, MySQL/MariaDB
    /// 1213), a lock wait timeout (PostgreSQL 55P03, MySQL/MariaDB 1205), or SQLite's busy or
    /// locked database (`SQLITE_BUSY` after its busy timeout, `SQLITE_LOCKED`). The
    /// transaction was (or must be) rolled back; running it again may succeed at once.
    ///
    /// Decided from the error's code where Diesel keeps it, otherwise from the database's
    /// fixed text for that code (see the table in `docs/DESIGN.md`, "Backends").
    pub fn is_conflict(&self) -> bool {
        self.class() == ErrorClass::Conflict
    }

    /// True when the database cannot take the write now, whatever is written: the connection
    /// could not be opened or was lost, the database or the transaction is read-only (a
    /// PostgreSQL standby or `default_transaction_read_only`, MySQL/MariaDB `read_only`), the
    /// disk or a table is full, the server has too many connections or is shutting down, or a
    /// SQLite file cannot be opened, read or written. Nothing was written. Reconnect (a new
    /// connection reaches the writable server after a failover) and try again later; the
    /// replica worker does so by itself, holding its messages unacknowledged.
    ///
    /// Decided from the error alone, like [`is_conflict`](Self::is_conflict). A replica
    /// worker also asks its connection: on MySQL/MariaDB for the error number, and on every
    /// backend whether the connection still answers.
    pub fn is_unavailable(&self) -> bool {
        self.class() == ErrorClass::Unavailable
    }

    /// True when a statement ran longer than the session's statement timeout
    /// (`CQRS_QUERY_TIMEOUT`) and the database cancelled it: [`Error::QueryTimeout`], or a
    /// database error with the timeout's code (PostgreSQL 57014 for `statement_timeout`,
    /// MariaDB 1969, MySQL 3024).
    pub fn is_timeout(&self) -> bool {
        self.class() == ErrorClass::TimedOut
    }

    /// What this error means for whoever would run the statement again.
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            Error::QueryTimeout { .. } => ErrorClass::TimedOut,
            Error::Database(error) => db_errors::classify(error),
            Error::Connect(_) => ErrorClass::Unavailable,
            _ => ErrorClass::Other,
        }
    }

    /// Like [`class`](Self::class), for an error just returned by a statement on `conn`: the
    /// connection is asked too (see [`db_errors::classify_on`]).
    pub(crate) fn class_on<C: CqrsConnection>(&self, conn: &mut C) -> ErrorClass {
        match self {
            Error::Database(error) => db_errors::classify_on(conn, error),
            _ => self.class(),
        }
    }
}

/// [`Error::is_conflict`] for a Diesel error.
pub(crate) fn is_conflict(error: &DieselError) -> bool {
    db_errors::classify(error) == ErrorClass::Conflict
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::DatabaseErrorKind as Kind;

    fn unknown(message: &str) -> Error {
        Error::Database(DieselError::DatabaseError(
            Kind::Unknown,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn deadlocks_and_lock_timeouts_are_conflicts() {
        for message in [
            "deadlock detected",
            "Deadlock found when trying to get lock; try restarting transaction",
            "Lock wait timeout exceeded; try restarting transaction",
            "database is locked",
        ] {
            assert!(unknown(message).is_conflict(), "{message}");
            assert!(unknown(message).is_retryable(), "{message}");
        }
        let serialization = Error::Database(DieselError::DatabaseError(
            Kind::SerializationFailure,
            Box::new("could not serialize access".to_owned()),
        ));
        assert!(serialization.is_conflict());
    }

    #[test]
    fn read_only_and_lost_databases_are_unavailable() {
        for message in [
            "The MariaDB server is running with the --read-only option so it cannot execute \
             this statement",
            "Server has gone away",
            "attempt to write a readonly database",
            "terminating connection due to administrator command",
        ] {
            assert!(unknown(message).is_unavailable(), "{message}");
            assert!(unknown(message).is_retryable(), "{message}");
            assert!(!unknown(message).is_conflict(), "{message}");
        }
        let read_only = Error::Database(DieselError::DatabaseError(
            Kind::ReadOnlyTransaction,
            Box::new("cannot execute INSERT in a read-only transaction".to_owned()),
        ));
        assert!(read_only.is_unavailable());
        let refused = Error::Connect(ConnectionError::BadConnection("refused".to_owned()));
        assert!(refused.is_unavailable());
        assert!(refused.is_retryable());
        assert!(!unknown("deadlock detected").is_unavailable());
    }

    #[test]
    fn bad_values_and_duplicates_are_no_conflicts() {
        for message in [
            "Data too long for column 'bio' at row 1",
            "duplicate key value violates unique constraint",
        ] {
            assert!(!unknown(message).is_conflict(), "{message}");
            assert!(!unknown(message).is_unavailable(), "{message}");
            assert!(!unknown(message).is_retryable(), "{message}");
        }
    }
}
