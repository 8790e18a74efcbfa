//! What to ask CAS for, given a checkpoint: one function per data type, each returning
//! the new records, the window they cover, and the cursor that follows them.
//!
//! A pull that runs out of time or meets an error part-way still returns what it has,
//! with a cursor that points exactly after it, so a slow or failing run makes progress
//! instead of starting over.

use super::{CasClient, CasError};
use crate::checkpoint::{Cursor, ScanResume};
use crate::config::CasSettings;
use crate::model::{DataType, Window};
use crate::retry::Deadline;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};

/// CAS list pages hold at most 100 records (scan pages excepted).
pub const PAGE: usize = 100;
/// CAS refuses `skip` beyond this; the alerts pull moves its lower bound instead.
pub const MAX_SKIP: usize = 5000;
const DAY_MS: i64 = 86_400_000;

/// The outcome of one pull.
#[derive(Debug)]
pub struct Pull {
    /// The window the records belong to.
    pub window: Window,
    /// New records, in the order CAS listed them.
    pub records: Vec<Value>,
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
    match data_type {
        DataType::Alerts => Ok(alerts(client, cas, cursor, now_ms, deadline).await),
        DataType::Activities => Ok(activities(client, cas, cursor, now_ms, deadline).await),
        DataType::Discovery => discovery(client, cas, cursor, now_ms, deadline).await,
    }
}

fn first_position(cas: &CasSettings, now_ms: i64) -> i64 {
    now_ms - cas.lookback.as_millis() as i64
}

fn upper_bound(cas: &CasSettings, now_ms: i64) -> i64 {
    now_ms - cas.settle.as_millis() as i64
}

/// Nothing new: an empty pull that keeps the cursor.
fn nothing(cursor: Cursor) -> Pull {
    let at = cursor.position_ms;
    Pull {
        window: Window::new(at, at).expect("a point is a window"),
        records: Vec::new(),
        cursor,
        complete: true,
        error: None,
    }
}

fn record_key(rec: &Value, field: &str) -> (String, Option<i64>) {
    let id = rec
        .get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (id, rec.get(field).and_then(Value::as_i64))
}

fn with_extra(mut filters: Map<String, Value>, extra: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in extra {
        filters.entry(k.clone()).or_insert_with(|| v.clone());
    }
    filters
}

/// Alerts, ascending by `date`, 100 a page. Past 5,000 skipped records the lower bound
/// moves up to the newest `date` seen, and the ids at that millisecond are skipped.
async fn alerts(
    client: &CasClient,
    cas: &CasSettings,
    cursor: Option<&Cursor>,
    now_ms: i64,
    deadline: Deadline,
) -> Pull {
    let start = cursor.cloned().unwrap_or_else(|| Cursor {
        position_ms: first_position(cas, now_ms),
        ..Default::default()
    });
    let upper = upper_bound(cas, now_ms);
    let Ok(window) = Window::new(start.position_ms, upper) else {
        return nothing(start);
    };
    let mut lower = start.position_ms;
    let mut seen: HashSet<String> = HashSet::new();
    let mut records = Vec::new();
    let (mut max_ts, mut ids_at_max) = (start.position_ms, start.boundary_ids.clone());
    let mut skip = 0;
    let (complete, error) = loop {
        if deadline.passed() {
            break (false, None);
        }
        let mut filters = with_extra(Map::new(), &cas.alerts_filter);
        filters.insert("date".into(), json!({"gte": lower, "lte": upper}));
        let body = json!({"filters": filters, "skip": skip, "limit": PAGE, "sortField": "date", "sortDirection": "asc"});
        let page = match client.list("api/v1/alerts/", &body, deadline).await {
            Ok(p) => p,
            Err(e) => break (false, Some(e)),
        };
        let n = page.data.len();
        for rec in page.data {
            let (id, ts) = record_key(&rec, "timestamp");
            let already = ts == Some(start.position_ms) && start.boundary_ids.contains(&id);
            if already || !seen.insert(id.clone()) {
                continue;
            }
            if let Some(ts) = ts {
                if ts > max_ts {
                    max_ts = ts;
                    ids_at_max.clear();
                }
                if ts == max_ts {
                    ids_at_max.insert(id);
                }
            }
            records.push(rec);
        }
        if !page.has_next || n == 0 {
            break (true, None);
        }
        skip += n;
        if skip + PAGE > MAX_SKIP && max_ts > lower {
            lower = max_ts;
            skip = 0;
        }
    };
    let cursor = if complete {
        let at_upper = if max_ts == upper {
            ids_at_max
        } else {
            BTreeSet::new()
        };
        Cursor {
            position_ms: upper,
            boundary_ids: at_upper,
            scan: None,
        }
    } else {
        Cursor {
            position_ms: max_ts,
            boundary_ids: ids_at_max,
            scan: None,
        }
    };
    Pull {
        window,
        records,
        cursor,
        complete,
        error,
    }
}

/// Activities in scan mode on `created`, following `nextQueryFilters` to the end of the
/// window; an interrupted scan is resumed from its next filters by the next run.
async fn activities(
    client: &CasClient,
    cas: &CasSettings,
    cursor: Option<&Cursor>,
    now_ms: i64,
    deadline: Deadline,
) -> Pull {
    let start = cursor.cloned().unwrap_or_else(|| Cursor {
        position_ms: first_position(cas, now_ms),
        ..Default::default()
    });
    let (window_to, mut filters, mut ids_at_end) = match &start.scan {
        Some(r) => (r.window_to, r.next_filters.clone(), r.ids_at_end.clone()),
        None => {
            let upper = upper_bound(cas, now_ms);
            if upper < start.position_ms {
                return nothing(start);
            }
            let mut f = with_extra(Map::new(), &cas.activities_filter);
            f.insert(
                "created".into(),
                json!({"gte": start.position_ms, "lte": upper}),
            );
            (upper, f, BTreeSet::new())
        }
    };
    let window = Window::new(start.position_ms, window_to)
        .expect("a stored scan never ends before it starts");
    let mut seen = HashSet::new();
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
            let already = created == Some(start.position_ms) && start.boundary_ids.contains(&id);
            if already || ids_at_end.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            if created == Some(window_to) {
                ids_at_end.insert(id);
            }
            records.push(rec);
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
        Cursor {
            position_ms: window_to,
            boundary_ids: ids_at_end,
            scan: None,
        }
    } else {
        Cursor {
            scan: Some(ScanResume {
                window_to,
                next_filters: filters,
                ids_at_end,
            }),
            ..start
        }
    };
    Pull {
        window,
        records,
        cursor,
        complete,
        error,
    }
}

/// Discovery: once a UTC day is over, one record per continuous report and discovered app.
async fn discovery(
    client: &CasClient,
    cas: &CasSettings,
    cursor: Option<&Cursor>,
    now_ms: i64,
    deadline: Deadline,
) -> Result<Pull, CasError> {
    let today = upper_bound(cas, now_ms).div_euclid(DAY_MS) * DAY_MS;
    let day = today - DAY_MS;
    let start = cursor.cloned().unwrap_or(Cursor {
        position_ms: day,
        ..Default::default()
    });
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
        cursor: Cursor {
            position_ms: today,
            ..Default::default()
        },
        complete: true,
        error: None,
    })
}
