//! How one model field is written in `instance_data`, exactly as django-cqrs writes it.
//!
//! [`WireValue`] is implemented for the Rust types a replicated column can have. The encodings
//! follow the wire contract:
//!
//! | Rust type | JSON | example |
//! | --- | --- | --- |
//! | `bool` | boolean | `true` |
//! | `i8` ... `i64`, `u8` ... `u64` | integer | `42` |
//! | `f32`, `f64` | number | `4.5`, `0.0` |
//! | `String` | string | `"Pavel"` |
//! | `Option<T>` | `null` or `T`'s encoding | `null` |
//! | [`chrono::NaiveDate`] | string | `"1990-05-17"` |
//! | [`chrono::DateTime<Utc>`] | string, Python's `str(datetime)` | `"2024-01-02 03:04:05.678901+00:00"` |
//! | [`chrono::NaiveDateTime`] | string, the same without offset | `"2024-01-02 03:04:05.678901"` |
//! | [`chrono::NaiveTime`] | string | `"03:04:05.678901"`, `"03:04:05"` |
//! | [`uuid::Uuid`] | string, lowercase hyphenated | `"12345678-1234-5678-1234-567812345678"` |
//! | [`serde_json::Value`] | as is | |
//! | `bigdecimal::BigDecimal` (feature `decimal`) | string of its exact digits (read from a string or a number) | `"12.340"` |
//!
//! Decoding is strict about JSON types (an integer is never read from a string, a string never
//! from a number; decimals, which Django REST writes as strings, are the exception) and liberal about timestamp spellings (see [`parse_timestamp`]).

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde_json::Value;

use crate::error::{Error, JsonType};

#[cfg(test)]
mod tests;
mod timestamp;

use timestamp::{Cursor, parse_parts, push_micros};
pub use timestamp::{format_timestamp, parse_timestamp};

/// Why a JSON value could not be decoded into a Rust value: a wrong JSON type, or the right
/// JSON type holding an unusable value (a malformed date, an out-of-range number).
///
/// It does not know which key it came from: [`ValueError::at`] adds the key and turns it into
/// the crate's [`Error`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected {expected}, found {found}{}", ReasonSuffix(.reason))]
pub struct ValueError {
    expected: &'static str,
    found: JsonType,
    reason: Option<String>,
}

/// Displays `: <reason>` when there is a reason, nothing otherwise.
struct ReasonSuffix<'a>(&'a Option<String>);

impl fmt::Display for ReasonSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

impl ValueError {
    /// The value has the wrong JSON type: `expected` says what was wanted (in words, e.g.
    /// `"a string"`), `found` is the value that was there instead.
    pub fn wrong_type(expected: &'static str, found: &Value) -> Self {
        ValueError {
            expected,
            found: JsonType::of(found),
            reason: None,
        }
    }

    /// The value has an acceptable JSON type but cannot be decoded; `reason` says why.
    pub fn invalid(expected: &'static str, found: &Value, reason: impl Into<String>) -> Self {
        ValueError {
            expected,
            found: JsonType::of(found),
            reason: Some(reason.into()),
        }
    }

    /// What was expected, in words (`"an integer (i32)"`, `"a date (YYYY-MM-DD)"`, ...).
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// The JSON type that was found.
    pub fn found(&self) -> JsonType {
        self.found
    }

    /// Why a value of an acceptable JSON type was rejected; `None` when the JSON type itself
    /// was wrong.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Whether the JSON type itself was wrong (rather than the value).
    pub fn is_wrong_type(&self) -> bool {
        self.reason.is_none()
    }

    /// Attaches the key (or `instance_data.<field>` path) the value was read from, giving
    /// [`Error::WrongType`] when the JSON type was wrong and [`Error::InvalidValue`] when the
    /// type was right but the value unusable.
    pub fn at(self, key: impl Into<String>) -> Error {
        let key = key.into();
        match self.reason {
            None => Error::WrongType {
                key,
                expected: self.expected,
                found: self.found,
            },
            Some(reason) => Error::InvalidValue {
                key,
                reason: format!("expected {}: {reason}", self.expected),
            },
        }
    }
}

/// How one model field is written in, and read from, `instance_data`.
///
/// Implementations must round-trip: `T::from_wire(&x.to_wire()) == Ok(x)` for every `x` the
/// wire can represent (timestamps at microsecond precision, floats that are finite).
pub trait WireValue: Sized {
    /// The JSON value the reference implementation would write for this value.
    fn to_wire(&self) -> Value;

    /// Reads a value written by the reference implementation (or by [`WireValue::to_wire`]).
    fn from_wire(value: &Value) -> Result<Self, ValueError>;

    /// Whether the wire can carry this value exactly: the master refuses to write a row
    /// holding one it cannot (NaN and infinities are not JSON numbers), instead of sending
    /// something else. Every value can, unless the type says otherwise.
    fn check_wire(&self) -> Result<(), ValueError> {
        Ok(())
    }
}

/// The error for a float JSON cannot carry.
fn not_finite(expected: &'static str, value: impl fmt::Display) -> ValueError {
    ValueError {
        expected,
        found: JsonType::Number,
        reason: Some(format!(
            "{value} cannot be written in JSON (NaN and infinities are not JSON numbers); \
             store a finite value or NULL"
        )),
    }
}

impl WireValue for bool {
    fn to_wire(&self) -> Value {
        Value::Bool(*self)
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Bool(b) => Ok(*b),
            other => Err(ValueError::wrong_type("a boolean", other)),
        }
    }
}

/// Integers are written as JSON integers and read only from JSON integers: a number with a
/// fraction or an exponent (`1.0`, `1e3`) is rejected rather than silently truncated, and a
/// value outside the target type's range is rejected rather than wrapped.
macro_rules! wire_integer {
    ($($t:ty),* $(,)?) => {$(
        impl WireValue for $t {
            fn to_wire(&self) -> Value {
                Value::from(*self)
            }

            fn from_wire(value: &Value) -> Result<Self, ValueError> {
                const EXPECTED: &str = concat!("an integer (", stringify!($t), ")");
                let Value::Number(n) = value else {
                    return Err(ValueError::wrong_type(EXPECTED, value));
                };
                let converted = if let Some(i) = n.as_i64() {
                    <$t>::try_from(i).ok()
                } else if let Some(u) = n.as_u64() {
                    <$t>::try_from(u).ok()
                } else {
                    return Err(ValueError::invalid(
                        EXPECTED,
                        value,
                        format!("{n} is not an integer (integers are written without fraction or exponent)"),
                    ));
                };
                converted.ok_or_else(|| {
                    ValueError::invalid(
                        EXPECTED,
                        value,
                        format!("{n} is out of range {}..={}", <$t>::MIN, <$t>::MAX),
                    )
                })
            }
        }
    )*};
}

wire_integer!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Written in its shortest form that reads back to the same bits (as Python's `repr`), read
/// back exactly (serde_json's `float_roundtrip`): every finite `f64`, subnormals and `-0.0`
/// included, round-trips bit for bit. A NaN or an infinity fails [`WireValue::check_wire`], so
/// the master refuses to write it; `to_wire` alone would give `null`. Decoding accepts any JSON
/// number, integers included.
impl WireValue for f64 {
    fn to_wire(&self) -> Value {
        serde_json::Number::from_f64(*self).map_or(Value::Null, Value::Number)
    }

    fn check_wire(&self) -> Result<(), ValueError> {
        if self.is_finite() {
            Ok(())
        } else {
            Err(not_finite("a finite number (f64)", self))
        }
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        const EXPECTED: &str = "a number (f64)";
        let Value::Number(n) = value else {
            return Err(ValueError::wrong_type(EXPECTED, value));
        };
        match n.as_f64() {
            Some(f) if f.is_finite() => Ok(f),
            _ => Err(ValueError::invalid(
                EXPECTED,
                value,
                format!("{n} is not a finite f64"),
            )),
        }
    }
}

/// A decimal (Diesel's `Numeric`) is written as a JSON string of its exact digits and scale,
/// `"12.340"`, as Django REST serializers write a `Decimal`: no float is on the way, so every
/// digit survives. A django-cqrs replica reads it like the dates it also receives as strings
/// (Django's `DecimalField` converts a string on save).
///
/// Decoding takes that string, and also a JSON number, as django-cqrs masters write
/// `Decimal`s: serde_json reads a number as an `f64`, and the decimal is that float's shortest
/// text, so a number written as a float's shortest form (as Python writes every float) comes
/// back with the same digits; digits beyond an `f64`'s 17 are lost in a number, never in a string.
#[cfg(feature = "decimal")]
impl WireValue for bigdecimal::BigDecimal {
    fn to_wire(&self) -> Value {
        Value::String(self.to_plain_string())
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        use std::str::FromStr;
        const EXPECTED: &str = "a decimal number";
        let text = match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            other => return Err(ValueError::wrong_type(EXPECTED, other)),
        };
        bigdecimal::BigDecimal::from_str(&text).map_err(|error| {
            ValueError::invalid(
                EXPECTED,
                value,
                format!("{text:?} is not a decimal: {error}"),
            )
        })
    }
}

/// Encoded through its shortest decimal representation, so `0.1_f32` is written `0.1` (as a
/// Python service reading the same `real` column would write it), not
/// `0.10000000149011612`; read back, it rounds to the same `f32`, bit for bit. A NaN or an
/// infinity fails [`WireValue::check_wire`]. Decoding accepts any JSON number within the range
/// of `f32` (rounding to the nearest `f32`).
impl WireValue for f32 {
    fn to_wire(&self) -> Value {
        let wide = self.to_string().parse::<f64>().unwrap_or(f64::from(*self));
        wide.to_wire()
    }

    fn check_wire(&self) -> Result<(), ValueError> {
        if self.is_finite() {
            Ok(())
        } else {
            Err(not_finite("a finite number (f32)", self))
        }
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        const EXPECTED: &str = "a number (f32)";
        let Value::Number(n) = value else {
            return Err(ValueError::wrong_type(EXPECTED, value));
        };
        match n.as_f64().map(|f| f as f32) {
            Some(f) if f.is_finite() => Ok(f),
            _ => Err(ValueError::invalid(
                EXPECTED,
                value,
                format!("{n} is out of range for f32"),
            )),
        }
    }
}

impl WireValue for String {
    fn to_wire(&self) -> Value {
        Value::String(self.clone())
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            other => Err(ValueError::wrong_type("a string", other)),
        }
    }
}

/// `None` is `null`; anything else is decoded as `T`.
impl<T: WireValue> WireValue for Option<T> {
    fn to_wire(&self) -> Value {
        match self {
            Some(v) => v.to_wire(),
            None => Value::Null,
        }
    }

    fn check_wire(&self) -> Result<(), ValueError> {
        match self {
            Some(v) => v.check_wire(),
            None => Ok(()),
        }
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_wire(other).map(Some),
        }
    }
}

/// Any JSON value, written and read as is (never fails).
impl WireValue for Value {
    fn to_wire(&self) -> Value {
        self.clone()
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        Ok(value.clone())
    }
}

/// Lowercase hyphenated on the wire; decoding accepts every form [`uuid::Uuid::parse_str`]
/// does (hyphenated, simple, braced, URN; any case).
impl WireValue for uuid::Uuid {
    fn to_wire(&self) -> Value {
        Value::String(self.hyphenated().to_string())
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        const EXPECTED: &str = "a UUID string";
        let Value::String(s) = value else {
            return Err(ValueError::wrong_type(EXPECTED, value));
        };
        uuid::Uuid::parse_str(s)
            .map_err(|e| ValueError::invalid(EXPECTED, value, format!("{} ({e})", quoted(s))))
    }
}

const EXPECTED_DATE: &str = "a date (YYYY-MM-DD)";
const EXPECTED_TIMESTAMP: &str =
    "an ISO 8601 timestamp with UTC offset (YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM)";
const EXPECTED_NAIVE_TIMESTAMP: &str = "an ISO 8601 timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])";
const EXPECTED_TIME: &str = "a time of day (HH:MM:SS[.ffffff])";

/// `1990-05-17`: exactly `YYYY-MM-DD` on decode. Like Python, the wire covers the years
/// 0001 to 9999; a date outside 0000..=9999 is written in chrono's extended form (`+10000-01-01`)
/// that decoding rejects.
impl WireValue for NaiveDate {
    fn to_wire(&self) -> Value {
        Value::String(self.format("%Y-%m-%d").to_string())
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        let Value::String(s) = value else {
            return Err(ValueError::wrong_type(EXPECTED_DATE, value));
        };
        let mut cursor = Cursor::new(s);
        let date = cursor
            .date()
            .and_then(|d| cursor.end().map(|()| d))
            .map_err(|reason| ValueError::invalid(EXPECTED_DATE, value, reason))?;
        Ok(date)
    }
}

/// Python's `str(datetime)` in UTC (see [`format_timestamp`]). Decoding accepts what
/// [`parse_timestamp`] accepts, converts to UTC and truncates to microseconds (the precision
/// of the reference and of the databases it runs on), so encoding a decoded value is stable.
/// A timestamp without offset is rejected: its meaning would depend on the sender's zone.
impl WireValue for DateTime<Utc> {
    fn to_wire(&self) -> Value {
        Value::String(format_timestamp(self))
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        let Value::String(s) = value else {
            return Err(ValueError::wrong_type(EXPECTED_TIMESTAMP, value));
        };
        let ts = parse_timestamp(s)?;
        Ok(truncate_to_micros(ts.with_timezone(&Utc)))
    }
}

/// `2024-01-02 03:04:05.678901` (no fraction when the microseconds are zero). Decoding accepts
/// the spellings [`parse_timestamp`] accepts, with or without offset; a timestamp with an
/// offset is converted to UTC (as Django stores aware values in a naive column), then
/// truncated to microseconds.
impl WireValue for NaiveDateTime {
    fn to_wire(&self) -> Value {
        let mut out = self.format("%Y-%m-%d %H:%M:%S").to_string();
        push_micros(&mut out, self.nanosecond());
        Value::String(out)
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        let Value::String(s) = value else {
            return Err(ValueError::wrong_type(EXPECTED_NAIVE_TIMESTAMP, value));
        };
        let (naive, offset) = parse_parts(s)
            .map_err(|reason| ValueError::invalid(EXPECTED_NAIVE_TIMESTAMP, value, reason))?;
        let naive = match offset {
            // `naive - offset` is the UTC time; checked because of the edges of chrono's range.
            Some(offset) => naive.checked_sub_offset(offset).ok_or_else(|| {
                ValueError::invalid(
                    EXPECTED_NAIVE_TIMESTAMP,
                    value,
                    format!("{} is out of range", quoted(s)),
                )
            })?,
            None => naive,
        };
        Ok(truncate_naive_to_micros(naive))
    }
}

/// `03:04:05.678901`, or `03:04:05` when the microseconds are zero. Decoding accepts a fraction
/// of up to 9 digits (truncated to microseconds) and no offset.
impl WireValue for NaiveTime {
    fn to_wire(&self) -> Value {
        let mut out = self.format("%H:%M:%S").to_string();
        push_micros(&mut out, self.nanosecond());
        Value::String(out)
    }

    fn from_wire(value: &Value) -> Result<Self, ValueError> {
        let Value::String(s) = value else {
            return Err(ValueError::wrong_type(EXPECTED_TIME, value));
        };
        let mut cursor = Cursor::new(s);
        let time = cursor
            .time()
            .and_then(|t| cursor.end().map(|()| t))
            .map_err(|reason| ValueError::invalid(EXPECTED_TIME, value, reason))?;
        Ok(time
            .with_nanosecond(time.nanosecond() / 1_000 * 1_000)
            .unwrap_or(time))
    }
}

fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.with_nanosecond(ts.nanosecond() / 1_000 * 1_000)
        .unwrap_or(ts)
}

fn truncate_naive_to_micros(ts: NaiveDateTime) -> NaiveDateTime {
    ts.with_nanosecond(ts.nanosecond() / 1_000 * 1_000)
        .unwrap_or(ts)
}

/// The input, quoted, and shortened when long (error messages end up in logs and headers).
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    if s.chars().count() <= MAX_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    }
}
