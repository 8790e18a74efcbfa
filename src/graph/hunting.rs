//! Activities from Microsoft Graph advanced hunting (`CAS_ACTIVITIES_SOURCE=graph`):
//! `CloudAppEvents` rows, in its own columns and values.
//!
//! Rows become queryable minutes after their event, some much later, so windows follow
//! `ingestion_time()`, not `Timestamp`: a window `[from, to)` of ingestion ending a settle
//! delay ago holds what it will hold (a row ingested later has a later ingestion time and
//! falls in a later window). Each run re-reads an overlap before its position, for rows
//! whose ingestion was still completing, and skips the `ReportId`s it already sent from it.
//!
//! A query returns at most 100,000 rows and 50 MB, and Graph is not documented to say when
//! it cut a result. So each window asks for one row more than [`ROWS`]: a window that
//! returns more is halved and asked again, never truncated; one that fits is read whole in
//! one answer, which needs no paging and so no ordering of string keys across pages.

use super::{GraphClient, GraphError};
use crate::config::CasSettings;
use crate::model::{format_ms, Window};
use crate::retry::Deadline;
use crate::source::{Page, ReadError, Source, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Rows per query. Far under Graph's 100,000, and small enough that a page of wide rows
/// (`RawEventData` can be kilobytes) stays well under its 50 MB.
pub const ROWS: usize = 2000;

/// Bins a counting query splits a window into.
const BINS: i64 = 1000;

/// What the checkpoint holds for hunted activities: the REST cursor's field names, in the
/// same checkpoint, so a switch of `CAS_ACTIVITIES_SOURCE` goes on from the other source's
/// position (the REST position is when CAS stored a record, close to its ingestion).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HuntingCursor {
    /// Everything ingested before this (Unix ms) has been enqueued.
    #[serde(rename = "position_ms")]
    pub(crate) ingested_ms: i64,
    /// How wide the next window is asked for, in ms (0: the widest).
    #[serde(default)]
    pub(crate) span_ms: i64,
    /// `ReportId`s sent from the overlap, with their ingestion time.
    #[serde(default)]
    pub(crate) recent: BTreeMap<String, i64>,
    /// Whether this source wrote the cursor: a position the REST source left is not
    /// re-read with an overlap (its `recent` ids are CAS's, which hunting rows do not carry,
    /// so an overlap would send again what the REST source sent).
    #[serde(default)]
    pub(crate) graph: bool,
}

/// The query for one window: every column of `CloudAppEvents`, plus when each row was
/// ingested, at most `rows` of them.
pub fn query(from_ms: i64, to_ms: i64, rows: usize) -> String {
    format!(
        "CloudAppEvents\n| where ingestion_time() >= datetime({}) and ingestion_time() < datetime({})\n| extend IngestedAt = ingestion_time()\n| take {rows}",
        format_ms(from_ms),
        format_ms(to_ms)
    )
}

/// The query that counts a window's rows per `bin_ms` of ingestion: how a window with too
/// many rows is cut into windows that fit, in one query rather than a halving per query
/// (advanced hunting allows about 45 queries a minute).
pub fn count_query(from_ms: i64, to_ms: i64, bin_ms: i64) -> String {
    format!(
        "CloudAppEvents\n| where ingestion_time() >= datetime({}) and ingestion_time() < datetime({})\n| summarize Rows = count() by At = bin(ingestion_time(), {bin_ms}ms)",
        format_ms(from_ms),
        format_ms(to_ms)
    )
}

/// Reads hunted activities from a stored cursor.
pub(crate) struct Hunting {
    cursor: HuntingCursor,
    at_ms: i64,
    until_ms: i64,
    overlap_ms: i64,
    window: Window,
    done: bool,
}

impl Hunting {
    /// A reader from `cursor` (or `lookback` before `now_ms` on a first run).
    pub(crate) fn new(settings: &CasSettings, cursor: Option<&HuntingCursor>, now_ms: i64) -> Self {
        let until_ms = now_ms - settings.settle.as_millis() as i64;
        let mut cursor = cursor.cloned().unwrap_or_else(|| HuntingCursor {
            ingested_ms: now_ms - settings.lookback.as_millis() as i64,
            ..HuntingCursor::default()
        });
        let overlap_ms = settings.overlap.as_millis() as i64;
        let at = cursor.ingested_ms.min(until_ms);
        let at_ms = if cursor.graph {
            cursor.ingested_ms - overlap_ms
        } else {
            cursor.recent.clear();
            cursor.ingested_ms
        };
        cursor.graph = true;
        Hunting {
            at_ms,
            window: Window::new(at, until_ms.max(at)).expect("ordered"),
            cursor,
            until_ms,
            overlap_ms,
            done: false,
        }
    }

    async fn next(
        &mut self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, GraphError> {
        let from = self.at_ms;
        if self.done || from >= self.until_ms || deadline.passed() {
            self.done = true;
            return Ok(None);
        }
        let span = super::next_span(self.cursor.span_ms);
        let mut to = (from + span).min(self.until_ms);
        let rows = loop {
            let rows = client.hunt(&query(from, to, ROWS + 1), deadline).await?;
            if rows.len() <= ROWS {
                break rows;
            }
            // Too many rows: they are dropped, and the lane holds no page while it counts.
            drop(rows);
            crate::pages::release();
            to = self.fitting_end(client, from, to, deadline).await?;
        };
        let span = to - from;
        self.cursor.span_ms = (span * 2).clamp(1, super::MAX_WINDOW_MS);
        let mut fresh = Vec::with_capacity(rows.len());
        for mut r in rows {
            let ingested = r
                .as_object_mut()
                .and_then(|o| o.remove("IngestedAt"))
                .and_then(|v| v.as_str().and_then(crate::model::parse_rfc3339_ms))
                .unwrap_or(from);
            match r.get("ReportId").and_then(Value::as_str) {
                Some(id) if self.cursor.recent.contains_key(id) => continue,
                Some(id) => {
                    self.cursor.recent.insert(id.to_string(), ingested);
                }
                None => {}
            }
            fresh.push(r);
        }
        // Same rows, same order, same batches, whatever order the query answered in.
        // By ReportId (unique per event), not by each row's whole text: a row is already
        // serialized once for its page.
        fresh.sort_by_cached_key(|r| match r.get("ReportId").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => r.to_string(),
        });
        self.at_ms = to;
        self.cursor.ingested_ms = self.cursor.ingested_ms.max(to);
        let keep_from = self.cursor.ingested_ms - self.overlap_ms;
        self.cursor.recent.retain(|_, at| *at >= keep_from);
        let window = Window::new(from, to).expect("ordered");
        self.window = window;
        let page = Page::from_values(&fresh);
        let new = (0..page.records.len()).collect();
        Ok(Some(Step {
            page,
            window,
            new,
            changed: Vec::new(),
            observed: None,
            commit: true,
        }))
    }
}

impl Hunting {
    /// Where a window from `from` must end to hold at most [`ROWS`] rows, short of `to`
    /// (whose window holds more), from one count of its rows per bin.
    async fn fitting_end(
        &self,
        client: &GraphClient,
        from: i64,
        to: i64,
        deadline: Deadline,
    ) -> Result<i64, GraphError> {
        let bin = ((to - from) / BINS).max(1);
        let counts = client.hunt(&count_query(from, to, bin), deadline).await?;
        let mut bins: Vec<(i64, usize)> = counts
            .iter()
            .filter_map(|c| {
                let at = c
                    .get("At")?
                    .as_str()
                    .and_then(crate::model::parse_rfc3339_ms)?;
                let n = c.get("Rows")?.as_u64()? as usize;
                Some((at, n))
            })
            .collect();
        bins.sort_unstable();
        let mut total = 0;
        for (at, n) in bins {
            if total + n > ROWS {
                return Ok(if at > from {
                    // Everything before this bin fits.
                    at
                } else if bin > 1 {
                    // The first bin alone holds too many: it is the next window, counted
                    // again in finer bins when it is read.
                    (from + bin).min(to)
                } else {
                    return Err(GraphError::Shape {
                        what: "runHuntingQuery".into(),
                        detail: format!("more than {ROWS} CloudAppEvents rows were ingested in one millisecond at {}; they cannot be read without loss in one query", format_ms(from)),
                    });
                });
            }
            total += n;
        }
        // The count says it fits now (rows ingested since are in a later window): half.
        Ok(from + ((to - from) / 2).max(1))
    }
}

impl Source for Hunting {
    type Client = GraphClient;
    type Cursor = HuntingCursor;

    fn window(&self) -> Window {
        self.window
    }

    fn intent(&self) -> Option<HuntingCursor> {
        None
    }

    fn cursor(&self) -> &HuntingCursor {
        &self.cursor
    }

    fn complete(&self) -> bool {
        self.at_ms >= self.until_ms
    }

    fn lag_seconds(&self, now_ms: i64) -> Option<i64> {
        Some((now_ms - self.cursor.ingested_ms).max(0) / 1000)
    }

    async fn read(
        &mut self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, ReadError> {
        Ok(self.next(client, deadline).await?)
    }
}
