//! Integration tests against the real services of this machine (see README: `AMQP_URL`,
//! `PG_DATABASE_URL`, `MYSQL_DATABASE_URL` override the local defaults).

#[path = "../common/authors.rs"]
mod authors;
mod brokers;
mod cli;
mod consumer_runtime;
mod db;
mod master;
mod outbox_upgrade;
mod relay;
mod replica;
mod support;
mod trace;
mod transport_custom;
mod transport_rabbitmq;
mod transport_reconnect;
mod transport_scenarios;
mod transport_tls;
