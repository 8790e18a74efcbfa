//! The batch ledger: one state blob per batch, `batches/<type>/<batch>`, that is the claim,
//! the record of which rows have been sent, and the sent marker.
//!
//! It is created with If-None-Match as `sending` (the claim, with an expiry), then replaced
//! with If-Match as `sent`: two storage calls on the common path, and exactly one of two
//! simultaneous deliveries can hold the claim. A claim whose holder died (SIGKILL,
//! instance recycled) blocks the batch only until it expires. Every write after the claim
//! is conditional on the claim's own ETag, so a holder that outlived its claim can never
//! overwrite the state of the delivery that took over. The sink (`pipeline::ingest`)
//! writes through it; `status` counts its blobs and `replay` reads them.

use super::envelope::Envelope;
use crate::model::{now_ms, BatchId, DataType, TenantName};
use crate::retry::Deadline;
use crate::storage::blobs::{BlobError, Blobs, WriteCondition};

/// The ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] BlobError),
    /// Another invocation held the batch for the whole of this one's budget.
    #[error("batch {0}: another invocation is sending it; try again later")]
    Busy(BatchId),
}

/// Writes the `sent` state, retrying storage failures within the budget: Logs Ingestion
/// has accepted the rows, and a state that never says so would have them sent again.
pub(crate) async fn mark_sent(
    blobs: &Blobs,
    env: &Envelope,
    claim: &Claim,
    (rows, batch_rows): (usize, usize),
    deadline: Deadline,
) -> Result<(), LedgerError> {
    let sent = BatchState::Sent {
        rows,
        window: env.window,
        uncertain: claim.uncertain,
    };
    if claim.uncertain > 0 {
        note_uncertain(blobs, env, claim.uncertain, batch_rows).await;
    }
    let name = &claim.name;
    let mut attempt = 0;
    loop {
        match blobs
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

/// Where a data type's batches that may hold duplicates are named: one empty blob per
/// batch a call of which went unanswered, so `status` counts them without reading every
/// state.
pub(crate) fn uncertain_prefix(tenant: Option<&TenantName>, data_type: DataType) -> String {
    format!("{}uncertain/{data_type}/", TenantName::blob_root(tenant))
}

/// Names the batch among those that may hold duplicates, and says so; the note holds the
/// unanswered calls (of every delivery) and the batch's rows (`"<calls> <rows>"`), so at
/// most calls × rows rows repeat. A failure to write it is logged: the count is for people, and the rows
/// are what matters.
async fn note_uncertain(blobs: &Blobs, env: &Envelope, calls: u32, rows: usize) {
    tracing::warn!(
        batch = %env.batch,
        uncertain_calls = calls,
        "batch sent, but {calls} of its calls went unanswered: up to {calls} copies of its rows may be duplicates (dedupe by id in KQL)"
    );
    let name = format!(
        "{}{}",
        uncertain_prefix(env.tenant.as_ref(), env.data_type),
        env.batch
    );
    if let Err(e) = blobs
        .put(
            &name,
            format!("{calls} {rows}").into_bytes(),
            WriteCondition::Always,
        )
        .await
    {
        tracing::warn!("could not note {name}: {e}");
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
        #[serde(default, skip_serializing_if = "is_zero")]
        uncertain: u32,
    },
    /// A delivery failed part-way and let go: the next one takes over at once and sends
    /// the rows not in `sent`.
    Partial {
        sent: Vec<[usize; 2]>,
        #[serde(default, skip_serializing_if = "is_zero")]
        uncertain: u32,
    },
    /// Its rows were accepted by Logs Ingestion. `uncertain` counts the calls of its
    /// deliveries that the service took and never answered: each may have stored a copy
    /// of its rows.
    Sent {
        rows: usize,
        window: crate::model::Window,
        #[serde(default, skip_serializing_if = "is_zero")]
        uncertain: u32,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl BatchState {
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("states serialize")
    }
}

/// A claim held: the state blob's ETag, and the row ranges (`[start, end)`, by the
/// record's place in the batch, which no setting or clock changes) already sent.
pub(crate) struct Claim {
    name: String,
    etag: String,
    /// The row ranges already accepted, in the order they were.
    pub sent: Vec<[usize; 2]>,
    /// Calls of this batch (in any delivery) that went unanswered, each a possible copy.
    pub uncertain: u32,
}

impl Claim {
    /// Records that `range` of the batch's rows was accepted, before the next call: a
    /// batch needing several calls records each, so a retry resends only what failed,
    /// whatever `SENTINEL_MAX_CALL_BYTES` or the rows' bytes are by then.
    pub(crate) async fn record(
        &mut self,
        blobs: &Blobs,
        range: std::ops::Range<usize>,
        deadline: Deadline,
    ) -> Result<(), LedgerError> {
        self.sent.push([range.start, range.end]);
        let state = BatchState::Sending {
            until: claim_until(deadline),
            sent: self.sent.clone(),
            uncertain: self.uncertain,
        };
        self.etag = blobs
            .put(
                &self.name,
                state.to_bytes(),
                WriteCondition::IfMatch(self.etag.clone()),
            )
            .await?;
        Ok(())
    }

    /// Lets go of the batch after a failure, keeping the rows already sent: the next
    /// delivery starts at once rather than wait out the claim, and sends only the rest.
    pub(crate) async fn release(self, blobs: &Blobs) {
        let partial = BatchState::Partial {
            sent: self.sent,
            uncertain: self.uncertain,
        };
        if let Err(e) = blobs
            .put(
                &self.name,
                partial.to_bytes(),
                WriteCondition::IfMatch(self.etag),
            )
            .await
        {
            tracing::warn!("could not release the claim on {}: {e}", self.name);
        }
    }
}

/// Whether the ledger says the batch was sent (for a redelivery whose spilled payload
/// has expired: its state outlives nothing, so a sent state settles it).
pub(crate) async fn is_sent(blobs: &Blobs, env: &Envelope) -> Result<bool, LedgerError> {
    Ok(match blobs.get(&state_name(env)).await? {
        Some((bytes, _)) => matches!(
            serde_json::from_slice::<BatchState>(&bytes),
            Ok(BatchState::Sent { .. })
        ),
        None => false,
    })
}

/// Takes the batch's claim; `None` when the batch is already sent (possibly by the holder
/// we waited for). Waits while another live invocation holds it.
pub(crate) async fn claim(
    blobs: &Blobs,
    env: &Envelope,
    deadline: Deadline,
) -> Result<Option<Claim>, LedgerError> {
    let name = &state_name(env);
    loop {
        let fresh = (Vec::new(), 0);
        if let Some(c) = try_claim(blobs, name, WriteCondition::IfAbsent, fresh, deadline).await? {
            return Ok(Some(c));
        }
        let Some((bytes, etag)) = blobs.get(name).await? else {
            continue; // released between our two calls: try again
        };
        let progress = match serde_json::from_slice::<BatchState>(&bytes) {
            Ok(BatchState::Sent { .. }) => return Ok(None),
            Ok(BatchState::Sending { until, .. }) if until > now_ms() => {
                if !deadline
                    .sleep_within(std::time::Duration::from_millis(250))
                    .await
                {
                    return Err(LedgerError::Busy(env.batch.clone()));
                }
                continue;
            }
            // Expired (its holder died) or released: take it over with its progress.
            Ok(
                BatchState::Sending {
                    sent, uncertain, ..
                }
                | BatchState::Partial { sent, uncertain },
            ) => (sent, uncertain),
            // Unreadable: start over (the rows' ids let KQL drop what this repeats).
            Err(_) => (Vec::new(), 0),
        };
        if let Some(c) = try_claim(
            blobs,
            name,
            WriteCondition::IfMatch(etag),
            progress,
            deadline,
        )
        .await?
        {
            return Ok(Some(c));
        }
    }
}

/// Writes a `sending` state under `condition`, held until this invocation's budget
/// ends (plus a margin); `None` when another writer got there first.
async fn try_claim(
    blobs: &Blobs,
    name: &str,
    condition: WriteCondition,
    (sent, uncertain): (Vec<[usize; 2]>, u32),
    deadline: Deadline,
) -> Result<Option<Claim>, LedgerError> {
    let sending = BatchState::Sending {
        until: claim_until(deadline),
        sent: sent.clone(),
        uncertain,
    };
    match blobs.put(name, sending.to_bytes(), condition).await {
        Ok(etag) => Ok(Some(Claim {
            name: name.to_string(),
            etag,
            sent,
            uncertain,
        })),
        Err(BlobError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn claim_until(deadline: Deadline) -> i64 {
    now_ms() + deadline.remaining().as_millis() as i64 + 5_000
}

/// The runs of rows `0..n` not covered by `sent`.
pub(crate) fn unsent(n: usize, sent: &[[usize; 2]]) -> Vec<std::ops::Range<usize>> {
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

/// `batches/<type>/<batch>` (under `tenants/<name>/` for a named tenant): the batch's state.
pub(crate) fn state_name(env: &Envelope) -> String {
    format!(
        "{}{}",
        state_prefix(env.tenant.as_ref(), env.data_type),
        env.batch
    )
}

/// Where a tenant's batch states of a data type are.
pub(crate) fn state_prefix(tenant: Option<&TenantName>, data_type: DataType) -> String {
    format!("{}batches/{data_type}/", TenantName::blob_root(tenant))
}

/// Whether a name under [`state_prefix`] marks a part rather than a whole batch (as
/// releases before the state blob recorded parts wrote them).
pub(crate) fn is_part_marker(name: &str) -> bool {
    name.contains(PART)
}

const PART: &str = ".part";

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            matches!(old, BatchState::Sending { until: 5, ref sent, uncertain: 0 } if sent.is_empty())
        );
        let p: BatchState = serde_json::from_slice(
            &BatchState::Partial {
                sent: vec![[0, 3]],
                uncertain: 2,
            }
            .to_bytes(),
        )
        .unwrap();
        assert!(matches!(p, BatchState::Partial { ref sent, uncertain: 2 } if sent == &[[0, 3]]));
        let old: BatchState =
            serde_json::from_str(r#"{"state":"sent","rows":3,"window":{"from":1,"to":2}}"#)
                .unwrap();
        assert!(matches!(
            old,
            BatchState::Sent {
                rows: 3,
                uncertain: 0,
                ..
            }
        ));
    }
}
