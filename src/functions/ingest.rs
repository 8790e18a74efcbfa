//! `IngestBatch`: one queue message → rows in Sentinel, exactly once in effect.
//!
//! A batch id already marked as sent is skipped. A batch that needs several Logs
//! Ingestion calls marks each part as it goes, so a retry after a part failed resends
//! only the parts that did not arrive.

use crate::app::App;
use crate::blobs::{BlobError, WriteCondition};
use crate::model::BatchId;
use crate::queue::envelope::{decode_records, Envelope, EnvelopeError, Payload};
use crate::retry::Deadline;
use crate::schema::row_bytes;
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
pub async fn process(
    app: &App,
    text: &str,
    deadline: Deadline,
) -> Result<IngestOutcome, IngestError> {
    let env = Envelope::parse(text)?;
    app.ensure_resources()
        .await
        .map_err(|e| IngestError::Setup(e.to_string()))?;
    let marker = marker_name(&env, None);
    if app.blobs.exists(&marker).await? {
        return Ok(IngestOutcome::AlreadySent(env.batch));
    }
    // Two deliveries of one message can run at once (a visibility timeout that lapsed,
    // a replay racing a retry): only the holder of the claim sends.
    let claim_name = claim_name(&env);
    if !claim(app, &env, &claim_name, deadline).await? {
        return Ok(IngestOutcome::AlreadySent(env.batch));
    }
    let result = send(app, env, deadline).await;
    // Sent (the marker now speaks for the batch) or failed (the next delivery should start
    // at once rather than wait out the claim): either way the claim has done its job.
    if let Err(e) = app.blobs.delete(&claim_name).await {
        tracing::warn!("could not release claim {claim_name}: {e}");
    }
    result
}

/// `claims/<type>/<batch>`: held while one invocation sends the batch.
pub fn claim_name(env: &Envelope) -> String {
    format!("claims/{}/{}", env.data_type, env.batch)
}

/// Sends a claimed batch and marks it as sent.
async fn send(app: &App, env: Envelope, deadline: Deadline) -> Result<IngestOutcome, IngestError> {
    let marker = marker_name(&env, None);
    // The holder before us may have finished between our first look and our claim.
    if app.blobs.exists(&marker).await? {
        return Ok(IngestOutcome::AlreadySent(env.batch));
    }
    let records = match &env.payload {
        Payload::Inline { .. } => env.inline_records()?,
        Payload::Blob { blob } => {
            let (gz, _) = app
                .blobs
                .get(blob)
                .await?
                .ok_or_else(|| IngestError::MissingPayload(env.batch.clone()))?;
            decode_records(&env, &gz)?
        }
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
            let mut row: serde_json::Value = serde_json::from_slice(&bytes).expect("rows are valid JSON");
            if !pack::fit_fields(&mut row) {
                return bytes;
            }
            truncated += 1;
            serde_json::to_vec(&row).expect("rows always serialize")
        })
        .collect();
    if truncated > 0 {
        tracing::warn!(batch = %env.batch, truncated, "rows had fields over 32,766 bytes; cut and named in TruncatedFields");
    }
    let parts = pack::split(&rows, app.sentinel.max_call_bytes()).map_err(SentinelError::from)?;
    let stream = app.settings.sentinel.stream(env.data_type);
    let (mut sent_rows, mut calls) = (0, 0);
    for (i, range) in parts.iter().enumerate() {
        let part_marker = (parts.len() > 1).then(|| marker_name(&env, Some(i)));
        if let Some(m) = &part_marker {
            if app.blobs.exists(m).await? {
                continue;
            }
        }
        calls += app
            .sentinel
            .send_rows(stream, &rows[range.clone()], deadline)
            .await?;
        sent_rows += range.len();
        if let Some(m) = part_marker {
            app.blobs
                .put(&m, Vec::new(), WriteCondition::Always)
                .await?;
        }
    }
    let note = serde_json::json!({"rows": rows.len(), "window": env.window, "type": env.data_type});
    app.blobs
        .put(
            &marker,
            note.to_string().into_bytes(),
            WriteCondition::Always,
        )
        .await?;
    Ok(IngestOutcome::Sent {
        batch: env.batch,
        rows: sent_rows,
        calls,
    })
}

/// Takes the batch's claim, waiting while another live invocation holds it. Returns
/// false when that other invocation finished the batch meanwhile.
///
/// A claim is a blob holding its expiry; it is created with If-None-Match and taken over,
/// once expired, with If-Match, so exactly one invocation holds it at a time, and one
/// that died (SIGKILL, instance recycled) blocks the batch only until its claim expires.
async fn claim(
    app: &App,
    env: &Envelope,
    name: &str,
    deadline: Deadline,
) -> Result<bool, IngestError> {
    loop {
        let expires = crate::model::now_ms() + deadline.remaining().as_millis() as i64 + 5_000;
        let body = expires.to_string().into_bytes();
        let attempt = match app.blobs.get(name).await? {
            None => app.blobs.put(name, body, WriteCondition::IfAbsent).await,
            Some((held, etag)) => {
                let held_until: i64 = String::from_utf8_lossy(&held).trim().parse().unwrap_or(0);
                if held_until > crate::model::now_ms() {
                    Err(BlobError::Conflict(name.to_string()))
                } else {
                    app.blobs
                        .put(name, body, WriteCondition::IfMatch(etag))
                        .await
                }
            }
        };
        match attempt {
            Ok(_) => return Ok(true),
            Err(BlobError::Conflict(_)) => {
                if app.blobs.exists(&marker_name(env, None)).await? {
                    return Ok(false);
                }
                if !deadline
                    .sleep_within(std::time::Duration::from_millis(250))
                    .await
                {
                    return Err(IngestError::Busy(env.batch.clone()));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `sent/<type>/<batch>` marks a whole batch; `sent/<type>/<batch>.part<N>` one call's worth.
pub fn marker_name(env: &Envelope, part: Option<usize>) -> String {
    match part {
        None => format!("sent/{}/{}", env.data_type, env.batch),
        Some(n) => format!("sent/{}/{}.part{n}", env.data_type, env.batch),
    }
}
