//! W3C trace context across the broker: a write's trace goes on in the worker that applies
//! its message.
//!
//! ```text
//! handler span ──▶ outbox entry ──▶ relay: publish span ──headers──▶ worker: process span
//!                  (trace_context)        (traceparent, tracestate)
//! ```
//!
//! A [`TraceContext`] is the pair of W3C Trace Context values, `traceparent` and `tracestate`,
//! in their header form. It travels as:
//!
//! - the outbox column `trace_context`: a JSON object
//!   `{"traceparent":"00-<trace id>-<span id>-<flags>","tracestate":"..."}` (`tracestate`
//!   left out when empty), NULL when the write had no sampled span context;
//! - two text AMQP headers, [`TRACEPARENT_HEADER`] and [`TRACESTATE_HEADER`], beside
//!   `x-cqrs-seq`, as the RabbitMQ .NET client's OpenTelemetry propagation sends them. The
//!   message body is never touched, so django-cqrs services see the same bytes.
//!
//! Reading and writing these forms needs nothing but this crate. Capturing the context of a
//! `tracing` span and continuing a trace in a span need the cargo feature `opentelemetry`
//! (the span's OpenTelemetry context through `tracing-opentelemetry`, written and read with
//! the W3C `TraceContextPropagator`); without it [`TraceContext::current`] is always `None`.

use serde::{Deserialize, Serialize};

/// The AMQP header holding the W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The AMQP header holding the W3C `tracestate` (vendor entries), sent when not empty.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// A W3C trace context in its header form: what the outbox stores of the write's span and what
/// the relay sends with the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
    pub traceparent: String,
    /// Vendor-specific entries (`key=value,...`); `None` when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of the current `tracing` span, when it carries a valid, sampled
    /// OpenTelemetry span context (feature `opentelemetry`); `None` otherwise, and always
    /// without the feature.
    pub fn current() -> Option<TraceContext> {
        #[cfg(feature = "opentelemetry")]
        {
            otel::context_of_span(&tracing::Span::current())
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            None
        }
    }

    /// The form stored in the outbox's `trace_context` column (a small JSON object).
    pub fn to_column(&self) -> String {
        // Two strings: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the outbox column; `None` when it is not a context written by
    /// [`to_column`](Self::to_column) (the message then goes without trace headers).
    pub fn from_column(text: &str) -> Option<TraceContext> {
        let context: TraceContext = serde_json::from_str(text).ok()?;
        (!context.traceparent.is_empty()).then_some(context)
    }

    /// Reads the [`TRACEPARENT_HEADER`] and [`TRACESTATE_HEADER`] of a message; `None` without
    /// a `traceparent`.
    pub fn from_headers(headers: &[(String, String)]) -> Option<TraceContext> {
        let find = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let traceparent = find(TRACEPARENT_HEADER).filter(|value| !value.is_empty())?;
        let tracestate = find(TRACESTATE_HEADER).filter(|value| !value.is_empty());
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// The headers to send: `traceparent`, and `tracestate` when there is one.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT_HEADER, self.traceparent.as_str())).chain(
            self.tracestate
                .as_deref()
                .map(|state| (TRACESTATE_HEADER, state)),
        )
    }
}

#[cfg(feature = "opentelemetry")]
pub use otel::{context_of_span, set_parent};

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

    use super::{TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext};

    /// The context of `span` (its OpenTelemetry span context, as the W3C propagator writes
    /// it), when it is valid and sampled.
    pub fn context_of_span(span: &tracing::Span) -> Option<TraceContext> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() || !span_context.is_sampled() {
            return None;
        }
        let mut carrier = HashMap::with_capacity(2);
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        let traceparent = carrier.remove(TRACEPARENT_HEADER)?;
        let tracestate = carrier
            .remove(TRACESTATE_HEADER)
            .filter(|state| !state.is_empty());
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// Makes the remote span of `context` the parent of `span` (which must not have been
    /// entered yet), or, with `None` or an unreadable context, makes `span` the root of a new
    /// trace. Returns whether a `tracing-opentelemetry` layer records `span`: when it does
    /// not (the span is disabled, or no such layer is installed), the caller can skip the
    /// work of filling in its attributes.
    pub fn set_parent(span: &tracing::Span, context: Option<&TraceContext>) -> bool {
        if span.is_disabled() {
            return false;
        }
        let parent = match context {
            Some(context) => {
                let mut carrier = HashMap::with_capacity(2);
                carrier.insert(TRACEPARENT_HEADER.to_owned(), context.traceparent.clone());
                if let Some(state) = &context.tracestate {
                    carrier.insert(TRACESTATE_HEADER.to_owned(), state.clone());
                }
                let parent = TraceContextPropagator::new().extract(&carrier);
                if !parent.span().span_context().is_valid() {
                    tracing::debug!(
                        traceparent = %context.traceparent,
                        "ignoring an unreadable traceparent: starting a new trace"
                    );
                }
                parent
            }
            None => opentelemetry::Context::new(),
        };
        match span.set_parent(parent) {
            Ok(()) | Err(SetParentError::AlreadyStarted) => true,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_form_round_trips_and_leaves_out_an_empty_state() {
        let context = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: None,
        };
        let column = context.to_column();
        assert_eq!(
            column,
            r#"{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#
        );
        assert_eq!(TraceContext::from_column(&column), Some(context));
        assert_eq!(TraceContext::from_column("not json"), None);
        assert_eq!(TraceContext::from_column(r#"{"traceparent":""}"#), None);
    }

    #[test]
    fn headers_carry_the_state_only_when_there_is_one() {
        let mut context = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        let headers: Vec<(String, String)> = context
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(headers.len(), 2);
        assert_eq!(TraceContext::from_headers(&headers), Some(context.clone()));
        context.tracestate = None;
        assert_eq!(context.headers().count(), 1);
        assert_eq!(TraceContext::from_headers(&[]), None);
    }
}
