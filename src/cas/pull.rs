//! What to ask CAS for, given a checkpoint, one page at a time.
//!
//! A [`Puller`] reads one data type from its cursor: each [`Puller::next`] reads one CAS
//! page and returns the records to enqueue with the cursor that follows them, which the
//! poll stores once they are enqueued. Memory is one page whatever the backlog, and a run
//! that stops anywhere (time, an error, a crash) resumes from the last stored cursor:
//! alerts from the same skip/limit page, activities from the `nextQueryFilters` CAS gave,
//! so a page read again is the same page and packs into the same batches.
//!
//! Windows end `CAS_SETTLE_DELAY` before now and start `CAS_OVERLAP` before the last
//! position; the ids already sent from the overlap are kept in the cursor and skipped.
//! Only the ids that a later page or window can list again are kept, so a cursor stays
//! the size of the overlap, not of the backlog.
//!
//! For alerts, the change watch shares the same lane: once per `CAS_ALERT_UPDATE_INTERVAL`
//! it re-lists the alerts of `CAS_ALERT_UPDATE_WINDOW`, a page at a time, taking turns with
//! the new-alerts listing so neither can starve the other, and resuming where it stopped.

use super::{AlertWatch, Cursor, PageResume, ScanResume, WatchPass};
use super::{CasClient, CasError, ACTIVITY_KEYS, ALERT_KEYS};
use crate::config::CasSettings;
use crate::model::{DataType, Window};
use crate::retry::Deadline;
use crate::source::{Page, ReadError, Source, Step};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

/// CAS list pages hold at most 100 records (scan pages excepted).
pub(crate) const PAGE: usize = 100;
/// CAS refuses `skip` beyond this; the alerts listing moves its lower bound instead.
pub(crate) const MAX_SKIP: usize = 5000;
/// A cursor holding more overlap ids than this is logged: every one is needed (dropping
/// any would send its record twice), but so many usually means a burst worth knowing of.
pub(crate) const LARGE_RECENT: usize = 100_000;
/// The alerts list.
pub(crate) const ALERTS_PATH: &str = "api/v1/alerts/";
/// The activities list.
pub(crate) const ACTIVITIES_PATH: &str = "api/v1/activities/";

/// Where the main listing stands.
enum Main {
    Alerts(AlertPages),
    Activities { filters: Map<String, Value> },
    Done,
}

/// Reads one data type, a page at a time, from a cursor.
pub(crate) struct Puller {
    cas: CasSettings,
    now_ms: i64,
    start: Cursor,
    /// The window being read (a point when there is nothing to read).
    window: Window,
    main: Main,
    seen: Seen,
    /// The cursor as it stands after the last step.
    cursor: Cursor,
    /// Whether the change watch has the next turn.
    watch_turn: bool,
    /// Whether a re-check finished in this run (one is enough per run).
    watch_finished: bool,
    /// The listing of alerts resolved since the last run (and again every
    /// [`RELIST_RESOLUTIONS`] of a long run).
    resolutions: Resolutions,
    /// When the run began, for the time of a re-listing on the run's own clock.
    began: tokio::time::Instant,
}

impl Puller {
    /// A pull of `data_type` from `cursor` (`None` on a first run) at `now_ms`.
    pub(crate) fn new(
        cas: &CasSettings,
        data_type: DataType,
        cursor: Option<&Cursor>,
        now_ms: i64,
    ) -> Puller {
        let start = cursor.cloned().unwrap_or_else(|| Cursor {
            position_ms: now_ms - ms(cas.lookback),
            ..Default::default()
        });
        let from = start.query_from();
        let upper = window_end(&start, cas, now_ms);
        let (window, main) = main_listing(cas, data_type, &start, from, upper);
        let (window, main) = match (window, main) {
            (Some(w), Some(m)) => (w, m),
            _ => {
                let at = start.position_ms;
                (
                    Window::new(at, at).expect("a point is a window"),
                    Main::Done,
                )
            }
        };
        let mut cursor = start.clone();
        if data_type == DataType::Alerts {
            cursor.watch = match cas.alert_updates {
                None => None,
                Some(_) => {
                    let mut w = cursor.watch.take().unwrap_or_else(|| AlertWatch {
                        last_check_ms: now_ms,
                        ..Default::default()
                    });
                    // Alerts from the first window on are all ours (an upgraded watch
                    // without this starts from where the cursor is now).
                    w.since_ms.get_or_insert(from);
                    Some(w)
                }
            };
        }
        Puller {
            cas: cas.clone(),
            now_ms,
            seen: Seen::new(start.recent.clone()),
            start,
            window,
            main,
            cursor,
            watch_turn: false,
            watch_finished: false,
            resolutions: if data_type == DataType::Alerts && cas.alert_updates.is_some() {
                Resolutions::Due { now_ms }
            } else {
                Resolutions::Off
            },
            began: tokio::time::Instant::now(),
        }
    }

    /// Reads the next page; `None` when there is nothing more to read in this run (the
    /// window is read and no re-check is due) or the deadline has passed.
    pub(crate) async fn next(
        &mut self,
        client: &CasClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, CasError> {
        if deadline.passed() {
            return Ok(None);
        }
        if let Resolutions::Read(at) = self.resolutions {
            if at.elapsed() >= RELIST_RESOLUTIONS {
                // The run's clock moved on by what has passed since it began.
                self.resolutions = Resolutions::Due {
                    now_ms: self.now_ms + self.began.elapsed().as_millis() as i64,
                };
            }
        }
        if matches!(
            self.resolutions,
            Resolutions::Due { .. } | Resolutions::Reading { .. }
        ) {
            return self.resolutions_step(client, deadline).await.map(Some);
        }
        let watch_due = self.watch_due();
        let main_done = self.complete();
        let watch = watch_due && (main_done || self.watch_turn);
        self.watch_turn = !self.watch_turn;
        if watch {
            return self.watch_step(client, deadline).await.map(Some);
        }
        match &mut self.main {
            Main::Done => Ok(None),
            Main::Alerts(_) => self.alerts_step(client, deadline).await.map(Some),
            Main::Activities { .. } => self.activities_step(client, deadline).await.map(Some),
        }
    }

    fn overlap_from(&self) -> i64 {
        self.window.end_ms() - ms(self.cas.overlap)
    }

    /// A step of the main listing: new records only, its cursor always stored.
    fn main_step(&self, page: Page, new: Vec<usize>) -> Step {
        Step {
            page,
            window: self.window,
            new,
            changed: Vec::new(),
            observed: None,
            commit: true,
        }
    }

    /// The cursor once the whole window is enqueued.
    fn finished(&mut self) -> Cursor {
        let end = self.window.end_ms();
        let mut c = self.seen.cursor(end, self.overlap_from());
        c.watch = self.cursor.watch.take();
        c
    }

    /// The cursor part-way through the window: the same start, the ids a later page can
    /// list again, and where to resume.
    fn partial(&self) -> Cursor {
        Cursor {
            position_ms: self.start.position_ms,
            rescan_from_ms: Some(self.start.query_from()),
            recent: self.seen.recent.clone(),
            scan: None,
            pages: None,
            pending_upper_ms: Some(self.window.end_ms()),
            watch: self.cursor.watch.clone(),
        }
    }

    async fn alerts_step(
        &mut self,
        client: &CasClient,
        deadline: Deadline,
    ) -> Result<Step, CasError> {
        let Main::Alerts(pages) = &mut self.main else {
            unreachable!("alerts_step is only called for alerts")
        };
        let page = pages.next(client, &self.cas, deadline).await?;
        let (done, lower, resume) = (pages.done, pages.lower, pages.resume());
        let mut new = Vec::new();
        for (i, r) in page.records.iter().enumerate() {
            if self.seen.admit(r.id.as_deref(), r.pos) {
                if self.cas.skip_identity_alerts && from_defender_for_identity(page.text(r)) {
                    tracing::debug!(id = ?r.id, "a Defender for Identity alert, not forwarded (CAS_SKIP_IDENTITY_ALERTS)");
                    continue;
                }
                new.push(i);
                if let (Some(w), Some(id), Some(pos)) = (&mut self.cursor.watch, &r.id, r.pos) {
                    w.alerts.insert(id.clone(), (pos, r.fingerprint.clone()));
                }
            }
        }
        self.cursor = if done {
            self.main = Main::Done;
            self.finished()
        } else {
            // Records dated before the listing's lower bound are never listed again.
            let keep = lower.min(self.overlap_from());
            self.seen.recent.retain(|_, p| *p >= keep);
            Cursor {
                pages: Some(resume),
                ..self.partial()
            }
        };
        Ok(self.main_step(page, new))
    }

    async fn activities_step(
        &mut self,
        client: &CasClient,
        deadline: Deadline,
    ) -> Result<Step, CasError> {
        let Main::Activities { filters } = &self.main else {
            unreachable!("activities_step is only called for activities")
        };
        let body = json!({"filters": filters, "isScan": true, "limit": self.cas.scan_limit});
        let page = client
            .list(ACTIVITIES_PATH, &body, ACTIVITY_KEYS, deadline)
            .await?;
        let next = match (page.has_next, &page.next_query_filters) {
            (false, _) => None,
            (true, Some(next)) => Some(with_extra(next.clone(), &self.cas.activities_filter)),
            (true, None) => {
                return Err(CasError::Shape {
                    path: ACTIVITIES_PATH.into(),
                    detail: "hasNext is true but nextQueryFilters is missing".into(),
                })
            }
        };
        let new: Vec<usize> = (0..page.records.len())
            .filter(|&i| {
                let r = &page.records[i];
                self.seen.admit(r.id.as_deref(), r.pos)
            })
            .collect();
        self.cursor = match next {
            None => {
                self.main = Main::Done;
                self.finished()
            }
            Some(next) => {
                // A scan lists each record once: only the previous window's overlap ids
                // (met again anywhere in the scan) and this window's own overlap (which
                // the next window re-reads) are needed.
                let (old_end, keep_from) = (self.start.position_ms, self.overlap_from());
                self.seen
                    .recent
                    .retain(|_, p| *p <= old_end || *p >= keep_from);
                self.main = Main::Activities {
                    filters: next.clone(),
                };
                Cursor {
                    scan: Some(ScanResume {
                        window_to: self.window.end_ms(),
                        next_filters: next,
                    }),
                    ..self.partial()
                }
            }
        };
        Ok(self.main_step(page, new))
    }

    /// Whether the change watch has a re-check to run or continue.
    fn watch_due(&self) -> bool {
        let (Some(updates), Some(w)) = (self.cas.alert_updates, &self.cursor.watch) else {
            return false;
        };
        if self.watch_finished {
            return false;
        }
        w.pass.is_some() || self.now_ms - w.last_check_ms >= ms(updates.interval)
    }

    /// One page of the alerts resolved since the last run (CAS filters on `resolutionDate`),
    /// each forwarded again, as a change, when its state differs from the one forwarded.
    /// The full re-check stays for the changes no date reveals (a severity edit, a
    /// reopened alert), at its slow interval.
    async fn resolutions_step(
        &mut self,
        client: &CasClient,
        deadline: Deadline,
    ) -> Result<Step, CasError> {
        let updates = self.cas.alert_updates.expect("only with the watch");
        let w = self.cursor.watch.as_mut().expect("only with the watch");
        if let Resolutions::Due { now_ms } = self.resolutions {
            let oldest = now_ms - ms(updates.window);
            let upper = upper_bound(&self.cas, now_ms);
            let from = w
                .resolved_ms
                .unwrap_or(w.last_check_ms)
                .max(oldest)
                .min(upper);
            let mut pages = AlertPages::new(oldest, upper.max(oldest));
            pages.resolved = Some((from, upper));
            self.resolutions = Resolutions::Reading { pages, now_ms };
        }
        let Resolutions::Reading { pages, now_ms } = &mut self.resolutions else {
            unreachable!("set just above");
        };
        let now_ms = *now_ms;
        let (from, upper) = pages.resolved.expect("a listing of resolutions");
        let page = pages.next(client, &self.cas, deadline).await?;
        // An alert this deployment never forwarded (before its first window) is not ours.
        let (_, changed) = compare(w, &page, |_, _| None);
        let done = pages.done;
        if done {
            w.resolved_ms = Some(upper + 1);
            self.resolutions = Resolutions::Read(tokio::time::Instant::now());
        }
        Ok(Step {
            window: Window::new(from, upper).expect("from is at most upper"),
            page,
            new: Vec::new(),
            commit: !changed.is_empty() || done,
            changed,
            observed: Some(now_ms),
        })
    }

    /// One page of the change watch's re-check.
    async fn watch_step(
        &mut self,
        client: &CasClient,
        deadline: Deadline,
    ) -> Result<Step, CasError> {
        let updates = self.cas.alert_updates.expect("watch_due checked it");
        let oldest = self.now_ms - ms(updates.window);
        let upper = self.cursor.position_ms;
        let now = self.now_ms;
        let w = self.cursor.watch.as_mut().expect("watch_due checked it");
        let pass = *w.pass.get_or_insert(WatchPass {
            started_ms: now,
            next: AlertPages::new(oldest, upper.max(oldest)).resume(),
        });
        let window = Window::new(pass.next.lower, pass.next.upper.max(pass.next.lower))
            .expect("the upper bound is raised to the lower");
        let mut pages = AlertPages::from_resume(pass.next);
        // The re-check is background work: it leaves some of each minute's permits to the
        // listings of new alerts and resolutions.
        let page = pages
            .next(&client.background(), &self.cas, deadline)
            .await?;
        let since = w.since_ms.unwrap_or(i64::MAX);
        let finished_before = self.watch_finished;
        let seen = &mut self.seen;
        let (new, changed) = compare(w, &page, |id, pos| {
            // Dated where everything was forwarded, yet never forwarded: it became visible
            // after the listing had passed its date, and is sent now, as new. Before the
            // deployment's first window it is a baseline, remembered, not ours to send.
            Some(pos >= since && seen.admit(Some(id), Some(pos)))
        });
        if pages.done {
            w.last_check_ms = pass.started_ms;
            w.pass = None;
            self.watch_finished = true;
        } else {
            w.pass = Some(WatchPass {
                started_ms: pass.started_ms,
                next: pages.resume(),
            });
        }
        w.alerts.retain(|_, (ts, _)| *ts >= oldest);
        let commit =
            !new.is_empty() || !changed.is_empty() || self.watch_finished != finished_before;
        Ok(Step {
            page,
            window,
            new,
            changed,
            observed: Some(pass.started_ms),
            commit,
        })
    }
}

impl Source for Puller {
    type Client = CasClient;
    type Cursor = Cursor;

    /// The window being read.
    fn window(&self) -> Window {
        self.window
    }

    /// The cursor to store before enqueueing anything from this pull: the window being
    /// enqueued, so a run that dies part-way reads exactly it again. `None` when it is
    /// stored already.
    fn intent(&self) -> Option<Cursor> {
        let end = self.window.end_ms();
        let reading = !matches!(self.main, Main::Done);
        (reading && self.start.pending_upper_ms != Some(end)).then(|| Cursor {
            pending_upper_ms: Some(end),
            ..self.start.clone()
        })
    }

    /// Whether the main window has been read to its end.
    fn complete(&self) -> bool {
        matches!(self.main, Main::Done)
    }

    /// The cursor after the last step: what to store once its records are enqueued.
    fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    fn lag_seconds(&self, now_ms: i64) -> Option<i64> {
        Some((now_ms - self.cursor.position_ms) / 1000)
    }

    async fn read(
        &mut self,
        client: &CasClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, ReadError> {
        self.next(client, deadline).await.map_err(|e| {
            let out_of_time = matches!(e, CasError::OutOfTime { .. });
            ReadError::of(e, out_of_time)
        })
    }
}

/// The app id Defender for Cloud Apps gives Active Directory: alerts that Defender for
/// Identity raised and Cloud App Security passes on name it as their `service` entity.
pub(crate) const DEFENDER_FOR_IDENTITY_APP: i64 = 20940;

/// Whether an alert came from Defender for Identity (its `service` entity is Active
/// Directory). A workspace that also has Defender for Identity's own connector gets such
/// alerts twice, with different ids.
fn from_defender_for_identity(text: &str) -> bool {
    // Cheap test first: most alerts never mention the number.
    if !text.contains("20940") {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    v.get("entities")
        .and_then(Value::as_array)
        .is_some_and(|es| {
            es.iter().any(|e| {
                e.get("type").and_then(Value::as_str) == Some("service")
                    && e.get("id")
                        .and_then(|id| id.as_i64().or_else(|| id.as_str()?.parse().ok()))
                        == Some(DEFENDER_FOR_IDENTITY_APP)
            })
        })
}

/// The window a pull reads and where its listing stands: resumed from the cursor, or new
/// from `from` to `upper`; `None`s when there is nothing to read.
fn main_listing(
    cas: &CasSettings,
    data_type: DataType,
    start: &Cursor,
    from: i64,
    upper: i64,
) -> (Option<Window>, Option<Main>) {
    match data_type {
        DataType::Alerts => match start.pages {
            Some(r) => (
                Window::new(from, r.upper).ok(),
                Some(Main::Alerts(AlertPages::from_resume(r))),
            ),
            None => (
                Window::new(from, upper).ok(),
                Some(Main::Alerts(AlertPages::new(from, upper))),
            ),
        },
        DataType::Activities => match &start.scan {
            Some(r) => (
                Window::new(from, r.window_to).ok(),
                Some(Main::Activities {
                    filters: r.next_filters.clone(),
                }),
            ),
            None if upper >= start.position_ms => {
                let mut f = with_extra(Map::new(), &cas.activities_filter);
                f.insert("created".into(), json!({"gte": from, "lte": upper}));
                (
                    Window::new(from, upper).ok(),
                    Some(Main::Activities { filters: f }),
                )
            }
            None => (None, None),
        },
        // Discovery is read from Microsoft Graph, by [`crate::graph::discovery`].
        DataType::Discovery => (None, None),
    }
}

/// Whether two fingerprints describe the same state. A fingerprint stored by an earlier
/// release also held `statusValue` (read/unread) in front: that part is ignored, so an
/// upgrade does not forward every watched alert again.
fn same_state(stored: &str, now: &str) -> bool {
    if stored == now {
        return true;
    }
    let parts = stored.split('/').count();
    parts == now.split('/').count() + 1
        && stored.split_once('/').is_some_and(|(_, rest)| rest == now)
}

#[cfg(feature = "sim")]
/// A whole pull, collected in memory: what [`Puller`] reads in one run, up to the deadline
/// or the first error. For tests and small tools; the poll and backfill step through a
/// [`Puller`] instead, enqueueing each page before reading the next.
#[derive(Debug)]
pub struct Pull {
    /// The window the records belong to.
    pub window: Window,
    /// New records, in the order CAS listed them.
    pub records: Vec<Value>,
    /// Alerts forwarded before whose resolution or severity has since changed.
    pub updates: Vec<Value>,
    /// The cursor the pull started from.
    pub start: Cursor,
    /// The cursor to store once the records are enqueued.
    pub cursor: Cursor,
    /// Whether the window was read to its end.
    pub complete: bool,
    /// The error that stopped the pull early, if one did.
    pub error: Option<CasError>,
}

#[cfg(feature = "sim")]
/// Runs a [`Puller`] to its end (see [`Pull`]).
pub async fn pull(
    client: &CasClient,
    cas: &CasSettings,
    data_type: DataType,
    cursor: Option<&Cursor>,
    now_ms: i64,
    deadline: Deadline,
) -> Result<Pull, CasError> {
    let mut puller = Puller::new(cas, data_type, cursor, now_ms);
    let start = cursor.cloned().unwrap_or_else(|| puller.start.clone());
    let (mut records, mut updates) = (Vec::new(), Vec::new());
    let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
    let error = loop {
        match puller.next(client, deadline).await {
            Ok(Some(step)) => {
                records.extend(step.new_records().into_iter().map(parse));
                updates.extend(step.changed_records().into_iter().map(parse));
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    Ok(Pull {
        window: puller.window(),
        records,
        updates,
        start,
        complete: puller.complete(),
        cursor: puller.cursor().clone(),
        error,
    })
}

fn ms(d: std::time::Duration) -> i64 {
    d.as_millis() as i64
}

fn upper_bound(cas: &CasSettings, now_ms: i64) -> i64 {
    now_ms - ms(cas.settle)
}

/// A window's end: the unconfirmed one a previous run began, else settle before now.
fn window_end(start: &Cursor, cas: &CasSettings, now_ms: i64) -> i64 {
    start
        .pending_upper_ms
        .unwrap_or_else(|| upper_bound(cas, now_ms))
}

fn with_extra(mut filters: Map<String, Value>, extra: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in extra {
        filters.entry(k.clone()).or_insert_with(|| v.clone());
    }
    filters
}

/// The ids already enqueued, with their positions: the cursor's overlap ids plus what
/// this run admitted that a later page or window can list again.
struct Seen {
    recent: BTreeMap<String, i64>,
    /// Records with an id but no usable position: deduplicated within the run only.
    unplaced: HashSet<String>,
}

impl Seen {
    fn new(recent: BTreeMap<String, i64>) -> Self {
        Seen {
            recent,
            unplaced: HashSet::new(),
        }
    }

    /// Whether the record is new; records it as seen.
    fn admit(&mut self, id: Option<&str>, pos: Option<i64>) -> bool {
        match (id, pos) {
            (Some(id), Some(pos)) => self.recent.insert(id.to_string(), pos).is_none(),
            (Some(id), None) => {
                !self.recent.contains_key(id) && self.unplaced.insert(id.to_string())
            }
            // No id: nothing to deduplicate on; forward it (the row will say what is missing).
            (None, _) => true,
        }
    }

    /// A cursor at `position` that re-reads from `rescan_from`, keeping the ids needed there.
    fn cursor(&self, position: i64, rescan_from: i64) -> Cursor {
        let from = rescan_from.min(position);
        let recent: BTreeMap<String, i64> = self
            .recent
            .iter()
            .filter(|(_, p)| **p >= from)
            .map(|(k, p)| (k.clone(), *p))
            .collect();
        if recent.len() > LARGE_RECENT {
            tracing::warn!(ids = recent.len(), "the overlap holds an unusually large number of records; all are kept so none is sent twice");
        }
        Cursor {
            position_ms: position,
            rescan_from_ms: Some(from),
            recent,
            ..Default::default()
        }
    }
}

/// Where the listing of alerts resolved since the last run stands.
enum Resolutions {
    /// To read, up to this time (Unix ms) less the settle delay.
    Due { now_ms: i64 },
    /// Part-way, listing as of this time.
    Reading { pages: AlertPages, now_ms: i64 },
    /// Read to its end at this instant; read again after [`RELIST_RESOLUTIONS`] if the
    /// run goes on that long.
    Read(tokio::time::Instant),
    /// There is no change watch.
    Off,
}

/// How often a long run (a catch-up, a re-check of thousands of alerts at 30 requests a
/// minute) lists the alerts resolved meanwhile: without it a resolution waits for the end
/// of the run, minutes on a busy tenant; each listing costs one request when nothing was
/// resolved, one in fifteen at this rate.
const RELIST_RESOLUTIONS: std::time::Duration = std::time::Duration::from_secs(30);

/// Compares a page of alerts with the states the watch forwarded, remembering the new ones:
/// the indexes of alerts to send as new and as changed. For an alert the watch does not
/// know, `unknown(id, date)` says whether to send it as new (`Some(true)`), only remember it
/// (`Some(false)`), or leave it alone (`None`).
fn compare(
    w: &mut AlertWatch,
    page: &Page,
    mut unknown: impl FnMut(&str, i64) -> Option<bool>,
) -> (Vec<usize>, Vec<usize>) {
    let (mut new, mut changed) = (Vec::new(), Vec::new());
    for (i, r) in page.records.iter().enumerate() {
        let (Some(id), Some(pos)) = (&r.id, r.pos) else {
            continue;
        };
        match w.alerts.get(id) {
            Some((_, old)) if same_state(old, &r.fingerprint) => continue,
            Some(_) => changed.push(i),
            None => match unknown(id, pos) {
                Some(true) => new.push(i),
                Some(false) => {}
                None => continue,
            },
        }
        w.alerts.insert(id.clone(), (pos, r.fingerprint.clone()));
    }
    (new, changed)
}

/// Alerts between two dates, ascending, 100 a page. CAS refuses `skip` past 5,000, so
/// the lower bound moves up to the newest date listed instead; the records at that date
/// are listed again, and callers skip the ones they already have.
struct AlertPages {
    lower: i64,
    upper: i64,
    /// Only the alerts resolved in this window of `resolutionDate`, when set.
    resolved: Option<(i64, i64)>,
    skip: usize,
    newest: i64,
    done: bool,
}

impl AlertPages {
    fn new(lower: i64, upper: i64) -> Self {
        AlertPages {
            lower,
            upper,
            resolved: None,
            skip: 0,
            newest: lower,
            done: lower > upper,
        }
    }

    fn from_resume(r: PageResume) -> Self {
        AlertPages {
            lower: r.lower,
            upper: r.upper,
            resolved: None,
            skip: r.skip,
            newest: r.newest,
            done: false,
        }
    }

    /// Where the listing stands, to resume from.
    fn resume(&self) -> PageResume {
        PageResume {
            lower: self.lower,
            upper: self.upper,
            skip: self.skip,
            newest: self.newest,
        }
    }

    /// The next page; `done` is set after the last one.
    async fn next(
        &mut self,
        client: &CasClient,
        cas: &CasSettings,
        deadline: Deadline,
    ) -> Result<Page, CasError> {
        let mut filters = with_extra(Map::new(), &cas.alerts_filter);
        filters.insert("date".into(), json!({"gte": self.lower, "lte": self.upper}));
        if let Some((from, to)) = self.resolved {
            filters.insert("resolutionDate".into(), json!({"gte": from, "lte": to}));
        }
        let body = json!({"filters": filters, "skip": self.skip, "limit": PAGE, "sortField": "date", "sortDirection": "asc"});
        let page = client
            .list(ALERTS_PATH, &body, ALERT_KEYS, deadline)
            .await?;
        let n = page.records.len();
        for r in &page.records {
            if let Some(ts) = r.pos {
                self.newest = self.newest.max(ts);
            }
        }
        if !page.has_next || n == 0 {
            self.done = true;
        } else {
            self.skip += n;
            if self.skip + PAGE > MAX_SKIP && self.newest > self.lower {
                self.lower = self.newest;
                self.skip = 0;
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_alerts_are_known_by_their_active_directory_service() {
        let mdi = json!({"_id": "a", "entities": [{"type": "service", "id": 20940, "label": "Active Directory"}]});
        let text_id = json!({"_id": "a", "entities": [{"type": "service", "id": "20940"}]});
        let other = json!({"_id": "b", "entities": [{"type": "service", "id": 15600}], "title": "20940 files"});
        assert!(from_defender_for_identity(&mdi.to_string()));
        assert!(from_defender_for_identity(&text_id.to_string()));
        assert!(!from_defender_for_identity(&other.to_string()));
        assert!(!from_defender_for_identity("{not json 20940"));
    }

    #[test]
    fn seen_skips_what_the_overlap_already_sent_and_prunes_to_the_rescan_start() {
        let mut s = Seen::new(BTreeMap::from([
            ("a".to_string(), 100),
            ("b".to_string(), 100),
        ]));
        assert!(!s.admit(Some("a"), Some(100)), "sent in an earlier run");
        assert!(
            s.admit(Some("c"), Some(100)),
            "same millisecond, new record"
        );
        assert!(!s.admit(Some("c"), Some(100)), "listed twice in one run");
        assert!(
            s.admit(None, Some(5)) && s.admit(None, Some(5)),
            "no id: always forwarded"
        );
        assert!(s.admit(Some("d"), Some(150)));
        let c = s.cursor(150, 120);
        assert_eq!(c.query_from(), 120);
        assert_eq!(c.recent.keys().collect::<Vec<_>>(), vec!["d"]);
    }

    #[test]
    fn every_overlap_id_is_kept_however_many() {
        let recent: BTreeMap<String, i64> = (0..120_000i64)
            .map(|i| (format!("{i:08}"), 1_000 + i / 3))
            .collect();
        let c = Seen::new(recent).cursor(1_000_000, 0);
        assert_eq!(
            c.recent.len(),
            120_000,
            "none dropped: each would come back as a duplicate"
        );
    }

    #[test]
    fn a_read_is_not_a_change_and_old_fingerprints_still_compare() {
        assert!(same_state("0/1", "0/1"));
        assert!(!same_state("0/1", "2/1"), "resolved");
        assert!(!same_state("0/1", "0/3"), "severity raised");
        assert!(
            same_state("1/0/1", "0/1"),
            "an earlier release's fingerprint held statusValue first"
        );
        assert!(!same_state("1/0/1", "2/1"));
    }
}
