//! Bisection, retries through the delay queue, dead letters after the last retry, an
//! unavailable database, failed publishes.

use super::*;
use crate::consumer::{ConsumerRuntime, DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER};

#[tokio::test(start_paused = true)]
async fn a_failing_batch_is_split_until_the_bad_message_is_alone_and_the_others_are_applied() {
    let (config, transport) = broker(Config::builder().max_retries(Some(0))).await;
    for pk in 0..8 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let recorder = Recorder::default().with(|s| {
        s.fail.insert("5".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_size(8)
        .batch_wait(Duration::from_secs(1))
        .spawn();
    eventually("dead-lettered", || handle.stats().dead_lettered == 1).await;
    let stats = handle.shutdown().await.unwrap();

    assert_eq!(recorder.applied_pks(), ["0", "1", "2", "3", "4", "6", "7"]);
    let calls: Vec<(Vec<String>, &str)> = recorder
        .calls()
        .into_iter()
        .map(|call| (call.pks, call.outcome))
        .collect();
    let pks = |range: std::ops::Range<i32>| range.map(|pk| pk.to_string()).collect::<Vec<_>>();
    assert_eq!(
        calls,
        [
            (pks(0..8), "failed"),
            (pks(0..4), "ok"),
            (pks(4..8), "failed"),
            (pks(4..6), "failed"),
            (pks(4..5), "ok"),
            (pks(5..6), "failed"),
            (pks(6..8), "ok"),
        ]
    );
    assert_eq!(stats.batch_failures, 3, "three splits");
    assert_eq!(stats.batches, 3);
    assert_eq!(stats.created, 7);
    assert_eq!(stats.retried, 0);

    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload().instance_pk, json!(5));
    assert_eq!(
        dead[0].header(DEAD_LETTER_REASON_HEADER),
        Some("failed after 0 retries: constraint violated by pk 5")
    );
    assert_eq!(transport.ready_count("q"), Some(0));
    assert_eq!(transport.unacked_count("q"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_message_is_republished_with_one_more_retry_to_the_direct_key_after_the_delay() {
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(5))
            .retry_delay(Duration::from_secs(2)),
    )
    .await;
    // No `expires`: the retry carries the expiry counted from the first receipt.
    let original = payload(SignalType::Save, "author", 1, 1).to_vec();
    publish(&transport, "author", original).await;
    publish(&transport, "author", body("author", 2, 1)).await;
    let recorder = Recorder::default().with(|s| {
        s.fail_first.insert("1".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_wait(Duration::from_millis(1))
        .spawn();
    eventually("retry applied", || {
        recorder.applied_pks().contains(&"1".to_owned())
    })
    .await;
    let stats = handle.shutdown().await.unwrap();

    let applied = recorder.applied();
    let (_, retry, applied_at) = applied.iter().find(|(_, item, _)| item.pk == "1").unwrap();
    assert_eq!(retry.retries, 1);
    assert!(retry.direct, "republished to cqrs.q.author");
    assert!(
        matches!(retry.expires, Expiry::At(_)),
        "{:?}",
        retry.expires
    );
    let failed_at = recorder
        .calls()
        .iter()
        .find(|call| call.outcome == "failed" && call.pks == ["1"])
        .unwrap()
        .started;
    let waited = *applied_at - failed_at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    assert_eq!(stats.retried, 1);
    assert_eq!(stats.received, 3, "two messages and one retry");
    assert_eq!(stats.created, 2);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(transport.ready_count("q"), Some(0));
    assert_eq!(transport.unacked_count("q"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_message_failing_every_time_is_dead_lettered_after_exactly_max_retries() {
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(3))
            .retry_delay(Duration::from_millis(10)),
    )
    .await;
    publish(&transport, "author", body("author", 1, 1)).await;
    let recorder = Recorder::default().with(|s| {
        s.fail.insert("1".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config.clone(), recorder.clone()).spawn();
    eventually("dead-lettered", || handle.stats().dead_lettered == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = handle.shutdown().await.unwrap();

    assert_eq!(
        recorder.attempts_of("1"),
        4,
        "the first attempt and three retries"
    );
    assert_eq!(stats.retried, 3);
    assert_eq!(stats.received, 4);
    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.routing_key, "cqrs.dead_letter_q.author");
    assert_eq!(letter.payload().retries, 3);
    assert_eq!(
        letter.header(DEAD_LETTER_REASON_HEADER),
        Some("failed after 3 retries: constraint violated by pk 1")
    );
    let at = letter.header(DEAD_LETTER_AT_HEADER).unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert_eq!(letter.expiration, config.dead_message_ttl());
    assert_eq!(transport.ready_count("q"), Some(0));
    assert_eq!(transport.unacked_count("q"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_model_policy_overrides_the_configured_retries_and_delay() {
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(5))
            .retry_delay(Duration::from_secs(60)),
    )
    .await;
    publish(&transport, "book", body("book", 7, 1)).await;
    let recorder = Recorder::default().with(|s| {
        s.fail.insert("7".to_owned());
        s.policies.insert(
            "book".to_owned(),
            ModelPolicy {
                max_retries: Some(Some(1)),
                retry_delay: Some(Duration::from_millis(5)),
                ..ModelPolicy::default()
            },
        );
    });
    let start = Instant::now();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("dead-lettered", || handle.stats().dead_lettered == 1).await;
    assert!(
        Instant::now() - start < Duration::from_secs(1),
        "the model's delay"
    );
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(recorder.attempts_of("7"), 2);
    assert_eq!(stats.retried, 1);
    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead[0].routing_key, "cqrs.dead_letter_q.book");
    assert!(
        dead[0]
            .header(DEAD_LETTER_REASON_HEADER)
            .unwrap()
            .starts_with("failed after 1 retries: ")
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_delay_queue_republishes_the_entry_due_first_at_once() {
    let (config, transport) = broker(
        Config::builder()
            .delay_queue_max_size(2)
            .retry_delay(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(config.prefetch(), 3);
    for pk in 1..=3 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let recorder = Recorder::default().with(|s| {
        for pk in ["1", "2", "3"] {
            s.fail_first.insert(pk.to_owned());
        }
    });
    let start = Instant::now();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_size(1)
        .spawn();
    eventually("the first retry applied", || {
        recorder.applied_pks() == ["1"]
    })
    .await;
    assert!(
        Instant::now() - start < Duration::from_secs(1),
        "long before its delay"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.applied_pks(), ["1"], "the others wait their delay");
    assert_eq!(handle.stats().retried, 1);

    // Stopping republishes the two still waiting.
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.retried, 3);
    let waiting = take_all(&transport, "q").await;
    let mut pks: Vec<(Value, u32, String)> = waiting
        .iter()
        .map(|m| {
            (
                m.payload().instance_pk,
                m.payload().retries,
                m.routing_key.clone(),
            )
        })
        .collect();
    pks.sort_by_key(|(pk, _, _)| pk.as_i64());
    assert_eq!(
        pks,
        [
            (json!(2), 1, "cqrs.q.author".to_owned()),
            (json!(3), 1, "cqrs.q.author".to_owned())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_database_keeps_the_batch_unacknowledged_and_it_is_tried_again() {
    let (config, transport) = broker(Config::builder()).await;
    for pk in 0..5 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let recorder = Recorder::default().with(|s| s.unavailable = 3);
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_wait(Duration::from_millis(1))
        .unavailable_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .spawn();
    eventually("a first attempt", || !recorder.calls().is_empty()).await;
    assert_eq!(
        transport.unacked_count("q"),
        Some(5),
        "held, not acknowledged"
    );
    assert!(recorder.applied().is_empty());

    eventually("applied", || recorder.applied_pks().len() == 5).await;
    let stats = handle.shutdown().await.unwrap();
    let outcomes: Vec<(usize, &str)> = recorder
        .calls()
        .iter()
        .map(|call| (call.pks.len(), call.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (5, "unavailable"),
            (5, "unavailable"),
            (5, "unavailable"),
            (5, "ok")
        ]
    );
    assert_eq!(stats.unavailable_retries, 3);
    assert_eq!(
        stats.batch_failures, 0,
        "unavailable is not a failure to split"
    );
    assert_eq!(stats.retried, 0);
    assert_eq!(transport.unacked_count("q"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_applier_fails_only_the_message_that_made_it_panic() {
    let (config, transport) = broker(Config::builder().max_retries(Some(0))).await;
    for pk in 0..4 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let recorder = Recorder::default().with(|s| {
        s.panic_on.insert("2".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("dead-lettered", || handle.stats().dead_lettered == 1).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(recorder.applied_pks(), ["0", "1", "3"]);
    assert_eq!(stats.created, 3);
    let dead = take_all(&transport, "dead_letter_q").await;
    let reason = dead[0].header(DEAD_LETTER_REASON_HEADER).unwrap();
    assert!(reason.contains("panicked: applier bug on pk 2"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_dead_letter_publish_leaves_the_message_unacknowledged_and_is_tried_again() {
    let (config, inner) = broker(Config::builder()).await;
    let transport = Flaky {
        inner: inner.clone(),
        failing: Arc::new(AtomicBool::new(true)),
    };
    publish(&inner, "author", b"not json".to_vec()).await;
    let handle = ConsumerRuntime::new(transport.clone(), config, Recorder::default()).spawn();
    eventually("received", || handle.stats().received == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inner.unacked_count("q"), Some(1), "kept, not acknowledged");
    assert_eq!(inner.ready_count("dead_letter_q"), Some(0));
    assert_eq!(handle.stats().dead_lettered, 0);

    transport.failing.store(false, Ordering::SeqCst);
    eventually("dead-lettered", || handle.stats().dead_lettered == 1).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.malformed, 1);
    assert_eq!(inner.ready_count("dead_letter_q"), Some(1));
    assert_eq!(inner.unacked_count("q"), Some(0));
    assert_eq!(inner.ready_count("q"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_retry_publish_keeps_the_message_and_tries_again() {
    let (config, inner) = broker(Config::builder().retry_delay(Duration::from_millis(10))).await;
    let transport = Flaky {
        inner: inner.clone(),
        failing: Arc::new(AtomicBool::new(false)),
    };
    publish(&inner, "author", body("author", 1, 1)).await;
    let recorder = Recorder::default().with(|s| {
        s.fail_first.insert("1".to_owned());
    });
    transport.failing.store(true, Ordering::SeqCst);
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("failed once", || recorder.calls().len() == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        inner.unacked_count("q"),
        Some(1),
        "waiting, not acknowledged"
    );
    assert_eq!(handle.stats().retried, 0);

    transport.failing.store(false, Ordering::SeqCst);
    eventually("retried and applied", || recorder.applied_pks() == ["1"]).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.retried, 1);
    assert_eq!(inner.unacked_count("q"), Some(0));
}

/// A cqrs-diesel master's message keeps its `x-cqrs-seq` when it is retried and when it is
/// dead-lettered, so that a replica still places it by the master's order.
#[tokio::test(start_paused = true)]
async fn a_retry_and_a_dead_letter_keep_the_master_sequence() {
    use crate::consumer::SEQ_HEADER;
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(1))
            .retry_delay(Duration::from_millis(10)),
    )
    .await;
    for (pk, seq) in [(1, "41"), (2, "42")] {
        let message =
            OutgoingMessage::new("author", body("author", pk, 1)).with_header(SEQ_HEADER, seq);
        transport.publish_confirmed(&message).await.unwrap();
    }
    let recorder = Recorder::default().with(|s| {
        s.fail_first.insert("1".to_owned());
        s.fail.insert("2".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("one applied, one dead-lettered", || {
        handle.stats().dead_lettered == 1 && recorder.applied_pks().contains(&"1".to_owned())
    })
    .await;
    handle.shutdown().await.unwrap();

    let applied = recorder.applied();
    let (_, retry, _) = applied.iter().find(|(_, item, _)| item.pk == "1").unwrap();
    assert_eq!((retry.retries, retry.seq), (1, Some(41)));
    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header(SEQ_HEADER), Some("42"));
}

/// A message's W3C trace headers go with its retry and its dead letter: they are the same
/// write, and a dead letter sent again continues the same trace.
#[tokio::test(start_paused = true)]
async fn a_retry_and_a_dead_letter_keep_the_trace_headers() {
    use crate::trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(1))
            .retry_delay(Duration::from_millis(10)),
    )
    .await;
    let message = OutgoingMessage::new("author", body("author", 2, 1))
        .with_header(TRACEPARENT_HEADER, PARENT)
        .with_header(TRACESTATE_HEADER, "congo=t61rcWkgMzE");
    transport.publish_confirmed(&message).await.unwrap();
    let recorder = Recorder::default().with(|s| {
        s.fail.insert("2".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("retried, then dead-lettered", || {
        handle.stats().dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.retried, 1, "the dead letter comes from the retry");

    let dead = take_all(&transport, "dead_letter_q").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header(TRACEPARENT_HEADER), Some(PARENT));
    assert_eq!(dead[0].header(TRACESTATE_HEADER), Some("congo=t61rcWkgMzE"));
}

#[tokio::test(start_paused = true)]
async fn the_applier_s_retry_choice_dead_letters_at_once_or_sets_the_delay() {
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(5))
            .retry_delay(Duration::from_secs(1)),
    )
    .await;
    publish(&transport, "book", body("book", 7, 1)).await;
    publish(&transport, "book", body("book", 8, 1)).await;
    let recorder = Recorder::default().with(|s| {
        s.fail.insert("7".to_owned());
        s.fail_first.insert("8".to_owned());
        s.choices.insert(
            "7".to_owned(),
            RetryChoice {
                retry: Some(false),
                delay: None,
            },
        );
        s.choices.insert(
            "8".to_owned(),
            RetryChoice {
                retry: None,
                delay: Some(Duration::from_secs(30)),
            },
        );
    });
    let start = Instant::now();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_size(1)
        .spawn();
    eventually("one dead-lettered, one applied after its delay", || {
        let stats = handle.stats();
        stats.dead_lettered == 1 && stats.applied() == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(recorder.attempts_of("7"), 1, "refused: no retry");
    assert_eq!(stats.retried, 1, "only 8");
    let applied_at = recorder
        .applied()
        .into_iter()
        .find(|(_, item, _)| item.pk == "8")
        .map(|(_, _, at)| at)
        .unwrap();
    let waited = applied_at - start;
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "the choice's 30 s, not the configured 1 s: {waited:?}"
    );
    let dead = take_all(&transport, "dead_letter_q").await;
    let reason = dead[0].header(DEAD_LETTER_REASON_HEADER).unwrap();
    assert!(reason.contains("should_retry_cqrs refused"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_batch_is_tried_again_whole_after_the_retry_delay_spending_no_retries() {
    let (config, transport) = broker(
        Config::builder()
            .max_retries(Some(0))
            .retry_delay(Duration::from_secs(7)),
    )
    .await;
    publish(&transport, "author", body("author", 1, 1)).await;
    publish(&transport, "author", body("author", 2, 1)).await;
    let recorder = Recorder::default().with(|s| s.timed_out = 2);
    let start = Instant::now();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_size(2)
        .batch_wait(Duration::from_millis(50))
        .spawn();
    eventually("both applied", || handle.stats().applied() == 2).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        (
            stats.timeout_retries,
            stats.retried,
            stats.dead_lettered,
            stats.batch_failures
        ),
        (2, 0, 0, 0),
        "not split, no retry spent although max_retries = 0: {stats:?}"
    );
    let calls = recorder.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|call| call.pks == ["1", "2"]), "{calls:?}");
    let last = calls[2].started - start;
    assert!(
        last >= Duration::from_secs(14) && last < Duration::from_secs(15),
        "two retry delays of 7 s: {last:?}"
    );
}
