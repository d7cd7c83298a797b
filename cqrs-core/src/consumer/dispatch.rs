//! What the runtime does with one delivery before any database work: read it, check it, and
//! send it to the worker of its row, to the dead-letter queue, or nowhere (acknowledged).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use serde_json::Value;

use super::Context;
use super::apply::{Applier, Incoming};
use super::dead_letter::{Label, dead_letter, pk_key};
use super::meters::DeadReason;
use super::settle::Pending;
use super::worker::Job;
use crate::payload::Payload;
use crate::transport::{Delivery, direct_routing_key};

/// Where a delivery goes.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per delivery and moved straight on: boxing the job would add an \
              allocation per message"
)]
pub(crate) enum Routed<P> {
    /// To worker `worker`, to be applied.
    Apply { worker: usize, job: Job<P> },
    /// Acknowledged without effect: a broadcast SYNC for a model that accepts only direct ones.
    Ignore { delivery: Delivery, label: Label },
    /// To the dead-letter queue.
    Reject {
        pending: Pending,
        label: Label,
        why: Rejection,
        reason: String,
    },
}

/// Why a message is dead-lettered before it reaches a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// It cannot be read, or the applier's `prepare` refused it.
    Malformed,
    /// Its `cqrs_id` is not one this service consumes.
    Unknown,
    /// Its `expires` has passed.
    Expired,
    /// Its model is known, but this runtime consumes only other ones
    /// ([`ConsumerRuntime::only_cqrs_ids`](crate::ConsumerRuntime::only_cqrs_ids)).
    NotSelected,
}

/// Reads and checks one delivery, in this order: the body must parse (else malformed), its
/// `cqrs_id` must be known (else unknown) and selected (else not selected), it must not have
/// expired, a broadcast SYNC of an
/// only-direct-syncs model is ignored, and the applier must accept it in `prepare` (else
/// malformed). What passes goes to the worker of its row.
pub(crate) fn route<A: Applier>(
    applier: &A,
    ctx: &Context,
    workers: usize,
    delivery: Delivery,
) -> Routed<A::Prepared> {
    let received_at = ctx.config.clock().now();
    let (size, limit) = (delivery.body().len(), ctx.config.max_body_size());
    if size > limit {
        let reason = format!(
            "the body is {size} bytes, more than CQRS_MAX_BODY_SIZE ({limit} bytes); it was not \
             read. Raise the limit if such rows are expected"
        );
        return reject(
            ctx,
            delivery,
            Label::unreadable(),
            None,
            Rejection::Malformed,
            reason,
        );
    }
    let payload = match Payload::from_slice(delivery.body()) {
        Ok(payload) => payload,
        Err(error) => {
            return reject(
                ctx,
                delivery,
                Label::unreadable(),
                None,
                Rejection::Malformed,
                error.to_string(),
            );
        }
    };
    let label = Label::of(&payload);
    let Some(policy) = applier.policy(&payload.cqrs_id) else {
        let reason = format!(
            "unknown cqrs_id `{}`: this service does not consume it",
            payload.cqrs_id
        );
        return reject(ctx, delivery, label, None, Rejection::Unknown, reason);
    };
    let cqrs_id = payload.cqrs_id.clone();
    if let Some(selected) = &ctx.selected
        && !selected.contains(&cqrs_id)
    {
        let reason = format!(
            "cqrs_id `{cqrs_id}` is not consumed by this worker, which was started for {} only \
             (--cqrs-id); replay it with `cqrs dead-letters retry` once a worker consumes it",
            selected
                .iter()
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return reject(
            ctx,
            delivery,
            label,
            Some(&cqrs_id),
            Rejection::NotSelected,
            reason,
        );
    }
    if payload.is_expired(received_at, received_at, ctx.config.message_ttl()) {
        let reason = "expired".to_owned();
        return reject(
            ctx,
            delivery,
            label,
            Some(&cqrs_id),
            Rejection::Expired,
            reason,
        );
    }
    let direct = delivery.routing_key() == direct_routing_key(&ctx.queue, &cqrs_id);
    if policy.only_direct_syncs && payload.is_sync() && !direct {
        return Routed::Ignore { delivery, label };
    }
    let seq = match super::apply::parse_seq(delivery.header(super::apply::SEQ_HEADER)) {
        Ok(seq) => seq,
        Err(reason) => {
            return reject(
                ctx,
                delivery,
                label,
                Some(&cqrs_id),
                Rejection::Malformed,
                reason,
            );
        }
    };
    let incoming = Incoming {
        payload,
        direct,
        received_at,
        seq,
    };
    let span = super::span::process(&ctx.queue, &delivery, &incoming.payload);
    let prepared = span
        .in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| applier.prepare(&incoming))))
        .unwrap_or_else(|panic| {
            Err(format!(
                "the applier panicked while preparing the message: {}",
                panic_message(panic.as_ref())
            ))
        });
    match prepared {
        Ok(prepared) => Routed::Apply {
            worker: worker_for(&cqrs_id, &incoming.payload.instance_pk, workers),
            job: Job {
                delivery,
                incoming,
                prepared: Arc::new(prepared),
                label,
                span,
            },
        },
        Err(reason) => reject(
            ctx,
            delivery,
            label,
            Some(&cqrs_id),
            Rejection::Malformed,
            reason,
        ),
    }
}

fn reject<P>(
    ctx: &Context,
    delivery: Delivery,
    label: Label,
    bound_cqrs_id: Option<&str>,
    why: Rejection,
    reason: String,
) -> Routed<P> {
    let message = dead_letter(ctx, &delivery, bound_cqrs_id, &reason);
    Routed::Reject {
        pending: Pending::dead_letter(
            delivery,
            message,
            label.clone(),
            &reason,
            DeadReason::Rejected(why),
        ),
        label,
        why,
        reason,
    }
}

/// The worker of a row: a hash of its `cqrs_id` and primary key, modulo the number of workers.
/// All messages of one row go to one worker, so they are applied one batch after the other, in
/// the order received.
pub(crate) fn worker_for(cqrs_id: &str, pk: &Value, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    cqrs_id.hash(&mut hasher);
    pk_key(pk).hash(&mut hasher);
    let workers = u64::try_from(workers).unwrap_or(u64::MAX);
    usize::try_from(hasher.finish() % workers).unwrap_or(0)
}

/// The message of a panic, when it is a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_always_goes_to_the_same_worker_in_range() {
        for workers in [1, 2, 3, 8] {
            for pk in 0..200 {
                let w = worker_for("author", &Value::from(pk), workers);
                assert!(w < workers);
                assert_eq!(w, worker_for("author", &Value::from(pk), workers));
                assert_eq!(
                    w,
                    worker_for("author", &Value::from(pk.to_string()), workers),
                    "7 and \"7\" are the same row"
                );
            }
        }
    }

    #[test]
    fn rows_spread_over_the_workers() {
        let mut used = [0usize; 4];
        for pk in 0..400 {
            used[worker_for("book", &Value::from(pk), 4)] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }
}
