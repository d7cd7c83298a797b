//! One pass of the relay: batches taken from the outbox, published and settled in a pipeline
//! until the outbox has nothing left to take.
//!
//! Four stages run concurrently in the caller's task, joined by channels:
//!
//! ```text
//!  fetch ──batches──▶ publish ──confirmations──▶ confirm ──batches──▶ settle
//!    ▲                                                                  │
//!    └───────────────────── free connections ◀──────────────────────────┘
//! ```
//!
//! - **fetch** takes a free connection, begins a transaction and locks the next batch of
//!   entries in id order (`FOR UPDATE SKIP LOCKED`, so the rows of the batches still in flight,
//!   and those of other relays, are skipped). It stops after a batch shorter than the batch
//!   size: the outbox had nothing more to give.
//! - **publish** publishes the entries batch after batch, in id order, with up to
//!   `confirm_window` confirmations in flight across batch boundaries.
//! - **confirm** awaits the confirmations in publish order.
//! - **settle** deletes the confirmed entries of a batch and commits, on a blocking thread,
//!   then hands the connection back to fetch.
//!
//! There are `depth` connections, so while one batch waits for its last confirmations and is
//! settled, the next ones are already locked and being published: the broker never waits for
//! the database. On SQLite (one writer at a time) `depth` is 1 and no transaction is held
//! while publishing (see `CqrsConnection::RELAY_HOLDS_ROW_LOCKS`).
//!
//! On the first failure (a publish, a confirmation or a database statement), nothing more is
//! fetched or published; the batch that failed keeps its confirmed prefix (deleted and
//! committed), every later batch is rolled back whole, so an entry is deleted only once its
//! own confirmation, and those of all entries before it, have arrived.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cqrs_core::{Confirmation, Transport};
use diesel::connection::{Connection, TransactionManager};
use diesel::result::ConnectionError;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::handle::Counters;
use super::health::{ModelMeters, RelayMeters};
use crate::connection::CqrsConnection;
use crate::error::{Error, Result};
use crate::outbox::OutboxEntry;

/// Opens a database connection for the relay.
pub(crate) type Connect<C> = Arc<dyn Fn() -> Result<C, ConnectionError> + Send + Sync>;

/// Ids deleted per statement: far below the bind-parameter limits of every backend.
const DELETE_CHUNK: usize = 5000;

/// What a pass needs from its relay.
pub(crate) struct Pass<'a, C, T> {
    pub(crate) transport: &'a T,
    pub(crate) connect: &'a Connect<C>,
    pub(crate) batch_size: usize,
    pub(crate) confirm_window: usize,
    /// The longest a publish waits for its confirmation, from when it was handed over.
    pub(crate) confirm_timeout: Duration,
    pub(crate) depth: usize,
    pub(crate) counters: &'a Counters,
    pub(crate) meters: &'a RelayMeters,
    /// Set to stop taking new batches (shutdown): the ones in hand are finished.
    pub(crate) stop: &'a AtomicBool,
}

/// A batch locked by fetch, on its connection (in its transaction where the backend locks).
struct Fetched<C> {
    conn: C,
    entries: Vec<OutboxEntry>,
    started: Instant,
}

/// A batch whose entries are being published; the entries themselves went to the broker.
struct InFlight<C> {
    conn: C,
    ids: Vec<i64>,
    started: Instant,
    /// Leading entries whose confirmation arrived (all of them, unless one failed).
    confirmed: usize,
    unroutable: usize,
    first_unroutable_key: Option<String>,
    /// False once a confirmation of this batch failed, or an earlier batch failed.
    intact: bool,
}

enum Flow<C> {
    Open(InFlight<C>),
    /// A publish handed over: its confirmation, its model's series and when it was sent.
    Sent(Confirmation, Arc<ModelMeters>, Instant),
    Close,
}

/// The first error of a pass; once set, every stage winds down.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Failure {
    fn set(&self, error: Error) {
        self.failed.store(true, Ordering::Release);
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(error);
        }
    }

    fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn take(self) -> Option<Error> {
        self.first
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<R> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Task(error.to_string()))?
}

fn rollback<C: CqrsConnection>(conn: &mut C) -> Result<()> {
    <C as Connection>::TransactionManager::rollback_transaction(conn)?;
    Ok(())
}

/// Takes the next batch: on `slot`'s connection, or a new one.
fn fetch<C: CqrsConnection>(
    slot: Option<C>,
    connect: &Connect<C>,
    limit: usize,
) -> Result<(C, Vec<OutboxEntry>)> {
    let mut conn = match slot {
        Some(conn) => conn,
        None => {
            let mut conn = connect()?;
            conn.prepare_session()?;
            conn
        }
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    if !C::RELAY_HOLDS_ROW_LOCKS {
        let entries = conn.outbox_lock_batch(limit)?;
        return Ok((conn, entries));
    }
    conn.begin_relay_transaction()?;
    match conn.outbox_lock_batch(limit) {
        Ok(entries) => {
            if entries.is_empty() {
                rollback(&mut conn)?;
            }
            Ok((conn, entries))
        }
        Err(error) => {
            // The connection is dropped with the error: the next batch reconnects.
            let _ = rollback(&mut conn);
            Err(error.into())
        }
    }
}

/// Deletes `ids` and commits the batch (rolls it back when `ids` is empty).
fn settle<C: CqrsConnection>(mut conn: C, ids: &[i64]) -> Result<C> {
    if ids.is_empty() {
        if C::RELAY_HOLDS_ROW_LOCKS {
            rollback(&mut conn)?;
        }
        return Ok(conn);
    }
    if !C::RELAY_HOLDS_ROW_LOCKS {
        conn.begin_relay_transaction()?;
    }
    let deleted = ids
        .chunks(DELETE_CHUNK)
        .try_for_each(|chunk| conn.outbox_delete(chunk).map(drop))
        .and_then(|()| <C as Connection>::TransactionManager::commit_transaction(&mut conn));
    match deleted {
        Ok(()) => Ok(conn),
        Err(error) => {
            let _ = rollback(&mut conn);
            Err(error.into())
        }
    }
}

/// Runs one pass; returns how many entries were published and deleted. Connections that are
/// still good go back to `idle`.
pub(crate) async fn run<C, T>(pass: Pass<'_, C, T>, idle: &mut Vec<C>) -> Result<usize>
where
    C: CqrsConnection,
    T: Transport,
{
    let Pass {
        transport,
        connect,
        batch_size,
        confirm_window,
        confirm_timeout,
        depth,
        counters,
        meters,
        stop,
    } = pass;
    let depth = if C::RELAY_HOLDS_ROW_LOCKS {
        depth.max(1)
    } else {
        1
    };

    let failure_slot = Failure::default();
    let failure = &failure_slot;
    let window = Semaphore::new(confirm_window.clamp(1, Semaphore::MAX_PERMITS));
    let window = &window;
    let (free_tx, mut free_rx) = mpsc::unbounded_channel::<Option<C>>();
    for _ in 0..depth {
        let _ = free_tx.send(idle.pop());
    }
    // Connections beyond the depth (after a change of depth) are simply closed.
    idle.clear();
    let (batch_tx, mut batch_rx) = mpsc::channel::<Fetched<C>>(depth);
    let (flow_tx, mut flow_rx) = mpsc::unbounded_channel::<Flow<C>>();
    let (settle_tx, mut settle_rx) = mpsc::unbounded_channel::<InFlight<C>>();
    let settled_total = std::sync::atomic::AtomicUsize::new(0);
    let settled_total = &settled_total;

    let free_rx_ref = &mut free_rx;
    let fetch_free_tx = free_tx.clone();
    let fetcher = async move {
        loop {
            if stop.load(Ordering::Acquire) || failure.is_set() {
                break;
            }
            let Some(slot) = free_rx_ref.recv().await else {
                break;
            };
            if stop.load(Ordering::Acquire) || failure.is_set() {
                let _ = fetch_free_tx.send(slot);
                break;
            }
            let connect = Arc::clone(connect);
            let started = Instant::now();
            match blocking(move || fetch(slot, &connect, batch_size)).await {
                Ok((conn, entries)) if entries.is_empty() => {
                    let _ = fetch_free_tx.send(Some(conn));
                    break;
                }
                Ok((conn, entries)) => {
                    let short = entries.len() < batch_size;
                    let fetched = Fetched {
                        conn,
                        entries,
                        started,
                    };
                    if batch_tx.send(fetched).await.is_err() || short {
                        break;
                    }
                }
                Err(error) => {
                    failure.set(error);
                    let _ = fetch_free_tx.send(None);
                    break;
                }
            }
        }
        // Dropping `batch_tx` here lets the publisher finish.
    };

    let publisher = async move {
        while let Some(batch) = batch_rx.recv().await {
            let Fetched {
                conn,
                entries,
                started,
            } = batch;
            let _ = flow_tx.send(Flow::Open(InFlight {
                conn,
                ids: entries.iter().map(|entry| entry.id).collect(),
                started,
                confirmed: 0,
                unroutable: 0,
                first_unroutable_key: None,
                intact: true,
            }));
            for entry in entries {
                if failure.is_set() {
                    break;
                }
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                let model = meters.model(&entry.cqrs_id);
                let (message, span) = super::message::outgoing(entry, transport.exchange());
                let handed = tokio::time::timeout(
                    confirm_timeout,
                    transport.publish(&message).instrument(span),
                )
                .await
                .unwrap_or(Err(cqrs_core::Error::ConfirmTimeout {
                    waited: confirm_timeout,
                }));
                match handed {
                    Ok(confirmation) => {
                        model.sent.increment(1);
                        let _ = flow_tx.send(Flow::Sent(confirmation, model, Instant::now()));
                    }
                    Err(error) => {
                        window.add_permits(1);
                        failure.set(error.into());
                        break;
                    }
                }
            }
            let _ = flow_tx.send(Flow::Close);
        }
    };

    let confirmer = async move {
        let mut current: Option<InFlight<C>> = None;
        let mut poisoned = false;
        while let Some(flow) = flow_rx.recv().await {
            match flow {
                Flow::Open(mut batch) => {
                    batch.intact = !poisoned;
                    current = Some(batch);
                }
                Flow::Sent(confirmation, model, sent) => {
                    if let Some(batch) = current.as_mut()
                        && batch.intact
                    {
                        let due = tokio::time::Instant::from_std(sent + confirm_timeout);
                        let result =
                            tokio::time::timeout_at(due, confirmation)
                                .await
                                .unwrap_or(Err(cqrs_core::Error::ConfirmTimeout {
                                    waited: confirm_timeout,
                                }));
                        meters.confirm_latency.record(sent.elapsed().as_secs_f64());
                        match result {
                            Ok(()) => {
                                batch.confirmed += 1;
                                model.confirmed.increment(1);
                            }
                            Err(cqrs_core::Error::Unroutable { routing_key, .. }) => {
                                batch.confirmed += 1;
                                batch.unroutable += 1;
                                batch.first_unroutable_key.get_or_insert(routing_key);
                                model.confirmed.increment(1);
                                model.unroutable.increment(1);
                            }
                            Err(error) => {
                                model.nacked.increment(1);
                                batch.intact = false;
                                poisoned = true;
                                failure.set(error.into());
                            }
                        }
                    }
                    window.add_permits(1);
                }
                Flow::Close => {
                    if let Some(batch) = current.take() {
                        let _ = settle_tx.send(batch);
                    }
                }
            }
        }
    };

    let settle_free_tx = free_tx.clone();
    let settler = async move {
        while let Some(batch) = settle_rx.recv().await {
            let InFlight {
                conn,
                mut ids,
                started,
                confirmed,
                unroutable,
                first_unroutable_key,
                ..
            } = batch;
            let taken = ids.len();
            let (first_id, last_id) = (ids.first().copied(), ids.last().copied());
            ids.truncate(confirmed);
            match blocking(move || settle(conn, &ids)).await {
                Ok(conn) => {
                    let _ = settle_free_tx.send(Some(conn));
                    if confirmed > 0 {
                        counters.batch_settled(confirmed, unroutable);
                        settled_total.fetch_add(confirmed, Ordering::Relaxed);
                    }
                    let outcome = if confirmed == taken {
                        "outbox batch published and deleted"
                    } else if confirmed == 0 {
                        "outbox batch rolled back; its entries stay in the outbox"
                    } else {
                        "outbox batch partly published; the unconfirmed entries stay in the outbox"
                    };
                    tracing::debug!(
                        backend = ?C::BACKEND,
                        taken,
                        published = confirmed,
                        first_id,
                        last_id,
                        elapsed = ?started.elapsed(),
                        "{outcome}"
                    );
                    if unroutable > 0 {
                        tracing::warn!(
                            count = unroutable,
                            routing_key = first_unroutable_key.as_deref().unwrap_or_default(),
                            first_id,
                            last_id,
                            "outbox entries were unroutable (no queue is bound to their routing key) and were dropped"
                        );
                    }
                }
                Err(error) => {
                    let _ = settle_free_tx.send(None);
                    failure.set(error);
                }
            }
        }
    };

    tokio::join!(fetcher, publisher, confirmer, settler);

    drop(free_tx);
    while let Ok(slot) = free_rx.try_recv() {
        idle.extend(slot);
    }
    match failure_slot.take() {
        Some(error) => Err(error),
        None => Ok(settled_total.load(Ordering::Relaxed)),
    }
}
