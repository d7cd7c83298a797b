//! The settler: the task that owns the delay queue and publishes what is not simply
//! acknowledged after an apply, that is retries and dead letters, acknowledging each original
//! delivery only once its replacement is confirmed by the broker.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Context;
use super::dead_letter::{Label, shorten};
use super::delay_queue::DelayQueue;
use super::meters::DeadReason;
use super::stats::bump;
use crate::transport::{Delivery, OutgoingMessage, Transport};

/// A delivery waiting for its replacement to be published: a retry (the body with
/// `retries + 1`, to `cqrs.<queue>.<cqrs_id>`) or a dead letter.
pub(crate) struct Pending {
    delivery: Delivery,
    message: OutgoingMessage,
    label: Label,
    kind: Kind,
    /// Publishes of `message` that failed so far.
    publish_failures: u32,
}

enum Kind {
    Retry { retries: u32 },
    DeadLetter { reason: String, why: DeadReason },
}

impl Pending {
    /// A retry of `delivery`: `message` is its body with `retries` (already incremented), to
    /// the direct routing key.
    pub(crate) fn retry(
        delivery: Delivery,
        message: OutgoingMessage,
        label: Label,
        retries: u32,
    ) -> Self {
        Pending {
            delivery,
            message,
            label,
            kind: Kind::Retry { retries },
            publish_failures: 0,
        }
    }

    /// The dead letter of `delivery` (`message`, see `dead_letter::dead_letter`), sent for
    /// `reason` (logged), which is of the kind `why` (counted).
    pub(crate) fn dead_letter(
        delivery: Delivery,
        message: OutgoingMessage,
        label: Label,
        reason: &str,
        why: DeadReason,
    ) -> Self {
        Pending {
            delivery,
            message,
            label,
            kind: Kind::DeadLetter {
                reason: shorten(reason).to_owned(),
                why,
            },
            publish_failures: 0,
        }
    }
}

/// What the dispatcher and the workers hand to the settler: a pending delivery and when its
/// replacement is due (now for a dead letter, after the retry delay for a retry).
pub(crate) struct Scheduled {
    pub(crate) due: Instant,
    pub(crate) pending: Pending,
}

/// The sending side of the settler's channel.
pub(crate) type SettleSender = mpsc::UnboundedSender<Scheduled>;

/// The settler task's state.
pub(crate) struct Settler<T> {
    transport: T,
    ctx: Arc<Context>,
    queue: DelayQueue<Pending>,
    /// Publishes in flight at once.
    window: usize,
    /// Once the runtime stops: everything is published at once, and what cannot be published
    /// is left unacknowledged instead of being tried again.
    stopping: bool,
}

impl<T: Transport> Settler<T> {
    pub(crate) fn new(transport: T, ctx: Arc<Context>) -> Self {
        Settler {
            queue: DelayQueue::new(ctx.config.delay_queue_max_size()),
            window: ctx.config.publish_confirm_window().max(1),
            transport,
            ctx,
            stopping: false,
        }
    }

    /// Runs until every sender of `scheduled` is gone (the dispatcher and all workers have
    /// stopped), then publishes what is left. When `stop` turns true, the delay queue is
    /// published at once and later arrivals without waiting.
    pub(crate) async fn run(
        mut self,
        mut scheduled: mpsc::UnboundedReceiver<Scheduled>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let wake = self.queue.next_due();
            tokio::select! {
                biased;
                () = super::stopped(&mut stop), if !self.stopping => {
                    self.stopping = true;
                    if self.queue.len() > 0 {
                        tracing::info!(
                            waiting = self.queue.len(),
                            "stopping: republishing the delay queue now"
                        );
                    }
                }
                next = scheduled.recv() => match next {
                    Some(first) => {
                        self.accept(first).await;
                        // Take what else is waiting, to publish it in one group.
                        for _ in 1..self.window {
                            match scheduled.try_recv() {
                                Ok(more) => self.accept(more).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
            self.publish_due().await;
            self.queue_changed();
        }
        self.stopping = true;
        self.publish_due().await;
        self.queue_changed();
    }

    /// Puts an entry in the delay queue; when that overflows it, the entry due first is
    /// published at once (as the reference does). An entry due now (a dead letter, or anything
    /// once stopping) does not count against the capacity: it leaves with the next group.
    async fn accept(&mut self, scheduled: Scheduled) {
        let now = Instant::now();
        if self.stopping || scheduled.due <= now {
            self.queue.insert(now.min(scheduled.due), scheduled.pending);
            return;
        }
        if let Some(evicted) = self.queue.push(scheduled.due, scheduled.pending) {
            if matches!(evicted.kind, Kind::Retry { .. }) {
                tracing::info!(
                    cqrs_id = evicted.label.cqrs_id(),
                    pk = evicted.label.pk(),
                    capacity = self.ctx.config.delay_queue_max_size(),
                    "delay queue full: republishing the entry due first now"
                );
            }
            self.publish(vec![evicted]).await;
        }
    }

    /// Publishes every entry that is due (all of them once stopping), in groups of up to
    /// `window` publishes in flight.
    async fn publish_due(&mut self) {
        let now = Instant::now();
        loop {
            let mut group = Vec::new();
            while group.len() < self.window {
                let next = if self.stopping {
                    self.queue.pop_earliest()
                } else {
                    self.queue.pop_due(now)
                };
                match next {
                    Some(pending) => group.push(pending),
                    None => break,
                }
            }
            if group.is_empty() {
                return;
            }
            self.publish(group).await;
        }
    }

    /// Publishes the replacements, waits for their confirms, then acknowledges the originals
    /// of those confirmed. The others go back to the delay queue for a later attempt, or are
    /// left unacknowledged when stopping (the broker delivers them again): nothing is lost.
    async fn publish(&mut self, group: Vec<Pending>) {
        let mut handed = Vec::with_capacity(group.len());
        // Once a hand-over fails the connection is down: do not wait for it once per entry.
        let mut broken: Option<String> = None;
        for pending in group {
            let confirmation = if let Some(reason) = broken.clone() {
                Err(reason)
            } else {
                self.transport
                    .publish(&pending.message)
                    .await
                    .map_err(|error| {
                        let reason = error.to_string();
                        broken = Some(reason.clone());
                        reason
                    })
            };
            handed.push((pending, confirmation));
        }
        let settled = join_all(
            handed
                .into_iter()
                .map(|(pending, confirmation)| async move {
                    let result: Result<(), String> = match confirmation {
                        Ok(confirmation) => confirmation.await.map_err(|error| error.to_string()),
                        Err(reason) => Err(reason),
                    };
                    (pending, result)
                }),
        )
        .await;

        let mut published = Vec::with_capacity(settled.len());
        for (mut pending, result) in settled {
            match result {
                Ok(()) => {
                    self.log_published(&pending);
                    published.push(pending.delivery);
                }
                Err(error) if self.stopping => {
                    tracing::warn!(
                        cqrs_id = pending.label.cqrs_id(),
                        pk = pending.label.pk(),
                        %error,
                        "stopping: cannot publish a {}; the message stays unacknowledged and \
                         the broker delivers it again",
                        pending.what()
                    );
                }
                Err(error) => {
                    pending.publish_failures = pending.publish_failures.saturating_add(1);
                    let delay = self.republish_delay(pending.publish_failures);
                    tracing::warn!(
                        cqrs_id = pending.label.cqrs_id(),
                        pk = pending.label.pk(),
                        %error,
                        attempt = pending.publish_failures,
                        retry_in = ?delay,
                        "cannot publish a {}; the message stays unacknowledged, trying again later",
                        pending.what()
                    );
                    self.queue.insert(Instant::now() + delay, pending);
                }
            }
        }
        let acks = join_all(published.into_iter().map(Delivery::ack)).await;
        let failed = acks.iter().filter(|ack| ack.is_err()).count();
        if let Some(Err(error)) = acks.into_iter().find(Result::is_err) {
            tracing::warn!(
                failed,
                %error,
                "cannot acknowledge republished or dead-lettered messages; the broker delivers \
                 them again (a duplicate)"
            );
        }
    }

    /// Reports the delay queue's length (metrics and health).
    fn queue_changed(&self) {
        self.ctx.meters.delay_queue(self.queue.len());
        self.ctx.health.delayed(self.queue.len());
    }

    fn log_published(&self, pending: &Pending) {
        match &pending.kind {
            Kind::Retry { retries } => {
                bump(&self.ctx.counters.retried);
                self.ctx.meters.retried(pending.label.cqrs_id());
                tracing::debug!(
                    cqrs_id = pending.label.cqrs_id(),
                    pk = pending.label.pk(),
                    retries,
                    "retry republished"
                );
            }
            Kind::DeadLetter { reason, why } => {
                bump(&self.ctx.counters.dead_lettered);
                self.ctx.meters.dead_lettered(pending.label.cqrs_id(), *why);
                tracing::warn!(
                    cqrs_id = pending.label.cqrs_id(),
                    pk = pending.label.pk(),
                    reason = %reason,
                    dead_letter_queue = %self.ctx.dead_letter_queue,
                    "message dead-lettered"
                );
            }
        }
    }

    /// The wait after the `failures`-th failed publish of the same entry: the reconnection
    /// backoff of the configuration (without jitter; entries fail at different times).
    fn republish_delay(&self, failures: u32) -> Duration {
        crate::backoff::Backoff::new(
            self.ctx.config.reconnect_min_delay(),
            self.ctx.config.reconnect_max_delay(),
        )
        .ceiling(failures.saturating_sub(1))
    }
}

impl Pending {
    fn what(&self) -> &'static str {
        match self.kind {
            Kind::Retry { .. } => "retry",
            Kind::DeadLetter { .. } => "dead letter",
        }
    }
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
