//! The commands that publish SYNCs: `sync` and the last step of the diff, `diff-sync`.

use serde_json::Value;
use std::io::IsTerminal;

use super::args::{DiffSyncArgs, SyncArgs};
use super::io::{Input, Progress, Unit};
use super::rows::query_error;
use super::{Cli, CliError, Report, blocking, master_of};
use crate::connection::CqrsConnection;
use crate::master::RowFilter;
use crate::ops::{MasterRow, Operations};
use cqrs_core::{OutgoingMessage, RabbitMqTransport, Topology, Transport, direct_routing_key};

/// A database connection moved to a blocking thread for each step and back.
pub(super) struct Db<C: CqrsConnection> {
    conn: Option<C>,
    ops: Operations<C>,
}

impl<C: CqrsConnection> Db<C> {
    pub(super) async fn open(cli: &Cli<C>) -> Result<Self, CliError> {
        let connect = cli.connect();
        let conn = blocking(move || connect().map_err(CliError::database)).await?;
        Ok(Db {
            conn: Some(conn),
            ops: cli.operations(),
        })
    }

    /// Runs `f` with the connection and `state` on a blocking thread.
    pub(super) async fn run<S, T, F>(&mut self, mut state: S, f: F) -> Result<(S, T), CliError>
    where
        S: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut C, &Operations<C>, &mut S) -> Result<T, CliError> + Send + 'static,
    {
        let mut conn = self.conn.take().ok_or_else(|| {
            CliError::Runtime(crate::Error::Task(
                "the database connection was lost by an earlier step".to_owned(),
            ))
        })?;
        let ops = self.ops.clone();
        let (conn, state, result) = blocking(move || {
            let result = f(&mut conn, &ops, &mut state);
            Ok((conn, state, result))
        })
        .await?;
        self.conn = Some(conn);
        Ok((state, result?))
    }
}

/// Publishes SYNC bodies to one routing key with confirms, counting what was confirmed.
struct Publisher {
    transport: RabbitMqTransport,
    routing_key: String,
    window: usize,
    published: u64,
}

impl Publisher {
    async fn new(cli: &Cli<impl CqrsConnection>, routing_key: String) -> Result<Self, CliError> {
        let config = cli.config().clone();
        let transport = RabbitMqTransport::new(config.clone());
        transport
            .declare(&Topology::exchange_only(config.exchange()))
            .await
            .map_err(CliError::broker)?;
        Ok(Publisher {
            transport,
            routing_key,
            window: config.publish_confirm_window(),
            published: 0,
        })
    }

    /// Publishes the SYNC of each row the model publishes; returns how many were skipped.
    async fn publish(&mut self, rows: Vec<MasterRow>) -> Result<u64, CliError> {
        let mut skipped = 0;
        let messages: Vec<OutgoingMessage> = rows
            .into_iter()
            .filter_map(|row| {
                if row.sync_body.is_none() {
                    skipped += 1;
                }
                row.sync_body
            })
            .map(|body| OutgoingMessage::new(self.routing_key.clone(), body.into_bytes()))
            .collect();
        match self.transport.publish_all(&messages, self.window).await {
            Ok(()) => {
                self.published += messages.len() as u64;
                Ok(skipped)
            }
            Err(partial) => Err(CliError::Publish {
                published: self.published + partial.confirmed as u64,
                source: partial.error,
            }),
        }
    }

    async fn close(self) -> u64 {
        self.transport.close().await;
        self.published
    }
}

pub(super) async fn sync<C: CqrsConnection>(
    cli: &Cli<C>,
    args: SyncArgs,
) -> Result<Report, CliError> {
    cli.check_master(&args.cqrs_id)?;
    match (args.filter.is_empty(), args.all) {
        (true, false) => {
            return Err(CliError::Invalid(
                "sync needs a filter (--pk, --pk-from, --pk-to, --since, --where or --filter), \
                 or --all to publish every row"
                    .to_owned(),
            ));
        }
        (false, true) => {
            return Err(CliError::Invalid(
                "--all selects every row: give it without a filter".to_owned(),
            ));
        }
        _ => {}
    }
    let filter = args.filter.to_filter()?;
    let routing_key = match &args.queue {
        Some(queue) if queue.trim().is_empty() => {
            return Err(CliError::Invalid("--queue is empty".to_owned()));
        }
        Some(queue) => direct_routing_key(queue, &args.cqrs_id),
        None => args.cqrs_id.clone(),
    };
    let mut db = Db::open(cli).await?;
    let mut publisher = Publisher::new(cli, routing_key.clone()).await?;
    let total = if std::io::stderr().is_terminal() {
        let (id, filter) = (args.cqrs_id.clone(), filter.clone());
        db.run((), move |conn, ops, ()| {
            master_of(ops, &id)?
                .count(conn, &filter)
                .map_err(CliError::Runtime)
        })
        .await
        .ok()
        .map(|((), total)| total)
    } else {
        None
    };
    let progress = Progress::start("sync", Unit::Items("rows"), total);
    let batch = args.batch as usize;
    let (mut processed, mut skipped) = (0u64, 0u64);
    let mut after: Option<Value> = None;
    loop {
        let (id, filter) = (args.cqrs_id.clone(), filter.clone());
        let (_, rows) = db
            .run(after.take(), move |conn, ops, after| {
                master_of(ops, &id)?
                    .page(conn, &filter, after.as_ref(), batch)
                    .map_err(|e| query_error(e, &filter, after.is_none()))
            })
            .await?;
        let next = match rows.last() {
            Some(last) if rows.len() == batch => Some(last.pk.clone()),
            _ => None,
        };
        processed += rows.len() as u64;
        skipped += publisher.publish(rows).await?;
        progress.set(processed);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    progress.finish();
    let published = publisher.close().await;
    let summary = if processed == 0 {
        format!("sync: no `{}` row matches the filter", args.cqrs_id)
    } else {
        format!(
            "sync: {published} SYNC(s) of `{}` published with routing key `{routing_key}`, {skipped} row(s) not published by the model",
            args.cqrs_id
        )
    };
    Ok(Report {
        processed,
        written: published,
        skipped,
        summary,
    })
}

pub(super) async fn diff_sync<C: CqrsConnection>(
    cli: &Cli<C>,
    args: DiffSyncArgs,
) -> Result<Report, CliError> {
    let ops = cli.operations();
    let path = args.input.clone();
    let (input, cqrs_id, queue) = blocking(move || {
        let mut input = Input::open(&path)?;
        let (header, fields) =
            input.header("`<cqrs_id>,<time>,<queue>` (the output of diff-replica)")?;
        let (cqrs_id, queue) = match fields.as_slice() {
            [cqrs_id, _, .., queue] if !queue.is_empty() => (cqrs_id, queue),
            _ => {
                return Err(input.format_error(
                    1,
                    format!("`{header}` names no queue; expected `<cqrs_id>,<time>,<queue>` (the output of diff-replica)"),
                ));
            }
        };
        master_of(&ops, cqrs_id)?;
        // django-cqrs writes `None` for a replica without a queue: then SYNC to everyone.
        let queue = (queue != "None").then(|| queue.clone());
        Ok((input, cqrs_id.clone(), queue))
    })
    .await?;
    let routing_key = match &queue {
        Some(queue) => direct_routing_key(queue, &cqrs_id),
        None => cqrs_id.clone(),
    };
    let mut db = Db::open(cli).await?;
    let mut publisher = Publisher::new(cli, routing_key.clone()).await?;
    let progress = Progress::start("diff-sync", Unit::Bytes, input.len());
    let batch = args.batch as usize;
    let (mut processed, mut skipped) = (0u64, 0u64);
    let mut input = input;
    loop {
        let id = cqrs_id.clone();
        let (returned, step) = db
            .run(input, move |conn, ops, input| {
                let Some((line, bytes)) = input.next_content_line()? else {
                    return Ok(None);
                };
                let bad = || {
                    input.format_error(
                        line,
                        "expected a JSON array of primary keys (the output of diff-replica)",
                    )
                };
                let keys = match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Array(keys))
                        if keys
                            .iter()
                            .all(|k| matches!(k, Value::String(_) | Value::Number(_))) =>
                    {
                        keys
                    }
                    _ => return Err(bad()),
                };
                let master = master_of(ops, &id)?;
                let mut rows = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(batch) {
                    let filter = RowFilter {
                        pks: Some(chunk.to_vec()),
                        ..RowFilter::default()
                    };
                    rows.extend(master.page(conn, &filter, None, chunk.len()).map_err(|e| {
                        match query_error(e, &filter, false) {
                            CliError::Filter(reason) => input.format_error(line, reason),
                            other => other,
                        }
                    })?);
                }
                Ok(Some((keys.len() as u64, rows, input.consumed())))
            })
            .await?;
        input = returned;
        let Some((requested, rows, consumed)) = step else {
            break;
        };
        let found = rows.len() as u64;
        processed += requested;
        skipped += publisher.publish(rows).await? + requested.saturating_sub(found);
        progress.set(consumed);
    }
    progress.finish();
    let published = publisher.close().await;
    Ok(Report {
        processed,
        written: published,
        skipped,
        summary: format!(
            "diff-sync: {published} SYNC(s) of `{cqrs_id}` published with routing key `{routing_key}`, {skipped} of {processed} key(s) skipped (gone from the master or not published by the model)"
        ),
    })
}
