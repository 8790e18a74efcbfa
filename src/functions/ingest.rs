//! `IngestBatch`: one queue message → rows in Sentinel, exactly once in effect.
//!
//! A batch id already marked as sent is skipped. A batch that needs several Logs
//! Ingestion calls marks each part as it goes, so a retry after a part failed resends
//! only the parts that did not arrive.

use crate::app::App;
use crate::blobs::{BlobError, WriteCondition};
use crate::model::now_ms;
use crate::model::{BatchId, DataType};
use crate::queue::envelope::{decode_text, Envelope, EnvelopeError, Payload};
use crate::retry::Deadline;
use crate::schema::{row_bytes, Record};
use crate::sentinel::{pack, SentinelError};
use std::fmt;

/// What an ingest did.
#[derive(Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Rows were sent.
    Sent {
        /// The batch.
        batch: BatchId,
        /// Rows sent in this invocation.
        rows: usize,
        /// Logs Ingestion calls made.
        calls: usize,
    },
    /// The batch was sent before (a redelivery or a replay): nothing sent.
    AlreadySent(BatchId),
}

impl fmt::Display for IngestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestOutcome::Sent { batch, rows, calls } => {
                write!(f, "batch {batch}: {rows} rows sent in {calls} calls")
            }
            IngestOutcome::AlreadySent(b) => write!(f, "batch {b}: already sent, skipped"),
        }
    }
}

/// Why a batch was not (fully) sent. Every variant fails the invocation, so the host
/// retries it and finally moves it to the poison queue: nothing is silently dropped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The message is not a batch we can read.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Storage failed (markers or a spilled payload).
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The spilled payload blob is missing.
    #[error("batch {0}: its payload blob is missing")]
    MissingPayload(BatchId),
    /// The container could not be created.
    #[error("storage set-up: {0}")]
    Setup(String),
    /// Another invocation held the batch for the whole of this one's budget.
    #[error("batch {0}: another invocation is sending it; try again later")]
    Busy(BatchId),
    /// Logs Ingestion failed.
    #[error(transparent)]
    Sentinel(#[from] SentinelError),
}

/// Sends one batch given its message text.
///
/// Each batch has one state blob, `batches/<type>/<batch>`, that is both the claim and
/// the sent marker: created with If-None-Match as `sending` (the claim, with an expiry),
/// then replaced with If-Match as `sent`. That is two storage calls on the common path,
/// and exactly one of two simultaneous deliveries can hold the claim. A claim whose
/// holder died (SIGKILL, instance recycled) blocks the batch only until it expires.
pub async fn process(
    app: &App,
    text: &str,
    deadline: Deadline,
) -> Result<IngestOutcome, IngestError> {
    let env = Envelope::parse(text)?;
    app.ensure_resources()
        .await
        .map_err(|e| IngestError::Setup(e.to_string()))?;
    let name = state_name(&env, None);
    let Some(claim_etag) = claim(app, &env, &name, deadline).await? else {
        return Ok(IngestOutcome::AlreadySent(env.batch));
    };
    match send(app, &env, deadline).await {
        Ok((rows, calls)) => {
            let sent = BatchState::Sent {
                rows,
                window: env.window,
            };
            match app
                .blobs
                .put(&name, sent.to_bytes(), WriteCondition::IfMatch(claim_etag))
                .await
            {
                Ok(_) => {}
                // Our claim expired and another delivery took it over: it may send again.
                Err(BlobError::Conflict(_)) => {
                    tracing::warn!(batch = %env.batch, "claim expired while sending; another delivery took the batch over")
                }
                Err(e) => return Err(e.into()),
            }
            Ok(IngestOutcome::Sent {
                batch: env.batch,
                rows,
                calls,
            })
        }
        Err(e) => {
            // Let the next delivery start at once rather than wait out the claim.
            if let Err(release) = app.blobs.delete(&name).await {
                tracing::warn!("could not release the claim on {name}: {release}");
            }
            Err(e)
        }
    }
}

/// What the state blob says about a batch.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum BatchState {
    /// An invocation is sending it, until this time (Unix ms).
    Sending { until: i64 },
    /// Its rows were accepted by Logs Ingestion.
    Sent {
        rows: usize,
        window: crate::model::Window,
    },
}

impl BatchState {
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("states serialize")
    }
}

/// Takes the batch's claim; `None` when the batch is already sent (possibly by the holder
/// we waited for). Waits while another live invocation holds it.
async fn claim(
    app: &App,
    env: &Envelope,
    name: &str,
    deadline: Deadline,
) -> Result<Option<String>, IngestError> {
    loop {
        if let Some(etag) = try_claim(app, name, WriteCondition::IfAbsent, deadline).await? {
            return Ok(Some(etag));
        }
        let Some((bytes, etag)) = app.blobs.get(name).await? else {
            continue; // released between our two calls: try again
        };
        match serde_json::from_slice::<BatchState>(&bytes) {
            Ok(BatchState::Sent { .. }) => return Ok(None),
            Ok(BatchState::Sending { until }) if until > now_ms() => {
                if !deadline
                    .sleep_within(std::time::Duration::from_millis(250))
                    .await
                {
                    return Err(IngestError::Busy(env.batch.clone()));
                }
            }
            // Expired (its holder died) or unreadable: take it over, if nobody else does first.
            _ => {
                if let Some(etag) =
                    try_claim(app, name, WriteCondition::IfMatch(etag), deadline).await?
                {
                    return Ok(Some(etag));
                }
            }
        }
    }
}

/// Writes a `sending` state under `condition`, held until this invocation's budget
/// ends (plus a margin); `None` when another writer got there first.
async fn try_claim(
    app: &App,
    name: &str,
    condition: WriteCondition,
    deadline: Deadline,
) -> Result<Option<String>, IngestError> {
    let sending = BatchState::Sending {
        until: now_ms() + deadline.remaining().as_millis() as i64 + 5_000,
    };
    match app.blobs.put(name, sending.to_bytes(), condition).await {
        Ok(etag) => Ok(Some(etag)),
        Err(BlobError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sends a claimed batch; returns (rows sent in this invocation, calls made).
async fn send(
    app: &App,
    env: &Envelope,
    deadline: Deadline,
) -> Result<(usize, usize), IngestError> {
    let gz = match &env.payload {
        Payload::Inline { .. } => env.inline_gzip()?,
        Payload::Blob { blob } => {
            let (gz, _) = app
                .blobs
                .get(blob)
                .await?
                .ok_or_else(|| IngestError::MissingPayload(env.batch.clone()))?;
            gz
        }
    };
    // Records stay as borrowed raw JSON: see schema::record for why.
    let text = decode_text(env, &gz)?;
    // A batch this build packed is strict JSON already (the poll repairs CAS's pages); one
    // from elsewhere (an import, an older release) is repaired here rather than refused.
    let repaired: String;
    let records = match env.read_records(&text, Record::batch) {
        Ok(records) => records,
        Err(first @ EnvelopeError::Corrupt { .. }) => {
            repaired = match crate::lenient::repair(&text) {
                Ok((fixed, _)) => fixed.into_owned(),
                Err(_) => return Err(first.into()),
            };
            env.read_records(&repaired, Record::batch)?
        }
        Err(e) => return Err(e.into()),
    };
    let mut truncated = 0;
    let rows: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let bytes = row_bytes(env.data_type, r, env.observed);
            // A row shorter than the field limit cannot hold an oversized field.
            if bytes.len() <= pack::MAX_FIELD_BYTES {
                return bytes;
            }
            let Ok(mut row) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                // Cannot happen for a row made from a record that parsed; were it to, the
                // row goes as it is and Logs Ingestion's own limit applies.
                return bytes;
            };
            if !pack::fit_fields(&mut row) {
                return bytes;
            }
            truncated += 1;
            serde_json::to_vec(&row).unwrap_or(bytes)
        })
        .collect();
    // Only the rows are needed from here on; free the batch's text while the calls run.
    drop(records);
    drop(text);
    drop(gz);
    if truncated > 0 {
        tracing::warn!(batch = %env.batch, truncated, "rows had fields over 32,766 bytes; cut and named in TruncatedFields");
    }
    let parts = pack::split(&rows, app.sentinel.max_call_bytes()).map_err(SentinelError::from)?;
    let stream = app.settings.sentinel.stream(env.data_type);
    let (mut sent_rows, mut calls) = (0, 0);
    for (i, range) in parts.iter().enumerate() {
        // A batch needing several calls marks each, so a retry resends only what failed.
        let part = (parts.len() > 1).then(|| state_name(env, Some(i)));
        if let Some(p) = &part {
            if app.blobs.exists(p).await? {
                continue;
            }
        }
        calls += app
            .sentinel
            .send_rows(stream, &rows[range.clone()], deadline)
            .await?;
        sent_rows += range.len();
        if let Some(p) = part {
            app.blobs
                .put(&p, Vec::new(), WriteCondition::Always)
                .await?;
        }
    }
    Ok((sent_rows, calls))
}

/// `batches/<type>/<batch>`: the batch's state; `batches/<type>/<batch>.part<N>` marks
/// one call's worth of a batch that needs several.
pub fn state_name(env: &Envelope, part: Option<usize>) -> String {
    let prefix = state_prefix(env.data_type);
    match part {
        None => format!("{prefix}{}", env.batch),
        Some(n) => format!("{prefix}{}{PART}{n}", env.batch),
    }
}

/// Where a data type's batch states are.
pub fn state_prefix(data_type: DataType) -> String {
    format!("batches/{data_type}/")
}

/// Whether a name under [`state_prefix`] marks a part rather than a whole batch.
pub fn is_part_marker(name: &str) -> bool {
    name.contains(PART)
}

const PART: &str = ".part";
