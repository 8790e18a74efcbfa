//! `cas-sentinel status`: where each data type stands and what waits in the queues.

use super::OpsError;
use crate::app::{App, LastPoll};
use crate::batch::ledger::{is_part_marker, state_prefix, uncertain_prefix};
use crate::cas::Cursor;
use crate::graph::discovery::SnapshotCursor;
use crate::model::{format_ms, now_ms, DataType};
use serde::Serialize;
use std::fmt::Write;

/// One data type's state.
#[derive(Debug, Serialize)]
pub(crate) struct TypeStatus {
    /// The data type.
    pub data_type: DataType,
    /// Whether `CAS_DATA_TYPES` includes it.
    pub enabled: bool,
    /// Where it is read from: `cas` (the Defender for Cloud Apps API) or `graph`.
    pub source: &'static str,
    /// How far the checkpoint has got (RFC 3339), if it exists.
    pub checkpoint: Option<String>,
    /// Seconds between the checkpoint and now.
    pub lag_seconds: Option<i64>,
    /// A window is part-way read (an activities scan, or an alerts listing).
    pub scan_in_progress: bool,
    /// Alerts watched for status changes.
    pub watched_alerts: Option<usize>,
    /// Batches marked as sent.
    pub sent_batches: u64,
    /// Sent batches a call of which Logs Ingestion took and never answered: each may hold
    /// a copy of its rows (see docs/reliability.md).
    pub possible_duplicate_batches: u64,
    /// Anything else a reader should know (a discovery snapshot's progress, why a data
    /// type is off).
    pub notes: Vec<String>,
}

/// One tenant's state.
#[derive(Debug, Serialize)]
pub(crate) struct TenantStatus {
    /// The tenant's name (absent for the unnamed tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// How its last poll ended, if it has polled since this was recorded.
    pub last_poll: Option<LastPoll>,
    /// Per data type.
    pub data_types: Vec<TypeStatus>,
}

/// The whole picture.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    /// The unnamed tenant's state, at the top level as before `CAS_TENANTS` existed.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub unnamed: Option<TenantStatus>,
    /// Each named tenant's state (`CAS_TENANTS`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantStatus>,
    /// The fan-out queue's name.
    pub queue: String,
    /// Messages waiting (approximate, as the service reports).
    pub queue_depth: u64,
    /// Whether the fan-out queue exists (the first run creates it).
    pub queue_exists: bool,
    /// The poison queue's name.
    pub poison_queue: String,
    /// Messages in the poison queue.
    pub poison_depth: u64,
    /// What the deployment as a whole should know (checkpoints no tenant goes on from).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Reads the state of `tenants` (all of a deployment's, or the one `--tenant` names) and
/// of the queues they share. It only reads: a queue or container no run has made yet is
/// reported as such, not made.
/// `adopted`: whether a tenant of the deployment adopts the unnamed one
/// (`CAS_UNNAMED_TENANT`).
pub(crate) async fn status(tenants: &[&App], adopted: bool) -> Result<Status, OpsError> {
    use futures::{StreamExt, TryStreamExt};
    // A few tenants at a time, in order: each is about ten storage reads, and a
    // deployment of a hundred tenants read one by one would take a thousand round trips.
    let mut states: Vec<_> = futures::stream::iter(tenants)
        .map(|app| tenant_status(app))
        .buffered(8)
        .try_collect()
        .await?;
    let app = tenants[0];
    let unnamed = match app.tenant() {
        None => states.pop(),
        Some(_) => None,
    };
    let queue_depth = app.queue.existing_len().await?;
    let mut notes = Vec::new();
    // CAS_TENANTS turned on without CAS_UNNAMED_TENANT: the unnamed tenant's place is
    // kept by no one, and its tenant, listed under a name, started again from CAS_LOOKBACK.
    if app.tenant().is_some() && !adopted {
        let unnamed = crate::checkpoint::CheckpointStore::for_tenant(app.blobs.clone(), None);
        for dt in [DataType::Alerts, DataType::Activities] {
            if unnamed.load::<Cursor>(dt).await?.cursor.is_some() {
                notes.push(format!("{} holds the checkpoint of this deployment's tenant from before CAS_TENANTS, which no tenant goes on from: name that tenant in CAS_UNNAMED_TENANT (docs/deploy.md, \"Several tenants\")", unnamed.blob_name(dt)));
            }
        }
    }
    Ok(Status {
        notes,
        unnamed,
        tenants: states,
        queue: app.queue.name().to_string(),
        queue_depth: queue_depth.unwrap_or(0),
        queue_exists: queue_depth.is_some(),
        poison_queue: app.poison.name().to_string(),
        poison_depth: app.poison.existing_len().await?.unwrap_or(0),
    })
}

async fn tenant_status(app: &App) -> Result<TenantStatus, OpsError> {
    let now = now_ms();
    // Its blobs' names: the adopter of the unnamed tenant keeps the unnamed one's.
    let tenant = app.settings.message_tenant();
    let mut data_types = Vec::new();
    for dt in DataType::ALL {
        let discovery = dt == DataType::Discovery;
        // A discovery cursor holds when the next snapshot is due, not a position in the
        // data, so it has no lag.
        let (cursor, snapshot) = if discovery {
            let c = app.checkpoints.load::<SnapshotCursor>(dt).await?.cursor;
            (None, Some(c))
        } else {
            (app.checkpoints.load::<Cursor>(dt).await?.cursor, None)
        };
        let sent_batches = app
            .blobs
            .count(&state_prefix(tenant, dt), |n| !is_part_marker(n))
            .await?;
        let possible_duplicate_batches = app
            .blobs
            .count(&uncertain_prefix(tenant, dt), |_| true)
            .await?;
        let mut notes = Vec::new();
        if let Some(snapshot) = snapshot {
            if let Some(why) = app.settings.discovery_off {
                notes.push(why.to_string());
            }
            match snapshot {
                Some(c) => match &c.snapshot {
                    Some(s) => notes.push(format!(
                        "snapshot of {} in progress ({} report(s) done)",
                        format_ms(s.taken_ms),
                        s.streams_done.len()
                    )),
                    None => notes.push(format!("next snapshot due {}", format_ms(c.position_ms))),
                },
                None => notes.push("no snapshot yet".into()),
            }
        }
        let source = match dt {
            DataType::Alerts => app.settings.cas.alerts_source.as_str(),
            DataType::Activities => app.settings.cas.activities_source.as_str(),
            DataType::Discovery => "graph",
        };
        data_types.push(TypeStatus {
            data_type: dt,
            enabled: app.settings.data_types.contains(&dt),
            source,
            checkpoint: cursor.as_ref().map(|c| format_ms(c.position_ms)),
            lag_seconds: cursor.as_ref().map(|c| (now - c.position_ms) / 1000),
            scan_in_progress: cursor
                .as_ref()
                .is_some_and(|c| c.scan.is_some() || c.pages.is_some()),
            watched_alerts: cursor
                .as_ref()
                .and_then(|c| c.watch.as_ref())
                .map(|w| w.alerts.len()),
            sent_batches,
            possible_duplicate_batches,
            notes,
        });
    }
    Ok(TenantStatus {
        tenant: app.tenant().map(|t| t.to_string()),
        last_poll: app.last_poll().await?,
        data_types,
    })
}

impl Status {
    /// A table for people.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for t in self.unnamed.iter().chain(&self.tenants) {
            t.render(&mut out);
        }
        for n in &self.notes {
            let _ = writeln!(out, "\nnote: {n}");
        }
        if self.queue_exists {
            let _ = writeln!(out, "\nqueue {}: {} waiting", self.queue, self.queue_depth);
        } else {
            let _ = writeln!(
                out,
                "\nqueue {}: not created yet (the first run creates it)",
                self.queue
            );
        }
        let _ = write!(
            out,
            "poison queue {}: {} message(s)",
            self.poison_queue, self.poison_depth
        );
        if self.poison_depth > 0 {
            let _ = write!(out, "; inspect with `cas-sentinel replay --export poison.ndjson`, retry with `cas-sentinel replay`");
        }
        out.push('\n');
        out
    }
}

impl TenantStatus {
    /// The tenant's part of the table: a heading for a named tenant, how its last poll
    /// ended when it failed, and a line per data type.
    fn render(&self, out: &mut String) {
        if let Some(t) = &self.tenant {
            let _ = writeln!(out, "\ntenant {t}");
        }
        match &self.last_poll {
            Some(p) if !p.ok => {
                let _ = writeln!(out, "last poll {} FAILED:", p.at);
                for f in &p.failures {
                    let _ = writeln!(out, "  {f}");
                }
            }
            _ => {}
        }
        let _ = writeln!(
            out,
            "{:<11} {:<8} {:<26} {:>10} {:>13}  notes",
            "data type", "enabled", "checkpoint", "lag", "sent batches"
        );
        for t in &self.data_types {
            let lag = t.lag_seconds.map(human).unwrap_or_else(|| "-".into());
            let mut notes = t.notes.clone();
            match (t.data_type, t.source) {
                (DataType::Alerts, "graph") => {
                    notes.insert(0, "from Microsoft Graph security/alerts_v2".to_string())
                }
                (DataType::Activities, "graph") => notes.insert(
                    0,
                    "from Microsoft Graph advanced hunting (CloudAppEvents)".to_string(),
                ),
                _ => {}
            }
            if t.scan_in_progress {
                notes.push("scan in progress".to_string());
            }
            if let Some(n) = t.watched_alerts {
                notes.push(format!("{n} alerts watched for changes"));
            }
            if t.possible_duplicate_batches > 0 {
                notes.push(format!(
                    "{} batch(es) may hold duplicate rows (Logs Ingestion took a call and never answered; dedupe by id in KQL)",
                    t.possible_duplicate_batches
                ));
            }
            let _ = writeln!(
                out,
                "{:<11} {:<8} {:<26} {:>10} {:>13}  {}",
                t.data_type,
                if t.enabled { "yes" } else { "no" },
                t.checkpoint
                    .as_deref()
                    .unwrap_or(if t.data_type == DataType::Discovery {
                        "-"
                    } else {
                        "never run"
                    }),
                lag,
                t.sent_batches,
                notes.join(", ")
            );
        }
    }
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
