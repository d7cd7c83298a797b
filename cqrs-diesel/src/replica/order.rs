//! The one order in which a replica places the messages of one primary key, and the decisions
//! it implies: whether a message changes what the replica holds, and which message of a batch
//! decides a row.
//!
//! # The order
//!
//! A row has *lives*: it is created, updated, deleted, maybe created again. django-cqrs masters
//! start every life at revision 0 and stamp `cqrs_updated` with the clock of whichever host ran
//! the write, so revisions cannot order lives and times cannot order the writes of one life
//! (two hosts' clocks differ; a stamp is taken before the row lock). Hence:
//!
//! 1. **The outbox sequence decides when both sides carry it.** A cqrs-diesel master's relay
//!    sends each message with the id of its outbox entry (`x-cqrs-seq`). Writes of one row hold
//!    its lock while they insert their entry, so the ids of one row's messages rise in the order
//!    of the writes, across lives, whatever the clocks say. A message whose sequence is above the
//!    highest one applied to the row is later; below, earlier; equal, the same message.
//! 2. **Otherwise the revision decides within a life.** Between the row's live state and a
//!    message stamped after the DELETE that began the row's life (its *floor*), the higher
//!    revision wins; at an equal revision SAVE < SYNC < DELETE (a SYNC of the stored state
//!    rewrites values that drifted, a DELETE removes the row). Times are not compared.
//! 3. **Time only tells lives apart, at a DELETE.** A message stamped after a DELETE the replica
//!    applied belongs to a later life: it applies over the tombstone. A message stamped at or
//!    before it belongs to a life that DELETE ended: it changes nothing, neither the tombstone
//!    nor (through the floor the next life keeps) the row of a later life.
//!
//! The replica keeps per primary key the last message it applied, the highest sequence seen and
//! the floor (the replica state table), and applies a message when [`decide`] says so. The
//! messages of one batch are decided one after the other in the order received ([`fold`]), so
//! a batch does what the same messages applied one by one would do, and only the last one
//! applied is written.
//!
//! docs/DESIGN.md lists the conditions under which a message without a sequence can still be
//! misplaced, and the property tests below generate histories right up to them.

use cqrs_core::SignalType;

/// One message of a primary key, as far as its order is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message {
    /// SAVE, SYNC or DELETE.
    pub(crate) signal: SignalType,
    /// `cqrs_revision`.
    pub(crate) revision: i64,
    /// `cqrs_updated`, in microseconds since the Unix epoch.
    pub(crate) updated_us: i64,
    /// The master's outbox sequence number (`x-cqrs-seq`), when it sent one.
    pub(crate) seq: Option<i64>,
}

/// What the replica keeps for a primary key it has applied messages to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// The revision of the last message applied.
    pub(crate) revision: i64,
    /// Its `cqrs_updated`.
    pub(crate) updated_us: i64,
    /// Whether it was a DELETE (the state is then the row's tombstone).
    pub(crate) deleted: bool,
    /// The highest sequence number among the messages applied.
    pub(crate) seq: Option<i64>,
    /// For a live row: `cqrs_updated` of the DELETE applied before its life began.
    pub(crate) floor_us: Option<i64>,
}

/// What the replica holds for one primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Nothing is known of this key.
    Nothing,
    /// A row written before the replica kept states (an upgraded replica): only its revision
    /// is known, and it decides as the revision guard always did.
    LegacyRow { revision: i64 },
    /// What the replica applied.
    State(State),
}

/// What applying a message does, before any statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It comes after what is stored: write (or delete) the row.
    Apply,
    /// It is the message already applied.
    Duplicate,
    /// A later message of the live row is stored.
    Old,
    /// A later DELETE is stored: the row stays deleted.
    Tombstoned,
}

/// Whether `message` changes what is `stored` (see the module's documentation).
pub(crate) fn decide(message: Message, stored: Stored) -> Verdict {
    let state = match stored {
        Stored::Nothing => return Verdict::Apply,
        Stored::LegacyRow { revision } => {
            return match message.signal {
                SignalType::Save if message.revision == revision => Verdict::Duplicate,
                SignalType::Save if message.revision < revision => Verdict::Old,
                SignalType::Save | SignalType::Sync | SignalType::Delete => Verdict::Apply,
            };
        }
        Stored::State(state) => state,
    };
    let earlier = if state.deleted {
        Verdict::Tombstoned
    } else {
        Verdict::Old
    };

    // 1. The master's own sequence, when both sides have one.
    if let (Some(incoming), Some(applied)) = (message.seq, state.seq) {
        return match incoming.cmp(&applied) {
            std::cmp::Ordering::Greater => Verdict::Apply,
            std::cmp::Ordering::Equal if message.signal == SignalType::Sync && !state.deleted => {
                Verdict::Apply
            }
            std::cmp::Ordering::Equal => Verdict::Duplicate,
            std::cmp::Ordering::Less => earlier,
        };
    }

    // 3. A DELETE the replica applied separates lives by time.
    let floor = if state.deleted {
        Some(state.updated_us)
    } else {
        state.floor_us
    };
    if let Some(floor) = floor
        && message.updated_us <= floor
    {
        let same_delete = state.deleted
            && message.signal == SignalType::Delete
            && message.revision == state.revision
            && message.updated_us == state.updated_us;
        return if same_delete {
            Verdict::Duplicate
        } else {
            earlier
        };
    }
    if state.deleted {
        // Stamped after the tombstone: a later life.
        return Verdict::Apply;
    }

    // 2. The live row's life: the revision decides; at an equal one a SAVE is the stored
    // message again, a SYNC rewrites it, a DELETE removes it.
    match message.revision.cmp(&state.revision) {
        std::cmp::Ordering::Greater => Verdict::Apply,
        std::cmp::Ordering::Less => Verdict::Old,
        std::cmp::Ordering::Equal => match message.signal {
            SignalType::Save => Verdict::Duplicate,
            SignalType::Sync | SignalType::Delete => Verdict::Apply,
        },
    }
}

/// The state a key is in once `message` is applied over `stored`.
pub(crate) fn after(message: Message, stored: Stored) -> State {
    let (seq, floor_us) = match stored {
        Stored::Nothing | Stored::LegacyRow { .. } => (None, None),
        Stored::State(state) => (
            state.seq,
            if state.deleted {
                Some(state.updated_us)
            } else {
                state.floor_us
            },
        ),
    };
    let deleted = message.signal == SignalType::Delete;
    State {
        revision: message.revision,
        updated_us: message.updated_us,
        deleted,
        seq: seq.max(message.seq),
        // A tombstone is its own floor.
        floor_us: if deleted { None } else { floor_us },
    }
}

/// The messages of one key, decided one after the other over what was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Folded {
    /// Each message's verdict against the state the messages before it left.
    pub(crate) verdicts: Vec<Verdict>,
    /// The last message applied: the one whose effect the row ends with.
    pub(crate) winner: Option<usize>,
    /// The state the key ends in.
    pub(crate) end: Stored,
}

/// Decides `messages` (one key's, in the order received) one after the other, from `stored`.
pub(crate) fn fold(stored: Stored, messages: impl IntoIterator<Item = Message>) -> Folded {
    let mut end = stored;
    let mut winner = None;
    let mut verdicts = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let verdict = decide(message, end);
        if verdict == Verdict::Apply {
            end = Stored::State(after(message, end));
            winner = Some(i);
        }
        verdicts.push(verdict);
    }
    Folded {
        verdicts,
        winner,
        end,
    }
}

#[cfg(test)]
mod tests;
