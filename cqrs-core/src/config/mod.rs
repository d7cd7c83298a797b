//! The configuration: broker URLs, names, TTLs, retry and reconnection policy.
//!
//! Built in code with [`Config::builder`] or read from `CQRS_*` environment variables with
//! [`Config::from_env`]; both end in the same validation ([`ConfigBuilder::build`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{AmqpUrl, Clock, Error, Result};

mod builder;
mod env;
#[cfg(test)]
mod tests;
mod tls;

pub use builder::ConfigBuilder;
pub use tls::TlsSettings;

// Environment variable names (also the `setting` of every configuration error).
const AMQP_URL: &str = "CQRS_AMQP_URL";
const EXCHANGE: &str = "CQRS_EXCHANGE";
const QUEUE: &str = "CQRS_QUEUE";
const DEAD_LETTER_QUEUE: &str = "CQRS_DEAD_LETTER_QUEUE";
const QUEUE_TYPE: &str = "CQRS_QUEUE_TYPE";
const MESSAGE_TTL: &str = "CQRS_MESSAGE_TTL";
const DEAD_MESSAGE_TTL: &str = "CQRS_DEAD_MESSAGE_TTL";
const DELAY_QUEUE_MAX_SIZE: &str = "CQRS_DELAY_QUEUE_MAX_SIZE";
const PREFETCH: &str = "CQRS_PREFETCH";
const MAX_RETRIES: &str = "CQRS_MAX_RETRIES";
const RETRY_DELAY: &str = "CQRS_RETRY_DELAY";
const RETRY_EXPONENTIAL: &str = "CQRS_RETRY_EXPONENTIAL";
const RETRY_MAX_DELAY: &str = "CQRS_RETRY_MAX_DELAY";
const PUBLISH_CONFIRM_WINDOW: &str = "CQRS_PUBLISH_CONFIRM_WINDOW";
const BATCH_SIZE: &str = "CQRS_BATCH_SIZE";
const BATCH_WAIT: &str = "CQRS_BATCH_WAIT";
const MAX_BODY_SIZE: &str = "CQRS_MAX_BODY_SIZE";
const WORKERS: &str = "CQRS_WORKERS";
const CONNECT_TIMEOUT: &str = "CQRS_CONNECT_TIMEOUT";
const RECONNECT_MIN_DELAY: &str = "CQRS_RECONNECT_MIN_DELAY";
const RECONNECT_MAX_DELAY: &str = "CQRS_RECONNECT_MAX_DELAY";
const CONNECTION_NAME: &str = "CQRS_CONNECTION_NAME";
const TLS_CA_FILE: &str = "CQRS_AMQP_TLS_CA_FILE";
const TLS_CERT_FILE: &str = "CQRS_AMQP_TLS_CERT_FILE";
const TLS_KEY_FILE: &str = "CQRS_AMQP_TLS_KEY_FILE";
const QUERY_TIMEOUT: &str = "CQRS_QUERY_TIMEOUT";
const LOG_TIMED_OUT_QUERIES: &str = "CQRS_LOG_TIMED_OUT_QUERIES";

/// How durations are written in environment variables, quoted in error messages.
const DURATION_FORMS: &str = "a whole number of seconds (`30`) or a whole number followed by \
                              `ms`, `s`, `m` or `h` (`500ms`, `2s`, `5m`, `1h`)";

/// The kind of queue declared for this service's queue and dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueType {
    /// A classic queue, declared without an `x-queue-type` argument: the same declaration as
    /// django-cqrs's, so a queue already declared by a Python service is accepted as is.
    #[default]
    Classic,
    /// A quorum queue (`x-queue-type: quorum`): replicated across the cluster's nodes. A queue
    /// cannot change type once declared: delete it first when switching.
    Quorum,
}

impl QueueType {
    /// The name as written in `CQRS_QUEUE_TYPE` and in `x-queue-type`: `classic` or `quorum`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueType {
    type Err = Error;

    /// Parses `classic` or `quorum` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(invalid(QUEUE_TYPE, s, "`classic` or `quorum`")),
        }
    }
}

/// The validated configuration of the replication layer.
///
/// Build it with [`Config::builder`] or read it from the environment with
/// [`Config::from_env`] (or any other source with [`Config::from_lookup`]). Every setting has
/// an environment variable, and a default that is django-cqrs's where it has one:
///
/// | variable | default | meaning |
/// | --- | --- | --- |
/// | `CQRS_AMQP_URL` | `amqp://guest:guest@localhost:5672/` | broker URL, or a comma-separated list of a cluster's nodes, tried in turn |
/// | `CQRS_EXCHANGE` | `cqrs` | the topic exchange |
/// | `CQRS_QUEUE` | none | this replica service's queue (a master-only service has none) |
/// | `CQRS_DEAD_LETTER_QUEUE` | `dead_letter_<queue>` | the dead-letter queue |
/// | `CQRS_QUEUE_TYPE` | `classic` | `classic` or `quorum` |
/// | `CQRS_MESSAGE_TTL` | `86400` (s) | lifetime of published messages; `none` = never expire |
/// | `CQRS_DEAD_MESSAGE_TTL` | `864000` (s) | lifetime of dead letters; `none` = never expire |
/// | `CQRS_DELAY_QUEUE_MAX_SIZE` | `1000` | capacity of the in-process retry delay queue |
/// | `CQRS_PREFETCH` | delay queue size + 1 (`1001`) | consumer prefetch, 1..=65535 |
/// | `CQRS_MAX_RETRIES` | `30` | retries before dead-lettering; `none` = unlimited |
/// | `CQRS_RETRY_DELAY` | `2` (s) | delay before a retry (the first one, when exponential) |
/// | `CQRS_RETRY_EXPONENTIAL` | `false` | exponential backoff with jitter instead of a constant delay |
/// | `CQRS_RETRY_MAX_DELAY` | `300` (s) | cap of the exponential retry delay |
/// | `CQRS_PUBLISH_CONFIRM_WINDOW` | `1000` | publishes in flight awaiting broker confirms |
/// | `CQRS_BATCH_SIZE` | `100` | messages a replica worker applies in one batch (one transaction) at most |
/// | `CQRS_BATCH_WAIT` | `5ms` | how long a worker waits for more messages before applying a partial batch |
/// | `CQRS_WORKERS` | `1` | replica workers applying batches concurrently |
/// | `CQRS_MAX_BODY_SIZE` | `1048576` (bytes, 1 MiB) | larger message bodies are dead-lettered unread |
/// | `CQRS_CONNECT_TIMEOUT` | `10` (s) | how long an operation waits for a connection |
/// | `CQRS_RECONNECT_MIN_DELAY` | `100ms` | first delay between reconnection attempts |
/// | `CQRS_RECONNECT_MAX_DELAY` | `10` (s) | longest delay between reconnection attempts |
/// | `CQRS_CONNECTION_NAME` | `cqrs-diesel` | connection name shown by the broker, followed by the role: `cqrs-diesel (consumer)` |
/// | `CQRS_AMQP_TLS_CA_FILE` | none | PEM file of CA certificates trusted for `amqps://`, besides the system's |
/// | `CQRS_AMQP_TLS_CERT_FILE`, `CQRS_AMQP_TLS_KEY_FILE` | none | client certificate and PKCS#8 key (PEM) for mutual TLS |
/// | `CQRS_QUERY_TIMEOUT` | `0` (off) | statement timeout of the replica worker's database sessions; a bare number is **milliseconds**, as in django-cqrs (`500`, or `500ms`, `2s`); `0` = none |
/// | `CQRS_LOG_TIMED_OUT_QUERIES` | `false` | log the SQL of a replica statement that timed out (WARN), not only that one did |
///
/// Formats in environment variables: durations are a whole number of seconds (`30`) or a whole
/// number with a unit `ms`, `s`, `m` or `h` (`500ms`, `2s`, `5m`, `1h`); fractions (`1.5s`)
/// are rejected, write `1500ms`. Booleans are `true`/`false`, `1`/`0` or `yes`/`no`, in any
/// case. An unset, empty or blank variable means the default.
///
/// [`Debug`] never shows a password: URLs print as `amqp://user:***@host:5672/%2f`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    amqp_urls: Vec<AmqpUrl>,
    exchange: String,
    queue: Option<String>,
    dead_letter_queue: Option<String>,
    queue_type: QueueType,
    message_ttl: Option<Duration>,
    dead_message_ttl: Option<Duration>,
    delay_queue_max_size: usize,
    prefetch: u16,
    max_retries: Option<u32>,
    retry_delay: Duration,
    retry_exponential: bool,
    retry_max_delay: Duration,
    publish_confirm_window: usize,
    batch_size: usize,
    batch_wait: Duration,
    max_body_size: usize,
    workers: usize,
    connect_timeout: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    connection_name: String,
    tls: TlsSettings,
    query_timeout: Option<Duration>,
    log_timed_out_queries: bool,
    clock: Clock,
}

impl Config {
    /// A builder with every setting at its default; [`ConfigBuilder::build`] validates.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cqrs_core::{Config, QueueType};
    ///
    /// let config = Config::builder()
    ///     .amqp_urls([
    ///         "amqp://app:secret@rabbit-1:5672/%2f",
    ///         "amqp://app:secret@rabbit-2:5672/%2f",
    ///     ])
    ///     .queue("payments_replica")
    ///     .queue_type(QueueType::Quorum)
    ///     .retry_delay(Duration::from_secs(5))
    ///     .build()?;
    /// assert_eq!(config.amqp_urls().len(), 2);
    /// assert_eq!(config.dead_letter_queue(), Some("dead_letter_payments_replica"));
    /// assert_eq!(config.prefetch(), 1001);
    /// assert!(!format!("{config:?}").contains("secret"));
    /// # Ok::<(), cqrs_core::Error>(())
    /// ```
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The brokers to connect to, tried in turn (at least one). Their `Display` and `Debug`
    /// mask the password.
    pub fn amqp_urls(&self) -> &[AmqpUrl] {
        &self.amqp_urls
    }

    /// The topic exchange (`cqrs` by default).
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// This replica service's queue; `None` for a master-only service.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The dead-letter queue: the configured one, or `dead_letter_<queue>`; `None` when there
    /// is no queue.
    pub fn dead_letter_queue(&self) -> Option<&str> {
        self.dead_letter_queue.as_deref()
    }

    /// The type of the declared queues ([`QueueType::Classic`] by default).
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// How long a published message stays valid (its `expires`, at second precision); `None`
    /// = never expires. Default 86400 s.
    pub fn message_ttl(&self) -> Option<Duration> {
        self.message_ttl
    }

    /// How long a dead letter stays in the dead-letter queue (the `expiration` property, in
    /// milliseconds); `None` = forever. Default 864000 s.
    pub fn dead_message_ttl(&self) -> Option<Duration> {
        self.dead_message_ttl
    }

    /// Capacity of the in-process delay queue of failed messages waiting for a retry
    /// (default 1000).
    pub fn delay_queue_max_size(&self) -> usize {
        self.delay_queue_max_size
    }

    /// Consumer prefetch count (default: delay queue size + 1, so 1001).
    pub fn prefetch(&self) -> u16 {
        self.prefetch
    }

    /// Retries of a failed message before it is dead-lettered; `None` = unlimited. Default 30.
    pub fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// Delay before retrying a failed message (the first delay when exponential). Default 2 s.
    pub fn retry_delay(&self) -> Duration {
        self.retry_delay
    }

    /// Whether retry delays grow exponentially with jitter (default `false`: constant).
    pub fn retry_exponential(&self) -> bool {
        self.retry_exponential
    }

    /// Upper bound of an exponential retry delay (default 300 s).
    pub fn retry_max_delay(&self) -> Duration {
        self.retry_max_delay
    }

    /// How many publishes may await their broker confirm at once (default 1000).
    pub fn publish_confirm_window(&self) -> usize {
        self.publish_confirm_window
    }

    /// The most messages a replica worker applies in one batch, that is in one database
    /// transaction (default 100).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How long a replica worker waits for more messages, from the first one of a batch,
    /// before applying a batch that is not full (default 5 ms; zero applies at once what has
    /// arrived).
    pub fn batch_wait(&self) -> Duration {
        self.batch_wait
    }

    /// The largest message body a replica reads, in bytes (default 1 MiB): a larger one is
    /// dead-lettered with the reason, without being parsed, so that one oversized message can
    /// neither exhaust the worker's memory nor reach the database.
    pub fn max_body_size(&self) -> usize {
        self.max_body_size
    }

    /// How many replica workers apply batches concurrently (default 1). Messages of one row
    /// always go to the same worker, so a row is never written by two workers at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// How long an operation waits for a broker connection before failing with a retryable
    /// error (default 10 s).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// First delay between reconnection attempts (default 100 ms).
    pub fn reconnect_min_delay(&self) -> Duration {
        self.reconnect_min_delay
    }

    /// Longest delay between reconnection attempts (default 10 s).
    pub fn reconnect_max_delay(&self) -> Duration {
        self.reconnect_max_delay
    }

    /// The client-provided connection name shown by the broker (default `cqrs-diesel`); each
    /// connection adds its role: `cqrs-diesel (consumer)`, `cqrs-diesel (publisher)`.
    pub fn connection_name(&self) -> &str {
        &self.connection_name
    }

    /// TLS settings for `amqps://` brokers: extra trusted CAs and a client identity.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// The statement timeout of the replica worker's database sessions (`CQRS_QUERY_TIMEOUT`);
    /// `None` (the default) = no timeout. A statement running longer is cancelled by the
    /// database and its batch is tried again after the retry delay, without spending any
    /// message's retries. PostgreSQL applies it as `statement_timeout`, MariaDB as
    /// `max_statement_time`, MySQL as `max_execution_time` (which MySQL applies to `SELECT`s
    /// only); SQLite has none and ignores it with a warning.
    pub fn query_timeout(&self) -> Option<Duration> {
        self.query_timeout
    }

    /// Whether a replica statement that timed out is logged with its SQL
    /// (`CQRS_LOG_TIMED_OUT_QUERIES`, default `false`: a short line without the SQL).
    pub fn log_timed_out_queries(&self) -> bool {
        self.log_timed_out_queries
    }

    /// Where the runtime reads the current time: [`Clock::system`] unless
    /// [`ConfigBuilder::clock`] set another (tests, replays of captured messages).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

fn config(setting: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        setting,
        reason: reason.into(),
    }
}

/// The error for a bad value of `setting`.
fn invalid(setting: &'static str, value: &str, accepted: &str) -> Error {
    config(
        setting,
        format!("`{}` is not accepted: expected {accepted}", value.trim()),
    )
}
