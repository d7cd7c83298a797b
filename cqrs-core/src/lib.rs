//! # cqrs-core
//!
//! The runtime half of the CQRS replication layer that knows nothing of Diesel or macros:
//!
//! - the wire format shared with django-cqrs: [`Payload`], [`SignalType`], [`Expiry`] and the
//!   value encodings of [`WireValue`];
//! - the configuration: [`Config`], built with [`Config::builder`] or [`Config::from_env`];
//! - the [`Transport`] contract (with [`Consumer`] and [`Settle`]; the [`transport`] module
//!   documents it for implementers) and two implementations:
//!   `RabbitMqTransport` (lapin, publisher confirms, reconnection; cargo feature `rabbitmq`, on
//!   by default) and [`InMemoryTransport`] (tests and broker-less demos);
//! - the replica side's [`ConsumerRuntime`]: batching over workers, retries through the delay
//!   queue, dead letters and graceful shutdown, around an [`Applier`] that writes the rows.
//!
//! Users depend on `cqrs-diesel`, which re-exports this crate.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod amqp_url;
mod backoff;
mod clock;
mod config;
mod consumer;
mod encoding;
mod error;
mod memory;
pub mod metric;
mod payload;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod topic;
pub mod trace;
pub mod transport;

/// The decimal type of `Numeric` columns, re-exported so models and this crate agree on one
/// version.
#[cfg(feature = "decimal")]
pub use bigdecimal;

pub use amqp_url::AmqpUrl;
pub use backoff::Backoff;
pub use clock::{Clock, ManualClock};
pub use config::{Config, ConfigBuilder, QueueType, TlsSettings};
pub use consumer::{
    Applied, Applier, BatchError, ConsumerHandle, ConsumerHealth, ConsumerRuntime, ConsumerStats,
    DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_ROUTING_KEY_HEADER, Incoming,
    ModelPolicy, RetryChoice, SEQ_HEADER, parse_seq, shutdown_signal,
};
pub use encoding::{ValueError, WireValue, format_timestamp, parse_timestamp};
pub use error::{Error, JsonType, Result};
pub use memory::{InMemoryConsumer, InMemoryTransport};
pub use payload::{Expiry, Payload, SignalType};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{QueueBrowser, RabbitMqConsumer, RabbitMqTransport};
pub use transport::{
    Confirmation, Consumer, Delivery, OutgoingMessage, PartialPublish, ReplicaQueues, Settle,
    Topology, Transport, dead_letter_routing_key, direct_routing_key,
};
