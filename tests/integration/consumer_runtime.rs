//! `ConsumerRuntime` against the real brokers (RabbitMQ and NATS JetStream, one generic body
//! per scenario): retries then dead letter for a poison message, dead letters for unreadable,
//! expired and unknown messages, nothing lost across a shutdown.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_diesel::runtime::{Applied, Applier, BatchError, Incoming, ModelPolicy};
use cqrs_diesel::transport::{
    Consumer, DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER, OutgoingMessage,
};
use cqrs_diesel::wire::{Expiry, Payload, SignalType};
use cqrs_diesel::{Config, ConfigBuilder, ConsumerRuntime, Topology, Transport};
use serde_json::json;

use crate::brokers::{Broker, broker_tests};

broker_tests!(
    a_poison_message_is_retried_max_retries_times_then_dead_lettered_with_its_reason,
    unparseable_and_expired_bodies_are_dead_lettered_with_their_reasons,
    a_message_for_an_unknown_cqrs_id_is_dead_lettered,
    a_shutdown_in_the_middle_of_batches_loses_nothing,
);

/// A test applier for the model `author`: records every attempt and what it applied, fails
/// the primary keys it is told to, and takes `delay` per batch.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    state: Arc<Mutex<RecorderState>>,
    fail: Arc<HashSet<i64>>,
    delay: Duration,
}

#[derive(Default)]
struct RecorderState {
    attempts: HashMap<i64, usize>,
    applied: Vec<i64>,
}

impl Recorder {
    fn failing(pks: &[i64]) -> Self {
        Recorder {
            fail: Arc::new(pks.iter().copied().collect()),
            ..Recorder::default()
        }
    }

    fn attempts(&self, pk: i64) -> usize {
        let state = self.state.lock().unwrap();
        state.attempts.get(&pk).copied().unwrap_or(0)
    }

    pub(crate) fn applied(&self) -> Vec<i64> {
        self.state.lock().unwrap().applied.clone()
    }
}

impl Applier for Recorder {
    type Prepared = i64;

    fn cqrs_ids(&self) -> Vec<String> {
        vec!["author".to_owned()]
    }

    fn policy(&self, cqrs_id: &str) -> Option<ModelPolicy> {
        (cqrs_id == "author").then(ModelPolicy::default)
    }

    fn prepare(&self, incoming: &Incoming) -> Result<i64, String> {
        incoming
            .payload
            .instance_pk
            .as_i64()
            .ok_or_else(|| "the primary key must be an integer".to_owned())
    }

    async fn apply(
        &self,
        _worker: usize,
        batch: Vec<Arc<i64>>,
    ) -> Result<Vec<Applied>, BatchError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut state = self.state.lock().unwrap();
        if batch.len() == 1 {
            *state.attempts.entry(*batch[0]).or_default() += 1;
        }
        if let Some(pk) = batch.iter().find(|pk| self.fail.contains(pk)) {
            return Err(BatchError::Failed(format!(
                "check constraint violated by pk {pk}"
            )));
        }
        state.applied.extend(batch.iter().map(|pk| **pk));
        Ok(vec![Applied::Created; batch.len()])
    }
}

/// A replica queue (and dead-letter queue) bound to `author` on an exchange of its own.
struct Queues<B: Broker> {
    config: Config,
    transport: B::Transport,
    queue: String,
    dlq: String,
}

impl<B: Broker> Queues<B> {
    async fn new(tag: &str, configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let config = configure(B::config_builder(tag)).build().unwrap();
        let transport = B::transport(&config).await;
        transport
            .declare(&Topology::from_config(&config, ["author"]))
            .await
            .expect("topology declared");
        Queues {
            queue: config.queue().unwrap().to_owned(),
            dlq: config.dead_letter_queue().unwrap().to_owned(),
            config,
            transport,
        }
    }

    async fn publish(&self, routing_key: &str, body: Vec<u8>) {
        self.transport
            .publish_confirmed(&OutgoingMessage::new(routing_key, body))
            .await
            .expect("published");
    }

    /// Waits until the dead-letter queue has handed out `n` messages and acknowledges them.
    async fn dead_letters(&self, n: usize, within: Duration) -> Vec<DeadLetter> {
        let mut consumer = self.transport.consume(&self.dlq, 100).await.unwrap();
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let delivery = tokio::time::timeout_at(deadline, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} dead letters arrived", out.len()))
                .expect("the consumer is open")
                .expect("no consumer error");
            out.push(DeadLetter {
                routing_key: delivery.routing_key().to_owned(),
                body: delivery.body().to_vec(),
                headers: delivery.headers().iter().cloned().collect(),
                expiration: delivery.expiration(),
            });
            delivery.ack().await.expect("ack");
        }
        out
    }

    /// Messages ready in the replica queue.
    async fn depth(&self) -> u32 {
        B::depth(&self.config, &self.queue).await
    }

    async fn teardown(self) {
        self.transport.close().await;
        B::cleanup(&self.config).await;
    }
}

struct DeadLetter {
    routing_key: String,
    body: Vec<u8>,
    headers: HashMap<String, String>,
    expiration: Option<Duration>,
}

impl DeadLetter {
    fn reason(&self) -> &str {
        self.headers
            .get(DEAD_LETTER_REASON_HEADER)
            .map_or("", String::as_str)
    }
}

fn body(pk: i64) -> Vec<u8> {
    payload(pk).with_expires(Expiry::Never).to_vec()
}

fn payload(pk: i64) -> Payload {
    let serde_json::Value::Object(data) = json!({"id": pk, "cqrs_revision": 1}) else {
        unreachable!()
    };
    Payload::new(SignalType::Save, "author", json!(pk), data)
}

async fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_poison_message_is_retried_max_retries_times_then_dead_lettered_with_its_reason<
    B: Broker,
>() {
    let broker = Queues::<B>::new("poison", |b| {
        b.max_retries(Some(3))
            .retry_delay(Duration::from_millis(50))
    })
    .await;
    broker.publish("author", body(1)).await;
    broker.publish("author", body(2)).await;
    let recorder = Recorder::failing(&[1]);
    let handle = ConsumerRuntime::new(
        broker.transport.clone(),
        broker.config.clone(),
        recorder.clone(),
    )
    .batch_wait(Duration::from_millis(5))
    .spawn();

    let dead = broker.dead_letters(1, Duration::from_secs(10)).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        recorder.attempts(1),
        4,
        "the first attempt and exactly three retries"
    );
    assert_eq!(stats.retried, 3);
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(recorder.applied(), [2]);

    let letter = &dead[0];
    assert_eq!(letter.routing_key, format!("cqrs.{}.author", broker.dlq));
    assert_eq!(
        letter.reason(),
        "failed after 3 retries: check constraint violated by pk 1"
    );
    assert!(letter.headers.contains_key(DEAD_LETTER_AT_HEADER));
    assert_eq!(letter.expiration, Some(Duration::from_secs(864_000)));
    let dead_payload = Payload::from_slice(&letter.body).unwrap();
    assert_eq!(dead_payload.retries, 3);
    assert_eq!(dead_payload.instance_pk, json!(1));
    assert_eq!(broker.depth().await, 0);
    broker.teardown().await;
}

async fn unparseable_and_expired_bodies_are_dead_lettered_with_their_reasons<B: Broker>() {
    let broker = Queues::<B>::new("badbody", |b| b).await;
    let expired = payload(3)
        .with_expires(Expiry::At(
            chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00+00:00").unwrap(),
        ))
        .to_vec();
    broker.publish("author", b"{not json".to_vec()).await;
    broker.publish("author", expired.clone()).await;
    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(
        broker.transport.clone(),
        broker.config.clone(),
        recorder.clone(),
    )
    .spawn();

    let dead = broker.dead_letters(2, Duration::from_secs(10)).await;
    let stats = handle.shutdown().await.unwrap();
    assert!(recorder.applied().is_empty());
    assert_eq!(
        (stats.malformed, stats.expired, stats.dead_lettered),
        (1, 1, 2)
    );

    let unreadable = dead.iter().find(|d| d.body == b"{not json").unwrap();
    assert!(
        unreadable.reason().contains("not valid JSON"),
        "{}",
        unreadable.reason()
    );
    assert_eq!(
        unreadable.routing_key, broker.dlq,
        "through the default exchange"
    );
    let late = dead.iter().find(|d| d.body == expired).unwrap();
    assert_eq!(late.reason(), "expired");
    assert_eq!(late.routing_key, format!("cqrs.{}.author", broker.dlq));
    assert_eq!(broker.depth().await, 0);
    broker.teardown().await;
}

async fn a_message_for_an_unknown_cqrs_id_is_dead_lettered<B: Broker>() {
    let broker = Queues::<B>::new("unknown", |b| b).await;
    // Nothing binds `film` to the queue: deliver it there through the default exchange, as a
    // stray binding or a misconfigured master would.
    let mut film = payload(5).with_expires(Expiry::Never);
    film.cqrs_id = "film".to_owned();
    broker
        .transport
        .publish_confirmed(&OutgoingMessage::to_queue(
            broker.queue.clone(),
            film.to_vec(),
        ))
        .await
        .expect("published to the queue by name");

    let recorder = Recorder::default();
    let handle = ConsumerRuntime::new(
        broker.transport.clone(),
        broker.config.clone(),
        recorder.clone(),
    )
    .spawn();
    let dead = broker.dead_letters(1, Duration::from_secs(10)).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.unknown, 1);
    assert!(recorder.applied().is_empty());
    assert!(
        dead[0].reason().contains("unknown cqrs_id `film`"),
        "{}",
        dead[0].reason()
    );
    assert_eq!(Payload::from_slice(&dead[0].body).unwrap().cqrs_id, "film");
    assert_eq!(broker.depth().await, 0);
    broker.teardown().await;
}

async fn a_shutdown_in_the_middle_of_batches_loses_nothing<B: Broker>() {
    let broker = Queues::<B>::new("midbatch", |b| b.batch_size(10).workers(2)).await;
    let total = 200;
    let messages: Vec<OutgoingMessage> = (0..total)
        .map(|pk| OutgoingMessage::new("author", body(pk)))
        .collect();
    broker.transport.publish_all(&messages, 100).await.unwrap();

    let first = Recorder {
        delay: Duration::from_millis(30),
        ..Recorder::default()
    };
    let handle = ConsumerRuntime::new(
        broker.transport.clone(),
        broker.config.clone(),
        first.clone(),
    )
    .spawn();
    wait_for("some batches applied", Duration::from_secs(10), || {
        first.applied().len() >= 40
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    let applied_first: BTreeSet<i64> = first.applied().into_iter().collect();
    assert_eq!(stats.applied(), applied_first.len() as u64);
    assert!(
        applied_first.len() < total as usize,
        "stopped in the middle"
    );

    let second = Recorder::default();
    let handle = ConsumerRuntime::new(
        broker.transport.clone(),
        broker.config.clone(),
        second.clone(),
    )
    .spawn();
    let missing = total as usize - applied_first.len();
    wait_for("the rest applied", Duration::from_secs(10), || {
        second.applied().len() >= missing
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.shutdown().await.unwrap();

    let applied_second: BTreeSet<i64> = second.applied().into_iter().collect();
    assert!(
        applied_first.is_disjoint(&applied_second),
        "what the first runtime acknowledged is not delivered again"
    );
    let all: BTreeSet<i64> = applied_first.union(&applied_second).copied().collect();
    assert_eq!(all, (0..total).collect::<BTreeSet<i64>>(), "nothing lost");
    assert_eq!(broker.depth().await, 0);
    broker.teardown().await;
}
