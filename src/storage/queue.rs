//! The fan-out queue and its poison queue, through `azure_storage_queue`.
//!
//! Message text is base64-encoded on the way in because the Functions host decodes
//! base64 by default (`extensions.queues.messageEncoding`), and a message that does not
//! decode would go straight to poison without our handler ever seeing it.

use crate::storage::blobs::describe;
use azure_core::http::StatusCode;
#[cfg(feature = "sim")]
use azure_storage_queue::models::QueueClientPeekMessagesOptions;
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions, QueueMessage,
};
use azure_storage_queue::QueueClient;
use base64::Engine;

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
#[error("queue {queue} {op}: {message}")]
pub struct QueueError {
    /// The queue.
    pub queue: String,
    /// What we tried.
    pub op: &'static str,
    /// The SDK's description (SAS signatures scrubbed).
    pub message: String,
}

/// A message taken off a queue, invisible to others until its visibility timeout ends.
#[derive(Clone, Debug)]
pub struct Received {
    /// The message id.
    pub id: String,
    /// Needed to delete or update it.
    pub pop_receipt: String,
    /// How many times it has been received, this time included.
    pub dequeue_count: u32,
    /// The stored text (base64 of the envelope, when we wrote it).
    pub raw_text: String,
    /// When it was inserted.
    pub inserted: Option<time::OffsetDateTime>,
    /// When it expires (the host stand-in passes it on, as the host does).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub expires: Option<time::OffsetDateTime>,
}

/// One storage queue.
#[derive(Clone)]
pub struct Queue {
    name: String,
    client: std::sync::Arc<crate::storage::Fresh<QueueClient>>,
}

impl Queue {
    /// The queue `name` in the account `storage` describes, reached with `credential`
    /// when the account uses identity-based access.
    pub fn open(
        storage: &crate::config::StorageSettings,
        name: &str,
        credential: Option<std::sync::Arc<dyn azure_core::credentials::TokenCredential>>,
    ) -> Result<Self, crate::config::StorageConfigError> {
        Ok(Queue {
            name: name.to_string(),
            client: std::sync::Arc::new(storage.fresh_queue_client(name, credential)?),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, op: &'static str, e: azure_core::Error) -> QueueError {
        QueueError {
            queue: self.name.clone(),
            op,
            message: describe(&e),
        }
    }

    /// Creates the queue if it does not exist.
    pub async fn ensure(&self) -> Result<(), QueueError> {
        match self.client.get().create(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(self.err("create", e)),
        }
    }

    /// Enqueues `text`, base64-encoded as the host expects.
    pub async fn send_text(&self, text: &str) -> Result<(), QueueError> {
        self.send_raw(base64::engine::general_purpose::STANDARD.encode(text))
            .await
    }

    /// Enqueues already-encoded message text unchanged (used to move messages between queues).
    pub async fn send_raw(&self, raw: String) -> Result<(), QueueError> {
        let msg = QueueMessage {
            message_text: Some(raw),
        };
        let content = msg.try_into().map_err(|e| self.err("encode", e))?;
        self.client
            .get()
            .send_message(content, None)
            .await
            .map_err(|e| self.err("send", e))?;
        Ok(())
    }

    /// Receives up to `max` (1–32) messages, hiding them for `visibility_secs`.
    pub async fn receive(
        &self,
        max: u8,
        visibility_secs: u32,
    ) -> Result<Vec<Received>, QueueError> {
        let opts = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            visibility_timeout: Some(visibility_secs as i32),
            ..Default::default()
        };
        let rsp = self
            .client
            .get()
            .receive_messages(Some(opts))
            .await
            .map_err(|e| self.err("receive", e))?;
        let model = rsp.into_model().map_err(|e| self.err("receive", e))?;
        Ok(model
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Received {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    dequeue_count: m.dequeue_count.unwrap_or(1).max(0) as u32,
                    raw_text: m.message_text.unwrap_or_default(),
                    inserted: m.insertion_time,
                    expires: m.expiration_time,
                })
            })
            .collect())
    }

    #[cfg(feature = "sim")]
    /// Reads up to `max` (1–32) message texts from the front without taking them.
    pub async fn peek(&self, max: u8) -> Result<Vec<String>, QueueError> {
        let opts = QueueClientPeekMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            ..Default::default()
        };
        let rsp = self
            .client
            .get()
            .peek_messages(Some(opts))
            .await
            .map_err(|e| self.err("peek", e))?;
        let model = rsp.into_model().map_err(|e| self.err("peek", e))?;
        Ok(model
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.message_text)
            .collect())
    }

    /// Deletes a received message.
    pub async fn delete(&self, msg: &Received) -> Result<(), QueueError> {
        match self
            .client
            .get()
            .delete_message(&msg.id, &msg.pop_receipt, None)
            .await
        {
            Ok(_) => Ok(()),
            // Already gone (deleted by a redelivery's handler): nothing to do.
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(()),
            Err(e) => Err(self.err("delete", e)),
        }
    }

    /// Makes a received message visible again after `secs` (0: at once), as the host does
    /// after a failed invocation.
    pub async fn update_visibility(&self, msg: &Received, secs: u32) -> Result<(), QueueError> {
        match self
            .client
            .get()
            .update_message(&msg.id, &msg.pop_receipt, secs as i32, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(()),
            Err(e) => Err(self.err("update", e)),
        }
    }

    /// The approximate number of messages, as the service reports it.
    pub async fn approximate_len(&self) -> Result<u64, QueueError> {
        Ok(self.existing_len().await?.unwrap_or(0))
    }

    /// The approximate number of messages waiting, or `None` when the queue does not exist
    /// (no run has created it yet): for `status`, which only looks.
    pub async fn existing_len(&self) -> Result<Option<u64>, QueueError> {
        let rsp = match self.client.get().get_properties(None).await {
            Ok(rsp) => rsp,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(self.err("properties", e)),
        };
        let n = rsp
            .approximate_messages_count()
            .map_err(|e| self.err("properties", e))?;
        Ok(Some(n.unwrap_or(0).max(0) as u64))
    }
}

/// Decodes stored base64 message text into the envelope text, as the host does.
pub fn decode_stored(raw: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}
