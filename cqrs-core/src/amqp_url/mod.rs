//! `amqp://` and `amqps://` broker URLs, parsed the way pika (django-cqrs's client) reads them,
//! and printed with the password masked.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[cfg(feature = "rabbitmq")]
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};

use crate::{Error, Result};

/// The environment variable the URL comes from, used as the `setting` of every parse error.
const SETTING: &str = "CQRS_AMQP_URL";

/// What a URL looks like, quoted in error messages.
const EXAMPLE: &str = "`amqp://guest:guest@localhost:5672/%2f`";

/// The query parameters [`AmqpUrl`] accepts, quoted in error messages.
const ACCEPTED_QUERY: &str = "`heartbeat` (seconds), `connection_timeout` (milliseconds), \
                              `frame_max` (bytes) and `channel_max`";

/// Credentials used when the URL carries none (pika's and RabbitMQ's defaults).
const DEFAULT_USER: &str = "guest";

/// The longest virtual host name AMQP can carry (a short string).
const MAX_VHOST_LEN: usize = 255;

/// The address of a RabbitMQ broker: `amqp[s]://user:password@host:port/vhost?params`.
///
/// Parsed as pika (the client of django-cqrs) reads it, so the same `CQRS_AMQP_URL` works for a
/// Python and a Rust service:
///
/// - user and password are percent-decoded; absent ones default to `guest` / `guest` (a
///   present but empty password, `amqp://user:@host`, stays empty);
/// - the host is a domain name, an IPv4 address or a bracketed IPv6 address (`[::1]`), kept as
///   written (an IP address is *not* replaced by `localhost`);
/// - the port defaults to 5672 for `amqp://` and 5671 for `amqps://`;
/// - the virtual host is `/` when the path is absent or `/`, and otherwise the percent-decoded
///   path without its leading slash: `/%2f` is `/`, `/orders` is `orders`;
/// - query parameters `heartbeat` (seconds), `connection_timeout` (milliseconds), `frame_max`
///   and `channel_max` are accepted; any other one is an error.
///
/// [`Display`](fmt::Display) and [`Debug`] print the URL with its password replaced by `***`
/// (`amqp://guest:***@127.0.0.1:5672/%2f`). The only way to reach the password is
/// `AmqpUrl::to_lapin` (feature `rabbitmq`), which hands it to the client library.
///
/// ```
/// use cqrs_core::AmqpUrl;
///
/// let url: AmqpUrl = "amqps://app:secret@10.0.0.7/orders".parse()?;
/// assert!(url.scheme_is_tls());
/// assert_eq!(url.host(), "10.0.0.7");
/// assert_eq!(url.port(), 5671);
/// assert_eq!(url.vhost(), "orders");
/// assert_eq!(url.to_string(), "amqps://app:***@10.0.0.7:5671/orders");
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    tls: bool,
    username: String,
    password: String,
    /// Without brackets for IPv6 (`::1`), as socket addresses and TLS server names want it.
    host: String,
    port: u16,
    vhost: String,
    heartbeat: Option<u16>,
    connection_timeout_ms: Option<u64>,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
}

impl AmqpUrl {
    /// Parses an `amqp://` or `amqps://` URL (see the type's documentation for the rules).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with setting `CQRS_AMQP_URL` when the scheme is neither `amqp` nor
    /// `amqps`, the host is missing, the port is not 1..=65535, the virtual host is not valid
    /// UTF-8 or too long, or a query parameter is unknown, repeated or not a number. The reason
    /// never contains the password.
    pub fn parse(input: &str) -> Result<AmqpUrl> {
        parse_reason(input).map_err(|reason| Error::Config {
            setting: SETTING,
            reason,
        })
    }

    /// Whether the scheme is `amqps` (TLS).
    pub fn scheme_is_tls(&self) -> bool {
        self.tls
    }

    /// The host: a domain name, or an IP address (IPv6 without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (5672 for `amqp://`, 5671 for `amqps://` when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The virtual host, percent-decoded (`/` by default).
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The user name, percent-decoded (`guest` by default).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The `heartbeat` query parameter (seconds; 0 disables heartbeats), if given.
    pub fn heartbeat(&self) -> Option<u16> {
        self.heartbeat
    }

    /// The `connection_timeout` query parameter (given in milliseconds), if given.
    pub fn connection_timeout(&self) -> Option<Duration> {
        self.connection_timeout_ms.map(Duration::from_millis)
    }

    /// The `frame_max` query parameter (bytes), if given.
    pub fn frame_max(&self) -> Option<u32> {
        self.frame_max
    }

    /// The `channel_max` query parameter, if given.
    pub fn channel_max(&self) -> Option<u16> {
        self.channel_max
    }

    /// The URL in lapin's form, password included, to open a connection (feature
    /// `rabbitmq`).
    ///
    /// This is the only way to get at the password: do not log the result.
    #[cfg(feature = "rabbitmq")]
    pub fn to_lapin(&self) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                frame_max: self.frame_max,
                channel_max: self.channel_max,
                heartbeat: self.heartbeat,
                connection_timeout: self.connection_timeout_ms,
                auth_mechanism: None,
            },
        }
    }

    /// Writes the URL without its query string, password masked.
    fn fmt_base(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        write!(f, "{scheme}://")?;
        write_encoded(f, &self.username)?;
        f.write_str(":***@")?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}/", self.port)?;
        write_encoded(f, &self.vhost)
    }
}

impl FromStr for AmqpUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        AmqpUrl::parse(s)
    }
}

impl fmt::Display for AmqpUrl {
    /// The URL with the password replaced by `***` and the virtual host percent-encoded
    /// (`amqp://guest:***@127.0.0.1:5672/%2f?heartbeat=30`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_base(f)?;
        let mut sep = '?';
        let mut param = |f: &mut fmt::Formatter<'_>, key: &str, value: Option<u64>| {
            if let Some(value) = value {
                write!(f, "{sep}{key}={value}")?;
                sep = '&';
            }
            Ok(())
        };
        param(f, "heartbeat", self.heartbeat.map(u64::from))?;
        param(f, "connection_timeout", self.connection_timeout_ms)?;
        param(f, "frame_max", self.frame_max.map(u64::from))?;
        param(f, "channel_max", self.channel_max.map(u64::from))
    }
}

impl fmt::Debug for AmqpUrl {
    /// Same as [`Display`](fmt::Display): the password is masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses `input`, or says what is wrong with it without quoting it (it may hold a password).
fn parse_reason(input: &str) -> std::result::Result<AmqpUrl, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err(format!("the URL is empty; expected e.g. {EXAMPLE}"));
    }
    let url = match url::Url::parse(input) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => return Err(wrong_scheme(None)),
        Err(url::ParseError::InvalidPort) => {
            return Err(format!(
                "the port is not a number in 1..=65535; expected e.g. {EXAMPLE}"
            ));
        }
        Err(url::ParseError::EmptyHost) => return Err(no_host(None)),
        // The url crate's messages are fixed texts ("invalid IPv6 address", ...): they never
        // quote the input.
        Err(e) => return Err(format!("not a valid URL ({e}); expected e.g. {EXAMPLE}")),
    };

    let tls = match url.scheme() {
        "amqp" => false,
        "amqps" => true,
        // Only a URL with an authority (`scheme://`) surely has its scheme where we think: in
        // `user:password@host` the "scheme" is the user name, harmless but confusing to show.
        other if url.has_authority() => return Err(wrong_scheme(Some(other))),
        _ => return Err(wrong_scheme(None)),
    };

    let username = match url.username() {
        "" => DEFAULT_USER.to_owned(),
        user => {
            percent_decode(user).ok_or("the user name is not valid UTF-8 once percent-decoded")?
        }
    };
    let password = match url.password() {
        Some(password) => percent_decode(password)
            .ok_or("the password is not valid UTF-8 once percent-decoded")?,
        // The url crate reports `user:@host` like `user@host`: tell them apart on the input.
        None if has_empty_password(input) => String::new(),
        None => DEFAULT_USER.to_owned(),
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(addr)) => addr.to_string(),
        Some(url::Host::Ipv4(addr)) => addr.to_string(),
        Some(url::Host::Domain(domain)) => {
            percent_decode(domain).ok_or("the host is not valid UTF-8 once percent-decoded")?
        }
        None => String::new(),
    };
    let port = url.port().unwrap_or(if tls { 5671 } else { 5672 });

    let path = url.path();
    let vhost = match path {
        "" | "/" => "/".to_owned(),
        _ => {
            let encoded = path.strip_prefix('/').unwrap_or(path);
            percent_decode(encoded)
                .ok_or("the virtual host (the path) is not valid UTF-8 once percent-decoded")?
        }
    };

    let mut parsed = AmqpUrl {
        tls,
        username,
        password,
        host,
        port,
        vhost,
        heartbeat: None,
        connection_timeout_ms: None,
        frame_max: None,
        channel_max: None,
    };
    // A host name is letters, digits, `-`, `.` and `_` (or non-ASCII, internationalized). The
    // url crate lets more through: a `,` most likely means two URLs glued together, whose
    // second password now sits in the path, so do not show the masked form either.
    if let Some(bad) = parsed.host.chars().find(|c| {
        c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    }) {
        let hint = if bad == ',' {
            "; to list several brokers, separate whole URLs with commas in `CQRS_AMQP_URL` or \
             pass them to `ConfigBuilder::amqp_urls`"
        } else {
            ""
        };
        return Err(format!(
            "the host contains `{bad}`, which a host name cannot{hint}; expected e.g. {EXAMPLE}"
        ));
    }
    // From here on the reasons can show where the problem is: the URL with its password masked.
    let redacted = Redacted(&parsed).to_string();

    if parsed.host.is_empty() {
        return Err(no_host(Some(&redacted)));
    }
    if parsed.port == 0 {
        return Err(format!(
            "port 0 in `{redacted}` is not a port a broker can listen on; expected 1..=65535"
        ));
    }
    if parsed.vhost.len() > MAX_VHOST_LEN {
        return Err(format!(
            "the virtual host of `{redacted}` is {} bytes long; AMQP allows at most {MAX_VHOST_LEN}",
            parsed.vhost.len()
        ));
    }
    if url.fragment().is_some() {
        return Err(format!(
            "a `#fragment` is not allowed in an AMQP URL (`{redacted}#...`); \
             percent-encode `#` as `%23` if it is part of the password"
        ));
    }

    for (key, value) in url.query_pairs() {
        let (k, v, r) = (key.as_ref(), value.as_ref(), redacted.as_str());
        match k {
            "heartbeat" => set_query_number(
                &mut parsed.heartbeat,
                k,
                v,
                "a whole number in 0..=65535",
                r,
            )?,
            "connection_timeout" => set_query_number(
                &mut parsed.connection_timeout_ms,
                k,
                v,
                "a whole number of milliseconds",
                r,
            )?,
            "frame_max" => set_query_number(
                &mut parsed.frame_max,
                k,
                v,
                "a whole number in 0..=4294967295",
                r,
            )?,
            "channel_max" => set_query_number(
                &mut parsed.channel_max,
                k,
                v,
                "a whole number in 0..=65535",
                r,
            )?,
            // Options of pika, the reference's client: a URL shared with Python services may
            // carry them. They tune pika's own behaviour, which this transport configures
            // through its own settings, so they are accepted and ignored.
            "blocked_connection_timeout"
            | "connection_attempts"
            | "retry_delay"
            | "socket_timeout"
            | "stack_timeout"
            | "locale"
            | "backpressure_detection"
            | "tcp_options"
            | "client_properties"
            | "ssl_options" => {
                tracing::debug!(parameter = %key, url = %redacted, "ignoring pika-only URL parameter");
            }
            _ => {
                return Err(format!(
                    "unknown query parameter `{key}` in `{redacted}`; accepted: {ACCEPTED_QUERY} (and pika's options, which are ignored)"
                ));
            }
        }
    }
    Ok(parsed)
}

/// Parses the value of a numeric query parameter.
/// Parses a numeric query parameter into its slot; a parameter given twice is an error.
fn set_query_number<T: FromStr>(
    slot: &mut Option<T>,
    key: &str,
    value: &str,
    accepted: &str,
    redacted: &str,
) -> std::result::Result<(), String> {
    if slot.is_some() {
        return Err(format!(
            "query parameter `{key}` is given twice in `{redacted}`"
        ));
    }
    let parsed = value.parse().map_err(|_| {
        format!("query parameter `{key}={value}` in `{redacted}` is invalid: expected {accepted}")
    })?;
    *slot = Some(parsed);
    Ok(())
}

fn wrong_scheme(found: Option<&str>) -> String {
    let found = match found {
        Some(scheme) => format!("the scheme is `{scheme}://`"),
        None => "the value does not start with a scheme".to_owned(),
    };
    format!("{found}; only `amqp://` (plain) or `amqps://` (TLS) URLs are accepted, e.g. {EXAMPLE}")
}

fn no_host(redacted: Option<&str>) -> String {
    match redacted {
        Some(redacted) => format!("the URL `{redacted}` has no host; expected e.g. {EXAMPLE}"),
        None => format!("the URL has an empty host; expected e.g. {EXAMPLE}"),
    }
}

/// Whether the authority of `input` has a user info with a `:` and nothing after it
/// (`amqp://user:@host`). Only called when the url crate found no password.
fn has_empty_password(input: &str) -> bool {
    let Some((_, rest)) = input.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as it is); `None` when the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let high = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
            let low = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
            if let (Some(high), Some(low)) = (high, low) {
                // Two hex digits make at most 0xff.
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Writes `s` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%xx`
/// (lower-case hex, so `/` is `%2f` as RabbitMQ's documentation writes it).
fn write_encoded(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            write!(f, "{}", byte as char)?;
        } else {
            write!(f, "%{byte:02x}")?;
        }
    }
    Ok(())
}

/// Displays a URL without its query string (used in parse errors).
struct Redacted<'a>(&'a AmqpUrl);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_base(f)
    }
}

#[cfg(test)]
mod tests;
