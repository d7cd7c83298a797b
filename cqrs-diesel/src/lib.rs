//! # cqrs-diesel
//!
//! CQRS data replication between microservices over Diesel and RabbitMQ, wire compatible with
//! the Python package django-cqrs. A master service publishes every change of its rows; each
//! replica service keeps a local, query-ready copy and joins locally.
//!
//! This is the crate services depend on. Its root has the names a service uses every day
//! ([`Config`], [`RabbitMqTransport`], [`Topology`], [`run_consumer`], the derives and their
//! traits, [`SessionSetup`], [`Error`]); the rest of [`cqrs_core`] is under [`transport`]
//! (brokers, messages, routing keys), [`wire`] (the body and value encodings) and [`runtime`]
//! (the consumer runtime and its `Applier`). It adds the Diesel side:
//!
//! - the master side: [`#[derive(MasterModel)]`](derive@MasterModel), whose
//!   [`MasterModel::save_and_publish`] and friends write a row and its message in one
//!   transaction (the transactional [`outbox`]), and the [`OutboxRelay`] that publishes the
//!   outbox with publisher confirms;
//! - PostgreSQL, MySQL/MariaDB and SQLite, each behind the cargo feature of its name.
//!
//! The RabbitMQ transport and what builds one ([`run_consumer`], [`consumer!`]'s
//! `run_consumer()`) are behind the cargo feature `rabbitmq` (on by default); without it, the
//! relay and the consumer runtime run over any [`Transport`] (see
//! [`transport::Settle`] for writing one).
//!
//! ```no_run
//! use cqrs_diesel::{Config, RabbitMqTransport, Topology, Transport};
//!
//! # async fn run() -> cqrs_diesel::Result<()> {
//! let config = Config::from_env()?; // CQRS_AMQP_URL, CQRS_QUEUE, ...
//! let transport = RabbitMqTransport::new(config.clone());
//! transport.declare(&Topology::from_config(&config, ["account"])).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "cli")]
pub mod cli;
mod connection;
mod db_errors;
mod error;
mod exec;
mod master;
pub mod ops;
pub mod outbox;
mod relay;
pub mod replica;
pub mod session;

// The everyday names of cqrs-core at the root; everything else under `transport`, `wire` and
// `runtime` below.
#[cfg(feature = "rabbitmq")]
pub use cqrs_core::RabbitMqTransport;
#[cfg(feature = "decimal")]
pub use cqrs_core::bigdecimal;
pub use cqrs_core::{
    Clock, Config, ConfigBuilder, ConsumerHandle, ConsumerHealth, ConsumerRuntime, ConsumerStats,
    ManualClock, Topology, Transport, WireValue, metric, shutdown_signal,
};

/// Brokers and messages: the [`Transport`] trait, its RabbitMQ and in-memory implementations,
/// the topology and routing keys, and the broker settings of [`Config`].
pub mod transport {
    pub use cqrs_core::{
        AmqpUrl, Confirmation, Consumer, DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER,
        DEAD_LETTER_ROUTING_KEY_HEADER, Delivery, InMemoryConsumer, InMemoryTransport,
        OutgoingMessage, PartialPublish, QueueType, ReplicaQueues, Settle, TlsSettings, Topology,
        Transport, dead_letter_routing_key, direct_routing_key,
    };
    /// The RabbitMQ transport (feature `rabbitmq`).
    #[cfg(feature = "rabbitmq")]
    pub use cqrs_core::{QueueBrowser, RabbitMqConsumer, RabbitMqTransport};
}

/// The message contract: the body ([`Payload`](wire::Payload)), its signal types and expiry,
/// and how one value is written and read ([`WireValue`], timestamps).
pub mod wire {
    pub use cqrs_core::{
        Expiry, JsonType, Payload, SEQ_HEADER, SignalType, ValueError, WireValue, format_timestamp,
        parse_seq, parse_timestamp,
    };
}

/// W3C trace context across the broker: the outbox's `trace_context` column and the
/// `traceparent`/`tracestate` headers (spans with the feature `opentelemetry`).
pub use cqrs_core::trace;

/// The replica worker's machinery: the [`ConsumerRuntime`] around an
/// [`Applier`](runtime::Applier) (what [`Replicas`] implements), its stats and policies, the
/// back-off and the clock.
pub mod runtime {
    pub use cqrs_core::{
        Applied, Applier, Backoff, BatchError, Clock, ConsumerHandle, ConsumerRuntime,
        ConsumerStats, Incoming, ManualClock, ModelPolicy, RetryChoice, shutdown_signal,
    };
}

pub use connection::{Backend, CqrsConnection, DbConn, MYSQL_STRICT_MODES};
pub use error::{Error, Result};

/// The transport-level error of [`cqrs_core`] (broker, configuration, wire), which this crate's
/// [`Error`] wraps as [`Error::Transport`].
pub use cqrs_core::Error as TransportError;
#[cfg(feature = "async")]
pub use master::atomic_async;
pub use master::{
    Awaiting, Blocking, CorrelationFunction, Dialect, DialectKind, Exec, HookError, HookFuture,
    MasterConfig, MasterHooks, MasterModel, MasterStore, MessageContext, MetaFunction, Mode,
    RelateFuture, Related, Ret, RowFilter, UpdatedAt, WriteFuture, atomic,
};
pub use relay::{OutboxRelay, RelayHandle, RelayHealth, RelayStats};
pub use session::SessionSetup;

pub use replica::{CustomReplica, MessageInfo, ReplicaHooks, ReplicaModel, ReplicaStore, Replicas};
#[cfg(feature = "rabbitmq")]
pub use replica::{run_consumer, run_consumer_only};

/// `#[derive(MasterModel)]`: see [the trait](trait@MasterModel) and the crate README.
pub use cqrs_derive::MasterModel;

/// `#[derive(ReplicaModel)]`: see [the trait](trait@ReplicaModel) and the crate README.
pub use cqrs_derive::ReplicaModel;

/// The runtime crate, for paths that need it by name.
pub use cqrs_core;

/// Diesel, re-exported so generated code and users agree on one version.
pub use diesel;

/// What generated code needs, under one path (as serde does). Not a public API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "async")]
    pub use crate::master::AsyncBody;
    pub use crate::master::AsyncInsert;
    pub use crate::master::fallback::{FallbackResult, fallback_error};
    pub use crate::master::{MasterColumns, SinglePlan, UtcWire, decode_key};
    pub use crate::replica::fallback::{REPLICA_FALLBACK, replica_fallback_error};
    pub use crate::replica::sql::ReplicaColumns;
    pub use chrono;
    pub use cqrs_core::WireValue;
    pub use diesel;
    pub use serde_json;
}

/// Expands its input when the `postgres` feature of cqrs-diesel is on (for generated code,
/// whose own crate's features do not matter).
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "postgres")]
macro_rules! __cqrs_if_postgres {
    ($($tokens:tt)*) => { $($tokens)* };
}
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "postgres"))]
macro_rules! __cqrs_if_postgres {
    ($($tokens:tt)*) => {};
}
/// Expands its input when the `mysql` feature of cqrs-diesel is on.
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "mysql")]
macro_rules! __cqrs_if_mysql {
    ($($tokens:tt)*) => { $($tokens)* };
}
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "mysql"))]
macro_rules! __cqrs_if_mysql {
    ($($tokens:tt)*) => {};
}
/// Expands its input when the `mariadb` feature of cqrs-diesel is on.
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "mariadb")]
macro_rules! __cqrs_if_mariadb {
    ($($tokens:tt)*) => { $($tokens)* };
}
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "mariadb"))]
macro_rules! __cqrs_if_mariadb {
    ($($tokens:tt)*) => {};
}
/// Expands its input when the `sqlite` feature of cqrs-diesel is on.
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "sqlite")]
macro_rules! __cqrs_if_sqlite {
    ($($tokens:tt)*) => { $($tokens)* };
}
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "sqlite"))]
macro_rules! __cqrs_if_sqlite {
    ($($tokens:tt)*) => {};
}

/// The README's examples, compiled as doctests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
