//! `#[cqrs(hooks)]` and `ReplicaHooks`: a model decides per error whether a failed message is
//! retried (`should_retry_cqrs`) and after what delay (`get_cqrs_retry_delay`).

use std::sync::Mutex;
use std::time::Duration;

use cqrs_diesel::{
    CustomReplica, DbConn, Error, HookError, MessageInfo, ReplicaHooks, ReplicaModel, Replicas,
};
use tokio::time::Instant;

use super::{Worker, author};
use crate::db::SqliteDb;

/// Refuses every author; its hook refuses to retry a handler's refusal.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", custom, hooks)]
struct NoRetryOnRefusal {
    id: i64,
}

/// The errors `NoRetryOnRefusal::should_retry_cqrs` was asked about.
static ASKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl ReplicaHooks for NoRetryOnRefusal {
    fn should_retry_cqrs(current_retry: u32, error: &Error, default: bool) -> bool {
        ASKED
            .lock()
            .expect("not poisoned")
            .push(format!("{current_retry}: {error}"));
        !matches!(error, Error::Hook { .. }) && default
    }
}

impl CustomReplica for NoRetryOnRefusal {
    fn cqrs_create(
        _conn: Option<DbConn<'_>>,
        row: Self,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        Err(format!("author {} is refused for good", row.id).into())
    }

    fn cqrs_delete(
        _conn: Option<DbConn<'_>>,
        _key: i64,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        Ok(())
    }
}

/// Fails its first attempt; its hook asks for a delay of its own before the retry.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", custom, hooks)]
struct SlowRetry {
    id: i64,
}

/// When `SlowRetry` was tried, by the runtime's (Tokio) clock.
static ATTEMPTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

const HOOK_DELAY: Duration = Duration::from_millis(800);

impl ReplicaHooks for SlowRetry {
    fn get_cqrs_retry_delay(_current_retry: u32) -> Option<Duration> {
        Some(HOOK_DELAY)
    }
}

impl CustomReplica for SlowRetry {
    fn cqrs_create(
        _conn: Option<DbConn<'_>>,
        _row: Self,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        let mut attempts = ATTEMPTS.lock().map_err(|_| "poisoned")?;
        attempts.push(Instant::now());
        if attempts.len() == 1 {
            return Err("not yet".into());
        }
        Ok(())
    }

    fn cqrs_delete(
        _conn: Option<DbConn<'_>>,
        _key: i64,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_retry_hook_refuses_the_error_is_dead_lettered_at_once() {
    let replicas = Replicas::<diesel::SqliteConnection>::without_database()
        .register_custom::<NoRetryOnRefusal>();
    let worker = Worker::start_with(SqliteDb::new("rhook_no"), "", replicas, |b| {
        b.max_retries(Some(30))
            .retry_delay(Duration::from_millis(10))
    })
    .await;
    worker.broadcast(&author("SAVE", 4, "Ann", 0)).await;
    let stats = worker.wait("dead-lettered", |s| s.dead_lettered >= 1).await;
    assert_eq!(
        stats.retried, 0,
        "not retried although 30 retries are allowed"
    );
    let asked = ASKED.lock().expect("not poisoned").clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].starts_with("0: ") && asked[0].contains("author 4 is refused for good"),
        "the hook got the retry count and the handler's typed error: {asked:?}"
    );
    let dead = super::dead_letters(worker.config.dead_letter_queue().unwrap()).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1.contains("should_retry_cqrs refused") && dead[0].1.contains("refused for good"),
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_delay_hook_sets_a_delay_is_retried_after_it() {
    let replicas =
        Replicas::<diesel::SqliteConnection>::without_database().register_custom::<SlowRetry>();
    let worker = Worker::start_with(SqliteDb::new("rhook_delay"), "", replicas, |b| {
        b.max_retries(Some(3))
            .retry_delay(Duration::from_millis(10))
    })
    .await;
    worker.broadcast(&author("SAVE", 5, "Bob", 0)).await;
    let stats = worker.wait("applied", |s| s.applied() >= 1).await;
    assert_eq!((stats.retried, stats.dead_lettered), (1, 0), "{stats:?}");
    let attempts = ATTEMPTS.lock().expect("not poisoned").clone();
    assert_eq!(attempts.len(), 2);
    // A lower bound only: the configured 10 ms would have retried long before.
    let waited = attempts[1] - attempts[0];
    assert!(
        waited >= HOOK_DELAY,
        "retried after {waited:?}, before the hook's {HOOK_DELAY:?}"
    );
}
