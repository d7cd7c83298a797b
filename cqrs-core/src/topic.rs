//! AMQP topic-exchange matching, for the in-memory transport.

/// Whether `routing_key` matches the topic binding `pattern`, with RabbitMQ's rules: words are
/// separated by `.`, `*` matches exactly one word and `#` matches zero or more words.
pub(crate) fn matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((first, key_rest)) if *word == "*" || word == first => {
                matches_words(rest, key_rest)
            }
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact_keys_match_only_themselves() {
        assert!(matches("author", "author"));
        assert!(matches("cqrs.q.author", "cqrs.q.author"));
        assert!(!matches("author", "authors"));
        assert!(!matches("cqrs.q.author", "cqrs.other.author"));
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("cqrs.*.author", "cqrs.q.author"));
        assert!(!matches("cqrs.*.author", "cqrs.author"));
        assert!(!matches("cqrs.*.author", "cqrs.a.b.author"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(matches("#", "anything.at.all"));
        assert!(matches("cqrs.#", "cqrs"));
        assert!(matches("cqrs.#.author", "cqrs.a.b.author"));
        assert!(matches("cqrs.#.author", "cqrs.author"));
        assert!(!matches("cqrs.#.author", "cqrs.a.b.book"));
    }
}
