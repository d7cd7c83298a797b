//! [`ConsumerRuntime`]: its settings, the start, the dispatcher loop and the shutdown.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Context;
use super::apply::Applier;
use super::dispatch::{Rejection, Routed, route};
use super::handle::ConsumerHandle;
use super::health::{HealthState, Probe};
use super::meters::Meters;
use super::settle::{Scheduled, SettleSender, Settler};
use super::stats::{ConsumerStats, Counters, bump};
use super::worker::{Job, Worker, WorkerSettings};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::transport::{Consumer, Delivery, Topology, Transport};

/// The replica side's engine: consumes the service's queue and hands the messages, in batches,
/// to an [`Applier`]; retries what fails and dead-letters what cannot be applied.
///
/// - **Start**: declares the topology of docs/WIRE.md for [`Applier::cqrs_ids`] and consumes the
///   configured queue (`CQRS_QUEUE`) with the configured prefetch. While the broker is
///   unreachable it keeps trying (with the reconnection backoff) until shut down.
/// - **Checks**, per delivery: a body that is not a readable message, a `cqrs_id` the applier
///   does not know, an `expires` in the past (a body without `expires` lives `message_ttl` from
///   its receipt) and a message the applier's [`prepare`](Applier::prepare) refuses go to the
///   dead-letter queue, with the reason in the `x-cqrs-dead-letter-reason` header (see
///   [`DEAD_LETTER_REASON_HEADER`](crate::DEAD_LETTER_REASON_HEADER)). A broadcast SYNC for a
///   model with [`only_direct_syncs`](crate::ModelPolicy::only_direct_syncs) is acknowledged
///   and ignored.
/// - **Batches**: each row (`cqrs_id`, primary key) belongs to one of the
///   [`workers`](Self::workers), so one row is never written by two workers at once and its
///   messages are applied in the order received. A worker applies up to
///   [`batch_size`](Self::batch_size) messages at once, waiting at most
///   [`batch_wait`](Self::batch_wait) after the first one for more, then acknowledges them all.
/// - **Failures**: a batch that fails ([`BatchError::Failed`](crate::BatchError::Failed)) is
///   split in halves, recursively, until the failing messages are alone; the others are applied.
///   A failing message waits in the in-process delay queue and is republished with
///   `retries + 1` to `cqrs.<queue>.<cqrs_id>`; after its last retry it is dead-lettered with the
///   reason `failed after N retries: <error>`. While the database is unavailable
///   ([`BatchError::Unavailable`](crate::BatchError::Unavailable)) the worker holds its batch,
///   unacknowledged, and tries it again after a backoff; after a transient conflict (a deadlock,
///   a serialization failure: [`BatchError::Conflict`](crate::BatchError::Conflict)) it tries
///   the batch again after a short pause; after a statement timeout
///   ([`BatchError::TimedOut`](crate::BatchError::TimedOut), `CQRS_QUERY_TIMEOUT`) after the
///   retry delay. None of them spends any message's retries. Whether and when a message that
///   failed alone is retried, the applier may decide per message
///   ([`Applier::retry_choice`](crate::Applier::retry_choice)).
/// - **Nothing is lost**: a delivery is acknowledged only once it is applied, or once its retry
///   or dead letter is confirmed by the broker; until then it stays unacknowledged and comes
///   back if the process dies.
/// - **Shutdown** ([`run_until`](Self::run_until)'s future, or [`ConsumerHandle::shutdown`]):
///   no new deliveries are taken; each worker finishes and acknowledges the batch in hand (or
///   gives up on it if the database is unavailable); the delay queue is republished at once;
///   all within [`shutdown_timeout`](Self::shutdown_timeout). What is left unacknowledged is
///   delivered again by the broker.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use cqrs_core::{
///     Applied, Applier, BatchError, Config, ConsumerRuntime, Incoming, ModelPolicy,
///     RabbitMqTransport, Transport, shutdown_signal,
/// };
///
/// /// A toy applier that prints the accounts it receives.
/// struct PrintAccounts;
///
/// impl Applier for PrintAccounts {
///     type Prepared = (String, i64);
///
///     fn cqrs_ids(&self) -> Vec<String> {
///         vec!["account".to_owned()]
///     }
///
///     fn policy(&self, cqrs_id: &str) -> Option<ModelPolicy> {
///         (cqrs_id == "account").then(ModelPolicy::default)
///     }
///
///     fn prepare(&self, incoming: &Incoming) -> Result<Self::Prepared, String> {
///         let revision = incoming.payload.instance_data.get("cqrs_revision")
///             .and_then(|revision| revision.as_i64())
///             .ok_or("`cqrs_revision` must be an integer")?;
///         Ok((incoming.payload.instance_pk.to_string(), revision))
///     }
///
///     async fn apply(
///         &self,
///         worker: usize,
///         batch: Vec<Arc<Self::Prepared>>,
///     ) -> Result<Vec<Applied>, BatchError> {
///         for account in &batch {
///             println!("worker {worker}: account {} at revision {}", account.0, account.1);
///         }
///         Ok(vec![Applied::Handled; batch.len()])
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), cqrs_core::Error> {
///     let config = Config::from_env()?; // CQRS_QUEUE=payments_replica, CQRS_WORKERS, ...
///     let transport = RabbitMqTransport::new(config.clone());
///     let stats = ConsumerRuntime::new(transport.clone(), config, PrintAccounts)
///         .run_until(shutdown_signal()) // until SIGTERM or Ctrl-C
///         .await?;
///     transport.close().await;
///     println!("{} messages applied, {} dead-lettered", stats.applied(), stats.dead_lettered);
///     Ok(())
/// }
/// ```
pub struct ConsumerRuntime<T, A> {
    transport: T,
    config: Config,
    applier: Arc<A>,
    batch_size: usize,
    batch_wait: Duration,
    workers: usize,
    shutdown_timeout: Duration,
    unavailable_min: Duration,
    unavailable_max: Duration,
    counters: Arc<Counters>,
    health: Arc<HealthState>,
    only: Vec<String>,
}

impl<T, A> fmt::Debug for ConsumerRuntime<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRuntime")
            .field("queue", &self.config.queue())
            .field("batch_size", &self.batch_size)
            .field("batch_wait", &self.batch_wait)
            .field("workers", &self.workers)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("only_cqrs_ids", &self.only)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Why the dispatcher loop ended.
enum Ended {
    /// The shutdown future completed.
    Requested,
    /// The consumer ended: its transport was closed.
    Closed,
    /// The consumer failed for good (the queue was deleted, access was refused).
    Failed(Error),
}

/// Default bound of a shutdown.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl<T: Transport, A: Applier> ConsumerRuntime<T, A> {
    /// A runtime consuming `config`'s queue through `transport` and applying with `applier`.
    ///
    /// Batch size, batch wait and number of workers start at the configuration's values
    /// (`CQRS_BATCH_SIZE`, `CQRS_BATCH_WAIT`, `CQRS_WORKERS`: 100, 5 ms and 1 by default);
    /// the shutdown timeout at 30 s; the backoff while the database is unavailable at the
    /// configuration's reconnection delays (100 ms doubling up to 10 s by default). The
    /// applier is given the configuration first ([`Applier::configure`]).
    pub fn new(transport: T, config: Config, mut applier: A) -> Self {
        applier.configure(&config);
        ConsumerRuntime {
            transport,
            batch_size: config.batch_size(),
            batch_wait: config.batch_wait(),
            workers: config.workers(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            unavailable_min: config.reconnect_min_delay(),
            unavailable_max: config.reconnect_max_delay(),
            config,
            applier: Arc::new(applier),
            counters: Arc::new(Counters::default()),
            health: Arc::new(HealthState::default()),
            only: Vec::new(),
        }
    }

    /// Consumes only these models' messages (django-cqrs's `cqrs_consume --cqrs-id`); none given
    /// (the default) = every `cqrs_id` the applier handles.
    ///
    /// The queue is bound only for these `cqrs_id`s. Bindings of earlier runs stay (RabbitMQ
    /// keeps them, as django-cqrs leaves them), so messages of the applier's other models can
    /// still arrive: they are not applied but dead-lettered, counted in
    /// [`ConsumerStats::not_selected`] and the dead-letter metric with the reason
    /// `not_selected`, with a reason header that says so; `cqrs dead-letters retry` replays
    /// them once a worker consumes those models. (django-cqrs applies them anyway, since its
    /// worker serves every registered model whatever its bindings.)
    ///
    /// A `cqrs_id` the applier does not handle makes [`run_until`](Self::run_until) fail at
    /// start with [`Error::UnknownCqrsIds`], naming the registered ones.
    pub fn only_cqrs_ids<I, S>(mut self, cqrs_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only = cqrs_ids.into_iter().map(Into::into).collect();
        self
    }

    /// The selected `cqrs_id`s, checked against the applier's; `None` when not limited.
    fn selected(&self) -> Result<Option<std::collections::BTreeSet<String>>> {
        if self.only.is_empty() {
            return Ok(None);
        }
        let registered = self.applier.cqrs_ids();
        let mut unknown: Vec<String> = self
            .only
            .iter()
            .filter(|id| !registered.contains(id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            let mut registered = registered;
            registered.sort();
            return Err(Error::UnknownCqrsIds {
                unknown,
                registered,
            });
        }
        Ok(Some(self.only.iter().cloned().collect()))
    }

    /// The most messages applied in one batch, that is in one call of [`Applier::apply`]
    /// (at least 1).
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.batch_size = messages.max(1);
        self
    }

    /// How long a worker waits for more messages, from the first of a batch, before applying
    /// a batch that is not full. Zero applies at once whatever has arrived.
    pub fn batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// How many workers apply batches concurrently (at least 1); the `worker` argument of
    /// [`Applier::apply`] is in `0..workers`.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The longest a shutdown may take (default 30 s). Past it, batches still being applied
    /// and publishes still in flight are abandoned, unacknowledged: the broker delivers those
    /// messages again.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The delays before trying a batch again while the database is unavailable: exponential
    /// backoff with jitter from `min` up to `max`, reset after a success.
    pub fn unavailable_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.unavailable_min = min;
        self.unavailable_max = max.max(min);
        self
    }

    /// What this runtime has done so far (all zero before it runs; use
    /// [`ConsumerHandle::stats`] to watch a running one).
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Runs until `shutdown` completes, then stops gracefully (see the type's documentation)
    /// and returns what it did.
    ///
    /// It never stops on its own because of a message or a database error. It ends early,
    /// gracefully too, when its transport is closed by its owner (returning `Ok`) or when the
    /// broker refuses the consumer for good (returning that error).
    ///
    /// # Errors
    ///
    /// - [`Error::Config`] for `CQRS_QUEUE` when the configuration has no queue.
    /// - [`Error::UnknownCqrsIds`] when [`only_cqrs_ids`](Self::only_cqrs_ids) names a model
    ///   the applier does not handle.
    /// - An error of the transport that retrying cannot mend: declaring the topology or
    ///   consuming the queue refused (for example, a queue declared before with other
    ///   arguments), or the consumer failing for good while running.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ConsumerStats> {
        let mut shutdown = std::pin::pin!(shutdown);
        let (Some(queue), Some(dead_letter_queue)) =
            (self.config.queue(), self.config.dead_letter_queue())
        else {
            return Err(Error::Config {
                setting: "CQRS_QUEUE",
                reason: "the consumer runtime needs this replica service's queue; set \
                         `CQRS_QUEUE` (or `ConfigBuilder::queue`)"
                    .to_owned(),
            });
        };
        let selected = match self.selected() {
            Ok(selected) => selected,
            Err(error) => {
                self.health.error(error.to_string());
                return Err(error);
            }
        };
        let ctx = Arc::new(Context {
            queue: queue.to_owned(),
            dead_letter_queue: dead_letter_queue.to_owned(),
            config: self.config.clone(),
            counters: Arc::clone(&self.counters),
            meters: Meters::new(queue, &self.applier.cqrs_ids()),
            health: Arc::clone(&self.health),
            selected,
        });
        let started = self.start(&ctx, shutdown.as_mut()).await;
        if let Err(error) = &started {
            self.health.error(error.to_string());
        }
        let Some(mut consumer) = started? else {
            tracing::info!(queue = %ctx.queue, "consumer runtime stopped before it started");
            return Ok(self.counters.snapshot());
        };
        tracing::info!(
            queue = %ctx.queue,
            dead_letter_queue = %ctx.dead_letter_queue,
            workers = self.workers,
            batch_size = self.batch_size,
            batch_wait = ?self.batch_wait,
            prefetch = self.config.prefetch(),
            "consumer runtime started"
        );

        let (stop, stopping) = watch::channel(false);
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let settler = tokio::spawn(
            Settler::new(self.transport.clone(), Arc::clone(&ctx)).run(settle_rx, stopping.clone()),
        );
        let settings = WorkerSettings {
            batch_size: self.batch_size,
            batch_wait: self.batch_wait,
            unavailable_min: self.unavailable_min,
            unavailable_max: self.unavailable_max,
        };
        let mut senders = Vec::with_capacity(self.workers);
        let mut workers = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let (sender, jobs) = mpsc::unbounded_channel();
            let worker = Worker::new(
                index,
                Arc::clone(&self.applier),
                Arc::clone(&ctx),
                settings,
                settle.clone(),
            );
            workers.push(tokio::spawn(worker.run(jobs, stopping.clone())));
            senders.push(sender);
        }

        self.health.consuming(true);
        let ended = loop {
            let next = tokio::select! {
                biased;
                () = shutdown.as_mut() => break Ended::Requested,
                next = consumer.next() => next,
            };
            match next {
                None => break Ended::Closed,
                Some(Err(error)) => break Ended::Failed(error),
                Some(Ok(delivery)) => self.dispatch(&ctx, delivery, &senders, &settle).await,
            }
        };

        // Stop taking deliveries, but keep the consumer (its channel) open until the workers
        // and the settler have acknowledged what they settle.
        self.health.consuming(false);
        if let Ended::Failed(error) = &ended {
            self.health.error(error.to_string());
        }
        match &ended {
            Ended::Requested => tracing::info!(queue = %ctx.queue, "consumer runtime stopping"),
            Ended::Closed => tracing::warn!(
                queue = %ctx.queue,
                "the transport was closed; consumer runtime stopping"
            ),
            Ended::Failed(error) => tracing::error!(
                queue = %ctx.queue,
                %error,
                "the consumer failed for good; consumer runtime stopping"
            ),
        }
        stop.send_replace(true);
        drop(senders);
        drop(settle);
        self.wind_down(workers, settler).await;
        drop(consumer);

        let stats = self.counters.snapshot();
        tracing::info!(
            queue = %ctx.queue,
            received = stats.received,
            applied = stats.applied(),
            retried = stats.retried,
            dead_lettered = stats.dead_lettered,
            batches = stats.batches,
            "consumer runtime stopped"
        );
        match ended {
            Ended::Requested | Ended::Closed => Ok(stats),
            Ended::Failed(error) => Err(error),
        }
    }

    /// Runs the runtime as a Tokio task until [`ConsumerHandle::shutdown`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like [`tokio::spawn`].
    pub fn spawn(self) -> ConsumerHandle {
        let counters = Arc::clone(&self.counters);
        let health = Arc::clone(&self.health);
        let transport = self.transport.clone();
        let probe_timeout = self.config.connect_timeout();
        let probe: Probe = Arc::new(move || {
            let transport = transport.clone();
            Box::pin(async move { transport.probe().await })
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            if stopped.await.is_err() {
                // The handle was dropped: the runtime is detached and runs on.
                std::future::pending::<()>().await;
            }
        };
        ConsumerHandle {
            stop,
            task: tokio::spawn(self.run_until(shutdown)),
            counters,
            health,
            probe,
            probe_timeout,
        }
    }

    /// Declares the topology and starts consuming, trying again after retryable errors.
    /// `None` when `shutdown` completes first.
    async fn start(
        &self,
        ctx: &Context,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<Option<T::Consumer>> {
        let cqrs_ids = match &ctx.selected {
            Some(selected) => selected.iter().cloned().collect(),
            None => self.applier.cqrs_ids(),
        };
        if cqrs_ids.is_empty() {
            tracing::warn!(
                queue = %ctx.queue,
                "the applier handles no cqrs_id: the queue gets no binding and receives nothing"
            );
        }
        let prefetch = self.config.prefetch();
        if usize::from(prefetch) < self.batch_size {
            tracing::warn!(
                prefetch,
                batch_size = self.batch_size,
                "the prefetch is smaller than the batch size: batches never fill up and each \
                 waits the full batch wait"
            );
        }
        let topology = Topology::from_config(&self.config, cqrs_ids);
        let mut backoff = Backoff::new(
            self.config.reconnect_min_delay(),
            self.config.reconnect_max_delay(),
        );
        loop {
            let attempt = async {
                self.transport.declare(&topology).await?;
                self.transport.consume(&ctx.queue, prefetch).await
            };
            let result = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(None),
                result = attempt => result,
            };
            match result {
                Ok(consumer) => return Ok(Some(consumer)),
                Err(error) if error.is_retryable() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        queue = %ctx.queue,
                        %error,
                        retry_in = ?delay,
                        "cannot start consuming; trying again"
                    );
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return Ok(None),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends one delivery where it belongs.
    async fn dispatch(
        &self,
        ctx: &Context,
        delivery: Delivery,
        workers: &[mpsc::UnboundedSender<Job<A::Prepared>>],
        settle: &SettleSender,
    ) {
        bump(&ctx.counters.received);
        let routed = route(&*self.applier, ctx, workers.len(), delivery);
        let label = match &routed {
            Routed::Apply { job, .. } => &job.label,
            Routed::Ignore { label, .. } | Routed::Reject { label, .. } => label,
        };
        ctx.meters.received(label.cqrs_id());
        match routed {
            Routed::Apply { worker, job } => {
                let sent = match workers.get(worker) {
                    Some(sender) => sender.send(job).is_ok(),
                    None => false,
                };
                if !sent {
                    tracing::error!(
                        worker,
                        "worker task is gone; the message stays unacknowledged"
                    );
                }
            }
            Routed::Ignore { delivery, label } => {
                bump(&ctx.counters.ignored);
                ctx.meters.ignored(label.cqrs_id());
                tracing::debug!(
                    cqrs_id = label.cqrs_id(),
                    pk = label.pk(),
                    "broadcast SYNC ignored: the model accepts only SYNCs aimed at this queue"
                );
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "cannot acknowledge an ignored SYNC; it comes again");
                }
            }
            Routed::Reject {
                pending,
                label,
                why,
                reason,
            } => {
                let counter = match why {
                    Rejection::Malformed => &ctx.counters.malformed,
                    Rejection::Unknown => &ctx.counters.unknown,
                    Rejection::Expired => &ctx.counters.expired,
                    Rejection::NotSelected => &ctx.counters.not_selected,
                };
                bump(counter);
                tracing::debug!(
                    cqrs_id = label.cqrs_id(),
                    pk = label.pk(),
                    reason = %super::dead_letter::shorten(&reason),
                    "message rejected; dead-lettering it"
                );
                let scheduled = Scheduled {
                    due: Instant::now(),
                    pending,
                };
                if settle.send(scheduled).is_err() {
                    tracing::error!("the settler task is gone; the message stays unacknowledged");
                }
            }
        }
    }

    /// Waits for the workers, then the settler, until the shutdown timeout; abandons what is
    /// still running then.
    async fn wind_down(&self, mut workers: Vec<JoinHandle<()>>, mut settler: JoinHandle<()>) {
        let deadline = Instant::now() + self.shutdown_timeout;
        let finished = tokio::time::timeout_at(deadline, async {
            for worker in &mut workers {
                if let Err(error) = worker.await {
                    tracing::error!(%error, "a consumer worker task failed");
                }
            }
            if let Err(error) = (&mut settler).await {
                tracing::error!(%error, "the consumer settler task failed");
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "shutdown timeout reached: abandoning the batches and publishes still in \
                 progress; their messages stay unacknowledged and the broker delivers them again"
            );
            for task in workers.iter().chain(std::iter::once(&settler)) {
                task.abort();
            }
            for task in workers.into_iter().chain(std::iter::once(settler)) {
                let _ = task.await;
            }
        }
    }
}
