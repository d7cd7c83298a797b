//! What `#[derive(MasterModel)]` emits beside its errors when the struct's attributes are
//! wrong: impls that satisfy the traits, so that the errors shown are the derive's own,
//! at the attributes, and not one more at every call site of `save_and_publish`. Code that
//! holds them never compiles, so their bodies never run; they do nothing and fail.

/// The fallback impls of `$model` (with `MasterHooks` unless `$hooks` says the user writes
/// their own). Only generated code calls this.
#[doc(hidden)]
#[macro_export]
macro_rules! __cqrs_master_fallback {
    ($model:ty, hooks = $hooks:tt) => {
        $crate::__cqrs_master_fallback!(@hooks $model, $hooks);

        #[automatically_derived]
        impl $crate::MasterModel for $model {
            const CQRS_ID: &'static str = "";
            const PRODUCE: bool = false;
            const TRACKED_FIELDS: &'static [&'static str] = &[];
            const COLUMN_COUNT: usize = 0;

            fn cqrs_pk(&self) -> $crate::__private::serde_json::Value {
                $crate::__private::serde_json::Value::Null
            }

            fn cqrs_revision(&self) -> i64 {
                0
            }

            fn cqrs_instance_data(
                &self,
            ) -> $crate::__private::serde_json::Map<String, $crate::__private::serde_json::Value>
            {
                $crate::__private::serde_json::Map::new()
            }

            fn cqrs_tracked_data(
                &self,
            ) -> $crate::__private::serde_json::Map<String, $crate::__private::serde_json::Value>
            {
                $crate::__private::serde_json::Map::new()
            }
        }

        #[automatically_derived]
        impl<DB: $crate::Dialect> $crate::__private::MasterColumns<DB> for $model {
            type Updated = $crate::__private::chrono::DateTime<$crate::__private::chrono::Utc>;
            type Pk = i64;
            const COLUMNS: &'static [&'static str] = &[];
            const PK_INDEX: usize = 0;
            const REVISION_INDEX: usize = 0;
            const UPDATED_INDEX: usize = 0;
            const TRACKED_INDEXES: &'static [usize] = &[];

            fn walk_table(
                _: $crate::__private::diesel::query_builder::AstPass<'_, '_, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::fallback_error()
            }
            fn walk_value<'b>(
                &'b self,
                _: usize,
                _: $crate::__private::diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::fallback_error()
            }
            fn walk_updated<'b>(
                _: &'b Self::Updated,
                _: $crate::__private::diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::fallback_error()
            }
            fn walk_key<'b>(
                _: &'b i64,
                _: $crate::__private::diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> $crate::__private::FallbackResult<()> {
                $crate::__private::fallback_error()
            }
            fn cqrs_key(&self) -> i64 {
                0
            }
            fn from_row<'a>(
                _: &impl $crate::__private::diesel::row::NamedRow<'a, DB>,
            ) -> $crate::__private::diesel::deserialize::Result<Self> {
                ::core::result::Result::Err("this model's #[derive(MasterModel)] failed to expand".into())
            }
        }
    };
    (@hooks $model:ty, false) => {
        #[automatically_derived]
        impl $crate::MasterHooks for $model {}
    };
    (@hooks $model:ty, true) => {};
}

/// The result type of the fallback impls.
pub type FallbackResult<T> = diesel::QueryResult<T>;

/// What every fallback statement returns.
pub fn fallback_error<T>() -> FallbackResult<T> {
    Err(diesel::result::Error::QueryBuilderError(
        "this model's #[derive(MasterModel)] failed to expand".into(),
    ))
}
