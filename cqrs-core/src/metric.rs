//! The names of the metrics the relay and the consumer runtime record, through the
//! [`metrics`](https://docs.rs/metrics) facade.
//!
//! Nothing is recorded until the application installs a recorder (an exporter such as
//! `metrics-exporter-prometheus`); install it **before** starting the relay or the consumer
//! runtime, since they register their series when they start. Names follow OpenTelemetry's
//! messaging conventions where one exists (`messaging.*`); the others are `cqrs.*`. A
//! Prometheus exporter writes dots as underscores and adds `_total` to counters
//! (`messaging_client_sent_messages_total`).
//!
//! Label sets are bounded: `cqrs_id` takes only the values of the models a service publishes
//! or consumes ([`OTHER_CQRS_ID`] stands for any other), `messaging.destination.name` is the
//! replica queue, and `outcome`/`reason` take the fixed values listed below. Keys,
//! message ids and error texts are never labels.

/// Label: the model's `cqrs_id`.
pub const CQRS_ID: &str = "cqrs_id";
/// Label: the replica queue (consumer).
pub const DESTINATION: &str = "messaging.destination.name";
/// Label: the messaging operation, `send` for the relay's publish-to-confirm latency.
pub const OPERATION: &str = "messaging.operation.name";
/// Label: how an applied message changed the replica (`created`, `updated`, `deleted`,
/// `synced`, `handled`).
pub const OUTCOME: &str = "outcome";
/// Label: why a message was skipped (`old`, `duplicate`, `superseded`, `tombstoned`,
/// `ignored`) or dead-lettered (`failed`, `malformed`, `unknown`, `expired`, `not_selected`).
pub const REASON: &str = "reason";

/// The `cqrs_id` label of messages whose `cqrs_id` the consumer does not know (or that could
/// not be read), so that arbitrary input cannot create series.
pub const OTHER_CQRS_ID: &str = "_other";

/// Counter, relay: messages handed to the broker (`cqrs_id`).
pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// Counter, relay: messages the broker confirmed (`cqrs_id`); their outbox entries are deleted.
pub const RELAY_CONFIRMED: &str = "cqrs.relay.confirmed";
/// Counter, relay: messages whose confirmation failed (a nack, or the connection lost before
/// it came) (`cqrs_id`); their entries stay in the outbox and are published again.
pub const RELAY_NACKED: &str = "cqrs.relay.nacked";
/// Counter, relay: confirmed messages the broker returned as unroutable (`cqrs_id`): no queue
/// was bound to their routing key.
pub const RELAY_UNROUTABLE: &str = "cqrs.relay.unroutable";
/// Histogram (seconds), relay: from a publish to its confirmation
/// (`messaging.operation.name` = `send`).
pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
/// Gauge, relay: entries in the outbox, measured every backlog interval.
pub const OUTBOX_ENTRIES: &str = "cqrs.outbox.entries";
/// Gauge (seconds), relay: the age of the oldest outbox entry (0 when empty), by the
/// database's clock.
pub const OUTBOX_OLDEST_AGE: &str = "cqrs.outbox.oldest_age";
/// Gauge, relay: 1 while the broker accepts the relay's publishes, 0 after a connection
/// failure, until a publish succeeds again.
pub const RELAY_BROKER_CONNECTED: &str = "cqrs.relay.broker.connected";
/// Counter, relay: attempts that failed (database or broker) and are retried.
pub const RELAY_ERRORS: &str = "cqrs.relay.errors";

/// Counter, consumer: deliveries taken from the queue, retried copies included (`cqrs_id`,
/// `messaging.destination.name`).
pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// Counter, consumer: messages that changed the replica (`cqrs_id`, `outcome`).
pub const APPLIED: &str = "cqrs.replica.applied";
/// Counter, consumer: messages acknowledged without changing the replica (`cqrs_id`,
/// `reason`).
pub const SKIPPED: &str = "cqrs.replica.skipped";
/// Counter, consumer: failed messages republished for another try (`cqrs_id`).
pub const RETRIED: &str = "cqrs.consumer.retried";
/// Counter, consumer: messages published to the dead-letter queue (`cqrs_id`, `reason`).
pub const DEAD_LETTERED: &str = "cqrs.consumer.dead_lettered";
/// Histogram (seconds), consumer: the time to apply one batch in its transaction
/// (`messaging.destination.name`).
pub const PROCESS_DURATION: &str = "messaging.process.duration";
/// Histogram, consumer: messages per applied batch (`messaging.destination.name`).
pub const BATCH_SIZE: &str = "cqrs.consumer.batch.size";
/// Histogram (seconds), consumer: replication lag, the runtime clock's time when a change was
/// applied minus the message's `cqrs_updated` (`cqrs_id`); one observation per message that
/// changed the replica.
pub const REPLICATION_LAG: &str = "cqrs.replication.lag";
/// Gauge, consumer: failed messages waiting in the delay queue for their retry
/// (`messaging.destination.name`).
pub const DELAY_QUEUE: &str = "cqrs.consumer.delay_queue.messages";
/// Counter, consumer: batches tried again after a transient conflict, while the database was
/// unavailable, or after a statement timed out (`reason` = `conflict`, `unavailable` or
/// `timeout`), spending no message's retries.
pub const BATCH_RETRIES: &str = "cqrs.consumer.batch.retries";

/// Describes every metric above to the installed recorder (units and help texts, which a
/// Prometheus exporter prints as `# HELP`). Optional: call it once after installing the
/// recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(SENT_MESSAGES, "Messages the relay handed to the broker");
    describe_counter!(
        RELAY_CONFIRMED,
        "Messages the broker confirmed to the relay"
    );
    describe_counter!(RELAY_NACKED, "Messages whose confirmation failed");
    describe_counter!(
        RELAY_UNROUTABLE,
        "Confirmed messages no queue was bound for"
    );
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Time from a publish to its confirmation"
    );
    describe_gauge!(OUTBOX_ENTRIES, "Entries waiting in the outbox");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest outbox entry"
    );
    describe_gauge!(
        RELAY_BROKER_CONNECTED,
        "1 while the broker accepts the relay's publishes"
    );
    describe_counter!(RELAY_ERRORS, "Relay attempts that failed and are retried");
    describe_counter!(CONSUMED_MESSAGES, "Deliveries taken from the replica queue");
    describe_counter!(APPLIED, "Messages that changed the replica");
    describe_counter!(
        SKIPPED,
        "Messages acknowledged without changing the replica"
    );
    describe_counter!(RETRIED, "Failed messages republished for another try");
    describe_counter!(DEAD_LETTERED, "Messages sent to the dead-letter queue");
    describe_histogram!(
        PROCESS_DURATION,
        Unit::Seconds,
        "Time to apply one batch in its transaction"
    );
    describe_histogram!(BATCH_SIZE, "Messages per applied batch");
    describe_histogram!(
        REPLICATION_LAG,
        Unit::Seconds,
        "Apply time minus the message's cqrs_updated"
    );
    describe_gauge!(DELAY_QUEUE, "Failed messages waiting for their retry");
    describe_counter!(
        BATCH_RETRIES,
        "Batches tried again after a conflict or an unavailable database"
    );
}
