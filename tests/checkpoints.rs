//! Checkpoints and partial progress on real Azurite blobs.

mod common;

use cas_sentinel::testing::cas::sim::{Fault, SimConfig};
use cas_sentinel::testing::cas::Cursor;
use cas_sentinel::testing::checkpoint::{CheckpointError, CheckpointStore};
use cas_sentinel::testing::model::{now_ms, DataType};
use cas_sentinel::testing::storage::blobs::BlobError;
use cas_sentinel::testing::storage::blobs::{Blobs, CONTAINER};
use common::{assert_exactly_once, harness};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_can_never_both_advance_a_checkpoint() {
    let h = harness("checkpoint-etag", &[], SimConfig::default()).await;
    let blobs = Blobs::new(
        h.azurite
            .storage()
            .container_client(CONTAINER, None)
            .unwrap(),
    );
    blobs.ensure_container().await.unwrap();
    let store = CheckpointStore::new(blobs.clone());

    // Two first runs: only one may create the checkpoint.
    let a = store.load(DataType::Alerts).await.unwrap();
    let b = store.load(DataType::Alerts).await.unwrap();
    assert!(a.cursor.is_none());
    let cur = |p| Cursor {
        position_ms: p,
        ..Default::default()
    };
    let a2 = store.advance(DataType::Alerts, &a, cur(10)).await.unwrap();
    assert!(matches!(
        store.advance(DataType::Alerts, &b, cur(20)).await,
        Err(CheckpointError::Blob(BlobError::Conflict(_)))
    ));

    // Two later runs that read the same version: only the first write lands.
    let c = store.load(DataType::Alerts).await.unwrap();
    assert_eq!(c.cursor, Some(cur(10)));
    store.advance(DataType::Alerts, &a2, cur(30)).await.unwrap();
    assert!(store.advance(DataType::Alerts, &c, cur(40)).await.is_err());
    assert_eq!(
        store.load(DataType::Alerts).await.unwrap().cursor,
        Some(cur(30))
    );

    // A checkpoint that is not ours is reported, not overwritten.
    blobs
        .put(
            &store.blob_name(DataType::Activities),
            b"{oops".to_vec(),
            cas_sentinel::testing::storage::blobs::WriteCondition::Always,
        )
        .await
        .unwrap();
    let err = store
        .load::<Cursor>(DataType::Activities)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("checkpoints/activities.json is unreadable"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_cut_short_keeps_what_it_read_and_the_next_run_continues() {
    let h = harness(
        "partial-poll",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let base = now_ms() - 600_000;
    // 450 alerts; the 150 in the middle share one millisecond across the page-2/3 boundary.
    let mut ids = h.cas.add_alerts((0..150).map(|i| base + i));
    ids.extend(h.cas.add_alerts((0..150).map(|_| base + 1000)));
    ids.extend(h.cas.add_alerts((0..150).map(|i| base + 2000 + i)));
    // The listing of alerts resolved since the last run, two good pages, then an error that
    // is not retried.
    h.cas
        .inject([Fault::Pass, Fault::Pass, Fault::Pass, Fault::Status(400)]);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(!ok, "the failure is reported: {logs:?}");
    assert!(logs.iter().any(|l| l.contains("400")), "{logs:?}");
    h.host.drain(Duration::from_secs(60)).await.unwrap();
    let first = h.sink.rows("McasAlerts_CL").len();
    assert_eq!(
        first, 200,
        "the two pages read before the failure were forwarded"
    );
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(Duration::from_secs(60)).await.unwrap();
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &ids);
}
