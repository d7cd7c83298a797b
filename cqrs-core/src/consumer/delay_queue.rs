//! The in-process delay queue of failed messages waiting for their retry (docs/WIRE.md, "Failure
//! handling"): ordered by due time, bounded.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// Entries ordered by due time (first in, first out among equal times), with a capacity.
///
/// The queue does not enforce the capacity on its own: [`DelayQueue::push`] reports the entry
/// that must leave at once when the queue is over capacity, and the caller republishes it.
#[derive(Debug)]
pub(crate) struct DelayQueue<T> {
    entries: BTreeMap<(Instant, u64), T>,
    next_seq: u64,
    capacity: usize,
}

impl<T> DelayQueue<T> {
    /// An empty queue holding up to `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        DelayQueue {
            entries: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an entry due at `due`. When that puts the queue over its capacity, the entry with
    /// the earliest due time (possibly the new one) is taken out and returned: the reference
    /// requeues it at once.
    pub(crate) fn push(&mut self, due: Instant, entry: T) -> Option<T> {
        self.insert(due, entry);
        if self.entries.len() > self.capacity {
            self.pop_earliest()
        } else {
            None
        }
    }

    /// Adds an entry whatever the capacity: for an entry that could not leave when it should
    /// have (its republish failed). The queue can only grow this way by entries that hold an
    /// unacknowledged delivery each, so the consumer's prefetch still bounds it.
    pub(crate) fn insert(&mut self, due: Instant, entry: T) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.entries.insert((due, seq), entry);
    }

    /// When the earliest entry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(due, _)| *due)
    }

    /// Takes out the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? <= now {
            self.pop_earliest()
        } else {
            None
        }
    }

    /// Takes out the earliest entry, due or not.
    pub(crate) fn pop_earliest(&mut self) -> Option<T> {
        self.entries.pop_first().map(|(_, entry)| entry)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_leave_in_due_order_and_only_when_due() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut queue = DelayQueue::new(10);
        assert_eq!(queue.next_due(), None);
        queue.push(at(30), "c");
        queue.push(at(10), "a");
        queue.push(at(20), "b1");
        queue.push(at(20), "b2");
        assert_eq!(queue.len(), 4);
        assert_eq!(queue.next_due(), Some(at(10)));
        assert_eq!(queue.pop_due(at(5)), None);
        assert_eq!(queue.pop_due(at(25)), Some("a"));
        assert_eq!(
            queue.pop_due(at(25)),
            Some("b1"),
            "equal times: first in, first out"
        );
        assert_eq!(queue.pop_due(at(25)), Some("b2"));
        assert_eq!(queue.pop_due(at(25)), None);
        assert_eq!(queue.pop_earliest(), Some("c"));
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_full_queue_gives_up_its_earliest_entry() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut queue = DelayQueue::new(2);
        assert_eq!(queue.push(at(20), "second"), None);
        assert_eq!(queue.push(at(30), "third"), None);
        assert_eq!(
            queue.push(at(10), "first"),
            Some("first"),
            "the new one is earliest"
        );
        assert_eq!(queue.push(at(40), "fourth"), Some("second"));
        assert_eq!(queue.len(), 2);
        queue.insert(at(5), "forced");
        assert_eq!(queue.len(), 3, "insert ignores the capacity");
        assert_eq!(queue.pop_earliest(), Some("forced"));
    }
}
