//! The error type of the Diesel side: database, transport and user hooks.

use diesel::result::{ConnectionError, Error as DieselError};

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

    /// A blocking database task panicked or was cancelled; this is a bug, please report it.
    #[error("a database task did not finish: {0}")]
    Task(String),
}

impl Error {
    /// True when the same call may succeed later without any change: a lost connection, a
    /// conflict with a concurrent transaction ([`is_conflict`](Self::is_conflict)), or a
    /// retryable transport error.
    pub fn is_retryable(&self) -> bool {
        use diesel::result::DatabaseErrorKind as Kind;
        match self {
            _ if self.is_conflict() => true,
            Error::Database(DieselError::DatabaseError(kind, _)) => {
                matches!(kind, Kind::ClosedConnection | Kind::UnableToSendCommand)
            }
            Error::Database(_) => false,
            Error::Connect(_) => true,
            Error::Transport(error) => error.is_retryable(),
            Error::Hook { .. }
            | Error::NotFound { .. }
            | Error::UnrepresentableValue { .. }
            | Error::Unstamped { .. }
            | Error::Task(_) => false,
        }
    }

    /// True when the database refused the statement because of a concurrent transaction: a
    /// serialization failure, a deadlock (PostgreSQL's `deadlock detected`, MySQL/MariaDB's
    /// 1213), a lock wait timeout, or SQLite's `database is locked` after its busy timeout.
    /// The transaction was (or must be) rolled back; running it again may succeed.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Database(error) => is_conflict(error),
            _ => false,
        }
    }
}

/// [`Error::is_conflict`] for a Diesel error.
pub(crate) fn is_conflict(error: &DieselError) -> bool {
    use diesel::result::DatabaseErrorKind as Kind;
    match error {
        DieselError::DatabaseError(Kind::SerializationFailure, _) => true,
        DieselError::DatabaseError(Kind::Unknown, info) => {
            let message = info.message().to_ascii_lowercase();
            [
                "deadlock",
                "lock wait timeout",
                "lock timeout",
                "database is locked",
                "database table is locked",
            ]
            .iter()
            .any(|needle| message.contains(needle))
        }
        _ => false,
    }
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
    fn bad_values_and_duplicates_are_no_conflicts() {
        for message in [
            "Data too long for column 'bio' at row 1",
            "duplicate key value violates unique constraint",
        ] {
            assert!(!unknown(message).is_conflict(), "{message}");
            assert!(!unknown(message).is_retryable(), "{message}");
        }
    }
}
