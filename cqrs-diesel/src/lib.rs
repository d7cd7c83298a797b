//! # cqrs-diesel
//!
//! CQRS data replication between microservices over Diesel and RabbitMQ, wire compatible with
//! the Python package django-cqrs. A master service publishes every change of its rows; each
//! replica service keeps a local, query-ready copy and joins locally.
//!
//! This is the crate services depend on. Today it provides the wire format, the configuration
//! and the transports of [`cqrs_core`], re-exported here; the Diesel side (derives,
//! `save_and_publish`, the outbox relay and the replica worker) builds on them.
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

pub use cqrs_core::*;

/// The runtime crate, for paths that need it by name.
pub use cqrs_core;

/// Diesel, re-exported so generated code and users agree on one version.
pub use diesel;

/// The README's examples, compiled as doctests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
