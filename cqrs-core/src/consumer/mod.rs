//! The consumer runtime: everything a replica worker does except writing rows, which the
//! [`Applier`] does.
//!
//! ```text
//!                 ┌──────────── dispatcher (run_until's own task) ───────────┐
//! broker ──next──▶│ parse, check cqrs_id, expiry, only-direct-syncs, prepare │
//!                 └───┬─────────────────────┬───────────────────────┬────────┘
//!        hash(cqrs_id, pk) % workers     dead letters       ignored: ack
//!                     ▼                     ▼
//!         worker 0..n: batch, apply,   settler: delay queue, publishes retries and
//!         split on failure, ack ──────▶ dead letters, then acks their originals
//!                          failing message
//! ```
//!
//! Every delivery stays unacknowledged until its fate is sealed: applied, or replaced by a
//! confirmed retry or dead letter. That is why the prefetch must exceed the delay queue's size.

mod apply;
mod dead_letter;
mod delay_queue;
mod dispatch;
mod handle;
mod health;
mod meters;
mod retry;
mod runtime;
mod settle;
mod span;
mod stats;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use apply::{
    Applied, Applier, BatchError, Incoming, ModelPolicy, RetryChoice, SEQ_HEADER, parse_seq,
};
pub use dead_letter::{
    DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_ROUTING_KEY_HEADER,
};
pub use handle::{ConsumerHandle, shutdown_signal};
pub use health::ConsumerHealth;
pub use runtime::ConsumerRuntime;
pub use stats::ConsumerStats;

use crate::config::Config;
use stats::Counters;

/// What the dispatcher, the workers and the settler share.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    /// The replica queue (the configuration's, checked at start).
    pub(crate) queue: String,
    /// Its dead-letter queue.
    pub(crate) dead_letter_queue: String,
    pub(crate) counters: Arc<Counters>,
    /// The runtime's metrics.
    pub(crate) meters: meters::Meters,
    /// What [`ConsumerHandle::health`] reports.
    pub(crate) health: Arc<health::HealthState>,
    /// The `cqrs_id`s this runtime consumes when limited to some
    /// ([`ConsumerRuntime::only_cqrs_ids`]); `None`: every one the applier handles.
    pub(crate) selected: Option<std::collections::BTreeSet<String>>,
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the caller (it is not
    // `Send`): drop it here.
    let _ = stop.wait_for(|stop| *stop).await;
}
