//! The replica side: models that keep a local copy of another service's rows.
//!
//! Derive [`ReplicaModel`](derive@crate::ReplicaModel) on a Diesel model, register it in
//! [`Replicas`], and run the [`ConsumerRuntime`](cqrs_core::ConsumerRuntime) with it (or let
//! [`consumer!`](crate::consumer) generate a `run_consumer()`).
//!
//! Each batch of messages is applied in one transaction. The replica places the messages of one
//! primary key in one order (a cqrs-diesel master's outbox sequence, `x-cqrs-seq`, when both the
//! message and the row's state have one; otherwise the revision within a life of the row, and
//! the time only at a DELETE: see the `order` module and docs/DESIGN.md) and keeps, per key, what
//! it last applied in `cqrs_replica_state` (create it with
//! [`CqrsConnection::run_replica_migrations`](crate::CqrsConnection::run_replica_migrations)).
//! Per batch and model:
//!
//! 1. the state rows of the batch's keys are locked (`SELECT ... FOR UPDATE` on PostgreSQL and
//!    MySQL/MariaDB; SQLite has one writer);
//! 2. each row's messages are decided one after the other, in the order received, against the
//!    state the ones before them left; those applied and then overtaken in the batch are
//!    reported as superseded;
//! 3. the last message applied of each row is written with one upsert statement (SAVE, SYNC) or
//!    one delete (DELETE) for the batch, and the states are recorded. A SYNC also applies at the
//!    stored revision, to rewrite values that drifted; a DELETE's state is its tombstone.
//!
//! So a late, duplicated or retried copy of any message changes nothing, and several replica
//! processes applying the same rows converge as one does.

pub(crate) mod fallback;
mod model;
mod order;
mod registry;
pub(crate) mod sql;
pub(crate) mod state;

pub(crate) use model::key_text;
pub use model::{CustomReplica, MessageInfo, ReplicaHooks, ReplicaModel, ReplicaStore};
pub use registry::{Prepared, Replicas};
pub use state::{MYSQL_REPLICA_UP_SQL, POSTGRES_REPLICA_UP_SQL, SQLITE_REPLICA_UP_SQL};

/// Runs the replica worker of `replicas` until SIGTERM or SIGINT: declares the topology of
/// docs/WIRE.md for every registered `cqrs_id`, consumes `config.queue()` and applies batches; on
/// the signal, finishes the batch in hand and republishes what waits for a retry.
///
/// Returns the counters at the end; an error only for what retrying cannot mend (no queue
/// configured, the queue deleted, access refused).
///
/// Feature `rabbitmq`; without it, run [`ConsumerRuntime`](cqrs_core::ConsumerRuntime) over a
/// transport of your own.
#[cfg(feature = "rabbitmq")]
pub async fn run_consumer<C: crate::CqrsConnection>(
    config: cqrs_core::Config,
    replicas: Replicas<C>,
) -> crate::Result<cqrs_core::ConsumerStats> {
    run_consumer_only(config, replicas, std::iter::empty::<String>()).await
}

/// [`run_consumer`] for some of the registered models only (django-cqrs's `cqrs_consume
/// --cqrs-id`): the queue is bound for these `cqrs_id`s only; messages of the other registered
/// models that still reach the queue (through bindings of earlier runs) are dead-lettered with
/// a reason that says so, for `cqrs dead-letters retry` to replay later (see
/// [`ConsumerRuntime::only_cqrs_ids`](cqrs_core::ConsumerRuntime::only_cqrs_ids)). An empty
/// list consumes every registered model.
///
/// # Errors
///
/// As [`run_consumer`]; also [`cqrs_core::Error::UnknownCqrsIds`] (before connecting) when a
/// `cqrs_id` is not registered, naming the registered ones.
#[cfg(feature = "rabbitmq")]
pub async fn run_consumer_only<C: crate::CqrsConnection>(
    config: cqrs_core::Config,
    replicas: Replicas<C>,
    cqrs_ids: impl IntoIterator<Item = impl Into<String>>,
) -> crate::Result<cqrs_core::ConsumerStats> {
    let transport = cqrs_core::RabbitMqTransport::new(config.clone());
    let stats = cqrs_core::ConsumerRuntime::new(transport.clone(), config, replicas)
        .only_cqrs_ids(cqrs_ids)
        .run_until(cqrs_core::shutdown_signal())
        .await;
    // Before the caller's runtime ends: the broker sees the connections closed, not cut.
    cqrs_core::Transport::close(&transport).await;
    Ok(stats?)
}

/// Generates a service's `run_consumer()` from the list of its replica models.
///
/// ```no_run
/// # use cqrs_diesel::ReplicaModel;
/// # diesel::table! { account_ref (id) { id -> BigInt, name -> Text, cqrs_revision -> Integer, cqrs_updated -> Timestamptz, } }
/// # #[derive(Debug, Clone, ReplicaModel)]
/// # #[cqrs(id = "account", table = account_ref, backends(postgres))]
/// # struct AccountRef { id: i64, name: String, cqrs_revision: i32, cqrs_updated: chrono::DateTime<chrono::Utc> }
/// use cqrs_diesel::diesel::PgConnection;
///
/// cqrs_diesel::consumer! {
///     /// The payments service's replica worker.
///     pub fn run_consumer(PgConnection) { AccountRef }
/// }
///
/// # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
/// use cqrs_diesel::diesel::Connection;
/// let config = cqrs_diesel::Config::from_env()?;
/// let stats = run_consumer(config, || PgConnection::establish("postgres://127.0.0.1/payments")).await;
/// # Ok(())
/// # }
/// ```
///
/// Custom models go after a `;`: `pub fn run_consumer(PgConnection) { AccountRef; AuditLog }`.
/// The function also has two siblings: `replicas(connect)` returning the registry, for tests and
/// for running the runtime yourself, and `run_consumer_only(config, connect, cqrs_ids)`, which
/// consumes only the models named (see [`run_consumer_only`](crate::run_consumer_only)).
/// Those two exist with the feature `rabbitmq` of cqrs-diesel (on by default); `replicas` always.
#[macro_export]
macro_rules! consumer {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($conn:ty) { $($model:ty),* $(,)? $(; $($custom:ty),* $(,)?)? }
    ) => {
        $crate::__with_rabbitmq! {
            $(#[$attr])*
            $vis async fn $name(
                config: $crate::Config,
                connect: impl Fn() -> ::core::result::Result<$conn, $crate::diesel::ConnectionError>
                    + Send + Sync + 'static,
            ) -> $crate::Result<$crate::ConsumerStats> {
                $crate::run_consumer(config, replicas(connect)).await
            }

            /// The replica worker for some of this service's replica models only (the others'
            /// messages are dead-lettered); an unknown `cqrs_id` is an error at start.
            $vis async fn run_consumer_only(
                config: $crate::Config,
                connect: impl Fn() -> ::core::result::Result<$conn, $crate::diesel::ConnectionError>
                    + Send + Sync + 'static,
                cqrs_ids: impl ::core::iter::IntoIterator<Item = impl ::core::convert::Into<::std::string::String>>,
            ) -> $crate::Result<$crate::ConsumerStats> {
                $crate::run_consumer_only(config, replicas(connect), cqrs_ids).await
            }
        }

        /// The registry of this service's replica models.
        $vis fn replicas(
            connect: impl Fn() -> ::core::result::Result<$conn, $crate::diesel::ConnectionError>
                + Send + Sync + 'static,
        ) -> $crate::Replicas<$conn> {
            $crate::Replicas::new(connect)
                $(.register::<$model>())*
                $($(.register_custom::<$custom>())*)?
        }
    };
}

/// Emits its input when cqrs-diesel has the feature `rabbitmq` (decided by cqrs-diesel's
/// features, not by those of the crate that expands [`consumer!`](crate::consumer)).
#[cfg(feature = "rabbitmq")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_rabbitmq {
    ($($item:tt)*) => { $($item)* };
}

/// Emits nothing: cqrs-diesel is built without the feature `rabbitmq`.
#[cfg(not(feature = "rabbitmq"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_rabbitmq {
    ($($item:tt)*) => {};
}
