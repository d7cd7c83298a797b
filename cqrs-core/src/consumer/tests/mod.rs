//! Unit tests of the consumer runtime, on the in-memory transport with a recording applier and
//! Tokio's paused clock (so delays of seconds take no time).

mod batching;
mod failures;
mod rejects;
mod shutdown;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::apply::{Applied, Applier, BatchError, Incoming, ModelPolicy, RetryChoice};
use crate::config::{Config, ConfigBuilder};
use crate::error::{Error, Result};
use crate::memory::{InMemoryConsumer, InMemoryTransport};
use crate::payload::{Expiry, Payload, SignalType};
use crate::transport::{Confirmation, Consumer, OutgoingMessage, Topology, Transport};

/// The models the test applier knows.
const IDS: [&str; 2] = ["author", "book"];

/// What the test applier makes of a message.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    cqrs_id: String,
    pk: String,
    revision: i64,
    retries: u32,
    direct: bool,
    signal: SignalType,
    expires: Expiry,
    seq: Option<i64>,
}

/// One call of `apply`.
#[derive(Debug, Clone)]
struct Call {
    pks: Vec<String>,
    started: Instant,
    outcome: &'static str,
}

#[derive(Default)]
struct State {
    policies: HashMap<String, ModelPolicy>,
    /// Every call of `apply`, when it ends.
    calls: Vec<Call>,
    /// Every call of `apply`, when it starts.
    started: Vec<Vec<String>>,
    /// The items of successful calls, in order, with the worker and the time.
    applied: Vec<(usize, Item, Instant)>,
    /// Primary keys whose batches always fail.
    fail: HashSet<String>,
    /// Primary keys whose batches fail while the message has not been retried.
    fail_first: HashSet<String>,
    /// Primary keys that make `apply` panic.
    panic_on: HashSet<String>,
    /// Primary keys `prepare` refuses.
    refuse: HashSet<String>,
    /// The next calls that report the database unavailable.
    unavailable: usize,
    /// The next calls that report a statement timeout.
    timed_out: usize,
    /// How long each call takes.
    delay: Duration,
    /// What `retry_choice` answers, by primary key.
    choices: HashMap<String, RetryChoice>,
}

/// A test applier recording what it gets; clones share the record.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<State>>);

impl Recorder {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with(self, change: impl FnOnce(&mut State)) -> Self {
        change(&mut self.state());
        self
    }

    fn applied_pks(&self) -> Vec<String> {
        self.state()
            .applied
            .iter()
            .map(|(_, item, _)| item.pk.clone())
            .collect()
    }

    fn attempts_of(&self, pk: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|call| call.pks.len() == 1 && call.pks[0] == pk)
            .count()
    }

    fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    fn applied(&self) -> Vec<(usize, Item, Instant)> {
        self.state().applied.clone()
    }
}

impl Applier for Recorder {
    type Prepared = Item;

    fn cqrs_ids(&self) -> Vec<String> {
        IDS.iter().map(|id| (*id).to_owned()).collect()
    }

    fn policy(&self, cqrs_id: &str) -> Option<ModelPolicy> {
        if !IDS.contains(&cqrs_id) {
            return None;
        }
        Some(
            self.state()
                .policies
                .get(cqrs_id)
                .cloned()
                .unwrap_or_default(),
        )
    }

    fn retry_choice(
        &self,
        _worker: usize,
        item: &Item,
        _retries: u32,
        _error: &str,
        _would_retry: bool,
    ) -> RetryChoice {
        self.state()
            .choices
            .get(&item.pk)
            .copied()
            .unwrap_or_default()
    }

    fn prepare(&self, incoming: &Incoming) -> Result<Item, String> {
        let payload = &incoming.payload;
        let pk = super::dead_letter::pk_key(&payload.instance_pk);
        if self.state().refuse.contains(&pk) {
            return Err(format!("bad instance_data for pk {pk}"));
        }
        Ok(Item {
            cqrs_id: payload.cqrs_id.clone(),
            pk,
            revision: payload
                .instance_data
                .get("cqrs_revision")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            retries: payload.retries,
            direct: incoming.direct,
            signal: payload.signal_type,
            expires: payload.expires,
            seq: incoming.seq,
        })
    }

    async fn apply(
        &self,
        worker: usize,
        batch: Vec<Arc<Item>>,
    ) -> Result<Vec<Applied>, BatchError> {
        let started = Instant::now();
        let pks: Vec<String> = batch.iter().map(|item| item.pk.clone()).collect();
        let delay = {
            let mut state = self.state();
            state.started.push(pks.clone());
            state.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state();
        let mut call = Call {
            pks,
            started,
            outcome: "ok",
        };
        if state.unavailable > 0 {
            state.unavailable -= 1;
            call.outcome = "unavailable";
            state.calls.push(call);
            return Err(BatchError::Unavailable("connection refused".to_owned()));
        }
        if state.timed_out > 0 {
            state.timed_out -= 1;
            call.outcome = "timed out";
            state.calls.push(call);
            return Err(BatchError::TimedOut("statement timeout".to_owned()));
        }
        if let Some(item) = batch.iter().find(|item| state.panic_on.contains(&item.pk)) {
            let pk = item.pk.clone();
            drop(state);
            panic!("applier bug on pk {pk}");
        }
        let failing = batch.iter().find(|item| {
            state.fail.contains(&item.pk)
                || (item.retries == 0 && state.fail_first.contains(&item.pk))
        });
        if let Some(item) = failing {
            let error = format!("constraint violated by pk {}", item.pk);
            call.outcome = "failed";
            state.calls.push(call);
            return Err(BatchError::Failed(error));
        }
        state.calls.push(call);
        for item in &batch {
            state.applied.push((worker, (**item).clone(), started));
        }
        Ok(vec![Applied::Created; batch.len()])
    }
}

/// A configuration for queue `q` on a fresh in-memory broker with the topology declared.
async fn broker(builder: ConfigBuilder) -> (Config, InMemoryTransport) {
    let config = builder.queue("q").build().unwrap();
    let transport = InMemoryTransport::new(&config);
    transport
        .declare(&Topology::from_config(&config, IDS))
        .await
        .unwrap();
    (config, transport)
}

/// A SAVE body for `cqrs_id` and `pk` at `revision`, never expiring.
fn body(cqrs_id: &str, pk: i64, revision: i64) -> Vec<u8> {
    payload(SignalType::Save, cqrs_id, pk, revision)
        .with_expires(Expiry::Never)
        .to_vec()
}

fn payload(signal: SignalType, cqrs_id: &str, pk: i64, revision: i64) -> Payload {
    let data = json!({"id": pk, "name": format!("row {pk}"), "cqrs_revision": revision});
    let Value::Object(data) = data else {
        unreachable!()
    };
    Payload::new(signal, cqrs_id, json!(pk), data)
}

async fn publish(transport: &impl Transport, routing_key: &str, body: Vec<u8>) {
    transport
        .publish_confirmed(&OutgoingMessage::new(routing_key, body))
        .await
        .unwrap();
}

/// Waits (on the paused clock) until `done`, for at most 60 virtual seconds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A message read back from a queue.
#[derive(Debug)]
struct Received {
    routing_key: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    expiration: Option<Duration>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn payload(&self) -> Payload {
        Payload::from_slice(&self.body).unwrap()
    }
}

/// Everything ready in `queue`, taken and acknowledged.
async fn take_all(transport: &InMemoryTransport, queue: &str) -> Vec<Received> {
    let mut consumer = transport.consume(queue, 10_000).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(5), consumer.next()).await
    {
        let delivery = delivery.unwrap();
        out.push(Received {
            routing_key: delivery.routing_key().to_owned(),
            body: delivery.body().to_vec(),
            headers: delivery.headers().to_vec(),
            expiration: delivery.expiration(),
        });
        delivery.ack().await.unwrap();
    }
    out
}

/// The in-memory transport with publishes that fail on demand.
#[derive(Clone)]
struct Flaky {
    inner: InMemoryTransport,
    failing: Arc<AtomicBool>,
}

impl Transport for Flaky {
    type Consumer = InMemoryConsumer;

    async fn declare(&self, topology: &Topology) -> Result<()> {
        self.inner.declare(topology).await
    }

    async fn publish(&self, message: &OutgoingMessage) -> Result<Confirmation> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::ConnectionLost {
                operation: "basic.publish",
                reason: "test: the broker is away".to_owned(),
            });
        }
        self.inner.publish(message).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<InMemoryConsumer> {
        self.inner.consume(queue, prefetch).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
