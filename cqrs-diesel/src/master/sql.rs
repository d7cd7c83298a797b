//! SQL expressions the master's generated statements use, as typed Diesel expressions rather
//! than SQL text: Diesel caches the prepared statement of a query only when every part of it
//! has a static `QueryId`, and a `dsl::sql` fragment has none, so a statement holding one was
//! parsed and planned again on every write (an extra round trip on PostgreSQL).

use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{Column, QueryResult, RunQueryDsl};

/// A statement whose prepared form the connection keeps, keyed by its SQL text.
///
/// Diesel never caches `UPDATE` statements nor upserts (`ON CONFLICT DO UPDATE`, `ON
/// DUPLICATE KEY UPDATE`), because optional values in a changeset make their SQL vary; each
/// one is then prepared anew, on PostgreSQL a round trip of its own before the one that runs
/// it. The master's statements have one SQL text per model (every value is bound, none is
/// optional), so caching them by that text is safe and the cache stays bounded: a few
/// statements per model.
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(pub Q);

impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    // Keyed by SQL text, not by type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Cached<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q, Conn> RunQueryDsl<Conn> for Cached<Q> {}

/// `GREATEST(<now>, <column> + 1 microsecond)`: the time a write stamps on a row, never at or
/// before the time already stored (the replica ranks one row's messages by time first).
#[derive(Debug, Clone, Copy)]
pub struct NotBefore<T, C> {
    now: T,
    column: C,
}

/// `NotBefore` of `now` and the stored `column`.
pub fn not_before<T, C>(now: T, column: C) -> NotBefore<T, C> {
    NotBefore { now, column }
}

impl<T: Expression, C> Expression for NotBefore<T, C> {
    type SqlType = T::SqlType;
}

impl<T: QueryId, C: QueryId> QueryId for NotBefore<T, C> {
    type QueryId = NotBefore<T::QueryId, C::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = T::HAS_STATIC_QUERY_ID && C::HAS_STATIC_QUERY_ID;
}

impl<T, C, QS> AppearsOnTable<QS> for NotBefore<T, C>
where
    T: AppearsOnTable<QS>,
    C: AppearsOnTable<QS>,
    Self: Expression,
{
}

impl<T, C, QS> SelectableExpression<QS> for NotBefore<T, C>
where
    T: SelectableExpression<QS>,
    C: SelectableExpression<QS>,
    Self: AppearsOnTable<QS>,
{
}

impl<T, C, GB> ValidGrouping<GB> for NotBefore<T, C> {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

fn walk_not_before<'b, DB, T, C>(
    this: &'b NotBefore<T, C>,
    mut out: AstPass<'_, 'b, DB>,
    interval: &'static str,
) -> QueryResult<()>
where
    DB: Backend,
    T: QueryFragment<DB>,
    C: QueryFragment<DB>,
{
    out.push_sql("GREATEST(");
    this.now.walk_ast(out.reborrow())?;
    out.push_sql(", ");
    this.column.walk_ast(out.reborrow())?;
    out.push_sql(interval);
    Ok(())
}

#[cfg(feature = "postgres")]
impl<T, C> QueryFragment<diesel::pg::Pg> for NotBefore<T, C>
where
    T: QueryFragment<diesel::pg::Pg>,
    C: QueryFragment<diesel::pg::Pg>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        walk_not_before(self, out, " + interval '1 microsecond')")
    }
}

#[cfg(feature = "mysql")]
impl<T, C> QueryFragment<diesel::mysql::Mysql> for NotBefore<T, C>
where
    T: QueryFragment<diesel::mysql::Mysql>,
    C: QueryFragment<diesel::mysql::Mysql>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, diesel::mysql::Mysql>) -> QueryResult<()> {
        walk_not_before(self, out, " + INTERVAL 1 MICROSECOND)")
    }
}

/// MySQL's `VALUES(<column>)` in `ON DUPLICATE KEY UPDATE`: the value the insert proposed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proposed<C>(C);

/// `Proposed` of `column`.
pub fn proposed<C>(column: C) -> Proposed<C> {
    Proposed(column)
}

impl<C: Expression> Expression for Proposed<C> {
    type SqlType = C::SqlType;
}

impl<C: QueryId> QueryId for Proposed<C> {
    type QueryId = Proposed<C::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = C::HAS_STATIC_QUERY_ID;
}

impl<C, QS> AppearsOnTable<QS> for Proposed<C>
where
    C: AppearsOnTable<QS>,
    Self: Expression,
{
}

impl<C, QS> SelectableExpression<QS> for Proposed<C>
where
    C: SelectableExpression<QS>,
    Self: AppearsOnTable<QS>,
{
}

impl<C, GB> ValidGrouping<GB> for Proposed<C> {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

#[cfg(feature = "mysql")]
impl<C: Column> QueryFragment<diesel::mysql::Mysql> for Proposed<C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, diesel::mysql::Mysql>) -> QueryResult<()> {
        out.push_sql("VALUES(");
        out.push_identifier(C::NAME)?;
        out.push_sql(")");
        Ok(())
    }
}

#[cfg(all(test, feature = "postgres", feature = "mysql"))]
mod tests {
    use super::*;
    use diesel::prelude::*;

    diesel::table! {
        stamped (id) {
            id -> Integer,
            at -> Timestamp,
        }
    }

    #[test]
    fn not_before_renders_per_backend_with_a_static_id() {
        let now = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let update = diesel::update(stamped::table).set(stamped::at.eq(not_before(
            diesel::IntoSql::into_sql::<diesel::sql_types::Timestamp>(now),
            stamped::at,
        )));
        let pg = diesel::debug_query::<diesel::pg::Pg, _>(&update).to_string();
        assert!(
            pg.starts_with(
                "UPDATE \"stamped\" SET \"at\" = GREATEST($1, \"stamped\".\"at\" + interval '1 microsecond')"
            ),
            "{pg}"
        );
        let my = diesel::debug_query::<diesel::mysql::Mysql, _>(&update).to_string();
        assert!(
            my.starts_with(
                "UPDATE `stamped` SET `at` = GREATEST(?, `stamped`.`at` + INTERVAL 1 MICROSECOND)"
            ),
            "{my}"
        );
        fn static_id<Q: QueryId>(_: &Q) -> bool {
            Q::HAS_STATIC_QUERY_ID
        }
        assert!(static_id(&not_before(
            diesel::IntoSql::into_sql::<diesel::sql_types::Timestamp>(now),
            stamped::at,
        )));
    }

    #[test]
    fn cached_statements_are_prepared_once() {
        let update = || diesel::update(stamped::table).set(stamped::id.eq(1));
        let pg = diesel::pg::Pg;
        assert!(!QueryFragment::is_safe_to_cache_prepared(&update(), &pg).unwrap());
        assert!(QueryFragment::is_safe_to_cache_prepared(&Cached(update()), &pg).unwrap());
        assert_eq!(
            diesel::debug_query::<diesel::pg::Pg, _>(&Cached(update())).to_string(),
            diesel::debug_query::<diesel::pg::Pg, _>(&update()).to_string(),
        );
    }

    #[test]
    fn proposed_renders_values_of_the_column() {
        let query = stamped::table.select(proposed(stamped::at));
        let sql = diesel::debug_query::<diesel::mysql::Mysql, _>(&query).to_string();
        assert!(
            sql.starts_with("SELECT VALUES(`at`) FROM `stamped`"),
            "{sql}"
        );
    }
}

/// The key MySQL/MariaDB generated for the session's last insert (`LAST_INSERT_ID()`: the
/// first row's, for a multi-row insert).
#[cfg(feature = "mysql")]
pub fn last_insert_id(conn: &mut diesel::MysqlConnection) -> QueryResult<u64> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
    >("LAST_INSERT_ID()"))
    .get_result(conn)
}

/// When a multi-row insert's generated keys are consecutive (`innodb_autoinc_lock_mode` 0 or
/// 1, MariaDB's default), the step between them (`auto_increment_increment`); `None` with
/// interleaved allocation (mode 2, MySQL 8's default), where they may have gaps.
#[cfg(feature = "mysql")]
pub fn consecutive_insert_ids(conn: &mut diesel::MysqlConnection) -> QueryResult<Option<u64>> {
    use diesel::sql_types::BigInt;
    let (mode, step): (i64, i64) = diesel::select((
        diesel::dsl::sql::<BigInt>("@@innodb_autoinc_lock_mode"),
        diesel::dsl::sql::<BigInt>("@@auto_increment_increment"),
    ))
    .get_result(conn)?;
    Ok((mode <= 1).then(|| u64::try_from(step.max(1)).unwrap_or(1)))
}

/// The `count` keys of a multi-row insert whose first key is `first`, `step` apart.
pub fn insert_id_range(first: u64, step: u64, count: usize) -> QueryResult<Vec<u64>> {
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
pub fn key_from_insert_id<T: cqrs_core::WireValue>(id: u64) -> QueryResult<T> {
    T::from_wire(&serde_json::Value::from(id)).map_err(|error| {
        diesel::result::Error::DeserializationError(
            format!("the generated key {id} does not fit the model's key type: {error}").into(),
        )
    })
}

/// Checks that reading back a multi-row insert found every row.
pub fn expect_rows(found: usize, inserted: usize) -> QueryResult<()> {
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
pub fn collided_on_another_unique_key(table: &str) -> diesel::result::Error {
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::UniqueViolation,
        Box::new(format!(
            "the row collides with another row of `{table}` on a unique key other than the \
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
