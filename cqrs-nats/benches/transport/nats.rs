//! The NATS side: a raw async-nats JetStream loop (publish with PubAcks in flight, pull
//! consume with acks) on a stream and durable consumer of its own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::BoxError;

pub struct Raw {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl Raw {
    pub async fn new(url: &str, tag: &str) -> Result<Raw, BoxError> {
        let client = async_nats::connect(url).await?;
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(16_384)
            .build(client);
        let stream = format!("bench_raw_{tag}");
        let subject = format!("bench_raw_{tag}.author");
        let handle = js
            .get_or_create_stream(stream::Config {
                name: stream.clone(),
                subjects: vec![format!("bench_raw_{tag}.>")],
                retention: stream::RetentionPolicy::Interest,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        handle
            .create_consumer(pull::Config {
                durable_name: Some("raw".to_owned()),
                filter_subject: subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await?;
        Ok(Raw {
            js,
            stream,
            subject,
        })
    }

    pub async fn publish(&self, bodies: &[Vec<u8>], window: usize) -> Result<Duration, BoxError> {
        let started = Instant::now();
        let mut in_flight = VecDeque::with_capacity(window);
        for body in bodies {
            if in_flight.len() >= window
                && let Some(ack) = in_flight.pop_front()
            {
                let _: jetstream::publish::PublishAck = ack.await?;
            }
            let ack = self
                .js
                .publish(self.subject.clone(), Bytes::from(body.clone()))
                .await?;
            in_flight.push_back(ack);
        }
        for ack in in_flight {
            ack.await?;
        }
        Ok(started.elapsed())
    }

    pub async fn consume(&self, count: usize, prefetch: u16) -> Result<Duration, BoxError> {
        let stream = self.js.get_stream(&self.stream).await?;
        let mut consumer: pull::Stream = stream
            .get_consumer::<pull::Config>("raw")
            .await?
            .stream()
            .max_messages_per_batch(usize::from(prefetch))
            .messages()
            .await?;
        let started = Instant::now();
        let mut seen = 0;
        while seen < count {
            let message = consumer.next().await.ok_or("consumer ended")??;
            message.ack().await?;
            seen += 1;
        }
        Ok(started.elapsed())
    }

    pub async fn cleanup(self) -> Result<(), BoxError> {
        self.js.delete_stream(&self.stream).await?;
        Ok(())
    }
}

/// Deletes the stream our transport declared for the bench.
pub async fn cleanup_ours(url: &str, exchange: &str) -> Result<(), BoxError> {
    let js = jetstream::new(async_nats::connect(url).await?);
    js.delete_stream(cqrs_nats::stream_name(exchange)).await?;
    Ok(())
}
