//! `IngestBatch`: one queue message → rows in Sentinel, exactly once in effect.
//!
//! A batch id already marked as sent is skipped. A batch that needs several Logs
//! Ingestion calls marks each part as it goes, so a retry after a part failed resends
//! only the parts that did not arrive.

use crate::batch::envelope::{decode_text, Envelope, EnvelopeError, Payload};
use crate::config::SentinelSettings;
use crate::model::now_ms;
use crate::model::{BatchId, DataType};
use crate::retry::Deadline;
use crate::sentinel::LogsIngestion;
use crate::sentinel::{pack, SentinelError};
use crate::storage::blobs::Blobs;
use crate::storage::blobs::{BlobError, WriteCondition};
use crate::{json::Record, schema::row_bytes};
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
    Setup(#[source] crate::app::AppError),
    /// Another invocation held the batch for the whole of this one's budget.
    #[error("batch {0}: another invocation is sending it; try again later")]
    Busy(BatchId),
    /// Logs Ingestion failed.
    #[error(transparent)]
    Sentinel(#[from] SentinelError),
}

/// What sending a batch uses: the blob container that holds each batch's state, the Logs
/// Ingestion client, and the stream names. (The queues and their creation stay with the
/// caller, so the claim protocol runs against storage and a sink alone.)
#[derive(Clone, Copy)]
pub struct Sink<'a> {
    /// The container with the batch state blobs (and spilled payloads).
    pub blobs: &'a Blobs,
    /// Where rows go.
    pub sentinel: &'a LogsIngestion,
    /// The stream of each data type.
    pub streams: &'a SentinelSettings,
}

/// Sends one batch given its message text.
///
/// Each batch has one state blob, `batches/<type>/<batch>`, that is the claim, the record
/// of which rows have been sent, and the sent marker: created with If-None-Match as
/// `sending` (the claim, with an expiry), then replaced with If-Match as `sent`. That is
/// two storage calls on the common path, and exactly one of two simultaneous deliveries
/// can hold the claim. A claim whose holder died (SIGKILL, instance recycled) blocks the
/// batch only until it expires. Every write after the claim is conditional on the
/// claim's own ETag, so a holder that outlived its claim can never overwrite (or delete)
/// the state of the delivery that took over.
pub async fn process(
    app: Sink<'_>,
    text: &str,
    deadline: Deadline,
) -> Result<IngestOutcome, IngestError> {
    let env = Envelope::parse(text)?;
    tracing::Span::current().record("data_type", env.data_type.as_str());
    let name = state_name(&env);
    let Some(mut claim) = claim(app, &env, &name, deadline).await? else {
        return Ok(IngestOutcome::AlreadySent(env.batch));
    };
    match send(app, &env, &mut claim, deadline).await {
        Ok((rows, calls)) => {
            let sent = BatchState::Sent {
                rows,
                window: env.window,
            };
            mark_sent(app, &env, &name, &claim, sent, deadline).await?;
            Ok(IngestOutcome::Sent {
                batch: env.batch,
                rows,
                calls,
            })
        }
        Err(e) => {
            // Let the next delivery start at once rather than wait out the claim, keeping
            // the rows already sent so that it sends only the rest.
            let partial = BatchState::Partial {
                sent: claim.sent.clone(),
            };
            if let Err(release) = app
                .blobs
                .put(
                    &name,
                    partial.to_bytes(),
                    WriteCondition::IfMatch(claim.etag.clone()),
                )
                .await
            {
                tracing::warn!("could not release the claim on {name}: {release}");
            }
            Err(e)
        }
    }
}

/// Writes the `sent` state, retrying storage failures within the budget: Logs Ingestion
/// has accepted the rows, and a state that never says so would have them sent again.
async fn mark_sent(
    app: Sink<'_>,
    env: &Envelope,
    name: &str,
    claim: &Claim,
    sent: BatchState,
    deadline: Deadline,
) -> Result<(), IngestError> {
    let mut attempt = 0;
    loop {
        match app
            .blobs
            .put(
                name,
                sent.to_bytes(),
                WriteCondition::IfMatch(claim.etag.clone()),
            )
            .await
        {
            Ok(_) => return Ok(()),
            // Our claim expired and another delivery took it over: it may send again.
            Err(BlobError::Conflict(_)) => {
                tracing::warn!(batch = %env.batch, "claim expired while sending; another delivery took the batch over");
                return Ok(());
            }
            Err(e) => {
                let wait = crate::retry::backoff(
                    attempt,
                    std::time::Duration::from_millis(200),
                    std::time::Duration::from_secs(5),
                );
                tracing::warn!(batch = %env.batch, attempt, "rows accepted but the sent state could not be written ({e}); retrying");
                if !deadline.sleep_within(wait).await {
                    return Err(e.into());
                }
                attempt += 1;
            }
        }
    }
}

/// What the state blob says about a batch.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum BatchState {
    /// An invocation is sending it, until this time (Unix ms); `sent` are the row ranges
    /// already accepted (a batch that needs several calls records each).
    Sending {
        until: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sent: Vec<[usize; 2]>,
    },
    /// A delivery failed part-way and let go: the next one takes over at once and sends
    /// the rows not in `sent`.
    Partial { sent: Vec<[usize; 2]> },
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

/// A claim held: the state blob's ETag, and the row ranges (`[start, end)`, by the
/// record's place in the batch, which no setting or clock changes) already sent.
struct Claim {
    etag: String,
    sent: Vec<[usize; 2]>,
}

/// Takes the batch's claim; `None` when the batch is already sent (possibly by the holder
/// we waited for). Waits while another live invocation holds it.
async fn claim(
    app: Sink<'_>,
    env: &Envelope,
    name: &str,
    deadline: Deadline,
) -> Result<Option<Claim>, IngestError> {
    loop {
        if let Some(c) =
            try_claim(app, name, WriteCondition::IfAbsent, Vec::new(), deadline).await?
        {
            return Ok(Some(c));
        }
        let Some((bytes, etag)) = app.blobs.get(name).await? else {
            continue; // released between our two calls: try again
        };
        let sent = match serde_json::from_slice::<BatchState>(&bytes) {
            Ok(BatchState::Sent { .. }) => return Ok(None),
            Ok(BatchState::Sending { until, .. }) if until > now_ms() => {
                if !deadline
                    .sleep_within(std::time::Duration::from_millis(250))
                    .await
                {
                    return Err(IngestError::Busy(env.batch.clone()));
                }
                continue;
            }
            // Expired (its holder died) or released: take it over with its progress.
            Ok(BatchState::Sending { sent, .. } | BatchState::Partial { sent }) => sent,
            // Unreadable: start over (the rows' ids let KQL drop what this repeats).
            Err(_) => Vec::new(),
        };
        if let Some(c) = try_claim(app, name, WriteCondition::IfMatch(etag), sent, deadline).await?
        {
            return Ok(Some(c));
        }
    }
}

/// Writes a `sending` state under `condition`, held until this invocation's budget
/// ends (plus a margin); `None` when another writer got there first.
async fn try_claim(
    app: Sink<'_>,
    name: &str,
    condition: WriteCondition,
    sent: Vec<[usize; 2]>,
    deadline: Deadline,
) -> Result<Option<Claim>, IngestError> {
    let sending = BatchState::Sending {
        until: claim_until(deadline),
        sent,
    };
    match app.blobs.put(name, sending.to_bytes(), condition).await {
        Ok(etag) => {
            let BatchState::Sending { sent, .. } = sending else {
                unreachable!("built as Sending above")
            };
            Ok(Some(Claim { etag, sent }))
        }
        Err(BlobError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn claim_until(deadline: Deadline) -> i64 {
    now_ms() + deadline.remaining().as_millis() as i64 + 5_000
}

/// The runs of rows `0..n` not covered by `sent`.
fn unsent(n: usize, sent: &[[usize; 2]]) -> Vec<std::ops::Range<usize>> {
    let mut done = vec![false; n];
    // The ranges come from a blob: clamped to the batch and read in either order, so a
    // damaged state cannot make the slice panic.
    for &[a, b] in sent {
        for d in &mut done[a.min(b).min(n)..a.max(b).min(n)] {
            *d = true;
        }
    }
    let mut runs = Vec::new();
    let mut i = 0;
    while i < n {
        if done[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && !done[i] {
            i += 1;
        }
        runs.push(start..i);
    }
    runs
}

/// Sends a claimed batch's unsent rows; returns (rows sent in this invocation, calls made).
/// The batch's rows, ready to send: its payload (inline or from its blob) decoded,
/// repaired if it came from elsewhere, mapped, and any field over the service's limit cut.
/// Only the rows outlive this: the batch's text is freed before the calls run.
async fn rows_of(app: Sink<'_>, env: &Envelope) -> Result<Vec<Vec<u8>>, IngestError> {
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
            repaired = match crate::json::lenient::repair(&text) {
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
            if bytes.len() <= crate::schema::limits::MAX_FIELD_BYTES {
                return bytes;
            }
            let Ok(mut row) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                // Cannot happen for a row made from a record that parsed; were it to, the
                // row goes as it is and Logs Ingestion's own limit applies.
                return bytes;
            };
            if !crate::schema::limits::fit_fields(&mut row) {
                return bytes;
            }
            truncated += 1;
            serde_json::to_vec(&row).unwrap_or(bytes)
        })
        .collect();
    if truncated > 0 {
        tracing::warn!(batch = %env.batch, truncated, "rows had fields over 32,766 bytes; cut and named in TruncatedFields");
    }
    Ok(rows)
}

async fn send(
    app: Sink<'_>,
    env: &Envelope,
    claim: &mut Claim,
    deadline: Deadline,
) -> Result<(usize, usize), IngestError> {
    let rows = rows_of(app, env).await?;
    let stream = app.streams.stream(env.data_type);
    let runs = unsent(rows.len(), &claim.sent);
    let mut parts = Vec::new();
    for run in &runs {
        let split = pack::split(&rows[run.clone()], app.sentinel.max_call_bytes())
            .map_err(SentinelError::from)?;
        parts.extend(
            split
                .into_iter()
                .map(|r| r.start + run.start..r.end + run.start),
        );
    }
    let several = parts.len() > 1 || !claim.sent.is_empty();
    let (mut sent_rows, mut calls) = (0, 0);
    for range in parts {
        calls += app
            .sentinel
            .send_rows(stream, &rows[range.clone()], deadline)
            .await?;
        sent_rows += range.len();
        claim.sent.push([range.start, range.end]);
        if several {
            // A batch needing several calls records each, so a retry resends only what
            // failed, whatever SENTINEL_MAX_CALL_BYTES or the rows' bytes are by then.
            let state = BatchState::Sending {
                until: claim_until(deadline),
                sent: claim.sent.clone(),
            };
            claim.etag = app
                .blobs
                .put(
                    &state_name(env),
                    state.to_bytes(),
                    WriteCondition::IfMatch(claim.etag.clone()),
                )
                .await?;
        }
    }
    Ok((sent_rows, calls))
}

/// `batches/<type>/<batch>`: the batch's state.
pub fn state_name(env: &Envelope) -> String {
    format!("{}{}", state_prefix(env.data_type), env.batch)
}

/// Where a data type's batch states are.
pub fn state_prefix(data_type: DataType) -> String {
    format!("batches/{data_type}/")
}

/// Whether a name under [`state_prefix`] marks a part rather than a whole batch (as
/// releases before the state blob recorded parts wrote them).
pub fn is_part_marker(name: &str) -> bool {
    name.contains(PART)
}

const PART: &str = ".part";

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim protocol against storage and a sink alone: the in-memory storage stand-in
    /// (`blobs::sim`) and the Logs Ingestion simulator, both on loopback; no Azurite, no npm.
    mod protocol {
        use super::*;
        use crate::auth::sim::SimCredential;
        use crate::batch::envelope::pack;
        use crate::model::{DataType, Window};
        use crate::sentinel::sim::{IngestFault, IngestionSim, SIM_DCR};
        use crate::storage::sim::StorageSim;
        use std::sync::Arc;
        use std::time::Duration;

        struct World {
            _storage: Arc<StorageSim>,
            blobs: Blobs,
            sentinel: LogsIngestion,
            streams: SentinelSettings,
            sink: Arc<IngestionSim>,
        }

        impl World {
            async fn new(max_call_bytes: usize) -> World {
                let (storage, settings) = StorageSim::start().await;
                let blobs = Blobs::new(settings.container_client("cas-sentinel", None).unwrap());
                blobs.ensure_container().await.unwrap();
                let (sink, url) = IngestionSim::start(None, true).await;
                let sentinel = LogsIngestion::new(
                    reqwest::Client::new(),
                    url.clone(),
                    SIM_DCR.into(),
                    Arc::new(SimCredential),
                )
                .with_max_call_bytes(max_call_bytes);
                let all = crate::config::Settings::from_pairs(&[
                    ("CAS_API_URL", "http://127.0.0.1:1/"),
                    ("SENTINEL_INGESTION_ENDPOINT", url.as_str()),
                    ("SENTINEL_DCR_IMMUTABLE_ID", SIM_DCR),
                    ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
                ])
                .unwrap();
                World {
                    _storage: storage,
                    blobs,
                    sentinel,
                    streams: all.sentinel,
                    sink,
                }
            }

            fn sink(&self) -> Sink<'_> {
                Sink {
                    blobs: &self.blobs,
                    sentinel: &self.sentinel,
                    streams: &self.streams,
                }
            }
        }

        /// One batch of `n` activities of about 1 KiB each; its message text.
        fn batch(n: u64) -> String {
            let records: Vec<String> = (0..n)
                .map(|i| {
                    crate::cas::sim::activity_record(
                        i,
                        1_795_944_000_000,
                        1_795_944_000_000 + i as i64,
                        800,
                    )
                    .to_string()
                })
                .collect();
            let window = Window::new(1_795_944_000_000, 1_795_944_100_000).unwrap();
            let mut messages = pack(DataType::Activities, window, &records);
            assert_eq!(messages.len(), 1);
            messages.remove(0).text
        }

        fn minute() -> Deadline {
            Deadline::after(Duration::from_secs(60))
        }

        #[tokio::test]
        async fn a_batch_is_sent_once_however_often_it_is_delivered() {
            let w = World::new(crate::config::MAX_CALL_BYTES).await;
            let text = batch(40);
            let first = process(w.sink(), &text, minute()).await.unwrap();
            assert!(
                matches!(first, IngestOutcome::Sent { rows: 40, .. }),
                "{first}"
            );
            for _ in 0..3 {
                let again = process(w.sink(), &text, minute()).await.unwrap();
                assert!(matches!(again, IngestOutcome::AlreadySent(_)), "{again}");
            }
            assert_eq!(w.sink.rows("McasActivity_CL").len(), 40);
        }

        #[tokio::test]
        async fn of_two_simultaneous_deliveries_only_one_sends() {
            let w = World::new(crate::config::MAX_CALL_BYTES).await;
            let text = batch(40);
            let (a, b) = tokio::join!(
                process(w.sink(), &text, minute()),
                process(w.sink(), &text, minute())
            );
            let sent = [&a, &b]
                .iter()
                .filter(|r| matches!(r, Ok(IngestOutcome::Sent { .. })))
                .count();
            assert_eq!(sent, 1, "{a:?} {b:?}");
            for r in [&a, &b] {
                assert!(
                    matches!(r, Ok(_) | Err(IngestError::Busy(_))),
                    "the other is skipped or told to come back: {r:?}"
                );
            }
            assert_eq!(w.sink.rows("McasActivity_CL").len(), 40);
        }

        #[tokio::test]
        async fn a_batch_that_failed_part_way_sends_only_the_rest() {
            // Calls of at most 64 KiB: 120 rows of about 1.8 KiB take four calls.
            let w = World::new(64 * 1024).await;
            let text = batch(120);
            w.sink.inject([IngestFault::Pass, IngestFault::Status(400)]);
            let failed = process(w.sink(), &text, minute()).await.unwrap_err();
            assert!(matches!(failed, IngestError::Sentinel(_)), "{failed}");
            let after_first = w.sink.rows("McasActivity_CL").len();
            assert!(after_first > 0 && after_first < 120, "{after_first}");
            let done = process(w.sink(), &text, minute()).await.unwrap();
            assert!(
                matches!(done, IngestOutcome::Sent { rows, .. } if rows == 120 - after_first),
                "{done}"
            );
            let ids: std::collections::BTreeSet<String> = w
                .sink
                .rows("McasActivity_CL")
                .iter()
                .map(|r| r["ReportId"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                (w.sink.rows("McasActivity_CL").len(), ids.len()),
                (120, 120),
                "every row once"
            );
        }
    }

    #[test]
    fn unsent_rows_are_the_gaps_between_recorded_ranges() {
        assert_eq!(unsent(5, &[]), vec![0..5]);
        assert_eq!(unsent(10, &[[0, 3], [5, 7]]), vec![3..5, 7..10]);
        assert_eq!(
            unsent(4, &[[0, 2], [2, 4]]),
            Vec::<std::ops::Range<usize>>::new()
        );
        // A range recorded under another split overlaps the new one: no row is sent twice.
        assert_eq!(unsent(6, &[[1, 4], [3, 5]]), vec![0..1, 5..6]);
        // Ranges past the end (a state from a different batch layout) are clamped.
        assert_eq!(unsent(3, &[[2, 99]]), vec![0..2]);
        assert_eq!(
            unsent(6, &[[5, 2]]),
            vec![0..2, 5..6],
            "a reversed range reads as [2, 5)"
        );
    }

    #[test]
    fn states_of_earlier_releases_still_read() {
        let old: BatchState = serde_json::from_str(r#"{"state":"sending","until":5}"#).unwrap();
        assert!(matches!(old, BatchState::Sending { until: 5, ref sent } if sent.is_empty()));
        let p: BatchState =
            serde_json::from_slice(&BatchState::Partial { sent: vec![[0, 3]] }.to_bytes()).unwrap();
        assert!(matches!(p, BatchState::Partial { ref sent } if sent == &[[0, 3]]));
    }
}
