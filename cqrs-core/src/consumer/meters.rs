//! The consumer runtime's metrics (names in [`crate::metric`]): handles registered once per
//! `cqrs_id` when the runtime starts, so that recording is a lookup and an atomic add.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::apply::Applied;
use super::dispatch::Rejection;
use crate::encoding::parse_timestamp;
use crate::metric::{
    APPLIED, BATCH_RETRIES, BATCH_SIZE, CONSUMED_MESSAGES, CQRS_ID, DEAD_LETTERED, DELAY_QUEUE,
    DESTINATION, OTHER_CQRS_ID, OUTCOME, PROCESS_DURATION, REASON, REPLICATION_LAG, RETRIED,
    SKIPPED,
};
use crate::payload::Payload;

/// Why a message went to the dead-letter queue, as the `reason` label says it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadReason {
    /// Its retries were used up (or its policy refused another try).
    Failed,
    /// See [`Rejection`].
    Rejected(Rejection),
}

/// The series of one `cqrs_id`.
#[derive(Debug)]
struct ModelMeters {
    received: Counter,
    /// One per [`Applied`] variant, in [`outcome_index`] order.
    outcomes: [Counter; 10],
    retried: Counter,
    /// failed, malformed, unknown, expired, not_selected.
    dead_lettered: [Counter; 5],
    lag: Histogram,
}

impl ModelMeters {
    fn new(cqrs_id: &str, queue: &str) -> ModelMeters {
        let applied = |outcome: &'static str| counter!(APPLIED, CQRS_ID => cqrs_id.to_owned(), OUTCOME => outcome);
        let skipped = |reason: &'static str| counter!(SKIPPED, CQRS_ID => cqrs_id.to_owned(), REASON => reason);
        let dead = |reason: &'static str| counter!(DEAD_LETTERED, CQRS_ID => cqrs_id.to_owned(), REASON => reason);
        ModelMeters {
            received: counter!(
                CONSUMED_MESSAGES,
                CQRS_ID => cqrs_id.to_owned(),
                DESTINATION => queue.to_owned()
            ),
            outcomes: [
                applied("created"),
                applied("updated"),
                applied("deleted"),
                applied("synced"),
                skipped("old"),
                skipped("duplicate"),
                skipped("superseded"),
                skipped("tombstoned"),
                applied("handled"),
                skipped("ignored"),
            ],
            retried: counter!(RETRIED, CQRS_ID => cqrs_id.to_owned()),
            dead_lettered: [
                dead("failed"),
                dead("malformed"),
                dead("unknown"),
                dead("expired"),
                dead("not_selected"),
            ],
            lag: histogram!(REPLICATION_LAG, CQRS_ID => cqrs_id.to_owned()),
        }
    }
}

/// The index of an outcome's counter in [`ModelMeters::outcomes`].
fn outcome_index(outcome: Applied) -> usize {
    match outcome {
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
    }
}

/// Whether an outcome changed the replica (and so has a replication lag).
fn changed(outcome: Applied) -> bool {
    matches!(
        outcome,
        Applied::Created | Applied::Updated | Applied::Deleted | Applied::Synced | Applied::Handled
    )
}

/// Every series of one runtime.
#[derive(Debug)]
pub(crate) struct Meters {
    models: HashMap<String, ModelMeters>,
    other: ModelMeters,
    process_duration: Histogram,
    batch_size: Histogram,
    delay_queue: Gauge,
    conflict_retries: Counter,
    unavailable_retries: Counter,
    timeout_retries: Counter,
}

impl Meters {
    /// Registers the series of `queue` and of each of `cqrs_ids` with the installed recorder.
    pub(crate) fn new(queue: &str, cqrs_ids: &[String]) -> Meters {
        let models = cqrs_ids
            .iter()
            .map(|cqrs_id| (cqrs_id.clone(), ModelMeters::new(cqrs_id, queue)))
            .collect();
        let retries = |reason: &'static str| counter!(BATCH_RETRIES, DESTINATION => queue.to_owned(), REASON => reason);
        Meters {
            models,
            other: ModelMeters::new(OTHER_CQRS_ID, queue),
            process_duration: histogram!(PROCESS_DURATION, DESTINATION => queue.to_owned()),
            batch_size: histogram!(BATCH_SIZE, DESTINATION => queue.to_owned()),
            delay_queue: gauge!(DELAY_QUEUE, DESTINATION => queue.to_owned()),
            conflict_retries: retries("conflict"),
            unavailable_retries: retries("unavailable"),
            timeout_retries: retries("timeout"),
        }
    }

    fn model(&self, cqrs_id: &str) -> &ModelMeters {
        self.models.get(cqrs_id).unwrap_or(&self.other)
    }

    /// A delivery taken from the queue.
    pub(crate) fn received(&self, cqrs_id: &str) {
        self.model(cqrs_id).received.increment(1);
    }

    /// A message settled by the applier with `outcome`; `payload` gives the lag of a change.
    pub(crate) fn settled(&self, payload: &Payload, outcome: Applied, now: DateTime<Utc>) {
        let model = self.model(&payload.cqrs_id);
        model.outcomes[outcome_index(outcome)].increment(1);
        if changed(outcome)
            && let Some(updated) = payload
                .instance_data
                .get("cqrs_updated")
                .and_then(|value| value.as_str())
                .and_then(|text| parse_timestamp(text).ok())
        {
            let lag = (now - updated.with_timezone(&Utc))
                .to_std()
                .unwrap_or(Duration::ZERO);
            model.lag.record(lag.as_secs_f64());
        }
    }

    /// A broadcast SYNC ignored before it reached a worker.
    pub(crate) fn ignored(&self, cqrs_id: &str) {
        self.model(cqrs_id).outcomes[outcome_index(Applied::Ignored)].increment(1);
    }

    /// A failed message republished for another try.
    pub(crate) fn retried(&self, cqrs_id: &str) {
        self.model(cqrs_id).retried.increment(1);
    }

    /// A message published to the dead-letter queue.
    pub(crate) fn dead_lettered(&self, cqrs_id: &str, reason: DeadReason) {
        let index = match reason {
            DeadReason::Failed => 0,
            DeadReason::Rejected(Rejection::Malformed) => 1,
            DeadReason::Rejected(Rejection::Unknown) => 2,
            DeadReason::Rejected(Rejection::Expired) => 3,
            DeadReason::Rejected(Rejection::NotSelected) => 4,
        };
        self.model(cqrs_id).dead_lettered[index].increment(1);
    }

    /// A batch applied in `elapsed`.
    pub(crate) fn batch(&self, size: usize, elapsed: Duration) {
        self.process_duration.record(elapsed.as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // batch sizes are far below 2^52
        self.batch_size.record(size as f64);
    }

    /// A batch tried again after a conflict (`true`) or an unavailable database.
    pub(crate) fn batch_retry(&self, conflict: bool) {
        if conflict {
            self.conflict_retries.increment(1);
        } else {
            self.unavailable_retries.increment(1);
        }
    }

    /// A batch tried again after one of its statements timed out.
    pub(crate) fn batch_retry_after_timeout(&self) {
        self.timeout_retries.increment(1);
    }

    /// The delay queue now holds `len` messages.
    pub(crate) fn delay_queue(&self, len: usize) {
        #[allow(clippy::cast_precision_loss)] // the delay queue is bounded far below 2^52
        self.delay_queue.set(len as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{Key, KeyName, Metadata, Recorder, SharedString, Unit};

    use super::*;

    /// One registered counter: its name, its labels and its value.
    type Registered = (String, Vec<(String, String)>, Arc<AtomicU64>);

    /// Keeps every counter registered.
    #[derive(Default)]
    struct Capture(Mutex<Vec<Registered>>);

    impl Capture {
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
            let counters = self.0.lock().unwrap();
            counters
                .iter()
                .find(|(n, l, _)| {
                    n == name
                        && labels
                            .iter()
                            .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
                })
                .map(|(_, _, value)| value.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let value = Arc::new(AtomicU64::new(0));
            let labels = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            self.0
                .lock()
                .unwrap()
                .push((key.name().to_owned(), labels, Arc::clone(&value)));
            Counter::from_arc(value)
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_message_of_a_model_not_selected_counts_as_dead_lettered_with_its_reason() {
        let capture = Capture::default();
        let meters = metrics::with_local_recorder(&capture, || {
            Meters::new("q", &["author".to_owned(), "book".to_owned()])
        });
        meters.dead_lettered("book", DeadReason::Rejected(Rejection::NotSelected));
        assert_eq!(
            capture.value(
                DEAD_LETTERED,
                &[(CQRS_ID, "book"), (REASON, "not_selected")]
            ),
            Some(1)
        );
        assert_eq!(
            capture.value(DEAD_LETTERED, &[(CQRS_ID, "book"), (REASON, "unknown")]),
            Some(0)
        );
    }

    #[test]
    fn a_batch_retried_after_a_timeout_counts_with_the_reason_timeout() {
        let capture = Capture::default();
        let meters =
            metrics::with_local_recorder(&capture, || Meters::new("q", &["author".to_owned()]));
        meters.batch_retry_after_timeout();
        meters.batch_retry_after_timeout();
        assert_eq!(
            capture.value(BATCH_RETRIES, &[(DESTINATION, "q"), (REASON, "timeout")]),
            Some(2)
        );
        assert_eq!(
            capture.value(BATCH_RETRIES, &[(DESTINATION, "q"), (REASON, "conflict")]),
            Some(0)
        );
    }
}
