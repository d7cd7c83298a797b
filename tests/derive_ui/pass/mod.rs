//! Models the derives accept: ordinary modules of this test binary, so compiling the binary
//! is the check, and trybuild has only compile-fail cases (a `cargo check`, all cases in one
//! invocation, instead of a full build of every dependency).

mod beside_diesel_async;
mod postgres_only_model;
mod replica_models;
