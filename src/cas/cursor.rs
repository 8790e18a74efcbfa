//! The CAS puller's cursor, stored in its checkpoint: the position reached, the overlap's
//! ids, an interrupted scan or listing, and the alert change watch. Its JSON is the
//! checkpoint format of every release so far (pinned by the checkpoint tests).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where the next pull of alerts or activities starts: what the checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Everything CAS had stored up to this position (Unix ms; `date` for alerts,
    /// `created` for activities).
    pub position_ms: i64,
    /// The next pull asks from here (`gte`), a little before `position_ms`, so records that
    /// became visible late are still caught; `None` means `position_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescan_from_ms: Option<i64>,
    /// Ids already enqueued whose position is at or after the rescan start, with that
    /// position. CAS filters are inclusive, so re-reading the overlap lists these again;
    /// they are skipped, which is what keeps records that share the boundary millisecond
    /// from being lost (`gt`) or sent twice (`gte` alone).
    #[serde(default)]
    pub recent: BTreeMap<String, i64>,
    /// An activities scan that ran out of time part-way through its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanResume>,
    /// An alerts listing part-way through its window: the next page to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<PageResume>,
    /// The end of a window whose records were being enqueued when the run stopped (the
    /// enqueue was not confirmed). The next run reads exactly that window again, so it
    /// packs the same batches, which the ingest side then recognises as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_upper_ms: Option<i64>,
    /// Alerts only: what each recently forwarded alert looked like, to forward changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<AlertWatch>,
}

impl Cursor {
    /// Where the next query starts.
    pub fn query_from(&self) -> i64 {
        self.rescan_from_ms
            .unwrap_or(self.position_ms)
            .min(self.position_ms)
    }
}

/// The rest of an interrupted scan: everything in the window that `next_filters` does
/// not select has been enqueued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanResume {
    /// The window's end (Unix ms), which becomes `position_ms` when the scan completes.
    pub window_to: i64,
    /// The `nextQueryFilters` CAS returned with the last page we enqueued.
    pub next_filters: Map<String, Value>,
}

/// Where a listing of alerts by date (ascending, skip/limit) stands: the page after the
/// last one enqueued. Asking for it again lists the same records, so a run that stopped
/// after enqueueing a page but before saving this packs the same batches when it resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageResume {
    /// The listing's window: dates from `lower` (moved up past CAS's skip limit) to `upper`.
    pub lower: i64,
    /// The window's end (Unix ms).
    pub upper: i64,
    /// Records of the listing to skip.
    pub skip: usize,
    /// The newest date listed so far.
    pub newest: i64,
}

/// Recently forwarded alerts and the state they were forwarded in, so that a resolution
/// or severity change is forwarded again as a new row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertWatch {
    /// When the last complete re-check began (Unix ms).
    pub last_check_ms: i64,
    /// Alert id → (alert date, fingerprint of its mutable fields).
    pub alerts: BTreeMap<String, (i64, String)>,
    /// Alerts dated from here on were all forwarded by this watch's deployment: one the
    /// re-check finds that is not in `alerts` became visible after its date was read, and
    /// is forwarded. (Older alerts were never ours to forward: before `CAS_LOOKBACK`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// A re-check in progress, resumed by the next run where this one stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<WatchPass>,
    /// Alerts resolved before this (Unix ms, `resolutionDate`) have been looked at: each
    /// run lists the ones resolved since, so a resolution arrives on the next run rather
    /// than at the next re-check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<i64>,
}

/// A re-check of the alerts in the watch window, part-way through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchPass {
    /// When it began (Unix ms): the `TimeGenerated` of the changes it finds.
    pub started_ms: i64,
    /// The next page.
    pub next: PageResume,
}
