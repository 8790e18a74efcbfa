//! `PollCas`: for each enabled data type, pull what is new since the checkpoint (from CAS,
//! or a discovery snapshot from Microsoft Graph), enqueue it, and only then advance the
//! checkpoint.

use crate::app::App;
use crate::cas::pull::{Puller, Step};
use crate::checkpoint::{Checkpoint, CheckpointError, Cursor};
use crate::graph::discovery::Snapshot;
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
    /// CAS pages read.
    pub pages: usize,
    /// Values repaired so that they could be read (see [`crate::lenient`]).
    pub repaired: usize,
    /// Whether the window was read to its end (else the next run continues it).
    pub complete: bool,
    /// Why the run stopped before the end, when the invocation's time ran out mid-request.
    pub stopped: Option<String>,
    /// How far the checkpoint is behind now, in seconds, once the run has stored it (not
    /// for discovery, whose checkpoint is when the next snapshot is due).
    pub lag_seconds: Option<i64>,
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
        write!(f, ", {} messages from {} pages", self.messages, self.pages)?;
        if self.repaired > 0 {
            write!(f, ", {} values repaired", self.repaired)?;
        }
        if !self.complete {
            write!(f, ", incomplete (continues next run)")?;
        }
        if let Some(why) = &self.stopped {
            write!(f, ": {why}")?;
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
    /// Microsoft Graph failed (discovery); the snapshot continues on the next run.
    #[error("{0}: {1}")]
    Graph(DataType, crate::graph::GraphError),
    /// Enqueueing failed; the checkpoint was not advanced, so the next run pulls the window again.
    #[error("{0}: enqueue: {1}")]
    Enqueue(DataType, #[source] crate::app::AppError),
    /// The queue or container could not be created.
    #[error("storage: {0}")]
    Setup(#[source] crate::app::AppError),
}

/// How often a lane stores its cursor when its pages enqueue nothing (a change watch
/// re-reading thousands of unchanged alerts), so a crash costs at most this much re-reading.
const SAVE_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Stores the reader's cursor over `previous` (unless it is unchanged).
async fn save(
    app: &App,
    dt: DataType,
    previous: &Checkpoint,
    reader: &Reader,
) -> Result<Checkpoint, PollError> {
    if previous.cursor.as_ref() == Some(reader.cursor()) {
        return Ok(previous.clone());
    }
    app.checkpoints
        .advance(dt, previous, reader.cursor().clone())
        .await
        .map_err(|e| PollError::Checkpoint(dt, e))
}

/// What a lane reads from: CAS for alerts and activities, Graph for discovery. Both hand
/// out the same [`Step`]s, so the enqueue-then-store loop is one.
enum Reader {
    Cas(Puller),
    Graph(Snapshot),
}

/// A read that did not produce a step.
enum ReadError {
    /// The invocation's time ran out mid-request: an ordinary end for a run with a backlog.
    OutOfTime(String),
    /// Anything else.
    Failed(PollError),
}

impl Reader {
    fn new(app: &App, dt: DataType, cursor: Option<&Cursor>, now: i64) -> Reader {
        match dt {
            DataType::Discovery => {
                Reader::Graph(Snapshot::new(&app.settings.discovery, cursor, now))
            }
            _ => Reader::Cas(Puller::new(&app.settings.cas, dt, cursor, now)),
        }
    }

    fn window(&self) -> Window {
        match self {
            Reader::Cas(p) => p.window(),
            Reader::Graph(s) => s.window(),
        }
    }

    fn intent(&self) -> Option<Cursor> {
        match self {
            Reader::Cas(p) => p.intent(),
            Reader::Graph(s) => s.intent(),
        }
    }

    fn cursor(&self) -> &Cursor {
        match self {
            Reader::Cas(p) => p.cursor(),
            Reader::Graph(s) => s.cursor(),
        }
    }

    fn complete(&self) -> bool {
        match self {
            Reader::Cas(p) => p.complete(),
            Reader::Graph(s) => s.complete(),
        }
    }

    async fn next(
        &mut self,
        app: &App,
        dt: DataType,
        deadline: Deadline,
    ) -> Result<Option<Step>, ReadError> {
        use crate::cas::CasError;
        use crate::graph::GraphError;
        match self {
            Reader::Cas(p) => p.next(&app.cas, deadline).await.map_err(|e| match e {
                e @ CasError::OutOfTime { .. } => ReadError::OutOfTime(e.to_string()),
                e => ReadError::Failed(PollError::Cas(dt, e)),
            }),
            Reader::Graph(s) => s.next(&app.graph, deadline).await.map_err(|e| match e {
                e @ GraphError::OutOfTime { .. } => ReadError::OutOfTime(e.to_string()),
                e => ReadError::Failed(PollError::Graph(dt, e)),
            }),
        }
    }
}

/// Polls every enabled data type; one failing does not stop the others.
///
/// The data types are read at the same time, each in its own lane. CAS's request budget
/// is handed out first come, first served (see [`crate::cas::RateLimiter`]), and a lane
/// asks again only once its previous page is enqueued, so every lane with work gets an
/// equal share of the requests and of the invocation's time, and a lane with little to do
/// leaves its share to the others. An alert-heavy tenant's change watch cannot starve
/// activities, and a backlog of activities cannot starve alerts.
pub async fn run(app: &App, deadline: Deadline) -> Vec<Result<PollReport, PollError>> {
    if let Err(e) = app.ensure_resources().await {
        return vec![Err(PollError::Setup(e))];
    }
    use tracing::Instrument;
    let lanes = app.settings.data_types.iter().map(|&dt| {
        poll_one(app, dt, deadline).instrument(tracing::info_span!("lane", data_type = %dt))
    });
    futures::future::join_all(lanes).await
}

/// Polls one data type, a page at a time: each page's records are enqueued and the
/// checkpoint advanced past them before the next page is read, so memory is one page and
/// a run stopped anywhere loses nothing it read.
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
    let mut puller = Reader::new(app, dt, checkpoint.cursor.as_ref(), now_ms());
    let mut report = PollReport {
        data_type: dt,
        window: puller.window(),
        records: 0,
        changed: 0,
        messages: 0,
        pages: 0,
        repaired: 0,
        complete: false,
        stopped: None,
        lag_seconds: None,
    };
    // Before the first enqueue, note the window being enqueued: if this run dies part-way,
    // the next one reads the same window and produces the same batch ids (skipped as sent).
    let mut intent = puller.intent();
    // Progress read but not yet stored (re-check pages that found nothing), and when the
    // cursor was last stored.
    let mut unsaved = false;
    let mut saved_at = std::time::Instant::now();
    let failure = loop {
        let step = match puller.next(app, dt, deadline).await {
            Ok(Some(step)) => step,
            Ok(None) => break None,
            // Out of time (a slot or an answer would come after the deadline): an
            // ordinary end for a run with a backlog; the next run goes on from here.
            Err(ReadError::OutOfTime(why)) => {
                report.stopped = Some(why);
                break None;
            }
            Err(ReadError::Failed(e)) => break Some(e),
        };
        let mut messages = pack(dt, step.window, &step.new_records());
        if !step.changed.is_empty() {
            messages.extend(pack_observed(
                dt,
                step.window,
                step.observed,
                &step.changed_records(),
            ));
        }
        if !messages.is_empty() {
            if let Some(i) = intent.take() {
                checkpoint = app
                    .checkpoints
                    .advance(dt, &checkpoint, i)
                    .await
                    .map_err(|e| PollError::Checkpoint(dt, e))?;
            }
        }
        for m in &messages {
            app.enqueue(m)
                .await
                .map_err(|e| PollError::Enqueue(dt, e))?;
        }
        let repairs = step.page.repairs;
        if repairs.any() {
            tracing::warn!(data_type = %dt, ?repairs, "CAS records held text no JSON reader accepts (lone surrogates, numbers beyond f64, over-deep nesting); repaired and forwarded");
        }
        report.pages += 1;
        report.repaired += repairs.total();
        report.records += step.new.len();
        report.changed += step.changed.len();
        report.messages += messages.len();
        unsaved = true;
        if step.commit || saved_at.elapsed() >= SAVE_AT_LEAST_EVERY {
            checkpoint = save(app, dt, &checkpoint, &puller).await?;
            (unsaved, saved_at, intent) = (false, std::time::Instant::now(), None);
        }
    };
    if unsaved {
        save(app, dt, &checkpoint, &puller).await?;
    }
    if let Some(e) = failure {
        // What was read before is enqueued and its position saved.
        tracing::warn!(data_type = %dt, records = report.records, "pull stopped early; what was read is enqueued");
        return Err(e);
    }
    report.complete = puller.complete();
    if dt != DataType::Discovery {
        report.lag_seconds = Some((now_ms() - puller.cursor().position_ms) / 1000);
    }
    Ok(report)
}
