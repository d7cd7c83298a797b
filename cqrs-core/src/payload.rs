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
        let value: Value =
            serde_json::from_slice(body).map_err(|source| Error::NotJson { source })?;
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
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};
    use serde_json::json;

    const DAY: Duration = Duration::from_secs(86_400);

    fn valid() -> Value {
        json!({
            "signal_type": "SAVE",
            "cqrs_id": "author",
            "instance_data": {"id": 1, "cqrs_revision": 0, "cqrs_updated": "2026-11-28 18:21:11.910419+00:00"},
            "previous_data": {"name": null},
            "instance_pk": 1,
            "correlation_id": null,
            "retries": 0,
            "expires": "2026-11-29T18:21:11+00:00",
            "meta": {}
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut body = valid();
        body[key] = value;
        body
    }

    fn without(key: &str) -> Value {
        let mut body = valid();
        body.as_object_mut().unwrap().shift_remove(key);
        body
    }

    fn parse(value: Value) -> Result<Payload> {
        let from_value = Payload::from_value(value.clone());
        // Both entry points agree.
        let from_slice = Payload::from_slice(value.to_string().as_bytes());
        assert_eq!(
            format!("{from_value:?}"),
            format!("{from_slice:?}"),
            "from_value and from_slice disagree on {value}"
        );
        from_value
    }

    fn assert_wrong_type(key: &str, value: Value) {
        match parse(with(key, value.clone())) {
            Err(Error::WrongType { key: k, found, .. }) => {
                assert_eq!(k, key, "{key} = {value}");
                assert_eq!(found, JsonType::of(&value), "{key} = {value}");
            }
            other => panic!("{key} = {value}: expected WrongType, got {other:?}"),
        }
    }

    fn assert_invalid(key: &str, value: Value) -> String {
        match parse(with(key, value.clone())) {
            Err(Error::InvalidValue { key: k, reason }) => {
                assert_eq!(k, key, "{key} = {value}");
                reason
            }
            other => panic!("{key} = {value}: expected InvalidValue, got {other:?}"),
        }
    }

    fn received() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    #[test]
    fn signal_type_names_round_trip() {
        for (t, name) in [
            (SignalType::Save, "SAVE"),
            (SignalType::Delete, "DELETE"),
            (SignalType::Sync, "SYNC"),
        ] {
            assert_eq!(t.as_str(), name);
            assert_eq!(t.to_string(), name);
            assert_eq!(name.parse::<SignalType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<SignalType>(json!(name)).unwrap(),
                t
            );
        }
    }

    #[test]
    fn signal_type_rejects_other_spellings() {
        for bad in ["save", "Save", "UPDATE", "", " SAVE"] {
            match bad.parse::<SignalType>() {
                Err(Error::InvalidValue { key, reason }) => {
                    assert_eq!(key, "signal_type");
                    assert!(
                        reason.contains("\"SAVE\", \"DELETE\", \"SYNC\""),
                        "{reason}"
                    );
                }
                other => panic!("{bad:?}: expected InvalidValue, got {other:?}"),
            }
            assert!(serde_json::from_value::<SignalType>(json!(bad)).is_err());
        }
    }

    #[test]
    fn valid_body_parses_every_field() {
        let p = parse(valid()).unwrap();
        assert_eq!(p.signal_type, SignalType::Save);
        assert!(p.is_save() && !p.is_delete() && !p.is_sync());
        assert_eq!(p.cqrs_id, "author");
        assert_eq!(p.instance_data["id"], json!(1));
        assert_eq!(
            p.previous_data,
            Some(json!({"name": null}).as_object().unwrap().clone())
        );
        assert_eq!(p.instance_pk, json!(1));
        assert_eq!(p.correlation_id, None);
        assert_eq!(p.retries, 0);
        assert_eq!(
            p.expires,
            Expiry::At(parse_timestamp("2026-11-29T18:21:11+00:00").unwrap())
        );
        assert_eq!(p.meta, Some(json!({})));
        assert_eq!(p.to_value(), valid());
    }

    #[test]
    fn not_json_is_not_json() {
        for body in [
            &b"not json"[..],
            b"",
            b"{",
            b"{\"a\":1} trailing",
            b"\xEF\xBB",
        ] {
            assert!(
                matches!(Payload::from_slice(body), Err(Error::NotJson { .. })),
                "{body:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_not_json() {
        let mut body = valid().to_string().into_bytes();
        // Inside the cqrs_id string: "author" -> "\xFFuthor".
        let at = body.windows(6).position(|w| w == b"author").unwrap();
        body[at] = 0xFF;
        assert!(matches!(
            Payload::from_slice(&body),
            Err(Error::NotJson { .. })
        ));
    }

    #[test]
    fn deeply_nested_json_is_rejected_without_overflow() {
        let body = "[".repeat(100_000);
        assert!(matches!(
            Payload::from_slice(body.as_bytes()),
            Err(Error::NotJson { .. })
        ));
    }

    #[test]
    fn non_object_bodies_are_not_an_object() {
        for (body, found) in [
            ("[]", JsonType::Array),
            ("[1, 2]", JsonType::Array),
            ("\"SAVE\"", JsonType::String),
            ("42", JsonType::Number),
            ("null", JsonType::Null),
            ("true", JsonType::Bool),
        ] {
            match Payload::from_slice(body.as_bytes()) {
                Err(Error::NotAnObject { found: f }) => assert_eq!(f, found, "{body}"),
                other => panic!("{body}: expected NotAnObject, got {other:?}"),
            }
        }
    }

    #[test]
    fn each_missing_required_key_is_reported() {
        for key in ["instance_pk", "signal_type", "cqrs_id", "instance_data"] {
            match parse(without(key)) {
                Err(Error::MissingKey { key: k }) => assert_eq!(k, key),
                other => panic!("without {key}: expected MissingKey, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_keys_are_reported_in_reference_order() {
        match Payload::from_value(json!({})) {
            Err(Error::MissingKey { key }) => assert_eq!(key, "instance_pk"),
            other => panic!("expected MissingKey, got {other:?}"),
        }
        // A missing key wins over a wrong type elsewhere.
        let mut body = with("signal_type", json!(5));
        body.as_object_mut().unwrap().shift_remove("instance_data");
        assert!(matches!(
            Payload::from_value(body),
            Err(Error::MissingKey {
                key: "instance_data"
            })
        ));
    }

    #[test]
    fn optional_keys_default_when_absent() {
        let mut body = valid();
        for key in [
            "previous_data",
            "correlation_id",
            "retries",
            "expires",
            "meta",
        ] {
            body.as_object_mut().unwrap().shift_remove(key);
        }
        let p = parse(body).unwrap();
        assert_eq!(p.previous_data, None);
        assert_eq!(p.correlation_id, None);
        assert_eq!(p.retries, 0);
        assert_eq!(p.expires, Expiry::Unspecified);
        assert_eq!(p.meta, None);
    }

    #[test]
    fn null_optional_keys_default() {
        let p = parse(with("retries", Value::Null)).unwrap();
        assert_eq!(p.retries, 0);
        let p = parse(with("meta", Value::Null)).unwrap();
        assert_eq!(p.meta, None);
        let p = parse(with("previous_data", Value::Null)).unwrap();
        assert_eq!(p.previous_data, None);
        let p = parse(with("correlation_id", json!("abc"))).unwrap();
        assert_eq!(p.correlation_id.as_deref(), Some("abc"));
    }

    #[test]
    fn wrong_types_are_reported_with_their_key() {
        let cases: &[(&str, &[Value])] = &[
            (
                "signal_type",
                &[json!(1), Value::Null, json!(["SAVE"]), json!({})],
            ),
            (
                "cqrs_id",
                &[json!(1), Value::Null, json!(true), json!(["author"])],
            ),
            (
                "instance_data",
                &[Value::Null, json!([]), json!("{}"), json!(1)],
            ),
            (
                "previous_data",
                &[json!([]), json!("x"), json!(1), json!(false)],
            ),
            ("instance_pk", &[Value::Null, json!({"id": 1}), json!([1])]),
            (
                "correlation_id",
                &[json!(1), json!({}), json!([]), json!(true)],
            ),
            ("retries", &[json!("1"), json!([]), json!({}), json!(true)]),
            (
                "expires",
                &[json!(1_700_000_000), json!({}), json!([]), json!(false)],
            ),
            ("meta", &[json!([]), json!("x"), json!(1), json!(true)]),
        ];
        for (key, values) in cases {
            for value in values.iter() {
                assert_wrong_type(key, value.clone());
            }
        }
    }

    #[test]
    fn unknown_signal_type_is_invalid() {
        let reason = assert_invalid("signal_type", json!("UPDATE"));
        assert!(reason.contains("UPDATE"), "{reason}");
        assert_invalid("signal_type", json!("save"));
    }

    #[test]
    fn bad_expires_dates_are_invalid() {
        for bad in [
            "tomorrow",
            "2026-13-40T00:00:00+00:00",
            "",
            "2026-11-29T18:21:11",
            "2026-11-29",
        ] {
            assert_invalid("expires", json!(bad));
        }
    }

    #[test]
    fn expires_accepts_iso_spellings() {
        let expected = parse_timestamp("2026-11-29T18:21:11+00:00").unwrap();
        for s in [
            "2026-11-29T18:21:11Z",
            "2026-11-29 18:21:11+00:00",
            "2026-11-29T18:21:11.000000+00:00",
            "2026-11-29T13:21:11-05:00",
        ] {
            match parse(with("expires", json!(s))).unwrap().expires {
                Expiry::At(at) => assert_eq!(at, expected, "{s}"),
                other => panic!("{s}: expected At, got {other:?}"),
            }
        }
    }

    #[test]
    fn negative_retries_are_invalid() {
        assert_invalid("retries", json!(-1));
    }

    #[test]
    fn retries_larger_than_u32_are_invalid() {
        assert_invalid("retries", json!(u64::from(u32::MAX) + 1));
        assert_invalid("retries", json!(u64::MAX));
        assert_eq!(
            parse(with("retries", json!(u32::MAX))).unwrap().retries,
            u32::MAX
        );
    }

    #[test]
    fn fractional_retries_are_invalid() {
        assert_invalid("retries", json!(1.5));
    }

    #[test]
    fn pk_null_or_object_is_wrong_type() {
        assert_wrong_type("instance_pk", Value::Null);
        assert_wrong_type("instance_pk", json!({"id": 1}));
        assert_wrong_type("instance_pk", json!([1]));
    }

    #[test]
    fn pk_scalars_are_accepted() {
        for pk in [
            json!(1),
            json!("6cf873fd-0349-4f7d-b40d-4b093cfc3cec"),
            json!("2024-01-01"),
            json!(1.5),
            json!(true),
        ] {
            assert_eq!(
                parse(with("instance_pk", pk.clone())).unwrap().instance_pk,
                pk
            );
        }
    }

    #[test]
    fn unknown_top_level_keys_are_ignored() {
        let mut body = valid();
        body["queue"] = json!("replica_b");
        body["future_key"] = json!({"anything": [1, 2]});
        let p = parse(body).unwrap();
        assert_eq!(p.to_value(), valid());
    }

    #[test]
    fn absent_expires_is_unspecified_and_expires_one_ttl_after_receipt() {
        let p = parse(without("expires")).unwrap();
        assert_eq!(p.expires, Expiry::Unspecified);
        let due = received() + TimeDelta::seconds(86_400);
        assert_eq!(p.expires_at(received(), Some(DAY)), Some(due));
        assert!(!p.is_expired(due - TimeDelta::seconds(1), received(), Some(DAY)));
        assert!(p.is_expired(due, received(), Some(DAY)));
        // Without a default TTL it never expires.
        assert_eq!(p.expires_at(received(), None), None);
        assert!(!p.is_expired(received() + TimeDelta::days(10_000), received(), None));
        // A TTL too large to represent means never, not a panic.
        assert_eq!(p.expires_at(received(), Some(Duration::MAX)), None);
        // Serializing omits the key.
        assert!(p.to_value().get("expires").is_none());
    }

    #[test]
    fn null_expires_never_expires() {
        let p = parse(with("expires", Value::Null)).unwrap();
        assert_eq!(p.expires, Expiry::Never);
        assert_eq!(p.expires_at(received(), Some(DAY)), None);
        let far = Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap();
        assert!(!p.is_expired(far, received(), Some(DAY)));
        assert_eq!(p.to_value()["expires"], Value::Null);
    }

    #[test]
    fn explicit_expires_is_compared_in_utc() {
        let p = parse(with("expires", json!("2026-11-29T13:21:11-05:00"))).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 18, 21, 11).unwrap();
        // The default TTL does not apply to an explicit expiry.
        assert_eq!(
            p.expires_at(received(), Some(Duration::from_secs(1))),
            Some(at)
        );
        assert!(!p.is_expired(at - TimeDelta::seconds(1), received(), Some(DAY)));
        assert!(p.is_expired(at, received(), Some(DAY)));
        // The offset is kept when written again.
        assert_eq!(p.to_value()["expires"], json!("2026-11-29T13:21:11-05:00"));
    }

    #[test]
    fn expires_is_written_with_second_precision() {
        let p = parse(with("expires", json!("2026-11-29 18:21:11.999999Z"))).unwrap();
        assert_eq!(p.to_value()["expires"], json!("2026-11-29T18:21:11+00:00"));
    }

    #[test]
    fn with_ttl_truncates_to_seconds_or_never() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 28, 18, 21, 11)
            .unwrap()
            .with_nanosecond(910_419_000)
            .unwrap();
        let p = Payload::new(SignalType::Save, "author", json!(1), Map::new());
        let p = p.with_ttl(now, Some(DAY));
        assert_eq!(p.to_value()["expires"], json!("2026-11-29T18:21:11+00:00"));
        let p = p.with_ttl(now, None);
        assert_eq!(p.expires, Expiry::Never);
        let p = p.with_ttl(now, Some(Duration::MAX));
        assert_eq!(p.expires, Expiry::Never);
    }

    #[test]
    fn new_payload_serializes_in_reference_key_order() {
        let mut data = Map::new();
        data.insert("id".into(), json!(2));
        data.insert("cqrs_revision".into(), json!(1));
        data.insert(
            "cqrs_updated".into(),
            json!("2026-11-28 18:21:11.928644+00:00"),
        );
        let p = Payload::new(SignalType::Delete, "author", json!(2), data)
            .with_ttl(
                Utc.with_ymd_and_hms(2026, 11, 28, 18, 21, 11).unwrap(),
                Some(DAY),
            )
            .with_meta(Map::new());
        let text = String::from_utf8(p.to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"signal_type":"DELETE","cqrs_id":"author","instance_data":{"id":2,"cqrs_revision":1,"cqrs_updated":"2026-11-28 18:21:11.928644+00:00"},"previous_data":null,"instance_pk":2,"correlation_id":null,"retries":0,"expires":"2026-11-29T18:21:11+00:00","meta":{}}"#
        );
        assert_eq!(Payload::from_slice(text.as_bytes()).unwrap(), p);
    }

    #[test]
    fn new_payload_defaults_and_builders() {
        let p = Payload::new(SignalType::Sync, "author", json!("pk"), Map::new());
        assert_eq!(p.previous_data, None);
        assert_eq!(p.correlation_id, None);
        assert_eq!(p.retries, 0);
        assert_eq!(p.expires, Expiry::Unspecified);
        assert_eq!(p.meta, None);
        let value = p.to_value();
        assert_eq!(value["meta"], Value::Null);
        assert_eq!(value["previous_data"], Value::Null);

        let mut prev = Map::new();
        prev.insert("name".into(), Value::Null);
        let p = p
            .with_previous_data(prev.clone())
            .with_correlation_id("corr-1")
            .with_retries(3)
            .with_expires(Expiry::Never);
        assert_eq!(p.previous_data, Some(prev));
        assert_eq!(p.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(p.retries, 3);
        assert_eq!(p.expires, Expiry::Never);
        assert_eq!(Payload::from_slice(&p.to_vec()).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: truncations and byte flips of a valid body.
        let body = valid().to_string().into_bytes();
        for len in 0..body.len() {
            let _ = Payload::from_slice(&body[..len]);
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2_000 {
            let mut mutated = body.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % mutated.len() as u64) as usize;
                mutated[i] = (state >> 32) as u8;
            }
            let _ = Payload::from_slice(&mutated);
        }
    }
}
