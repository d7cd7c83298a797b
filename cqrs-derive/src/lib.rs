//! Derive macros of cqrs-diesel: `#[derive(MasterModel)]` and `#[derive(ReplicaModel)]`.
//!
//! This crate only parses attributes and emits glue; the logic is ordinary generic code in
//! `cqrs-diesel`, which re-exports these macros. Depend on `cqrs-diesel`, not on this crate.

mod attrs;
mod columns;
mod master;
mod replica;
#[cfg(test)]
mod snapshots;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Makes a Diesel model a master model: see `cqrs_diesel::MasterModel` for the methods it
/// gains, and the cqrs-diesel README for the attributes.
///
/// Struct attributes, in `#[cqrs(...)]`:
/// - `id = "..."` (required): the `cqrs_id` shared with replicas;
/// - `table = path` (or Diesel's `#[diesel(table_name = path)]`): the `table!` module;
/// - `pk = field` (default `id`, or Diesel's single `primary_key`): the primary key field;
/// - `tracked(field, ...)`: fields whose old values are sent in `previous_data`;
/// - `produce = false`: write without publishing;
/// - `hooks`: you implement `MasterHooks` yourself (otherwise the defaults are used);
/// - `backends(postgres, mysql, mariadb, sqlite)`: generate statements only for these
///   backends (default: every backend enabled in cqrs-diesel's features). `mysql` is Diesel's
///   MySQL backend (`MysqlConnection`, which also talks to MariaDB), `mariadb` its MariaDB
///   backend (`MariadbConnection`, with `RETURNING`).
///
/// Field attributes: `#[cqrs(skip)]` leaves a field out of the payload; `#[cqrs(rename =
/// "...")]` changes its key in `instance_data`; `#[cqrs(column = name)]` (or Diesel's
/// `column_name`) names its column; `#[cqrs(utc)]` writes a `NaiveDateTime` holding UTC in the
/// aware form (`...+00:00`), as Django services expect (MySQL `DATETIME` columns are naive).
///
/// The struct must have `cqrs_revision` (an integer) and `cqrs_updated` (a timestamp) fields.
#[proc_macro_derive(MasterModel, attributes(cqrs))]
pub fn derive_master_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match attrs::parse_model(&input) {
        Ok(model) => master::expand(&model).into(),
        Err(error) => {
            // The errors, and impls that keep every use of the model from adding its own.
            let mut out = error.to_compile_error();
            out.extend(master::fallback(&input));
            out.into()
        }
    }
}

/// Makes a Diesel model a replica of a master model: see `cqrs_diesel::ReplicaModel` and the
/// cqrs-diesel README.
///
/// Struct attributes, in `#[cqrs(...)]`:
/// - `id = "..."` (required): the master's `cqrs_id`;
/// - `table = path` (or Diesel's `table_name`): the `table!` module (not needed with `custom`);
/// - `pk = field` (default `id`);
/// - `custom`: `CustomReplica` handlers replace the default create/update/delete (no table
///   needed: the replica may touch no database at all);
/// - `meta`: custom handlers receive the message's `meta`;
/// - `only_direct_syncs`: accept only SYNCs aimed at this service's queue;
/// - `max_retries = 5` (or `"none"`), `retry_delay = "500ms"`, `retry_exponential = true`:
///   this model's retry policy (the configuration's otherwise);
/// - `backends(postgres, mysql, sqlite)`: generate statements only for these backends (a
///   replica writes to MariaDB through `mysql`).
///
/// Field attributes: `#[cqrs(from = "master_name")]` reads the field from another key of
/// `instance_data`; `#[cqrs(default)]` takes `Default::default()` when the key is missing
/// (`Option` fields are `None` when missing; any other missing field is an error for that
/// message); `#[cqrs(column = name)]` (or Diesel's `column_name`) names its column.
///
/// Unless `custom`, the struct must have `cqrs_revision` and `cqrs_updated` fields.
#[proc_macro_derive(ReplicaModel, attributes(cqrs))]
pub fn derive_replica_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match replica::derive(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // The errors, and impls that keep every use of the model from adding its own.
            let mut out = error.to_compile_error();
            out.extend(replica::fallback(&input));
            out.into()
        }
    }
}
