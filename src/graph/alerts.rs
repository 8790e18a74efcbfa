//! Alerts from Microsoft Graph's `security/alerts_v2` (`CAS_ALERTS_SOURCE=graph`):
//! Defender for Cloud Apps' alerts, each change that matters (status, severity,
//! classification, determination) forwarded once, as a new row.
//!
//! Graph lists alerts newest first, pages them by offset (`$skip` in its next links), and
//! documents no `$orderby`. An offset over a list that changes while it is read skips an
//! alert: one updated meanwhile leaves the filtered list and every alert behind it moves up
//! a place, past the offset already read. So a window is never read over two pages: each
//! read asks for the alerts whose `lastUpdateDateTime` falls in `[from, to)` with `to` a
//! settle delay in the past, in one page of [`PAGE`]. If Graph says there is more (a next
//! link), the window is halved and asked again; once a window fits, it is the whole answer
//! of one request, which nothing can shift. Windows grow back after a fitting read.
//!
//! Each window re-reads the overlap before it (an alert Graph made visible late), and the
//! cursor remembers what state of each recent alert was forwarded: an alert touched (a
//! comment, an assignment) with no change that matters is not forwarded again. That memory
//! is bounded ([`REMEMBERED`] alerts, the update window); an alert forgotten and then
//! touched is forwarded once more, a harmless extra row with the same state.
//!
//! A window's alerts are enqueued a minute of `lastUpdateDateTime` at a time, each minute
//! one step with its own batches, and the cursor moves past each minute as it is enqueued:
//! a run stopped between two minutes reads the rest again and packs the same batches.

use super::{GraphClient, GraphError};
use crate::config::CasSettings;
use crate::model::{format_ms, Window};
use crate::retry::Deadline;
use crate::source::{Page, ReadError, Source, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// Where Graph lists alerts.
pub(crate) const ALERTS_PATH: &str = "v1.0/security/alerts_v2";

/// Defender for Cloud Apps' alerts, as `serviceSource` names them.
pub(crate) const SERVICE_SOURCE: &str = "microsoftDefenderForCloudApps";

/// Alerts asked for per request. Graph documents no maximum for `$top`; integrations use
/// up to 2000. A smaller page halves fewer windows on a busy tenant for little cost.
pub(crate) const PAGE: usize = 1000;

/// The most alerts whose forwarded state the cursor remembers.
pub(crate) const REMEMBERED: usize = 10_000;

/// The narrowest window before giving up on fitting one page.
const MIN_SPAN_MS: i64 = 1;
const MINUTE_MS: i64 = 60_000;

/// What the checkpoint holds for Graph alerts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertsCursor {
    /// Every alert updated before this (Unix ms) has been enqueued. Stored under the REST
    /// cursor's name for its position, in the same checkpoint: a switch of
    /// `CAS_ALERTS_SOURCE` either way goes on from where the other source was (each
    /// ignores the other's fields).
    #[serde(rename = "position_ms")]
    pub(crate) since_ms: i64,
    /// How wide the next window is asked for, in ms (0: the widest).
    #[serde(default)]
    pub(crate) span_ms: i64,
    /// Recent alerts: id → (the forwarded state's fingerprint, when it was updated).
    #[serde(default)]
    pub(crate) forwarded: BTreeMap<String, (String, i64)>,
    /// Whether this source wrote the cursor. A position the REST source left (after a
    /// switch of `CAS_ALERTS_SOURCE`) is not re-read with an overlap: the REST source sent
    /// what came before it, and with no memory of what, an overlap would send it again.
    #[serde(default)]
    pub(crate) graph: bool,
}

/// Reads Graph alerts from a stored cursor.
pub(crate) struct GraphAlerts {
    cursor: AlertsCursor,
    /// Where the next window starts: the stored position less the overlap at the start
    /// of a run, then the end of each window read.
    at_ms: i64,
    /// The end of what this run reads: now, less the settle delay.
    until_ms: i64,
    keep_ms: i64,
    /// A window read, its alerts by minute, not all enqueued yet.
    pending: VecDeque<(Window, Vec<Value>)>,
    /// The window being enqueued from `pending`, and where the cursor goes once it is.
    window: Window,
    read_to: i64,
    done: bool,
}

impl GraphAlerts {
    /// A reader from `cursor` (or `lookback` before `now_ms` on a first run).
    pub(crate) fn new(settings: &CasSettings, cursor: Option<&AlertsCursor>, now_ms: i64) -> Self {
        let until_ms = now_ms - settings.settle.as_millis() as i64;
        let mut cursor = cursor.cloned().unwrap_or_else(|| AlertsCursor {
            since_ms: now_ms - settings.lookback.as_millis() as i64,
            ..AlertsCursor::default()
        });
        let from_here = cursor.graph;
        cursor.graph = true;
        let keep_ms = settings
            .alert_updates
            .map(|u| u.window.as_millis() as i64)
            .unwrap_or(7 * 86_400_000);
        let at = cursor.since_ms.min(until_ms);
        let overlap_ms = settings.overlap.as_millis() as i64;
        GraphAlerts {
            at_ms: if from_here {
                cursor.since_ms - overlap_ms
            } else {
                cursor.since_ms
            },
            window: Window::new(at, until_ms.max(at)).expect("ordered"),
            read_to: cursor.since_ms,
            cursor,
            until_ms,
            keep_ms,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// The `$filter` of a window.
    fn filter(from: i64, to: i64) -> String {
        format!(
            "serviceSource eq '{SERVICE_SOURCE}' and lastUpdateDateTime ge {} and lastUpdateDateTime lt {}",
            format_ms(from),
            format_ms(to)
        )
    }

    /// Reads the next window that fits one page, halving it until it does.
    async fn read_window(
        &mut self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<bool, GraphError> {
        let from = self.at_ms;
        if from >= self.until_ms {
            return Ok(false);
        }
        let mut span = super::next_span(self.cursor.span_ms);
        loop {
            let to = (from + span).min(self.until_ms);
            let mut url = client.url(ALERTS_PATH)?;
            url.query_pairs_mut()
                .append_pair("$filter", &Self::filter(from, to))
                .append_pair("$top", &PAGE.to_string());
            let mut page = client.page(&url, deadline).await?;
            if page.next.is_some() && span > MIN_SPAN_MS {
                // More than one page: a narrower window, asked again (see the module's note).
                // This answer is dropped, so the lane holds no page while it asks.
                span = (span / 2).max(MIN_SPAN_MS);
                crate::pages::release();
                continue;
            }
            let mut items = std::mem::take(&mut page.items);
            // A millisecond with more alerts than a page cannot be narrowed: read it whole,
            // following the links (nothing can leave a window that is a point in the past
            // but an alert updated again, whose new state a later window reads).
            let mut next = page.next;
            while let Some(link) = next {
                tracing::warn!("more than {PAGE} alerts updated in one millisecond; reading them over several pages");
                let more = client.page(&link, deadline).await?;
                items.extend(more.items);
                next = more.next;
            }
            self.cursor.span_ms = (span * 2).min(super::MAX_WINDOW_MS);
            self.at_ms = to;
            self.split(from, to, items);
            return Ok(true);
        }
    }

    /// Files a window's alerts by minute of their update, keeping only the new states.
    fn split(&mut self, from: i64, to: i64, items: Vec<Value>) {
        let mut minutes: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for a in items {
            let Some(id) = a.get("id").and_then(Value::as_str).map(str::to_string) else {
                // No id: nothing to remember it by; forwarded (the row names what is missing).
                minutes
                    .entry(from.div_euclid(MINUTE_MS))
                    .or_default()
                    .push(a);
                continue;
            };
            let updated = updated_ms(&a).unwrap_or(from);
            let fp = fingerprint(&a);
            if self
                .cursor
                .forwarded
                .get(&id)
                .is_some_and(|(seen, _)| *seen == fp)
            {
                continue;
            }
            minutes
                .entry(updated.div_euclid(MINUTE_MS))
                .or_default()
                .push(a);
        }
        self.pending.clear();
        let mut start = from;
        for (minute, mut alerts) in minutes {
            let end = ((minute + 1) * MINUTE_MS).clamp(start, to);
            alerts.sort_by_key(key);
            self.pending
                .push_back((Window::new(start, end).expect("ordered"), alerts));
            start = end;
        }
        if start < to || self.pending.is_empty() {
            self.pending
                .push_back((Window::new(start, to).expect("ordered"), Vec::new()));
        }
    }

    async fn next(
        &mut self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, GraphError> {
        loop {
            if let Some((window, alerts)) = self.pending.pop_front() {
                for a in &alerts {
                    if let Some(id) = a.get("id").and_then(Value::as_str) {
                        let at = updated_ms(a).unwrap_or(window.end_ms());
                        self.cursor
                            .forwarded
                            .insert(id.to_string(), (fingerprint(a), at));
                    }
                }
                // Re-reading the overlap never moves the position back.
                self.cursor.since_ms = self.cursor.since_ms.max(window.end_ms());
                self.forget();
                self.window = window;
                self.read_to = window.end_ms();
                // An empty minute is a step too, so the poll stores the cursor past it.
                let page = Page::from_values(&alerts);
                let new = (0..page.records.len()).collect();
                return Ok(Some(Step {
                    page,
                    window,
                    new,
                    changed: Vec::new(),
                    observed: None,
                    commit: true,
                }));
            }
            if self.done || deadline.passed() || !self.read_window(client, deadline).await? {
                self.done = true;
                return Ok(None);
            }
        }
    }

    /// Drops what is older than the update window, then the oldest past [`REMEMBERED`].
    fn forget(&mut self) {
        let horizon = self.cursor.since_ms - self.keep_ms;
        self.cursor.forwarded.retain(|_, (_, at)| *at >= horizon);
        if self.cursor.forwarded.len() > REMEMBERED {
            let mut ages: Vec<i64> = self.cursor.forwarded.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() - REMEMBERED];
            self.cursor.forwarded.retain(|_, (_, at)| *at >= cut);
        }
    }
}

/// An alert's `lastUpdateDateTime` in Unix ms.
fn updated_ms(a: &Value) -> Option<i64> {
    crate::model::parse_rfc3339_ms(a.get("lastUpdateDateTime")?.as_str()?)
}

/// The fields whose change makes an alert worth a new row.
fn fingerprint(a: &Value) -> String {
    ["status", "severity", "classification", "determination"]
        .iter()
        .map(|k| a.get(*k).and_then(Value::as_str).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// The order alerts are packed in within a minute: the same alerts pack the same batches.
fn key(a: &Value) -> (String, String) {
    let s = |k: &str| {
        a.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("lastUpdateDateTime"), s("id"))
}

impl Source for GraphAlerts {
    type Client = GraphClient;
    type Cursor = AlertsCursor;

    fn window(&self) -> Window {
        self.window
    }

    fn intent(&self) -> Option<AlertsCursor> {
        None
    }

    fn cursor(&self) -> &AlertsCursor {
        &self.cursor
    }

    fn complete(&self) -> bool {
        self.done && self.pending.is_empty() && self.cursor.since_ms >= self.until_ms
    }

    fn lag_seconds(&self, now_ms: i64) -> Option<i64> {
        Some((now_ms - self.read_to.max(self.cursor.since_ms)).max(0) / 1000)
    }

    async fn read(
        &mut self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<Option<Step>, ReadError> {
        Ok(self.next(client, deadline).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_change_that_matters_changes_the_fingerprint() {
        let a =
            json!({"status": "new", "severity": "high", "classification": null, "assignedTo": "x"});
        let mut touched = a.clone();
        touched["assignedTo"] = json!("y");
        assert_eq!(fingerprint(&a), fingerprint(&touched));
        let mut resolved = a.clone();
        resolved["status"] = json!("resolved");
        assert_ne!(fingerprint(&a), fingerprint(&resolved));
    }

    #[test]
    fn the_filter_names_the_service_and_a_half_open_window() {
        let f = GraphAlerts::filter(0, 60_000);
        assert_eq!(f, "serviceSource eq 'microsoftDefenderForCloudApps' and lastUpdateDateTime ge 1970-01-01T00:00:00Z and lastUpdateDateTime lt 1970-01-01T00:01:00Z");
    }
}
