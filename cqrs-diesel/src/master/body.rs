//! The messages master writes queue: their bodies, built from a row as stored, and the time
//! and time to live they carry.

use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_core::{Clock, Payload, SignalType};
use serde_json::{Map, Value};

use super::exec::Exec;
use super::{HookError, MasterModel, UpdatedAt};
use crate::error::{Error, Result};

/// The TTL written into `expires`: `None` until set or first read from the environment.
static MESSAGE_TTL: RwLock<Option<Option<Duration>>> = RwLock::new(None);

/// Sets the time to live written into the `expires` field of messages queued from now on, in
/// this process (`None`: never expire). Without this call the first write reads
/// `CQRS_MESSAGE_TTL` from the environment (default 86400 s, django-cqrs's); services that
/// build their [`Config`](cqrs_core::Config) otherwise call it with `config.message_ttl()`.
pub fn set_message_ttl(ttl: Option<Duration>) {
    match MESSAGE_TTL.write() {
        Ok(mut guard) => *guard = Some(ttl),
        Err(poisoned) => *poisoned.into_inner() = Some(ttl),
    }
}

fn message_ttl() -> Option<Duration> {
    let current = match MESSAGE_TTL.read() {
        Ok(guard) => *guard,
        Err(poisoned) => *poisoned.into_inner(),
    };
    if let Some(ttl) = current {
        return ttl;
    }
    let ttl = match cqrs_core::Config::from_env() {
        Ok(config) => config.message_ttl(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the message TTL from the environment; using 86400 s");
            Some(Duration::from_secs(86_400))
        }
    };
    set_message_ttl(ttl);
    ttl
}

/// The clock of the master side: `None` until [`set_clock`] is called (then the system's).
static CLOCK: RwLock<Option<Clock>> = RwLock::new(None);

/// Sets where the master side of this process reads the current time: `cqrs_updated` of
/// written rows, the `expires` of queued messages, the time in diff headers. The system clock
/// unless set; tests set a [`ManualClock`](cqrs_core::ManualClock)'s.
pub fn set_clock(clock: Clock) {
    match CLOCK.write() {
        Ok(mut guard) => *guard = Some(clock),
        Err(poisoned) => *poisoned.into_inner() = Some(clock),
    }
}

/// The current time on the master side (see [`set_clock`]).
pub(crate) fn now() -> DateTime<Utc> {
    let guard = match CLOCK.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    match guard.as_ref() {
        Some(clock) => clock.now(),
        None => Utc::now(),
    }
}

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

/// `instance_data` of a SAVE or SYNC of `row` (as stored): the default serialization, then
/// the model's `serialize` hook.
pub(crate) fn instance_data<M: MasterModel, E: Exec>(
    row: &M,
    conn: &mut E,
) -> Result<Map<String, Value>> {
    row.cqrs_check_values()?;
    let mut data = row.cqrs_instance_data();
    if M::CUSTOM_HOOKS {
        row.serialize(conn.db_conn(), &mut data)
            .map_err(|error| hook_error(M::CQRS_ID, "serialize", error))?;
    }
    Ok(data)
}

/// The body of a SAVE or SYNC of `row` (as stored).
pub(crate) fn save_body<M: MasterModel, E: Exec>(
    row: &M,
    conn: &mut E,
    signal: SignalType,
    previous_data: Option<Map<String, Value>>,
) -> Result<String> {
    Ok(body(row, signal, instance_data(row, conn)?, previous_data))
}

/// The body of a DELETE of `old` (the row as it was).
pub(crate) fn delete_body<M: MasterModel>(old: &M) -> String {
    let mut data = Map::with_capacity(4);
    data.insert("id".to_owned(), old.cqrs_pk());
    data.insert(
        "cqrs_revision".to_owned(),
        Value::from(old.cqrs_revision().saturating_add(1)),
    );
    data.insert(
        "cqrs_updated".to_owned(),
        UpdatedAt::to_wire_utc(&delete_time(old)),
    );
    if let Some(custom) = old.delete_custom() {
        data.insert("custom".to_owned(), Value::Object(custom));
    }
    body(old, SignalType::Delete, data, None)
}

/// The `cqrs_updated` of a DELETE: now, but never at or before the deleted row's own time, so
/// that replicas placing a message without `x-cqrs-seq` see the DELETE after every write of
/// the life it ends (time separates lives at a DELETE: docs/DESIGN.md).
fn delete_time<M: MasterModel>(old: &M) -> DateTime<Utc> {
    let now = <DateTime<Utc> as UpdatedAt>::now();
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
    row: &M,
    signal: SignalType,
    data: Map<String, Value>,
    previous_data: Option<Map<String, Value>>,
) -> String {
    body_with_pk(row, row.cqrs_pk(), signal, data, previous_data, now()).to_string()
}

/// [`body`] with the `instance_pk` given, its `expires` counted from `now`, as a JSON value.
pub(crate) fn body_with_pk<M: MasterModel>(
    row: &M,
    pk: Value,
    signal: SignalType,
    data: Map<String, Value>,
    previous_data: Option<Map<String, Value>>,
    now: DateTime<Utc>,
) -> Value {
    let mut payload = Payload::new(signal, M::CQRS_ID, pk, data)
        .with_ttl(now, message_ttl())
        .with_meta(row.meta().unwrap_or_default());
    payload.previous_data = previous_data;
    payload.correlation_id = row.correlation_id();
    payload.to_value()
}
