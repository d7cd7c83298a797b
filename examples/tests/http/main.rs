//! The example services, started in this process on ephemeral ports and driven over HTTP with
//! a real client: the accounts API, the payments join, replication through the real RabbitMQ
//! and on PostgreSQL and MariaDB, bad input, and the demo.

mod accounts;
mod demo;
mod operator;
mod ops;
mod payments;
mod replication;
mod support;
