//! Derive macros of cqrs-diesel: `#[derive(MasterModel)]` (and, later, `ReplicaModel`).
//!
//! This crate only parses attributes and emits glue; the logic is ordinary generic code in
//! `cqrs-diesel`, which re-exports these macros. Depend on `cqrs-diesel`, not on this crate.

mod attrs;
mod master;

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
/// - `backends(postgres, mysql, sqlite)`: generate statements only for these backends
///   (default: every backend enabled in cqrs-diesel's features).
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
        Err(error) => error.to_compile_error().into(),
    }
}
