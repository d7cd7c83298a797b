//! Helpers of the MySQL/MariaDB statements, which have no `RETURNING`: the keys a multi-row
//! insert generated, and the errors of a write whose rows are not there afterwards.

use diesel::QueryResult;
use diesel::deserialize::QueryableByName;
use diesel::row::NamedRow;

use crate::exec::{Dialect, Exec, Int, Sql};

/// The key MySQL/MariaDB generated for the session's last insert (`LAST_INSERT_ID()`: the
/// first row's, for a multi-row insert).
pub(crate) async fn last_insert_id<E: Exec>(conn: &mut E) -> QueryResult<u64> {
    let ids: Vec<Int> = conn.load(Sql("SELECT LAST_INSERT_ID() AS n")).await?;
    let id = ids
        .first()
        .map(|id| id.0)
        .ok_or(diesel::result::Error::NotFound)?;
    u64::try_from(id).map_err(|_| {
        diesel::result::Error::DeserializationError(format!("LAST_INSERT_ID() {id}").into())
    })
}

/// The two settings that decide whether a multi-row insert's keys are consecutive.
struct AutoIncrement {
    mode: i64,
    step: i64,
}

impl<DB: Dialect> QueryableByName<DB> for AutoIncrement {
    fn build<'a>(row: &impl NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        Ok(AutoIncrement {
            mode: DB::read_i64(row, "mode")?,
            step: DB::read_i64(row, "n")?,
        })
    }
}

/// When a multi-row insert's generated keys are consecutive (`innodb_autoinc_lock_mode` 0 or
/// 1, MariaDB's default), the step between them (`auto_increment_increment`); `None` with
/// interleaved allocation (mode 2, MySQL 8's default), where they may have gaps.
pub(crate) async fn consecutive_insert_ids<E: Exec>(conn: &mut E) -> QueryResult<Option<u64>> {
    let settings: Vec<AutoIncrement> = conn
        .load(Sql(
            "SELECT CAST(@@innodb_autoinc_lock_mode AS UNSIGNED) AS mode, \
             CAST(@@auto_increment_increment AS UNSIGNED) AS n",
        ))
        .await?;
    let AutoIncrement { mode, step } = settings
        .into_iter()
        .next()
        .ok_or(diesel::result::Error::NotFound)?;
    Ok((mode <= 1).then(|| u64::try_from(step.max(1)).unwrap_or(1)))
}

/// The `count` keys of a multi-row insert whose first key is `first`, `step` apart.
pub(crate) fn insert_id_range(first: u64, step: u64, count: usize) -> QueryResult<Vec<u64>> {
    (0..count as u64)
        .map(|k| {
            k.checked_mul(step)
                .and_then(|offset| first.checked_add(offset))
                .ok_or_else(|| {
                    diesel::result::Error::DeserializationError(
                        format!("generated keys from {first} overflow u64").into(),
                    )
                })
        })
        .collect()
}
/// A generated key as the model's key type (an integer type; any other fails here).
pub(crate) fn key_from_insert_id<T: cqrs_core::WireValue>(id: u64) -> QueryResult<T> {
    T::from_wire(&serde_json::Value::from(id)).map_err(|error| {
        diesel::result::Error::DeserializationError(
            format!("the generated key {id} does not fit the model's key type: {error}").into(),
        )
    })
}

/// Checks that reading back a multi-row insert found every row.
pub(crate) fn expect_rows(found: usize, inserted: usize) -> QueryResult<()> {
    if found == inserted {
        Ok(())
    } else {
        Err(diesel::result::Error::DeserializationError(
            format!("read back {found} of the {inserted} rows just inserted").into(),
        ))
    }
}

/// The error of a MySQL upsert whose row is not there afterwards: the insert collided with
/// another row on a unique key other than the primary key (`ON DUPLICATE KEY UPDATE` then
/// updates that other row, which the write's transaction rolls back).
pub(crate) fn collided_on_another_unique_key(cqrs_id: &str) -> diesel::result::Error {
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::UniqueViolation,
        Box::new(format!(
            "the `{cqrs_id}` row collides with another row on a unique key other than the \
             primary key"
        )),
    )
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn multi_row_keys_follow_the_increment() {
        assert_eq!(insert_id_range(10, 1, 3).unwrap(), vec![10, 11, 12]);
        assert_eq!(insert_id_range(7, 5, 3).unwrap(), vec![7, 12, 17]);
        assert!(insert_id_range(u64::MAX, 1, 2).is_err());
        assert!(insert_id_range(1, 1, 0).unwrap().is_empty());
    }

    #[test]
    fn generated_keys_convert_to_integer_keys_only() {
        assert_eq!(key_from_insert_id::<i64>(42).unwrap(), 42);
        assert_eq!(key_from_insert_id::<i32>(7).unwrap(), 7);
        assert!(key_from_insert_id::<i32>(u64::from(u32::MAX)).is_err());
        assert!(key_from_insert_id::<String>(1).is_err());
    }
}
