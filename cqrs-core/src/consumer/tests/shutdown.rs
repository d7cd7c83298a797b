//! Stopping: the batch in hand is finished, the delay queue is republished, the rest comes
//! back from the broker; within the shutdown timeout.

use super::*;
use crate::consumer::ConsumerRuntime;

#[tokio::test(start_paused = true)]
async fn shutdown_acknowledges_the_batch_in_hand_and_republishes_the_delay_queue() {
    let (config, transport) =
        broker(Config::builder().retry_delay(Duration::from_secs(3600))).await;
    publish(&transport, "author", body("author", 99, 1)).await;
    let recorder = Recorder::default().with(|s| {
        s.fail_first.insert("99".to_owned());
    });
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_wait(Duration::from_millis(1))
        .spawn();
    eventually("99 failed", || recorder.calls().len() == 1).await;
    assert_eq!(
        transport.unacked_count("q"),
        Some(1),
        "waiting in the delay queue"
    );

    recorder.state().delay = Duration::from_millis(500);
    for pk in 1..=3 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    eventually("a batch in hand", || recorder.state().started.len() == 2).await;
    let stopping = Instant::now();
    let stats = handle.shutdown().await.unwrap();

    assert_eq!(
        recorder.applied_pks(),
        ["1", "2", "3"],
        "the batch in hand was finished"
    );
    assert!(Instant::now() - stopping >= Duration::from_millis(400));
    assert_eq!(stats.created, 3);
    assert_eq!(stats.retried, 1, "the delay queue was republished");
    assert_eq!(transport.unacked_count("q"), Some(0));
    let left = take_all(&transport, "q").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].routing_key, "cqrs.q.author");
    assert_eq!(left[0].payload().instance_pk, json!(99));
    assert_eq!(left[0].payload().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn messages_not_yet_in_a_batch_come_back_after_shutdown_and_nothing_is_lost() {
    let (config, transport) = broker(Config::builder()).await;
    for pk in 0..6 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let first = Recorder::default().with(|s| s.delay = Duration::from_millis(500));
    let handle = ConsumerRuntime::new(transport.clone(), config.clone(), first.clone())
        .batch_size(2)
        .spawn();
    eventually("a batch in hand", || first.state().started.len() == 1).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(first.applied_pks(), ["0", "1"]);
    assert_eq!(stats.received, 6);
    assert_eq!(transport.unacked_count("q"), Some(0));
    assert_eq!(
        transport.ready_count("q"),
        Some(4),
        "the rest is back in the queue"
    );

    let second = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config, second.clone()).spawn();
    eventually("the rest applied", || second.applied_pks().len() == 4).await;
    handle.shutdown().await.unwrap();
    assert_eq!(second.applied_pks(), ["2", "3", "4", "5"]);
    assert_eq!(transport.ready_count("q"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_a_batch_while_the_database_is_unavailable() {
    let (config, transport) = broker(Config::builder()).await;
    for pk in 0..3 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let recorder = Recorder::default().with(|s| s.unavailable = usize::MAX);
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .unavailable_backoff(Duration::from_secs(5), Duration::from_secs(5))
        .spawn();
    eventually("tried", || !recorder.calls().is_empty()).await;
    let stopping = Instant::now();
    let stats = handle.shutdown().await.unwrap();
    assert!(
        Instant::now() - stopping < Duration::from_secs(1),
        "no waiting out the backoff"
    );
    assert_eq!(stats.applied(), 0);
    assert_eq!(transport.unacked_count("q"), Some(0));
    assert_eq!(transport.ready_count("q"), Some(3), "delivered again later");
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_a_batch_that_outlasts_the_shutdown_timeout() {
    let (config, transport) = broker(Config::builder()).await;
    publish(&transport, "author", body("author", 1, 1)).await;
    let recorder = Recorder::default().with(|s| s.delay = Duration::from_secs(600));
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .shutdown_timeout(Duration::from_secs(2))
        .spawn();
    eventually("a batch in hand", || recorder.state().started.len() == 1).await;
    let stopping = Instant::now();
    let stats = handle.shutdown().await.unwrap();
    let took = Instant::now() - stopping;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(stats.applied(), 0);
    assert_eq!(transport.ready_count("q"), Some(1), "delivered again later");
}

#[tokio::test(start_paused = true)]
async fn a_closed_transport_stops_the_runtime() {
    let (config, transport) = broker(Config::builder()).await;
    let handle = ConsumerRuntime::new(transport.clone(), config, Recorder::default()).spawn();
    tokio::time::sleep(Duration::from_millis(10)).await;
    transport.close().await;
    eventually("stopped", || handle.is_finished()).await;
    assert!(handle.shutdown().await.is_ok());
}
