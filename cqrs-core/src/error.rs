//! The one error type of `cqrs-core`.

use std::fmt;

/// A specialized `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the wire layer, the configuration and the transports.
///
/// Each variant says whether trying again can help: see [`Error::is_retryable`]. That is the
/// question the consumer runtime asks to decide between a retry and the dead-letter queue, and
/// the outbox relay asks to decide between waiting and giving up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message body is not valid UTF-8 JSON.
    #[error(
        "message body is not valid JSON ({source}); it cannot be applied and belongs in the dead-letter queue"
    )]
    NotJson {
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// The message body is JSON, but not a JSON object.
    #[error("message body must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type that was found instead (`array`, `string`, ...).
        found: JsonType,
    },

    /// A key the wire protocol requires is absent from the message body.
    #[error("message body misses the required key `{key}`")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },

    /// A key holds a JSON value of the wrong type.
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        /// The key (or `instance_data.<field>` path) whose value is wrong.
        key: String,
        /// What the protocol expects there, in words.
        expected: &'static str,
        /// The JSON type that was found.
        found: JsonType,
    },

    /// A key holds a value of the right JSON type that cannot be decoded: an unknown signal
    /// type, a malformed date, an out-of-range number.
    #[error("`{key}` holds an invalid value: {reason}")]
    InvalidValue {
        /// The key (or `instance_data.<field>` path) whose value is wrong.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The consumer was asked to consume models it does not handle
    /// ([`ConsumerRuntime::only_cqrs_ids`](crate::ConsumerRuntime::only_cqrs_ids), `cqrs consume
    /// --cqrs-id`).
    #[error(
        "cannot consume unknown cqrs_id(s) {}: this service registers {}; fix the --cqrs-id list or register the model",
        quoted(unknown),
        if registered.is_empty() { "no replica model".to_owned() } else { quoted(registered) }
    )]
    UnknownCqrsIds {
        /// The `cqrs_id`s asked for that no registered model has, sorted.
        unknown: Vec<String>,
        /// The `cqrs_id`s the applier handles, sorted.
        registered: Vec<String>,
    },

    /// A configuration setting is missing or invalid.
    #[error("configuration setting `{setting}` is invalid: {reason}")]
    Config {
        /// The setting, by its environment variable name (`CQRS_AMQP_URL`, ...).
        setting: &'static str,
        /// What is wrong and what is accepted. Never contains a password.
        reason: String,
    },

    /// No broker of the configured list accepted a connection.
    #[error(
        "cannot connect to RabbitMQ at {url}: {reason}; check that the broker runs and `CQRS_AMQP_URL` is right; the operation can be retried"
    )]
    Connect {
        /// The last URL tried, with its password masked.
        url: String,
        /// Why the last attempt failed.
        reason: String,
    },

    /// The broker refused the credentials or the virtual host.
    #[error(
        "RabbitMQ at {url} refused the login: {reason}; check user, password and vhost in `CQRS_AMQP_URL`"
    )]
    AccessRefused {
        /// The URL, with its password masked.
        url: String,
        /// The broker's reason.
        reason: String,
    },

    /// The connection or channel was lost while an operation was in flight. Whether the
    /// operation took effect is unknown: publish again (at least once) or wait for redelivery.
    #[error(
        "connection to RabbitMQ lost during {operation}: {reason}; the transport reconnects by itself, retry the operation"
    )]
    ConnectionLost {
        /// The AMQP operation (`basic.publish`, `basic.ack`, ...).
        operation: &'static str,
        /// What the client library reported.
        reason: String,
    },

    /// The broker refused an operation on a channel: a queue declared earlier with other
    /// arguments, a missing exchange, a forbidden resource.
    #[error("RabbitMQ refused {operation}: {reason}")]
    Refused {
        /// The AMQP operation (`queue.declare`, ...).
        operation: &'static str,
        /// The broker's reply.
        reason: String,
    },

    /// A mandatory message matched no binding and the broker returned it.
    #[error(
        "message to exchange `{exchange}` with routing key `{routing_key}` is unroutable: no queue is bound to that key; start the replica (or declare its queue and bindings) first"
    )]
    Unroutable {
        /// The exchange the message was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
    },

    /// The broker negatively confirmed a publish (it could not take responsibility for it).
    #[error(
        "RabbitMQ did not accept the message to `{exchange}` with routing key `{routing_key}` (nack); publish it again later"
    )]
    Nacked {
        /// The exchange the message was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
    },

    /// The broker neither confirmed nor refused a publish in time (a broker blocking its
    /// publishers for a resource alarm, a connection stalled without being lost). Whether the
    /// message was taken is unknown: publish it again (at least once).
    #[error(
        "the broker did not confirm a publish within {waited:?}; it may be blocking publishers (a memory or disk alarm) or unreachable: publish again later"
    )]
    ConfirmTimeout {
        /// How long the publisher waited.
        waited: std::time::Duration,
    },

    /// The transport was closed by its owner; no further operation is possible.
    #[error("the transport is closed")]
    Closed,
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    ///
    /// Malformed input and invalid configuration never will; broker outages and lost
    /// connections may. The match names every variant on purpose: a new variant must decide.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotJson { .. } => false,
            Error::NotAnObject { .. } => false,
            Error::MissingKey { .. } => false,
            Error::WrongType { .. } => false,
            Error::InvalidValue { .. } => false,
            Error::Config { .. } => false,
            Error::UnknownCqrsIds { .. } => false,
            Error::Connect { .. } => true,
            Error::AccessRefused { .. } => false,
            Error::ConnectionLost { .. } => true,
            Error::Refused { .. } => false,
            Error::Unroutable { .. } => false,
            Error::Nacked { .. } => true,
            Error::ConfirmTimeout { .. } => true,
            Error::Closed => false,
        }
    }

    /// Whether this error says the message body itself is malformed (so the message belongs in
    /// the dead-letter queue, whatever the retry policy).
    pub fn is_malformed_input(&self) -> bool {
        matches!(
            self,
            Error::NotJson { .. }
                | Error::NotAnObject { .. }
                | Error::MissingKey { .. }
                | Error::WrongType { .. }
                | Error::InvalidValue { .. }
        )
    }
}

/// The type of a JSON value, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `null`
    Null,
    /// `true` or `false`
    Bool,
    /// a number
    Number,
    /// a string
    String,
    /// an array
    Array,
    /// an object
    Object,
}

impl JsonType {
    /// The type of `value`.
    pub fn of(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => JsonType::Null,
            serde_json::Value::Bool(_) => JsonType::Bool,
            serde_json::Value::Number(_) => JsonType::Number,
            serde_json::Value::String(_) => JsonType::String,
            serde_json::Value::Array(_) => JsonType::Array,
            serde_json::Value::Object(_) => JsonType::Object,
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonType::Null => "null",
            JsonType::Bool => "a boolean",
            JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
        })
    }
}

/// `a`, `b` as `` `a`, `b` ``.
fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
