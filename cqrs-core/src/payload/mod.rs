//! The message body shared with django-cqrs: [`Payload`], [`SignalType`] and [`Expiry`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SubsecRound, TimeDelta, Utc};
use serde_json::{Map, Value};

use crate::encoding::{WireValue, parse_timestamp};
use crate::error::{Error, JsonType, Result};

/// What happened to the replicated row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SignalType {
    /// The row was created or updated (`"SAVE"`).
    Save,
    /// The row was deleted (`"DELETE"`).
    Delete,
    /// The row is sent again on request, to repair a replica (`"SYNC"`).
    Sync,
}

impl SignalType {
    /// Every signal type.
    pub const ALL: [SignalType; 3] = [SignalType::Save, SignalType::Delete, SignalType::Sync];

    /// The name on the wire: `"SAVE"`, `"DELETE"` or `"SYNC"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalType::Save => "SAVE",
            SignalType::Delete => "DELETE",
            SignalType::Sync => "SYNC",
        }
    }
}

impl fmt::Display for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignalType {
    type Err = Error;

    /// Parses the exact wire name (case-sensitive, as the reference compares it); anything else
    /// is [`Error::InvalidValue`] for the key `signal_type`.
    fn from_str(s: &str) -> Result<Self> {
        SignalType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::InvalidValue {
                key: "signal_type".to_owned(),
                reason: format!(
                    "unknown signal type {s:?}; accepted values: \"SAVE\", \"DELETE\", \"SYNC\""
                ),
            })
    }
}

/// When a message stops being worth applying (the body's `expires` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `"expires": null`: the message never expires.
    Never,
    /// `"expires": "2026-11-29T18:21:11+00:00"`: the message expires at that instant.
    /// Written with second precision and the stored offset.
    At(DateTime<FixedOffset>),
    /// The body has no `expires` key (old senders). Like the reference, the message is treated
    /// as expiring one default TTL after it was received; when serialized the key is omitted.
    Unspecified,
}

impl Expiry {
    /// The wire value, or `None` when the key must be omitted.
    fn to_wire(self) -> Option<Value> {
        match self {
            Expiry::Never => Some(Value::Null),
            Expiry::At(at) => Some(Value::String(at.format("%Y-%m-%dT%H:%M:%S%:z").to_string())),
            Expiry::Unspecified => None,
        }
    }
}

const SIGNAL_TYPE: &str = "signal_type";
const CQRS_ID: &str = "cqrs_id";
const INSTANCE_DATA: &str = "instance_data";
const PREVIOUS_DATA: &str = "previous_data";
const INSTANCE_PK: &str = "instance_pk";
const CORRELATION_ID: &str = "correlation_id";
const RETRIES: &str = "retries";
const EXPIRES: &str = "expires";
const META: &str = "meta";

/// The keys the wire protocol requires when consuming, in the order the reference checks them.
const REQUIRED: [&str; 4] = [INSTANCE_PK, SIGNAL_TYPE, CQRS_ID, INSTANCE_DATA];

/// One message body, as django-cqrs publishes and consumes it.
///
/// Parse with [`Payload::from_slice`] or [`Payload::from_value`]; write with
/// [`Payload::to_vec`] or [`Payload::to_value`]. Decoding never panics, whatever the input, and
/// tells precisely what is wrong (see [`Error::is_malformed_input`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// What happened.
    pub signal_type: SignalType,
    /// The model's id shared by master and replicas.
    pub cqrs_id: String,
    /// The row: each field under its name, plus `cqrs_revision` and `cqrs_updated`. For a
    /// DELETE only `id`, `cqrs_revision` and `cqrs_updated` (plus an optional `custom`).
    pub instance_data: Map<String, Value>,
    /// Old values of the tracked fields (`null` on the wire when `None`).
    pub previous_data: Option<Map<String, Value>>,
    /// The primary key: a JSON scalar (string, number or boolean). Dates and UUIDs are strings.
    pub instance_pk: Value,
    /// The correlation id of the process that produced the message.
    pub correlation_id: Option<String>,
    /// How many times a replica has retried this message.
    pub retries: u32,
    /// When the message expires.
    pub expires: Expiry,
    /// Free-form metadata: a JSON object, or `None` (`null` on the wire). The reference sends
    /// `{}` when there is none; set `Some(json!({}))` to do the same.
    pub meta: Option<Value>,
}

impl Payload {
    /// A payload with the required fields; no previous data, no correlation id, no retries,
    /// no `expires` key, `meta` null.
    pub fn new(
        signal_type: SignalType,
        cqrs_id: impl Into<String>,
        instance_pk: Value,
        instance_data: Map<String, Value>,
    ) -> Payload {
        Payload {
            signal_type,
            cqrs_id: cqrs_id.into(),
            instance_data,
            previous_data: None,
            instance_pk,
            correlation_id: None,
            retries: 0,
            expires: Expiry::Unspecified,
            meta: None,
        }
    }

    /// Sets the old values of the tracked fields.
    pub fn with_previous_data(mut self, previous_data: Map<String, Value>) -> Payload {
        self.previous_data = Some(previous_data);
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Payload {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sets the metadata object.
    pub fn with_meta(mut self, meta: Map<String, Value>) -> Payload {
        self.meta = Some(Value::Object(meta));
        self
    }

    /// Sets the retry count.
    pub fn with_retries(mut self, retries: u32) -> Payload {
        self.retries = retries;
        self
    }

    /// Sets the expiry.
    pub fn with_expires(mut self, expires: Expiry) -> Payload {
        self.expires = expires;
        self
    }

    /// Sets the expiry as the reference's master does: `now + ttl` truncated to whole seconds,
    /// in UTC; no TTL means [`Expiry::Never`]. A TTL so large that the instant cannot be
    /// represented also gives [`Expiry::Never`].
    pub fn with_ttl(mut self, now: DateTime<Utc>, ttl: Option<Duration>) -> Payload {
        self.expires = ttl
            .and_then(|ttl| add_duration(now, ttl))
            .map_or(Expiry::Never, |at| {
                Expiry::At(at.trunc_subsecs(0).fixed_offset())
            });
        self
    }

    /// Whether this is a SAVE.
    pub fn is_save(&self) -> bool {
        self.signal_type == SignalType::Save
    }

    /// Whether this is a DELETE.
    pub fn is_delete(&self) -> bool {
        self.signal_type == SignalType::Delete
    }

    /// Whether this is a SYNC.
    pub fn is_sync(&self) -> bool {
        self.signal_type == SignalType::Sync
    }

    /// Parses a message body.
    ///
    /// Errors: [`Error::NotJson`] when the body is not UTF-8 JSON, [`Error::NotAnObject`] when
    /// it is not a JSON object, and otherwise as [`Payload::from_value`].
    pub fn from_slice(body: &[u8]) -> Result<Payload> {
        let value: Value = serde_json::from_slice(body).map_err(|source| {
            if has_non_finite_literal(body) {
                Error::InvalidValue {
                    key: "instance_data".to_owned(),
                    reason: format!(
                        "the body holds NaN or Infinity, which JSON cannot carry (Python's json \
                         module writes them for float('nan') and float('inf')); the master must \
                         store a finite value ({source})"
                    ),
                }
            } else {
                Error::NotJson { source }
            }
        })?;
        Payload::from_value(value)
    }

    /// Reads a message body already parsed as JSON.
    ///
    /// - Not an object: [`Error::NotAnObject`].
    /// - `instance_pk`, `signal_type`, `cqrs_id` or `instance_data` absent:
    ///   [`Error::MissingKey`] (the first missing one in that order).
    /// - A key holding the wrong JSON type: [`Error::WrongType`] with the key. `instance_pk`
    ///   must be a string, a number or a boolean (not null, an array or an object).
    /// - A key of the right type with an unusable value: [`Error::InvalidValue`] (unknown
    ///   signal type, `expires` that is not an ISO 8601 timestamp with offset, `retries`
    ///   negative, fractional or above `u32::MAX`).
    ///
    /// Optional keys default as in the reference: `previous_data`, `correlation_id` and `meta`
    /// to `None`, `retries` to 0 (also when null), `expires` to [`Expiry::Unspecified`] when
    /// absent (null is [`Expiry::Never`]). Unknown top-level keys are ignored, so that newer
    /// senders can add keys; they are not kept and not written again by [`Payload::to_value`].
    pub fn from_value(value: Value) -> Result<Payload> {
        let mut body = match value {
            Value::Object(map) => map,
            other => {
                return Err(Error::NotAnObject {
                    found: JsonType::of(&other),
                });
            }
        };
        if let Some(key) = REQUIRED.into_iter().find(|key| !body.contains_key(*key)) {
            return Err(Error::MissingKey { key });
        }

        let signal_type = match body.get(SIGNAL_TYPE) {
            Some(Value::String(s)) => s.parse::<SignalType>()?,
            other => return Err(wrong_type(SIGNAL_TYPE, "a string", other)),
        };
        let cqrs_id = match body.remove(CQRS_ID) {
            Some(Value::String(s)) => s,
            other => return Err(wrong_type(CQRS_ID, "a string", other.as_ref())),
        };
        let instance_data = match body.remove(INSTANCE_DATA) {
            Some(Value::Object(map)) => map,
            other => return Err(wrong_type(INSTANCE_DATA, "an object", other.as_ref())),
        };
        let previous_data = match body.remove(PREVIOUS_DATA) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(wrong_type(PREVIOUS_DATA, "an object or null", Some(&other)));
            }
        };
        let instance_pk = match body.remove(INSTANCE_PK) {
            Some(pk @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => pk,
            other => {
                return Err(wrong_type(
                    INSTANCE_PK,
                    "a JSON scalar (a string, a number or a boolean)",
                    other.as_ref(),
                ));
            }
        };
        let correlation_id = match body.remove(CORRELATION_ID) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(wrong_type(CORRELATION_ID, "a string or null", Some(&other)));
            }
        };
        let retries = match body.get(RETRIES) {
            None | Some(Value::Null) => 0,
            Some(value) => u32::from_wire(value).map_err(|e| e.at(RETRIES))?,
        };
        let expires = match body.get(EXPIRES) {
            None => Expiry::Unspecified,
            Some(Value::Null) => Expiry::Never,
            Some(Value::String(s)) => Expiry::At(parse_timestamp(s).map_err(|e| e.at(EXPIRES))?),
            other => {
                return Err(wrong_type(
                    EXPIRES,
                    "an ISO 8601 timestamp string or null",
                    other,
                ));
            }
        };
        let meta = match body.remove(META) {
            None | Some(Value::Null) => None,
            Some(meta @ Value::Object(_)) => Some(meta),
            Some(other) => return Err(wrong_type(META, "an object or null", Some(&other))),
        };

        Ok(Payload {
            signal_type,
            cqrs_id,
            instance_data,
            previous_data,
            instance_pk,
            correlation_id,
            retries,
            expires,
            meta,
        })
    }

    /// The body as a JSON value, with the keys in the reference's order: `signal_type`,
    /// `cqrs_id`, `instance_data`, `previous_data`, `instance_pk`, `correlation_id`, `retries`,
    /// `expires` (omitted when [`Expiry::Unspecified`]), `meta`. `None` fields are written as
    /// `null`. The fields are written as they are: a `meta` or `instance_pk` set to a value the
    /// protocol does not allow is written anyway (and rejected by [`Payload::from_value`]).
    pub fn to_value(&self) -> Value {
        let mut body = Map::with_capacity(9);
        body.insert(
            SIGNAL_TYPE.to_owned(),
            Value::String(self.signal_type.as_str().to_owned()),
        );
        body.insert(CQRS_ID.to_owned(), Value::String(self.cqrs_id.clone()));
        body.insert(
            INSTANCE_DATA.to_owned(),
            Value::Object(self.instance_data.clone()),
        );
        body.insert(
            PREVIOUS_DATA.to_owned(),
            self.previous_data
                .clone()
                .map_or(Value::Null, Value::Object),
        );
        body.insert(INSTANCE_PK.to_owned(), self.instance_pk.clone());
        body.insert(
            CORRELATION_ID.to_owned(),
            self.correlation_id
                .clone()
                .map_or(Value::Null, Value::String),
        );
        body.insert(RETRIES.to_owned(), Value::from(self.retries));
        if let Some(expires) = self.expires.to_wire() {
            body.insert(EXPIRES.to_owned(), expires);
        }
        body.insert(META.to_owned(), self.meta.clone().unwrap_or(Value::Null));
        Value::Object(body)
    }

    /// The body as compact UTF-8 JSON, ready to publish (see [`Payload::to_value`]).
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }

    /// When this message expires: the `expires` instant in UTC; for a body without the key,
    /// `received_at + default_ttl` (no TTL, or one too large to represent, means never);
    /// `None` means never.
    pub fn expires_at(
        &self,
        received_at: DateTime<Utc>,
        default_ttl: Option<Duration>,
    ) -> Option<DateTime<Utc>> {
        match self.expires {
            Expiry::Never => None,
            Expiry::At(at) => Some(at.with_timezone(&Utc)),
            Expiry::Unspecified => default_ttl.and_then(|ttl| add_duration(received_at, ttl)),
        }
    }

    /// Whether the message has expired at `now` (as in the reference, a message expiring
    /// exactly at `now` has). See [`Payload::expires_at`] for the other arguments.
    pub fn is_expired(
        &self,
        now: DateTime<Utc>,
        received_at: DateTime<Utc>,
        default_ttl: Option<Duration>,
    ) -> bool {
        self.expires_at(received_at, default_ttl)
            .is_some_and(|at| at <= now)
    }
}

/// Whether `body` holds a `NaN`, `Infinity` or `-Infinity` literal where a JSON value starts
/// (after `:`, `[` or `,`), as Python's `json.dumps` writes non-finite floats.
fn has_non_finite_literal(body: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut after_separator = false;
    for (i, &byte) in body.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                after_separator = false;
            }
            b':' | b'[' | b',' => after_separator = true,
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ if after_separator => {
                let rest = &body[i..];
                if rest.starts_with(b"NaN")
                    || rest.starts_with(b"Infinity")
                    || rest.starts_with(b"-Infinity")
                {
                    return true;
                }
                after_separator = false;
            }
            _ => {}
        }
    }
    false
}

/// `at + duration`, or `None` when it cannot be represented.
fn add_duration(at: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
    at.checked_add_signed(TimeDelta::from_std(duration).ok()?)
}

/// [`Error::WrongType`] for `key`; an absent value counts as null.
fn wrong_type(key: &str, expected: &'static str, found: Option<&Value>) -> Error {
    Error::WrongType {
        key: key.to_owned(),
        expected,
        found: found.map_or(JsonType::Null, JsonType::of),
    }
}

#[cfg(test)]
mod tests;
