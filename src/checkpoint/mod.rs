//! Per data type, how far the poll has got: a small JSON blob, advanced only after the
//! batches it covers are durably enqueued, and only with an ETag condition so that two
//! overlapping runs can never both move it.

use crate::model::DataType;
use crate::storage::blobs::{BlobError, Blobs, WriteCondition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where the next pull starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Everything CAS had stored up to this position (Unix ms; `date` for alerts,
    /// `created` for activities). For discovery: when the next snapshot is due.
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
    /// Discovery only: the snapshot being taken, when one was interrupted part-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotResume>,
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
}

/// A re-check of the alerts in the watch window, part-way through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchPass {
    /// When it began (Unix ms): the `TimeGenerated` of the changes it finds.
    pub started_ms: i64,
    /// The next page.
    pub next: PageResume,
}

/// The stored form, versioned so a later layout can read an older one.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    v: u32,
    data_type: DataType,
    cursor: Cursor,
}

/// A checkpoint as read, with the ETag its update must match.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The cursor; `None` before the first successful run.
    pub cursor: Option<Cursor>,
    etag: Option<String>,
}

/// A checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Storage failed, or another run advanced the checkpoint first.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The blob is not a checkpoint we can read; it is left as it is for a person to look at.
    #[error("checkpoint {name} is unreadable ({detail}); fix or delete it (deleting restarts from CAS_LOOKBACK)")]
    Corrupt {
        /// The blob name.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

/// Reads and advances checkpoints.
#[derive(Clone)]
pub struct CheckpointStore {
    blobs: Blobs,
}

impl CheckpointStore {
    /// Checkpoints live in `blobs`.
    pub fn new(blobs: Blobs) -> Self {
        CheckpointStore { blobs }
    }

    /// The blob holding a data type's checkpoint.
    pub fn blob_name(data_type: DataType) -> String {
        format!("checkpoints/{}.json", data_type.as_str())
    }

    /// Reads the checkpoint (absent on a first run).
    pub async fn load(&self, data_type: DataType) -> Result<Checkpoint, CheckpointError> {
        let name = Self::blob_name(data_type);
        let Some((bytes, etag)) = self.blobs.get(&name).await? else {
            return Ok(Checkpoint {
                cursor: None,
                etag: None,
            });
        };
        let stored: Stored =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                name: name.clone(),
                detail: e.to_string(),
            })?;
        if stored.v != 1 || stored.data_type != data_type {
            return Err(CheckpointError::Corrupt {
                name,
                detail: format!(
                    "version {} for {}, expected version 1 for {data_type}",
                    stored.v, stored.data_type
                ),
            });
        }
        Ok(Checkpoint {
            cursor: Some(stored.cursor),
            etag: Some(etag),
        })
    }

    /// Replaces `previous` with `cursor`; fails with a conflict if someone else wrote since.
    pub async fn advance(
        &self,
        data_type: DataType,
        previous: &Checkpoint,
        cursor: Cursor,
    ) -> Result<Checkpoint, CheckpointError> {
        let stored = Stored {
            v: 1,
            data_type,
            cursor,
        };
        // Compact: with the alert watch this can hold tens of thousands of entries, and it
        // is written after every page.
        let bytes = serde_json::to_vec(&stored).expect("a cursor always serializes");
        let condition = match &previous.etag {
            Some(e) => WriteCondition::IfMatch(e.clone()),
            None => WriteCondition::IfAbsent,
        };
        let etag = self
            .blobs
            .put(&Self::blob_name(data_type), bytes, condition)
            .await?;
        Ok(Checkpoint {
            cursor: Some(stored.cursor),
            etag: Some(etag),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Checkpoints written by a deployed release must read back after any change of the
    //! cursor types: these files are what release 0.1.0 stores, one per data type.
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/checkpoints/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn stored(data_type: DataType, cursor: Cursor) -> String {
        let s = Stored {
            v: 1,
            data_type,
            cursor,
        };
        serde_json::to_string(&s).unwrap() + "\n"
    }

    fn samples() -> Vec<(&'static str, DataType, Cursor)> {
        let alerts = Cursor {
            position_ms: 1_764_000_000_000,
            rescan_from_ms: Some(1_763_999_880_000),
            recent: [("a1".to_string(), 1_763_999_990_000)].into(),
            pages: Some(PageResume {
                lower: 1_763_900_000_000,
                upper: 1_764_000_000_000,
                skip: 200,
                newest: 1_763_999_000_000,
            }),
            pending_upper_ms: Some(1_764_000_000_000),
            watch: Some(AlertWatch {
                last_check_ms: 1_763_990_000_000,
                alerts: [("a1".to_string(), (1_763_999_990_000, "0/2".to_string()))].into(),
                since_ms: Some(1_763_000_000_000),
                pass: Some(WatchPass {
                    started_ms: 1_763_995_000_000,
                    next: PageResume {
                        lower: 1_763_400_000_000,
                        upper: 1_763_995_000_000,
                        skip: 100,
                        newest: 1_763_500_000_000,
                    },
                }),
            }),
            ..Default::default()
        };
        let activities = Cursor {
            position_ms: 1_764_000_000_000,
            rescan_from_ms: Some(1_763_999_880_000),
            recent: [("x1".to_string(), 1_763_999_990_000)].into(),
            scan: Some(ScanResume {
                window_to: 1_764_000_100_000,
                next_filters:
                    json!({"created": {"gte": 1_763_999_880_000_i64}, "id": {"gt": "x1"}})
                        .as_object()
                        .unwrap()
                        .clone(),
            }),
            ..Default::default()
        };
        let discovery = Cursor {
            position_ms: 1_764_028_800_000,
            snapshot: Some(SnapshotResume {
                taken_ms: 1_763_942_400_000,
                streams_done: vec!["s1".into()],
                page: Some("https://graph.microsoft.com/beta/next".into()),
                apps_done: vec!["11161".into()],
            }),
            ..Default::default()
        };
        vec![
            ("alerts.json", DataType::Alerts, alerts),
            ("activities.json", DataType::Activities, activities),
            ("discovery.json", DataType::Discovery, discovery),
        ]
    }

    #[test]
    fn the_stored_files_of_release_0_1_0_read_back_unchanged() {
        for (file, dt, cursor) in samples() {
            if std::env::var_os("WRITE_CHECKPOINT_FIXTURES").is_some() {
                let path = format!(
                    "{}/tests/fixtures/checkpoints/{file}",
                    env!("CARGO_MANIFEST_DIR")
                );
                std::fs::write(path, stored(dt, cursor.clone())).unwrap();
            }
            let text = fixture(file);
            let read: Stored = serde_json::from_str(&text).unwrap();
            assert_eq!((read.v, read.data_type), (1, dt), "{file}");
            assert_eq!(read.cursor, cursor, "{file}");
            assert_eq!(stored(dt, read.cursor), text, "{file}");
        }
    }
}
