//! What to ask CAS for, given a checkpoint: one function per data type, each returning
//! the new records, the window they cover, and the cursor that follows them.
//!
//! Windows end `CAS_SETTLE_DELAY` before now and start `CAS_OVERLAP` before the last
//! position; the ids already sent from the overlap are kept in the cursor and skipped.
//! A pull that runs out of time or meets an error part-way still returns what it has,
//! with a cursor that points exactly after it, so a slow or failing run makes progress
//! instead of starting over.

use super::{CasClient, CasError};
use crate::checkpoint::{AlertWatch, Cursor, ScanResume};
use crate::config::CasSettings;
use crate::model::{DataType, Window};
use crate::retry::Deadline;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

/// CAS list pages hold at most 100 records (scan pages excepted).
pub const PAGE: usize = 100;
/// CAS refuses `skip` beyond this; the alerts pull moves its lower bound instead.
pub const MAX_SKIP: usize = 5000;
/// Soft cap on the ids a cursor keeps for the overlap, so a checkpoint stays small.
pub const MAX_RECENT: usize = 50_000;
const DAY_MS: i64 = 86_400_000;

/// The outcome of one pull.
#[derive(Debug)]
pub struct Pull {
    /// The window the records belong to.
    pub window: Window,
    /// New records, in the order CAS listed them.
    pub records: Vec<Value>,
    /// Alerts forwarded before whose status, resolution or severity has since changed.
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

/// Pulls one data type's new records.
pub async fn pull(
    client: &CasClient,
    cas: &CasSettings,
    data_type: DataType,
    cursor: Option<&Cursor>,
    now_ms: i64,
    deadline: Deadline,
) -> Result<Pull, CasError> {
    let start = cursor.cloned().unwrap_or_else(|| Cursor {
        position_ms: match data_type {
            DataType::Discovery => day_start(upper_bound(cas, now_ms)) - DAY_MS,
            _ => now_ms - ms(cas.lookback),
        },
        ..Default::default()
    });
    match data_type {
        DataType::Alerts => {
            let mut p = alerts(client, cas, start, now_ms, deadline).await;
            if let (Some(updates), None) = (cas.alert_updates, &p.error) {
                let (found, error) =
                    watch_alerts(client, cas, &mut p, updates, now_ms, deadline).await;
                p.updates = found;
                p.error = error;
            }
            Ok(p)
        }
        DataType::Activities => Ok(activities(client, cas, start, now_ms, deadline).await),
        DataType::Discovery => discovery(client, cas, start, now_ms, deadline).await,
    }
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

fn day_start(t: i64) -> i64 {
    t.div_euclid(DAY_MS) * DAY_MS
}

/// Nothing new: an empty pull that keeps the cursor.
fn nothing(cursor: Cursor) -> Pull {
    let at = cursor.position_ms;
    Pull {
        window: Window::new(at, at).expect("a point is a window"),
        records: Vec::new(),
        updates: Vec::new(),
        start: cursor.clone(),
        cursor,
        complete: true,
        error: None,
    }
}

fn record_key<'a>(rec: &'a Value, field: &str) -> (Option<&'a str>, Option<i64>) {
    (
        rec.get("_id").and_then(Value::as_str),
        rec.get(field).and_then(Value::as_i64),
    )
}

fn with_extra(mut filters: Map<String, Value>, extra: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in extra {
        filters.entry(k.clone()).or_insert_with(|| v.clone());
    }
    filters
}

/// The ids already enqueued, with their positions: the cursor's overlap ids plus
/// everything admitted in this run.
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
    fn cursor(mut self, position: i64, rescan_from: i64) -> Cursor {
        let mut from = rescan_from.min(position);
        self.recent.retain(|_, p| *p >= from);
        if self.recent.len() > MAX_RECENT {
            // Keep the newest ids (all of them at the cut-off millisecond) and re-read only that far.
            let mut positions: Vec<i64> = self.recent.values().copied().collect();
            positions.sort_unstable_by(|a, b| b.cmp(a));
            from = positions[MAX_RECENT - 1];
            self.recent.retain(|_, p| *p >= from);
        }
        Cursor {
            position_ms: position,
            rescan_from_ms: Some(from),
            recent: self.recent,
            scan: None,
            pending_upper_ms: None,
            watch: None,
        }
    }
}

/// Alerts, ascending by `date`, 100 a page. Past 5,000 skipped records the lower bound
/// moves up to the newest `date` seen; the ids already taken there are skipped.
async fn alerts(
    client: &CasClient,
    cas: &CasSettings,
    start: Cursor,
    now_ms: i64,
    deadline: Deadline,
) -> Pull {
    let upper = window_end(&start, cas, now_ms);
    let from = start.query_from();
    let Ok(window) = Window::new(from, upper) else {
        return nothing(start);
    };
    let mut seen = Seen::new(start.recent.clone());
    let mut records = Vec::new();
    let mut max_ts = start.position_ms;
    let mut pages = AlertPages::new(from, upper);
    let (complete, error) = loop {
        if pages.done {
            break (true, None);
        }
        if deadline.passed() {
            break (false, None);
        }
        match pages.next(client, cas, deadline).await {
            Ok(data) => {
                for rec in data {
                    let (id, ts) = record_key(&rec, "timestamp");
                    if seen.admit(id, ts) {
                        max_ts = max_ts.max(ts.unwrap_or(max_ts));
                        records.push(rec);
                    }
                }
            }
            Err(e) => break (false, Some(e)),
        }
    };
    // Complete: everything up to `upper` is read. Cut short: everything before the newest
    // date read is (the records at that date already read are in `recent`).
    let position = if complete { upper } else { max_ts };
    let mut cursor = seen.cursor(position, position - ms(cas.overlap));
    cursor.watch = start.watch.clone();
    Pull {
        window,
        records,
        updates: Vec::new(),
        start,
        cursor,
        complete,
        error,
    }
}

/// Alerts between two dates, ascending, 100 a page. CAS refuses `skip` past 5,000, so
/// the lower bound moves up to the newest date listed instead; the records at that date
/// are listed again, and callers skip the ones they already have.
struct AlertPages {
    lower: i64,
    upper: i64,
    skip: usize,
    newest: i64,
    done: bool,
}

impl AlertPages {
    fn new(lower: i64, upper: i64) -> Self {
        AlertPages {
            lower,
            upper,
            skip: 0,
            newest: lower,
            done: false,
        }
    }

    /// The next page; `done` is set after the last one.
    async fn next(
        &mut self,
        client: &CasClient,
        cas: &CasSettings,
        deadline: Deadline,
    ) -> Result<Vec<Value>, CasError> {
        let mut filters = with_extra(Map::new(), &cas.alerts_filter);
        filters.insert("date".into(), json!({"gte": self.lower, "lte": self.upper}));
        let body = json!({"filters": filters, "skip": self.skip, "limit": PAGE, "sortField": "date", "sortDirection": "asc"});
        let page = client.list("api/v1/alerts/", &body, deadline).await?;
        let n = page.data.len();
        for rec in &page.data {
            if let Some(ts) = rec.get("timestamp").and_then(Value::as_i64) {
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
        Ok(page.data)
    }
}

/// The mutable part of an alert: a change here is forwarded as a new row.
fn fingerprint(alert: &Value) -> String {
    let f = |k: &str| alert.get(k).map(Value::to_string).unwrap_or_default();
    format!(
        "{}/{}/{}",
        f("statusValue"),
        f("resolutionStatusValue"),
        f("severityValue")
    )
}

/// Records what the new alerts looked like when forwarded and, every
/// `updates.interval`, re-lists the alerts of the last `updates.window` to find the ones
/// that changed since.
async fn watch_alerts(
    client: &CasClient,
    cas: &CasSettings,
    pull: &mut Pull,
    updates: crate::config::AlertUpdates,
    now_ms: i64,
    deadline: Deadline,
) -> (Vec<Value>, Option<CasError>) {
    let watch = pull.cursor.watch.get_or_insert_with(|| AlertWatch {
        last_check_ms: now_ms,
        ..Default::default()
    });
    for rec in &pull.records {
        if let (Some(id), Some(ts)) = record_key(rec, "timestamp") {
            watch.alerts.insert(id.to_string(), (ts, fingerprint(rec)));
        }
    }
    let oldest = now_ms - ms(updates.window);
    watch.alerts.retain(|_, (ts, _)| *ts >= oldest);
    if now_ms - watch.last_check_ms < ms(updates.interval) || deadline.passed() {
        return (Vec::new(), None);
    }
    let upper = pull.cursor.position_ms;
    let mut changed = Vec::new();
    let mut listed = HashSet::new();
    let mut pages = AlertPages::new(oldest, upper);
    while !pages.done {
        let data = match pages.next(client, cas, deadline).await {
            Ok(d) => d,
            // Changes found so far are forwarded; the re-check runs again next time.
            Err(e) => return (changed, Some(e)),
        };
        for rec in data {
            let (Some(id), Some(ts)) = record_key(&rec, "timestamp") else {
                continue;
            };
            if !listed.insert(id.to_string()) {
                continue;
            }
            let fp = fingerprint(&rec);
            match watch.alerts.get(id) {
                Some((_, old)) if *old != fp => {
                    watch.alerts.insert(id.to_string(), (ts, fp));
                    changed.push(rec);
                }
                Some(_) => {}
                // Not forwarded by us yet (or before the watch began): a baseline, not a change.
                None => {
                    watch.alerts.insert(id.to_string(), (ts, fp));
                }
            }
        }
    }
    watch.last_check_ms = now_ms;
    (changed, None)
}

/// Activities in scan mode on `created`, following `nextQueryFilters` to the end of the
/// window; an interrupted scan is resumed from its next filters by the next run.
async fn activities(
    client: &CasClient,
    cas: &CasSettings,
    start: Cursor,
    now_ms: i64,
    deadline: Deadline,
) -> Pull {
    let from = start.query_from();
    let (window_to, mut filters) = match &start.scan {
        Some(r) => (r.window_to, r.next_filters.clone()),
        None => {
            let upper = window_end(&start, cas, now_ms);
            if upper < start.position_ms {
                return nothing(start);
            }
            let mut f = with_extra(Map::new(), &cas.activities_filter);
            f.insert("created".into(), json!({"gte": from, "lte": upper}));
            (upper, f)
        }
    };
    let Ok(window) = Window::new(from, window_to) else {
        return nothing(start);
    };
    let mut seen = Seen::new(start.recent.clone());
    let mut records = Vec::new();
    let (complete, error) = loop {
        if deadline.passed() {
            break (false, None);
        }
        let body = json!({"filters": filters, "isScan": true, "limit": cas.scan_limit});
        let page = match client.list("api/v1/activities/", &body, deadline).await {
            Ok(p) => p,
            Err(e) => break (false, Some(e)),
        };
        for rec in page.data {
            let (id, created) = record_key(&rec, "created");
            if seen.admit(id, created) {
                records.push(rec);
            }
        }
        if !page.has_next {
            break (true, None);
        }
        match page.next_query_filters {
            Some(next) => filters = with_extra(next, &cas.activities_filter),
            None => {
                let e = CasError::Shape {
                    path: "api/v1/activities/".into(),
                    detail: "hasNext is true but nextQueryFilters is missing".into(),
                };
                break (false, Some(e));
            }
        }
    };
    let cursor = if complete {
        seen.cursor(window_to, window_to - ms(cas.overlap))
    } else {
        // Same start; the ids read so far are kept, and the scan resumes where CAS said.
        let mut c = seen.cursor(start.position_ms, from);
        c.scan = Some(ScanResume {
            window_to,
            next_filters: filters,
        });
        c
    };
    Pull {
        window,
        records,
        updates: Vec::new(),
        start,
        cursor,
        complete,
        error,
    }
}

/// Discovery: once a UTC day is over, one record per continuous report and discovered app.
async fn discovery(
    client: &CasClient,
    cas: &CasSettings,
    start: Cursor,
    now_ms: i64,
    deadline: Deadline,
) -> Result<Pull, CasError> {
    let today = day_start(upper_bound(cas, now_ms));
    let day = today - DAY_MS;
    if start.position_ms > day {
        return Ok(nothing(start));
    }
    let streams_path = "api/discovery/streams/";
    let listed = client
        .call(reqwest::Method::GET, streams_path, None, deadline)
        .await?;
    let streams = listed
        .get("streams")
        .and_then(Value::as_array)
        .ok_or_else(|| CasError::Shape {
            path: streams_path.into(),
            detail: "no \"streams\" array".into(),
        })?;
    let wanted = cas.discovery_streams.as_ref();
    if let Some(names) = wanted {
        for n in names {
            if !streams
                .iter()
                .any(|s| s.get("displayName").and_then(Value::as_str) == Some(n))
            {
                tracing::warn!(stream = %n, "CAS_DISCOVERY_STREAMS names a continuous report the tenant does not have");
            }
        }
    }
    let mut records = Vec::new();
    for s in streams {
        let (Some(id), Some(name)) = (
            s.get("_id").and_then(Value::as_str),
            s.get("displayName").and_then(Value::as_str),
        ) else {
            return Err(CasError::Shape {
                path: streams_path.into(),
                detail: format!("a stream without _id or displayName: {s}"),
            });
        };
        if wanted.is_some_and(|w| !w.iter().any(|n| n == name)) {
            continue;
        }
        let mut apps_seen = HashSet::new();
        let mut skip = 0;
        loop {
            let body = json!({"streamId": id, "timeframe": 1, "skip": skip, "limit": PAGE});
            let page = client
                .list("api/v1/discovery/discovered_apps/", &body, deadline)
                .await?;
            let n = page.data.len();
            let mut new = 0;
            for app in page.data {
                // Dedupe by app id: a server that ignores paging repeats the same apps.
                let key = app
                    .get("appId")
                    .map(Value::to_string)
                    .unwrap_or_else(|| app.to_string());
                if apps_seen.insert(key) {
                    new += 1;
                    records
                        .push(json!({"streamId": id, "streamName": name, "day": day, "app": app}));
                }
            }
            if !page.has_next || n == 0 || new == 0 {
                break;
            }
            skip += n;
        }
    }
    Ok(Pull {
        window: Window::new(day, today - 1).expect("a day is a window"),
        records,
        updates: Vec::new(),
        start,
        cursor: Cursor {
            position_ms: today,
            ..Default::default()
        },
        complete: true,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_overlap_ids_are_capped_at_a_whole_millisecond() {
        let recent: BTreeMap<String, i64> = (0..MAX_RECENT as i64 + 10)
            .map(|i| (format!("{i:08}"), i / 3))
            .collect();
        let c = Seen::new(recent).cursor(1_000_000, 0);
        assert!(
            c.recent.len() <= MAX_RECENT + 2 && c.recent.len() >= MAX_RECENT - 2,
            "{}",
            c.recent.len()
        );
        let from = c.query_from();
        assert!(c.recent.values().all(|p| *p >= from));
        assert_eq!(
            c.recent.values().filter(|p| **p == from).count(),
            3,
            "all ids at the cut-off millisecond kept"
        );
    }

    #[test]
    fn fingerprints_change_with_status_resolution_or_severity_only() {
        let a =
            json!({"statusValue": 0, "resolutionStatusValue": 0, "severityValue": 1, "title": "x"});
        let mut b = a.clone();
        b["title"] = json!("y");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b["resolutionStatusValue"] = json!(2);
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
