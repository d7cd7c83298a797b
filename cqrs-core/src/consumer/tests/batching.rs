//! Batches by size and by wait, rows routed to workers.

use std::collections::HashMap;

use super::*;
use crate::consumer::ConsumerRuntime;
use crate::consumer::dispatch::worker_for;

#[tokio::test(start_paused = true)]
async fn batches_fill_up_to_the_batch_size_and_the_rest_waits_the_batch_wait() {
    let (config, transport) = broker(Config::builder()).await;
    for pk in 0..25 {
        publish(&transport, "author", body("author", pk, 1)).await;
    }
    let recorder = Recorder::default();
    let start = Instant::now();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone())
        .batch_size(10)
        .batch_wait(Duration::from_secs(1))
        .spawn();
    eventually("25 applied", || recorder.applied_pks().len() == 25).await;
    assert_eq!(
        handle.stats().received,
        25,
        "stats are readable while running"
    );

    let calls = recorder.calls();
    let sizes: Vec<usize> = calls.iter().map(|call| call.pks.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert!(
        calls[0].started - start < Duration::from_millis(10),
        "a full batch does not wait"
    );
    assert!(
        calls[2].started - start >= Duration::from_secs(1),
        "the partial batch waited the batch wait"
    );
    let expected: Vec<String> = (0..25).map(|pk| pk.to_string()).collect();
    assert_eq!(recorder.applied_pks(), expected, "in the order received");

    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.batches, 3);
    assert_eq!(stats.created, 25);
    assert_eq!(stats.applied(), 25);
    assert_eq!(transport.ready_count("q"), Some(0));
    assert_eq!(transport.unacked_count("q"), Some(0), "all acknowledged");
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_applied_once_the_batch_wait_has_passed_since_its_first_message() {
    let (config, transport) = broker(
        Config::builder()
            .batch_size(100)
            .batch_wait(Duration::from_millis(50)),
    )
    .await;
    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let first = Instant::now();
    publish(&transport, "author", body("author", 1, 1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&transport, "author", body("author", 2, 1)).await;
    publish(&transport, "book", body("book", 3, 1)).await;
    eventually("a batch", || !recorder.calls().is_empty()).await;
    let calls = recorder.calls();
    assert_eq!(calls[0].pks, ["1", "2", "3"]);
    let waited = calls[0].started - first;
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(55),
        "{waited:?}"
    );

    publish(&transport, "author", body("author", 4, 1)).await;
    eventually("a second batch", || recorder.calls().len() == 2).await;
    assert_eq!(recorder.calls()[1].pks, ["4"]);
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.batches, 2);
}

#[tokio::test(start_paused = true)]
async fn a_zero_batch_wait_applies_what_has_arrived_at_once() {
    let (config, transport) = broker(Config::builder().batch_wait(Duration::ZERO)).await;
    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let start = Instant::now();
    publish(&transport, "author", body("author", 1, 1)).await;
    eventually("applied", || recorder.applied_pks().len() == 1).await;
    assert!(recorder.calls()[0].started - start < Duration::from_millis(2));
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn each_row_is_applied_by_one_worker_and_in_the_order_received() {
    let (config, transport) = broker(Config::builder().workers(4).batch_size(5)).await;
    for revision in 1..=3 {
        for pk in 0..30 {
            let cqrs_id = if pk % 2 == 0 { "author" } else { "book" };
            publish(&transport, cqrs_id, body(cqrs_id, pk, revision)).await;
        }
    }
    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(transport.clone(), config, recorder.clone()).spawn();
    eventually("90 applied", || recorder.applied_pks().len() == 90).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.applied(), 90);

    let mut worker_of: HashMap<(String, String), usize> = HashMap::new();
    let mut revisions: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for (worker, item, _) in recorder.applied() {
        let row = (item.cqrs_id.clone(), item.pk.clone());
        let expected = worker_for(&item.cqrs_id, &json!(item.pk.parse::<i64>().unwrap()), 4);
        assert_eq!(
            worker, expected,
            "{row:?} applied by the worker of its hash"
        );
        assert_eq!(
            *worker_of.entry(row.clone()).or_insert(worker),
            worker,
            "{row:?}"
        );
        revisions.entry(row).or_default().push(item.revision);
    }
    assert_eq!(revisions.len(), 30);
    for (row, seen) in revisions {
        assert_eq!(seen, [1, 2, 3], "{row:?} in order");
    }
    let mut used: Vec<usize> = worker_of.into_values().collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() > 1, "rows spread over the workers: {used:?}");
    assert!(recorder.calls().iter().all(|call| call.pks.len() <= 5));
    assert_eq!(transport.unacked_count("q"), Some(0));
}
