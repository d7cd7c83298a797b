//! The master writes, each written once as `async` code over [`Exec`] and run by a sync
//! connection (whose futures are ready at once) or an async one: the transaction and its
//! conflict retries, the one-statement path, and what each write queues.

use std::future::Future;

use chrono::{DateTime, Utc};
use cqrs_core::{SignalType, direct_routing_key};
use serde_json::{Map, Value};

use super::body::{delete_body, save_bodies, save_body, tracked_nulls};
use super::columns::RowOf;
use super::config::MasterConfig;
use super::registry::{self, PriorSave};
use super::single::{self, SingleKind, SinglePlan};
use super::tx::{connection_key, in_write_transaction};
use super::{AsyncInsert, MasterModel, UpdatedAt, rows};
use crate::error::{Error, Result};
use crate::exec::{Dialect, DialectKind, Exec};
use crate::outbox::{self, NewOutboxEntry, write as queue};

/// Rows per statement: within every backend's limit on bound parameters (SQLite's 32766 is the
/// lowest), and at most 1000 so that one statement stays a reasonable size.
pub(crate) fn rows_per_statement(columns: usize) -> usize {
    (30_000 / columns.max(1)).clamp(1, 1000)
}

/// After a write: wake the relays unless the commit is still to come in an `atomic` block,
/// whose end wakes them. Inside a caller's plain transaction the relay may wake before the
/// commit; it then looks again shortly after (see the relay's idle back-off).
fn after_write<C>(conn: &mut C) {
    if !registry::in_block(connection_key(conn)) {
        outbox::notify_commit();
    }
}

fn pk_key<M: MasterModel>(row: &M) -> String {
    row.cqrs_pk().to_string()
}

/// Runs a write of `kind` as one statement when the backend and the model allow it (see
/// [`single`]): outside any transaction (the statement is its own), for a model that publishes
/// with the default hooks and, for a save, tracks no field (whose old values the message needs
/// before it is built) unless PostgreSQL can read them in the statement. `None` when it did not
/// run (nor with a configuration whose meta or correlation function must see each message as
/// sent), or refused itself because a stored value differed from the one its message was built
/// from, or met a concurrent transaction: then the caller writes on the general path, which
/// handles all of these.
async fn write_single<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    kind: SingleKind,
) -> Result<Option<Option<M>>> {
    if E::Backend::KIND != DialectKind::Postgres
        || M::CUSTOM_HOOKS
        || config.has_message_functions()
        || !M::PRODUCE
        || (kind == SingleKind::Save && !M::TRACKED_FIELDS.is_empty() && !M::TRACKED_IN_SQL)
        || conn.depth() > 0
        // At depth 0 a mark of an abandoned write is stale: forgotten, and the write runs.
        || registry::abandoned_inside(connection_key(conn), 0)
        || conn.broken()
    {
        return Ok(None);
    }
    let Some(plan) = SinglePlan::new(config, row, kind, config.now()) else {
        return Ok(None);
    };
    match E::Backend::single(conn, row, &plan).await {
        Ok(stored) => Ok(Some(stored)),
        Err(error) if single::refused(&error) || crate::error::is_conflict(&error) => {
            tracing::debug!(
                cqrs_id = M::CQRS_ID,
                %error,
                "the one-statement write did not apply; writing on the general path"
            );
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn save<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
) -> Result<M> {
    // Before the database sees it: some backends would store a NaN, others refuse it with
    // their own words, or turn it into NULL.
    row.cqrs_check_values()?;
    if let Some(Some(stored)) = write_single(config, row, conn, SingleKind::Save).await? {
        after_write(conn);
        return Ok(stored);
    }
    let key = connection_key(conn);
    let stored = in_write_transaction!(E, conn, save_in_transaction(config, row, conn, key))?;
    after_write(conn);
    Ok(stored)
}

async fn save_in_transaction<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    key: usize,
) -> Result<M> {
    let pk = pk_key(row);
    // A prior save in this `atomic` block, unless a savepoint rolled it back since.
    let prior = match registry::prior(key, M::CQRS_ID, &pk) {
        Some(prior) if queue::contains(conn, prior.outbox_id).await? => Some(prior),
        _ => None,
    };
    let (stored, previous_data) = match &prior {
        Some(prior) => {
            let stored = match rows::update(conn, row, false, config.now()).await? {
                Some(stored) => stored,
                None => rows::insert_one(conn, row, config.now()).await?,
            };
            (stored, prior.previous_data.clone())
        }
        None if M::TRACKED_FIELDS.is_empty() => {
            (rows::upsert(conn, row, config.now()).await?, None)
        }
        None => match rows::find(conn, row, true).await? {
            Some(old) => {
                let stored = rows::update(conn, row, true, config.now())
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        cqrs_id: M::CQRS_ID,
                        pk: pk.clone(),
                    })?;
                (stored, Some(old.cqrs_tracked_data()))
            }
            None => (
                rows::insert_one(conn, row, config.now()).await?,
                tracked_nulls::<M>(),
            ),
        },
    };
    if !M::PRODUCE {
        return Ok(stored);
    }
    let body = save_body(
        config,
        &stored,
        conn,
        SignalType::Save,
        previous_data.clone(),
        None,
    )
    .await?;
    match prior {
        Some(prior) => {
            queue::update_body(conn, prior.outbox_id, &body).await?;
        }
        None => queue_new_save::<M, E>(conn, key, pk, &body, previous_data).await?,
    }
    Ok(stored)
}

/// Queues the SAVE `body` of a row that has no message in this `atomic` block yet.
async fn queue_new_save<M: MasterModel, E: Exec>(
    conn: &mut E,
    key: usize,
    pk: String,
    body: &str,
    previous_data: Option<Map<String, Value>>,
) -> Result<()> {
    let entry = NewOutboxEntry {
        cqrs_id: M::CQRS_ID,
        routing_key: M::CQRS_ID,
        body,
    };
    // Only an `atomic` block needs the entry's id, to rewrite it on the next save.
    if registry::in_block(key) {
        let outbox_id = queue::insert(conn, &entry).await?;
        registry::record(
            key,
            M::CQRS_ID,
            pk,
            PriorSave {
                outbox_id,
                previous_data,
            },
        );
    } else {
        queue::push(conn, &entry).await?;
    }
    Ok(())
}

pub(crate) async fn insert_generated<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
) -> Result<M> {
    row.cqrs_check_values()?;
    if let Some(Some(stored)) = write_single(config, row, conn, SingleKind::InsertGenerated).await?
    {
        after_write(conn);
        return Ok(stored);
    }
    let key = connection_key(conn);
    let stored = in_write_transaction!(E, conn, insert_generated_once(config, row, conn, key))?;
    after_write(conn);
    Ok(stored)
}

async fn insert_generated_once<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    key: usize,
) -> Result<M> {
    let stored = rows::insert_generated(conn, row, config.now()).await?;
    if M::PRODUCE {
        let previous_data = tracked_nulls::<M>();
        let body = save_body(
            config,
            &stored,
            conn,
            SignalType::Save,
            previous_data.clone(),
            None,
        )
        .await?;
        queue_new_save::<M, E>(conn, key, pk_key(&stored), &body, previous_data).await?;
    }
    Ok(stored)
}

/// How a write calls the application's insert (see `insert_with_and_publish`): a sync
/// closure, whose result is ready at once ([`Ready`]), or an async one ([`Awaited`]). The
/// write itself ([`insert_with`]) is written once over this.
pub(crate) trait InsertCall<E, R>: Send {
    /// Runs the insert on `conn`, stamping the rows with `now`.
    fn call<'c>(
        &'c mut self,
        conn: &'c mut E,
        now: DateTime<Utc>,
    ) -> impl Future<Output = diesel::QueryResult<R>> + Send + 'c;
}

/// A sync closure as an [`InsertCall`]: its statements run in the call.
pub(crate) struct Ready<F>(pub(crate) F);

impl<E, R, F> InsertCall<E, R> for Ready<F>
where
    F: FnMut(&mut E, DateTime<Utc>) -> diesel::QueryResult<R> + Send,
    R: Send + 'static,
{
    fn call<'c>(
        &'c mut self,
        conn: &'c mut E,
        now: DateTime<Utc>,
    ) -> impl Future<Output = diesel::QueryResult<R>> + Send + 'c {
        std::future::ready((self.0)(conn, now))
    }
}

/// An async closure as an [`InsertCall`]: its future is awaited.
pub(crate) struct Awaited<F>(pub(crate) F);

impl<E, R, F> InsertCall<E, R> for Awaited<F>
where
    F: for<'c> AsyncInsert<&'c mut E, diesel::QueryResult<R>, Fut: Send> + Send,
    E: 'static,
    R: Send + 'static,
{
    fn call<'c>(
        &'c mut self,
        conn: &'c mut E,
        now: DateTime<Utc>,
    ) -> impl Future<Output = diesel::QueryResult<R>> + Send + 'c {
        (self.0)(conn, now)
    }
}

/// Runs the caller's `insert` in a write transaction, checks the stamp of every row it
/// returns (`into_rows` turns what it returns into the rows), and queues their SAVEs.
pub(crate) async fn insert_with<M: RowOf<E>, E: Exec, R, F>(
    config: &MasterConfig,
    conn: &mut E,
    mut insert: F,
    into_rows: fn(R) -> Vec<M>,
) -> Result<Vec<M>>
where
    F: InsertCall<E, R>,
{
    let stored = in_write_transaction!(
        E,
        conn,
        insert_with_once(config, conn, &mut insert, into_rows)
    )?;
    after_write(conn);
    Ok(stored)
}

async fn insert_with_once<M: RowOf<E>, E: Exec, R, F>(
    config: &MasterConfig,
    conn: &mut E,
    insert: &mut F,
    into_rows: fn(R) -> Vec<M>,
) -> Result<Vec<M>>
where
    F: InsertCall<E, R>,
{
    let now = config.now();
    let stored = into_rows(insert.call(conn, now).await?);
    let expected = UpdatedAt::to_wire_utc(&now);
    for row in &stored {
        row.cqrs_check_values()?;
        let found = row.cqrs_updated_wire();
        if found != expected {
            return Err(Error::Unstamped {
                cqrs_id: M::CQRS_ID,
                found: found.to_string(),
                expected: expected.to_string(),
            });
        }
    }
    if M::PRODUCE {
        queue_saves(config, conn, &stored, |_| tracked_nulls::<M>()).await?;
    }
    Ok(stored)
}

pub(crate) async fn delete<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
) -> Result<bool> {
    if let Some(old) = write_single(config, row, conn, SingleKind::Delete).await? {
        let deleted = old.is_some();
        if deleted {
            after_write(conn);
        }
        return Ok(deleted);
    }
    let key = connection_key(conn);
    let deleted = in_write_transaction!(E, conn, delete_once(config, row, conn, key))?;
    if deleted {
        after_write(conn);
    }
    Ok(deleted)
}

async fn delete_once<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    key: usize,
) -> Result<bool> {
    let Some(old) = rows::delete(conn, row).await? else {
        return Ok(false);
    };
    registry::forget(key, M::CQRS_ID, &pk_key(&old));
    if M::PRODUCE {
        let body = delete_body(config, &old);
        queue::push(
            conn,
            &NewOutboxEntry {
                cqrs_id: M::CQRS_ID,
                routing_key: M::CQRS_ID,
                body: &body,
            },
        )
        .await?;
    }
    Ok(true)
}

/// Queues a SAVE of each stored row, with the `previous_data` `previous` gives it.
async fn queue_saves<M, E>(
    config: &MasterConfig,
    conn: &mut E,
    stored: &[M],
    previous: impl Fn(&M) -> Option<Map<String, Value>>,
) -> Result<()>
where
    M: MasterModel + Sync,
    E: Exec,
{
    // One page: the model's `relate_cqrs_serialization` runs once for all of them.
    let refs: Vec<&M> = stored.iter().collect();
    let bodies = save_bodies(config, &refs, conn, SignalType::Save, previous, None).await?;
    let entries: Vec<NewOutboxEntry<'_>> = bodies
        .iter()
        .map(|body| NewOutboxEntry {
            cqrs_id: M::CQRS_ID,
            routing_key: M::CQRS_ID,
            body,
        })
        .collect();
    for chunk in entries.chunks(rows_per_statement(3)) {
        queue::push_many(conn, chunk).await?;
    }
    Ok(())
}

/// How a bulk insert writes one batch of rows: with their keys, or with generated ones.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BulkInsert {
    WithKeys,
    GeneratedKeys,
}

/// Inserts `rows`, one statement per batch, and queues a SAVE per stored row, in one write
/// transaction.
pub(crate) async fn bulk_insert<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    conn: &mut E,
    rows: &[M],
    how: BulkInsert,
) -> Result<Vec<M>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    rows.iter().try_for_each(MasterModel::cqrs_check_values)?;
    let stored = in_write_transaction!(E, conn, bulk_insert_once(config, conn, rows, how))?;
    after_write(conn);
    Ok(stored)
}

async fn bulk_insert_once<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    conn: &mut E,
    rows: &[M],
    how: BulkInsert,
) -> Result<Vec<M>> {
    let mut all = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(rows_per_statement(M::COLUMN_COUNT)) {
        let refs: Vec<&M> = chunk.iter().collect();
        let stored = match how {
            BulkInsert::WithKeys => rows::insert_many(conn, &refs, config.now()).await?,
            BulkInsert::GeneratedKeys => {
                rows::insert_many_generated(conn, &refs, config.now()).await?
            }
        };
        if M::PRODUCE {
            queue_saves(config, conn, &stored, |_| tracked_nulls::<M>()).await?;
        }
        all.extend(stored);
    }
    Ok(all)
}

pub(crate) async fn bulk_update<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    conn: &mut E,
    rows: &[M],
) -> Result<Vec<M>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    rows.iter().try_for_each(MasterModel::cqrs_check_values)?;
    // One statement cannot update a row twice: the last occurrence of a primary key wins.
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut unique: Vec<&M> = rows
        .iter()
        .rev()
        .filter(|row| seen.insert(pk_key(*row)))
        .collect();
    unique.reverse();
    let stored = in_write_transaction!(E, conn, bulk_update_once(config, conn, &unique))?;
    after_write(conn);
    Ok(stored)
}

async fn bulk_update_once<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    conn: &mut E,
    unique: &[&M],
) -> Result<Vec<M>> {
    let mut all = Vec::with_capacity(unique.len());
    for chunk in unique.chunks(rows_per_statement(M::COLUMN_COUNT)) {
        // Lock the rows and read their tracked values before the update.
        let old: std::collections::HashMap<String, M> = rows::find_many(conn, chunk, true)
            .await?
            .into_iter()
            .map(|row| (pk_key(&row), row))
            .collect();
        let existing: Vec<&M> = chunk
            .iter()
            .copied()
            .filter(|row| old.contains_key(&pk_key(*row)))
            .collect();
        if existing.is_empty() {
            continue;
        }
        let stored = rows::update_many(conn, &existing, config.now()).await?;
        if M::PRODUCE {
            queue_saves(config, conn, &stored, |row| {
                if M::TRACKED_FIELDS.is_empty() {
                    None
                } else {
                    old.get(&pk_key(row)).map(MasterModel::cqrs_tracked_data)
                }
            })
            .await?;
        }
        all.extend(stored);
    }
    Ok(all)
}

pub(crate) async fn sync<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    queue: Option<&str>,
) -> Result<bool> {
    if !M::PRODUCE {
        return Ok(false);
    }
    let queued = in_write_transaction!(E, conn, sync_once(config, row, conn, queue))?;
    if queued {
        after_write(conn);
    }
    Ok(queued)
}

async fn sync_once<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    row: &M,
    conn: &mut E,
    queue: Option<&str>,
) -> Result<bool> {
    // Locked, as every write of the row is, until the entry is queued: a concurrent update or
    // delete then commits either before the read (and the SYNC carries its result) or after
    // the entry (and gets the later outbox id), never in between, where the SYNC would carry
    // the older state with the later id.
    let stored = rows::find(conn, row, true)
        .await?
        .ok_or_else(|| Error::NotFound {
            cqrs_id: M::CQRS_ID,
            pk: pk_key(row),
        })?;
    if !stored.is_sync_instance() {
        return Ok(false);
    }
    // A row read from the database has no previous values: `null`, as django-cqrs sends from
    // its `cqrs_sync` and `cqrs_diff_sync` commands.
    let body = save_body(config, &stored, conn, SignalType::Sync, None, queue).await?;
    let routing_key = match queue {
        Some(queue) => direct_routing_key(queue, M::CQRS_ID),
        None => M::CQRS_ID.to_owned(),
    };
    queue::push(
        conn,
        &NewOutboxEntry {
            cqrs_id: M::CQRS_ID,
            routing_key: &routing_key,
            body: &body,
        },
    )
    .await?;
    Ok(true)
}

/// Queues a SYNC of each stored row with one of `rows`' keys, a page (one statement's rows) at
/// a time: the rows that no longer exist, and those `is_sync_instance` refuses, are skipped.
/// Returns how many were queued.
pub(crate) async fn bulk_sync<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    conn: &mut E,
    rows: &[M],
    queue: Option<&str>,
) -> Result<usize> {
    if !M::PRODUCE || rows.is_empty() {
        return Ok(0);
    }
    let queued = in_write_transaction!(E, conn, bulk_sync_once(config, conn, rows, queue))?;
    if queued > 0 {
        after_write(conn);
    }
    Ok(queued)
}

async fn bulk_sync_once<M: RowOf<E>, E: Exec>(
    config: &MasterConfig,
    conn: &mut E,
    rows: &[M],
    queue: Option<&str>,
) -> Result<usize> {
    let routing_key = match queue {
        Some(queue) => direct_routing_key(queue, M::CQRS_ID),
        None => M::CQRS_ID.to_owned(),
    };
    let mut queued = 0;
    for chunk in rows.chunks(rows_per_statement(M::COLUMN_COUNT)) {
        let refs: Vec<&M> = chunk.iter().collect();
        // Locked until the entries are queued, as `sync_once` locks its row.
        let stored = rows::find_many(conn, &refs, true).await?;
        let publish: Vec<&M> = stored.iter().filter(|row| row.is_sync_instance()).collect();
        // One page: the model's `relate_cqrs_serialization` runs once for all of it.
        let bodies = save_bodies(config, &publish, conn, SignalType::Sync, |_| None, queue).await?;
        let entries: Vec<NewOutboxEntry<'_>> = bodies
            .iter()
            .map(|body| NewOutboxEntry {
                cqrs_id: M::CQRS_ID,
                routing_key: &routing_key,
                body,
            })
            .collect();
        for entries in entries.chunks(rows_per_statement(3)) {
            queue::push_many(conn, entries).await?;
        }
        queued += bodies.len();
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_stay_under_every_backends_parameter_limit() {
        for columns in [1, 3, 9, 32, 100] {
            let rows = rows_per_statement(columns);
            assert!(rows * columns <= 32_766, "{columns} columns -> {rows} rows");
            assert!((1..=1000).contains(&rows));
        }
        assert_eq!(rows_per_statement(0), 1000);
    }
}
