//! Per data type, how far the poll has got: a small JSON blob holding the source's own
//! cursor type, advanced only after the batches it covers are durably enqueued, and only
//! with an ETag condition so that two overlapping runs can never both move it.

use crate::model::{DataType, TenantName};
use crate::storage::blobs::{BlobError, Blobs, WriteCondition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The stored form, versioned so a later layout can read an older one.
#[derive(Debug, Serialize, Deserialize)]
struct Stored<C> {
    v: u32,
    data_type: DataType,
    cursor: C,
}

/// A checkpoint as read, with the ETag its update must match.
#[derive(Clone, Debug)]
pub struct Checkpoint<C> {
    /// The cursor; `None` before the first successful run.
    pub cursor: Option<C>,
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

/// Reads and advances one tenant's checkpoints.
#[derive(Clone)]
pub struct CheckpointStore {
    blobs: Blobs,
    /// Where the tenant's checkpoints live: `checkpoints/` for the unnamed tenant (as in
    /// every release before `CAS_TENANTS`, so an upgrade goes on where it was), and
    /// `tenants/<name>/checkpoints/` for a named one.
    prefix: String,
}

impl CheckpointStore {
    /// The unnamed tenant's checkpoints, in `blobs`.
    #[cfg(any(test, feature = "sim"))]
    pub fn new(blobs: Blobs) -> Self {
        Self::for_tenant(blobs, None)
    }

    /// A tenant's checkpoints, in `blobs`.
    pub fn for_tenant(blobs: Blobs, tenant: Option<&TenantName>) -> Self {
        let prefix = format!("{}checkpoints/", TenantName::blob_root(tenant));
        CheckpointStore { blobs, prefix }
    }

    /// The blob holding a data type's checkpoint.
    pub fn blob_name(&self, data_type: DataType) -> String {
        format!("{}{}.json", self.prefix, data_type.as_str())
    }

    /// Reads the checkpoint (absent on a first run).
    pub async fn load<C: DeserializeOwned>(
        &self,
        data_type: DataType,
    ) -> Result<Checkpoint<C>, CheckpointError> {
        let name = self.blob_name(data_type);
        let Some((bytes, etag)) = self.blobs.get(&name).await? else {
            return Ok(Checkpoint {
                cursor: None,
                etag: None,
            });
        };
        let stored: Stored<C> =
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
    pub async fn advance<C: Serialize>(
        &self,
        data_type: DataType,
        previous: &Checkpoint<C>,
        cursor: C,
    ) -> Result<Checkpoint<C>, CheckpointError> {
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
            .put(&self.blob_name(data_type), bytes, condition)
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
    use crate::cas::{AlertWatch, Cursor, PageResume, ScanResume, WatchPass};
    use crate::graph::discovery::{SnapshotCursor, SnapshotResume};
    use serde_json::json;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/checkpoints/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn stored<C: Serialize>(data_type: DataType, cursor: C) -> String {
        let s = Stored {
            v: 1,
            data_type,
            cursor,
        };
        serde_json::to_string(&s).unwrap() + "\n"
    }

    /// Reads `file` as a `C`, checks it against `expected`, and returns it written again.
    fn read_back<C>(file: &str, dt: DataType, expected: &C) -> String
    where
        C: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let read: Stored<C> = serde_json::from_str(&fixture(file)).unwrap();
        assert_eq!((read.v, read.data_type), (1, dt), "{file}");
        assert_eq!(&read.cursor, expected, "{file}");
        stored(dt, read.cursor)
    }

    fn samples() -> (Cursor, Cursor, SnapshotCursor) {
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
                resolved_ms: None,
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
        let discovery = SnapshotCursor {
            position_ms: 1_764_028_800_000,
            snapshot: Some(SnapshotResume {
                taken_ms: 1_763_942_400_000,
                streams_done: vec!["s1".into()],
                page: Some("https://graph.microsoft.com/beta/next".into()),
                apps_done: vec!["11161".into()],
            }),
        };
        (alerts, activities, discovery)
    }

    #[test]
    fn the_stored_files_of_release_0_1_0_read_back_unchanged() {
        let (alerts, activities, discovery) = samples();
        for (file, text) in [
            (
                "alerts.json",
                read_back("alerts.json", DataType::Alerts, &alerts),
            ),
            (
                "activities.json",
                read_back("activities.json", DataType::Activities, &activities),
            ),
        ] {
            assert_eq!(text, fixture(file), "{file}");
        }
        // Release 0.1.0 wrote every cursor with an (empty) overlap map, which a snapshot
        // never used; it reads the smaller form back as the same cursor.
        let written = read_back("discovery.json", DataType::Discovery, &discovery);
        assert_eq!(
            written,
            fixture("discovery.json").replace("\"recent\":{},", "")
        );
        let old: Stored<Cursor> = serde_json::from_str(&written).unwrap();
        assert_eq!(
            (old.cursor.position_ms, old.cursor.recent.len()),
            (discovery.position_ms, 0)
        );
    }
}
