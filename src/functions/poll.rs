//! `PollCas`: for each enabled data type, pull what is new since the checkpoint (from CAS,
//! or a discovery snapshot from Microsoft Graph), enqueue it, and only then advance the
//! checkpoint.

use crate::app::App;
use crate::batch::envelope::{pack, pack_observed, Outgoing};
use crate::cas::pull::{Puller, Step};
use crate::checkpoint::{Checkpoint, CheckpointError, Cursor};
use crate::graph::discovery::Snapshot;
use crate::model::{now_ms, DataType, Window};
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
    /// Values repaired so that they could be read (see [`crate::json::lenient`]).
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

/// What a poll reads from and where it keeps its place: the settings, the CAS and Graph
/// clients, and the checkpoints.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// Which data types, and how each is read.
    pub settings: &'a crate::config::Settings,
    /// The CAS API client.
    pub cas: &'a crate::cas::CasClient,
    /// The Graph client (discovery).
    pub graph: &'a crate::graph::GraphClient,
    /// Where each data type's cursor is stored.
    pub checkpoints: &'a crate::checkpoint::CheckpointStore,
}

/// Where a poll's messages go. The app's is the fan-out queue (a spilled payload first to
/// its blob); a test's can be a list in memory that fails when told to.
pub trait Outbox {
    /// Enqueues one packed message, durably, or fails.
    fn enqueue(
        &self,
        m: &Outgoing,
    ) -> impl std::future::Future<Output = Result<(), crate::app::AppError>> + Send;
}

impl Outbox for App {
    fn enqueue(
        &self,
        m: &Outgoing,
    ) -> impl std::future::Future<Output = Result<(), crate::app::AppError>> + Send {
        App::enqueue(self, m)
    }
}

/// Stores the reader's cursor over `previous` (unless it is unchanged).
async fn save(
    app: Sources<'_>,
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
    fn new(app: Sources<'_>, dt: DataType, cursor: Option<&Cursor>, now: i64) -> Reader {
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
        app: Sources<'_>,
        dt: DataType,
        deadline: Deadline,
    ) -> Result<Option<Step>, ReadError> {
        use crate::cas::CasError;
        use crate::graph::GraphError;
        match self {
            Reader::Cas(p) => p.next(app.cas, deadline).await.map_err(|e| match e {
                e @ CasError::OutOfTime { .. } => ReadError::OutOfTime(e.to_string()),
                e => ReadError::Failed(PollError::Cas(dt, e)),
            }),
            Reader::Graph(s) => s.next(app.graph, deadline).await.map_err(|e| match e {
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
    run_with(app.sources(), app, deadline).await
}

/// [`run`] from `sources` into `outbox`, the queues and container known to exist.
pub async fn run_with<O: Outbox + Sync>(
    sources: Sources<'_>,
    outbox: &O,
    deadline: Deadline,
) -> Vec<Result<PollReport, PollError>> {
    use tracing::Instrument;
    let lanes = sources.settings.data_types.iter().map(|&dt| {
        poll_one(sources, outbox, dt, deadline)
            .instrument(tracing::info_span!("lane", data_type = %dt))
    });
    futures::future::join_all(lanes).await
}

/// A step's messages: its new records, and its changed alerts (their rows' time is when the
/// change was seen).
fn pack_step(dt: DataType, step: &Step) -> Vec<Outgoing> {
    let mut messages = pack(dt, step.window, &step.new_records());
    if !step.changed.is_empty() {
        messages.extend(pack_observed(
            dt,
            step.window,
            step.observed,
            &step.changed_records(),
        ));
    }
    messages
}

impl PollReport {
    fn new(data_type: DataType, window: Window) -> PollReport {
        PollReport {
            data_type,
            window,
            records: 0,
            changed: 0,
            messages: 0,
            pages: 0,
            repaired: 0,
            complete: false,
            stopped: None,
            lag_seconds: None,
        }
    }

    /// Adds an enqueued step (`messages` written) to the report.
    fn count(&mut self, step: &Step, messages: usize) {
        let repairs = step.page.repairs;
        if repairs.any() {
            tracing::warn!(data_type = %self.data_type, ?repairs, "records held text no JSON reader accepts (lone surrogates, numbers beyond f64, over-deep nesting); repaired and forwarded");
        }
        self.pages += 1;
        self.repaired += repairs.total();
        self.records += step.new.len();
        self.changed += step.changed.len();
        self.messages += messages;
    }
}

/// Polls one data type, a page at a time: each page's records are enqueued and the
/// checkpoint advanced past them before the next page is read, so memory is one page and
/// a run stopped anywhere loses nothing it read.
pub async fn poll_one<O: Outbox + Sync>(
    app: Sources<'_>,
    outbox: &O,
    dt: DataType,
    deadline: Deadline,
) -> Result<PollReport, PollError> {
    let mut checkpoint = app
        .checkpoints
        .load(dt)
        .await
        .map_err(|e| PollError::Checkpoint(dt, e))?;
    let mut puller = Reader::new(app, dt, checkpoint.cursor.as_ref(), now_ms());
    let mut report = PollReport::new(dt, puller.window());
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
        let messages = pack_step(dt, &step);
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
            outbox
                .enqueue(m)
                .await
                .map_err(|e| PollError::Enqueue(dt, e))?;
        }
        report.count(&step, messages.len());
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

#[cfg(test)]
mod tests {
    //! The commit order against storage and CAS alone (the in-memory storage stand-in and
    //! the simulated tenant, no Azurite, no npm): a page's checkpoint moves only once its
    //! messages are enqueued, so a run that fails to enqueue loses nothing and the next
    //! run sends each record once.
    use super::*;
    use crate::cas::sim::{CasSim, SimConfig};
    use crate::cas::{CasAuth, CasClient};
    use crate::checkpoint::CheckpointStore;
    use crate::config::Settings;
    use crate::secret::Secret;
    use crate::storage::blobs::Blobs;
    use crate::storage::sim::StorageSim;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Messages in memory; refuses the enqueue numbered `fail_at` (from 1), if set.
    #[derive(Default)]
    struct Memory {
        texts: Mutex<Vec<String>>,
        calls: AtomicUsize,
        fail_at: Option<usize>,
    }

    impl Outbox for Memory {
        async fn enqueue(&self, m: &Outgoing) -> Result<(), crate::app::AppError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(n) == self.fail_at {
                return Err(crate::app::AppError::Http("the queue is down".into()));
            }
            self.texts.lock().unwrap().push(m.text.clone());
            Ok(())
        }
    }

    impl Memory {
        /// The ids of the records enqueued, in order.
        fn ids(&self) -> Vec<String> {
            let mut out = Vec::new();
            for t in self.texts.lock().unwrap().iter() {
                let env = crate::batch::envelope::Envelope::parse(t).unwrap();
                for r in env.inline_records().unwrap() {
                    out.push(r["_id"].as_str().unwrap().to_string());
                }
            }
            out
        }
    }

    /// A tenant with 1,200 activities over three scan pages, storage in memory, and the
    /// clients a poll reads with.
    struct Tenant {
        _cas: std::sync::Arc<CasSim>,
        _storage: std::sync::Arc<StorageSim>,
        ids: Vec<String>,
        settings: Settings,
        cas: CasClient,
        graph: crate::graph::GraphClient,
        checkpoints: CheckpointStore,
    }

    impl Tenant {
        async fn new() -> Tenant {
            let config = SimConfig {
                legacy_token: Some("t".into()),
                per_minute: 10_000,
                ..SimConfig::default()
            };
            let (cas_sim, url) = CasSim::start(config).await;
            let now = crate::model::now_ms();
            let ids = cas_sim.add_activities((0..1_200).map(|i| now - 600_000 + i * 100), |_| 0);
            let (storage_sim, storage) = StorageSim::start().await;
            let blobs = Blobs::new(storage.container_client("cas-sentinel", None).unwrap());
            blobs.ensure_container().await.unwrap();
            let settings = crate::cas::sim::client_settings_full(
                &url,
                &[
                    ("CAS_API_TOKEN", "t"),
                    ("CAS_DATA_TYPES", "activities"),
                    ("CAS_SCAN_LIMIT", "500"),
                ],
            );
            let auth = CasAuth::LegacyToken(Secret::new("t"));
            let cas = CasClient::new(reqwest::Client::new(), url.clone(), auth)
                .with_rate_limit(10_000, Duration::from_secs(60));
            let credential = crate::auth::credential(&settings.identity).unwrap();
            let graph = crate::graph::GraphClient::new(reqwest::Client::new(), url, credential);
            Tenant {
                _cas: cas_sim,
                _storage: storage_sim,
                ids,
                settings,
                cas,
                graph,
                checkpoints: CheckpointStore::new(blobs),
            }
        }

        fn sources(&self) -> Sources<'_> {
            Sources {
                settings: &self.settings,
                cas: &self.cas,
                graph: &self.graph,
                checkpoints: &self.checkpoints,
            }
        }
    }

    #[tokio::test]
    async fn a_failed_enqueue_keeps_the_checkpoint_before_its_page_and_the_next_run_sends_the_rest_once(
    ) {
        let t = Tenant::new().await;
        let (sources, checkpoints) = (t.sources(), &t.checkpoints);
        let deadline = || Deadline::after(Duration::from_secs(60));

        // Run 1: the second page's enqueue fails.
        let failing = Memory {
            fail_at: Some(2),
            ..Default::default()
        };
        let r = poll_one(sources, &failing, DataType::Activities, deadline()).await;
        assert!(matches!(r, Err(PollError::Enqueue(..))), "{r:?}");
        let first = failing.ids();
        assert!(!first.is_empty() && first.len() < 1_200, "{}", first.len());
        let stored = checkpoints.load(DataType::Activities).await.unwrap();
        let cursor = stored.cursor.expect("the first page's cursor is stored");
        assert!(
            cursor.scan.is_some(),
            "part-way: the next run resumes the scan"
        );

        // Run 2: everything else, each record once.
        let working = Memory::default();
        let r = poll_one(sources, &working, DataType::Activities, deadline())
            .await
            .unwrap();
        assert!(r.complete, "{r}");
        let mut all: Vec<String> = first.into_iter().chain(working.ids()).collect();
        let total = all.len();
        all.sort();
        all.dedup();
        let mut want = t.ids.clone();
        want.sort();
        assert_eq!(
            (total, all),
            (1_200, want),
            "each record enqueued exactly once"
        );
    }
}
