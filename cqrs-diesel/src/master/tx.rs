//! The transactions of master writes: opened and ended around a write, run again after a
//! conflict, and marked when a write is abandoned inside one (see `docs/DESIGN.md`,
//! "Cancellation").

use super::registry::{self, BlockGuard};
use crate::error::{Error, Result};
use crate::exec::Exec;
use crate::outbox;

/// How many times a write that owns its transaction runs again after a conflict.
pub(crate) const CONFLICT_RETRIES: u32 = 5;

/// The connection's identity while it lives: its address.
pub(crate) fn connection_key<C>(conn: &mut C) -> usize {
    std::ptr::from_mut(conn) as usize
}

/// A transaction (or a savepoint of the caller's) that a write opened. Dropped before
/// [`end`](Tx::end), because the write's future was dropped at an await or the write panicked,
/// it marks the connection as holding an abandoned transaction ([`registry::abandon`]), so
/// that no later write runs inside it.
pub(crate) struct Tx {
    key: usize,
    /// Whether this is the connection's top-level transaction (no caller's transaction).
    pub(crate) owned: bool,
    open: bool,
}

impl Tx {
    /// Opens a write transaction, or a savepoint when one is open. Refuses to run inside a
    /// transaction an abandoned write left open, or on a connection whose transaction state is
    /// unknown. A mark of an abandoned write on a connection outside any transaction is stale
    /// and forgotten ([`registry::abandoned_inside`]).
    pub(crate) async fn begin<E: Exec>(conn: &mut E) -> Result<Tx> {
        let key = connection_key(conn);
        let depth = conn.depth();
        if registry::abandoned_inside(key, depth) {
            return Err(Error::AbandonedTransaction);
        }
        if depth == 0 && conn.broken() {
            return Err(Error::BrokenConnection);
        }
        conn.begin().await?;
        Ok(Tx {
            key,
            owned: depth == 0,
            open: true,
        })
    }

    /// Commits when `result` is a success, rolls back otherwise; returns `result`, or the
    /// commit's error.
    pub(crate) async fn end<E, T, Err>(
        mut self,
        conn: &mut E,
        result: std::result::Result<T, Err>,
    ) -> std::result::Result<T, Err>
    where
        E: Exec,
        Err: From<Error>,
    {
        let outcome = match result {
            Ok(value) => conn
                .commit()
                .await
                .map(|()| value)
                .map_err(|error| Err::from(Error::from(error))),
            Err(error) => {
                if let Err(rollback) = conn.rollback().await {
                    tracing::warn!(%rollback, "rolling back a failed write failed");
                }
                Err(error)
            }
        };
        self.open = false;
        outcome
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            registry::abandon(self.key);
            tracing::warn!(
                "a write was abandoned inside its transaction; nothing of it was committed, \
                 and the connection must be dropped or rolled back before the next write"
            );
        }
    }
}

/// Runs `$body` (an expression evaluated anew for each attempt, whose value is a future of
/// `Result<T>`) in a write transaction on `$conn`. When that transaction is the write's own
/// (no transaction was open) and the database aborted it for a conflict with a concurrent one
/// (a deadlock, a serialization failure, a lock timeout: [`Error::is_conflict`]), it runs
/// again, up to [`CONFLICT_RETRIES`] times, after a pause of a few milliseconds that grows
/// each time. Inside the caller's transaction it runs once: a conflict may have rolled back
/// more than this write (InnoDB rolls back the whole transaction), so only the caller can run
/// it again.
macro_rules! in_write_transaction {
    ($exec:ty, $conn:ident, $body:expr) => {{
        let mut attempt = 0_u32;
        loop {
            let tx = $crate::master::tx::Tx::begin(&mut *$conn).await?;
            let owned = tx.owned;
            let result = $body.await;
            match tx.end(&mut *$conn, result).await {
                Err(error)
                    if owned
                        && attempt < $crate::master::tx::CONFLICT_RETRIES
                        && error.is_conflict() =>
                {
                    attempt += 1;
                    tracing::debug!(
                        attempt,
                        %error,
                        "a write conflicted with a concurrent transaction; running it again"
                    );
                    <$exec as $crate::exec::Exec>::pause(std::time::Duration::from_millis(
                        u64::from(attempt) * 2,
                    ))
                    .await;
                }
                result => break result,
            }
        }
    }};
}
pub(crate) use in_write_transaction;

/// An `atomic` block open on a connection: its registry entry and its transaction.
pub(crate) struct Block {
    guard: BlockGuard,
    tx: Tx,
    top_level: bool,
}

impl Block {
    /// Opens the block: a transaction (a savepoint when one is open) in which saves of one row
    /// bump and publish once.
    pub(crate) async fn begin<E: Exec>(conn: &mut E) -> Result<Block> {
        let top_level = conn.depth() == 0;
        let guard = BlockGuard::enter(connection_key(conn));
        let tx = Tx::begin(conn).await?;
        Ok(Block {
            guard,
            tx,
            top_level,
        })
    }

    /// Commits or rolls back with `result`, closes the block and, after the outermost block's
    /// commit, wakes the relays.
    pub(crate) async fn end<E, T, Err>(
        self,
        conn: &mut E,
        result: std::result::Result<T, Err>,
    ) -> std::result::Result<T, Err>
    where
        E: Exec,
        Err: From<Error>,
    {
        let Block {
            guard,
            tx,
            top_level,
        } = self;
        let result = tx.end(conn, result).await;
        let committed = guard.is_owner() && top_level && result.is_ok();
        drop(guard);
        if committed {
            outbox::notify_commit();
        }
        result
    }
}

/// A crate error as the Diesel error an `atomic` block's caller can receive.
pub(crate) fn as_diesel_error(error: Error) -> diesel::result::Error {
    match error {
        Error::Database(error) => error,
        other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
    }
}
