//! The sink: one queue message → rows in Sentinel, exactly once in effect.
//!
//! A batch id already marked as sent is skipped. A batch that needs several Logs
//! Ingestion calls marks each part as it goes, so a retry after a part failed resends
//! only the parts that did not arrive.

use crate::batch::envelope::{decode_text, Envelope, EnvelopeError, Payload};
use crate::batch::ledger::{self, Claim, LedgerError};
use crate::config::SentinelSettings;
use crate::json::Record;
use crate::model::BatchId;
use crate::model::DataType;
use crate::retry::Deadline;
use crate::schema::asim::{self, AsimTable};
use crate::schema::{row_bytes_for, TenantColumns};
use crate::sentinel::LogsIngestion;
use crate::sentinel::{pack, SentinelError};
use crate::storage::blobs::{BlobError, Blobs};
use crate::storage::SetupError;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

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
    /// Storage failed (a spilled payload).
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The spilled payload blob is missing.
    #[error("batch {0}: its payload blob is missing")]
    MissingPayload(BatchId),
    /// The container could not be created.
    #[error("storage set-up: {0}")]
    Setup(#[source] SetupError),
    /// The batch ledger could not be read or written, or another invocation holds the batch.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Logs Ingestion failed.
    #[error(transparent)]
    Sentinel(#[from] SentinelError),
    /// The message is for a tenant this deployment does not have (removed from
    /// `CAS_TENANTS`, or queued before `CAS_TENANTS` was set). It stays in the queues:
    /// add the tenant back, or replay it once it is.
    #[error("the batch is for {}, which is not among this deployment's tenants ({known}); it is kept, in the poison queue once its retries are spent: add the tenant back to CAS_TENANTS and replay it", match tenant { Some(t) => format!("tenant {t}"), None => "the unnamed tenant (queued before CAS_TENANTS was set)".to_string() })]
    NoSuchTenant {
        /// The tenant the message names.
        tenant: Option<String>,
        /// The tenants there are.
        known: String,
    },
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
    /// The columns that say which tenant the rows came from.
    pub tenant: &'a TenantColumns,
}

/// Sends one batch given its message: claims it in the batch ledger (see
/// `batch::ledger`; `None` there means it was sent before), sends the rows not yet
/// accepted, and marks it sent, or releases the claim with the progress made.
pub(crate) async fn process(
    app: Sink<'_>,
    env: Envelope,
    deadline: Deadline,
) -> Result<IngestOutcome, IngestError> {
    tracing::Span::current().record("data_type", env.data_type.as_str());
    // The ledger is keyed by the batch id: it is trusted only for the content it names.
    let payload = match payload_text(app, &env).await {
        Ok(p) => p,
        // A spilled payload expires before its batch state: a late redelivery of a sent
        // batch is still skipped.
        Err(IngestError::MissingPayload(_)) if ledger::is_sent(app.blobs, &env).await? => {
            return Ok(IngestOutcome::AlreadySent(env.batch));
        }
        Err(e) => return Err(e),
    };
    env.check_id(&payload)?;
    let Some(mut claim) = ledger::claim(app.blobs, &env, deadline).await? else {
        return Ok(IngestOutcome::AlreadySent(env.batch));
    };
    match send(app, &env, payload, &mut claim, deadline).await {
        Ok((rows, calls, batch_rows)) => {
            ledger::mark_sent(app.blobs, &env, &claim, (rows, batch_rows), deadline).await?;
            Ok(IngestOutcome::Sent {
                batch: env.batch,
                rows,
                calls,
            })
        }
        Err(e) => {
            claim.release(app.blobs).await;
            Err(e)
        }
    }
}

/// The batch's payload (inline, or from its blob) as text: its records as a JSON array.
async fn payload_text(app: Sink<'_>, env: &Envelope) -> Result<String, IngestError> {
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
    Ok(decode_text(env, &gz)?)
}

/// A batch's rows, its table's first and then each ASIM table's, and which stream each
/// run of them goes to. The order is a function of the batch's content alone, so the
/// ranges the ledger records stay valid in a redelivery.
struct Rows {
    rows: Vec<Vec<u8>>,
    /// Consecutive runs of `rows`, each with its stream (`None`: the data type's own).
    streams: Vec<(Range<usize>, Option<AsimTable>)>,
}

impl Rows {
    /// The ASIM rows of the activities in `rows` after them, in table order.
    fn with_asim(rows: Vec<Vec<u8>>) -> Rows {
        let mut by_table: std::collections::BTreeMap<AsimTable, Vec<Vec<u8>>> = Default::default();
        let (mut skipped, mut unreadable) = (0, 0);
        for r in &rows {
            // Located, not parsed: see asim::row.
            let raw = std::str::from_utf8(r)
                .ok()
                .and_then(|t| serde_json::from_str::<&serde_json::value::RawValue>(t).ok());
            let Some(raw) = raw else {
                // Cannot happen for a row we wrote; were it to, the row still goes to its
                // table, and this says why it has no ASIM row.
                unreadable += 1;
                continue;
            };
            match asim::row(&Record::new(raw)) {
                Some((t, row)) => by_table
                    .entry(t)
                    .or_default()
                    .push(serde_json::to_vec(&row).expect("JSON values serialize")),
                None => skipped += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "activity rows that are not JSON get no ASIM row"
            );
        }
        tracing::debug!(
            skipped,
            "activities no ASIM schema describes stay in their table only"
        );
        let mut out = Rows::plain(rows);
        for (t, extra) in by_table {
            let start = out.rows.len();
            out.rows.extend(extra);
            out.streams.push((start..out.rows.len(), Some(t)));
        }
        out
    }

    fn plain(rows: Vec<Vec<u8>>) -> Rows {
        let n = rows.len();
        Rows {
            rows,
            streams: vec![(0..n, None)],
        }
    }
}

/// The batch's rows, ready to send: its payload text repaired if it came from elsewhere,
/// mapped, and any field over the service's limit cut. Only the rows outlive this: the
/// batch's text is freed before the calls run.
fn rows_of(
    env: &Envelope,
    text: String,
    with_asim: bool,
    tenant: &TenantColumns,
) -> Result<Rows, IngestError> {
    // Records stay as borrowed raw JSON: see json::record for why.
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
            let bytes = row_bytes_for(env.data_type, r, env.observed, tenant);
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
    Ok(if with_asim && env.data_type == DataType::Activities {
        Rows::with_asim(rows)
    } else {
        Rows::plain(rows)
    })
}

/// Sends a claimed batch's unsent rows; returns (rows sent in this invocation, calls made,
/// the batch's rows).
///
/// The calls go one range at a time, front first, so rows keep their order. A 413 splits
/// its range in two (the service's limit can be below ours). Whenever a batch takes more
/// than one call (its parts, a split, a batch taken over part-sent), each accepted range
/// is recorded in the ledger before the next call, so a later failure, here or in a
/// redelivery, never sends an accepted row again.
async fn send(
    app: Sink<'_>,
    env: &Envelope,
    payload: String,
    claim: &mut Claim,
    deadline: Deadline,
) -> Result<(usize, usize, usize), IngestError> {
    let Rows { rows, streams } = rows_of(env, payload, app.streams.asim, app.tenant)?;
    let stream_of = |i: usize| match streams
        .iter()
        .find(|(r, _)| r.contains(&i))
        .and_then(|(_, t)| *t)
    {
        Some(t) => t.stream(),
        None => app.streams.stream(env.data_type),
    };
    // A stack, the next call on top.
    let mut pending = Vec::new();
    for unsent in ledger::unsent(rows.len(), &claim.sent) {
        // A call goes to one stream: cut the run where its stream changes.
        for (part, _) in &streams {
            let run = unsent.start.max(part.start)..unsent.end.min(part.end);
            if run.is_empty() {
                continue;
            }
            let split = pack::split(&rows[run.clone()], app.sentinel.max_call_bytes())
                .map_err(SentinelError::from)?;
            pending.extend(
                split
                    .into_iter()
                    .map(|r| r.start + run.start..r.end + run.start),
            );
        }
    }
    pending.reverse();
    let mut several = pending.len() > 1 || !claim.sent.is_empty();
    let (mut sent_rows, mut calls) = (0, 0);
    while let Some(range) = pending.pop() {
        let uncertain = AtomicU32::new(0);
        let body = pack::body(&rows[range.clone()]);
        let result = app
            .sentinel
            .send_body(stream_of(range.start), &body, deadline, &uncertain)
            .await;
        claim.uncertain += uncertain.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                calls += 1;
                sent_rows += range.len();
                if several {
                    claim.record(app.blobs, range, deadline).await?;
                } else {
                    claim.sent.push([range.start, range.end]);
                }
            }
            Err(SentinelError::Rejected { status: 413, .. }) if range.len() > 1 => {
                let mid = range.start + range.len() / 2;
                tracing::warn!(
                    batch = %env.batch,
                    rows = range.len(),
                    "413 from Logs Ingestion; splitting the call"
                );
                pending.push(mid..range.end);
                pending.push(range.start..mid);
                several = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((sent_rows, calls, rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim protocol against storage and a sink alone: the in-memory storage stand-in
    /// (`blobs::sim`) and the Logs Ingestion simulator, both on loopback; no Azurite, no npm.
    mod protocol {
        use super::*;
        use crate::batch::envelope::pack;
        use crate::model::{DataType, Window};
        use crate::sentinel::sim::{IngestFault, IngestionSim, SIM_DCR};
        use crate::storage::sim::StorageSim;
        use std::sync::Arc;
        use std::time::Duration;

        /// A queue message as the ingest reads it.
        fn env(text: &str) -> Envelope {
            Envelope::parse(text).unwrap()
        }

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
                    crate::auth::sim::renewable(),
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
                    tenant: {
                        static NONE: TenantColumns = TenantColumns::NONE;
                        &NONE
                    },
                }
            }
        }

        /// One batch of `n` activities of 1 to 2 KiB each; its message text.
        fn batch(n: u64) -> String {
            let records: Vec<String> = (0..n)
                .map(|i| {
                    crate::cas::sim::activity_record(
                        i,
                        1_795_944_000_000,
                        1_795_944_000_000 + i as i64,
                        300,
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
            let first = process(w.sink(), env(&text), minute()).await.unwrap();
            assert!(
                matches!(first, IngestOutcome::Sent { rows: 40, .. }),
                "{first}"
            );
            for _ in 0..3 {
                let again = process(w.sink(), env(&text), minute()).await.unwrap();
                assert!(matches!(again, IngestOutcome::AlreadySent(_)), "{again}");
            }
            assert_eq!(w.sink.rows("McasActivity_CL").len(), 40);
        }

        #[tokio::test]
        async fn a_sent_batch_whose_spilled_payload_expired_is_still_skipped() {
            let w = World::new(crate::config::MAX_CALL_BYTES).await;
            let window = Window::new(1_795_944_000_000, 1_795_944_100_000).unwrap();
            let huge = |i| {
                crate::cas::sim::activity_record(i, 1_795_944_000_000, 1_795_944_000_000, 1_200_000)
                    .to_string()
            };
            let spilled = |i| {
                let m = pack(DataType::Activities, window, &[huge(i)]).remove(0);
                let gz = m.spill.clone().expect("a record over 1 MiB is spilled");
                (m, gz)
            };
            let (m, gz) = spilled(0);
            let blob = crate::batch::envelope::spill_blob_name(&m.envelope.batch);
            w.blobs
                .put(&blob, gz, crate::storage::blobs::WriteCondition::Always)
                .await
                .unwrap();
            let first = process(w.sink(), env(&m.text), minute()).await.unwrap();
            assert!(
                matches!(first, IngestOutcome::Sent { rows: 1, .. }),
                "{first}"
            );
            // The lifecycle rule deletes payloads with the states, the payload first.
            w.blobs.delete(&blob).await.unwrap();
            let again = process(w.sink(), env(&m.text), minute()).await.unwrap();
            assert!(matches!(again, IngestOutcome::AlreadySent(_)), "{again}");
            // A batch never sent whose payload is gone is an error, not a silent skip.
            let (never, _) = spilled(1);
            assert!(matches!(
                process(w.sink(), env(&never.text), minute()).await,
                Err(IngestError::MissingPayload(_))
            ));
        }

        #[tokio::test]
        async fn of_two_simultaneous_deliveries_only_one_sends() {
            let w = World::new(crate::config::MAX_CALL_BYTES).await;
            let text = batch(40);
            let (a, b) = tokio::join!(
                process(w.sink(), env(&text), minute()),
                process(w.sink(), env(&text), minute())
            );
            let sent = [&a, &b]
                .iter()
                .filter(|r| matches!(r, Ok(IngestOutcome::Sent { .. })))
                .count();
            assert_eq!(sent, 1, "{a:?} {b:?}");
            for r in [&a, &b] {
                assert!(
                    matches!(r, Ok(_) | Err(IngestError::Ledger(LedgerError::Busy(_)))),
                    "the other is skipped or told to come back: {r:?}"
                );
            }
            assert_eq!(w.sink.rows("McasActivity_CL").len(), 40);
        }

        #[tokio::test]
        async fn a_batch_that_failed_part_way_sends_only_the_rest() {
            // Calls of at most 64 KiB: 120 rows of about 2 KiB take several calls.
            let w = World::new(64 * 1024).await;
            let text = batch(120);
            w.sink.inject([IngestFault::Pass, IngestFault::Status(400)]);
            let failed = process(w.sink(), env(&text), minute()).await.unwrap_err();
            assert!(matches!(failed, IngestError::Sentinel(_)), "{failed}");
            let after_first = w.sink.rows("McasActivity_CL").len();
            assert!(after_first > 0 && after_first < 120, "{after_first}");
            let done = process(w.sink(), env(&text), minute()).await.unwrap();
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
}
