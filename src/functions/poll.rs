//! `PollCas`: for each enabled data type, pull what is new since the checkpoint, enqueue
//! it, and only then advance the checkpoint.

use crate::app::App;
use crate::cas::pull::pull;
use crate::checkpoint::{CheckpointError, Cursor};
use crate::model::{now_ms, DataType, Window};
use crate::queue::envelope::{pack, pack_observed};
use crate::retry::Deadline;
use std::fmt;

/// What one data type's poll did.
#[derive(Debug)]
pub struct PollReport {
    /// The data type.
    pub data_type: DataType,
    /// The window read.
    pub window: Window,
    /// New records enqueued.
    pub records: usize,
    /// Changed alerts enqueued again.
    pub changed: usize,
    /// Queue messages written.
    pub messages: usize,
    /// Whether the window was read to its end (else the next run continues it).
    pub complete: bool,
}

impl fmt::Display for PollReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: window {}, {} records",
            self.data_type, self.window, self.records
        )?;
        if self.changed > 0 {
            write!(f, ", {} changed alerts", self.changed)?;
        }
        write!(f, ", {} messages", self.messages)?;
        if !self.complete {
            write!(f, ", incomplete (continues next run)")?;
        }
        Ok(())
    }
}

/// A data type's poll failed; what it enqueued before failing stays enqueued.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The checkpoint could not be read or advanced.
    #[error("{0}: checkpoint: {1}")]
    Checkpoint(DataType, CheckpointError),
    /// CAS failed.
    #[error("{0}: CAS: {1}")]
    Cas(DataType, crate::cas::CasError),
    /// Enqueueing failed; the checkpoint was not advanced, so the next run pulls the window again.
    #[error("{0}: enqueue: {1}")]
    Enqueue(DataType, String),
    /// The queue or container could not be created.
    #[error("storage: {0}")]
    Setup(String),
}

/// Polls every enabled data type; one failing does not stop the others.
pub async fn run(app: &App, deadline: Deadline) -> Vec<Result<PollReport, PollError>> {
    if let Err(e) = app.ensure_resources().await {
        return vec![Err(PollError::Setup(e.to_string()))];
    }
    let mut out = Vec::new();
    for &dt in &app.settings.data_types {
        out.push(poll_one(app, dt, deadline).await);
    }
    out
}

/// Polls one data type.
pub async fn poll_one(
    app: &App,
    dt: DataType,
    deadline: Deadline,
) -> Result<PollReport, PollError> {
    let mut checkpoint = app
        .checkpoints
        .load(dt)
        .await
        .map_err(|e| PollError::Checkpoint(dt, e))?;
    let pulled = pull(
        &app.cas,
        &app.settings.cas,
        dt,
        checkpoint.cursor.as_ref(),
        now_ms(),
        deadline,
    )
    .await
    .map_err(|e| PollError::Cas(dt, e))?;
    let mut messages = pack(dt, pulled.window, &pulled.records);
    if !pulled.updates.is_empty() {
        // Observed "at the window's end", not "now", so a re-run packs the same batches.
        let observed = Some(pulled.window.to_ms());
        messages.extend(pack_observed(dt, pulled.window, observed, &pulled.updates));
    }
    // Before enqueueing, note the window being enqueued: if this run dies part-way, the
    // next one reads the same window and produces the same batch ids (skipped as sent).
    let window_end = Some(pulled.window.to_ms());
    if !messages.is_empty()
        && pulled.start.pending_upper_ms != window_end
        && dt != DataType::Discovery
    {
        let intent = Cursor {
            pending_upper_ms: window_end,
            ..pulled.start.clone()
        };
        checkpoint = app
            .checkpoints
            .advance(dt, &checkpoint, intent)
            .await
            .map_err(|e| PollError::Checkpoint(dt, e))?;
    }
    for m in &messages {
        app.enqueue(m)
            .await
            .map_err(|e| PollError::Enqueue(dt, e.to_string()))?;
    }
    if checkpoint.cursor.as_ref() != Some(&pulled.cursor) {
        app.checkpoints
            .advance(dt, &checkpoint, pulled.cursor)
            .await
            .map_err(|e| PollError::Checkpoint(dt, e))?;
    }
    if let Some(e) = pulled.error {
        // Progress up to the failure is saved; report the failure all the same.
        tracing::warn!(data_type = %dt, records = pulled.records.len(), "pull stopped early; what was read is enqueued");
        return Err(PollError::Cas(dt, e));
    }
    Ok(PollReport {
        data_type: dt,
        window: pulled.window,
        records: pulled.records.len(),
        changed: pulled.updates.len(),
        messages: messages.len(),
        complete: pulled.complete,
    })
}
