//! Derive macros of `cqrs-diesel`: `#[derive(MasterModel)]` and `#[derive(ReplicaModel)]`.
//!
//! The derives are being built in the master-side and replica-side work items; this crate
//! exports no macro yet. Depend on `cqrs-diesel`, which re-exports them once they exist.
#![warn(missing_docs, unreachable_pub)]
