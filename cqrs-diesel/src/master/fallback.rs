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
        impl<C: $crate::CqrsConnection> $crate::MasterStore<C> for $model {
            fn cqrs_find(&self, _: &mut C, _: bool) -> $crate::__private::FallbackResult<Option<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_update(&self, _: &mut C, _: bool) -> $crate::__private::FallbackResult<Option<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_insert(&self, _: &mut C) -> $crate::__private::FallbackResult<Self> {
                $crate::__private::fallback_error()
            }
            fn cqrs_upsert(&self, _: &mut C) -> $crate::__private::FallbackResult<Self> {
                $crate::__private::fallback_error()
            }
            fn cqrs_insert_generated(&self, _: &mut C) -> $crate::__private::FallbackResult<Self> {
                $crate::__private::fallback_error()
            }
            fn cqrs_insert_many_generated(
                _: &[&Self],
                _: &mut C,
            ) -> $crate::__private::FallbackResult<Vec<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_delete(&self, _: &mut C) -> $crate::__private::FallbackResult<Option<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_insert_many(_: &[&Self], _: &mut C) -> $crate::__private::FallbackResult<Vec<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_find_many(
                _: &[&Self],
                _: &mut C,
                _: bool,
            ) -> $crate::__private::FallbackResult<Vec<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_update_many(_: &[&Self], _: &mut C) -> $crate::__private::FallbackResult<Vec<Self>> {
                $crate::__private::fallback_error()
            }
            fn cqrs_count(
                _: &mut C,
                _: &$crate::RowFilter,
            ) -> $crate::__private::FallbackResult<i64> {
                $crate::__private::fallback_error()
            }
            fn cqrs_select_page(
                _: &mut C,
                _: &$crate::RowFilter,
                _: Option<&$crate::__private::serde_json::Value>,
                _: i64,
            ) -> $crate::__private::FallbackResult<Vec<Self>> {
                $crate::__private::fallback_error()
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
