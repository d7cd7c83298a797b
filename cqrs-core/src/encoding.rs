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
//!
//! Decoding is strict about JSON types (an integer is never read from a string, a string never
//! from a number) and liberal about timestamp spellings (see [`parse_timestamp`]).

use std::fmt;

use chrono::{
    DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc,
};
use serde_json::Value;

use crate::error::{Error, JsonType};

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

/// Encoding a NaN or an infinity gives `null` (JSON has no such numbers; the reference's
/// encoder would fail instead). Decoding accepts any JSON number, integers included.
impl WireValue for f64 {
    fn to_wire(&self) -> Value {
        serde_json::Number::from_f64(*self).map_or(Value::Null, Value::Number)
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

/// Encoded through its shortest decimal representation, so `0.1_f32` is written `0.1` (as a
/// Python service reading the same `real` column would write it), not
/// `0.10000000149011612`. A NaN or an infinity gives `null`. Decoding accepts any JSON number
/// within the range of `f32` (rounding to the nearest `f32`).
impl WireValue for f32 {
    fn to_wire(&self) -> Value {
        let wide = self.to_string().parse::<f64>().unwrap_or(f64::from(*self));
        wide.to_wire()
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

/// Formats a timestamp as Python's `str(datetime)` does for an aware UTC value, the way the
/// reference writes `cqrs_updated` and every timestamp field: `2024-01-02 03:04:05.678901+00:00`,
/// and `2024-06-01 00:00:00+00:00` when the microseconds are zero. Sub-microsecond digits are
/// truncated.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    let mut out = ts.format("%Y-%m-%d %H:%M:%S").to_string();
    push_micros(&mut out, ts.nanosecond());
    out.push_str("+00:00");
    out
}

/// Parses an ISO 8601 timestamp with a UTC offset, in any of the spellings the reference and
/// other ISO 8601 writers produce:
///
/// - date `YYYY-MM-DD`, then `T`, `t` or a space, then `HH:MM:SS`;
/// - an optional fraction of 1 to 9 digits (`.678901`, `.123456789`);
/// - an offset: `Z`/`z`, `+HH:MM`, `-HH:MM`, `+HHMM` or `+HH` (hours up to 23).
///
/// A timestamp without offset, with trailing text, or naming a date or time that does not
/// exist is rejected. The result keeps the offset and the full fraction (nanoseconds).
pub fn parse_timestamp(s: &str) -> Result<DateTime<FixedOffset>, ValueError> {
    let invalid = |reason: String| ValueError {
        expected: EXPECTED_TIMESTAMP,
        found: JsonType::String,
        reason: Some(reason),
    };
    let (naive, offset) = parse_parts(s).map_err(invalid)?;
    let offset = offset.ok_or_else(|| {
        invalid(format!(
            "{} has no UTC offset (add `+00:00` or `Z`)",
            quoted(s)
        ))
    })?;
    offset
        .from_local_datetime(&naive)
        .single()
        .ok_or_else(|| invalid(format!("{} is out of range", quoted(s))))
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][offset]`; the offset is optional here.
fn parse_parts(s: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), String> {
    let mut cursor = Cursor::new(s);
    let date = cursor.date()?;
    match cursor.peek() {
        Some(b'T' | b't' | b' ') => cursor.pos += 1,
        _ => {
            return Err(format!(
                "{}: expected `T` or a space after the date",
                quoted(s)
            ));
        }
    }
    let time = cursor.time()?;
    let offset = cursor.offset()?;
    cursor.end()?;
    Ok((date.and_time(time), offset))
}

/// A byte cursor over an ASCII timestamp; it never slices the `str`, so non-ASCII input cannot
/// make it panic.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn fail(&self, what: &str) -> String {
        format!("{}: {what} at byte {}", quoted(self.text), self.pos)
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize, what: &str) -> Result<u32, String> {
        let mut value = 0u32;
        for _ in 0..n {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    value = value * 10 + u32::from(b - b'0');
                    self.pos += 1;
                }
                _ => return Err(self.fail(&format!("expected {n} digits of the {what}"))),
            }
        }
        Ok(value)
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(&format!("expected `{}`", char::from(byte))))
        }
    }

    fn date(&mut self) -> Result<NaiveDate, String> {
        let year = self.digits(4, "year")?;
        self.expect(b'-')?;
        let month = self.digits(2, "month")?;
        self.expect(b'-')?;
        let day = self.digits(2, "day")?;
        // Four digits always fit in an i32.
        let year = i32::try_from(year).unwrap_or(i32::MAX);
        NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| {
            format!(
                "{}: there is no date {year:04}-{month:02}-{day:02}",
                quoted(self.text)
            )
        })
    }

    fn time(&mut self) -> Result<NaiveTime, String> {
        let hour = self.digits(2, "hour")?;
        self.expect(b':')?;
        let minute = self.digits(2, "minute")?;
        self.expect(b':')?;
        let second = self.digits(2, "second")?;
        let mut nanos = 0u32;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let start = self.pos;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                if self.pos - start == 9 {
                    return Err(self.fail("more than 9 digits of fraction"));
                }
                nanos = nanos * 10 + u32::from(b - b'0');
                self.pos += 1;
            }
            let count = self.pos - start;
            if count == 0 {
                return Err(self.fail("expected digits after `.`"));
            }
            for _ in count..9 {
                nanos *= 10;
            }
        }
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos).ok_or_else(|| {
            format!(
                "{}: there is no time {hour:02}:{minute:02}:{second:02}",
                quoted(self.text)
            )
        })
    }

    /// `Z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing.
    fn offset(&mut self) -> Result<Option<FixedOffset>, String> {
        let sign = match self.peek() {
            None => return Ok(None),
            Some(b'Z' | b'z') => {
                self.pos += 1;
                return Ok(Some(Utc.fix()));
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return Err(self.fail("expected `Z`, `+HH:MM` or `-HH:MM`")),
        };
        self.pos += 1;
        let hours = self.digits(2, "offset hours")?;
        let minutes = match self.peek() {
            Some(b':') => {
                self.pos += 1;
                self.digits(2, "offset minutes")?
            }
            Some(b'0'..=b'9') => self.digits(2, "offset minutes")?,
            _ => 0,
        };
        if hours > 23 || minutes > 59 {
            return Err(format!(
                "{}: offset {hours:02}:{minutes:02} is out of range",
                quoted(self.text)
            ));
        }
        // At most 23 * 3600 + 59 * 60, so the conversion cannot fail.
        let seconds = i32::try_from(hours * 3600 + minutes * 60).unwrap_or(0) * sign;
        FixedOffset::east_opt(seconds)
            .map(Some)
            .ok_or_else(|| self.fail("offset out of range"))
    }

    fn end(&self) -> Result<(), String> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.fail("unexpected trailing text"))
        }
    }
}

/// Appends `.ffffff` unless the microseconds are zero (a leap second's extra second is ignored).
fn push_micros(out: &mut String, nanosecond: u32) {
    let micros = nanosecond % 1_000_000_000 / 1_000;
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T: WireValue + PartialEq + fmt::Debug>(value: T, wire: Value) {
        assert_eq!(value.to_wire(), wire, "encoding {value:?}");
        assert_eq!(T::from_wire(&wire), Ok(value), "decoding {wire}");
    }

    fn utc(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap().with_timezone(&Utc)
    }

    fn assert_invalid<T: WireValue + fmt::Debug>(wire: Value) -> ValueError {
        let err = T::from_wire(&wire).expect_err(&format!("{wire} must be rejected"));
        assert!(
            !err.is_wrong_type(),
            "{wire}: expected a value error, got {err}"
        );
        err
    }

    fn assert_wrong_type<T: WireValue + fmt::Debug>(wire: Value) -> ValueError {
        let err = T::from_wire(&wire).expect_err(&format!("{wire} must be rejected"));
        assert!(
            err.is_wrong_type(),
            "{wire}: expected a type error, got {err}"
        );
        assert_eq!(err.found(), JsonType::of(&wire));
        err
    }

    #[test]
    fn bool_round_trips_and_rejects_other_types() {
        round_trip(true, json!(true));
        round_trip(false, json!(false));
        assert_wrong_type::<bool>(json!(1));
        assert_wrong_type::<bool>(json!("true"));
        assert_wrong_type::<bool>(Value::Null);
    }

    #[test]
    fn integers_round_trip_at_their_boundaries() {
        round_trip(i8::MIN, json!(-128));
        round_trip(i8::MAX, json!(127));
        round_trip(i16::MIN, json!(i16::MIN));
        round_trip(i16::MAX, json!(i16::MAX));
        round_trip(i32::MIN, json!(i32::MIN));
        round_trip(i32::MAX, json!(i32::MAX));
        round_trip(i64::MIN, json!(i64::MIN));
        round_trip(i64::MAX, json!(i64::MAX));
        round_trip(0u8, json!(0));
        round_trip(u8::MAX, json!(255));
        round_trip(u16::MAX, json!(65535));
        round_trip(u32::MAX, json!(4294967295u64));
        round_trip(u64::MAX, json!(u64::MAX));
    }

    #[test]
    fn u64_above_i64_max_round_trips_through_text() {
        let big = i64::MAX as u64 + 1;
        round_trip(big, json!(big));
        let parsed: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(u64::from_wire(&parsed), Ok(u64::MAX));
        assert_eq!(u64::MAX.to_wire().to_string(), "18446744073709551615");
    }

    #[test]
    fn out_of_range_integers_are_rejected() {
        let err = assert_invalid::<i8>(json!(128));
        assert!(err.reason().unwrap().contains("-128..=127"), "{err}");
        assert_invalid::<i8>(json!(-129));
        assert_invalid::<u8>(json!(-1));
        assert_invalid::<u32>(json!(4294967296u64));
        assert_invalid::<i64>(json!(u64::MAX));
        assert_invalid::<u64>(json!(-1));
    }

    #[test]
    fn integers_reject_fractions_exponents_and_other_types() {
        let err = assert_invalid::<i64>(json!(1.0));
        assert!(err.reason().unwrap().contains("not an integer"), "{err}");
        assert_invalid::<i64>(json!(4.5));
        assert_invalid::<i64>(serde_json::from_str("1e3").unwrap());
        assert_wrong_type::<i64>(json!("1"));
        assert_wrong_type::<i32>(Value::Null);
        assert_wrong_type::<u8>(json!([1]));
    }

    #[test]
    fn f64_keeps_integer_valued_floats_as_floats() {
        round_trip(0.0f64, json!(0.0));
        assert_eq!(0.0f64.to_wire().to_string(), "0.0");
        assert_eq!(4.5f64.to_wire().to_string(), "4.5");
        round_trip(-1.25e300f64, json!(-1.25e300));
        round_trip(f64::MAX, json!(f64::MAX));
        // The golden messages write `0.0`; parsing and encoding again keeps it.
        let parsed: Value = serde_json::from_str("0.0").unwrap();
        assert_eq!(f64::from_wire(&parsed).unwrap().to_wire(), parsed);
    }

    #[test]
    fn floats_decode_from_integers() {
        assert_eq!(f64::from_wire(&json!(3)), Ok(3.0));
        assert_eq!(f64::from_wire(&json!(u64::MAX)), Ok(u64::MAX as f64));
        assert_eq!(f32::from_wire(&json!(-7)), Ok(-7.0));
    }

    #[test]
    fn non_finite_floats_encode_as_null() {
        assert_eq!(f64::NAN.to_wire(), Value::Null);
        assert_eq!(f64::INFINITY.to_wire(), Value::Null);
        assert_eq!(f64::NEG_INFINITY.to_wire(), Value::Null);
        assert_eq!(f32::NAN.to_wire(), Value::Null);
        assert_eq!(f32::INFINITY.to_wire(), Value::Null);
    }

    #[test]
    fn floats_reject_other_types_and_f32_overflow() {
        assert_wrong_type::<f64>(json!("4.5"));
        assert_wrong_type::<f64>(Value::Null);
        assert_wrong_type::<f32>(json!(true));
        assert_invalid::<f32>(json!(1e300));
    }

    #[test]
    fn f32_is_written_with_its_shortest_decimal_form() {
        assert_eq!(0.1f32.to_wire().to_string(), "0.1");
        round_trip(0.1f32, json!(0.1));
        round_trip(0.0f32, json!(0.0));
        round_trip(f32::MAX, f32::MAX.to_wire());
        round_trip(f32::MIN_POSITIVE, f32::MIN_POSITIVE.to_wire());
    }

    #[test]
    fn string_round_trips_and_rejects_other_types() {
        round_trip(String::new(), json!(""));
        round_trip(
            "Hello \"world\"\nПривет ✓".to_owned(),
            json!("Hello \"world\"\nПривет ✓"),
        );
        assert_wrong_type::<String>(json!(1));
        assert_wrong_type::<String>(Value::Null);
    }

    #[test]
    fn option_maps_null_to_none() {
        round_trip(None::<String>, Value::Null);
        round_trip(Some("x".to_owned()), json!("x"));
        round_trip(Some(5i32), json!(5));
        round_trip(None::<NaiveDate>, Value::Null);
        assert_wrong_type::<Option<String>>(json!(5));
        assert_invalid::<Option<i8>>(json!(500));
    }

    #[test]
    fn json_value_passes_through() {
        for v in [
            Value::Null,
            json!({"a": [1, 2.5, "x", null]}),
            json!([]),
            json!("s"),
        ] {
            round_trip(v.clone(), v);
        }
    }

    #[test]
    fn uuid_is_lowercase_hyphenated_and_accepts_other_forms() {
        let id = uuid::Uuid::parse_str("12345678-1234-5678-1234-567812345678").unwrap();
        round_trip(id, json!("12345678-1234-5678-1234-567812345678"));
        let upper = uuid::Uuid::parse_str("6CF873FD-0349-4F7D-B40D-4B093CFC3CEC").unwrap();
        assert_eq!(
            upper.to_wire(),
            json!("6cf873fd-0349-4f7d-b40d-4b093cfc3cec")
        );
        for form in [
            "6CF873FD-0349-4F7D-B40D-4B093CFC3CEC",
            "6cf873fd03494f7db40d4b093cfc3cec",
            "{6cf873fd-0349-4f7d-b40d-4b093cfc3cec}",
            "urn:uuid:6cf873fd-0349-4f7d-b40d-4b093cfc3cec",
        ] {
            assert_eq!(uuid::Uuid::from_wire(&json!(form)), Ok(upper), "{form}");
        }
        assert_invalid::<uuid::Uuid>(json!("not-a-uuid"));
        assert_wrong_type::<uuid::Uuid>(json!(12345));
    }

    #[test]
    fn date_round_trips_and_rejects_bad_dates() {
        round_trip(
            NaiveDate::from_ymd_opt(1990, 5, 17).unwrap(),
            json!("1990-05-17"),
        );
        round_trip(
            NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
            json!("0001-01-01"),
        );
        assert_invalid::<NaiveDate>(json!("2026-13-40"));
        assert_invalid::<NaiveDate>(json!("2023-02-29"));
        assert_invalid::<NaiveDate>(json!("1990-5-17"));
        assert_invalid::<NaiveDate>(json!("1990-05-17 00:00:00"));
        assert_invalid::<NaiveDate>(json!(""));
        assert_wrong_type::<NaiveDate>(json!(19900517));
    }

    #[test]
    fn timestamp_is_written_like_python_str_datetime() {
        let ts = Utc
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .unwrap()
            .with_nanosecond(678_901_000)
            .unwrap();
        round_trip(ts, json!("2024-01-02 03:04:05.678901+00:00"));
        assert_eq!(format_timestamp(&ts), "2024-01-02 03:04:05.678901+00:00");
    }

    #[test]
    fn timestamp_with_zero_microseconds_has_no_fraction() {
        let ts = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        round_trip(ts, json!("2024-06-01 00:00:00+00:00"));
        // Sub-microsecond digits are truncated, so they give no fraction either.
        let tiny = ts.with_nanosecond(999).unwrap();
        assert_eq!(format_timestamp(&tiny), "2024-06-01 00:00:00+00:00");
        // Leading zeros of the fraction are kept.
        let small = ts.with_nanosecond(1_000).unwrap();
        assert_eq!(format_timestamp(&small), "2024-06-01 00:00:00.000001+00:00");
    }

    #[test]
    fn timestamp_decoding_accepts_iso_spellings() {
        let expected = utc("2024-01-02 03:04:05.678901+00:00");
        for s in [
            "2024-01-02T03:04:05.678901+00:00",
            "2024-01-02T03:04:05.678901Z",
            "2024-01-02t03:04:05.678901z",
            "2024-01-02 03:04:05.678901+0000",
            "2024-01-02 03:04:05.678901+00",
            "2024-01-02 05:04:05.678901+02:00",
            "2024-01-02 03:04:05.678901999Z",
            "2024-01-01 22:04:05.678901-05:00",
        ] {
            assert_eq!(DateTime::<Utc>::from_wire(&json!(s)), Ok(expected), "{s}");
        }
    }

    #[test]
    fn nine_digit_fractions_parse_exactly_and_decode_to_micros() {
        let ts = parse_timestamp("2024-01-02T03:04:05.123456789Z").unwrap();
        assert_eq!(ts.nanosecond(), 123_456_789);
        let decoded = DateTime::<Utc>::from_wire(&json!("2024-01-02T03:04:05.123456789Z")).unwrap();
        assert_eq!(decoded.nanosecond(), 123_456_000);
        assert_eq!(decoded.to_wire(), json!("2024-01-02 03:04:05.123456+00:00"));
        // Short fractions are scaled, not read as microseconds.
        assert_eq!(
            parse_timestamp("2024-01-02 03:04:05.5+00:00")
                .unwrap()
                .nanosecond(),
            500_000_000
        );
    }

    #[test]
    fn negative_offsets_are_converted_to_utc() {
        let ts = parse_timestamp("2024-01-01 23:30:00-05:30").unwrap();
        assert_eq!(ts.offset().local_minus_utc(), -(5 * 3600 + 30 * 60));
        let decoded = DateTime::<Utc>::from_wire(&json!("2024-01-01 23:30:00-05:30")).unwrap();
        assert_eq!(decoded.to_wire(), json!("2024-01-02 05:00:00+00:00"));
    }

    #[test]
    fn timestamp_decoding_rejects_malformed_values() {
        for s in [
            "tomorrow",
            "",
            "2026-13-40T00:00:00+00:00",
            "2026-02-29 00:00:00+00:00",
            "2024-01-02 24:00:00+00:00",
            "2024-01-02 23:60:00+00:00",
            "2024-01-02 23:59:60+00:00",
            "2024-01-02 03:04:05",
            "2024-01-02 03:04:05.+00:00",
            "2024-01-02 03:04:05.1234567890+00:00",
            "2024-01-02 03:04:05+24:00",
            "2024-01-02 03:04:05+00:00 ",
            "2024-01-02 03:04+00:00",
            "2024-01-02X03:04:05+00:00",
            "2024-01-02",
            "2024-01-02 03:04:05+00:00garbage",
            "2024-01-0é 03:04:05+00:00",
            "２０２４-01-02 03:04:05+00:00",
        ] {
            assert!(parse_timestamp(s).is_err(), "{s:?} must be rejected");
            assert_invalid::<DateTime<Utc>>(json!(s));
        }
        assert_wrong_type::<DateTime<Utc>>(json!(1_700_000_000));
        assert_wrong_type::<DateTime<Utc>>(Value::Null);
    }

    #[test]
    fn timestamp_without_offset_is_rejected_for_utc() {
        let err = assert_invalid::<DateTime<Utc>>(json!("2024-01-02 03:04:05"));
        assert!(err.reason().unwrap().contains("no UTC offset"), "{err}");
        assert_eq!(err.found(), JsonType::String);
    }

    #[test]
    fn naive_timestamp_round_trips_and_converts_offsets_to_utc() {
        let ts = NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 678_901)
            .unwrap();
        round_trip(ts, json!("2024-01-02 03:04:05.678901"));
        let whole = NaiveDate::from_ymd_opt(2024, 6, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        round_trip(whole, json!("2024-06-01 00:00:00"));
        assert_eq!(
            NaiveDateTime::from_wire(&json!("2024-01-02T03:04:05.678901999")),
            Ok(ts)
        );
        assert_eq!(
            NaiveDateTime::from_wire(&json!("2024-01-01 22:04:05.678901-05:00")),
            Ok(ts)
        );
        assert_invalid::<NaiveDateTime>(json!("2024-01-02"));
        assert_wrong_type::<NaiveDateTime>(json!(0));
    }

    #[test]
    fn time_round_trips_with_and_without_fraction() {
        let t = NaiveTime::from_hms_micro_opt(3, 4, 5, 678_901).unwrap();
        round_trip(t, json!("03:04:05.678901"));
        let whole = NaiveTime::from_hms_opt(3, 4, 5).unwrap();
        round_trip(whole, json!("03:04:05"));
        assert_eq!(NaiveTime::from_wire(&json!("03:04:05.678901999")), Ok(t));
        assert_invalid::<NaiveTime>(json!("25:00:00"));
        assert_invalid::<NaiveTime>(json!("03:04:05+00:00"));
        assert_invalid::<NaiveTime>(json!("03:04"));
        assert_wrong_type::<NaiveTime>(json!(3));
    }

    #[test]
    fn value_error_at_gives_wrong_type_or_invalid_value() {
        let err = String::from_wire(&json!(1))
            .unwrap_err()
            .at("instance_data.name");
        match err {
            Error::WrongType {
                key,
                expected,
                found,
            } => {
                assert_eq!(key, "instance_data.name");
                assert_eq!(expected, "a string");
                assert_eq!(found, JsonType::Number);
            }
            other => panic!("expected WrongType, got {other:?}"),
        }
        let err = i8::from_wire(&json!(300))
            .unwrap_err()
            .at("instance_data.level");
        match err {
            Error::InvalidValue { key, reason } => {
                assert_eq!(key, "instance_data.level");
                assert!(
                    reason.contains("300 is out of range -128..=127"),
                    "{reason}"
                );
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn value_error_display_says_expected_found_and_reason() {
        let err = bool::from_wire(&json!("yes")).unwrap_err();
        assert_eq!(err.to_string(), "expected a boolean, found a string");
        let err = NaiveDate::from_wire(&json!("2026-13-40")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a date (YYYY-MM-DD), found a string: \"2026-13-40\": there is no date 2026-13-40"
        );
    }

    #[test]
    fn long_inputs_are_shortened_in_error_messages() {
        let long = "x".repeat(10_000);
        let err = parse_timestamp(&long).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }
}
