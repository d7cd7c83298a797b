//! The statements `#[derive(MasterModel)]` generates for each backend, and the timestamp
//! types `cqrs_updated` may have.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use cqrs_core::WireValue;
use diesel::QueryResult;
use serde_json::Value;

use crate::connection::CqrsConnection;
use crate::master::{MasterModel, SinglePlan};

/// The statements of one model on one backend: implemented by this crate for every model
/// that `#[derive(MasterModel)]` describes on that backend (its `MasterColumns`), from
/// statements built by generic code. The master operations of [`MasterModel`] are written
/// with them; operator tools may call them directly (`cqrs_select_page`, `cqrs_count`).
pub trait MasterStore<C: CqrsConnection>: MasterModel {
    /// Reads the stored row with this row's primary key, locking it (`FOR UPDATE`, where the
    /// backend has it) when `lock` is set.
    fn cqrs_find(&self, conn: &mut C, lock: bool) -> QueryResult<Option<Self>>;

    /// Updates the stored row with this row's values and `cqrs_updated = now`, and
    /// `cqrs_revision = cqrs_revision + 1` when `bump` is set. `None` when no row matched.
    fn cqrs_update(&self, conn: &mut C, bump: bool) -> QueryResult<Option<Self>>;

    /// Inserts this row with `cqrs_updated = now`.
    fn cqrs_insert(&self, conn: &mut C) -> QueryResult<Self>;

    /// Inserts this row or, when its primary key exists, updates the stored row with its
    /// values and `cqrs_revision = cqrs_revision + 1`, in one statement; `cqrs_updated = now`
    /// (never at or before the stored time). Returns the row as stored.
    fn cqrs_upsert(&self, conn: &mut C) -> QueryResult<Self>;

    /// Inserts this row without its primary key, which the database generates (an identity or
    /// serial column, `AUTO_INCREMENT`, SQLite's `INTEGER PRIMARY KEY`), with
    /// `cqrs_updated = now`. Returns the row as stored, its new key included.
    fn cqrs_insert_generated(&self, conn: &mut C) -> QueryResult<Self>;

    /// [`cqrs_insert_generated`](Self::cqrs_insert_generated) for several rows: one statement,
    /// the stored rows returned in the order of `rows`.
    fn cqrs_insert_many_generated(rows: &[&Self], conn: &mut C) -> QueryResult<Vec<Self>>;

    /// Deletes the stored row with this row's primary key and returns it as it was.
    fn cqrs_delete(&self, conn: &mut C) -> QueryResult<Option<Self>>;

    /// Inserts the rows with one statement.
    fn cqrs_insert_many(rows: &[&Self], conn: &mut C) -> QueryResult<Vec<Self>>;

    /// Reads (and with `lock`, locks) the stored rows with these rows' primary keys.
    fn cqrs_find_many(rows: &[&Self], conn: &mut C, lock: bool) -> QueryResult<Vec<Self>>;

    /// Updates the rows, which must exist and be distinct, with one statement, bumping each
    /// revision in SQL.
    fn cqrs_update_many(rows: &[&Self], conn: &mut C) -> QueryResult<Vec<Self>>;

    /// Whether [`cqrs_single`](Self::cqrs_single) writes on this backend.
    #[doc(hidden)]
    const SINGLE_STATEMENT: bool = false;

    /// Runs `plan` as one statement (see [`SinglePlan`]): the row as stored, or as it was for
    /// a delete (`None` when no row had the key).
    #[doc(hidden)]
    fn cqrs_single(&self, conn: &mut C, plan: &SinglePlan) -> QueryResult<Option<Self>> {
        let _ = (conn, plan);
        Err(diesel::result::Error::QueryBuilderError(
            "no one-statement writes on this backend".into(),
        ))
    }

    /// How many rows match `filter` (for operator commands' progress).
    fn cqrs_count(conn: &mut C, filter: &RowFilter) -> QueryResult<i64>;

    /// Up to `limit` rows matching `filter`, in primary-key order, after the key `after`
    /// (keyset paging, for operator commands).
    fn cqrs_select_page(
        conn: &mut C,
        filter: &RowFilter,
        after: Option<&Value>,
        limit: i64,
    ) -> QueryResult<Vec<Self>>;
}

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
    /// The current time, at the microsecond precision databases store.
    fn now() -> Self;

    /// The same instant in this type.
    fn from_utc(at: DateTime<Utc>) -> Self;

    /// The wire form: Python's `str()` of an aware UTC datetime, as the reference writes it.
    fn to_wire_utc(&self) -> Value;
}

impl UpdatedAt for DateTime<Utc> {
    fn now() -> Self {
        super::now().trunc_subsecs(6)
    }

    fn from_utc(at: DateTime<Utc>) -> Self {
        at
    }

    fn to_wire_utc(&self) -> Value {
        self.to_wire()
    }
}

impl UpdatedAt for NaiveDateTime {
    fn now() -> Self {
        super::now().trunc_subsecs(6).naive_utc()
    }

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
    use chrono::Timelike;

    #[test]
    fn now_is_truncated_to_microseconds() {
        assert_eq!(<DateTime<Utc> as UpdatedAt>::now().nanosecond() % 1000, 0);
        assert_eq!(<NaiveDateTime as UpdatedAt>::now().nanosecond() % 1000, 0);
    }

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
