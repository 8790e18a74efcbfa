//! Activities into Sentinel's native ASIM tables (`SENTINEL_ASIM=on`), the whole pipeline
//! on the simulated tenant: every activity an ASIM schema describes arrives once in its
//! table beside its own row, even when its batch is delivered twice and a call fails part
//! way; activities no schema describes stay in `McasActivity_CL` only.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use cas_sentinel::testing::sentinel::sim::IngestFault;
use common::{assert_exactly_once, harness};
use std::collections::BTreeMap;
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(120);
const TABLES: [&str; 3] = [
    "ASimAuthenticationEventLogs",
    "ASimFileEventLogs",
    "ASimAuditEventLogs",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_reach_their_asim_tables_once_each() {
    let mut h = harness(
        "asim",
        &[("CAS_DATA_TYPES", "activities"), ("SENTINEL_ASIM", "on")],
        SimConfig::default(),
    )
    .await;
    let now = now_ms();
    let mut ids = h.cas.add_activity_kinds(now - 600_000);
    ids.extend(
        h.cas
            .add_activities((0..400).map(|i| now - 900_000 + i * 100), |_| 30_000),
    );
    // Each batch is delivered twice at once, and the second Logs Ingestion call is refused
    // (403 is not retried in the invocation): a batch is left part-sent, some of its rows
    // in and the rest sent by its redelivery.
    h.host.duplicate_deliveries = true;
    h.sink.inject([IngestFault::Pass, IngestFault::Status(403)]);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    let drained = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(drained.poisoned, 0);
    assert!(
        drained.failed >= 1,
        "the refused call failed a delivery: {drained:?}"
    );
    let activities = h.sink.rows("McasActivity_CL");
    assert_exactly_once(&activities, "ReportId", &ids);
    assert_eq!(activities.len(), ids.len());

    let action: BTreeMap<&str, &str> = activities
        .iter()
        .map(|r| {
            (
                r["ReportId"].as_str().unwrap(),
                r["ActionType"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut normalized = Vec::new();
    for table in TABLES {
        let rows = h.sink.rows(table);
        assert!(!rows.is_empty(), "{table} has rows");
        let uids: Vec<String> = rows
            .iter()
            .map(|r| r["EventOriginalUid"].as_str().unwrap().to_string())
            .collect();
        assert_exactly_once(&rows, "EventOriginalUid", &uids);
        for r in &rows {
            assert_eq!(r["EventProduct"], "Microsoft Defender for Cloud Apps");
            assert_eq!(r["EventCount"], 1);
        }
        normalized.extend(uids);
    }
    // Every activity is normalized but for the kinds no ASIM schema describes.
    let left_out: Vec<&str> = action
        .iter()
        .filter(|(id, _)| !normalized.iter().any(|u| u == *id))
        .map(|(_, a)| *a)
        .collect();
    assert!(!left_out.is_empty());
    assert!(
        left_out
            .iter()
            .all(|a| matches!(*a, "MailItemsAccessed" | "PageViewed")),
        "{left_out:?}"
    );
    assert_eq!(normalized.len() + left_out.len(), ids.len());
    let audit = h.sink.rows("ASimAuditEventLogs");
    let ops: Vec<&str> = audit
        .iter()
        .filter_map(|r| r["Operation"].as_str())
        .collect();
    for op in [
        "Add member to role.",
        "SharingSet",
        "Remove-MailboxPermission",
    ] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_no_asim_row_is_sent() {
    let h = harness(
        "asim-off",
        &[("CAS_DATA_TYPES", "activities")],
        SimConfig::default(),
    )
    .await;
    let ids = h.cas.add_activity_kinds(now_ms() - 600_000);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();
    assert_eq!(h.sink.rows("McasActivity_CL").len(), ids.len());
    let stats = h.sink.stats();
    for table in TABLES {
        assert_eq!(stats.rows.get(table), None, "{table}");
    }
}
