//! What [`atomic`](crate::atomic) remembers about the saves in its transaction, so that
//! several saves of one row bump the revision once and publish once.
//!
//! The state is per connection, keyed by the connection's address (an async write may move
//! between threads at every await, so it cannot be per thread). It exists only while an
//! `atomic` block is running, so it can never outlive the transaction it describes.
//!
//! Beside it, the connections on which a write was abandoned inside its transaction (its future
//! dropped, or a panic): see [`abandon`].

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};

/// What the first save of a row inside an `atomic` block left behind.
#[derive(Debug, Clone)]
pub(crate) struct PriorSave {
    /// The outbox entry holding the row's message, rewritten by later saves.
    pub(crate) outbox_id: i64,
    /// The tracked fields' values from before the block, kept for later saves.
    pub(crate) previous_data: Option<Map<String, Value>>,
}

type Key = (&'static str, String);

/// The open `atomic` blocks, by connection.
static BLOCKS: Mutex<Option<HashMap<usize, HashMap<Key, PriorSave>>>> = Mutex::new(None);

/// Connections left inside a transaction by an abandoned write.
static ABANDONED: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

/// Runs `f` on the map behind `lock` (created on first use; a panic elsewhere while it was
/// held leaves it as it was, which is still consistent: every change is one call).
fn with<K, T>(lock: &Mutex<Option<K>>, f: impl FnOnce(&mut K) -> T) -> T
where
    K: Default,
{
    let mut guard: MutexGuard<'_, Option<K>> = match lock.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(guard.get_or_insert_with(K::default))
}

/// Records that a write on `connection` was abandoned inside its transaction or savepoint:
/// the connection still holds it open, and nothing the write did was committed. Writes on the
/// connection refuse to run inside that transaction ([`abandoned_inside`]); a pool discards such
/// a connection anyway (diesel-async's pools do not hand out a connection with an open
/// transaction).
pub(crate) fn abandon(connection: usize) {
    with(&ABANDONED, |set| set.insert(connection));
}

/// Whether a write on `connection`, whose transaction depth is `depth`, would run inside a
/// transaction an abandoned write left open (see [`abandon`]). A mark stands only while the
/// connection is inside a transaction: at depth 0 that transaction is closed (the application
/// rolled it back), or the address belongs to another connection now (a pool dropped the
/// marked one and a new one was allocated there), so the mark is forgotten and the write runs.
pub(crate) fn abandoned_inside(connection: usize, depth: u32) -> bool {
    with(&ABANDONED, |set| {
        if depth > 0 {
            set.contains(&connection)
        } else {
            set.remove(&connection);
            false
        }
    })
}

/// Marks the outermost `atomic` block on one connection; dropping it forgets the block.
pub(crate) struct BlockGuard {
    connection: usize,
    owner: bool,
}

impl BlockGuard {
    /// Enters a block on `connection` (its address). Nested blocks share the outer one's state.
    pub(crate) fn enter(connection: usize) -> BlockGuard {
        let owner = with(&BLOCKS, |blocks| match blocks.entry(connection) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(HashMap::new());
                true
            }
        });
        BlockGuard { connection, owner }
    }

    /// Whether this guard opened the outermost block (and its commit is the real one).
    pub(crate) fn is_owner(&self) -> bool {
        self.owner
    }
}

impl Drop for BlockGuard {
    fn drop(&mut self) {
        if self.owner {
            with(&BLOCKS, |blocks| blocks.remove(&self.connection));
        }
    }
}

/// Whether an `atomic` block is open on `connection`.
pub(crate) fn in_block(connection: usize) -> bool {
    with(&BLOCKS, |blocks| blocks.contains_key(&connection))
}

/// The prior save of `(cqrs_id, pk)` in the block open on `connection`, if any.
pub(crate) fn prior(connection: usize, cqrs_id: &'static str, pk: &str) -> Option<PriorSave> {
    with(&BLOCKS, |blocks| {
        blocks
            .get(&connection)?
            .get(&(cqrs_id, pk.to_owned()))
            .cloned()
    })
}

/// Records a save of `(cqrs_id, pk)` in the block open on `connection` (no-op outside blocks).
pub(crate) fn record(connection: usize, cqrs_id: &'static str, pk: String, save: PriorSave) {
    with(&BLOCKS, |blocks| {
        if let Some(block) = blocks.get_mut(&connection) {
            block.insert((cqrs_id, pk), save);
        }
    });
}

/// Forgets `(cqrs_id, pk)` in the block open on `connection` (after a delete).
pub(crate) fn forget(connection: usize, cqrs_id: &'static str, pk: &str) {
    with(&BLOCKS, |blocks| {
        if let Some(block) = blocks.get_mut(&connection) {
            block.remove(&(cqrs_id, pk.to_owned()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(id: i64) -> PriorSave {
        PriorSave {
            outbox_id: id,
            previous_data: None,
        }
    }

    #[test]
    fn state_exists_only_inside_the_outermost_block() {
        // Addresses no real connection has (they are aligned), so that tests running at the
        // same time in this process never share one.
        assert!(!in_block(1));
        record(1, "a", "1".into(), save(7));
        assert!(
            prior(1, "a", "1").is_none(),
            "outside a block nothing is kept"
        );
        {
            let outer = BlockGuard::enter(1);
            assert!(outer.is_owner());
            record(1, "a", "1".into(), save(7));
            {
                let inner = BlockGuard::enter(1);
                assert!(!inner.is_owner());
            }
            assert_eq!(prior(1, "a", "1").map(|p| p.outbox_id), Some(7));
            assert!(
                prior(2, "a", "1").is_none(),
                "other connections are separate"
            );
            forget(1, "a", "1");
            assert!(prior(1, "a", "1").is_none());
            record(1, "a", "1".into(), save(8));
        }
        assert!(!in_block(1));
        let _again = BlockGuard::enter(1);
        assert!(prior(1, "a", "1").is_none(), "a new block starts empty");
    }

    #[test]
    fn a_mark_stands_only_while_the_connection_is_inside_a_transaction() {
        // Addresses of their own (see above).
        assert!(!abandoned_inside(3, 1));
        abandon(3);
        assert!(abandoned_inside(3, 1));
        assert!(
            abandoned_inside(3, 2),
            "the mark stands at any depth above 0"
        );
        assert!(!abandoned_inside(5, 1), "other connections are not marked");
        assert!(!abandoned_inside(3, 0), "at depth 0 the mark is stale");
        assert!(
            !abandoned_inside(3, 1),
            "a stale mark is forgotten: a later transaction on the address is not refused"
        );
    }
}
