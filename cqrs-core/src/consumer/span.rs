//! The spans of the consumer runtime (feature `opentelemetry`): the trace of a write goes on
//! in the worker that applies its message.
//!
//! - **`process <queue>`**, one per message routed to a worker (kind consumer, OpenTelemetry
//!   messaging attributes), whose parent is the context of its `traceparent`/`tracestate`
//!   headers (the relay's `publish` span), or a new trace without them. It is entered while
//!   the applier's `prepare` checks the message and stays open until the message's fate is
//!   sealed: it closes when its batch has committed (before the acknowledgement), or when the
//!   message is handed to the retry path.
//! - **`apply <queue>`**, one per attempt to apply a batch in one transaction. A batch holds
//!   messages of many traces, so it cannot be the child of all of them: it links to the
//!   `process` span of every message in it (`follows_from`), and is the child of the
//!   `process` span when the batch is that one message. The applier's future runs inside it
//!   (work it moves to another thread takes the span along only if it passes it on, as
//!   cqrs-diesel's `Replicas` does for its blocking transaction).
//! - Retries and dead letters keep the message's `traceparent`/`tracestate` headers.
//!
//! Without the feature, or when no subscriber records them, the spans are disabled and
//! nothing of this is computed.

use super::worker::Job;
use crate::payload::Payload;
use crate::transport::Delivery;

/// The `process` span of a message read from `queue`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn process(queue: &str, delivery: &Delivery, payload: &Payload) -> tracing::Span {
    use tracing::field::Empty;

    let span = tracing::info_span!(
        "process",
        otel.name = Empty,
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = Empty,
        messaging.rabbitmq.destination.routing_key = Empty,
        messaging.message.conversation_id = Empty,
        cqrs.cqrs_id = Empty,
    );
    let context = crate::trace::TraceContext::from_headers(delivery.headers());
    if !crate::trace::set_parent(&span, context.as_ref()) {
        return span;
    }
    // Recorded before the span starts (its name cannot change after).
    span.record("otel.name", format!("process {queue}").as_str());
    span.record("messaging.destination.name", queue);
    span.record(
        "messaging.rabbitmq.destination.routing_key",
        delivery.routing_key(),
    );
    if let Some(correlation_id) = &payload.correlation_id {
        span.record("messaging.message.conversation_id", correlation_id.as_str());
    }
    span.record("cqrs.cqrs_id", payload.cqrs_id.as_str());
    span
}

/// Without the feature: no span.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn process(_queue: &str, _delivery: &Delivery, _payload: &Payload) -> tracing::Span {
    tracing::Span::none()
}

/// The span of one attempt to apply `jobs` (in one transaction) from `queue`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn apply<P>(queue: &str, jobs: &[Option<Job<P>>]) -> tracing::Span {
    let mut spans = jobs.iter().flatten().map(|job| &job.span);
    match (spans.next(), spans.next()) {
        (Some(only), None) => tracing::info_span!(
            parent: only,
            "apply",
            otel.name = format!("apply {queue}"),
            messaging.batch.message_count = 1,
        ),
        _ => {
            let span = tracing::info_span!(
                parent: None,
                "apply",
                otel.name = format!("apply {queue}"),
                messaging.batch.message_count = jobs.len(),
            );
            if !span.is_disabled() {
                for job in jobs.iter().flatten() {
                    span.follows_from(&job.span);
                }
            }
            span
        }
    }
}

/// Without the feature: no span.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn apply<P>(_queue: &str, _jobs: &[Option<Job<P>>]) -> tracing::Span {
    tracing::Span::none()
}

/// Marks the `process` span of a message whose applying failed.
pub(crate) fn failed(span: &tracing::Span) {
    span.record("otel.status_code", "error");
}
