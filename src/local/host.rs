//! A stand-in for the Functions host, for the local run and the tests: it posts timer
//! invocations, takes messages off the queue and posts queue invocations with exactly the
//! payload quirks real hosts have, deletes a message on 2xx, and after `maxDequeueCount`
//! failed deliveries moves it to the poison queue, as the host's queue listener does.

use super::LocalError;
use crate::functions::protocol::InvocationResponse;
use crate::functions::{INGEST_FUNCTION, POLL_FUNCTION};
use crate::storage::queue::{decode_stored, Queue, Received};
use serde_json::{json, Value};
use std::time::Duration;
use url::Url;

/// The host's defaults for queue triggers (host.json `extensions.queues`).
pub use crate::functions::MAX_DEQUEUE_COUNT;
/// Messages fetched per batch (host default 16).
pub const BATCH_SIZE: u8 = 16;

/// Counts from draining the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Invocations posted.
    pub invocations: u64,
    /// Invocations that answered 2xx.
    pub succeeded: u64,
    /// Invocations that failed (the message went back to the queue or to poison).
    pub failed: u64,
    /// Messages moved to the poison queue.
    pub poisoned: u64,
}

impl std::ops::AddAssign for DrainStats {
    fn add_assign(&mut self, d: DrainStats) {
        self.invocations += d.invocations;
        self.succeeded += d.succeeded;
        self.failed += d.failed;
        self.poisoned += d.poisoned;
    }
}

/// The host stand-in.
pub struct HostEmulator {
    http: reqwest::Client,
    handler: Url,
    queue: Queue,
    poison: Queue,
    /// How long a failed message stays invisible before redelivery.
    pub retry_visibility_secs: u32,
    /// Deliver each message twice at once (a lapsed visibility timeout on a busy host).
    pub duplicate_deliveries: bool,
    /// How long a received message stays hidden while its invocation runs (the host
    /// renews this; a crashed worker's message reappears when it ends).
    pub receive_visibility_secs: u32,
}

impl HostEmulator {
    /// A host for the handler at `handler`, consuming `queue`.
    pub fn new(handler: Url, queue: Queue, poison: Queue) -> Self {
        HostEmulator {
            http: reqwest::Client::new(),
            handler,
            queue,
            poison,
            retry_visibility_secs: 1,
            duplicate_deliveries: false,
            receive_visibility_secs: 30,
        }
    }

    /// Polls `GET /` until the handler answers, as the host does after starting it.
    pub async fn wait_ready(&self, within: Duration) -> Result<Duration, LocalError> {
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if let Ok(r) = self
                .http
                .get(self.handler.clone())
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LocalError::Handler(format!(
            "did not answer GET / within {within:?}"
        )))
    }

    /// Posts one timer invocation; returns whether it succeeded and its log lines.
    pub async fn tick(&self, past_due: bool) -> Result<(bool, Vec<String>), LocalError> {
        let now = time::OffsetDateTime::now_utc();
        let payload = json!({
            "Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": {"Last": "0001-01-01T00:00:00", "Next": rfc3339(now + time::Duration::minutes(5)), "LastUpdated": "0001-01-01T00:00:00"}, "IsPastDue": past_due}},
            "Metadata": {"sys": {"MethodName": POLL_FUNCTION, "UtcNow": rfc3339(now), "RandGuid": "00000000-0000-4000-8000-000000000000"}}
        });
        self.post(POLL_FUNCTION, &payload).await
    }

    async fn post(
        &self,
        function: &str,
        payload: &Value,
    ) -> Result<(bool, Vec<String>), LocalError> {
        let url = self
            .handler
            .join(function)
            .map_err(|e| LocalError::Handler(e.to_string()))?;
        // The host names each invocation in a header; ids here are random like its GUIDs.
        let invocation = {
            let r = crate::retry::random_u64();
            format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                r >> 32,
                (r >> 16) & 0xffff,
                r & 0xfff,
                (r >> 4) & 0xfff,
                r & 0xffff_ffff_ffff
            )
        };
        let rsp = self
            .http
            .post(url)
            .header(crate::functions::INVOCATION_ID_HEADER, invocation)
            .json(payload)
            .send()
            .await
            .map_err(|e| LocalError::Handler(format!("POST /{function}: {e}")))?;
        let ok = rsp.status().is_success();
        let body: InvocationResponse = rsp.json().await.unwrap_or_default();
        Ok((ok, body.logs))
    }

    /// Delivers queue messages until the queue is empty (failed ones are redelivered
    /// after their visibility timeout), or `within` passes.
    pub async fn drain(&self, within: Duration) -> Result<DrainStats, LocalError> {
        let start = std::time::Instant::now();
        let mut stats = DrainStats::default();
        while start.elapsed() < within {
            let batch = self
                .queue
                .receive(BATCH_SIZE, self.receive_visibility_secs)
                .await?;
            if batch.is_empty() {
                if self.queue.approximate_len().await? == 0 {
                    return Ok(stats);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            self.settle(&batch, &mut stats).await?;
        }
        Err(LocalError::Handler(format!(
            "queue not drained within {within:?}"
        )))
    }

    /// One round of deliveries: the messages visible now, up to the host's batch size.
    pub async fn drain_once(&self) -> Result<DrainStats, LocalError> {
        let mut stats = DrainStats::default();
        let batch = self
            .queue
            .receive(BATCH_SIZE, self.receive_visibility_secs)
            .await?;
        self.settle(&batch, &mut stats).await?;
        Ok(stats)
    }

    /// Delivers `batch` at once and settles each message as the host does: deleted on
    /// success, made visible again on failure, moved to poison on its last try.
    async fn settle(&self, batch: &[Received], stats: &mut DrainStats) -> Result<(), LocalError> {
        let results = futures::future::join_all(batch.iter().map(|m| self.deliver(m))).await;
        for (m, r) in batch.iter().zip(results) {
            let (invocations, ok) = r?;
            stats.invocations += invocations;
            if ok {
                stats.succeeded += 1;
                self.queue.delete(m).await?;
            } else {
                stats.failed += 1;
                if m.dequeue_count >= MAX_DEQUEUE_COUNT {
                    self.poison.ensure().await?;
                    self.poison.send_raw(m.raw_text.clone()).await?;
                    self.queue.delete(m).await?;
                    stats.poisoned += 1;
                } else {
                    self.queue
                        .update_visibility(m, self.retry_visibility_secs)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// One delivery (two when duplicating); returns (invocations, succeeded).
    async fn deliver(&self, m: &Received) -> Result<(u64, bool), LocalError> {
        // The host's base64 decoding: a message that fails it goes straight to poison.
        let Some(text) = decode_stored(&m.raw_text) else {
            return Ok((0, false));
        };
        let payload = queue_payload(&text, m);
        // A worker that cannot be reached (crashed, restarting) fails the invocation, as
        // with the real host; the message is retried.
        let ok = |r: Result<(bool, Vec<String>), LocalError>| r.map(|(ok, _)| ok).unwrap_or(false);
        if self.duplicate_deliveries {
            let (a, b) = tokio::join!(
                self.post(INGEST_FUNCTION, &payload),
                self.post(INGEST_FUNCTION, &payload)
            );
            return Ok((2, ok(a) && ok(b)));
        }
        Ok((1, ok(self.post(INGEST_FUNCTION, &payload).await)))
    }
}

/// The body a real host posts for a queue message: the text JSON-encoded once more,
/// `DequeueCount` as a string, `Id` and `PopReceipt` in extra quotes.
pub(crate) fn queue_payload(text: &str, m: &Received) -> Value {
    let once = serde_json::to_string(text).expect("strings serialize");
    let now = time::OffsetDateTime::now_utc();
    json!({
        "Data": {"batch": once},
        "Metadata": {
            "DequeueCount": m.dequeue_count.to_string(),
            "ExpirationTime": m.expires.map(rfc3339),
            "Id": format!("\"{}\"", m.id),
            "InsertionTime": m.inserted.map(rfc3339),
            "NextVisibleTime": rfc3339(now + time::Duration::minutes(10)),
            "PopReceipt": format!("\"{}\"", m.pop_receipt),
            "sys": {"MethodName": INGEST_FUNCTION, "UtcNow": rfc3339(now), "RandGuid": "00000000-0000-4000-8000-000000000001"}
        }
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
