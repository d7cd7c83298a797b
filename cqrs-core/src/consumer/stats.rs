//! What a consumer runtime reports: [`ConsumerStats`], and the live counters behind it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::apply::Applied;

/// What a consumer runtime has done so far: a snapshot of its counters.
///
/// Returned by [`ConsumerRuntime::run_until`] and [`ConsumerHandle::shutdown`], and readable
/// while the runtime runs with [`ConsumerHandle::stats`] or [`ConsumerRuntime::stats`].
///
/// Every message taken from the queue ends in exactly one of: an [`Applied`] outcome
/// (`created` ... `ignored`), the dead-letter queue (`dead_lettered`), or, when the runtime
/// stops before settling it, back in the queue. `retried` counts republished copies, which are
/// received again.
///
/// [`ConsumerRuntime::run_until`]: crate::ConsumerRuntime::run_until
/// [`ConsumerRuntime::stats`]: crate::ConsumerRuntime::stats
/// [`ConsumerHandle::shutdown`]: crate::ConsumerHandle::shutdown
/// [`ConsumerHandle::stats`]: crate::ConsumerHandle::stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Deliveries taken from the queue (retried copies count again).
    pub received: u64,
    /// Messages applied as [`Applied::Created`].
    pub created: u64,
    /// Messages applied as [`Applied::Updated`].
    pub updated: u64,
    /// Messages applied as [`Applied::Deleted`].
    pub deleted: u64,
    /// Messages applied as [`Applied::Synced`].
    pub synced: u64,
    /// Messages dropped as out of order ([`Applied::SkippedOld`]).
    pub skipped_old: u64,
    /// Messages dropped as duplicates ([`Applied::Duplicate`]).
    pub duplicates: u64,
    /// Messages made moot by a newer one in the same batch ([`Applied::Superseded`]).
    pub superseded: u64,
    /// SAVEs kept out by a newer DELETE tombstone ([`Applied::Tombstoned`]).
    pub tombstoned: u64,
    /// Messages taken by a custom handler ([`Applied::Handled`]).
    pub handled: u64,
    /// Messages acknowledged without effect: [`Applied::Ignored`], and broadcast SYNCs for a
    /// model that accepts only SYNCs aimed at its own queue.
    pub ignored: u64,
    /// Failed messages republished (with `retries + 1`) after their delay.
    pub retried: u64,
    /// Messages published to the dead-letter queue (and then acknowledged).
    pub dead_lettered: u64,
    /// Messages that could not be read (not JSON, a required key missing or of the wrong type)
    /// or that [`Applier::prepare`](crate::Applier::prepare) rejected; each is dead-lettered.
    pub malformed: u64,
    /// Messages for a `cqrs_id` this service does not consume; each is dead-lettered.
    pub unknown: u64,
    /// Messages whose `expires` had passed; each is dead-lettered.
    pub expired: u64,
    /// Messages of a model the applier knows but this runtime was told not to consume
    /// ([`ConsumerRuntime::only_cqrs_ids`](crate::ConsumerRuntime::only_cqrs_ids), `cqrs consume
    /// --cqrs-id`); each is dead-lettered, for `dead-letters retry` to replay later.
    pub not_selected: u64,
    /// Batches (including the halves of split batches) the applier applied successfully.
    pub batches: u64,
    /// Failed batches of more than one message that were split in two to find the failing
    /// message.
    pub batch_failures: u64,
    /// Batches tried again because the database was unavailable.
    pub unavailable_retries: u64,
    /// Batches tried again after a transient conflict (a deadlock, a serialization failure, a
    /// lock wait timeout), without spending any message's retries.
    pub conflict_retries: u64,
    /// Batches tried again, after the retry delay, because a statement ran longer than
    /// `CQRS_QUERY_TIMEOUT` ([`BatchError::TimedOut`](crate::BatchError::TimedOut)), without
    /// spending any message's retries.
    pub timeout_retries: u64,
}

impl ConsumerStats {
    /// Messages the applier settled, whatever the outcome: the sum of `created` through
    /// `ignored`.
    pub fn applied(&self) -> u64 {
        self.created
            + self.updated
            + self.deleted
            + self.synced
            + self.skipped_old
            + self.duplicates
            + self.superseded
            + self.tombstoned
            + self.handled
            + self.ignored
    }
}

/// The live counters behind [`ConsumerStats`], shared by the runtime's tasks and its handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    created: AtomicU64,
    updated: AtomicU64,
    deleted: AtomicU64,
    synced: AtomicU64,
    skipped_old: AtomicU64,
    duplicates: AtomicU64,
    superseded: AtomicU64,
    tombstoned: AtomicU64,
    handled: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) unknown: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) not_selected: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batch_failures: AtomicU64,
    pub(crate) unavailable_retries: AtomicU64,
    pub(crate) conflict_retries: AtomicU64,
    pub(crate) timeout_retries: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts one applied message by its outcome.
    pub(crate) fn applied(&self, outcome: Applied) {
        bump(self.counter_of(outcome));
    }

    fn counter_of(&self, outcome: Applied) -> &AtomicU64 {
        match outcome {
            Applied::Created => &self.created,
            Applied::Updated => &self.updated,
            Applied::Deleted => &self.deleted,
            Applied::Synced => &self.synced,
            Applied::SkippedOld => &self.skipped_old,
            Applied::Duplicate => &self.duplicates,
            Applied::Superseded => &self.superseded,
            Applied::Tombstoned => &self.tombstoned,
            Applied::Handled => &self.handled,
            Applied::Ignored => &self.ignored,
        }
    }

    pub(crate) fn snapshot(&self) -> ConsumerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ConsumerStats {
            received: get(&self.received),
            created: get(&self.created),
            updated: get(&self.updated),
            deleted: get(&self.deleted),
            synced: get(&self.synced),
            skipped_old: get(&self.skipped_old),
            duplicates: get(&self.duplicates),
            superseded: get(&self.superseded),
            tombstoned: get(&self.tombstoned),
            handled: get(&self.handled),
            ignored: get(&self.ignored),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            malformed: get(&self.malformed),
            unknown: get(&self.unknown),
            expired: get(&self.expired),
            not_selected: get(&self.not_selected),
            batches: get(&self.batches),
            batch_failures: get(&self.batch_failures),
            unavailable_retries: get(&self.unavailable_retries),
            conflict_retries: get(&self.conflict_retries),
            timeout_retries: get(&self.timeout_retries),
        }
    }
}

/// The outcomes of one batch, for its debug log line: `created=3 updated=1`.
#[derive(Default)]
pub(crate) struct Tally {
    counts: [(u32, &'static str); 10],
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            counts: [
                (0, "created"),
                (0, "updated"),
                (0, "deleted"),
                (0, "synced"),
                (0, "skipped_old"),
                (0, "duplicates"),
                (0, "superseded"),
                (0, "tombstoned"),
                (0, "handled"),
                (0, "ignored"),
            ],
        }
    }

    pub(crate) fn add(&mut self, outcome: Applied) {
        let index = match outcome {
            Applied::Created => 0,
            Applied::Updated => 1,
            Applied::Deleted => 2,
            Applied::Synced => 3,
            Applied::SkippedOld => 4,
            Applied::Duplicate => 5,
            Applied::Superseded => 6,
            Applied::Tombstoned => 7,
            Applied::Handled => 8,
            Applied::Ignored => 9,
        };
        self.counts[index].0 += 1;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (count, name) in self.counts.iter().filter(|(count, _)| *count > 0) {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{name}={count}")?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_counter_and_applied_sums_them() {
        let counters = Counters::default();
        let all = [
            Applied::Created,
            Applied::Updated,
            Applied::Deleted,
            Applied::Synced,
            Applied::SkippedOld,
            Applied::Duplicate,
            Applied::Superseded,
            Applied::Tombstoned,
            Applied::Handled,
            Applied::Ignored,
        ];
        let mut tally = Tally::new();
        for (i, outcome) in all.into_iter().enumerate() {
            for _ in 0..=i {
                counters.applied(outcome);
                tally.add(outcome);
            }
        }
        let stats = counters.snapshot();
        assert_eq!(
            [
                stats.created,
                stats.updated,
                stats.deleted,
                stats.synced,
                stats.skipped_old,
                stats.duplicates,
                stats.superseded,
                stats.tombstoned,
                stats.handled,
                stats.ignored
            ],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert_eq!(stats.applied(), 55);
        assert_eq!(
            tally.to_string(),
            "created=1 updated=2 deleted=3 synced=4 skipped_old=5 duplicates=6 superseded=7 \
             tombstoned=8 handled=9 ignored=10"
        );
        assert_eq!(Tally::new().to_string(), "");
    }
}
