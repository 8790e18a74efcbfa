//! The poll: for each enabled data type, read what is new since the checkpoint from its
//! [`Source`], enqueue it, and only then advance the checkpoint.

use crate::batch::envelope::{pack_for, Outgoing};
use crate::cas::pull::Puller;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::config::ApiSource;
use crate::graph::alerts::GraphAlerts;
use crate::graph::discovery::Snapshot;
use crate::graph::hunting::Hunting;
use crate::model::{now_ms, DataType, TenantName, Window};
use crate::pages;
use crate::retry::Deadline;
use crate::source::{ReadError, Source, Step};
use crate::storage::blobs::BlobError;
use crate::storage::queue::QueueError;
use crate::storage::SetupError;
use std::fmt;
use std::sync::Arc;

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
        // A source with nothing due reads no window: its empty one ends when the next read
        // is due (discovery's next snapshot), which is worth saying, not a "window".
        if self.window.start_ms() == self.window.end_ms() && self.pages == 0 && self.records == 0 {
            let at = crate::model::format_ms(self.window.end_ms());
            return if self.window.end_ms() > crate::model::now_ms() {
                write!(f, "{}: nothing due until {at}", self.data_type)
            } else {
                write!(f, "{}: nothing new at {at}", self.data_type)
            };
        }
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
    /// The source failed (CAS, or Microsoft Graph for discovery); the next run continues
    /// from the stored cursor.
    #[error("{0}: {1}")]
    Read(DataType, Box<dyn std::error::Error + Send + Sync>),
    /// Enqueueing failed; the checkpoint was not advanced, so the next run pulls the window again.
    #[error("{0}: enqueue: {1}")]
    Enqueue(DataType, #[source] EnqueueError),
    /// The queue or container could not be created.
    #[error("storage: {0}")]
    Setup(#[source] SetupError),
    /// A whole invocation passed without one page from the source while it had work: the
    /// service hangs, trickles, or throttles without end. Reported as a failure, so the
    /// failed-invocation alert fires rather than only the lag alert an hour later.
    #[error("{0}: no page arrived in the whole invocation ({1}); the data type is falling behind")]
    Stalled(DataType, String),
}

/// A message was not enqueued durably.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The blob of a spilled payload could not be written (the message was not sent).
    #[error("payload blob: {0}")]
    Spill(#[source] BlobError),
    /// The queue refused the message.
    #[error(transparent)]
    Queue(#[from] QueueError),
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
    pub checkpoints: &'a CheckpointStore,
    /// Pages in hand at once, across all the tenants of a deployment (see [`crate::pages`]).
    pub pages: &'a Arc<tokio::sync::Semaphore>,
}

/// Where a poll's messages go. The app's is the fan-out queue (a spilled payload first to
/// its blob); a test's can be a list in memory that fails when told to.
pub(crate) trait Outbox {
    /// Enqueues one packed message, durably, or fails.
    fn enqueue(
        &self,
        m: &Outgoing,
    ) -> impl std::future::Future<Output = Result<(), EnqueueError>> + Send;
}

/// Stores the source's cursor over `previous` (unless it is unchanged).
async fn save<S: Source>(
    checkpoints: &CheckpointStore,
    dt: DataType,
    previous: &Checkpoint<S::Cursor>,
    source: &S,
) -> Result<Checkpoint<S::Cursor>, PollError> {
    if previous.cursor.as_ref() == Some(source.cursor()) {
        return Ok(previous.clone());
    }
    checkpoints
        .advance(dt, previous, source.cursor().clone())
        .await
        .map_err(|e| PollError::Checkpoint(dt, e))
}

/// Polls every enabled data type; one failing does not stop the others. The queues and
/// the container must exist.
///
/// The data types are read at the same time, each in its own lane. CAS's request budget
/// is handed out first come, first served (see [`crate::cas::RateLimiter`]), and a lane
/// asks again only once its previous page is enqueued, so every lane with work gets an
/// equal share of the requests and of the invocation's time, and a lane with little to do
/// leaves its share to the others. An alert-heavy tenant's change watch cannot starve
/// activities, and a backlog of activities cannot starve alerts.
pub(crate) async fn run<O: Outbox + Sync>(
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

/// Polls one data type from the source that reads it: discovery from a Graph snapshot,
/// alerts and activities from the CAS API. A new source is one arm here.
pub(crate) async fn poll_one<O: Outbox + Sync>(
    sources: Sources<'_>,
    outbox: &O,
    dt: DataType,
    deadline: Deadline,
) -> Result<PollReport, PollError> {
    let settings = sources.settings;
    let lane = Lane {
        tenant: settings.message_tenant(),
        pages: sources.pages,
        checkpoints: sources.checkpoints,
        outbox,
        dt,
        deadline,
    };
    match dt {
        DataType::Discovery => {
            lane.poll(sources.graph, |cursor, now| {
                Snapshot::new(&settings.discovery, cursor, now)
            })
            .await
        }
        DataType::Alerts if settings.cas.alerts_source == ApiSource::Graph => {
            lane.poll(sources.graph, |cursor, now| {
                GraphAlerts::new(&settings.cas, cursor, now)
            })
            .await
        }
        DataType::Activities if settings.cas.activities_source == ApiSource::Graph => {
            lane.poll(sources.graph, |cursor, now| {
                Hunting::new(&settings.cas, cursor, now)
            })
            .await
        }
        DataType::Alerts | DataType::Activities => {
            lane.poll(sources.cas, |cursor, now| {
                Puller::new(&settings.cas, dt, cursor, now)
            })
            .await
        }
    }
}

/// A step's messages: its new records, and its changed alerts (their rows' time is when the
/// change was seen).
fn pack_step(tenant: Option<&TenantName>, dt: DataType, step: &Step) -> Vec<Outgoing> {
    let mut messages = pack_for(tenant, dt, step.window, None, &step.new_records());
    if !step.changed.is_empty() {
        messages.extend(pack_for(
            tenant,
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

/// One data type's lane: where its cursor is stored and its messages go.
struct Lane<'a, O> {
    tenant: Option<&'a TenantName>,
    pages: &'a Arc<tokio::sync::Semaphore>,
    checkpoints: &'a CheckpointStore,
    outbox: &'a O,
    dt: DataType,
    deadline: Deadline,
}

impl<O: Outbox + Sync> Lane<'_, O> {
    /// Polls the source `open` makes from the stored cursor, a page at a time: each
    /// page's records are enqueued and the checkpoint advanced past them before the next
    /// page is read, so memory is one page and a run stopped anywhere loses nothing it read.
    async fn poll<S: Source>(
        &self,
        client: &S::Client,
        open: impl FnOnce(Option<&S::Cursor>, i64) -> S,
    ) -> Result<PollReport, PollError> {
        let (dt, deadline, outbox) = (self.dt, self.deadline, self.outbox);
        let (started, budget) = (std::time::Instant::now(), deadline.remaining());
        let mut checkpoint = self
            .checkpoints
            .load::<S::Cursor>(dt)
            .await
            .map_err(|e| PollError::Checkpoint(dt, e))?;
        let mut puller = open(checkpoint.cursor.as_ref(), now_ms());
        let mut report = PollReport::new(dt, puller.window());
        // Before the first enqueue, note the window being enqueued: if this run dies part-way,
        // the next one reads the same window and produces the same batch ids (skipped as sent).
        let mut intent = puller.intent();
        // Progress read but not yet stored (re-check pages that found nothing), and when the
        // cursor was last stored.
        let mut unsaved = false;
        let mut saved_at = std::time::Instant::now();
        let failure = loop {
            // The step's page counts against the bound from its answer's body to its
            // enqueue, the end of this iteration, when the hold is dropped (see `pages`).
            let page = pages::Hold::new(self.pages.clone(), deadline.at());
            let step = match page.scope(puller.read(client, deadline)).await {
                Ok(Some(step)) => step,
                Ok(None) => break None,
                // Out of time (a slot or an answer would come after the deadline): an
                // ordinary end for a run with a backlog; the next run goes on from here.
                Err(ReadError::OutOfTime(why)) => {
                    report.stopped = Some(why);
                    break None;
                }
                Err(ReadError::Failed(e)) => break Some(PollError::Read(dt, e)),
            };
            let messages = pack_step(self.tenant, dt, &step);
            if !messages.is_empty() {
                if let Some(i) = intent.take() {
                    checkpoint = self
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
                checkpoint = save(self.checkpoints, dt, &checkpoint, &puller).await?;
                (unsaved, saved_at, intent) = (false, std::time::Instant::now(), None);
            }
        };
        if unsaved {
            save(self.checkpoints, dt, &checkpoint, &puller).await?;
        }
        if let Some(e) = failure {
            // What was read before is enqueued and its position saved.
            tracing::warn!(data_type = %dt, records = report.records, "pull stopped early; what was read is enqueued");
            return Err(e);
        }
        report.complete = puller.complete();
        report.lag_seconds = puller.lag_seconds(now_ms());
        // Stalled only when the lane waited out most of its time: a run that starts with
        // too little budget for one of the client's own request slots is not the source's
        // fault.
        if let (0, Some(why)) = (report.pages, &report.stopped) {
            if started.elapsed() >= budget / 2 {
                return Err(PollError::Stalled(dt, why.clone()));
            }
        }
        Ok(report)
    }
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
    use crate::config::Settings;
    use crate::secret::Secret;
    use crate::storage::blobs::Blobs;
    use crate::storage::sim::StorageSim;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn a_source_with_nothing_due_says_when_it_is_due_not_a_zero_length_window() {
        let later = crate::model::now_ms() + 3_600_000;
        let mut idle = PollReport::new(DataType::Discovery, Window::new(later, later).unwrap());
        idle.complete = true;
        let line = idle.to_string();
        assert!(
            line.starts_with("discovery: nothing due until 20"),
            "{line}"
        );
        assert!(!line.contains("window"), "{line}");
        let mut read = PollReport::new(DataType::Alerts, Window::new(1_000, 2_000).unwrap());
        read.pages = 1;
        read.complete = true;
        assert!(
            read.to_string()
                .starts_with("alerts: window 1970-01-01T00:00:01"),
            "{read}"
        );
    }

    /// Messages in memory; refuses the enqueue numbered `fail_at` (from 1), if set.
    #[derive(Default)]
    struct Memory {
        texts: Mutex<Vec<String>>,
        calls: AtomicUsize,
        fail_at: Option<usize>,
    }

    impl Outbox for Memory {
        async fn enqueue(&self, m: &Outgoing) -> Result<(), EnqueueError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(n) == self.fail_at {
                return Err(EnqueueError::Queue(QueueError {
                    queue: "memory".into(),
                    op: "send",
                    message: "the queue is down".into(),
                }));
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
        pages: Arc<tokio::sync::Semaphore>,
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
                pages: Arc::new(tokio::sync::Semaphore::new(pages::PAGES_AT_ONCE)),
            }
        }

        fn sources(&self) -> Sources<'_> {
            Sources {
                settings: &self.settings,
                cas: &self.cas,
                graph: &self.graph,
                checkpoints: &self.checkpoints,
                pages: &self.pages,
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
            // The first scan page packs into two messages: the third is on the second page.
            fail_at: Some(3),
            ..Default::default()
        };
        let r = poll_one(sources, &failing, DataType::Activities, deadline()).await;
        assert!(matches!(r, Err(PollError::Enqueue(..))), "{r:?}");
        let first = failing.ids();
        assert!(!first.is_empty() && first.len() < 1_200, "{}", first.len());
        let stored = checkpoints
            .load::<crate::cas::Cursor>(DataType::Activities)
            .await
            .unwrap();
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

    /// The bound on pages in hand is shared by every tenant; a tenant waiting out its own
    /// CAS budget holds none of it. Before, a lane took its permit before the request and
    /// slept on its tenant's limiter holding it: with the bound taken by such sleepers (four
    /// tenants catching up fill twelve permits), every other tenant waited for them.
    #[tokio::test]
    async fn a_tenant_waiting_on_its_cas_budget_holds_no_page_the_others_need() {
        let mut throttled = Tenant::new().await;
        let mut healthy = Tenant::new().await;
        // One permit between them, and a budget that makes the throttled tenant's second
        // page wait about 6 s (a request every 4 s, and the limiter's arrival margin).
        throttled.pages = Arc::new(tokio::sync::Semaphore::new(1));
        healthy.pages = throttled.pages.clone();
        throttled.cas = throttled
            .cas
            .clone()
            .with_rate_limit(1, Duration::from_secs(4));
        let (slow_out, quick_out) = (Memory::default(), Memory::default());
        let deadline = Deadline::after(Duration::from_secs(10));
        let slow = poll_one(
            throttled.sources(),
            &slow_out,
            DataType::Activities,
            deadline,
        );
        let quick = async {
            // Once the throttled tenant has read its first page and waits for its next slot.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = std::time::Instant::now();
            let r = poll_one(
                healthy.sources(),
                &quick_out,
                DataType::Activities,
                deadline,
            )
            .await;
            (r, started.elapsed())
        };
        let (slow, (quick, took)) = tokio::join!(slow, quick);
        let quick = quick.unwrap();
        assert!(quick.complete, "{quick}");
        assert_eq!(quick_out.ids().len(), 1_200);
        assert!(
            took < Duration::from_secs(3),
            "the healthy tenant waited {took:?} for the throttled one's permit"
        );
        // The throttled tenant read what its budget allowed: two pages, then out of time.
        let slow = slow.unwrap();
        assert_eq!((slow.pages, slow.complete), (2, false), "{slow}");
        let read = slow_out.ids().len();
        assert!((501..=1_000).contains(&read), "{read} records");
    }
}
