//! Discovery snapshots: once per `CAS_DISCOVERY_INTERVAL`, every chosen continuous report's
//! discovered apps over the rolling `CAS_DISCOVERY_PERIOD`, with each app's users and IP
//! addresses, read a few apps at a time.
//!
//! Graph gives only rolling aggregates, not per-day or per-session data, so each row says
//! which snapshot it belongs to (`TimeGenerated` is when the snapshot was started) and which
//! period it covers. A snapshot is written once however often the timer fires: the cursor
//! records it as started before its first row is enqueued, then which reports, which page
//! of apps and which apps of that page are enqueued, so a run that stops anywhere is
//! finished by the next one with the same `TimeGenerated`, and no app is written twice
//! (the one app in flight at a crash packs into the same batches when read again).

use super::{segment, GraphClient, GraphError, STREAMS_PATH};
use crate::config::DiscoverySettings;
use crate::model::Window;
use crate::retry::Deadline;
use crate::source::{Page, ReadError, Source, Step};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use url::Url;

const DAY_MS: i64 = 86_400_000;

/// The snapshot reader's cursor, stored in its checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCursor {
    /// When the next snapshot is due (Unix ms).
    pub position_ms: i64,
    /// The snapshot being taken, when one was interrupted part-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotResume>,
}

/// How far a discovery snapshot has got. Every row of a snapshot carries its `taken_ms`,
/// so the rows written before an interruption and after it belong to the same snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotResume {
    /// When the snapshot was started (Unix ms): its rows' `TimeGenerated`.
    pub taken_ms: i64,
    /// Ids of the continuous reports whose apps are all enqueued.
    #[serde(default)]
    pub streams_done: Vec<String>,
    /// The page of apps being read (its URL; `None`: the report's first page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Ids of that page's apps whose rows are enqueued (at most one page's worth).
    #[serde(default)]
    pub apps_done: Vec<String>,
}

/// Apps read per step (one enqueue and one cursor write), within one page of apps. A fixed
/// count, not "until the time runs out", so a step read again after a crash holds the
/// same apps and packs into the same batches; a step cut short by the deadline enqueues
/// nothing and is read again whole by the next run.
pub const APPS_PER_STEP: usize = 10;

/// A continuous report chosen for the snapshot.
#[derive(Clone, Debug)]
struct Report {
    id: String,
    name: String,
}

/// The page of apps being read, as Graph listed it.
struct AppsPage {
    apps: Vec<Value>,
    next: Option<Url>,
}

/// Reads one snapshot from a cursor, a few apps at a time.
pub struct Snapshot {
    settings: DiscoverySettings,
    start: SnapshotCursor,
    cursor: SnapshotCursor,
    /// When the snapshot being read was started; `None` when none is due.
    taken_ms: Option<i64>,
    /// The chosen reports, listed on the first step of a run.
    reports: Option<Vec<Report>>,
    page: Option<AppsPage>,
    finished: bool,
    /// What was repaired in Graph's answers since the last step (it goes with the step).
    repairs: crate::json::lenient::Repairs,
}

impl Snapshot {
    /// The snapshot due at `now_ms` given `cursor` (`None` on a first run, which takes one
    /// at once, as Microsoft's own integration starts forwarding within minutes).
    pub fn new(
        settings: &DiscoverySettings,
        cursor: Option<&SnapshotCursor>,
        now_ms: i64,
    ) -> Snapshot {
        let start = cursor.cloned().unwrap_or(SnapshotCursor {
            position_ms: now_ms,
            ..Default::default()
        });
        let taken_ms = match &start.snapshot {
            Some(r) => Some(r.taken_ms),
            None => (now_ms >= start.position_ms).then_some(now_ms),
        };
        let mut cursor = start.clone();
        if let Some(t) = taken_ms {
            cursor.snapshot.get_or_insert(SnapshotResume {
                taken_ms: t,
                ..Default::default()
            });
        }
        Snapshot {
            settings: settings.clone(),
            start,
            cursor,
            taken_ms,
            reports: None,
            page: None,
            finished: false,
            repairs: Default::default(),
        }
    }

    /// The rows of the next apps (up to [`APPS_PER_STEP`]; at the end, an empty step that
    /// stores the finished snapshot); `None` when nothing is due, the snapshot is done, or
    /// time is up.
    pub async fn next(
        &mut self,
        graph: &GraphClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, GraphError> {
        let Some(taken) = self.taken_ms else {
            return Ok(None);
        };
        if self.finished || deadline.passed() {
            return Ok(None);
        }
        if self.reports.is_none() {
            self.reports = Some(self.list_reports(graph, deadline).await?);
        }
        loop {
            let progress = self.progress().clone();
            let report = self
                .reports
                .iter()
                .flatten()
                .find(|r| !progress.streams_done.contains(&r.id))
                .cloned();
            let Some(report) = report else {
                self.finished = true;
                self.cursor = SnapshotCursor {
                    position_ms: next_due(taken, self.settings.interval.as_millis() as i64),
                    ..Default::default()
                };
                return Ok(Some(self.step_of(Vec::new())));
            };
            if self.page.is_none() {
                self.page = Some(self.load_page(graph, &report, deadline).await?);
            }
            let page = self.page.as_ref().expect("loaded above");
            let pending: Vec<Value> = page
                .apps
                .iter()
                .filter(|a| !progress.apps_done.contains(&app_key(a)))
                .take(APPS_PER_STEP)
                .cloned()
                .collect();
            let next = page.next.clone();
            if !pending.is_empty() {
                let mut records = Vec::new();
                for app in &pending {
                    records.extend(
                        self.app_records(graph, &report, app, taken, deadline)
                            .await?,
                    );
                }
                let done = &mut self.progress().apps_done;
                done.extend(pending.iter().map(app_key));
                return Ok(Some(self.step_of(records)));
            }
            // The page is done: on to the next page, or the next report.
            let p = self.progress();
            match next {
                Some(url) => p.page = Some(url.to_string()),
                None => {
                    p.streams_done.push(report.id.clone());
                    p.page = None;
                }
            }
            p.apps_done.clear();
            self.page = None;
        }
    }

    fn progress(&mut self) -> &mut SnapshotResume {
        self.cursor
            .snapshot
            .get_or_insert_with(SnapshotResume::default)
    }

    fn step_of(&mut self, records: Vec<Value>) -> Step {
        let mut page = Page::from_values(&records);
        page.repairs = std::mem::take(&mut self.repairs);
        Step {
            new: (0..page.records.len()).collect(),
            page,
            window: self.window(),
            changed: Vec::new(),
            observed: None,
            commit: true,
        }
    }

    /// The continuous reports, narrowed to `CAS_DISCOVERY_STREAMS` (a name the tenant
    /// does not have is logged, not fatal: the other reports are still read).
    async fn list_reports(
        &mut self,
        graph: &GraphClient,
        deadline: Deadline,
    ) -> Result<Vec<Report>, GraphError> {
        let listed = graph.all(graph.url(STREAMS_PATH)?, deadline).await?;
        let mut reports = Vec::new();
        for s in &listed {
            let (Some(id), Some(name)) = (
                s.get("id").and_then(Value::as_str),
                s.get("displayName").and_then(Value::as_str),
            ) else {
                return Err(GraphError::Shape {
                    what: "uploadedStreams".into(),
                    detail: format!("a report without id or displayName: {s}"),
                });
            };
            reports.push(Report {
                id: id.to_string(),
                name: name.to_string(),
            });
        }
        if let Some(wanted) = &self.settings.streams {
            for n in wanted {
                if !reports.iter().any(|r| &r.name == n) {
                    tracing::warn!(stream = %n, "CAS_DISCOVERY_STREAMS names a continuous report the tenant does not have");
                }
            }
            reports.retain(|r| wanted.contains(&r.name));
        }
        Ok(reports)
    }

    /// The report's apps URL: `…/uploadedStreams/{id}/microsoft.graph.security.aggregatedAppsDetails(period=duration'P7D')`.
    fn apps_path(&self, report: &Report) -> String {
        format!(
            "{STREAMS_PATH}/{}/microsoft.graph.security.aggregatedAppsDetails(period=duration'{}')",
            segment(&report.id),
            self.settings.period.as_str()
        )
    }

    /// The page of apps to read: the one a stored cursor names, else the report's first.
    /// A stored page Graph no longer serves (its skip token expired) restarts the report:
    /// the apps read again pack into the batches already sent, unless Graph's numbers
    /// changed in between.
    async fn load_page(
        &mut self,
        graph: &GraphClient,
        report: &Report,
        deadline: Deadline,
    ) -> Result<AppsPage, GraphError> {
        let first = graph.url(&self.apps_path(report))?;
        let stored = self.progress().page.clone();
        let url = match stored.as_deref().map(Url::parse) {
            Some(Ok(u)) => u,
            _ => first.clone(),
        };
        let read = match graph.page(&url, deadline).await {
            Err(GraphError::Status { status, .. })
                if stored.is_some() && (400..500).contains(&status) =>
            {
                tracing::warn!(stream = %report.name, status, "Graph no longer serves the stored page of apps; reading the report again from its first page");
                let p = self.progress();
                p.page = None;
                p.apps_done.clear();
                graph.page(&first, deadline).await?
            }
            other => other?,
        };
        self.repairs += read.repairs;
        Ok(AppsPage {
            apps: read.items,
            next: read.next,
        })
    }

    /// The app's row, then a row per user and per IP address (each list capped).
    async fn app_records(
        &mut self,
        graph: &GraphClient,
        report: &Report,
        app: &Value,
        taken: i64,
        deadline: Deadline,
    ) -> Result<Vec<Value>, GraphError> {
        let period = self.settings.period.as_str();
        let envelope = |kind: &str| {
            let mut m = Map::new();
            m.insert("kind".into(), json!(kind));
            m.insert("snapshotMs".into(), json!(taken));
            m.insert("period".into(), json!(period));
            m.insert("streamId".into(), json!(report.id));
            m.insert("streamName".into(), json!(report.name));
            m
        };
        let mut head = envelope("app");
        head.insert("app".into(), app.clone());
        let mut records = vec![Value::Object(head)];
        let Some(id) = app.get("id").and_then(Value::as_str) else {
            // Without an id its users and IPs cannot be asked for; the row says so.
            return Ok(records);
        };
        let brief = json!({"id": id, "displayName": app.get("displayName"), "category": app.get("category")});
        let lists = [
            (self.settings.users, "users", "user"),
            (self.settings.ip_addresses, "ipAddresses", "ipAddress"),
        ];
        for (on, path, kind) in lists {
            if !on {
                continue;
            }
            let url = graph.url(&format!(
                "{}/{}/{path}",
                self.apps_path(report),
                segment(id)
            ))?;
            let items = self.capped(graph, url, deadline).await?;
            let listed = items.len();
            for item in items {
                let mut m = envelope(kind);
                m.insert("app".into(), brief.clone());
                m.insert(kind.into(), item);
                records.push(Value::Object(m));
            }
            records[0][format!("{path}Listed")] = json!(listed);
        }
        Ok(records)
    }

    /// Every item of a collection, up to `CAS_DISCOVERY_MAX_PER_APP`.
    async fn capped(
        &mut self,
        graph: &GraphClient,
        url: Url,
        deadline: Deadline,
    ) -> Result<Vec<Value>, GraphError> {
        let max = self.settings.max_per_app;
        let mut items = Vec::new();
        let mut next = Some(url);
        while let Some(u) = next.take() {
            let page = graph.page(&u, deadline).await?;
            self.repairs += page.repairs;
            items.extend(page.items);
            if items.len() >= max {
                items.truncate(max);
                break;
            }
            next = page.next;
        }
        Ok(items)
    }
}

impl Source for Snapshot {
    type Client = GraphClient;
    type Cursor = SnapshotCursor;

    /// The period the snapshot covers (a point at the next due time when none is due).
    fn window(&self) -> Window {
        let at = self.taken_ms.unwrap_or(self.start.position_ms);
        let from = match self.taken_ms {
            Some(t) => t - self.settings.period.days() * DAY_MS,
            None => at,
        };
        Window::new(from, at).expect("a period ends after it starts")
    }

    /// The cursor to store before the first row is enqueued: the snapshot as started, so
    /// a run that dies part-way is finished with the same `TimeGenerated`.
    fn intent(&self) -> Option<SnapshotCursor> {
        (self.start.snapshot.is_none() && self.taken_ms.is_some()).then(|| self.cursor.clone())
    }

    /// The cursor after the last step.
    fn cursor(&self) -> &SnapshotCursor {
        &self.cursor
    }

    /// Whether no snapshot is due, or the due one is fully enqueued.
    fn complete(&self) -> bool {
        self.taken_ms.is_none() || self.finished
    }

    fn lag_seconds(&self, _now_ms: i64) -> Option<i64> {
        None
    }

    async fn read(
        &mut self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, ReadError> {
        Ok(self.next(client, deadline).await?)
    }
}

/// The key an app is remembered by within its page: its id, else its whole text.
fn app_key(app: &Value) -> String {
    match app.get("id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => app.to_string(),
    }
}

/// The start of the interval after the one `taken` fell in: snapshots keep to a fixed
/// grid (a daily one at 00:00 UTC), whenever the timer happens to fire.
fn next_due(taken: i64, interval_ms: i64) -> i64 {
    let interval = interval_ms.max(1);
    (taken.div_euclid(interval) + 1) * interval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_keep_to_the_interval_grid() {
        let day = DAY_MS;
        assert_eq!(next_due(10 * day + 5, day), 11 * day);
        assert_eq!(next_due(10 * day, day), 11 * day);
        assert_eq!(next_due(10 * day - 1, day), 10 * day);
    }

    fn settings() -> DiscoverySettings {
        DiscoverySettings::from_lookup(&|_| None).unwrap()
    }

    #[test]
    fn a_snapshot_is_due_on_the_first_run_and_then_once_per_interval() {
        let now = 100 * DAY_MS + 3_600_000;
        let first = Snapshot::new(&settings(), None, now);
        assert!(!first.complete());
        let intent = first
            .intent()
            .expect("the started snapshot is stored first");
        assert_eq!(intent.snapshot.as_ref().map(|s| s.taken_ms), Some(now));
        assert_eq!(first.window().start_ms(), now - 7 * DAY_MS);

        // A later run resumes the started snapshot with its own TimeGenerated.
        let resumed = Snapshot::new(&settings(), Some(&intent), now + 600_000);
        assert_eq!(resumed.taken_ms, Some(now));
        assert!(resumed.intent().is_none(), "already stored");

        // Done: nothing until the next day, however often the timer fires.
        let done = SnapshotCursor {
            position_ms: next_due(now, DAY_MS),
            ..Default::default()
        };
        for later in [now + 60_000, 101 * DAY_MS - 1] {
            let s = Snapshot::new(&settings(), Some(&done), later);
            assert!(s.complete() && s.intent().is_none(), "{later}");
        }
        assert!(!Snapshot::new(&settings(), Some(&done), 101 * DAY_MS).complete());
    }
}
