//! The one order in which a replica ranks the messages of one primary key, and the decisions
//! it implies: which message of a batch decides a row, and whether that message changes what
//! the replica holds.
//!
//! # The order
//!
//! A message's rank is `(cqrs_updated, cqrs_revision)`, compared in that order, then by signal
//! (SAVE < SYNC < DELETE) when both are equal:
//!
//! - **Lives are ordered by time.** A row deleted and created again starts a new life, and
//!   django-cqrs masters start it again at revision 0: only `cqrs_updated` can tell that the
//!   new life's SAVE r0 comes after the old life's DELETE r6. A DELETE carries the time of the
//!   delete, after every write of the life it ends; the next life's writes come after it.
//! - **Within a life, time and revision rise together** on a master whose `cqrs_updated` never
//!   goes backwards for one row (this project's master guarantees it; see docs/DESIGN.md for
//!   django-cqrs masters); equal times fall back to the revision.
//! - **Signals break exact ties** so that the order is total: a SYNC of the same state as a
//!   SAVE repairs the row, a DELETE at the same rank as a live row removes it.
//!
//! The replica keeps, per primary key, the rank of the last message it applied and whether that
//! was a DELETE (the replica state table). A message is applied when it ranks above that state
//! (a SYNC also at an equal rank, to rewrite values that drifted); otherwise it changes
//! nothing. The final state is therefore that of the highest-ranked message delivered, whatever
//! the duplication, reordering and batching: a late copy of any earlier message ranks below
//! the state it would overwrite.

use std::cmp::Ordering;

use cqrs_core::SignalType;

/// Where a message, or the state a replica keeps, stands in the order of one primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Rank {
    /// `cqrs_updated`, in microseconds since the Unix epoch (0 when the message had none).
    pub(crate) updated_us: i64,
    /// `cqrs_revision`.
    pub(crate) revision: i64,
}

/// What the replica holds for one primary key: the rank of the last message applied, and
/// whether it deleted the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Nothing is known of this key.
    Nothing,
    /// A row written before the replica kept states (an upgraded replica): only its revision
    /// is known, and it decides as the revision guard always did.
    LegacyRow { revision: i64 },
    /// The last message applied: a live row, or a DELETE's tombstone.
    State { rank: Rank, deleted: bool },
}

/// What applying a message does, before any statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It ranks above what is stored: write (or delete) the row.
    Apply,
    /// It is the state already stored.
    Duplicate,
    /// A live row of a higher rank is stored.
    Old,
    /// A DELETE of a higher rank is stored: the row stays deleted.
    Tombstoned,
}

fn signal_weight(signal: SignalType) -> u8 {
    match signal {
        SignalType::Save => 0,
        SignalType::Sync => 1,
        SignalType::Delete => 2,
    }
}

/// The total order of two messages of one primary key.
pub(crate) fn compare(a: (Rank, SignalType), b: (Rank, SignalType)) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| signal_weight(a.1).cmp(&signal_weight(b.1)))
}

/// Whether a message (`signal` at `rank`) changes what is `stored`.
pub(crate) fn decide(signal: SignalType, rank: Rank, stored: Stored) -> Verdict {
    match stored {
        Stored::Nothing => Verdict::Apply,
        Stored::LegacyRow { revision } => match signal {
            SignalType::Save if rank.revision == revision => Verdict::Duplicate,
            SignalType::Save if rank.revision < revision => Verdict::Old,
            SignalType::Save | SignalType::Sync | SignalType::Delete => Verdict::Apply,
        },
        Stored::State {
            rank: stored_rank,
            deleted,
        } => {
            // The stored state's signal, for the tie-break: a DELETE's, or at most a SYNC's.
            let stored_signal = if deleted {
                SignalType::Delete
            } else {
                SignalType::Sync
            };
            match compare((rank, signal), (stored_rank, stored_signal)) {
                Ordering::Greater => Verdict::Apply,
                Ordering::Equal if signal == SignalType::Sync => Verdict::Apply,
                Ordering::Equal => Verdict::Duplicate,
                Ordering::Less if deleted => Verdict::Tombstoned,
                Ordering::Less if rank == stored_rank => Verdict::Duplicate,
                Ordering::Less => Verdict::Old,
            }
        }
    }
}

/// The index of the message that decides the row among `messages` (the highest ranked; the
/// first of equals).
pub(crate) fn winner(
    messages: impl IntoIterator<Item = (usize, Rank, SignalType)>,
) -> Option<usize> {
    let mut best: Option<(usize, Rank, SignalType)> = None;
    for (i, rank, signal) in messages {
        match best {
            Some((_, best_rank, best_signal))
                if compare((rank, signal), (best_rank, best_signal)) != Ordering::Greater => {}
            _ => best = Some((i, rank, signal)),
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The state a replica keeps after applying `signal` at `rank`.
    fn after(signal: SignalType, rank: Rank) -> Stored {
        Stored::State {
            rank,
            deleted: signal == SignalType::Delete,
        }
    }

    fn rank(updated_us: i64, revision: i64) -> Rank {
        Rank {
            updated_us,
            revision,
        }
    }

    /// Folds `deliveries` into a state, in batches: per batch the winner, then the verdict.
    fn replay(deliveries: &[(Rank, SignalType)], batch: usize) -> Stored {
        let mut stored = Stored::Nothing;
        for chunk in deliveries.chunks(batch.max(1)) {
            let Some(w) = winner(chunk.iter().enumerate().map(|(i, (r, s))| (i, *r, *s))) else {
                continue;
            };
            let (rank, signal) = chunk[w];
            if decide(signal, rank, stored) == Verdict::Apply {
                stored = after(signal, rank);
            }
        }
        stored
    }

    #[test]
    fn a_row_deleted_and_created_again_in_one_batch_is_kept() {
        // SAVE r0, SAVE r5, DELETE r6, then the new life's SAVE r0, 1 ms later.
        let history = [
            (rank(1_000, 0), SignalType::Save),
            (rank(2_000, 5), SignalType::Save),
            (rank(3_000, 6), SignalType::Delete),
            (rank(4_000, 0), SignalType::Save),
        ];
        let stored = replay(&history, 100);
        assert_eq!(stored, after(SignalType::Save, rank(4_000, 0)));
    }

    #[test]
    fn a_late_save_of_an_earlier_life_does_not_resurrect_the_row() {
        let history = [
            (rank(1_000, 0), SignalType::Save),
            (rank(2_000, 5), SignalType::Save),
            (rank(3_000, 6), SignalType::Delete),
            (rank(4_000, 0), SignalType::Save),
            (rank(5_000, 1), SignalType::Delete),
            (rank(2_000, 5), SignalType::Save), // a late copy of the first life's r5
        ];
        for batch in 1..=history.len() {
            let stored = replay(&history, batch);
            assert_eq!(
                stored,
                after(SignalType::Delete, rank(5_000, 1)),
                "batch {batch}"
            );
        }
    }

    #[test]
    fn a_sync_of_the_stored_state_is_applied_again() {
        let stored = after(SignalType::Save, rank(10, 3));
        assert_eq!(
            decide(SignalType::Sync, rank(10, 3), stored),
            Verdict::Apply
        );
        assert_eq!(
            decide(SignalType::Save, rank(10, 3), stored),
            Verdict::Duplicate
        );
        assert_eq!(decide(SignalType::Save, rank(9, 4), stored), Verdict::Old);
    }

    #[test]
    fn an_older_message_after_a_delete_is_tombstoned() {
        let stored = after(SignalType::Delete, rank(10, 3));
        assert_eq!(
            decide(SignalType::Save, rank(9, 2), stored),
            Verdict::Tombstoned
        );
        assert_eq!(
            decide(SignalType::Sync, rank(9, 2), stored),
            Verdict::Tombstoned
        );
        assert_eq!(
            decide(SignalType::Delete, rank(10, 3), stored),
            Verdict::Duplicate
        );
        assert_eq!(
            decide(SignalType::Save, rank(11, 0), stored),
            Verdict::Apply
        );
    }

    #[test]
    fn an_upgraded_replica_row_decides_by_revision() {
        let stored = Stored::LegacyRow { revision: 4 };
        assert_eq!(decide(SignalType::Save, rank(1, 3), stored), Verdict::Old);
        assert_eq!(
            decide(SignalType::Save, rank(1, 4), stored),
            Verdict::Duplicate
        );
        assert_eq!(decide(SignalType::Save, rank(1, 5), stored), Verdict::Apply);
        assert_eq!(decide(SignalType::Sync, rank(1, 2), stored), Verdict::Apply);
    }

    type Messages = Vec<(Rank, SignalType)>;

    /// One key's history as a master writes it: lives of SAVEs with rising revisions, each
    /// but maybe the last ended by a DELETE at revision + 1, time rising throughout.
    fn history() -> impl Strategy<Value = Vec<(Rank, SignalType)>> {
        prop::collection::vec((1usize..6, any::<bool>(), 1i64..1_000_000), 1..5).prop_map(|lives| {
            let mut out = Vec::new();
            let mut now = 1_000_000_000i64;
            let last = lives.len() - 1;
            for (n, (saves, sync, step)) in lives.into_iter().enumerate() {
                for revision in 0..saves as i64 {
                    now += step;
                    out.push((rank(now, revision), SignalType::Save));
                    if sync && revision == 0 {
                        out.push((rank(now, revision), SignalType::Sync));
                    }
                }
                if n < last {
                    now += step;
                    out.push((rank(now, saves as i64), SignalType::Delete));
                }
            }
            out
        })
    }

    /// A delivery of `history`: every message at least once, some twice, in an order where
    /// each message moves back by up to `displacement` places (late copies and retries).
    fn delivery() -> impl Strategy<Value = (Messages, Messages, usize)> {
        history().prop_flat_map(|history| {
            let n = history.len();
            (
                Just(history),
                prop::collection::vec((any::<bool>(), 0usize..8), n),
                1usize..12,
            )
                .prop_map(|(history, noise, batch)| {
                    let mut keyed: Vec<(usize, (Rank, SignalType))> = Vec::new();
                    for (i, (&message, (twice, late))) in history.iter().zip(noise).enumerate() {
                        keyed.push((i * 10 + late * 10, message));
                        if twice {
                            keyed.push((i * 10 + 5, message));
                        }
                    }
                    keyed.sort_by_key(|(at, _)| *at);
                    let delivered = keyed.into_iter().map(|(_, m)| m).collect();
                    (history, delivered, batch)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The replica ends at the master's last message, whatever the duplication, reordering
        /// and batch boundaries.
        #[test]
        fn the_replica_ends_at_the_last_message((history, delivered, batch) in delivery()) {
            let (rank, signal) = *history.last().unwrap();
            let expected = after(signal, rank);
            prop_assert_eq!(replay(&delivered, batch), expected);
        }
    }
}
