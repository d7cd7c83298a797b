//! The functions a [`MasterConfig`](super::MasterConfig) applies to every message of every
//! model, django-cqrs's `CQRS['master']['meta_function']` and `['correlation_function']`, and
//! what they are shown of the message being built.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use cqrs_core::SignalType;
use serde_json::{Map, Value};

/// What a [`MetaFunction`] or a [`CorrelationFunction`] sees of the message being built: the
/// model, the signal, the key, the data as it will be sent and the row itself.
///
/// ```
/// use cqrs_diesel::MessageContext;
///
/// struct Account { owner: String }
///
/// fn owner_of(message: &MessageContext<'_>) -> Option<String> {
///     // The row, when the message is of an `Account`.
///     message.row::<Account>().map(|account| account.owner.clone())
/// }
/// # let _ = owner_of;
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct MessageContext<'a> {
    /// The model's `cqrs_id`.
    pub cqrs_id: &'static str,
    /// SAVE, SYNC or DELETE.
    pub signal: SignalType,
    /// The primary key as the message carries it (`instance_pk`).
    pub instance_pk: &'a Value,
    /// `instance_data` as the message carries it (after the model's serializer hooks).
    pub instance_data: &'a Map<String, Value>,
    /// `previous_data`: the tracked fields' old values of a SAVE, `None` otherwise.
    pub previous_data: Option<&'a Map<String, Value>>,
    /// The replica queue a SYNC goes to alone (`cqrs_sync(conn, Some(queue))`, the operator
    /// command's `--queue`); `None` for a broadcast.
    pub queue: Option<&'a str>,
    pub(crate) row: &'a dyn Any,
}

impl<'a> MessageContext<'a> {
    /// The row the message is built from (as stored; for a DELETE, as it was), when it is of
    /// the model `M`: `None` for a message of another model.
    pub fn row<M: Any>(&self) -> Option<&'a M> {
        self.row.downcast_ref::<M>()
    }
}

impl fmt::Debug for MessageContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageContext")
            .field("cqrs_id", &self.cqrs_id)
            .field("signal", &self.signal)
            .field("instance_pk", self.instance_pk)
            .field("instance_data", self.instance_data)
            .field("previous_data", &self.previous_data)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// The `meta` of every message of a master, unless the model's
/// [`MasterHooks::meta`](super::MasterHooks::meta) gives one (django-cqrs's
/// `CQRS['master']['meta_function']`, which the default `get_cqrs_meta` calls). `None` sends
/// `{}`. Set it with [`MasterConfig::with_meta_function`](super::MasterConfig::with_meta_function).
pub type MetaFunction =
    Arc<dyn Fn(&MessageContext<'_>) -> Option<Map<String, Value>> + Send + Sync>;

/// The `correlation_id` of every message of a master, unless the model's
/// [`MasterHooks::correlation_id`](super::MasterHooks::correlation_id) gives one (django-cqrs's
/// `CQRS['master']['correlation_function']`). `None` sends `null`. Set it with
/// [`MasterConfig::with_correlation_function`](super::MasterConfig::with_correlation_function).
pub type CorrelationFunction = Arc<dyn Fn(&MessageContext<'_>) -> Option<String> + Send + Sync>;
