//! What `#[derive(ReplicaModel)]` implements: decoding a message into a row; and the model's
//! statements on every connection whose backend the derive describes it on.

use std::hash::Hash;

use cqrs_core::{ModelPolicy, Payload, SignalType};
use diesel::QueryResult;
use serde_json::{Map, Value};

use crate::connection::DbConn;
use crate::exec::{Blocking, Exec, Int};
use crate::master::HookError;
use crate::replica::sql::{KeyRevision, ReplicaColumns, Stmt, Upsert, ready};

/// A replica model's retry policy as code (django-cqrs's `should_retry_cqrs` and
/// `get_cqrs_retry_delay`). `#[derive(ReplicaModel)]` implements it with the defaults, which
/// keep the configured policy exactly; with `#[cqrs(hooks)]` the derive leaves it to you:
///
/// ```
/// use std::time::Duration;
/// use cqrs_diesel::{Error, ReplicaHooks, ReplicaModel};
///
/// #[derive(Debug, Clone, ReplicaModel)]
/// #[cqrs(id = "account", custom, hooks)]
/// struct AccountAudit {
///     id: i64,
/// }
/// # impl cqrs_diesel::CustomReplica for AccountAudit {
/// #     fn cqrs_create(_: Option<cqrs_diesel::DbConn<'_>>, _: Self, _: cqrs_diesel::MessageInfo<'_>) -> Result<(), cqrs_diesel::HookError> { Ok(()) }
/// #     fn cqrs_delete(_: Option<cqrs_diesel::DbConn<'_>>, _: i64, _: cqrs_diesel::MessageInfo<'_>) -> Result<(), cqrs_diesel::HookError> { Ok(()) }
/// # }
///
/// impl ReplicaHooks for AccountAudit {
///     fn should_retry_cqrs(current_retry: u32, error: &Error, default: bool) -> bool {
///         // A handler's refusal will not change: dead-letter it at once.
///         !matches!(error, Error::Hook { .. }) && default
///     }
///
///     fn get_cqrs_retry_delay(current_retry: u32) -> Option<Duration> {
///         Some(Duration::from_secs(5) * (current_retry + 1))
///     }
/// }
/// ```
///
/// Both are asked only for a message that failed alone with an error of its own
/// ([`BatchError::Failed`](cqrs_core::BatchError::Failed)). A conflict, an unavailable
/// database and a statement timeout ([`Error::QueryTimeout`](crate::Error::QueryTimeout)) retry
/// the whole batch without asking: they say nothing about one message.
pub trait ReplicaHooks {
    /// Whether to retry a message that failed with `error` after `current_retry` earlier
    /// retries. `default` is what the configured policy says (retries below the model's
    /// maximum, `max_retries` or `CQRS_MAX_RETRIES`); return it to keep that policy. `false`
    /// dead-letters the message now, with a reason that says the hook refused; `true` retries
    /// it even past the maximum.
    fn should_retry_cqrs(current_retry: u32, error: &crate::Error, default: bool) -> bool {
        let _ = (current_retry, error);
        default
    }

    /// The delay before retry number `current_retry + 1`; `None` (the default) keeps the
    /// model's `retry_delay` or `CQRS_RETRY_DELAY`, exponential when configured.
    fn get_cqrs_retry_delay(current_retry: u32) -> Option<std::time::Duration> {
        let _ = current_retry;
        None
    }
}

/// A Diesel model that keeps a local copy of another service's rows. Implemented by
/// `#[derive(ReplicaModel)]`; register it with [`Replicas::register`](crate::Replicas::register).
pub trait ReplicaModel: ReplicaHooks + Sized + Send + Sync + 'static {
    /// The `cqrs_id` of the master model this replicates.
    const CQRS_ID: &'static str;
    /// Whether custom handlers receive the message's `meta` (`#[cqrs(meta)]`).
    const RECEIVES_META: bool;
    /// How many columns one row binds (to size statements).
    const COLUMN_COUNT: usize;
    /// The primary key type.
    type Pk: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static;

    /// Retry and SYNC settings of this model (`#[cqrs(max_retries = .., retry_delay = ..,
    /// only_direct_syncs)]`).
    fn cqrs_policy() -> ModelPolicy;

    /// Builds a row from `instance_data`, following the field mapping. Master keys the model
    /// lacks are ignored; a key missing for a non-optional field is an error.
    fn cqrs_decode(data: &Map<String, Value>) -> Result<Self, String>;

    /// Decodes a primary key from its wire form (`instance_pk`).
    fn cqrs_decode_pk(value: &Value) -> Result<Self::Pk, String>;

    /// The wire form of a primary key.
    fn cqrs_encode_pk(key: &Self::Pk) -> Value;

    /// This row's primary key.
    fn cqrs_key(&self) -> Self::Pk;

    /// This row's revision (`None` for custom models without a `cqrs_revision` field).
    fn cqrs_revision(&self) -> Option<i64>;
}

/// The statements of one replica model on connection `C` (a sync connection, a
/// [`CqrsConnection`](crate::CqrsConnection) where the replica worker applies): implemented, once in this crate, for
/// every model that `#[derive(ReplicaModel)]` describes on `C`'s backend (`backends(...)`),
/// from the column names and binds the derive emits. Operator tools may call it directly.
pub trait ReplicaStore<C: Exec<Mode = Blocking>>: ReplicaColumns<C::Backend> {
    /// The stored revisions of these keys (rows that do not exist are absent).
    fn cqrs_stored_revisions(keys: &[Self::Pk], conn: &mut C) -> QueryResult<Vec<(Self::Pk, i64)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = ready(Exec::load::<KeyRevision<Self>, _>(
            conn,
            Stmt::<'_, Self>::Revisions(keys),
        ))?;
        Ok(rows.into_iter().map(|row| (row.0, row.1)).collect())
    }

    /// Writes the rows with one statement: each is inserted, or replaces the stored row with
    /// its primary key. Which messages to write is decided before (see the replica state).
    fn cqrs_write(rows: &[&Self], conn: &mut C) -> QueryResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        ready(Exec::execute(conn, Upsert { rows }))?;
        Ok(())
    }

    /// Deletes the rows with these keys with one statement.
    fn cqrs_delete_keys(keys: &[Self::Pk], conn: &mut C) -> QueryResult<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        ready(Exec::execute(conn, Stmt::<'_, Self>::DeleteKeys(keys)))
    }

    /// Up to `limit` stored `(key, revision)` pairs in key order, after `after` (keyset paging,
    /// for operator commands).
    fn cqrs_key_page(
        after: Option<&Self::Pk>,
        limit: i64,
        conn: &mut C,
    ) -> QueryResult<Vec<(Self::Pk, i64)>> {
        let page: Stmt<'_, Self> = Stmt::KeyPage { after, limit };
        let rows = ready(Exec::load::<KeyRevision<Self>, _>(conn, page))?;
        Ok(rows.into_iter().map(|row| (row.0, row.1)).collect())
    }

    /// How many rows the table holds (for operator commands' progress).
    fn cqrs_count_all(conn: &mut C) -> QueryResult<i64> {
        let rows = ready(Exec::load::<Int, _>(conn, Stmt::<'_, Self>::Count))?;
        Ok(rows.first().map_or(0, |n| n.0))
    }

    /// Deletes every row (`bulk-load --clear`).
    fn cqrs_delete_all(conn: &mut C) -> QueryResult<usize> {
        ready(Exec::execute(conn, Stmt::<'_, Self>::DeleteAll))
    }
}

impl<C: Exec<Mode = Blocking>, M: ReplicaColumns<C::Backend>> ReplicaStore<C> for M {}

/// A message as custom handlers see it.
#[derive(Debug, Clone, Copy)]
pub struct MessageInfo<'a> {
    /// SAVE, SYNC or DELETE.
    pub signal_type: SignalType,
    /// Whether it was aimed at this service's queue (a direct SYNC or a retry).
    pub direct: bool,
    /// The whole payload (`previous_data`, `correlation_id`, `retries`, ...).
    pub payload: &'a Payload,
    /// `meta`, when the model has `#[cqrs(meta)]`.
    pub meta: Option<&'a Value>,
}

/// Handlers that replace the default create / update / delete of a replica model, as
/// django-cqrs's `cqrs_create`, `cqrs_update` and `cqrs_delete` do. Mark the model
/// `#[cqrs(custom)]` and register it with
/// [`Replicas::register_custom`](crate::Replicas::register_custom).
///
/// The connection is the batch's transaction (`None` for a registry without a database: a
/// replica that touches no database at all). An `Err` fails the message: it is retried, then
/// dead-lettered.
pub trait CustomReplica: ReplicaModel {
    /// Whether the row exists, which decides between `cqrs_create` and `cqrs_update`. The
    /// default says no, so every SAVE and SYNC goes to `cqrs_create`.
    fn cqrs_exists(conn: Option<DbConn<'_>>, key: &Self::Pk) -> Result<bool, HookError> {
        let _ = (conn, key);
        Ok(false)
    }

    /// Creates the row from a SAVE or SYNC.
    fn cqrs_create(
        conn: Option<DbConn<'_>>,
        row: Self,
        message: MessageInfo<'_>,
    ) -> Result<(), HookError>;

    /// Updates the row from a SAVE or SYNC (default: [`CustomReplica::cqrs_create`]).
    fn cqrs_update(
        conn: Option<DbConn<'_>>,
        row: Self,
        message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        Self::cqrs_create(conn, row, message)
    }

    /// Deletes the row with this key.
    fn cqrs_delete(
        conn: Option<DbConn<'_>>,
        key: Self::Pk,
        message: MessageInfo<'_>,
    ) -> Result<(), HookError>;
}

/// A primary key as the tombstone table stores it: strings as they are, other values as JSON.
pub(crate) fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
