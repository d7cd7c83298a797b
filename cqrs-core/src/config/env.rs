//! Reading the configuration from `CQRS_*` environment variables: [`Config::from_env`],
//! [`Config::from_lookup`] and the parsers of their values.

use std::str::FromStr;
use std::time::Duration;

use super::{
    AMQP_URL, BATCH_SIZE, BATCH_WAIT, CONNECT_TIMEOUT, CONNECTION_NAME, Config, DEAD_LETTER_QUEUE,
    DEAD_MESSAGE_TTL, DELAY_QUEUE_MAX_SIZE, DURATION_FORMS, EXCHANGE, LOG_TIMED_OUT_QUERIES,
    MAX_BODY_SIZE, MAX_RETRIES, MESSAGE_TTL, PREFETCH, PUBLISH_CONFIRM_WINDOW, QUERY_TIMEOUT,
    QUEUE, QUEUE_TYPE, RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, RETRY_DELAY, RETRY_EXPONENTIAL,
    RETRY_MAX_DELAY, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, WORKERS, invalid,
};
use crate::{Error, Result};

/// Every variable [`Config::from_env`] reads.
const ALL_VARS: [&str; 27] = [
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
    BATCH_SIZE,
    BATCH_WAIT,
    MAX_BODY_SIZE,
    WORKERS,
    CONNECT_TIMEOUT,
    RECONNECT_MIN_DELAY,
    RECONNECT_MAX_DELAY,
    CONNECTION_NAME,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    QUERY_TIMEOUT,
    LOG_TIMED_OUT_QUERIES,
];

impl Config {
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
        if let Some(v) = get(BATCH_SIZE) {
            b = b.batch_size(parse_number(BATCH_SIZE, &v, "a whole number >= 1")?);
        }
        if let Some(v) = get(MAX_BODY_SIZE) {
            b = b.max_body_size(parse_number(
                MAX_BODY_SIZE,
                &v,
                "a whole number of bytes >= 1",
            )?);
        }
        if let Some(v) = get(BATCH_WAIT) {
            b = b.batch_wait(parse_duration(BATCH_WAIT, &v)?);
        }
        if let Some(v) = get(WORKERS) {
            b = b.workers(parse_number(WORKERS, &v, "a whole number >= 1")?);
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
        if let Some(v) = get(QUERY_TIMEOUT) {
            b = b.query_timeout(Some(parse_query_timeout(&v)?));
        }
        if let Some(v) = get(LOG_TIMED_OUT_QUERIES) {
            b = b.log_timed_out_queries(parse_bool(LOG_TIMED_OUT_QUERIES, &v)?);
        }
        if let Some(v) = get(TLS_CA_FILE) {
            b = b.tls_ca_file(v);
        }
        // Both or neither: `build` reports a half-configured client identity.
        b = b.tls_client_files(
            get(TLS_CERT_FILE).map(Into::into),
            get(TLS_KEY_FILE).map(Into::into),
        );
        b.build()
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

pub(super) fn parse_bool(setting: &'static str, value: &str) -> Result<bool> {
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
pub(super) fn parse_duration(setting: &'static str, value: &str) -> Result<Duration> {
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

/// `CQRS_QUERY_TIMEOUT`: a bare whole number is milliseconds, as django-cqrs reads it
/// (`CQRS_QUERY_TIMEOUT = 10000`); the unit forms of other durations (`500ms`, `2s`) are
/// accepted too. `0` = no timeout.
pub(super) fn parse_query_timeout(value: &str) -> Result<Duration> {
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| {
                invalid(
                    QUERY_TIMEOUT,
                    value,
                    "a smaller whole number of milliseconds",
                )
            });
    }
    parse_duration(QUERY_TIMEOUT, value).map_err(|error| match error {
        Error::Config { setting, .. } => invalid(
            setting,
            value,
            "a whole number of milliseconds (`10000`, as django-cqrs), or a whole number \
             followed by `ms`, `s`, `m` or `h` (`500ms`, `2s`); `0` for none",
        ),
        other => other,
    })
}

/// A duration, or `none`.
pub(super) fn parse_optional_duration(
    setting: &'static str,
    value: &str,
) -> Result<Option<Duration>> {
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
