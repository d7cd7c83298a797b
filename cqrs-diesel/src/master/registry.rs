//! What [`atomic`](crate::atomic) remembers about the saves in its transaction, so that
//! several saves of one row bump the revision once and publish once.
//!
//! The state is per thread and per connection (Diesel connections are used by one thread at a
//! time, and the transaction closure runs on the caller's thread). It exists only while an
//! `atomic` block is running, so it can never outlive the transaction it describes.

use std::cell::RefCell;
use std::collections::HashMap;

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

thread_local! {
    static BLOCKS: RefCell<HashMap<usize, HashMap<Key, PriorSave>>> = RefCell::new(HashMap::new());
}

/// Marks the outermost `atomic` block on one connection; dropping it forgets the block.
pub(crate) struct BlockGuard {
    connection: usize,
    owner: bool,
}

impl BlockGuard {
    /// Enters a block on `connection` (its address). Nested blocks share the outer one's state.
    pub(crate) fn enter(connection: usize) -> BlockGuard {
        let owner = BLOCKS.with(|blocks| match blocks.borrow_mut().entry(connection) {
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
            BLOCKS.with(|blocks| blocks.borrow_mut().remove(&self.connection));
        }
    }
}

/// Whether an `atomic` block is open on `connection`.
pub(crate) fn in_block(connection: usize) -> bool {
    BLOCKS.with(|blocks| blocks.borrow().contains_key(&connection))
}

/// The prior save of `(cqrs_id, pk)` in the block open on `connection`, if any.
pub(crate) fn prior(connection: usize, cqrs_id: &'static str, pk: &str) -> Option<PriorSave> {
    BLOCKS.with(|blocks| {
        blocks
            .borrow()
            .get(&connection)?
            .get(&(cqrs_id, pk.to_owned()))
            .cloned()
    })
}

/// Records a save of `(cqrs_id, pk)` in the block open on `connection` (no-op outside blocks).
pub(crate) fn record(connection: usize, cqrs_id: &'static str, pk: String, save: PriorSave) {
    BLOCKS.with(|blocks| {
        if let Some(block) = blocks.borrow_mut().get_mut(&connection) {
            block.insert((cqrs_id, pk), save);
        }
    });
}

/// Forgets `(cqrs_id, pk)` in the block open on `connection` (after a delete).
pub(crate) fn forget(connection: usize, cqrs_id: &'static str, pk: &str) {
    BLOCKS.with(|blocks| {
        if let Some(block) = blocks.borrow_mut().get_mut(&connection) {
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
}
