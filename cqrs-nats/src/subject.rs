//! How exchanges and routing keys map to JetStream streams and subjects.

/// The subject token that marks a publish through the default exchange (`exchange Some("")`),
/// addressed to a queue by name: `<exchange>._queue.<queue>`.
pub const DEFAULT_EXCHANGE_TOKEN: &str = "_queue";

/// The name of the stream holding the messages of `exchange`: the exchange name with every
/// character a stream name cannot hold (`.`, `*`, `>`, `/`, `\`, whitespace) replaced by `_`,
/// prefixed with `cqrs_`.
pub fn stream_name(exchange: &str) -> String {
    let mut name = String::with_capacity(exchange.len() + 5);
    name.push_str("cqrs_");
    name.extend(exchange.chars().map(|c| match c {
        '.' | '*' | '>' | '/' | '\\' => '_',
        c if c.is_whitespace() => '_',
        c => c,
    }));
    name
}

/// The subjects a stream of `exchange` holds: `<exchange>.>`.
pub fn stream_subjects(exchange: &str) -> String {
    format!("{exchange}.>")
}

/// The subject of a message published to `exchange` with `routing_key`:
/// `<exchange>.<routing key>`. Routing keys keep their dots, so `cqrs.replica.author` on the
/// exchange `cqrs` is the subject `cqrs.cqrs.replica.author`.
pub fn subject(exchange: &str, routing_key: &str) -> String {
    format!("{exchange}.{routing_key}")
}

/// The subject of a message sent straight to `queue` (the default exchange), kept in the
/// stream of the configured `exchange`: `<exchange>._queue.<queue>`.
pub fn queue_subject(exchange: &str, queue: &str) -> String {
    format!("{exchange}.{DEFAULT_EXCHANGE_TOKEN}.{queue}")
}

/// The routing key a delivery reports, from its subject: the subject without the
/// `<exchange>.` prefix, and the queue's name for a default-exchange subject.
pub fn routing_key<'a>(exchange: &str, subject: &'a str) -> &'a str {
    let Some(rest) = subject
        .strip_prefix(exchange)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return subject;
    };
    match rest
        .strip_prefix(DEFAULT_EXCHANGE_TOKEN)
        .and_then(|queue| queue.strip_prefix('.'))
    {
        Some(queue) => queue,
        None => rest,
    }
}

/// The name of the durable consumer of `queue`: the queue name with every character a consumer
/// name cannot hold replaced by `_`.
pub fn consumer_name(queue: &str) -> String {
    queue
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' | '/' | '\\' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// Whether `subject` matches the NATS subject `filter` (`*` one token, `>` the rest).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (token, Some(got)) if token == got => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// The deduplication id of a publish (`Nats-Msg-Id`): a 128-bit FNV-1a hash, in hex, of the
/// subject, the body and the headers. Publishing the very same message again within the
/// stream's duplicate window (a relay that lost a confirmation and publishes the outbox entry
/// again) stores it once.
pub fn message_id(subject: &str, body: &[u8], headers: &[(String, String)]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(PRIME);
    };
    feed(subject.as_bytes());
    feed(body);
    for (name, value) in headers {
        feed(name.as_bytes());
        feed(value.as_bytes());
    }
    format!("{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_map_to_subjects_and_back() {
        assert_eq!(
            subject("cqrs", "cqrs.replica.author"),
            "cqrs.cqrs.replica.author"
        );
        assert_eq!(
            routing_key("cqrs", "cqrs.cqrs.replica.author"),
            "cqrs.replica.author"
        );
        assert_eq!(
            queue_subject("cqrs", "dead_letter_b"),
            "cqrs._queue.dead_letter_b"
        );
        assert_eq!(
            routing_key("cqrs", "cqrs._queue.dead_letter_b"),
            "dead_letter_b"
        );
        assert_eq!(stream_name("my.exchange x"), "cqrs_my_exchange_x");
    }

    #[test]
    fn filters_match_like_nats() {
        assert!(matches("cqrs.author", "cqrs.author"));
        assert!(!matches("cqrs.author", "cqrs.author.x"));
        assert!(!matches("cqrs.author.x", "cqrs.author"));
        assert!(matches("cqrs.*", "cqrs.author"));
        assert!(matches("cqrs.>", "cqrs.a.b"));
        assert!(!matches("cqrs.>", "cqrs"));
    }

    #[test]
    fn message_ids_are_stable_and_tell_messages_apart() {
        let a = message_id("s", b"body", &[]);
        assert_eq!(a, message_id("s", b"body", &[]));
        assert_ne!(a, message_id("s", b"body2", &[]));
        assert_ne!(a, message_id("s", b"body", &[("h".into(), "v".into())]));
        assert_eq!(a.len(), 32);
    }
}
