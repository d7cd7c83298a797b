//! The outbox relay: publishes what master operations wrote to the outbox, in order, with
//! publisher confirms, and deletes each entry once the broker has confirmed it.

mod handle;
mod health;
mod message;
mod pipeline;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_core::{Backoff, Transport};
use diesel::result::ConnectionError;
use tokio::sync::oneshot;

use crate::connection::CqrsConnection;
use crate::error::{Error, Result};

use handle::Counters;
pub use handle::{RelayHandle, RelayStats};
pub use health::RelayHealth;
use health::{HealthState, Probe, RelayMeters};
use pipeline::{Connect, Pass};

/// After a commit notification that found nothing to publish (the notifying transaction may
/// not have committed yet), the relay looks again after each of these delays.
const RECHECK_DELAYS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(100),
];

/// Publishes the outbox to the broker: the half of the transactional outbox that runs after
/// the commit.
///
/// Master operations write their messages to the `cqrs_outbox` table in the same transaction
/// as the row (see [`crate::outbox`]); the relay takes those entries in id order, publishes
/// them with publisher confirms and deletes each entry only after the broker confirmed it. A
/// rolled-back write never reaches the outbox; a committed one is delivered at least once,
/// whatever happens to the broker or to the relay in between.
///
/// - **Woken at once** by a commit in this process ([`outbox::notify_commit`], which master
///   operations call), polling every [`poll_interval`](Self::poll_interval) otherwise (for
///   entries written by other processes).
/// - **Several relays** may run against one database, in one process or many: each batch locks
///   its rows with `FOR UPDATE SKIP LOCKED` (PostgreSQL, MySQL/MariaDB), so relays share the
///   work and no entry is published by two of them. On SQLite, run one relay per database: it
///   holds no lock while publishing, so writers are never held up, and a second relay would
///   publish duplicates.
/// - **Broker unreachable**: writes go on, entries wait in the outbox, the relay retries with
///   exponential backoff and delivers them once the broker is back.
/// - **Throughput**: batches are pipelined (the next batch is locked and published while the
///   previous one waits for its last confirmations and is deleted), with up to
///   [`confirm_window`](Self::confirm_window) confirmations in flight.
///
/// Run it in-process with [`spawn`](Self::spawn), or as a process of its own with
/// [`run_until`](Self::run_until). Diesel is synchronous: the relay runs its statements on
/// Tokio's blocking threads, on connections it opens itself with the `connect` function (and
/// opens again after a database error). It needs up to three connections (one on SQLite).
///
/// It reports through `tracing`: start and stop, and the broker becoming unreachable or
/// reachable again, at `info`; every failed attempt with its retry delay at `warn`; each batch
/// (count, id range, time) at `debug`. Message bodies and credentials are never logged.
///
/// Backend notes:
/// - MySQL/MariaDB: a batch's transaction runs at `READ COMMITTED`, so that its row locks do
///   not extend to the gap where new entries are inserted (with binary logging on, that needs
///   `binlog_format` `ROW` or `MIXED`, the defaults).
/// - SQLite: set a busy timeout in `connect` (`PRAGMA busy_timeout = 5000`), so that the
///   relay's short delete transaction waits for a writer instead of failing.
/// - Entries the broker returns as unroutable (no queue bound to their routing key) are
///   deleted with a warning and counted in [`RelayStats::unroutable`]: no replica wanted them.
///
/// [`outbox::notify_commit`]: crate::outbox::notify_commit
///
/// # Examples
///
/// In a service, beside the request handlers:
///
/// ```no_run
/// use cqrs_diesel::diesel::{Connection, PgConnection};
/// use cqrs_diesel::{Config, CqrsConnection, OutboxRelay, RabbitMqTransport};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://postgres@127.0.0.1/accounts";
/// PgConnection::establish(url)?.run_outbox_migrations()?;
///
/// let config = Config::from_env()?;
/// let relay = OutboxRelay::new(RabbitMqTransport::new(config), move || {
///     PgConnection::establish(url)
/// })
/// .spawn();
///
/// // ... serve requests; `save_and_publish` wakes the relay after each commit ...
///
/// let stats = relay.shutdown().await; // finishes the batch in hand
/// println!("published {} messages", stats.published);
/// # Ok(())
/// # }
/// ```
///
/// As a process of its own, until Ctrl-C:
///
/// ```no_run
/// use cqrs_diesel::diesel::{Connection, PgConnection};
/// use cqrs_diesel::{Config, OutboxRelay, RabbitMqTransport};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let url = std::env::var("DATABASE_URL")?;
///     let config = Config::from_env()?;
///     let relay = OutboxRelay::new(RabbitMqTransport::new(config), move || {
///         PgConnection::establish(&url)
///     });
///     relay
///         .run_until(async {
///             let _ = tokio::signal::ctrl_c().await;
///         })
///         .await;
///     Ok(())
/// }
/// ```
pub struct OutboxRelay<C, T> {
    transport: T,
    connect: Connect<C>,
    batch_size: usize,
    confirm_window: usize,
    confirm_timeout: Duration,
    poll_interval: Duration,
    pipeline_depth: usize,
    retry_min: Duration,
    retry_max: Duration,
    backlog_interval: Duration,
    /// When the backlog was last measured.
    backlog_measured: Option<std::time::Instant>,
    /// Connections kept between batches and passes.
    idle: Vec<C>,
    counters: Arc<Counters>,
    health: Arc<HealthState>,
    meters: Arc<RelayMeters>,
}

impl<C, T> std::fmt::Debug for OutboxRelay<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("batch_size", &self.batch_size)
            .field("confirm_window", &self.confirm_window)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("idle_connections", &self.idle.len())
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// The broker's state as the relay last saw it, to log transitions once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerState {
    Unknown,
    Reachable,
    Unreachable,
}

impl<C: CqrsConnection, T: Transport> OutboxRelay<C, T> {
    /// A relay publishing through `transport`, on database connections opened by `connect`.
    ///
    /// Defaults: batches of 1000 entries, 1000 confirmations in flight, each awaited at most
    /// 30 s, a poll every second, three batches in flight (one on SQLite), retries after
    /// 100 ms doubling up to 10 s.
    pub fn new(
        transport: T,
        connect: impl Fn() -> Result<C, ConnectionError> + Send + Sync + 'static,
    ) -> Self {
        OutboxRelay {
            transport,
            connect: Arc::new(connect),
            batch_size: 1000,
            confirm_window: 1000,
            confirm_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            pipeline_depth: 3,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            backlog_interval: Duration::from_secs(5),
            backlog_measured: None,
            idle: Vec::new(),
            counters: Arc::new(Counters::default()),
            health: Arc::new(HealthState::default()),
            meters: Arc::new(RelayMeters::new()),
        }
    }

    /// How often the running relay measures the outbox (entries and the age of the oldest,
    /// one `COUNT(*)`) for [`RelayHealth`] and the `cqrs.outbox.*` gauges (default 5 s).
    pub fn backlog_interval(mut self, interval: Duration) -> Self {
        self.backlog_interval = interval;
        self
    }

    /// How many entries a batch takes from the outbox at most (default 1000, at least 1).
    pub fn batch_size(mut self, entries: usize) -> Self {
        self.batch_size = entries.max(1);
        self
    }

    /// How many publishes may wait for their confirmation at once (default 1000, at least 1).
    pub fn confirm_window(mut self, confirmations: usize) -> Self {
        self.confirm_window = confirmations.max(1);
        self
    }

    /// How long a publish may wait for its confirmation, from the moment it was handed to the
    /// transport (default 30 s). Past it, the pass ends with
    /// [`cqrs_core::Error::ConfirmTimeout`] (retryable): the unconfirmed entries stay in the
    /// outbox and are published again after the retry delay, so a broker that blocks its
    /// publishers (a memory or disk alarm) or a stalled connection delays the outbox instead
    /// of stopping the relay, and a shutdown never waits longer than this.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// How often an idle relay looks at the outbox when no commit in this process woke it
    /// (default 1 s). Entries written by other processes wait up to this long.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How many batches may be in flight at once, each holding one database connection
    /// (default 3, at least 1). SQLite always uses 1.
    pub fn pipeline_depth(mut self, batches: usize) -> Self {
        self.pipeline_depth = batches.max(1);
        self
    }

    /// The delays between attempts after an error: exponential backoff with jitter from `min`
    /// up to `max` (default 100 ms to 10 s), reset after a success.
    pub fn retry_delays(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// What this relay has done so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// Publishes until the outbox has nothing left to take, and returns how many entries were
    /// published (and deleted).
    ///
    /// Entries that other relays hold locked are skipped; entries committed while the drain
    /// runs may or may not be included. On the first error the drain stops and returns it;
    /// the entries whose confirmation arrived before it are deleted, all others stay in the
    /// outbox for the next attempt.
    pub async fn drain(&mut self) -> Result<usize> {
        let never = AtomicBool::new(false);
        self.pass(&never).await
    }

    async fn pass(&mut self, stop: &AtomicBool) -> Result<usize> {
        let pass = Pass {
            transport: &self.transport,
            connect: &self.connect,
            batch_size: self.batch_size,
            confirm_window: self.confirm_window,
            confirm_timeout: self.confirm_timeout,
            depth: self.pipeline_depth,
            counters: &self.counters,
            meters: &self.meters,
            stop,
        };
        let result = pipeline::run(pass, &mut self.idle).await;
        match &result {
            Ok(published) if *published > 0 => self.health.published(),
            Ok(_) => {}
            Err(error) => {
                self.counters.error();
                self.meters.errors.increment(1);
                self.health.error(error.to_string());
            }
        }
        result
    }

    /// Measures the outbox when the backlog interval has passed since the last measure, on an
    /// idle connection (or a new one). A failure is recorded in the health, not returned: the
    /// relay's own work reports database errors.
    async fn measure_backlog(&mut self) {
        if self
            .backlog_measured
            .is_some_and(|at| at.elapsed() < self.backlog_interval)
        {
            return;
        }
        self.backlog_measured = Some(std::time::Instant::now());
        let slot = self.idle.pop();
        let connect = Arc::clone(&self.connect);
        let measured = tokio::task::spawn_blocking(move || {
            let mut conn = match slot {
                Some(conn) => conn,
                None => {
                    let mut conn = connect().map_err(|error| error.to_string())?;
                    conn.prepare_session().map_err(|error| error.to_string())?;
                    conn
                }
            };
            let backlog = conn.outbox_backlog().map_err(|error| error.to_string())?;
            Ok::<_, String>((conn, backlog))
        })
        .await
        .map_err(|error| error.to_string())
        .and_then(|result| result);
        match measured {
            Ok((conn, backlog)) => {
                self.idle.push(conn);
                self.meters.backlog(backlog);
                self.health.backlog(backlog);
            }
            Err(error) => {
                tracing::debug!(%error, "cannot measure the outbox backlog");
                self.health
                    .error(format!("cannot measure the outbox backlog: {error}"));
            }
        }
    }

    /// Runs the relay until `shutdown` completes, then finishes the batch in hand and returns
    /// what it did.
    ///
    /// It never gives up on its own: database and broker errors are logged and retried after
    /// a backoff (see [`retry_delays`](Self::retry_delays)), with fresh database connections
    /// after a database error. It ends early only if its transport is closed by its owner.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()> + Send) -> RelayStats {
        tracing::info!(
            backend = ?C::BACKEND,
            batch_size = self.batch_size,
            confirm_window = self.confirm_window,
            poll_interval = ?self.poll_interval,
            "outbox relay started"
        );
        let mut shutdown = std::pin::pin!(shutdown);
        let mut commits = crate::outbox::subscribe_commits();
        commits.borrow_and_update();
        let mut commits_open = true;
        let mut backoff = Backoff::new(self.retry_min, self.retry_max);
        let mut broker = BrokerState::Unknown;
        // Index into RECHECK_DELAYS after a commit notification, `None` when idle.
        let mut recheck: Option<usize> = None;
        let stop = AtomicBool::new(false);
        let mut stopping = false;

        loop {
            self.measure_backlog().await;
            let result = {
                let pass = self.pass(&stop);
                let mut pass = std::pin::pin!(pass);
                tokio::select! {
                    result = &mut pass => result,
                    () = &mut shutdown => {
                        stopping = true;
                        stop.store(true, Ordering::Release);
                        pass.await
                    }
                }
            };
            let delay = match result {
                Ok(published) => {
                    backoff.reset();
                    if published > 0 {
                        self.meters.connected(true);
                        if broker == BrokerState::Unreachable {
                            tracing::info!(
                                "RabbitMQ is reachable again; publishing the waiting outbox entries"
                            );
                        }
                        broker = BrokerState::Reachable;
                    }
                    if stopping {
                        break;
                    }
                    if published > 0 {
                        // More may have been committed meanwhile: look again at once.
                        continue;
                    }
                    match recheck {
                        Some(step) if step < RECHECK_DELAYS.len() => {
                            recheck = Some(step + 1);
                            RECHECK_DELAYS[step]
                        }
                        _ => {
                            recheck = None;
                            self.poll_interval
                        }
                    }
                }
                Err(Error::Transport(cqrs_core::Error::Closed)) => {
                    tracing::error!("the relay's transport was closed; the outbox relay stops");
                    break;
                }
                Err(error) => {
                    if let Error::Transport(
                        cqrs_core::Error::Connect { .. } | cqrs_core::Error::ConnectionLost { .. },
                    ) = &error
                        && broker != BrokerState::Unreachable
                    {
                        self.meters.connected(false);
                        tracing::info!(
                            "RabbitMQ is unreachable; outbox entries wait in the database"
                        );
                        broker = BrokerState::Unreachable;
                    }
                    if stopping {
                        break;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %error,
                        retry_in = ?delay,
                        attempt = backoff.attempts(),
                        "outbox relay attempt failed; retrying"
                    );
                    // A commit must not cut the backoff short: wait it out.
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                changed = commits.changed(), if commits_open => {
                    if changed.is_ok() {
                        recheck = Some(0);
                    } else {
                        commits_open = false;
                    }
                }
                () = tokio::time::sleep(delay) => {}
            }
        }

        let stats = self.counters.snapshot();
        tracing::info!(
            published = stats.published,
            unroutable = stats.unroutable,
            batches = stats.batches,
            errors = stats.errors,
            "outbox relay stopped"
        );
        stats
    }

    /// Runs the relay as a Tokio task until [`RelayHandle::shutdown`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::spawn`].
    pub fn spawn(self) -> RelayHandle {
        let counters = Arc::clone(&self.counters);
        let health = Arc::clone(&self.health);
        let transport = self.transport.clone();
        let probe: Probe = Arc::new(move || {
            let transport = transport.clone();
            Box::pin(async move { transport.probe().await })
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            if stopped.await.is_err() {
                // The handle was dropped: the relay is detached and runs on.
                std::future::pending::<()>().await;
            }
        };
        let task = tokio::spawn(self.run_until(shutdown));
        RelayHandle {
            stop,
            task,
            counters,
            health,
            probe,
        }
    }
}
