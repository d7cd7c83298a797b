//! Messages that never reach the applier: unreadable, unknown, expired, refused by `prepare`,
//! and broadcast SYNCs of only-direct-syncs models.

use super::*;
use crate::consumer::{
    ConsumerRuntime, DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_ROUTING_KEY_HEADER,
};

#[tokio::test(start_paused = true)]
async fn unreadable_unknown_expired_and_refused_messages_are_dead_lettered_with_their_reason() {
    let ttl = Duration::from_secs(60);
    let (config, transport) = broker(Config::builder().dead_message_ttl(Some(ttl))).await;
    let expired = payload(SignalType::Save, "author", 4, 1)
        .with_expires(Expiry::At(
            chrono::DateTime::parse_from_rfc3339("2001-02-03T04:05:06+00:00").unwrap(),
        ))
        .to_vec();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        // (routing key, body, expected dead-letter routing key, expected reason part)
        (
            "author",
            b"not json".to_vec(),
            "dead_letter_q",
            "not valid JSON",
        ),
        (
            "author",
            br#"{"signal_type":"SAVE","cqrs_id":"author","instance_data":{}}"#.to_vec(),
            "dead_letter_q",
            "misses the required key `instance_pk`",
        ),
        (
            "book",
            br#"{"signal_type":"SAVE","cqrs_id":"book","instance_data":{},"instance_pk":[1]}"#
                .to_vec(),
            "dead_letter_q",
            "`instance_pk` must be a JSON scalar",
        ),
        (
            "cqrs.q.film",
            body("film", 3, 1),
            "dead_letter_q",
            "unknown cqrs_id `film`",
        ),
        ("author", expired, "cqrs.dead_letter_q.author", "expired"),
        (
            "book",
            body("book", 13, 1),
            "cqrs.dead_letter_q.book",
            "bad instance_data for pk 13",
        ),
    ];
    for (routing_key, body, _, _) in &cases {
        let message = if routing_key.contains("film") {
            // No binding for an unknown model: deliver it to the queue directly.
            OutgoingMessage::to_queue("q", body.clone())
        } else {
            OutgoingMessage::new(*routing_key, body.clone())
        };
        transport.publish_confirmed(&message).await.unwrap();
    }
    let recorder = Recorder::default().with(|s| {
        s.refuse.insert("13".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("all dead-lettered", || handle.stats().dead_lettered == 6).await;
    let stats = handle.shutdown().await.unwrap();

    assert!(recorder.calls().is_empty(), "nothing reached apply");
    assert_eq!(stats.received, 6);
    assert_eq!(stats.malformed, 4);
    assert_eq!(stats.unknown, 1);
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.applied(), 0);
    assert_eq!(transport.ready_count("q"), Some(0));
    assert_eq!(transport.unacked_count("q"), Some(0));

    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead.len(), 6);
    for (routing_key, body, dead_routing_key, reason) in &cases {
        let letter = dead
            .iter()
            .find(|letter| &letter.body == body)
            .unwrap_or_else(|| panic!("the original body of {reason:?}"));
        assert_eq!(&letter.routing_key, dead_routing_key, "{reason}");
        let got = letter.header(DEAD_LETTER_REASON_HEADER).unwrap();
        assert!(got.contains(reason), "{got:?} should contain {reason:?}");
        let expected_origin = if routing_key.contains("film") {
            "q"
        } else {
            routing_key
        };
        assert_eq!(
            letter.header(DEAD_LETTER_ROUTING_KEY_HEADER),
            Some(expected_origin)
        );
        assert!(letter.header(DEAD_LETTER_AT_HEADER).is_some());
        assert_eq!(letter.expiration, Some(ttl));
    }
}

#[tokio::test(start_paused = true)]
async fn dead_letters_have_no_expiration_when_the_dead_message_ttl_is_none() {
    let (config, transport) = broker(Config::builder().dead_message_ttl(None)).await;
    publish(&transport, "author", b"[]".to_vec()).await;
    let handle = ConsumerRuntime::new(transport.clone(), config, Recorder::default()).spawn();
    eventually("dead-lettered", || handle.stats().dead_lettered == 1).await;
    handle.shutdown().await.unwrap();
    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead[0].expiration, None);
    assert!(
        dead[0]
            .header(DEAD_LETTER_REASON_HEADER)
            .unwrap()
            .contains("must be a JSON object")
    );
}

#[tokio::test(start_paused = true)]
async fn a_model_with_only_direct_syncs_ignores_broadcast_syncs() {
    let (config, transport) = broker(Config::builder()).await;
    let sync = |cqrs_id, pk| {
        payload(SignalType::Sync, cqrs_id, pk, 1)
            .with_expires(Expiry::Never)
            .to_vec()
    };
    publish(&transport, "author", sync("author", 1)).await;
    publish(&transport, "cqrs.q.author", sync("author", 2)).await;
    publish(&transport, "author", body("author", 3, 1)).await;
    publish(&transport, "book", sync("book", 4)).await;
    let recorder = Recorder::default().with(|s| {
        s.policies.insert(
            "author".to_owned(),
            ModelPolicy {
                only_direct_syncs: true,
                ..ModelPolicy::default()
            },
        );
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("applied", || recorder.applied_pks().len() == 3).await;
    let stats = handle.shutdown().await.unwrap();

    let applied: Vec<(String, bool, SignalType)> = recorder
        .applied()
        .into_iter()
        .map(|(_, item, _)| (item.pk, item.direct, item.signal))
        .collect();
    assert_eq!(
        applied,
        [
            ("2".to_owned(), true, SignalType::Sync),
            ("3".to_owned(), false, SignalType::Save),
            ("4".to_owned(), false, SignalType::Sync),
        ]
    );
    assert_eq!(stats.ignored, 1);
    assert_eq!(stats.received, 4);
    assert_eq!(transport.ready_count("q"), Some(0));
    assert_eq!(transport.unacked_count("q"), Some(0));
}

#[tokio::test]
async fn starting_without_a_queue_is_a_configuration_error() {
    let config = Config::builder().build().unwrap();
    let transport = InMemoryTransport::new(&config);
    let result = ConsumerRuntime::new(transport, config, Recorder::default())
        .run_until(std::future::pending())
        .await;
    match result {
        Err(Error::Config { setting, reason }) => {
            assert_eq!(setting, "CQRS_QUEUE");
            assert!(reason.contains("queue"), "{reason}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// A sequence header that is not a non-negative integer cannot be placed in its row's order:
/// the message is dead-lettered at once, the reason naming the header.
#[tokio::test(start_paused = true)]
async fn a_malformed_sequence_header_is_dead_lettered_with_its_reason() {
    use crate::consumer::SEQ_HEADER;
    let (config, transport) = broker(Config::builder()).await;
    for seq in ["-1", "twelve"] {
        let message =
            OutgoingMessage::new("author", body("author", 1, 1)).with_header(SEQ_HEADER, seq);
        transport.publish_confirmed(&message).await.unwrap();
    }
    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("both dead-lettered", || handle.stats().dead_lettered == 2).await;
    let stats = handle.shutdown().await.unwrap();

    assert!(recorder.calls().is_empty(), "nothing reached apply");
    assert_eq!(stats.malformed, 2);
    for letter in take_all(&transport, "dead_letter_q").await {
        let reason = letter.header(DEAD_LETTER_REASON_HEADER).unwrap();
        assert!(reason.contains(SEQ_HEADER), "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_runtime_limited_to_some_cqrs_ids_dead_letters_the_other_models_messages() {
    // The queue is still bound for `book` (as by an earlier, unlimited run).
    let (config, transport) = broker(Config::builder()).await;
    publish(&transport, "book", body("book", 1, 1)).await;
    publish(&transport, "author", body("author", 2, 1)).await;
    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .only_cqrs_ids(["author"])
        .spawn();
    eventually("one applied, one dead-lettered", || {
        let stats = handle.stats();
        stats.applied() == 1 && stats.dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();

    assert_eq!(recorder.applied_pks(), ["2"], "only the author was applied");
    assert_eq!((stats.not_selected, stats.unknown), (1, 0));
    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].routing_key, "cqrs.dead_letter_q.book");
    let reason = dead[0].header(DEAD_LETTER_REASON_HEADER).unwrap();
    assert!(
        reason.contains("cqrs_id `book` is not consumed by this worker")
            && reason.contains("`author`"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn limiting_a_runtime_to_an_unknown_cqrs_id_fails_at_start_naming_the_registered_ones() {
    let (config, transport) = broker(Config::builder()).await;
    let error = ConsumerRuntime::new(transport.clone(), config, Recorder::default())
        .only_cqrs_ids(["author", "film"])
        .run_until(std::future::pending())
        .await
        .unwrap_err();
    let Error::UnknownCqrsIds {
        unknown,
        registered,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(unknown, &["film"]);
    assert!(registered.contains(&"author".to_owned()));
    let text = error.to_string();
    assert!(
        text.contains("`film`") && text.contains("`author`"),
        "{text}"
    );
}
