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

    /// A blocking database task panicked or was cancelled; this is a bug, please report it.
    #[error("a database task did not finish: {0}")]
    Task(String),
}

impl Error {
    /// True when the same call may succeed later without any change: a lost connection, a
    /// serialization failure or deadlock, or a retryable transport error.
    pub fn is_retryable(&self) -> bool {
        use diesel::result::DatabaseErrorKind as Kind;
        match self {
            Error::Database(DieselError::DatabaseError(kind, _)) => matches!(
                kind,
                Kind::SerializationFailure | Kind::ClosedConnection | Kind::UnableToSendCommand
            ),
            Error::Database(DieselError::BrokenTransactionManager) => false,
            Error::Database(_) => false,
            Error::Connect(_) => true,
            Error::Transport(error) => error.is_retryable(),
            Error::Hook { .. }
            | Error::NotFound { .. }
            | Error::UnrepresentableValue { .. }
            | Error::Task(_) => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
