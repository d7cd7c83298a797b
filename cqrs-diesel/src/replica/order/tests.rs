use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use super::*;

fn msg(signal: SignalType, revision: i64, updated_us: i64) -> Message {
    Message {
        signal,
        revision,
        updated_us,
        seq: None,
    }
}

fn save(revision: i64, updated_us: i64) -> Message {
    msg(SignalType::Save, revision, updated_us)
}

fn sync(revision: i64, updated_us: i64) -> Message {
    msg(SignalType::Sync, revision, updated_us)
}

fn delete(revision: i64, updated_us: i64) -> Message {
    msg(SignalType::Delete, revision, updated_us)
}

fn with_seq(message: Message, seq: i64) -> Message {
    Message {
        seq: Some(seq),
        ..message
    }
}

/// What the row ends as: the last applied message's signal, revision and time.
fn outcome(stored: Stored) -> Option<(bool, i64, i64)> {
    match stored {
        Stored::State(state) => Some((state.deleted, state.revision, state.updated_us)),
        Stored::Nothing | Stored::LegacyRow { .. } => None,
    }
}

fn as_applied(message: Message) -> Option<(bool, i64, i64)> {
    Some((
        message.signal == SignalType::Delete,
        message.revision,
        message.updated_us,
    ))
}

fn replay(messages: &[Message]) -> Stored {
    fold(Stored::Nothing, messages.iter().copied()).end
}

#[test]
fn within_a_life_the_revision_decides_whatever_the_clocks_say() {
    // Host A renames at revision 1; host B, 2 s behind, renames again at revision 2.
    let history = [save(0, 10_000_000), save(1, 11_000_000), save(2, 9_500_000)];
    assert_eq!(outcome(replay(&history)), as_applied(history[2]));
    // And in the other order of arrival the later revision still wins.
    let reordered = [history[0], history[2], history[1]];
    assert_eq!(outcome(replay(&reordered)), as_applied(history[2]));
}

#[test]
fn equal_stamps_within_a_life_fall_to_the_revision() {
    let history = [save(0, 5), save(1, 5), save(2, 5)];
    let reordered = [history[2], history[0], history[1]];
    assert_eq!(outcome(replay(&reordered)), as_applied(history[2]));
}

#[test]
fn a_row_deleted_and_created_again_in_one_batch_is_kept() {
    let history = [
        save(0, 1_000),
        save(5, 2_000),
        delete(6, 3_000),
        save(0, 4_000),
    ];
    let folded = fold(Stored::Nothing, history);
    assert_eq!(folded.winner, Some(3));
    assert_eq!(outcome(folded.end), as_applied(history[3]));
}

#[test]
fn a_late_save_of_an_earlier_life_does_not_resurrect_the_row() {
    let history = [
        save(0, 1_000),
        save(5, 2_000),
        delete(6, 3_000),
        save(0, 4_000),
        delete(1, 5_000),
        save(5, 2_000), // a late copy of the first life's r5
    ];
    let folded = fold(Stored::Nothing, history);
    assert_eq!(folded.verdicts[5], Verdict::Tombstoned);
    assert_eq!(outcome(folded.end), as_applied(history[4]));
}

#[test]
fn a_late_save_of_an_earlier_life_does_not_overwrite_the_next_life() {
    // The second life is at revision 1; a late copy of the first life's revision 5 arrives.
    let history = [
        save(0, 1_000),
        save(5, 2_000),
        delete(6, 3_000),
        save(0, 4_000),
        save(1, 4_500),
        save(5, 2_000),
        delete(6, 3_000),
    ];
    let folded = fold(Stored::Nothing, history);
    assert_eq!(folded.verdicts[5], Verdict::Old);
    assert_eq!(folded.verdicts[6], Verdict::Old);
    assert_eq!(outcome(folded.end), as_applied(history[4]));
}

#[test]
fn a_sync_of_the_stored_state_is_applied_again() {
    let stored = Stored::State(after(save(3, 10), Stored::Nothing));
    assert_eq!(decide(sync(3, 10), stored), Verdict::Apply);
    assert_eq!(decide(save(3, 10), stored), Verdict::Duplicate);
}

#[test]
fn a_sync_below_the_stored_revision_is_old_whatever_its_time() {
    let stored = Stored::State(after(save(3, 10), Stored::Nothing));
    assert_eq!(decide(sync(2, 1_000_000), stored), Verdict::Old);
    assert_eq!(decide(save(2, 1_000_000), stored), Verdict::Old);
}

#[test]
fn an_older_message_after_a_delete_is_tombstoned() {
    let stored = Stored::State(after(delete(3, 10), Stored::Nothing));
    assert_eq!(decide(save(2, 9), stored), Verdict::Tombstoned);
    assert_eq!(decide(sync(2, 9), stored), Verdict::Tombstoned);
    assert_eq!(decide(delete(3, 10), stored), Verdict::Duplicate);
    assert_eq!(decide(save(0, 11), stored), Verdict::Apply);
}

#[test]
fn an_upgraded_replica_row_decides_by_revision() {
    let stored = Stored::LegacyRow { revision: 4 };
    assert_eq!(decide(save(3, 1), stored), Verdict::Old);
    assert_eq!(decide(save(4, 1), stored), Verdict::Duplicate);
    assert_eq!(decide(save(5, 1), stored), Verdict::Apply);
    assert_eq!(decide(sync(2, 1), stored), Verdict::Apply);
}

#[test]
fn a_state_kept_by_an_older_replica_decides_by_the_new_rule() {
    // States written before this version have neither sequence nor floor: a live one is
    // ordered by revision, a tombstone by time, as for a django-cqrs master.
    let live = Stored::State(State {
        revision: 4,
        updated_us: 100,
        deleted: false,
        seq: None,
        floor_us: None,
    });
    assert_eq!(decide(with_seq(save(5, 50), 9), live), Verdict::Apply);
    assert_eq!(decide(with_seq(save(3, 500), 9), live), Verdict::Old);
}

#[test]
fn the_outbox_sequence_decides_when_both_carry_it() {
    // A cqrs-diesel master whose clock stepped back between a delete and the re-create.
    let history = [
        with_seq(save(0, 1_000), 1),
        with_seq(save(1, 2_000), 2),
        with_seq(delete(2, 3_000), 3),
        with_seq(save(0, 500), 4),
    ];
    assert_eq!(outcome(replay(&history)), as_applied(history[3]));
    // Arriving before its DELETE, the re-create still wins, and the DELETE is then old.
    let folded = fold(
        Stored::Nothing,
        [history[0], history[1], history[3], history[2]],
    );
    assert_eq!(folded.verdicts[3], Verdict::Old);
    assert_eq!(outcome(folded.end), as_applied(history[3]));
}

/// The documented limit (docs/DESIGN.md, case A): without a sequence, a re-create stamped at
/// or before the DELETE that preceded it (the re-creating host's clock is behind the deleting
/// one's by more than the time between them) is taken for a message of the deleted life, until
/// a write of the new life stamped after the DELETE.
#[test]
fn limit_a_recreate_stamped_before_its_delete_waits_for_a_later_stamp() {
    let history = [save(0, 1_000), delete(1, 3_000), save(0, 2_500)];
    let folded = fold(Stored::Nothing, history);
    assert_eq!(folded.verdicts[2], Verdict::Tombstoned);
    let next = fold(folded.end, [save(1, 3_100)]);
    assert_eq!(outcome(next.end), as_applied(save(1, 3_100)));
}

/// The documented limit (docs/DESIGN.md, case C): without a sequence, messages of a new life
/// that reach the replica before the DELETE that ended the previous one are ordered by
/// revision against the old life; the DELETE, arriving last, removes the row until the new
/// life's next write.
#[test]
fn limit_a_recreate_that_overtakes_its_delete_waits_for_the_next_write() {
    let history = [
        save(0, 1_000),
        save(3, 2_000),
        save(0, 4_000),
        delete(4, 3_000),
    ];
    let folded = fold(Stored::Nothing, history);
    assert_eq!(folded.verdicts[2], Verdict::Old);
    assert_eq!(folded.verdicts[3], Verdict::Apply);
    let next = fold(folded.end, [save(1, 4_100)]);
    assert_eq!(outcome(next.end), as_applied(save(1, 4_100)));
}

// ---- generated histories -------------------------------------------------------------------

/// One key's history as a master writes it, in commit order.
#[derive(Debug, Clone)]
struct History {
    messages: Vec<Message>,
}

/// A django-cqrs master on up to three hosts whose clocks are up to `skew` apart: within a
/// life the stamps of consecutive writes may be equal, backwards or far apart (a host behind,
/// a stamp taken before the row lock); at a DELETE the stamps are in real order (the skew at
/// a delete is smaller than the time between the delete and its neighbours: outside that,
/// docs/DESIGN.md's case A or B). SYNCs repeat the stored revision and stamp.
fn django_history() -> impl Strategy<Value = History> {
    let write = (0usize..3, 0i64..3_000_000, 0u8..10);
    let life = prop::collection::vec(write, 1..7);
    (
        prop::collection::vec(-2_000_000i64..2_000_000, 3),
        prop::collection::vec(life, 1..4),
    )
        .prop_map(|(skews, lives)| {
            let mut messages = Vec::new();
            let mut real = 1_000_000_000i64;
            let last_life = lives.len() - 1;
            for (n, life) in lives.into_iter().enumerate() {
                let floor = messages.last().map_or(i64::MIN, |m: &Message| m.updated_us);
                let mut revision = 0;
                let mut highest = floor;
                let mut stored_stamp = 0;
                for (i, (host, step, kind)) in life.into_iter().enumerate() {
                    // Sometimes no time passes at all: equal stamps on one host.
                    real += if kind < 2 { 0 } else { step };
                    let stamp = (real + skews[host]).max(floor + 1);
                    if i > 0 && kind == 9 {
                        messages.push(sync(revision, stored_stamp));
                        continue;
                    }
                    if i > 0 {
                        revision += 1;
                    }
                    stored_stamp = stamp;
                    highest = highest.max(stamp);
                    messages.push(save(revision, stamp));
                }
                if n < last_life {
                    real += 1;
                    messages.push(delete(revision + 1, highest + 1 + real % 1_000));
                }
            }
            History { messages }
        })
}

/// A cqrs-diesel master: the same lives, stamped by a clock that may go anywhere between
/// lives (equal, backwards, far ahead), each message with its outbox sequence number.
fn own_history() -> impl Strategy<Value = History> {
    let life = prop::collection::vec((0i64..4, any::<bool>()), 1..6);
    prop::collection::vec((life, 0i64..4), 1..4).prop_map(|lives| {
        let mut messages = Vec::new();
        let mut seq = 0;
        let last_life = lives.len() - 1;
        for (n, (life, clock)) in lives.into_iter().enumerate() {
            // The clock of this life: a few values, so equal and backwards times are common.
            let base = 1_000 + clock * 1_000;
            let mut stamp = base;
            let mut revision = -1;
            for (step, also_sync) in life {
                revision += 1;
                stamp += step; // our master never stamps a row backwards within a life
                seq += 1 + step;
                messages.push(with_seq(save(revision, stamp), seq));
                if also_sync {
                    seq += 1;
                    messages.push(with_seq(sync(revision, stamp), seq));
                }
            }
            if n < last_life {
                seq += 1;
                messages.push(with_seq(delete(revision + 1, stamp + 1), seq));
            }
        }
        History { messages }
    })
}

/// A delivery of `history`: every message at least once, some twice, each moved back by up to
/// eight places (late copies, retries, several consumers). With `deletes_on_time`, the first
/// copy of a DELETE is never overtaken by a later message (docs/DESIGN.md's case C).
fn delivery(
    history: impl Strategy<Value = History>,
    deletes_on_time: bool,
) -> impl Strategy<Value = (History, Vec<Message>)> {
    history.prop_flat_map(move |history| {
        let n = history.messages.len();
        (
            Just(history),
            prop::collection::vec((any::<bool>(), 0usize..8, 0usize..8), n),
        )
            .prop_map(move |(history, noise)| {
                let mut keyed: Vec<(usize, usize, Message)> = Vec::new();
                for (i, (&message, (twice, late, copy_late))) in
                    history.messages.iter().zip(noise).enumerate()
                {
                    let on_time = deletes_on_time && message.signal == SignalType::Delete;
                    let late = if on_time { 0 } else { late };
                    keyed.push((i * 10 + late * 10, i, message));
                    if twice {
                        keyed.push((i * 10 + 5 + copy_late * 10, i, message));
                    }
                }
                keyed.sort_by_key(|&(at, i, _)| (at, i));
                let delivered = keyed.into_iter().map(|(_, _, m)| m).collect();
                (history, delivered)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// A cqrs-diesel master's messages end at the master's last write, whatever the clocks,
    /// the copies and the order of arrival.
    #[test]
    fn with_the_outbox_sequence_the_replica_ends_at_the_last_write(
        (history, delivered) in delivery(own_history(), false)
    ) {
        let last = *history.messages.last().unwrap();
        prop_assert_eq!(outcome(replay(&delivered)), as_applied(last));
    }

    /// A django-cqrs master's messages end at its last write, whatever the skew within a
    /// life, the copies and the reordering, as long as DELETEs are not overtaken.
    #[test]
    fn with_skewed_clocks_the_replica_ends_at_the_last_write(
        (history, delivered) in delivery(django_history(), true)
    ) {
        let last = *history.messages.last().unwrap();
        prop_assert_eq!(outcome(replay(&delivered)), as_applied(last));
    }

    /// Batches change nothing: folding the delivery in pieces, each from the state the
    /// previous piece left, ends where folding it whole does.
    #[test]
    fn cutting_a_delivery_into_batches_changes_nothing(
        (_, delivered) in delivery(django_history(), false),
        cut in 1usize..6,
    ) {
        let whole = replay(&delivered);
        let mut stored = Stored::Nothing;
        for chunk in delivered.chunks(cut) {
            stored = fold(stored, chunk.iter().copied()).end;
        }
        prop_assert_eq!(stored, whole);
    }
}

/// Samples `count` values of `strategy` (deterministically seeded).
fn sample<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, count: usize) -> Vec<T> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// The generators reach the hard cases the properties are about, in a good share of cases.
#[test]
fn the_generators_reach_the_hard_cases() {
    let django = sample(delivery(django_history(), true), 1_000);
    let backwards = django
        .iter()
        .filter(|(h, _)| {
            h.messages.windows(2).any(|w| {
                w[0].signal == SignalType::Save
                    && w[1].signal == SignalType::Save
                    && w[1].revision > w[0].revision
                    && w[1].updated_us < w[0].updated_us
            })
        })
        .count();
    let equal = django
        .iter()
        .filter(|(h, _)| {
            h.messages
                .windows(2)
                .any(|w| w[1].revision > w[0].revision && w[1].updated_us == w[0].updated_us)
        })
        .count();
    let lives = django
        .iter()
        .filter(|(h, _)| h.messages.iter().any(|m| m.signal == SignalType::Delete))
        .count();
    let late_after_delete = django
        .iter()
        .filter(|(h, d)| {
            let deletes: Vec<usize> = d
                .iter()
                .enumerate()
                .filter(|(_, m)| m.signal == SignalType::Delete)
                .map(|(i, _)| i)
                .collect();
            deletes.iter().any(|&at| {
                d[at + 1..].iter().any(|m| {
                    m.signal == SignalType::Save
                        && m.updated_us < d[at].updated_us
                        && h.messages.contains(m)
                })
            })
        })
        .count();
    for (name, count) in [
        ("a later revision stamped earlier", backwards),
        ("two revisions stamped alike", equal),
        ("a delete and a new life", lives),
        ("a late copy after a delete", late_after_delete),
    ] {
        assert!(count >= 100, "{name}: {count} of 1000 histories");
    }

    let own = sample(delivery(own_history(), false), 1_000);
    let recreated_earlier = own
        .iter()
        .filter(|(h, _)| {
            h.messages
                .windows(2)
                .any(|w| w[0].signal == SignalType::Delete && w[1].updated_us <= w[0].updated_us)
        })
        .count();
    let overtaken_delete = own
        .iter()
        .filter(|(h, d)| {
            h.messages.windows(2).any(|w| {
                w[0].signal == SignalType::Delete
                    && d.iter().position(|m| *m == w[1]) < d.iter().position(|m| *m == w[0])
            })
        })
        .count();
    for (name, count) in [
        (
            "a re-create stamped at or before its delete",
            recreated_earlier,
        ),
        ("a re-create delivered before its delete", overtaken_delete),
    ] {
        assert!(count >= 100, "{name}: {count} of 1000 histories");
    }
}
