//! Activities from Microsoft Graph advanced hunting (`CAS_ACTIVITIES_SOURCE=graph`), the
//! whole pipeline on the simulated tenant: every CloudAppEvents row once, including rows
//! ingested long after their event, in CloudAppEvents' own values; a window holding more
//! rows than one query returns is split, never cut.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use common::{assert_exactly_once, harness};
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunted_activities_arrive_once_late_rows_included_and_full_windows_split() {
    let h = harness(
        "graph-hunting",
        &[
            ("CAS_DATA_TYPES", "activities"),
            ("CAS_ACTIVITIES_SOURCE", "graph"),
        ],
        SimConfig::default(),
    )
    .await;
    let now = now_ms();
    // 5,000 rows ingested ten minutes ago, more than two queries' worth in one window.
    let mut ids = h
        .graph
        .add_hunting_events(5000, now - 1_200_000, now - 600_000);
    // 300 rows of an hour ago that Defender ingests only in a few seconds: after the first
    // run has read past their event time.
    ids.extend(
        h.graph
            .add_hunting_events(300, now - 3_600_000, now + 3_000),
    );
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    assert_eq!(h.host.drain(DRAIN).await.unwrap().failed, 0);
    let first = h.sink.rows("McasActivity_CL").len();
    assert_eq!(first, 5000, "the late rows are not queryable yet");
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();
    let rows = h.sink.rows("McasActivity_CL");
    assert_exactly_once(&rows, "ReportId", &ids);
    // Split, not cut: more queries than windows that fit.
    assert!(
        h.graph.hunting_queries() >= 4,
        "{} queries",
        h.graph.hunting_queries()
    );
    let r = &rows[0];
    assert_eq!(r["ISP"], "Contoso Telecom");
    assert!(r["IsAdminOperation"].is_boolean(), "{r}");
    assert!(r["TimeGenerated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["RawEventData"]["Operation"], "FileDownloaded");
    assert!(
        !r.to_string().contains("@odata.type"),
        "Graph's sidecar keys stay out of the row, nested ones too: {r}"
    );
    assert!(r.get("MappingIssues").is_none(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_proves_the_hunting_permission_and_names_it_when_missing() {
    let h = harness(
        "graph-hunting-validate",
        &[
            ("CAS_DATA_TYPES", "activities"),
            ("CAS_ACTIVITIES_SOURCE", "graph"),
        ],
        SimConfig::default(),
    )
    .await;
    let (ok, out, err) = common::run_cli(&h, &["validate"], &[]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("Microsoft Graph (advanced hunting)"), "{out}");
    h.graph.set_forbidden(true);
    let (ok, out, _) = common::run_cli(&h, &["validate"], &[]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("Microsoft Graph (advanced hunting)"))
        .unwrap();
    assert!(!ok && line.contains("ThreatHunting.Read.All"), "{line}");
}

/// Switching `CAS_ACTIVITIES_SOURCE` from `cas` to `graph`: hunting goes on from where the
/// REST checkpoint stands, without the overlap (the REST source's overlap ids are CAS's,
/// which hunted rows do not carry), so rows Defender ingested before the switch point are
/// not sent again and every row ingested after it is sent once, across later runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_activities_from_the_rest_source_to_hunting_goes_on_from_its_position() {
    let h = harness(
        "graph-hunting-switch",
        &[("CAS_DATA_TYPES", "activities")],
        SimConfig::default(),
    )
    .await;
    let before = now_ms() - 120_000;
    let rest = h
        .cas
        .add_activities((0..50).map(|i| before + i), |_| 30_000);
    // The same events as Defender XDR holds them, ingested before the switch point.
    h.graph
        .add_hunting_events(50, before - 30_000, before + 1_000);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();
    assert_eq!(h.sink.rows("McasActivity_CL").len(), 50);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // After the switch: rows ingested from now on, some visible only after the first run.
    let now = now_ms();
    let mut after = h.graph.add_hunting_events(30, now - 5_000, now - 100);
    after.extend(h.graph.add_hunting_events(10, now - 5_000, now + 2_500));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let graph = [("CAS_ACTIVITIES_SOURCE", "graph")];
    let (ok, out, err) = common::run_cli(&h, &["run", "--once"], &graph).await;
    assert!(ok, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let (ok, out2, err) = common::run_cli(&h, &["run", "--once"], &graph).await;
    assert!(ok, "{out2}{err}");
    let rows = h.sink.rows("McasActivity_CL");
    let hunted: Vec<serde_json::Value> = rows
        .iter()
        .filter(|r| !rest.iter().any(|id| r["ReportId"] == id.as_str()))
        .cloned()
        .collect();
    assert_exactly_once(&hunted, "ReportId", &after);
    assert_eq!(rows.len(), 50 + after.len(), "{out}\n{out2}");
}
