//! The bound of master writes ([`MasterStore`]), the rows operator commands select, and the
//! timestamp types `cqrs_updated` may have.

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_core::WireValue;
use diesel::QueryResult;
use serde_json::Value;

use super::columns::MasterColumns;
use super::rows;
use crate::exec::{Exec, Mode, Ret};

/// The bound of every master write on connection `C`: implemented for every model that
/// `#[derive(MasterModel)]` describes on `C`'s backend (`backends(...)`), sync or async.
/// Operator tools may call its reads directly.
pub trait MasterStore<C: Exec>: MasterColumns<C::Backend> {
    /// Reads the stored row with this row's primary key, locking it (`FOR UPDATE`, where the
    /// backend has it) when `lock` is set.
    fn cqrs_find<'a>(&'a self, conn: &'a mut C, lock: bool) -> Ret<'a, C, Option<Self>> {
        <C::Mode as Mode>::ret(async move { Ok(rows::find(conn, self, lock).await?) })
    }

    /// How many rows match `filter` (for operator commands' progress).
    fn cqrs_count<'a>(conn: &'a mut C, filter: &'a RowFilter) -> Ret<'a, C, i64> {
        <C::Mode as Mode>::ret(async move { Ok(rows::count::<Self, C>(conn, filter).await?) })
    }

    /// Up to `limit` rows matching `filter`, in primary-key order, after the key `after`
    /// (keyset paging, for operator commands).
    fn cqrs_select_page<'a>(
        conn: &'a mut C,
        filter: &'a RowFilter,
        after: Option<&'a Value>,
        limit: i64,
    ) -> Ret<'a, C, Vec<Self>> {
        <C::Mode as Mode>::ret(async move { Ok(rows::page(conn, filter, after, limit).await?) })
    }
}

impl<C: Exec, M: MasterColumns<C::Backend>> MasterStore<C> for M {}

/// Which rows an operator command selects. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowFilter {
    /// Only these primary keys (wire values: numbers, or strings for text, UUID and date keys).
    pub pks: Option<Vec<Value>>,
    /// Primary key at least this.
    pub pk_from: Option<Value>,
    /// Primary key at most this.
    pub pk_to: Option<Value>,
    /// `cqrs_updated` at or after this time.
    pub updated_since: Option<DateTime<Utc>>,
    /// A raw SQL condition, for operators (`"name LIKE 'A%'"`). It is pasted into the query as
    /// it is: never build it from untrusted input.
    pub sql: Option<String>,
}

/// Decodes a primary key given on the command line or in a file (for generated code).
#[doc(hidden)]
pub fn decode_key<T: WireValue>(value: &Value) -> QueryResult<T> {
    T::from_wire(value).map_err(|error| {
        diesel::result::Error::QueryBuilderError(format!("primary key {value}: {error}").into())
    })
}

/// A type the `cqrs_updated` field may have: `chrono::DateTime<Utc>` (PostgreSQL
/// `timestamptz`, SQLite) or `chrono::NaiveDateTime` holding UTC (MySQL/MariaDB `DATETIME(6)`).
pub trait UpdatedAt: Sized {
    /// The same instant in this type.
    fn from_utc(at: DateTime<Utc>) -> Self;

    /// The wire form: Python's `str()` of an aware UTC datetime, as the reference writes it.
    fn to_wire_utc(&self) -> Value;
}

impl UpdatedAt for DateTime<Utc> {
    fn from_utc(at: DateTime<Utc>) -> Self {
        at
    }

    fn to_wire_utc(&self) -> Value {
        self.to_wire()
    }
}

impl UpdatedAt for NaiveDateTime {
    fn from_utc(at: DateTime<Utc>) -> Self {
        at.naive_utc()
    }

    fn to_wire_utc(&self) -> Value {
        self.and_utc().to_wire()
    }
}

/// Writes a timestamp that holds UTC in the aware form (`...+00:00`), for fields marked
/// `#[cqrs(utc)]`: on MySQL/MariaDB a `DATETIME` column maps to `NaiveDateTime`, but Django
/// services with `USE_TZ` send and expect aware timestamps.
#[doc(hidden)]
pub trait UtcWire {
    fn to_wire_utc(&self) -> Value;
}

impl UtcWire for NaiveDateTime {
    fn to_wire_utc(&self) -> Value {
        self.and_utc().to_wire()
    }
}

impl UtcWire for DateTime<Utc> {
    fn to_wire_utc(&self) -> Value {
        self.to_wire()
    }
}

impl<T: UtcWire> UtcWire for Option<T> {
    fn to_wire_utc(&self) -> Value {
        self.as_ref().map_or(Value::Null, UtcWire::to_wire_utc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_timestamps_are_written_as_utc() {
        let naive = chrono::NaiveDate::from_ymd_opt(2024, 1, 2)
            .and_then(|d| d.and_hms_micro_opt(3, 4, 5, 678_901))
            .unwrap();
        assert_eq!(
            UpdatedAt::to_wire_utc(&naive),
            Value::String("2024-01-02 03:04:05.678901+00:00".into())
        );
        assert_eq!(
            UpdatedAt::to_wire_utc(&naive.and_utc()),
            UpdatedAt::to_wire_utc(&naive)
        );
        assert_eq!(
            UtcWire::to_wire_utc(&Some(naive)),
            UpdatedAt::to_wire_utc(&naive)
        );
        assert_eq!(UtcWire::to_wire_utc(&None::<NaiveDateTime>), Value::Null);
    }
}
