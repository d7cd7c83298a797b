//! `dead-letters dump|retry|purge`: this service's dead-letter queue.

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::args::DumpArgs;
use super::io::{Output, Progress, Unit};
use super::{Cli, CliError, Report};
use crate::connection::CqrsConnection;
use cqrs_core::{
    Confirmation, DEAD_LETTER_AT_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_ROUTING_KEY_HEADER,
    Delivery, Expiry, OutgoingMessage, Payload, RabbitMqTransport, SEQ_HEADER, Topology, Transport,
    direct_routing_key,
};

/// The transport, the replica queue, the dead-letter queue and how many dead letters wait.
struct DeadLetterQueue {
    transport: RabbitMqTransport,
    queue: String,
    name: String,
    depth: u32,
}

impl DeadLetterQueue {
    /// Declares this service's topology (as the consumer does) when it has replica models,
    /// and reads the dead-letter queue's depth.
    async fn open<C: CqrsConnection>(cli: &Cli<C>) -> Result<Self, CliError> {
        let config = cli.config();
        let (Some(queue), Some(name)) = (config.queue(), config.dead_letter_queue()) else {
            return Err(CliError::Invalid(
                "the dead-letter commands need this service's replica queue: set CQRS_QUEUE \
                 (or ConfigBuilder::queue)"
                    .to_owned(),
            ));
        };
        let transport = RabbitMqTransport::new(config.clone());
        if !cli.replica_ids().is_empty() {
            transport
                .declare(&Topology::from_config(
                    config,
                    cli.replica_ids().iter().copied(),
                ))
                .await
                .map_err(CliError::broker)?;
        }
        let depth = transport
            .queue_depth(name)
            .await
            .map_err(CliError::broker)?;
        Ok(DeadLetterQueue {
            transport,
            queue: queue.to_owned(),
            name: name.to_owned(),
            depth,
        })
    }
}

/// One dead letter as `dump` prints it.
fn describe(delivery: &Delivery) -> Value {
    let body = serde_json::from_slice::<Value>(delivery.body())
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(delivery.body()).into_owned()));
    json!({
        "routing_key": delivery.routing_key(),
        "reason": delivery.header(DEAD_LETTER_REASON_HEADER),
        "dead_lettered_at": delivery.header(DEAD_LETTER_AT_HEADER),
        "original_routing_key": delivery.header(DEAD_LETTER_ROUTING_KEY_HEADER),
        "body": body,
    })
}

pub(super) async fn dump<C: CqrsConnection>(
    cli: &Cli<C>,
    args: DumpArgs,
) -> Result<Report, CliError> {
    let dlq = DeadLetterQueue::open(cli).await?;
    let mut out = Output::create(&args.output, true)?;
    let progress = Progress::start(
        "dead-letters dump",
        Unit::Items("messages"),
        Some(dlq.depth.into()),
    );
    let mut browser = dlq
        .transport
        .browse(&dlq.name)
        .await
        .map_err(CliError::broker)?;
    // Held unacknowledged until the browser closes, so each is read once and all go back.
    let mut held = Vec::with_capacity(dlq.depth as usize);
    while held.len() < dlq.depth as usize {
        let Some(delivery) = browser.next().await.map_err(CliError::broker)? else {
            break;
        };
        let line = if args.bodies {
            String::from_utf8_lossy(delivery.body()).into_owned()
        } else {
            describe(&delivery).to_string()
        };
        out.line(&line)?;
        held.push(delivery);
        progress.inc(1);
    }
    progress.finish();
    let count = held.len() as u64;
    let result = out.commit();
    browser.close().await;
    drop(held);
    dlq.transport.close().await;
    result?;
    Ok(Report {
        processed: count,
        written: count,
        skipped: 0,
        summary: format!(
            "dead-letters dump: {count} dead letter(s) of `{}` written; they stay in the queue",
            dlq.name
        ),
    })
}

pub(super) async fn retry<C: CqrsConnection>(cli: &Cli<C>) -> Result<Report, CliError> {
    let dlq = DeadLetterQueue::open(cli).await?;
    let config = cli.config();
    let window = config.publish_confirm_window().max(1);
    let progress = Progress::start(
        "dead-letters retry",
        Unit::Items("messages"),
        Some(dlq.depth.into()),
    );
    let mut browser = dlq
        .transport
        .browse(&dlq.name)
        .await
        .map_err(CliError::broker)?;
    let mut in_flight: VecDeque<(Delivery, Confirmation, String)> = VecDeque::new();
    let mut kept: Vec<Delivery> = Vec::new();
    let mut left: Vec<String> = Vec::new();
    let mut retried = 0u64;
    let mut read = 0u64;
    let mut outcome = Ok(());
    while read < u64::from(dlq.depth) {
        let delivery = match browser.next().await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => break,
            Err(error) => {
                outcome = Err(CliError::broker(error));
                break;
            }
        };
        read += 1;
        let mut payload = match Payload::from_slice(delivery.body()) {
            Ok(payload) => payload,
            Err(error) => {
                let why = format!("dead letter {read}: cannot be retried: {error}");
                progress.println(&why);
                left.push(why);
                kept.push(delivery);
                continue;
            }
        };
        payload = payload.with_retries(0);
        if matches!(payload.expires, Expiry::At(_)) {
            // It may have expired already: give it a new lifetime, as django-cqrs does.
            payload = payload.with_ttl(config.clock().now(), config.message_ttl());
        }
        let label = format!(
            "dead letter {read} (`{}` {})",
            payload.cqrs_id, payload.instance_pk
        );
        let message = OutgoingMessage::new(
            direct_routing_key(&dlq.queue, &payload.cqrs_id),
            payload.to_vec(),
        );
        // Sent again, the write keeps its place in its row's order.
        let message = match delivery.header(SEQ_HEADER) {
            Some(seq) => message.with_header(SEQ_HEADER, seq),
            None => message,
        };
        match dlq.transport.publish(&message).await {
            Ok(confirmation) => in_flight.push_back((delivery, confirmation, label)),
            Err(error) => {
                let why = format!("{label}: {error}");
                progress.println(&why);
                left.push(why);
                kept.push(delivery);
            }
        }
        while in_flight.len() >= window {
            if let Err(error) = settle(
                &mut in_flight,
                &mut kept,
                &mut left,
                &mut retried,
                &progress,
            )
            .await
            {
                outcome = Err(error);
                break;
            }
        }
        if outcome.is_err() {
            break;
        }
        progress.set(read);
    }
    while !in_flight.is_empty() {
        if let Err(error) = settle(
            &mut in_flight,
            &mut kept,
            &mut left,
            &mut retried,
            &progress,
        )
        .await
            && outcome.is_ok()
        {
            outcome = Err(error);
        }
    }
    progress.finish();
    // What was not retried goes back to the dead-letter queue.
    browser.close().await;
    drop(kept);
    dlq.transport.close().await;
    outcome?;
    if !left.is_empty() {
        return Err(CliError::NotRetried {
            queue: dlq.name,
            retried,
            left,
        });
    }
    Ok(Report {
        processed: read,
        written: retried,
        skipped: 0,
        summary: format!(
            "dead-letters retry: {retried} dead letter(s) republished to `{}` with retries reset and removed from `{}`",
            dlq.queue, dlq.name
        ),
    })
}

/// Awaits the oldest confirmation: acknowledges its dead letter when the broker has the new
/// copy, keeps it otherwise.
async fn settle(
    in_flight: &mut VecDeque<(Delivery, Confirmation, String)>,
    kept: &mut Vec<Delivery>,
    left: &mut Vec<String>,
    retried: &mut u64,
    progress: &Progress,
) -> Result<(), CliError> {
    let Some((delivery, confirmation, label)) = in_flight.pop_front() else {
        return Ok(());
    };
    match confirmation.await {
        Ok(()) => {
            delivery.ack().await.map_err(CliError::broker)?;
            *retried += 1;
        }
        Err(error) => {
            let why = format!("{label}: {error}");
            progress.println(&why);
            left.push(why);
            kept.push(delivery);
        }
    }
    Ok(())
}

pub(super) async fn purge<C: CqrsConnection>(cli: &Cli<C>) -> Result<Report, CliError> {
    let dlq = DeadLetterQueue::open(cli).await?;
    let purged = dlq
        .transport
        .purge_queue(&dlq.name)
        .await
        .map_err(CliError::broker);
    dlq.transport.close().await;
    let purged = u64::from(purged?);
    Ok(Report {
        processed: purged,
        written: purged,
        skipped: 0,
        summary: format!(
            "dead-letters purge: {purged} dead letter(s) removed from `{}`",
            dlq.name
        ),
    })
}
