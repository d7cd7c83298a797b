//! The contract between the consumer runtime and what applies messages (the Diesel replica
//! registry in cqrs-diesel, or anything else that implements [`Applier`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::payload::Payload;

/// A parsed message, as the runtime hands it to an [`Applier`].
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The body.
    pub payload: Payload,
    /// Whether it came with the routing key `cqrs.<queue>.<cqrs_id>`: a SYNC aimed at this
    /// service only, or one of its own retries. The body does not carry this.
    pub direct: bool,
    /// When this process received it.
    pub received_at: DateTime<Utc>,
    /// The master's outbox sequence number ([`SEQ_HEADER`]), when the message carried one.
    pub seq: Option<i64>,
}

/// The AMQP header in which a cqrs-diesel master's relay sends the id of the message's outbox
/// entry, as decimal text. The ids of one row's messages rise in the order of its writes,
/// across deletes and re-creates and whatever the master's clocks say, so a replica orders by
/// it when a message and its row's state both have one. django-cqrs reads only the body and
/// ignores it; the body is the same with and without it. Retries and dead letters keep it.
pub const SEQ_HEADER: &str = "x-cqrs-seq";

/// Reads a [`SEQ_HEADER`] value: `Ok(None)` when absent, an error naming the header when it is
/// not a non-negative integer.
pub fn parse_seq(value: Option<&str>) -> Result<Option<i64>, String> {
    match value {
        None => Ok(None),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(seq) if seq >= 0 => Ok(Some(seq)),
            _ => Err(format!(
                "header {SEQ_HEADER}: expected a non-negative integer, found {text:?}"
            )),
        },
    }
}

/// Per-model settings the runtime applies (`None` fields take the configuration's values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Retries before dead-lettering: `Some(None)` = unlimited, `None` = the configured value.
    pub max_retries: Option<Option<u32>>,
    /// Delay before the first retry (`None`: the configured `retry_delay`).
    pub retry_delay: Option<Duration>,
    /// Exponential backoff with jitter (`None`: the configured `retry_exponential`).
    pub retry_exponential: Option<bool>,
    /// Accept only SYNCs aimed at this service's queue; broadcast SYNCs are acknowledged and
    /// ignored.
    pub only_direct_syncs: bool,
}

/// A model's own answer for a message that failed to apply (django-cqrs's `should_retry_cqrs`
/// and `get_cqrs_retry_delay`), from [`Applier::retry_choice`]. `None` fields keep the
/// runtime's default: retry while the message's retries are below the model's maximum
/// ([`ModelPolicy::max_retries`], else `CQRS_MAX_RETRIES`), after the model's delay
/// ([`ModelPolicy::retry_delay`], else `CQRS_RETRY_DELAY`, exponential when configured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryChoice {
    /// `Some(false)`: dead-letter the message now; `Some(true)`: retry it, even past the
    /// maximum.
    pub retry: Option<bool>,
    /// The delay before the retry, instead of the default one.
    pub delay: Option<Duration>,
}

/// What applying one message did, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Applied {
    /// A new row was written.
    Created,
    /// A stored row was replaced by a newer revision.
    Updated,
    /// A row was deleted (and a tombstone recorded).
    Deleted,
    /// A SYNC was written (whatever the stored revision).
    Synced,
    /// The stored revision was newer: the message was out of order and is dropped.
    SkippedOld,
    /// The stored revision was equal: a duplicate.
    Duplicate,
    /// A newer message for the same row in the same batch made this one moot.
    Superseded,
    /// A DELETE tombstone newer than this SAVE keeps the row deleted.
    Tombstoned,
    /// A custom handler took the message.
    Handled,
    /// Not applicable here (for example a broadcast SYNC for an only-direct-syncs model).
    Ignored,
}

/// Why a batch could not be applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The database (or whatever the applier writes to) is unreachable: nothing was applied;
    /// the runtime keeps the batch unacknowledged and tries it again after a back-off.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a transient conflict with another one (a deadlock, a serialization
    /// failure, a lock wait timeout) and was rolled back: nothing was applied. The runtime
    /// tries the same batch again after a short pause, without spending any message's retries.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A statement ran longer than the database session's timeout (`CQRS_QUERY_TIMEOUT`) and
    /// was cancelled: nothing was applied. The runtime tries the same batch again after the
    /// configured retry delay (`CQRS_RETRY_DELAY`), without splitting it and without spending
    /// any message's retries: a timeout says nothing against one message, so it never
    /// dead-letters one.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// Something in the batch failed and the whole transaction was rolled back. The runtime
    /// splits the batch to find the failing message; a batch of one message that fails is
    /// retried through the delay queue, then dead-lettered.
    #[error("{0}")]
    Failed(String),
}

/// Applies messages. Implemented by cqrs-diesel's replica registry.
pub trait Applier: Send + Sync + 'static {
    /// A message decoded and checked by [`Applier::prepare`], ready to apply.
    type Prepared: Send + Sync + 'static;

    /// Every `cqrs_id` this applier handles (the queue is bound for each).
    fn cqrs_ids(&self) -> Vec<String>;

    /// Called once by [`ConsumerRuntime::new`](crate::ConsumerRuntime::new) with the runtime's
    /// configuration, before anything is applied: an applier takes the settings it applies
    /// itself (cqrs-diesel's replicas: `CQRS_QUERY_TIMEOUT`, `CQRS_LOG_TIMED_OUT_QUERIES`).
    /// Does nothing by default.
    fn configure(&mut self, config: &crate::Config) {
        let _ = config;
    }

    /// The settings of one model; `None` when the `cqrs_id` is unknown (the message is then
    /// dead-lettered).
    fn policy(&self, cqrs_id: &str) -> Option<ModelPolicy>;

    /// Decodes and checks one message (its `instance_data` against the model). An `Err` is a
    /// malformed message: it goes to the dead-letter queue with this reason, without retries.
    fn prepare(&self, incoming: &Incoming) -> Result<Self::Prepared, String>;

    /// Decides for one message whose batch of one failed ([`BatchError::Failed`]) on `worker`,
    /// after `retries` earlier retries, with `error`: whether and when to retry it.
    /// `would_retry` is the configured policy's answer (retries left under the model's
    /// maximum, else `CQRS_MAX_RETRIES`). Called on the worker right after the failed
    /// [`apply`](Self::apply), so an applier may look up the typed error it kept for that
    /// worker. The default keeps the runtime's policy.
    fn retry_choice(
        &self,
        worker: usize,
        prepared: &Self::Prepared,
        retries: u32,
        error: &str,
        would_retry: bool,
    ) -> RetryChoice {
        let _ = (worker, prepared, retries, error, would_retry);
        RetryChoice::default()
    }

    /// Applies a batch in one transaction. `Ok` holds one [`Applied`] per message, in order;
    /// then the runtime acknowledges them all.
    fn apply(
        &self,
        worker: usize,
        batch: Vec<Arc<Self::Prepared>>,
    ) -> impl Future<Output = Result<Vec<Applied>, BatchError>> + Send;
}
