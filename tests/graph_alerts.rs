//! Alerts from Microsoft Graph (`CAS_ALERTS_SOURCE=graph`), the whole pipeline on the
//! simulated tenant: every Defender for Cloud Apps alert once, other services' alerts never,
//! a change that matters as one new row, a touch as none, and nothing skipped while the
//! list changes under Graph's offset paging.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use common::harness;
use std::collections::BTreeMap;
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(120);

fn ids_of(indexes: &[usize]) -> Vec<String> {
    indexes.iter().map(|k| format!("{k:024x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_alerts_arrive_once_per_change_that_matters_and_none_is_skipped_by_paging() {
    let h = harness(
        "graph-alerts",
        &[("CAS_DATA_TYPES", "alerts"), ("CAS_ALERTS_SOURCE", "graph")],
        SimConfig::default(),
    )
    .await;
    // 3,300 alerts in one minute ten minutes ago (2,200 of them Cloud Apps', more than two
    // pages), and while the first page is served, eight of them are resolved: each leaves
    // the window being read, which would shift the rest past an offset.
    let start = now_ms() - 600_000;
    let ours = h.graph.add_alerts(3300, start);
    let changed: Vec<usize> = ours.iter().step_by(250).copied().collect();
    let later = now_ms() - 5_000;
    h.graph
        .update_during_next_read(changed.iter().map(|&i| (i, "resolved", later)).collect());
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(d.failed, 0, "{d:?}");
    // The next run sees the resolutions (settled by now) and a touch that changes nothing.
    h.graph.touch_alert(ours[1], now_ms() - 3_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();

    let rows = h.sink.rows("McasAlerts_CL");
    let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        per.entry(r["VendorOriginalId"].as_str().unwrap().to_string())
            .or_default()
            .push(r["Status"].as_str().unwrap().to_string());
    }
    let expected = ids_of(&ours);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !per.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} alerts skipped, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert_eq!(
        per.len(),
        expected.len(),
        "only Defender for Cloud Apps' alerts"
    );
    for (k, id) in ours.iter().zip(&expected) {
        let states = &per[id];
        if changed.contains(k) {
            // Its new state for certain; its first state if it was read before the change.
            assert_eq!(
                states.last().map(String::as_str),
                Some("Resolved"),
                "{id}: {states:?}"
            );
            assert!(states.len() <= 2, "{id}: {states:?}");
        } else {
            assert_eq!(states, &["New"], "{id}: one row, the touch added none");
        }
    }
    // One page a window: the window was halved until it fit, not read over offsets.
    assert!(
        h.graph.alert_pages() >= 3,
        "{} pages",
        h.graph.alert_pages()
    );
    let r = rows
        .iter()
        .find(|r| r["VendorOriginalId"] == expected[0].as_str())
        .unwrap();
    assert_eq!(r["ProductName"], "Microsoft Cloud App Security");
    assert!(r["AlertType"]
        .as_str()
        .unwrap()
        .starts_with("MCAS_ALERT_ANUBIS_DETECTION_"));
    assert_eq!(
        r["ExtendedProperties"]["DetectionSource"],
        "cloudAppSecurity"
    );
    assert_eq!(r["Entities"][0]["Type"], "account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_proves_the_graph_alerts_permission_and_names_it_when_missing() {
    let h = harness(
        "graph-alerts-validate",
        &[("CAS_DATA_TYPES", "alerts"), ("CAS_ALERTS_SOURCE", "graph")],
        SimConfig::default(),
    )
    .await;
    h.graph.add_alerts(3, now_ms() - 60_000);
    let (ok, out, err) = common::run_cli(&h, &["validate"], &[]).await;
    assert!(ok, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Microsoft Graph (alerts)"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("ok") && line.contains("alerts readable (1 on the first page)"),
        "{line}"
    );
    h.graph.set_forbidden(true);
    let (ok, out, _) = common::run_cli(&h, &["validate"], &[]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("Microsoft Graph (alerts)"))
        .unwrap();
    assert!(
        !ok && line.contains("PROBLEM") && line.contains("SecurityAlert.Read.All"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_alerts_source() {
    let h = harness(
        "graph-alerts-status",
        &[("CAS_DATA_TYPES", "alerts"), ("CAS_ALERTS_SOURCE", "graph")],
        SimConfig::default(),
    )
    .await;
    let (ok, out, err) = common::run_cli(&h, &["status", "--json"], &[]).await;
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alerts = v["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["data_type"] == "alerts")
        .unwrap();
    assert_eq!(alerts["source"], "graph", "{alerts}");
}

/// Switching `CAS_ALERTS_SOURCE` from `cas` to `graph` on a running deployment: the Graph
/// source reads the REST source's checkpoint and goes on from its position, so what the
/// REST source sent is not sent again and what came after is not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_from_the_rest_source_to_graph_goes_on_from_its_position() {
    let h = harness(
        "graph-alerts-switch",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let before = now_ms() - 120_000;
    h.cas.add_alerts((0..20).map(|i| before + i));
    // Graph holds alerts of that past too (in a real tenant, the same ones).
    h.graph.add_alerts(6, before);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();
    assert_eq!(h.sink.rows("McasAlerts_CL").len(), 20);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // After the switch: alerts raised from now on.
    let ours = h.graph.add_alerts(9, now_ms() - 100);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (ok, out, err) =
        common::run_cli(&h, &["run", "--once"], &[("CAS_ALERTS_SOURCE", "graph")]).await;
    assert!(ok, "{out}{err}");
    let rows = h.sink.rows("McasAlerts_CL");
    let from_graph: Vec<String> = rows
        .iter()
        .filter(|r| {
            r["SystemAlertId"]
                .as_str()
                .is_some_and(|s| s.starts_with("ca"))
        })
        .map(|r| r["VendorOriginalId"].as_str().unwrap().to_string())
        .collect();
    let mut expected = ids_of(&ours);
    expected.sort();
    let mut got = from_graph.clone();
    got.sort();
    assert_eq!(
        got, expected,
        "the new alerts once, none of the past again: {out}"
    );
    assert_eq!(rows.len(), 20 + ours.len());
}

/// Resolutions reach Sentinel within two runs on a tenant with 3,000 Cloud Apps alerts
/// in `alerts_v2`: the change moves `lastUpdateDateTime`, which the next run's window
/// reads, however many alerts the window holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_resolutions_on_a_busy_tenant_arrive_within_two_runs() {
    use cas_sentinel::testing::config::ApiSource;
    use cas_sentinel::testing::local::{resolution_latency, Resolutions};
    let h = harness(
        "graph-resolution-latency",
        &[("CAS_DATA_TYPES", "alerts"), ("CAS_ALERTS_SOURCE", "graph")],
        SimConfig::default(),
    )
    .await;
    let tick = Duration::from_secs(5);
    let l = resolution_latency(
        &h,
        Resolutions {
            source: ApiSource::Graph,
            alerts: 3_000,
            run_for: Duration::from_secs(20),
            resolve_every: Duration::from_secs(1),
            tick_every: tick,
        },
    )
    .await
    .unwrap();
    eprintln!("{l}");
    assert_eq!(l.missing, 0, "{l}");
    assert!(l.records >= 15, "{l}");
    assert!(l.p95_ms < 2 * tick.as_millis() as i64 + 2_000, "{l}");
}
