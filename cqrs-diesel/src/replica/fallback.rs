//! What `#[derive(ReplicaModel)]` emits beside its errors when the struct's attributes are
//! wrong: impls that satisfy the traits, so that the errors shown are the derive's own, at the
//! attributes, and not one more at every `Replicas::register` of the model. Code that holds
//! them never compiles, so their bodies never run; they do nothing and fail.

/// The fallback impls of `$model`, whose primary key has type `$pk` (with `ReplicaHooks`
/// unless `$hooks` says the user writes their own). Only generated code calls this.
#[doc(hidden)]
#[macro_export]
macro_rules! __cqrs_replica_fallback {
    ($model:ty, pk = $pk:ty, hooks = $hooks:tt) => {
        $crate::__cqrs_replica_fallback!(@hooks $model, $hooks);

        #[automatically_derived]
        impl $crate::ReplicaModel for $model {
            const CQRS_ID: &'static str = "";
            const RECEIVES_META: bool = false;
            const COLUMN_COUNT: usize = 0;
            type Pk = $pk;

            fn cqrs_policy() -> $crate::runtime::ModelPolicy {
                ::core::default::Default::default()
            }

            fn cqrs_decode(
                _: &$crate::__private::serde_json::Map<
                    ::std::string::String,
                    $crate::__private::serde_json::Value,
                >,
            ) -> ::core::result::Result<Self, ::std::string::String> {
                ::core::result::Result::Err($crate::__private::REPLICA_FALLBACK.into())
            }

            fn cqrs_decode_pk(
                _: &$crate::__private::serde_json::Value,
            ) -> ::core::result::Result<$pk, ::std::string::String> {
                ::core::result::Result::Err($crate::__private::REPLICA_FALLBACK.into())
            }

            fn cqrs_encode_pk(_: &$pk) -> $crate::__private::serde_json::Value {
                $crate::__private::serde_json::Value::Null
            }

            fn cqrs_key(&self) -> $pk {
                // No row of a model whose derive failed exists: the program does not compile.
                ::core::unreachable!("{}", $crate::__private::REPLICA_FALLBACK)
            }

            fn cqrs_revision(&self) -> ::core::option::Option<i64> {
                ::core::option::Option::None
            }
        }

        #[automatically_derived]
        impl<DB: $crate::Dialect> $crate::__private::ReplicaColumns<DB> for $model {
            const COLUMNS: &'static [&'static str] = &[];
            const PK_INDEX: usize = 0;
            const REVISION_INDEX: usize = 0;

            fn walk_table(
                _: $crate::__private::diesel::query_builder::AstPass<'_, '_, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::replica_fallback_error()
            }
            fn walk_value<'b>(
                &'b self,
                _: usize,
                _: $crate::__private::diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::replica_fallback_error()
            }
            fn walk_key<'b>(
                _: &'b $pk,
                _: $crate::__private::diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::replica_fallback_error()
            }
            fn read_key_revision<'a>(
                _: &impl $crate::__private::diesel::row::NamedRow<'a, DB>,
            ) -> $crate::__private::diesel::deserialize::Result<($pk, i64)> {
                ::core::result::Result::Err($crate::__private::REPLICA_FALLBACK.into())
            }
        }
    };
    (@hooks $model:ty, false) => {
        #[automatically_derived]
        impl $crate::ReplicaHooks for $model {}
    };
    (@hooks $model:ty, true) => {};
}

/// What every fallback statement and decoding says.
pub const REPLICA_FALLBACK: &str = "this model's #[derive(ReplicaModel)] failed to expand";

/// What every fallback statement returns.
pub fn replica_fallback_error<T>() -> crate::master::fallback::FallbackResult<T> {
    Err(diesel::result::Error::QueryBuilderError(
        REPLICA_FALLBACK.into(),
    ))
}
