//! Operator access to a queue besides consuming it: its depth, its messages one by one
//! (`basic.get`, for dead-letter tools), and purging it.

use lapin::Channel;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::{FieldTable, ShortString};

use super::{RabbitMqTransport, consumer, map_lapin, short};
use crate::error::{Error, Result};
use crate::transport::Delivery;

impl RabbitMqTransport {
    /// How many messages are ready in `queue` (unacknowledged ones held by consumers are not
    /// counted), by a passive declaration: the queue is not created or changed.
    ///
    /// Fails with [`Error::Refused`] when the queue does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32> {
        self.check_open()?;
        let name = short(queue, "queue")?;
        let channel = self.side_channel().await?;
        let result = channel
            .queue_declare(
                name,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|declared| declared.message_count())
            .map_err(|e| map_lapin("queue.declare (passive)", e));
        close_channel(&channel, "queue depth read").await;
        result
    }

    /// Removes every ready message of `queue` and returns how many there were.
    ///
    /// Fails with [`Error::Refused`] when the queue does not exist.
    pub async fn purge_queue(&self, queue: &str) -> Result<u32> {
        self.check_open()?;
        let name = short(queue, "queue")?;
        let channel = self.side_channel().await?;
        let result = channel
            .queue_purge(name, QueuePurgeOptions::default())
            .await
            .map_err(|e| map_lapin("queue.purge", e));
        close_channel(&channel, "queue purged").await;
        if let Ok(purged) = result {
            tracing::info!(queue, purged, "queue purged");
        }
        result
    }

    /// Takes the messages of `queue` one at a time without consuming it (`basic.get` on a
    /// channel of its own), for tools that walk a queue once, such as the dead-letter commands.
    ///
    /// Each [`Delivery`] stays unacknowledged, and so invisible to other readers, until it is
    /// acknowledged or rejected, or the browser is closed or dropped: what is still
    /// unacknowledged then goes back to the queue. Read at most [`queue_depth`] messages to
    /// visit each message once, since rejected or republished ones may come back behind.
    ///
    /// [`queue_depth`]: RabbitMqTransport::queue_depth
    pub async fn browse(&self, queue: &str) -> Result<QueueBrowser> {
        self.check_open()?;
        let name = short(queue, "queue")?;
        let channel = self.side_channel().await?;
        Ok(QueueBrowser {
            channel,
            queue: name,
        })
    }
}

/// Messages of one queue taken one by one: see [`RabbitMqTransport::browse`].
pub struct QueueBrowser {
    channel: Channel,
    queue: ShortString,
}

impl std::fmt::Debug for QueueBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBrowser")
            .field("queue", &self.queue.as_str())
            .finish_non_exhaustive()
    }
}

impl QueueBrowser {
    /// The next ready message, unacknowledged, or `None` when the queue has no more.
    ///
    /// Fails with [`Error::Refused`] when the queue does not exist, and with
    /// [`Error::ConnectionLost`] when the channel is gone (the messages taken and not yet
    /// acknowledged are then back in the queue).
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
        if !self.channel.status().connected() {
            return Err(Error::ConnectionLost {
                operation: "basic.get",
                reason: "the browsing channel is closed; its unacknowledged messages are back in the queue".to_owned(),
            });
        }
        let message = self
            .channel
            .basic_get(self.queue.clone(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| map_lapin("basic.get", e))?;
        Ok(message.map(|message| consumer::convert(message.delivery)))
    }

    /// Closes the browsing channel: every message taken and not acknowledged goes back to the
    /// queue.
    pub async fn close(self) {
        close_channel(&self.channel, "browsing done").await;
    }
}

impl Drop for QueueBrowser {
    fn drop(&mut self) {
        if self.channel.status().connected() {
            let channel = self.channel.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    close_channel(&channel, "browser dropped").await;
                });
            }
        }
    }
}

async fn close_channel(channel: &Channel, reason: &str) {
    if channel.status().connected() {
        let _ = channel.close(200, reason.into()).await;
    }
}
