//! A worker: collects the messages of its rows into batches and applies them; on failure splits
//! the batch to find the failing message; while the database is unavailable, holds the batch
//! and tries again.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::SubsecRound;
use futures_util::FutureExt;
use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::Context;
use super::apply::{Applied, Applier, BatchError, Incoming, RetryChoice, SEQ_HEADER};
use super::dead_letter::{Label, dead_letter};
use super::dispatch::panic_message;
use super::meters::DeadReason;
use super::retry::{AfterFailure, after_failure, retries_exhausted};
use super::settle::{Pending, Scheduled, SettleSender};
use super::stats::{Tally, bump};
use crate::backoff::Backoff;
use crate::payload::Expiry;
use crate::trace::TraceContext;
use crate::transport::{Delivery, OutgoingMessage, direct_routing_key};

/// One message on its way to be applied.
pub(crate) struct Job<P> {
    pub(crate) delivery: Delivery,
    pub(crate) incoming: Incoming,
    pub(crate) prepared: Arc<P>,
    pub(crate) label: Label,
    /// Its `process` span (see `span.rs`), closed with the job.
    pub(crate) span: tracing::Span,
}

/// How a worker batches and backs off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerSettings {
    pub(crate) batch_size: usize,
    pub(crate) batch_wait: Duration,
    pub(crate) unavailable_min: Duration,
    pub(crate) unavailable_max: Duration,
}

pub(crate) struct Worker<A: Applier> {
    index: usize,
    applier: Arc<A>,
    ctx: Arc<Context>,
    settings: WorkerSettings,
    settle: SettleSender,
    backoff: Backoff,
    /// The acknowledgements of the previous batch, sent while the next batch is applied.
    acking: Option<tokio::task::JoinHandle<()>>,
}

/// The result of applying one (part of a) batch.
enum Attempt {
    Applied(Vec<Applied>),
    Failed(String),
    /// The runtime is stopping while the database is unavailable: give up.
    Stopped,
}

impl<A: Applier> Worker<A> {
    pub(crate) fn new(
        index: usize,
        applier: Arc<A>,
        ctx: Arc<Context>,
        settings: WorkerSettings,
        settle: SettleSender,
    ) -> Self {
        Worker {
            index,
            applier,
            ctx,
            backoff: Backoff::new(settings.unavailable_min, settings.unavailable_max),
            settings,
            settle,
            acking: None,
        }
    }

    /// Acknowledges a batch in the background, so the next batch is applied meanwhile; at most
    /// one batch's acknowledgements are in flight (waiting here for the previous ones).
    async fn acknowledge_in_background(&mut self, deliveries: Vec<Delivery>) {
        self.finish_acknowledgements().await;
        self.acking = Some(tokio::spawn(acknowledge(self.index, deliveries)));
    }

    /// Waits until the acknowledgements in flight are sent.
    async fn finish_acknowledgements(&mut self) {
        if let Some(acking) = self.acking.take()
            && let Err(error) = acking.await
        {
            tracing::warn!(worker = self.index, %error, "an acknowledgement task failed");
        }
    }

    /// Takes jobs until `jobs` is closed or `stop` turns true; a batch being collected or
    /// applied when that happens is finished (applied and acknowledged) first. Jobs still
    /// queued are dropped unacknowledged: the broker delivers them again.
    pub(crate) async fn run(
        mut self,
        mut jobs: mpsc::UnboundedReceiver<Job<A::Prepared>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                () = super::stopped(&mut stop) => break,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.settings.batch_wait;
            while batch.len() < self.settings.batch_size {
                if let Ok(job) = jobs.try_recv() {
                    batch.push(job);
                    continue;
                }
                tokio::select! {
                    biased;
                    () = super::stopped(&mut stop) => break,
                    job = jobs.recv() => match job {
                        Some(job) => batch.push(job),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.process(batch, &mut stop).await;
        }
        self.finish_acknowledgements().await;
    }

    /// Applies a batch. A failing batch is split in halves, each applied on its own, down to
    /// single messages: the others are applied (in their order) and acknowledged, and each
    /// failing message takes the retry path.
    async fn process(&mut self, jobs: Vec<Job<A::Prepared>>, stop: &mut watch::Receiver<bool>) {
        let prepared: Vec<Arc<A::Prepared>> = jobs.iter().map(|job| job.prepared.clone()).collect();
        let mut jobs: Vec<Option<Job<A::Prepared>>> = jobs.into_iter().map(Some).collect();
        // Ranges still to apply, the next one on top: left halves before right halves keeps
        // the messages of a row in order.
        let mut todo: Vec<Range<usize>> = Vec::new();
        todo.push(0..prepared.len());
        while let Some(range) = todo.pop() {
            let started = Instant::now();
            let span = super::span::apply(&self.ctx.queue, &jobs[range.clone()]);
            let attempt = self
                .apply(&prepared[range.clone()], stop)
                .instrument(span)
                .await;
            match attempt {
                Attempt::Applied(outcomes) => {
                    let elapsed = started.elapsed();
                    let now = self.ctx.config.clock().now();
                    let meters = &self.ctx.meters;
                    let deliveries: Vec<Delivery> = jobs[range.clone()]
                        .iter_mut()
                        .zip(
                            outcomes
                                .iter()
                                .copied()
                                .map(Some)
                                .chain(std::iter::repeat(None)),
                        )
                        .filter_map(|(job, outcome)| {
                            let job = job.take()?;
                            if let Some(outcome) = outcome {
                                meters.settled(&job.incoming.payload, outcome, now);
                            }
                            Some(job.delivery)
                        })
                        .collect();
                    meters.batch(range.len(), elapsed);
                    self.ctx.health.applied();
                    self.applied(range.len(), &outcomes, elapsed);
                    self.acknowledge_in_background(deliveries).await;
                }
                Attempt::Failed(error) if range.len() == 1 => {
                    self.ctx.health.error(error.as_str());
                    if let Some(job) = jobs[range.start].take() {
                        self.failed(job, &error);
                    }
                }
                Attempt::Failed(error) => {
                    bump(&self.ctx.counters.batch_failures);
                    tracing::debug!(
                        worker = self.index,
                        size = range.len(),
                        %error,
                        "batch failed; splitting it to find the failing message"
                    );
                    let middle = range.start + range.len() / 2;
                    todo.push(middle..range.end);
                    todo.push(range.start..middle);
                }
                Attempt::Stopped => {
                    let left: usize = jobs.iter().filter(|job| job.is_some()).count();
                    tracing::warn!(
                        worker = self.index,
                        messages = left,
                        "stopping while the database is unavailable: leaving the batch \
                         unacknowledged; the broker delivers it again"
                    );
                    return;
                }
            }
        }
    }

    /// Applies one batch, trying again after a backoff as long as the database is unavailable
    /// (until the runtime stops). A panic of the applier counts as a failure of the batch.
    async fn apply(
        &mut self,
        batch: &[Arc<A::Prepared>],
        stop: &mut watch::Receiver<bool>,
    ) -> Attempt {
        let mut conflicts = 0u64;
        loop {
            let result = AssertUnwindSafe(self.applier.apply(self.index, batch.to_vec()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(BatchError::Failed(format!(
                        "the applier panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                });
            match result {
                Ok(outcomes) => {
                    self.backoff.reset();
                    return Attempt::Applied(outcomes);
                }
                Err(BatchError::Failed(error)) => return Attempt::Failed(error),
                Err(BatchError::Conflict(error)) => {
                    bump(&self.ctx.counters.conflict_retries);
                    self.ctx.meters.batch_retry(true);
                    conflicts += 1;
                    // Short and jittered, so that the two sides of a deadlock do not meet again.
                    let pause = Duration::from_millis(fastrand::u64(1..=20) * conflicts.min(10));
                    tracing::debug!(
                        worker = self.index,
                        size = batch.len(),
                        %error,
                        retry_in = ?pause,
                        "transient conflict; trying the batch again"
                    );
                    tokio::select! {
                        biased;
                        () = super::stopped(stop) => return Attempt::Stopped,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                Err(BatchError::TimedOut(error)) => {
                    bump(&self.ctx.counters.timeout_retries);
                    self.ctx.meters.batch_retry_after_timeout();
                    let delay = self.ctx.config.retry_delay();
                    tracing::debug!(
                        worker = self.index,
                        size = batch.len(),
                        %error,
                        retry_in = ?delay,
                        "a statement timed out; trying the batch again after the retry delay"
                    );
                    tokio::select! {
                        biased;
                        () = super::stopped(stop) => return Attempt::Stopped,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(BatchError::Unavailable(error)) => {
                    bump(&self.ctx.counters.unavailable_retries);
                    self.ctx.meters.batch_retry(false);
                    self.ctx
                        .health
                        .error(format!("the database is unavailable: {error}"));
                    if *stop.borrow() {
                        return Attempt::Stopped;
                    }
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        worker = self.index,
                        size = batch.len(),
                        %error,
                        retry_in = ?delay,
                        attempt = self.backoff.attempts(),
                        "database unavailable; holding the batch unacknowledged and trying again"
                    );
                    tokio::select! {
                        biased;
                        () = super::stopped(stop) => return Attempt::Stopped,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn applied(&self, size: usize, outcomes: &[Applied], elapsed: Duration) {
        let counters = &self.ctx.counters;
        bump(&counters.batches);
        let mut tally = Tally::new();
        for outcome in outcomes {
            counters.applied(*outcome);
            tally.add(*outcome);
        }
        if outcomes.len() != size {
            tracing::error!(
                worker = self.index,
                size,
                outcomes = outcomes.len(),
                "the applier reported a different number of outcomes than messages; \
                 acknowledging the batch anyway"
            );
        }
        tracing::debug!(
            worker = self.index,
            size,
            elapsed = ?elapsed,
            outcomes = %tally,
            "batch applied"
        );
    }

    /// The retry path of one failing message: into the delay queue, or to the dead-letter
    /// queue once its retries are used up.
    fn failed(&self, job: Job<A::Prepared>, error: &str) {
        let Job {
            delivery,
            incoming,
            label,
            span,
            prepared,
        } = job;
        super::span::failed(&span);
        let mut payload = incoming.payload;
        let policy = self.applier.policy(&payload.cqrs_id).unwrap_or_default();
        let would_retry = !retries_exhausted(payload.retries, &policy, &self.ctx.config);
        let choice = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.applier
                .retry_choice(self.index, &prepared, payload.retries, error, would_retry)
        }))
        .unwrap_or_else(|panic| {
            tracing::error!(
                worker = self.index,
                cqrs_id = label.cqrs_id(),
                panic = panic_message(panic.as_ref()),
                "the model's retry hook panicked; using the default retry policy"
            );
            RetryChoice::default()
        });
        let scheduled =
            match after_failure(payload.retries, &policy, &self.ctx.config, error, choice) {
                AfterFailure::Retry { delay } => {
                    let retries = payload.retries.saturating_add(1);
                    tracing::warn!(
                        worker = self.index,
                        cqrs_id = label.cqrs_id(),
                        pk = label.pk(),
                        retries,
                        delay = ?delay,
                        %error,
                        "applying failed; retrying after the delay"
                    );
                    if payload.expires == Expiry::Unspecified {
                        // Keep the lifetime counted from the first receipt, as the reference does.
                        payload.expires = payload
                            .expires_at(incoming.received_at, self.ctx.config.message_ttl())
                            .map_or(Expiry::Never, |at| {
                                Expiry::At(at.trunc_subsecs(0).fixed_offset())
                            });
                    }
                    payload.retries = retries;
                    let message = OutgoingMessage::new(
                        direct_routing_key(&self.ctx.queue, &payload.cqrs_id),
                        payload.to_vec(),
                    );
                    // A retry keeps the master's sequence and trace: it is the same write.
                    let mut message = match incoming.seq {
                        Some(seq) => message.with_header(SEQ_HEADER, seq.to_string()),
                        None => message,
                    };
                    if let Some(trace) = TraceContext::from_headers(delivery.headers()) {
                        for (name, value) in trace.headers() {
                            message = message.with_header(name, value);
                        }
                    }
                    Scheduled {
                        due: Instant::now() + delay,
                        pending: Pending::retry(delivery, message, label, retries),
                    }
                }
                AfterFailure::DeadLetter { reason } => {
                    let message =
                        dead_letter(&self.ctx, &delivery, Some(&payload.cqrs_id), &reason);
                    Scheduled {
                        due: Instant::now(),
                        pending: Pending::dead_letter(
                            delivery,
                            message,
                            label,
                            &reason,
                            DeadReason::Failed,
                        ),
                    }
                }
            };
        if self.settle.send(scheduled).is_err() {
            tracing::error!(
                worker = self.index,
                "the settler task is gone; the failed message stays unacknowledged"
            );
        }
    }
}

/// Acknowledges deliveries, all at once (not one after the other).
pub(crate) async fn acknowledge(worker: usize, deliveries: Vec<Delivery>) {
    let results = join_all(deliveries.into_iter().map(Delivery::ack)).await;
    let failed = results.iter().filter(|ack| ack.is_err()).count();
    if let Some(Err(error)) = results.into_iter().find(Result::is_err) {
        tracing::warn!(
            worker,
            failed,
            %error,
            "cannot acknowledge applied messages; the broker delivers them again (harmless: \
             applying is idempotent)"
        );
    }
}
