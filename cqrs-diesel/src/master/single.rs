//! Writes in one statement: the row and its outbox entry in a single round trip, where the
//! backend can do it (PostgreSQL, whose data-modifying CTEs put both inserts in one statement,
//! atomic on its own without `BEGIN`/`COMMIT`).
//!
//! The message is built in Rust, before the statement, from the values the caller wrote,
//! exactly as the general path builds it from the row as stored. Only the parts the database
//! decides are left as holes that the statement fills in SQL: the revision (`cqrs_revision +
//! 1` under the row lock) and a generated key. Everything else must come back as it was sent,
//! so the statement checks it: when a stored value differs from the one the body was built
//! from (a column that rounds, a trigger, a clock behind the stored `cqrs_updated`), the
//! outbox insert gets a NULL body, the NOT NULL constraint aborts the whole statement, nothing
//! is written, and the write runs again on the general path ([`refused`]). So a replica never
//! receives a value the master did not store.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::master::{MasterModel, UpdatedAt};

/// What a one-statement write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SingleKind {
    /// Insert the row or update the stored one (`ON CONFLICT DO UPDATE`), a SAVE.
    Save,
    /// Insert the row without its key, which the database generates, a SAVE.
    InsertGenerated,
    /// Delete the row, a DELETE.
    Delete,
}

/// A value of the body that only the database knows when the statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hole {
    /// The stored revision (plus one for a DELETE).
    Revision,
    /// The stored primary key (an integer).
    Pk,
    /// `previous_data`: the tracked fields as they were before a save.
    Previous,
}

/// Stands for the revision in a body template (PostgreSQL text cannot hold NUL, so no stored
/// value can be mistaken for it).
const REVISION_MARKER: &str = "\u{0}cqrs:revision\u{0}";
/// Stands for a generated key in a body template.
const PK_MARKER: &str = "\u{0}cqrs:pk\u{0}";
/// Stands for `previous_data` in a body template.
const PREVIOUS_MARKER: &str = "\u{0}cqrs:previous\u{0}";

/// The markers as they appear in a serialized body (JSON strings), with the hole each stands
/// for.
const MARKERS_IN_JSON: [(&str, Hole); 3] = [
    (r#""\u0000cqrs:revision\u0000""#, Hole::Revision),
    (r#""\u0000cqrs:pk\u0000""#, Hole::Pk),
    (r#""\u0000cqrs:previous\u0000""#, Hole::Previous),
];

/// A one-statement write, prepared by generic code for the model's generated statement: the
/// time it stamps and its message, as text around the holes the statement fills.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct SinglePlan {
    pub(crate) kind: SingleKind,
    pub(crate) now: DateTime<Utc>,
    pub(crate) cqrs_id: &'static str,
    /// One more than `holes`: `parts[0] hole[0] parts[1] ... parts[n]`.
    pub(crate) parts: Vec<String>,
    pub(crate) holes: Vec<Hole>,
    /// `previous_data` of a row that did not exist (every tracked field null), as JSON text,
    /// for a save that reads the old values (empty otherwise).
    pub(crate) previous_nulls: String,
    /// The W3C trace context of the write (the outbox's `trace_context`), taken when the plan
    /// is made.
    pub(crate) trace_context: Option<String>,
}

impl SinglePlan {
    /// The time the write stamps on the row (`cqrs_updated`), at microsecond precision.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The plan of `kind` for `row`; `None` when it cannot be written in one statement (a
    /// generated key that is not an integer).
    pub(crate) fn new<M: MasterModel>(
        config: &super::config::MasterConfig,
        row: &M,
        kind: SingleKind,
        now: DateTime<Utc>,
    ) -> Option<SinglePlan> {
        let revision = Value::String(REVISION_MARKER.to_owned());
        let updated = UpdatedAt::to_wire_utc(&now);
        let pk = row.cqrs_pk();
        let nulls = super::body::tracked_nulls::<M>();
        let (pk, data, previous_data, signal) = match kind {
            SingleKind::Save | SingleKind::InsertGenerated => {
                let mut data = row.cqrs_instance_data();
                data.insert("cqrs_revision".to_owned(), revision);
                data.insert("cqrs_updated".to_owned(), updated);
                let (pk, previous) = if kind == SingleKind::InsertGenerated {
                    if !pk.is_number() {
                        return None;
                    }
                    let pk = Value::String(PK_MARKER.to_owned());
                    if let Some(name) = M::PK_WIRE_NAME {
                        data.insert(name.to_owned(), pk.clone());
                    }
                    (pk, nulls.clone())
                } else {
                    (pk, None)
                };
                (pk, data, previous, cqrs_core::SignalType::Save)
            }
            SingleKind::Delete => {
                let mut data = Map::with_capacity(3);
                data.insert("id".to_owned(), pk.clone());
                data.insert("cqrs_revision".to_owned(), revision);
                data.insert("cqrs_updated".to_owned(), updated);
                (pk, data, None, cqrs_core::SignalType::Delete)
            }
        };
        let message = super::body::Message {
            pk,
            signal,
            data,
            previous_data,
            queue: None,
        };
        let mut body = super::body::body_with_pk(config, row, message, now);
        let mut previous_nulls = String::new();
        if let (SingleKind::Save, Some(nulls)) = (kind, nulls) {
            // The old values of the tracked fields, read by the statement.
            body["previous_data"] = Value::String(PREVIOUS_MARKER.to_owned());
            previous_nulls = Value::Object(nulls).to_string();
        }
        let (parts, holes) = split_template(&body.to_string())?;
        Some(SinglePlan {
            kind,
            now,
            cqrs_id: M::CQRS_ID,
            parts,
            holes,
            previous_nulls,
            trace_context: crate::outbox::write::current_trace(),
        })
    }
}

/// Cuts a body at its markers ([`MARKERS_IN_JSON`]); `None` without a revision marker.
fn split_template(body: &str) -> Option<(Vec<String>, Vec<Hole>)> {
    let mut parts = Vec::with_capacity(3);
    let mut holes = Vec::with_capacity(2);
    let mut rest = body;
    loop {
        let next = MARKERS_IN_JSON
            .iter()
            .filter_map(|(text, hole)| rest.find(text).map(|at| (at, text.len(), *hole)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, len, hole)) => {
                parts.push(rest[..at].to_owned());
                holes.push(hole);
                rest = &rest[at + len..];
            }
            None => {
                parts.push(rest.to_owned());
                break;
            }
        }
    }
    holes.contains(&Hole::Revision).then_some((parts, holes))
}

/// Whether `error` is the statement refusing itself (a stored value differs from the one its
/// body was built from: see the module's documentation), after which the write runs on the
/// general path.
pub(crate) fn refused(error: &diesel::result::Error) -> bool {
    match error {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::NotNullViolation,
            info,
        ) => info.table_name() == Some("cqrs_outbox") && info.column_name() == Some("body"),
        _ => false,
    }
}

#[cfg(feature = "postgres")]
pub(crate) use pg::SingleWrite;

#[cfg(feature = "postgres")]
mod pg {
    use diesel::QueryResult;
    use diesel::pg::Pg;
    use diesel::query_builder::{AstPass, QueryFragment};
    use diesel::sql_types::{Nullable, Text};

    use super::{Hole, SingleKind, SinglePlan};
    use crate::exec::DialectKind;
    use crate::master::MasterColumns;
    use crate::master::statements::{push_columns, push_conflict, push_returning};

    /// The one statement of a [`SinglePlan`] for one row: its result is the row as stored (as
    /// it was, for a delete), or nothing when a delete found no row.
    #[doc(hidden)]
    pub(crate) struct SingleWrite<'a, M: MasterColumns<Pg>> {
        row: &'a M,
        plan: &'a SinglePlan,
        now: &'a M::Updated,
    }

    impl<'a, M: MasterColumns<Pg>> SingleWrite<'a, M> {
        /// The statement writing `row` as `plan` says, stamping `now` (the plan's time in the
        /// model's type).
        pub(crate) fn new(row: &'a M, plan: &'a SinglePlan, now: &'a M::Updated) -> Self {
            SingleWrite { row, plan, now }
        }
    }

    impl<M: MasterColumns<Pg>> QueryFragment<Pg> for SingleWrite<'_, M> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            let columns = M::COLUMNS;
            let all = 0..columns.len();
            let (pk, rev, upd) = (M::PK_INDEX, M::REVISION_INDEX, M::UPDATED_INDEX);
            let kind = self.plan.kind;
            // A save that reads the tracked fields' old values first.
            let tracked = kind == SingleKind::Save && self.plan.holes.contains(&Hole::Previous);
            // The columns written: all but a generated key.
            let written: Vec<usize> = all
                .clone()
                .filter(|&c| kind != SingleKind::InsertGenerated || c != pk)
                .collect();

            out.push_sql("WITH ");
            if kind == SingleKind::Delete {
                out.push_sql("\"r\" AS (DELETE FROM ");
                M::walk_table(out.reborrow())?;
                out.push_sql(" WHERE ");
                out.push_identifier(columns[pk])?;
                out.push_sql(" = ");
                self.row.walk_value(pk, out.reborrow())?;
            } else {
                // The proposed row, named so that the check below can compare with it.
                out.push_sql("\"v\" (");
                push_columns(&mut out, None, written.iter().copied(), columns)?;
                out.push_sql(") AS (VALUES (");
                for (n, &c) in written.iter().enumerate() {
                    if n > 0 {
                        out.push_sql(", ");
                    }
                    if c == upd {
                        M::walk_updated(self.now, out.reborrow())?;
                    } else {
                        self.row.walk_value(c, out.reborrow())?;
                    }
                }
                out.push_sql("))");
                if tracked {
                    // The stored row's tracked values, locked (the latest committed version).
                    out.push_sql(", \"p\" AS MATERIALIZED (SELECT ");
                    push_columns(&mut out, None, M::TRACKED_INDEXES.iter().copied(), columns)?;
                    out.push_sql(" FROM ");
                    M::walk_table(out.reborrow())?;
                    out.push_sql(" WHERE ");
                    out.push_identifier(columns[pk])?;
                    out.push_sql(" = ");
                    self.row.walk_value(pk, out.reborrow())?;
                    out.push_sql(" FOR UPDATE)");
                }
                out.push_sql(", \"r\" AS (INSERT INTO ");
                M::walk_table(out.reborrow())?;
                out.push_sql(" (");
                push_columns(&mut out, None, written.iter().copied(), columns)?;
                out.push_sql(") SELECT ");
                push_columns(&mut out, None, written.iter().copied(), columns)?;
                out.push_sql(" FROM \"v\"");
                if tracked {
                    // Reads (and locks) "p" before the row is written: evaluated after the
                    // write, in the same statement, it would no longer see the old row.
                    out.push_sql(" WHERE (SELECT count(*) FROM \"p\") >= 0");
                }
                if kind == SingleKind::Save {
                    push_conflict::<M, Pg>(&mut out, DialectKind::Postgres)?;
                    if tracked {
                        // A row inserted by another transaction since "p" found none: its old
                        // values are unknown here, so write nothing (no row comes back) and
                        // let the general path write it.
                        out.push_sql(" WHERE EXISTS (SELECT 1 FROM \"p\")");
                    }
                }
            }
            push_returning::<M, Pg>(&mut out, DialectKind::Postgres)?;

            out.push_sql(
                "), \"o\" AS (INSERT INTO cqrs_outbox (cqrs_id, routing_key, body, \
                 trace_context) SELECT ",
            );
            out.push_bind_param::<Text, str>(self.plan.cqrs_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(self.plan.cqrs_id)?;
            out.push_sql(", CASE WHEN ");
            if kind == SingleKind::Delete {
                // The DELETE is stamped `now`, which must come after the row's own time.
                out.push_sql("\"r\".");
                out.push_identifier(columns[upd])?;
                out.push_sql(" < ");
                M::walk_updated(self.now, out.reborrow())?;
            } else {
                // Stored as proposed: the stamp, and every other value compared as text.
                out.push_sql("\"r\".");
                out.push_identifier(columns[upd])?;
                out.push_sql(" = \"v\".");
                out.push_identifier(columns[upd])?;
                for &c in written.iter().filter(|&&c| c != rev && c != upd) {
                    out.push_sql(" AND \"r\".");
                    out.push_identifier(columns[c])?;
                    out.push_sql("::text IS NOT DISTINCT FROM \"v\".");
                    out.push_identifier(columns[c])?;
                    out.push_sql("::text");
                }
            }
            out.push_sql(" THEN ");
            for (n, part) in self.plan.parts.iter().enumerate() {
                if n > 0 {
                    out.push_sql(" || ");
                }
                out.push_bind_param::<Text, String>(part)?;
                if let Some(hole) = self.plan.holes.get(n) {
                    out.push_sql(" || ");
                    match (hole, kind) {
                        (Hole::Revision, SingleKind::Delete) => {
                            out.push_sql("(\"r\".");
                            out.push_identifier(columns[rev])?;
                            out.push_sql(" + 1)::text");
                        }
                        (Hole::Revision, _) => {
                            out.push_sql("\"r\".");
                            out.push_identifier(columns[rev])?;
                            out.push_sql("::text");
                        }
                        (Hole::Pk, _) => {
                            out.push_sql("\"r\".");
                            out.push_identifier(columns[pk])?;
                            out.push_sql("::text");
                        }
                        (Hole::Previous, _) => {
                            out.push_sql("COALESCE((SELECT json_build_object(");
                            let names = M::TRACKED_FIELDS.iter();
                            for (n, (name, &c)) in names.zip(M::TRACKED_INDEXES).enumerate() {
                                if n > 0 {
                                    out.push_sql(", ");
                                }
                                out.push_bind_param::<Text, str>(name)?;
                                out.push_sql(", \"p\".");
                                out.push_identifier(columns[c])?;
                            }
                            out.push_sql(")::text FROM \"p\"), ");
                            out.push_bind_param::<Text, String>(&self.plan.previous_nulls)?;
                            out.push_sql(")");
                        }
                    }
                }
            }
            out.push_sql(" END, ");
            out.push_bind_param::<Nullable<Text>, Option<String>>(&self.plan.trace_context)?;
            out.push_sql(" FROM \"r\"");
            if kind != SingleKind::Delete {
                out.push_sql(", \"v\"");
            }
            out.push_sql(") SELECT ");
            push_columns(&mut out, Some("r"), all, columns)?;
            out.push_sql(" FROM \"r\"");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_cut_at_its_markers_in_order() {
        let rev = serde_json::to_string(REVISION_MARKER).unwrap();
        let pk = serde_json::to_string(PK_MARKER).unwrap();
        let body = format!(r#"{{"a":{rev},"id":{pk},"b":1,"pk":{pk}}}"#);
        let (parts, holes) = split_template(&body).unwrap();
        assert_eq!(holes, vec![Hole::Revision, Hole::Pk, Hole::Pk]);
        assert_eq!(parts, vec![r#"{"a":"#, r#","id":"#, r#","b":1,"pk":"#, "}"]);
    }

    #[test]
    fn the_markers_are_found_as_serde_json_writes_them() {
        let markers = [REVISION_MARKER, PK_MARKER, PREVIOUS_MARKER];
        for ((json, _), marker) in MARKERS_IN_JSON.iter().zip(markers) {
            assert_eq!(*json, serde_json::to_string(marker).unwrap());
        }
    }

    #[test]
    fn a_template_without_a_revision_is_refused() {
        assert!(split_template(r#"{"a":1}"#).is_none());
    }

    #[test]
    fn filling_the_holes_gives_the_body_built_with_the_values() {
        let template = serde_json::json!({
            "instance_data": {"cqrs_revision": REVISION_MARKER, "id": PK_MARKER, "name": "x"},
            "previous_data": PREVIOUS_MARKER,
            "instance_pk": PK_MARKER,
        })
        .to_string();
        let (parts, holes) = split_template(&template).unwrap();
        let mut filled = String::new();
        for (n, part) in parts.iter().enumerate() {
            filled.push_str(part);
            match holes.get(n) {
                Some(Hole::Revision) => filled.push('3'),
                Some(Hole::Pk) => filled.push_str("42"),
                Some(Hole::Previous) => filled.push_str(r#"{"name":"w"}"#),
                None => {}
            }
        }
        let expected = serde_json::json!({
            "instance_data": {"cqrs_revision": 3, "id": 42, "name": "x"},
            "previous_data": {"name": "w"},
            "instance_pk": 42,
        });
        assert_eq!(serde_json::from_str::<Value>(&filled).unwrap(), expected);
    }
}
