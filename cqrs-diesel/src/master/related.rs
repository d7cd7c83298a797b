//! What a model loads once for a page of rows before serializing each
//! ([`MasterHooks::relate_cqrs_serialization`](super::MasterHooks::relate_cqrs_serialization)).

use std::any::Any;
use std::fmt;

/// What [`MasterHooks::relate_cqrs_serialization`](super::MasterHooks::relate_cqrs_serialization)
/// loaded for a page of rows (related rows by key, typically), handed to
/// [`MasterHooks::serialize_related`](super::MasterHooks::serialize_related) for each row of
/// the page. Any `Send + Sync` value; [`Related::none`] when the model loads nothing.
///
/// ```
/// use std::collections::HashMap;
/// use cqrs_diesel::Related;
///
/// let related = Related::new(HashMap::from([(7, "Tolstoy".to_owned())]));
/// let writers = related.get::<HashMap<i32, String>>().expect("what the page loaded");
/// assert_eq!(writers[&7], "Tolstoy");
/// assert!(Related::none().get::<HashMap<i32, String>>().is_none());
/// ```
#[derive(Default)]
pub struct Related(Option<Box<dyn Any + Send + Sync>>);

impl Related {
    /// Nothing loaded: the rows are serialized with
    /// [`MasterHooks::serialize_async`](super::MasterHooks::serialize_async), one by one.
    pub const fn none() -> Self {
        Related(None)
    }

    /// `value`, for [`serialize_related`](super::MasterHooks::serialize_related) to read.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Related(Some(Box::new(value)))
    }

    /// Whether nothing was loaded.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// The value loaded, when it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_ref().and_then(|value| value.downcast_ref::<T>())
    }
}

impl fmt::Debug for Related {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Related(..)"
        } else {
            "Related(none)"
        })
    }
}
