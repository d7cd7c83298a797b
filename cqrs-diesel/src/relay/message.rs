//! The message the relay publishes for one outbox entry: its body untouched, the entry's id as
//! `x-cqrs-seq`, and the write's trace context as the W3C `traceparent`/`tracestate` headers.
//!
//! With the feature `opentelemetry`, each message is published inside a
//! `publish <exchange>:<routing key>` span (kind producer, OpenTelemetry messaging attributes)
//! whose parent is the write's span, and the headers carry the publish span's own context, so
//! the worker's `process` span hangs below it. When no OpenTelemetry layer records the span,
//! nothing more is done than copying the stored context into the headers.

use cqrs_core::trace::TraceContext;
use cqrs_core::{OutgoingMessage, SEQ_HEADER};

use crate::outbox::OutboxEntry;

/// The message of `entry`, and the span to publish it in (disabled without the feature).
pub(super) fn outgoing(
    entry: OutboxEntry,
    exchange: Option<&str>,
) -> (OutgoingMessage, tracing::Span) {
    let stored = entry.trace_context.as_deref().and_then(|text| {
        let context = TraceContext::from_column(text);
        if context.is_none() {
            tracing::debug!(
                id = entry.id,
                "unreadable trace_context: sending no trace headers"
            );
        }
        context
    });
    let (span, context) = publish_span(&entry, exchange, stored);
    // The entry's id orders the row's messages on replicas (`SEQ_HEADER`).
    let mut message = OutgoingMessage::new(entry.routing_key, entry.body.into_bytes())
        .with_header(SEQ_HEADER, entry.id.to_string());
    if let Some(context) = context {
        for (name, value) in context.headers() {
            message = message.with_header(name, value);
        }
    }
    (message, span)
}

/// Without OpenTelemetry: no span, the stored context as it is.
#[cfg(not(feature = "opentelemetry"))]
fn publish_span(
    _entry: &OutboxEntry,
    _exchange: Option<&str>,
    stored: Option<TraceContext>,
) -> (tracing::Span, Option<TraceContext>) {
    (tracing::Span::none(), stored)
}

/// The `publish` span of `entry`, child of the write's span, and the context to send: the
/// span's own when OpenTelemetry records it, the stored one otherwise.
#[cfg(feature = "opentelemetry")]
fn publish_span(
    entry: &OutboxEntry,
    exchange: Option<&str>,
    stored: Option<TraceContext>,
) -> (tracing::Span, Option<TraceContext>) {
    use tracing::field::Empty;

    let span = tracing::info_span!(
        "publish",
        otel.name = Empty,
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = Empty,
        messaging.rabbitmq.destination.routing_key = Empty,
        messaging.message.conversation_id = Empty,
        cqrs.outbox_id = entry.id,
    );
    if !cqrs_core::trace::set_parent(&span, stored.as_ref()) {
        return (span, stored);
    }
    // Recorded before the span starts (its name cannot change after).
    let exchange = exchange.unwrap_or_default();
    span.record(
        "otel.name",
        format!("publish {exchange}:{}", entry.routing_key).as_str(),
    );
    span.record("messaging.destination.name", exchange);
    span.record(
        "messaging.rabbitmq.destination.routing_key",
        entry.routing_key.as_str(),
    );
    if let Ok(body) = serde_json::from_str::<serde_json::Value>(&entry.body)
        && let Some(correlation_id) = body.get("correlation_id").and_then(|id| id.as_str())
    {
        span.record("messaging.message.conversation_id", correlation_id);
    }
    let context = cqrs_core::trace::context_of_span(&span).or(stored);
    (span, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(trace_context: Option<&str>) -> OutboxEntry {
        OutboxEntry {
            id: 7,
            cqrs_id: "account".into(),
            routing_key: "account".into(),
            body: r#"{"signal_type":"SAVE"}"#.into(),
            trace_context: trace_context.map(str::to_owned),
        }
    }

    #[test]
    fn a_stored_context_goes_out_as_text_headers_beside_the_sequence() {
        let stored = r#"{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"congo=t61rcWkgMzE"}"#;
        let (message, _) = outgoing(entry(Some(stored)), Some("cqrs"));
        assert_eq!(message.body, br#"{"signal_type":"SAVE"}"#);
        assert_eq!(
            message.headers,
            vec![
                (SEQ_HEADER.to_owned(), "7".to_owned()),
                (
                    "traceparent".to_owned(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()
                ),
                ("tracestate".to_owned(), "congo=t61rcWkgMzE".to_owned()),
            ]
        );
    }

    #[test]
    fn without_a_stored_context_only_the_sequence_is_sent() {
        for stored in [None, Some("not json")] {
            let (message, _) = outgoing(entry(stored), Some("cqrs"));
            assert_eq!(
                message.headers,
                vec![(SEQ_HEADER.to_owned(), "7".to_owned())]
            );
        }
    }
}
