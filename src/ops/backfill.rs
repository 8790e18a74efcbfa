//! `cas-sentinel backfill`: pulls a historic window and enqueues it, leaving the
//! checkpoint alone, paced by the same CAS request limit as the poll.

use super::OpsError;
use crate::app::App;
use crate::batch::envelope::pack_for;
use crate::cas::pull::Puller;
use crate::cas::Cursor;
use crate::model::{format_ms, DataType, Window};
use crate::pipeline::poll::Outbox;
use crate::retry::Deadline;
use crate::source::Source;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What a backfill did.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct BackfillReport {
    /// Records enqueued.
    pub records: usize,
    /// Queue messages written.
    pub messages: usize,
    /// Pulls made (each up to the invocation budget).
    pub pulls: usize,
    /// CAS requests made.
    pub cas_requests: u64,
    /// A warning when the range overlaps what the poll already forwarded.
    pub overlap_warning: Option<String>,
}

/// Backfills `data_type` over `window`. Progress goes to stderr: a bar with an ETA on a
/// terminal, a plain line per pull otherwise.
pub(crate) async fn backfill(
    app: &App,
    data_type: DataType,
    window: Window,
) -> Result<BackfillReport, OpsError> {
    if data_type == DataType::Discovery {
        return Err(OpsError::Input(
            "discovery has no history to backfill: Microsoft Graph gives only rolling 7, 30 or 90-day aggregates as they stand now (the next run takes a snapshot)".into(),
        ));
    }
    app.ensure_resources().await?;
    let mut report = BackfillReport::default();
    let mut warnings = Vec::new();
    if let Some(c) = app.checkpoints.load::<Cursor>(data_type).await?.cursor {
        if window.end_ms() >= c.query_from() {
            warnings.push(format!(
                "the range reaches {} and the poll has already forwarded {data_type} from {}: records in both are sent twice (dedupe in KQL by the CAS id)",
                format_ms(window.end_ms()),
                format_ms(c.query_from())
            ));
        }
    }
    let earlier = record_backfill(app, data_type, window).await?;
    warnings.extend(earlier.iter().filter(|b| b.overlaps(window)).map(|b| {
        format!(
            "the range overlaps an earlier backfill of {} to {} (started {}): records in both may be sent twice, unless they pack into the same batches (dedupe in KQL by the CAS id)",
            format_ms(b.from_ms),
            format_ms(b.to_ms),
            b.started
        )
    }));
    report.overlap_warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    // The same pull the poll uses, told that "now" is the end of the range plus the
    // settle delay, starting from a cursor at the range's start; no overlap, no watch.
    let mut cas = app.settings.cas.clone();
    cas.overlap = Duration::ZERO;
    cas.alert_updates = None;
    let now = window.end_ms() + cas.settle.as_millis() as i64;
    let mut cursor = Cursor {
        position_ms: window.start_ms(),
        ..Default::default()
    };
    let progress = Progress::new(window);
    let before = app.cas.requests_sent();
    let tenant = app.settings.message_tenant();
    // One pass over the range, a page at a time: each page is enqueued before the next is
    // read, so memory stays one page however long the range. A retryable failure gets a
    // fresh budget from where it stopped; the cursor is this command's own, never stored.
    loop {
        let mut puller = Puller::new(&cas, data_type, Some(&cursor), now);
        let deadline = Deadline::after(app.settings.invocation_budget);
        let failure = loop {
            match puller.next(&app.cas, deadline).await {
                Ok(Some(step)) => {
                    for m in pack_for(tenant, data_type, step.window, None, &step.new_records()) {
                        app.enqueue(&m).await?;
                        report.messages += 1;
                    }
                    report.records += step.new.len();
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        report.pulls += 1;
        let done = puller.complete() && failure.is_none();
        let stalled = *puller.cursor() == cursor && !done;
        cursor = puller.cursor().clone();
        let position = cursor
            .scan
            .as_ref()
            .and_then(|s| s.next_filters.get("created")?.get("lte")?.as_i64())
            .or(cursor.pages.map(|p| p.newest))
            .unwrap_or(cursor.position_ms);
        progress.update(position, report.records, done);
        if let Some(e) = failure {
            tracing::warn!("backfill pull stopped early: {e}");
            if !matches!(e, crate::cas::CasError::OutOfTime { .. }) || stalled {
                progress.finish();
                return Err(e.into());
            }
        }
        if done || stalled {
            break;
        }
    }
    progress.finish();
    report.cas_requests = app.cas.requests_sent() - before;
    Ok(report)
}

/// A backfill run before, as `backfills/<type>.json` lists them (newest last).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Earlier {
    from_ms: i64,
    to_ms: i64,
    /// When it was started (RFC 3339).
    started: String,
}

impl Earlier {
    fn overlaps(&self, w: Window) -> bool {
        self.from_ms <= w.end_ms() && w.start_ms() <= self.to_ms
    }
}

/// The backfills a data type keeps on record; older ones are dropped, as their records
/// are long sent and a warning about them would be noise.
const KEPT_BACKFILLS: usize = 200;

/// Adds `window` to the data type's record of backfills before it is pulled (a backfill
/// that stops part-way has still sent part of it), and returns the earlier ones.
async fn record_backfill(
    app: &App,
    data_type: DataType,
    window: Window,
) -> Result<Vec<Earlier>, OpsError> {
    // Each tenant's own history (the adopter of the unnamed tenant keeps the unnamed one's).
    let name = format!(
        "{}backfills/{data_type}.json",
        crate::model::TenantName::blob_root(app.settings.message_tenant())
    );
    let (earlier, condition) = match app.blobs.get(&name).await? {
        Some((bytes, etag)) => (
            serde_json::from_slice::<Vec<Earlier>>(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{name} is unreadable ({e}); starting its record anew");
                Vec::new()
            }),
            crate::storage::blobs::WriteCondition::IfMatch(etag),
        ),
        None => (Vec::new(), crate::storage::blobs::WriteCondition::IfAbsent),
    };
    let mut all = earlier.clone();
    all.push(Earlier {
        from_ms: window.start_ms(),
        to_ms: window.end_ms(),
        started: format_ms(crate::model::now_ms()),
    });
    let drop = all.len().saturating_sub(KEPT_BACKFILLS);
    all.drain(..drop);
    let bytes = serde_json::to_vec(&all).expect("backfill records serialize");
    app.blobs.put(&name, bytes, condition).await?;
    Ok(earlier)
}

/// Progress on stderr.
struct Progress {
    window: Window,
    started: Instant,
    terminal: bool,
}

impl Progress {
    fn new(window: Window) -> Self {
        Progress {
            window,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, position: i64, records: usize, done: bool) {
        let span = (self.window.end_ms() - self.window.start_ms()).max(1) as f64;
        let frac = if done {
            1.0
        } else {
            ((position - self.window.start_ms()) as f64 / span).clamp(0.0, 1.0)
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if frac > 0.0 && frac < 1.0 {
            format!("ETA {:.0}s", elapsed * (1.0 - frac) / frac)
        } else {
            String::new()
        };
        let mut err = std::io::stderr();
        if self.terminal {
            let filled = (frac * 30.0) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3.0}% {records} records {eta}   ",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                frac * 100.0
            );
        } else {
            let _ = writeln!(
                err,
                "backfill: {:.0}% ({records} records, up to {}) {eta}",
                frac * 100.0,
                format_ms(position)
            );
        }
    }

    fn finish(&self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
