//! The outbox statements master writes run, written once for every backend and run by either
//! executor ([`Exec`]): queue entries, read back the id of one, rewrite its body, ask whether
//! it is still queued.
//!
//! Every insert and rewrite also stores the W3C trace context of the current span
//! (`trace_context`, see [`cqrs_core::trace`]), captured once per statement; the column is
//! always bound, NULL or not, so each statement keeps one SQL text.

use diesel::QueryResult;
use diesel::query_builder::{AstPass, QueryFragment};

use super::NewOutboxEntry;
use crate::exec::{Dialect, Exec, Int};

/// One outbox statement.
enum Stmt<'a> {
    /// `INSERT` these entries; with `returning`, return the (one) new id as `n`.
    Insert {
        entries: &'a [NewOutboxEntry<'a>],
        returning: bool,
        /// The trace context of the write, stored with every entry.
        trace: &'a Option<String>,
    },
    /// Replace the body (and the trace context) of entry `id`.
    UpdateBody {
        id: &'a i64,
        body: &'a str,
        trace: &'a Option<String>,
    },
    /// Entry `id`'s id as `n`, when it is queued.
    Find { id: &'a i64 },
}

impl<DB: Dialect> QueryFragment<DB> for Stmt<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match self {
            Stmt::Insert {
                entries,
                returning,
                trace,
            } => {
                if entries.len() != 1 {
                    out.unsafe_to_cache_prepared();
                }
                out.push_sql(
                    "INSERT INTO cqrs_outbox (cqrs_id, routing_key, body, trace_context) VALUES ",
                );
                for (n, entry) in entries.iter().enumerate() {
                    out.push_sql(if n == 0 { "(" } else { ", (" });
                    DB::bind_text(&mut out, entry.cqrs_id)?;
                    out.push_sql(", ");
                    DB::bind_text(&mut out, entry.routing_key)?;
                    out.push_sql(", ");
                    DB::bind_text(&mut out, entry.body)?;
                    out.push_sql(", ");
                    DB::bind_optional_text(&mut out, trace)?;
                    out.push_sql(")");
                }
                if *returning {
                    if !DB::KIND.caches_returning() {
                        out.unsafe_to_cache_prepared();
                    }
                    out.push_sql(" RETURNING id AS n");
                }
            }
            Stmt::UpdateBody { id, body, trace } => {
                out.push_sql("UPDATE cqrs_outbox SET body = ");
                DB::bind_text(&mut out, body)?;
                out.push_sql(", trace_context = ");
                DB::bind_optional_text(&mut out, trace)?;
                out.push_sql(" WHERE id = ");
                DB::bind_i64(&mut out, id)?;
            }
            Stmt::Find { id } => {
                out.push_sql("SELECT id AS n FROM cqrs_outbox WHERE id = ");
                DB::bind_i64(&mut out, id)?;
            }
        }
        Ok(())
    }
}

/// The trace context a statement run now stores: the current span's, in the column's form.
pub(crate) fn current_trace() -> Option<String> {
    cqrs_core::trace::TraceContext::current().map(|context| context.to_column())
}

/// Queues `entry` (one statement on every backend).
pub(crate) async fn push<E: Exec>(conn: &mut E, entry: &NewOutboxEntry<'_>) -> QueryResult<()> {
    let entries = std::slice::from_ref(entry);
    conn.execute(Stmt::Insert {
        entries,
        returning: false,
        trace: &current_trace(),
    })
    .await
    .map(drop)
}

/// Queues `entries` with one statement; returns how many were written.
pub(crate) async fn push_many<E: Exec>(
    conn: &mut E,
    entries: &[NewOutboxEntry<'_>],
) -> QueryResult<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    conn.execute(Stmt::Insert {
        entries,
        returning: false,
        trace: &current_trace(),
    })
    .await
}

/// Queues `entry` and returns its id (MySQL/MariaDB read it back with a second statement).
pub(crate) async fn insert<E: Exec>(conn: &mut E, entry: &NewOutboxEntry<'_>) -> QueryResult<i64> {
    let entries = std::slice::from_ref(entry);
    let returning = E::Backend::KIND.returns_rows();
    let trace = current_trace();
    let insert = Stmt::Insert {
        entries,
        returning,
        trace: &trace,
    };
    if !returning {
        conn.execute(insert).await?;
        let id = crate::master::sql::last_insert_id(conn).await?;
        return i64::try_from(id).map_err(|_| {
            diesel::result::Error::DeserializationError(format!("outbox id {id}").into())
        });
    }
    let ids: Vec<Int> = conn.load(insert).await?;
    ids.first()
        .map(|id| id.0)
        .ok_or(diesel::result::Error::NotFound)
}

/// Replaces the body of entry `id`, and its trace context with the current span's (the entry
/// now carries this write's message).
pub(crate) async fn update_body<E: Exec>(conn: &mut E, id: i64, body: &str) -> QueryResult<usize> {
    conn.execute(Stmt::UpdateBody {
        id: &id,
        body,
        trace: &current_trace(),
    })
    .await
}

/// Whether entry `id` is queued.
pub(crate) async fn contains<E: Exec>(conn: &mut E, id: i64) -> QueryResult<bool> {
    let found: Vec<Int> = conn.load(Stmt::Find { id: &id }).await?;
    Ok(!found.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql<DB>(statement: &Stmt<'_>) -> String
    where
        DB: Dialect + Default,
        DB::QueryBuilder: Default,
    {
        let text = diesel::debug_query::<DB, _>(statement).to_string();
        text.split(" -- binds")
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// A statement's text is the same with and without a trace context (the prepared
    /// statement cache keys by it).
    #[cfg(feature = "sqlite")]
    #[test]
    fn the_trace_context_is_bound_null_or_not() {
        let entry = NewOutboxEntry {
            cqrs_id: "a",
            routing_key: "a",
            body: "{}",
        };
        let entries = [entry];
        let traced = Some(r#"{"traceparent":"00-1-2-01"}"#.to_owned());
        let text = |trace| {
            sql::<diesel::sqlite::Sqlite>(&Stmt::Insert {
                entries: &entries,
                returning: false,
                trace,
            })
        };
        assert_eq!(text(&None), text(&traced));
        assert_eq!(
            text(&None),
            "INSERT INTO cqrs_outbox (cqrs_id, routing_key, body, trace_context) VALUES (?, ?, ?, \
             ?)"
        );
    }

    #[cfg(all(feature = "postgres", feature = "mysql"))]
    #[test]
    fn an_insert_of_two_entries_binds_every_value() {
        let entry = NewOutboxEntry {
            cqrs_id: "a",
            routing_key: "a",
            body: "{}",
        };
        let entries = [entry.clone(), entry];
        let insert = Stmt::Insert {
            entries: &entries,
            returning: true,
            trace: &None,
        };
        assert_eq!(
            sql::<diesel::pg::Pg>(&insert),
            "INSERT INTO cqrs_outbox (cqrs_id, routing_key, body, trace_context) VALUES ($1, $2, \
             $3, $4), ($5, $6, $7, $8) RETURNING id AS n"
        );
        assert_eq!(
            sql::<diesel::mysql::Mysql>(&Stmt::UpdateBody {
                id: &1,
                body: "{}",
                trace: &None,
            }),
            "UPDATE cqrs_outbox SET body = ?, trace_context = ? WHERE id = ?"
        );
    }
}
