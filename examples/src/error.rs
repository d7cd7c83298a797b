//! The errors of the example services: [`ApiError`] for a request (mapped to an HTTP status),
//! [`ServiceError`] for starting and stopping a service.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use diesel::result::Error as DieselError;
use serde_json::json;

/// Why a request failed. Each variant has its HTTP status ([`ApiError::status`]); the response
/// body is `{"error": "<message>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a path or query parameter of the wrong type
    /// (400, or the status axum chose for the rejection, such as 415 or 422).
    #[error("{message}")]
    BadRequest {
        /// The status to answer with.
        status: StatusCode,
        /// What is wrong with the request.
        message: String,
    },

    /// The request is well-formed but its values are not acceptable (422).
    #[error("{0}")]
    Invalid(String),

    /// No row with this id (404).
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for (`account`, `payment`).
        what: &'static str,
        /// The id asked for.
        id: i64,
    },

    /// No database connection could be had from the pool (503).
    #[error("the database is unavailable: {0}")]
    Unavailable(#[from] crate::db::PoolError),

    /// The database refused or failed a statement (500).
    #[error("database error: {0}")]
    Database(#[from] DieselError),

    /// Writing a row with its replication message failed (500, or 503 when retrying may
    /// help).
    #[error(transparent)]
    Cqrs(#[from] cqrs_diesel::Error),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { status, .. } => *status,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Cqrs(error) if error.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Cqrs(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, %status, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                ApiError::BadRequest { status: rejection.status(), message: rejection.body_text() }
            }
        }
    )*};
}

from_rejection!(JsonRejection, PathRejection, QueryRejection);

/// Why a service could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A setting (an environment variable) has a value the service cannot use.
    #[error("invalid setting `{setting}`: {reason}")]
    Setting {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The database could not be reached through the connection pool.
    #[error("cannot connect to the database: {0}")]
    Pool(#[from] crate::db::PoolError),

    /// The connection pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    PoolBuild(#[from] deadpool::managed::BuildError),

    /// A connection of the service's own (for creating the tables) could not be opened.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::result::ConnectionError),

    /// Creating the service's tables failed.
    #[error("cannot create the tables: {0}")]
    Schema(#[from] DieselError),

    /// The CQRS layer failed (configuration, migrations, broker).
    #[error(transparent)]
    Cqrs(#[from] cqrs_diesel::Error),

    /// The HTTP listener failed.
    #[error("HTTP server error: {0}")]
    Io(#[from] std::io::Error),

    /// A start-up or shut-down task panicked or was cancelled.
    #[error("a service task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<cqrs_diesel::TransportError> for ServiceError {
    fn from(error: cqrs_diesel::TransportError) -> Self {
        ServiceError::Cqrs(error.into())
    }
}
