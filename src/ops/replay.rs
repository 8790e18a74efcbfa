//! `cas-sentinel replay`: poison messages back onto the fan-out queue, unchanged; and
//! export/import of poison messages through a file for inspection.
//!
//! Replaying is safe by construction: a batch already sent is marked so in its state
//! blob, and the ingest side skips it. `--force` removes that state first, for the rare case where
//! rows were lost after Logs Ingestion accepted them.

use super::OpsError;
use crate::app::App;
use crate::batch::envelope::Envelope;
use crate::batch::ledger::state_name;
use crate::model::DataType;
use crate::storage::queue::{decode_stored, Queue, Received};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use time::OffsetDateTime;

/// Which poison messages to act on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selection {
    /// Only batches of this data type (messages that are not our envelope never match).
    pub data_type: Option<DataType>,
    /// Only batches whose message names this tenant (`Some(None)`: messages naming none,
    /// the unnamed tenant's or its adopter's; other messages never match).
    pub tenant: Option<Option<crate::model::TenantName>>,
    /// Only messages inserted at or after this time.
    pub since: Option<OffsetDateTime>,
    /// At most this many messages.
    pub max: Option<usize>,
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize)]
pub(crate) struct ReplayReport {
    /// Messages moved (or that would be).
    pub moved: usize,
    /// Messages left where they were because they did not match.
    pub left: usize,
    /// Moved messages that are not a cas-sentinel envelope (they will fail again).
    pub not_envelope: usize,
    /// Batch state blobs removed (`force`).
    pub markers_removed: usize,
    /// One line per moved message.
    pub lines: Vec<String>,
}

/// A poison message as exported: the stored text unchanged, plus what it says.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Exported {
    /// The message id in the poison queue.
    pub id: String,
    /// When it was first enqueued (RFC 3339), if known.
    pub inserted: Option<String>,
    /// The stored message text (base64, exactly as in the queue).
    pub message: String,
    /// The decoded envelope header, for reading; ignored on import.
    #[serde(default)]
    pub batch: Option<serde_json::Value>,
}

fn describe(raw: &str) -> Option<Envelope> {
    decode_stored(raw).and_then(|t| Envelope::parse(&t).ok())
}

fn matches(sel: &Selection, env: Option<&Envelope>, inserted: Option<OffsetDateTime>) -> bool {
    let type_ok = match (sel.data_type, env) {
        (None, _) => true,
        (Some(want), Some(e)) => e.data_type == want,
        (Some(_), None) => false,
    };
    let tenant_ok = match (&sel.tenant, env) {
        (None, _) => true,
        (Some(want), Some(e)) => e.tenant == *want,
        (Some(_), None) => false,
    };
    let time_ok = match (sel.since, inserted) {
        (None, _) => true,
        (Some(since), Some(t)) => t >= since,
        (Some(_), None) => false,
    };
    type_ok && tenant_ok && time_ok
}

/// Walks a queue once: every message is taken (hidden) as it is visited, and those kept
/// are made visible again by [`Sweep::finish`], so no message is visited twice and none
/// is lost.
struct Sweep<'q> {
    queue: &'q Queue,
    seen: HashSet<String>,
    buffer: Vec<Received>,
    keep: Vec<Received>,
}

impl<'q> Sweep<'q> {
    fn new(queue: &'q Queue) -> Self {
        Sweep {
            queue,
            seen: HashSet::new(),
            buffer: Vec::new(),
            keep: Vec::new(),
        }
    }

    /// The next message not yet visited.
    async fn next(&mut self) -> Result<Option<Received>, OpsError> {
        loop {
            if let Some(m) = self.buffer.pop() {
                if self.seen.insert(m.id.clone()) {
                    return Ok(Some(m));
                }
                continue;
            }
            let batch = self.queue.receive(32, 300).await?;
            if batch.is_empty() || batch.iter().all(|m| self.seen.contains(&m.id)) {
                return Ok(None);
            }
            self.buffer = batch;
            self.buffer.reverse();
        }
    }

    /// Leaves a visited message in the queue.
    fn keep(&mut self, m: Received) {
        self.keep.push(m);
    }

    /// Makes the kept messages visible again.
    async fn finish(self) -> Result<(), OpsError> {
        for m in &self.keep {
            self.queue.update_visibility(m, 0).await?;
        }
        Ok(())
    }
}

/// Moves matching poison messages back onto the fan-out queue.
pub(crate) async fn replay(
    app: &App,
    sel: &Selection,
    dry_run: bool,
    force: bool,
) -> Result<ReplayReport, OpsError> {
    app.ensure_resources().await?;
    let mut report = ReplayReport::default();
    let max = sel.max.unwrap_or(usize::MAX);
    let mut sweep = Sweep::new(&app.poison);
    while let Some(m) = sweep.next().await? {
        let env = describe(&m.raw_text);
        if report.moved >= max || !matches(sel, env.as_ref(), m.inserted) {
            report.left += 1;
            sweep.keep(m);
            continue;
        }
        report.moved += 1;
        report.lines.push(match &env {
            Some(e) => format!(
                "{} batch {} ({} records, window {})",
                e.data_type, e.batch, e.count, e.window
            ),
            None => {
                report.not_envelope += 1;
                format!(
                    "message {}: not a cas-sentinel envelope, moved as it is",
                    m.id
                )
            }
        });
        if dry_run {
            sweep.keep(m);
            continue;
        }
        if let (true, Some(e)) = (force, &env) {
            for name in app.blobs.names(&state_name(e)).await? {
                app.blobs.delete(&name).await?;
                report.markers_removed += 1;
            }
        }
        app.queue.send_raw(m.raw_text.clone()).await?;
        app.poison.delete(&m).await?;
    }
    sweep.finish().await?;
    Ok(report)
}

/// Names `path` in a read or write error of an export file.
fn file_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> OpsError + Copy + '_ {
    move |error| OpsError::File {
        path: path.display().to_string(),
        error,
    }
}

/// Writes matching poison messages to `path` (NDJSON), leaving them in the queue.
pub(crate) async fn export(
    app: &App,
    sel: &Selection,
    path: &std::path::Path,
) -> Result<usize, OpsError> {
    let file_err = file_error(path);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(file_err)?);
    let mut lines = Vec::new();
    let max = sel.max.unwrap_or(usize::MAX);
    let mut sweep = Sweep::new(&app.poison);
    while let Some(m) = sweep.next().await? {
        let env = describe(&m.raw_text);
        if lines.len() < max && matches(sel, env.as_ref(), m.inserted) {
            lines.push(Exported {
                id: m.id.clone(),
                inserted: m.inserted.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                message: m.raw_text.clone(),
                batch: env.map(|e| serde_json::json!({"type": e.data_type, "batch": e.batch, "window": e.window, "count": e.count})),
            });
        }
        sweep.keep(m);
    }
    sweep.finish().await?;
    for l in &lines {
        serde_json::to_writer(&mut out, l).map_err(|e| file_err(e.into()))?;
        out.write_all(b"\n").map_err(file_err)?;
    }
    out.flush().map_err(file_err)?;
    Ok(lines.len())
}

/// Enqueues the messages of an export file (one [`Exported`] a line) that `sel` matches.
/// The whole file is checked first, and nothing is enqueued if any line is not an
/// exported message, or (unless `allow_foreign`) holds a message that is not a
/// cas-sentinel envelope: a file half enqueued, or someone else's messages in our queue,
/// are harder to undo than a refusal. The file is read twice, a line at a time, so its
/// size does not matter.
pub(crate) async fn import(
    app: &App,
    sel: &Selection,
    path: &std::path::Path,
    dry_run: bool,
    allow_foreign: bool,
) -> Result<ReplayReport, OpsError> {
    check_import(path, allow_foreign)?;
    let file_err = file_error(path);
    let file = std::fs::File::open(path).map_err(file_err)?;
    app.ensure_resources().await?;
    let mut report = ReplayReport::default();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(file_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Exported = serde_json::from_str(&line)
            .map_err(|err| OpsError::Input(format!("{}:{}: {err}", path.display(), n + 1)))?;
        let env = describe(&e.message);
        let inserted = e.inserted.as_deref().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        if report.moved >= sel.max.unwrap_or(usize::MAX) || !matches(sel, env.as_ref(), inserted) {
            report.left += 1;
            continue;
        }
        report.moved += 1;
        if env.is_none() {
            report.not_envelope += 1;
        }
        report
            .lines
            .push(format!("message {} from line {}", e.id, n + 1));
        if !dry_run {
            app.queue.send_raw(e.message).await?;
        }
    }
    Ok(report)
}

/// Reads an export file through, naming every line that cannot be imported (the first
/// ten, and how many more).
fn check_import(path: &std::path::Path, allow_foreign: bool) -> Result<(), OpsError> {
    let file_err = file_error(path);
    let file = std::fs::File::open(path).map_err(file_err)?;
    let (mut bad, mut count) = (Vec::new(), 0usize);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(file_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let problem = match serde_json::from_str::<Exported>(&line) {
            Err(err) => Some(format!("not an exported message: {err}")),
            Ok(e) if !allow_foreign && describe(&e.message).is_none() => Some(format!(
                "message {} is not a cas-sentinel envelope (give --allow-foreign to enqueue it anyway)",
                e.id
            )),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            count += 1;
            if bad.len() < 10 {
                bad.push(format!("{}:{}: {p}", path.display(), n + 1));
            }
        }
    }
    if count == 0 {
        return Ok(());
    }
    let more = count - bad.len();
    let tail = if more > 0 {
        format!("\n... and {more} more")
    } else {
        String::new()
    };
    Err(OpsError::Input(format!(
        "{count} line(s) cannot be imported; nothing was enqueued:\n{}{tail}",
        bad.join("\n")
    )))
}
