//! The text forms of timestamps: [`format_timestamp`], [`parse_timestamp`] and the strict
//! byte-level parser of dates, times and offsets they share with the chrono impls.

use chrono::{
    DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc,
};

use super::{EXPECTED_TIMESTAMP, ValueError, quoted};
use crate::error::JsonType;

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
pub(super) fn parse_parts(s: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), String> {
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
pub(super) struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str) -> Self {
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

    pub(super) fn date(&mut self) -> Result<NaiveDate, String> {
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

    pub(super) fn time(&mut self) -> Result<NaiveTime, String> {
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

    pub(super) fn end(&self) -> Result<(), String> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.fail("unexpected trailing text"))
        }
    }
}

/// Appends `.ffffff` unless the microseconds are zero (a leap second's extra second is ignored).
pub(super) fn push_micros(out: &mut String, nanosecond: u32) {
    let micros = nanosecond % 1_000_000_000 / 1_000;
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
}
