//! Dead letters: where they go, the headers that say why, and how a message is named in logs.

use chrono::SecondsFormat;
use serde_json::Value;

use super::Context;
use super::apply::SEQ_HEADER;
use crate::payload::Payload;
use crate::transport::{Delivery, OutgoingMessage, dead_letter_routing_key};

/// The header of a dead letter holding why it was dead-lettered (a string).
pub const DEAD_LETTER_REASON_HEADER: &str = "x-cqrs-dead-letter-reason";

/// The header of a dead letter holding when it was dead-lettered (RFC 3339, UTC).
pub const DEAD_LETTER_AT_HEADER: &str = "x-cqrs-dead-letter-at";

/// The header of a dead letter holding the routing key it was received with (`<cqrs_id>` or
/// `cqrs.<queue>.<cqrs_id>`), so that it can be republished as it came.
pub const DEAD_LETTER_ROUTING_KEY_HEADER: &str = "x-cqrs-dead-letter-routing-key";

/// Reasons longer than this are cut (on a character boundary) in headers and logs.
const MAX_REASON_LEN: usize = 1000;

/// The dead letter of a message received with `routing_key`: its original body, to the
/// dead-letter routing key of `bound_cqrs_id` (a `cqrs_id` this service consumes, whose binding
/// exists), or else straight to the dead-letter queue through the default exchange; with the
/// configured dead-letter expiration and the reason headers.
pub(crate) fn dead_letter(
    ctx: &Context,
    delivery: &Delivery,
    bound_cqrs_id: Option<&str>,
    reason: &str,
) -> OutgoingMessage {
    let (body, routing_key) = (delivery.body(), delivery.routing_key());
    let message = match bound_cqrs_id {
        Some(cqrs_id) => OutgoingMessage::new(
            dead_letter_routing_key(&ctx.dead_letter_queue, cqrs_id),
            body,
        ),
        None => OutgoingMessage::to_queue(ctx.dead_letter_queue.as_str(), body),
    };
    let message = match ctx.config.dead_message_ttl() {
        Some(ttl) => message.with_expiration(ttl),
        None => message,
    };
    let message = message
        .with_header(DEAD_LETTER_REASON_HEADER, shorten(reason))
        .with_header(
            DEAD_LETTER_AT_HEADER,
            ctx.config
                .clock()
                .now()
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        )
        .with_header(DEAD_LETTER_ROUTING_KEY_HEADER, routing_key);
    // The master's sequence travels on, so that a dead letter sent again keeps its place, and
    // so does its trace.
    let mut message = match delivery.header(SEQ_HEADER) {
        Some(seq) => message.with_header(SEQ_HEADER, seq),
        None => message,
    };
    if let Some(trace) = crate::trace::TraceContext::from_headers(delivery.headers()) {
        for (name, value) in trace.headers() {
            message = message.with_header(name, value);
        }
    }
    message
}

/// `text`, cut to at most [`MAX_REASON_LEN`] bytes on a character boundary.
pub(crate) fn shorten(text: &str) -> &str {
    if text.len() <= MAX_REASON_LEN {
        return text;
    }
    let mut end = MAX_REASON_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How a message is named in logs: its `cqrs_id` and primary key, never its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Label {
    cqrs_id: Option<String>,
    pk: Option<String>,
}

impl Label {
    /// The label of a parsed message.
    pub(crate) fn of(payload: &Payload) -> Label {
        Label {
            cqrs_id: Some(payload.cqrs_id.clone()),
            pk: Some(pk_key(&payload.instance_pk)),
        }
    }

    /// The label of a message that could not be read.
    pub(crate) fn unreadable() -> Label {
        Label::default()
    }

    /// The `cqrs_id`, or `?`.
    pub(crate) fn cqrs_id(&self) -> &str {
        self.cqrs_id.as_deref().unwrap_or("?")
    }

    /// The primary key, or `?`.
    pub(crate) fn pk(&self) -> &str {
        self.pk.as_deref().unwrap_or("?")
    }
}

/// A primary key as text: a string as it is (so that `"7"` and `7` name the same row), any
/// other scalar as JSON; cut to 100 bytes.
pub(crate) fn pk_key(pk: &Value) -> String {
    let mut text = match pk {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() > 100 {
        let mut end = 100;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(MAX_REASON_LEN);
        let cut = shorten(&long);
        assert!(cut.len() <= MAX_REASON_LEN && cut.len() >= MAX_REASON_LEN - 1);
        assert!(long.starts_with(cut));
    }

    #[test]
    fn primary_keys_read_the_same_as_strings_or_numbers() {
        assert_eq!(pk_key(&Value::from(7)), "7");
        assert_eq!(pk_key(&Value::from("7")), "7");
        assert_eq!(pk_key(&Value::from(true)), "true");
        assert_eq!(pk_key(&Value::from("x".repeat(300))).len(), 100);
    }
}
