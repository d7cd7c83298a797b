//! [`ConfigBuilder`]: the setters, the defaults and the validation of [`ConfigBuilder::build`].

use std::time::Duration;

use super::{
    AMQP_URL, BATCH_SIZE, CONNECT_TIMEOUT, CONNECTION_NAME, Config, DEAD_LETTER_QUEUE,
    DEAD_MESSAGE_TTL, DELAY_QUEUE_MAX_SIZE, DURATION_FORMS, EXCHANGE, MAX_BODY_SIZE, MESSAGE_TTL,
    PREFETCH, PUBLISH_CONFIRM_WINDOW, QUERY_TIMEOUT, QUEUE, QueueType, RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY, RETRY_DELAY, RETRY_MAX_DELAY, WORKERS, config,
};
use crate::{AmqpUrl, Error, Result};

// Defaults (django-cqrs's where it has one, see docs/WIRE.md).
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
const DEFAULT_BATCH_SIZE: usize = 100;
const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(5);
const DEFAULT_WORKERS: usize = 1;
const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(10);
const DEFAULT_CONNECTION_NAME: &str = "cqrs-diesel";

/// The longest exchange or queue name AMQP can carry (a short string).
const MAX_NAME_LEN: usize = 255;

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
    batch_size: Option<usize>,
    batch_wait: Option<Duration>,
    max_body_size: Option<usize>,
    workers: Option<usize>,
    connect_timeout: Option<Duration>,
    reconnect_min_delay: Option<Duration>,
    reconnect_max_delay: Option<Duration>,
    connection_name: Option<String>,
    tls_ca_file: Option<std::path::PathBuf>,
    tls_cert_file: Option<std::path::PathBuf>,
    tls_key_file: Option<std::path::PathBuf>,
    query_timeout: Option<Duration>,
    log_timed_out_queries: Option<bool>,
    clock: Option<crate::Clock>,
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

    /// The largest message body a replica reads, in bytes (`CQRS_MAX_BODY_SIZE`, default
    /// 1048576), >= 1; larger bodies are dead-lettered unread.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = Some(bytes);
        self
    }

    /// The statement timeout of the replica worker's database sessions (`CQRS_QUERY_TIMEOUT`,
    /// default none); `None` or zero = no timeout. MariaDB counts it in microseconds and
    /// MySQL in milliseconds, so it must be at least 1 ms.
    pub fn query_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Whether a replica statement that timed out is logged with its SQL
    /// (`CQRS_LOG_TIMED_OUT_QUERIES`, default `false`).
    pub fn log_timed_out_queries(mut self, log: bool) -> Self {
        self.log_timed_out_queries = Some(log);
        self
    }

    /// The most messages a replica worker applies in one batch (`CQRS_BATCH_SIZE`, default
    /// 100), >= 1.
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.batch_size = Some(messages);
        self
    }

    /// How long a replica worker waits for more messages before applying a partial batch
    /// (`CQRS_BATCH_WAIT`, default 5 ms; zero is allowed).
    pub fn batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = Some(wait);
        self
    }

    /// Replica workers applying batches concurrently (`CQRS_WORKERS`, default 1), >= 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
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

    /// A PEM file of CA certificates to trust for `amqps://` brokers, in addition to the
    /// system's (`CQRS_AMQP_TLS_CA_FILE`). Read by [`ConfigBuilder::build`].
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// A client certificate (PEM) and its PKCS#8 private key (PEM) for mutual TLS
    /// (`CQRS_AMQP_TLS_CERT_FILE`, `CQRS_AMQP_TLS_KEY_FILE`). Read by [`ConfigBuilder::build`].
    pub fn tls_client_identity(
        self,
        cert_file: impl Into<std::path::PathBuf>,
        key_file: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls_client_files(Some(cert_file.into()), Some(key_file.into()))
    }

    /// Sets the client certificate and key files as found; [`ConfigBuilder::build`] rejects
    /// one without the other.
    pub(super) fn tls_client_files(
        mut self,
        cert_file: Option<std::path::PathBuf>,
        key_file: Option<std::path::PathBuf>,
    ) -> Self {
        self.tls_cert_file = cert_file;
        self.tls_key_file = key_file;
        self
    }

    /// Where the runtime reads the current time (default [`Clock::system`](crate::Clock::system));
    /// not read from the environment. Tests set a [`ManualClock`](crate::ManualClock)'s.
    pub fn clock(mut self, clock: crate::Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Connection name shown by the broker (`CQRS_CONNECTION_NAME`, default `cqrs-diesel`),
    /// followed by the connection's role: `cqrs-diesel (consumer)`; not empty.
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
    /// size, prefetch, confirm window, batch size or number of workers is zero; the default prefetch (delay queue size + 1)
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

        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(config(
                BATCH_SIZE,
                "`0` is not accepted: expected a whole number >= 1",
            ));
        }
        let batch_wait = self.batch_wait.unwrap_or(DEFAULT_BATCH_WAIT);
        let max_body_size = self.max_body_size.unwrap_or(DEFAULT_MAX_BODY_SIZE);
        if max_body_size == 0 {
            return Err(config(
                MAX_BODY_SIZE,
                "`0` is not accepted: expected a whole number of bytes >= 1",
            ));
        }
        let workers = self.workers.unwrap_or(DEFAULT_WORKERS);
        if workers == 0 {
            return Err(config(
                WORKERS,
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

        let query_timeout = self.query_timeout.filter(|timeout| !timeout.is_zero());
        if let Some(timeout) = query_timeout
            && timeout < Duration::from_millis(1)
        {
            return Err(config(
                QUERY_TIMEOUT,
                format!(
                    "`{}` is not accepted: expected at least 1 ms (MySQL counts the timeout in \
                     milliseconds), or 0 for none",
                    show(timeout)
                ),
            ));
        }

        if self.connection_name.as_deref() == Some("") {
            return Err(config(
                CONNECTION_NAME,
                "the connection name is empty; leave it unset for none",
            ));
        }

        let tls =
            super::TlsSettings::load(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)?;

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
            batch_size,
            batch_wait,
            max_body_size,
            workers,
            connect_timeout,
            reconnect_min_delay,
            reconnect_max_delay,
            connection_name: self
                .connection_name
                .unwrap_or_else(|| DEFAULT_CONNECTION_NAME.to_owned()),
            tls,
            query_timeout,
            log_timed_out_queries: self.log_timed_out_queries.unwrap_or(false),
            clock: self.clock.unwrap_or_default(),
        })
    }
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
pub(super) fn show(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{duration:?}")
    }
}
