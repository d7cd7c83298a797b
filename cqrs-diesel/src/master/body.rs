//! The messages master writes queue: their bodies, built from a row as stored, and the time
//! and time to live they carry.

use chrono::{DateTime, Utc};
use cqrs_core::{Payload, SignalType};
use serde_json::{Map, Value};

use super::config::MasterConfig;
use super::message::MessageContext;
use super::{HookError, MasterModel, UpdatedAt};
use crate::error::{Error, Result};
use crate::exec::Exec;

/// `previous_data` of a row that did not exist: every tracked field null (`None` without
/// tracked fields).
pub(crate) fn tracked_nulls<M: MasterModel>() -> Option<Map<String, Value>> {
    if M::TRACKED_FIELDS.is_empty() {
        return None;
    }
    Some(
        M::TRACKED_FIELDS
            .iter()
            .map(|name| ((*name).to_owned(), Value::Null))
            .collect(),
    )
}

fn hook_error(cqrs_id: &'static str, hook: &'static str, error: HookError) -> Error {
    Error::Hook {
        cqrs_id,
        hook,
        reason: error.to_string(),
    }
}

/// `instance_data` of a SAVE or SYNC of each row of a page (as stored), in order: the default
/// serialization, then the model's hooks: `relate_cqrs_serialization` once for the page, then
/// per row `serialize_related` with what it loaded, or `serialize_async` when it loaded
/// nothing.
pub(crate) async fn page_instance_data<M: MasterModel + Sync, E: Exec>(
    rows: &[&M],
    conn: &mut E,
) -> Result<Vec<Map<String, Value>>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        row.cqrs_check_values()?;
        out.push(row.cqrs_instance_data());
    }
    if M::CUSTOM_HOOKS && !rows.is_empty() {
        let related = M::relate_cqrs_serialization_async(rows, conn.db_conn())
            .await
            .map_err(|error| hook_error(M::CQRS_ID, "relate_cqrs_serialization", error))?;
        for (row, data) in rows.iter().zip(out.iter_mut()) {
            let result = if related.is_none() {
                row.serialize_async(conn.db_conn(), data).await
            } else {
                row.serialize_related(&related, conn.db_conn(), data)
            };
            result.map_err(|error| hook_error(M::CQRS_ID, "serialize", error))?;
        }
    }
    Ok(out)
}

/// The body of a SAVE or SYNC of `row` (as stored).
pub(crate) async fn save_body<M: MasterModel + Sync, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    signal: SignalType,
    previous_data: Option<Map<String, Value>>,
    queue: Option<&str>,
) -> Result<String> {
    let mut previous_data = previous_data;
    let mut bodies = save_bodies(
        config,
        &[row],
        conn,
        signal,
        |_| previous_data.take(),
        queue,
    )
    .await?;
    bodies.pop().ok_or_else(|| Error::NotFound {
        cqrs_id: M::CQRS_ID,
        pk: row.cqrs_pk().to_string(),
    })
}

/// The bodies of a SAVE or SYNC of each row of a page (as stored), in order, with the
/// `previous_data` `previous` gives each.
pub(crate) async fn save_bodies<M: MasterModel + Sync, E: Exec>(
    config: &MasterConfig,
    rows: &[&M],
    conn: &mut E,
    signal: SignalType,
    mut previous: impl FnMut(&M) -> Option<Map<String, Value>>,
    queue: Option<&str>,
) -> Result<Vec<String>> {
    let data = page_instance_data(rows, conn).await?;
    Ok(rows
        .iter()
        .zip(data)
        .map(|(row, data)| body(config, *row, signal, data, previous(row), queue))
        .collect())
}

/// The body of a DELETE of `old` (the row as it was).
pub(crate) fn delete_body<M: MasterModel>(config: &MasterConfig, old: &M) -> String {
    let mut data = Map::with_capacity(4);
    data.insert("id".to_owned(), old.cqrs_pk());
    data.insert(
        "cqrs_revision".to_owned(),
        Value::from(old.cqrs_revision().saturating_add(1)),
    );
    data.insert(
        "cqrs_updated".to_owned(),
        UpdatedAt::to_wire_utc(&delete_time(old, config.now())),
    );
    if let Some(custom) = old.delete_custom() {
        data.insert("custom".to_owned(), Value::Object(custom));
    }
    body(config, old, SignalType::Delete, data, None, None)
}

/// The `cqrs_updated` of a DELETE: now, but never at or before the deleted row's own time, so
/// that replicas placing a message without `x-cqrs-seq` see the DELETE after every write of
/// the life it ends (time separates lives at a DELETE: docs/DESIGN.md).
fn delete_time<M: MasterModel>(old: &M, now: DateTime<Utc>) -> DateTime<Utc> {
    let stored = old
        .cqrs_updated_wire()
        .as_str()
        .and_then(|at| cqrs_core::parse_timestamp(at).ok())
        .map(|at| at.with_timezone(&Utc));
    match stored {
        Some(stored) if stored >= now => stored + chrono::TimeDelta::microseconds(1),
        _ => now,
    }
}

pub(crate) fn body<M: MasterModel>(
    config: &MasterConfig,
    row: &M,
    signal: SignalType,
    data: Map<String, Value>,
    previous_data: Option<Map<String, Value>>,
    queue: Option<&str>,
) -> String {
    let now = config.clock().now();
    let message = Message {
        pk: row.cqrs_pk(),
        signal,
        data,
        previous_data,
        queue,
    };
    body_with_pk(config, row, message, now).to_string()
}

/// What a body is built from, besides the row and the configuration.
pub(crate) struct Message<'q> {
    /// `instance_pk`.
    pub(crate) pk: Value,
    pub(crate) signal: SignalType,
    /// `instance_data`.
    pub(crate) data: Map<String, Value>,
    pub(crate) previous_data: Option<Map<String, Value>>,
    /// The queue of a SYNC sent to one replica.
    pub(crate) queue: Option<&'q str>,
}

/// [`body`] with the `instance_pk` given, its `expires` counted from `now`, as a JSON value.
/// The `meta` and `correlation_id` are the model's hooks' when they give one, otherwise the
/// configuration's functions'.
pub(crate) fn body_with_pk<M: MasterModel>(
    config: &MasterConfig,
    row: &M,
    message: Message<'_>,
    now: DateTime<Utc>,
) -> Value {
    let mut meta = row.meta();
    let mut correlation_id = row.correlation_id();
    if (meta.is_none() && config.meta_function().is_some())
        || (correlation_id.is_none() && config.correlation_function().is_some())
    {
        let context = MessageContext {
            cqrs_id: M::CQRS_ID,
            signal: message.signal,
            instance_pk: &message.pk,
            instance_data: &message.data,
            previous_data: message.previous_data.as_ref(),
            queue: message.queue,
            row,
        };
        if meta.is_none() {
            meta = config
                .meta_function()
                .and_then(|function| function(&context));
        }
        if correlation_id.is_none() {
            correlation_id = config
                .correlation_function()
                .and_then(|function| function(&context));
        }
    }
    let mut payload = Payload::new(message.signal, M::CQRS_ID, message.pk, message.data)
        .with_ttl(now, config.message_ttl())
        .with_meta(meta.unwrap_or_default());
    payload.previous_data = message.previous_data;
    payload.correlation_id = correlation_id;
    payload.to_value()
}
