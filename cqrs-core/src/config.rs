//! The configuration: broker URLs, names, TTLs, retry and reconnection policy.
//!
//! Built in code with [`Config::builder`] or read from `CQRS_*` environment variables with
//! [`Config::from_env`]; both end in the same validation ([`ConfigBuilder::build`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{AmqpUrl, Error, Result};

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
const CONNECT_TIMEOUT: &str = "CQRS_CONNECT_TIMEOUT";
const RECONNECT_MIN_DELAY: &str = "CQRS_RECONNECT_MIN_DELAY";
const RECONNECT_MAX_DELAY: &str = "CQRS_RECONNECT_MAX_DELAY";
const CONNECTION_NAME: &str = "CQRS_CONNECTION_NAME";

/// Every variable [`Config::from_env`] reads.
const ALL_VARS: [&str; 18] = [
    AMQP_URL,
    EXCHANGE,
    QUEUE,
    DEAD_LETTER_QUEUE,
    QUEUE_TYPE,
    MESSAGE_TTL,
    DEAD_MESSAGE_TTL,
    DELAY_QUEUE_MAX_SIZE,
    PREFETCH,
    MAX_RETRIES,
    RETRY_DELAY,
    RETRY_EXPONENTIAL,
    RETRY_MAX_DELAY,
    PUBLISH_CONFIRM_WINDOW,
    CONNECT_TIMEOUT,
    RECONNECT_MIN_DELAY,
    RECONNECT_MAX_DELAY,
    CONNECTION_NAME,
];

// Defaults (django-cqrs's where it has one, see WIRE.md).
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@localhost:5672/";
const DEFAULT_EXCHANGE: &str = "cqrs";
const DEFAULT_DEAD_LETTER_PREFIX: &str = "dead_letter_";
const DEFAULT_MESSAGE_TTL: Duration = Duration::from_secs(86_400);
const DEFAULT_DEAD_MESSAGE_TTL: Duration = Duration::from_secs(864_000);
const DEFAULT_DELAY_QUEUE_MAX_SIZE: usize = 1000;
const DEFAULT_MAX_RETRIES: u32 = 30;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);
const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(300);
const DEFAULT_PUBLISH_CONFIRM_WINDOW: usize = 1000;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(10);

/// The longest exchange or queue name AMQP can carry (a short string).
const MAX_NAME_LEN: usize = 255;

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
/// | `CQRS_CONNECT_TIMEOUT` | `10` (s) | how long an operation waits for a connection |
/// | `CQRS_RECONNECT_MIN_DELAY` | `100ms` | first delay between reconnection attempts |
/// | `CQRS_RECONNECT_MAX_DELAY` | `10` (s) | longest delay between reconnection attempts |
/// | `CQRS_CONNECTION_NAME` | none | connection name shown by the broker's management UI |
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
    connect_timeout: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    connection_name: Option<String>,
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

    /// Reads the configuration from the `CQRS_*` environment variables (see the table on
    /// [`Config`]); unset or empty variables take their defaults.
    ///
    /// ```
    /// use cqrs_core::Config;
    ///
    /// match Config::from_env() {
    ///     Ok(config) => println!("consuming from {:?} via {:?}", config.queue(), config.amqp_urls()),
    ///     // e.g. "configuration setting `CQRS_PREFETCH` is invalid: `0` is not accepted: ..."
    ///     Err(error) => eprintln!("{error}"),
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first variable whose value is invalid (or not Unicode),
    /// and what it accepts.
    pub fn from_env() -> Result<Config> {
        for name in ALL_VARS {
            if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(name) {
                return Err(Error::Config {
                    setting: name,
                    reason: "the value is not valid Unicode".to_owned(),
                });
            }
        }
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration like [`Config::from_env`], from any source: `lookup` is given a
    /// variable name (`CQRS_QUEUE`, ...) and returns its value, `None` when unset.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use cqrs_core::Config;
    ///
    /// let vars = HashMap::from([("CQRS_QUEUE", "orders_replica"), ("CQRS_MAX_RETRIES", "none")]);
    /// let config = Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()))?;
    /// assert_eq!(config.queue(), Some("orders_replica"));
    /// assert_eq!(config.max_retries(), None);
    /// # Ok::<(), cqrs_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first variable whose value is invalid, and what it
    /// accepts.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let get = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let mut b = Config::builder();
        if let Some(v) = get(AMQP_URL) {
            b = b.amqp_urls(v.split(','));
        }
        if let Some(v) = get(EXCHANGE) {
            b = b.exchange(v);
        }
        if let Some(v) = get(QUEUE) {
            b = b.queue(v);
        }
        if let Some(v) = get(DEAD_LETTER_QUEUE) {
            b = b.dead_letter_queue(v);
        }
        if let Some(v) = get(QUEUE_TYPE) {
            b = b.queue_type(v.parse()?);
        }
        if let Some(v) = get(MESSAGE_TTL) {
            b = b.message_ttl(parse_optional_duration(MESSAGE_TTL, &v)?);
        }
        if let Some(v) = get(DEAD_MESSAGE_TTL) {
            b = b.dead_message_ttl(parse_optional_duration(DEAD_MESSAGE_TTL, &v)?);
        }
        if let Some(v) = get(DELAY_QUEUE_MAX_SIZE) {
            b = b.delay_queue_max_size(parse_number(
                DELAY_QUEUE_MAX_SIZE,
                &v,
                "a whole number >= 1",
            )?);
        }
        if let Some(v) = get(PREFETCH) {
            b = b.prefetch(parse_number(PREFETCH, &v, "a whole number in 1..=65535")?);
        }
        if let Some(v) = get(MAX_RETRIES) {
            b = b.max_retries(if is_none(&v) {
                None
            } else {
                Some(parse_number(
                    MAX_RETRIES,
                    &v,
                    "a whole number in 0..=4294967295, or `none` for unlimited retries",
                )?)
            });
        }
        if let Some(v) = get(RETRY_DELAY) {
            b = b.retry_delay(parse_duration(RETRY_DELAY, &v)?);
        }
        if let Some(v) = get(RETRY_EXPONENTIAL) {
            b = b.retry_exponential(parse_bool(RETRY_EXPONENTIAL, &v)?);
        }
        if let Some(v) = get(RETRY_MAX_DELAY) {
            b = b.retry_max_delay(parse_duration(RETRY_MAX_DELAY, &v)?);
        }
        if let Some(v) = get(PUBLISH_CONFIRM_WINDOW) {
            b = b.publish_confirm_window(parse_number(
                PUBLISH_CONFIRM_WINDOW,
                &v,
                "a whole number >= 1",
            )?);
        }
        if let Some(v) = get(CONNECT_TIMEOUT) {
            b = b.connect_timeout(parse_duration(CONNECT_TIMEOUT, &v)?);
        }
        if let Some(v) = get(RECONNECT_MIN_DELAY) {
            b = b.reconnect_min_delay(parse_duration(RECONNECT_MIN_DELAY, &v)?);
        }
        if let Some(v) = get(RECONNECT_MAX_DELAY) {
            b = b.reconnect_max_delay(parse_duration(RECONNECT_MAX_DELAY, &v)?);
        }
        if let Some(v) = get(CONNECTION_NAME) {
            b = b.connection_name(v);
        }
        b.build()
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

    /// The client-provided connection name shown by the broker, if any.
    pub fn connection_name(&self) -> Option<&str> {
        self.connection_name.as_deref()
    }
}

/// Builds a [`Config`]: one setter per setting, taking plain Rust values; unset settings keep
/// their defaults (listed on [`Config`]). Nothing is checked before [`ConfigBuilder::build`].
///
/// Its `Debug` never shows a password either.
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConfigBuilder {
    /// Parsed eagerly so that no raw URL (with its password) is kept; the error waits for
    /// `build`.
    amqp_urls: Option<std::result::Result<Vec<AmqpUrl>, String>>,
    exchange: Option<String>,
    queue: Option<String>,
    dead_letter_queue: Option<String>,
    queue_type: Option<QueueType>,
    message_ttl: Option<Option<Duration>>,
    dead_message_ttl: Option<Option<Duration>>,
    delay_queue_max_size: Option<usize>,
    prefetch: Option<u16>,
    max_retries: Option<Option<u32>>,
    retry_delay: Option<Duration>,
    retry_exponential: Option<bool>,
    retry_max_delay: Option<Duration>,
    publish_confirm_window: Option<usize>,
    connect_timeout: Option<Duration>,
    reconnect_min_delay: Option<Duration>,
    reconnect_max_delay: Option<Duration>,
    connection_name: Option<String>,
}

impl ConfigBuilder {
    /// One broker URL (`CQRS_AMQP_URL`); see [`AmqpUrl`] for the accepted form. Replaces any
    /// URL set before. A parse error surfaces in [`ConfigBuilder::build`].
    pub fn amqp_url(mut self, url: &str) -> Self {
        self.amqp_urls = Some(
            AmqpUrl::parse(url)
                .map(|url| vec![url])
                .map_err(config_reason),
        );
        self
    }

    /// The brokers of a cluster, tried in turn (`CQRS_AMQP_URL` as a comma-separated list);
    /// at least one. Replaces any URL set before. Parse errors surface in
    /// [`ConfigBuilder::build`], naming the position of the bad URL.
    pub fn amqp_urls<I>(mut self, urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let urls: Vec<I::Item> = urls.into_iter().collect();
        let count = urls.len();
        let parsed = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                AmqpUrl::parse(url.as_ref()).map_err(|e| {
                    if count == 1 {
                        config_reason(e)
                    } else {
                        format!("URL #{} of {count}: {}", i + 1, config_reason(e))
                    }
                })
            })
            .collect();
        self.amqp_urls = Some(parsed);
        self
    }

    /// The topic exchange (`CQRS_EXCHANGE`, default `cqrs`).
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchange = Some(name.into());
        self
    }

    /// This replica service's queue (`CQRS_QUEUE`, none by default).
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Some(name.into());
        self
    }

    /// The dead-letter queue (`CQRS_DEAD_LETTER_QUEUE`, default `dead_letter_<queue>`); needs a
    /// queue.
    pub fn dead_letter_queue(mut self, name: impl Into<String>) -> Self {
        self.dead_letter_queue = Some(name.into());
        self
    }

    /// The type of the declared queues (`CQRS_QUEUE_TYPE`, default [`QueueType::Classic`]).
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = Some(queue_type);
        self
    }

    /// Lifetime of published messages (`CQRS_MESSAGE_TTL`, default 86400 s); `None` = never
    /// expire. Must be a whole number of seconds, at least 1 (`expires` has second precision).
    pub fn message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.message_ttl = Some(ttl);
        self
    }

    /// Lifetime of dead letters (`CQRS_DEAD_MESSAGE_TTL`, default 864000 s); `None` = forever.
    /// At least 1 ms (it is sent in milliseconds, rounded down).
    pub fn dead_message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.dead_message_ttl = Some(ttl);
        self
    }

    /// Capacity of the retry delay queue (`CQRS_DELAY_QUEUE_MAX_SIZE`, default 1000), >= 1.
    pub fn delay_queue_max_size(mut self, size: usize) -> Self {
        self.delay_queue_max_size = Some(size);
        self
    }

    /// Consumer prefetch (`CQRS_PREFETCH`, default delay queue size + 1), >= 1.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Retries before dead-lettering (`CQRS_MAX_RETRIES`, default 30); `None` = unlimited.
    pub fn max_retries(mut self, max_retries: Option<u32>) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Delay before a retry (`CQRS_RETRY_DELAY`, default 2 s; zero is allowed).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = Some(delay);
        self
    }

    /// Exponential backoff with jitter instead of a constant delay (`CQRS_RETRY_EXPONENTIAL`,
    /// default `false`).
    pub fn retry_exponential(mut self, exponential: bool) -> Self {
        self.retry_exponential = Some(exponential);
        self
    }

    /// Cap of the exponential retry delay (`CQRS_RETRY_MAX_DELAY`, default 300 s); when
    /// exponential, it must not be below the retry delay.
    pub fn retry_max_delay(mut self, delay: Duration) -> Self {
        self.retry_max_delay = Some(delay);
        self
    }

    /// Publishes awaiting broker confirms at once (`CQRS_PUBLISH_CONFIRM_WINDOW`, default
    /// 1000), >= 1.
    pub fn publish_confirm_window(mut self, window: usize) -> Self {
        self.publish_confirm_window = Some(window);
        self
    }

    /// How long an operation waits for a connection (`CQRS_CONNECT_TIMEOUT`, default 10 s),
    /// more than zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// First delay between reconnection attempts (`CQRS_RECONNECT_MIN_DELAY`, default
    /// 100 ms), more than zero.
    pub fn reconnect_min_delay(mut self, delay: Duration) -> Self {
        self.reconnect_min_delay = Some(delay);
        self
    }

    /// Longest delay between reconnection attempts (`CQRS_RECONNECT_MAX_DELAY`, default 10 s),
    /// not below the minimum.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = Some(delay);
        self
    }

    /// Connection name shown by the broker (`CQRS_CONNECTION_NAME`, none by default); not
    /// empty.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Checks every setting and resolves the defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the setting (by its environment variable) when: a URL does not
    /// parse or none is given; an exchange or queue name is empty, longer than 255 bytes or
    /// starts with the reserved `amq.`; a dead-letter queue is given without a queue or equals
    /// the queue; a TTL is zero (or, for the message TTL, not whole seconds); the delay queue
    /// size, prefetch or confirm window is zero; the default prefetch (delay queue size + 1)
    /// exceeds 65535; the connect timeout or minimum reconnect delay is zero; the minimum
    /// reconnect delay exceeds the maximum; exponential retries have a maximum delay below the
    /// retry delay; the connection name is empty.
    pub fn build(self) -> Result<Config> {
        let amqp_urls = match self.amqp_urls {
            None => vec![AmqpUrl::parse(DEFAULT_AMQP_URL)?],
            Some(Err(reason)) => return Err(config(AMQP_URL, reason)),
            Some(Ok(urls)) if urls.is_empty() => {
                return Err(config(
                    AMQP_URL,
                    "no URL given; expected at least one, e.g. `amqp://guest:guest@localhost:5672/%2f`",
                ));
            }
            Some(Ok(urls)) => urls,
        };

        let exchange = self.exchange.unwrap_or_else(|| DEFAULT_EXCHANGE.to_owned());
        check_name(EXCHANGE, "exchange", &exchange)?;

        if let Some(queue) = &self.queue {
            check_name(QUEUE, "queue", queue)?;
        }
        let dead_letter_queue = match (&self.queue, self.dead_letter_queue) {
            (None, None) => None,
            (None, Some(dlq)) => {
                return Err(config(
                    DEAD_LETTER_QUEUE,
                    format!(
                        "dead-letter queue `{dlq}` is set but `{QUEUE}` is not; only a replica \
                         service (one with a queue) has a dead-letter queue"
                    ),
                ));
            }
            (Some(_), Some(dlq)) => {
                check_name(DEAD_LETTER_QUEUE, "dead-letter queue", &dlq)?;
                Some(dlq)
            }
            (Some(queue), None) => {
                let dlq = format!("{DEFAULT_DEAD_LETTER_PREFIX}{queue}");
                if dlq.len() > MAX_NAME_LEN {
                    return Err(config(
                        DEAD_LETTER_QUEUE,
                        format!(
                            "the default dead-letter queue name `{dlq}` is {} bytes long, AMQP \
                             allows at most {MAX_NAME_LEN}; set `{DEAD_LETTER_QUEUE}` to a \
                             shorter name",
                            dlq.len()
                        ),
                    ));
                }
                Some(dlq)
            }
        };
        if let (Some(queue), Some(dlq)) = (&self.queue, &dead_letter_queue)
            && queue == dlq
        {
            return Err(config(
                DEAD_LETTER_QUEUE,
                format!("`{dlq}` is also the queue's name; the dead-letter queue needs its own"),
            ));
        }

        let message_ttl = self.message_ttl.unwrap_or(Some(DEFAULT_MESSAGE_TTL));
        if let Some(ttl) = message_ttl
            && (ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0)
        {
            return Err(config(
                MESSAGE_TTL,
                format!(
                    "`{}` is not accepted: expected a whole number of seconds >= 1 \
                     (`expires` has second precision), or `none` for messages that never expire",
                    show(ttl)
                ),
            ));
        }
        let dead_message_ttl = self
            .dead_message_ttl
            .unwrap_or(Some(DEFAULT_DEAD_MESSAGE_TTL));
        if let Some(ttl) = dead_message_ttl
            && ttl < Duration::from_millis(1)
        {
            return Err(config(
                DEAD_MESSAGE_TTL,
                format!(
                    "`{}` is not accepted: expected at least 1ms, or `none` for dead \
                     letters that never expire",
                    show(ttl)
                ),
            ));
        }

        let delay_queue_max_size = self
            .delay_queue_max_size
            .unwrap_or(DEFAULT_DELAY_QUEUE_MAX_SIZE);
        if delay_queue_max_size == 0 {
            return Err(config(
                DELAY_QUEUE_MAX_SIZE,
                "`0` is not accepted: expected a whole number >= 1",
            ));
        }
        let prefetch = match self.prefetch {
            Some(0) => {
                return Err(config(
                    PREFETCH,
                    "`0` is not accepted: expected a whole number in 1..=65535",
                ));
            }
            Some(prefetch) => prefetch,
            None => delay_queue_max_size
                .checked_add(1)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    config(
                        PREFETCH,
                        format!(
                            "the default prefetch, `{DELAY_QUEUE_MAX_SIZE}` + 1 = {delay_queue_max_size} + 1, \
                             exceeds 65535; set `{PREFETCH}` explicitly (1..=65535) or lower \
                             `{DELAY_QUEUE_MAX_SIZE}`"
                        ),
                    )
                })?,
        };

        let max_retries = self.max_retries.unwrap_or(Some(DEFAULT_MAX_RETRIES));
        let retry_delay = self.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY);
        let retry_exponential = self.retry_exponential.unwrap_or(false);
        let retry_max_delay = self.retry_max_delay.unwrap_or(DEFAULT_RETRY_MAX_DELAY);
        if retry_exponential && retry_max_delay < retry_delay {
            return Err(config(
                RETRY_MAX_DELAY,
                format!(
                    "`{}` is below `{RETRY_DELAY}` (`{}`); the maximum \
                     exponential retry delay must be at least the first one",
                    show(retry_max_delay),
                    show(retry_delay)
                ),
            ));
        }

        let publish_confirm_window = self
            .publish_confirm_window
            .unwrap_or(DEFAULT_PUBLISH_CONFIRM_WINDOW);
        if publish_confirm_window == 0 {
            return Err(config(
                PUBLISH_CONFIRM_WINDOW,
                "`0` is not accepted: expected a whole number >= 1",
            ));
        }

        let connect_timeout = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if connect_timeout.is_zero() {
            return Err(config(
                CONNECT_TIMEOUT,
                format!("`0` is not accepted: expected a positive duration, {DURATION_FORMS}"),
            ));
        }
        let reconnect_min_delay = self
            .reconnect_min_delay
            .unwrap_or(DEFAULT_RECONNECT_MIN_DELAY);
        if reconnect_min_delay.is_zero() {
            return Err(config(
                RECONNECT_MIN_DELAY,
                format!("`0` is not accepted: expected a positive duration, {DURATION_FORMS}"),
            ));
        }
        let reconnect_max_delay = self
            .reconnect_max_delay
            .unwrap_or(DEFAULT_RECONNECT_MAX_DELAY);
        if reconnect_min_delay > reconnect_max_delay {
            return Err(config(
                RECONNECT_MIN_DELAY,
                format!(
                    "`{}` exceeds `{RECONNECT_MAX_DELAY}` (`{}`); the minimum reconnect \
                     delay must not exceed the maximum",
                    show(reconnect_min_delay),
                    show(reconnect_max_delay)
                ),
            ));
        }

        if self.connection_name.as_deref() == Some("") {
            return Err(config(
                CONNECTION_NAME,
                "the connection name is empty; leave it unset for none",
            ));
        }

        Ok(Config {
            amqp_urls,
            exchange,
            queue: self.queue,
            dead_letter_queue,
            queue_type: self.queue_type.unwrap_or_default(),
            message_ttl,
            dead_message_ttl,
            delay_queue_max_size,
            prefetch,
            max_retries,
            retry_delay,
            retry_exponential,
            retry_max_delay,
            publish_confirm_window,
            connect_timeout,
            reconnect_min_delay,
            reconnect_max_delay,
            connection_name: self.connection_name,
        })
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

/// The reason of an [`AmqpUrl::parse`] error (always a config error).
fn config_reason(error: Error) -> String {
    match error {
        Error::Config { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Checks an exchange or queue name.
fn check_name(setting: &'static str, what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(config(setting, format!("the {what} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(config(
            setting,
            format!(
                "the {what} name `{name}` is {} bytes long; AMQP allows at most {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if name.starts_with("amq.") {
        return Err(config(
            setting,
            format!("the {what} name `{name}` starts with `amq.`, which RabbitMQ reserves"),
        ));
    }
    Ok(())
}

/// A duration as it would be written in an environment variable (`2s`, `1500ms`), for error
/// messages; `Debug` form when not a whole number of milliseconds.
fn show(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{duration:?}")
    }
}

fn is_none(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("none")
}

fn parse_number<T: FromStr>(setting: &'static str, value: &str, accepted: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(setting, value, accepted))
}

fn parse_bool(setting: &'static str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(
            setting,
            value,
            "`true`/`false`, `1`/`0` or `yes`/`no` (in any case)",
        )),
    }
}

/// A duration: a whole number of seconds, or a whole number with unit `ms`, `s`, `m` or `h`.
fn parse_duration(setting: &'static str, value: &str) -> Result<Duration> {
    let lower = value.trim().to_ascii_lowercase();
    let (number, unit_ms) = if let Some(n) = lower.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = lower.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = lower.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (lower.as_str(), 1_000)
    };
    let number = number.trim_end();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        let hint = if number.contains('.') {
            " (fractions are not accepted: write `1500ms` rather than `1.5s`)"
        } else {
            ""
        };
        return Err(invalid(setting, value, &format!("{DURATION_FORMS}{hint}")));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            invalid(
                setting,
                value,
                &format!("a smaller duration, {DURATION_FORMS}"),
            )
        })
}

/// A duration, or `none`.
fn parse_optional_duration(setting: &'static str, value: &str) -> Result<Option<Duration>> {
    if is_none(value) {
        return Ok(None);
    }
    parse_duration(setting, value)
        .map(Some)
        .map_err(|e| match e {
            Error::Config { setting, reason } => Error::Config {
                setting,
                reason: format!("{reason}, or `none` for never"),
            },
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn setting_of(result: Result<impl fmt::Debug>) -> (&'static str, String) {
        match result {
            Err(Error::Config { setting, reason }) => (setting, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn lookup(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn durations_show_as_written_in_variables() {
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::from_nanos(1500)), "1.5µs");
    }

    #[test]
    fn durations_accept_plain_seconds_and_units() {
        let d = |v| parse_duration(RETRY_DELAY, v).unwrap();
        assert_eq!(d("30"), Duration::from_secs(30));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("2s"), Duration::from_secs(2));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d(" 2S "), Duration::from_secs(2));
        assert_eq!(d("0"), Duration::ZERO);
    }

    #[test]
    fn durations_reject_fractions_signs_units_and_overflow() {
        for bad in [
            "1.5s",
            "-1",
            "+1",
            "s",
            "ms",
            "10d",
            "ten",
            "1 5",
            "99999999999999999999h",
        ] {
            let (setting, reason) = setting_of(parse_duration(RETRY_DELAY, bad));
            assert_eq!(setting, RETRY_DELAY);
            assert!(reason.contains(bad.trim()), "{reason}");
            assert!(reason.contains("`500ms`"), "{reason}");
        }
        let (_, reason) = setting_of(parse_duration(RETRY_DELAY, "1.5s"));
        assert!(reason.contains("fractions"), "{reason}");
    }

    #[test]
    fn optional_durations_accept_none() {
        assert_eq!(parse_optional_duration(MESSAGE_TTL, "None").unwrap(), None);
        assert_eq!(
            parse_optional_duration(MESSAGE_TTL, "60").unwrap(),
            Some(Duration::from_secs(60))
        );
        let (_, reason) = setting_of(parse_optional_duration(MESSAGE_TTL, "never"));
        assert!(reason.contains("`none`"), "{reason}");
    }

    #[test]
    fn booleans_accept_the_documented_words() {
        for (v, b) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("NO", false),
        ] {
            assert_eq!(parse_bool(RETRY_EXPONENTIAL, v).unwrap(), b, "{v}");
        }
        for bad in ["on", "off", "2", "y", "truthy"] {
            let (setting, reason) = setting_of(parse_bool(RETRY_EXPONENTIAL, bad));
            assert_eq!(setting, RETRY_EXPONENTIAL);
            assert!(reason.contains(bad), "{reason}");
        }
    }

    #[test]
    fn queue_type_parses_case_insensitively() {
        assert_eq!("Quorum".parse::<QueueType>().unwrap(), QueueType::Quorum);
        assert_eq!("classic".parse::<QueueType>().unwrap(), QueueType::Classic);
        assert_eq!(QueueType::Quorum.as_str(), "quorum");
        assert_eq!(QueueType::Classic.to_string(), "classic");
        let (setting, reason) = setting_of("stream".parse::<QueueType>());
        assert_eq!(setting, QUEUE_TYPE);
        assert!(
            reason.contains("stream") && reason.contains("quorum"),
            "{reason}"
        );
    }

    #[test]
    fn blank_variables_mean_default() {
        let config = lookup(&[(QUEUE, "  "), (PREFETCH, ""), (AMQP_URL, " ")]).unwrap();
        assert_eq!(config, Config::builder().build().unwrap());
    }

    #[test]
    fn url_list_errors_name_the_position() {
        let (setting, reason) =
            setting_of(lookup(&[(AMQP_URL, "amqp://a,amqp://u:pw@b:0,amqp://c")]));
        assert_eq!(setting, AMQP_URL);
        assert!(reason.starts_with("URL #2 of 3:"), "{reason}");
        let (_, reason) = setting_of(lookup(&[(AMQP_URL, "amqp://a,")]));
        assert!(
            reason.contains("URL #2 of 2") && reason.contains("empty"),
            "{reason}"
        );
        let (_, reason) = setting_of(Config::builder().amqp_urls(Vec::<String>::new()).build());
        assert!(reason.contains("no URL"), "{reason}");
    }

    #[test]
    fn builder_debug_hides_passwords() {
        let builder = Config::builder().amqp_url("amqp://u:s3cr3t-p4ss@h/");
        assert!(!format!("{builder:?}").contains("s3cr3t-p4ss"));
    }

    #[test]
    fn default_prefetch_follows_delay_queue_size_and_must_fit() {
        let config = Config::builder().delay_queue_max_size(9).build().unwrap();
        assert_eq!(config.prefetch(), 10);
        let config = Config::builder()
            .delay_queue_max_size(65_534)
            .build()
            .unwrap();
        assert_eq!(config.prefetch(), 65_535);
        let (setting, _) = setting_of(Config::builder().delay_queue_max_size(65_535).build());
        assert_eq!(setting, PREFETCH);
        let config = Config::builder()
            .delay_queue_max_size(100_000)
            .prefetch(500)
            .build()
            .unwrap();
        assert_eq!(config.prefetch(), 500);
    }

    #[test]
    fn names_are_checked() {
        let (s, _) = setting_of(Config::builder().exchange("").build());
        assert_eq!(s, EXCHANGE);
        let (s, _) = setting_of(Config::builder().queue("q".repeat(256)).build());
        assert_eq!(s, QUEUE);
        let (s, _) = setting_of(Config::builder().queue("amq.q").build());
        assert_eq!(s, QUEUE);
        let (s, _) = setting_of(Config::builder().queue("q").dead_letter_queue("").build());
        assert_eq!(s, DEAD_LETTER_QUEUE);
        let (s, _) = setting_of(Config::builder().queue("q".repeat(250)).build());
        assert_eq!(s, DEAD_LETTER_QUEUE);
        let (s, _) = setting_of(Config::builder().queue("q").dead_letter_queue("q").build());
        assert_eq!(s, DEAD_LETTER_QUEUE);
        let (s, _) = setting_of(Config::builder().dead_letter_queue("dlq").build());
        assert_eq!(s, DEAD_LETTER_QUEUE);
        assert!(Config::builder().exchange("e".repeat(255)).build().is_ok());
    }

    #[test]
    fn ttls_are_checked() {
        let (s, _) = setting_of(Config::builder().message_ttl(Some(Duration::ZERO)).build());
        assert_eq!(s, MESSAGE_TTL);
        let (s, r) = setting_of(
            Config::builder()
                .message_ttl(Some(Duration::from_millis(1500)))
                .build(),
        );
        assert_eq!(s, MESSAGE_TTL);
        assert!(r.contains("`1500ms`"), "{r}");
        let (s, _) = setting_of(
            Config::builder()
                .dead_message_ttl(Some(Duration::ZERO))
                .build(),
        );
        assert_eq!(s, DEAD_MESSAGE_TTL);
        assert!(
            Config::builder()
                .message_ttl(None)
                .dead_message_ttl(None)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn exponential_retry_needs_max_at_least_delay() {
        let builder = Config::builder()
            .retry_delay(Duration::from_secs(600))
            .retry_max_delay(Duration::from_secs(300));
        assert!(
            builder.clone().build().is_ok(),
            "constant delays ignore the maximum"
        );
        let (s, _) = setting_of(builder.retry_exponential(true).build());
        assert_eq!(s, RETRY_MAX_DELAY);
    }

    #[test]
    fn zero_counts_and_timeouts_are_rejected() {
        let (s, _) = setting_of(Config::builder().publish_confirm_window(0).build());
        assert_eq!(s, PUBLISH_CONFIRM_WINDOW);
        let (s, _) = setting_of(Config::builder().delay_queue_max_size(0).build());
        assert_eq!(s, DELAY_QUEUE_MAX_SIZE);
        let (s, _) = setting_of(Config::builder().connect_timeout(Duration::ZERO).build());
        assert_eq!(s, CONNECT_TIMEOUT);
        let (s, _) = setting_of(
            Config::builder()
                .reconnect_min_delay(Duration::ZERO)
                .build(),
        );
        assert_eq!(s, RECONNECT_MIN_DELAY);
        let (s, _) = setting_of(Config::builder().connection_name("").build());
        assert_eq!(s, CONNECTION_NAME);
        assert!(
            Config::builder()
                .retry_delay(Duration::ZERO)
                .build()
                .is_ok()
        );
    }
}
