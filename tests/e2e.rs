//! End to end: the simulated tenant, the real handler process driven as the Functions
//! host drives it, real Azurite queues and blobs, and the Logs Ingestion simulator.

mod common;

use cas_sentinel::testing::batch::envelope::Envelope;
use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use common::{assert_exactly_once, harness};
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_created_across_ticks_arrive_exactly_once_even_when_delivered_twice() {
    let mut h = harness(
        "alerts-exactly-once",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let mut expected = Vec::new();
    // History within the lookback: 230 alerts, 130 of them in one millisecond, so CAS's
    // 100-record pages split that millisecond twice.
    let base = now_ms() - 3_600_000;
    expected.extend(h.cas.add_alerts((0..100).map(|i| base + i)));
    expected.extend(h.cas.add_alerts((0..130).map(|_| base + 500)));
    for tick in 0..4 {
        if tick > 0 {
            // New alerts, in groups sharing a millisecond, raised within the settle delay.
            let now = now_ms();
            expected.extend(h.cas.add_alerts((0..37).map(|i| now - 300 + i % 4)));
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        h.host.duplicate_deliveries = tick % 2 == 1;
        let (ok, logs) = h.host.tick(tick == 3).await.unwrap();
        assert!(ok, "PollCas failed: {logs:?}");
        let d = h.host.drain(DRAIN).await.unwrap();
        assert_eq!(d.failed, 0, "tick {tick}: {d:?}");
    }
    let rows = h.sink.rows("McasAlerts_CL");
    assert_exactly_once(&rows, "VendorOriginalId", &expected);
    assert!(h.cas.stats().max_in_any_minute <= 30);
    h.kill_handler().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_message_adds_no_rows() {
    let h = harness(
        "replay-no-dup",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let ids = h.cas.add_alerts((0..50).map(|i| now_ms() - 600_000 + i));
    assert!(h.host.tick(false).await.unwrap().0);
    // Keep a copy of each message as enqueued, deliver, then put the copies back.
    let msgs = h.queue.peek(32).await.unwrap();
    assert!(!msgs.is_empty());
    h.host.drain(DRAIN).await.unwrap();
    for raw in &msgs {
        h.queue.send_raw(raw.clone()).await.unwrap();
    }
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!((d.succeeded, d.failed), (msgs.len() as u64, 0));
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_with_shared_milliseconds_and_late_events_arrive_exactly_once() {
    let h = harness(
        "activities-exactly-once",
        &[("CAS_DATA_TYPES", "activities"), ("CAS_SCAN_LIMIT", "500")],
        SimConfig::default(),
    )
    .await;
    let base = now_ms() - 7_200_000;
    let mut expected = Vec::new();
    // 3,000 activities, every 700 of them sharing one `created` millisecond (wider than a
    // scan page), each having happened up to 9 minutes before CAS stored it.
    expected.extend(
        h.cas
            .add_activities((0..3000).map(|i| base + (i / 700) * 1000), |n| {
                (n as i64 % 10) * 60_000
            }),
    );
    assert!(h.host.tick(false).await.unwrap().0);
    h.host.drain(DRAIN).await.unwrap();
    let now = now_ms();
    expected.extend(
        h.cas
            .add_activities((0..600).map(|i| now - 900 + i % 3), |_| 300_000),
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(h.host.tick(false).await.unwrap().0);
    h.host.drain(DRAIN).await.unwrap();
    assert_exactly_once(&h.sink.rows("McasActivity_CL"), "ReportId", &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_keeps_failing_ends_in_the_poison_queue_intact() {
    use cas_sentinel::testing::sentinel::sim::IngestFault;
    let h = harness(
        "poison",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    h.cas.add_alerts((0..10).map(|i| now_ms() - 60_000 + i));
    // A missing role: 403 on every call, which is not retried within an invocation.
    h.sink
        .inject(std::iter::repeat_n(IngestFault::Status(403), 5));
    assert!(h.host.tick(false).await.unwrap().0);
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!((d.failed, d.poisoned, d.succeeded), (5, 1, 0), "{d:?}");
    let poison = h.poison.peek(32).await.unwrap();
    assert_eq!(poison.len(), 1);
    let text = cas_sentinel::testing::storage::queue::decode_stored(&poison[0]).unwrap();
    assert_eq!(
        Envelope::parse(&text).unwrap().count,
        10,
        "the poisoned message is the batch, unchanged"
    );
    assert!(h.sink.rows("McasAlerts_CL").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_token_auth_and_run_once_do_a_whole_cycle_without_the_host() {
    let cas = SimConfig {
        legacy_token: Some("legacy-secret".into()),
        accept_entra: false,
        ..SimConfig::default()
    };
    let h = harness(
        "run-once",
        &[
            ("CAS_DATA_TYPES", "alerts,discovery"),
            ("CAS_API_TOKEN", "legacy-secret"),
        ],
        cas,
    )
    .await;
    h.kill_handler().await;
    let ids = h.cas.add_alerts((0..120).map(|i| now_ms() - 300_000 + i));
    // Discovery, named in CAS_DATA_TYPES, reads Graph with the managed identity even
    // though CAS takes the legacy token.
    h.graph.add_report(
        "Global View",
        (0..3)
            .map(|i| cas_sentinel::testing::graph::sim::app(100 + i, "App", "cloudStorage", 2, 1))
            .collect(),
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
        .args(["run", "--once"])
        .env_clear()
        .envs(h.handler_env())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("alerts: window") && stdout.contains("120 records"),
        "{stdout}"
    );
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &ids);
    let shadow = h.sink.rows("McasShadowItReporting_CL");
    assert_eq!(
        shadow.len(),
        3 * (1 + 2 + 1),
        "3 apps, each with 2 users and 1 IP"
    );
    assert!(
        shadow.iter().all(|r| r.get("MappingIssues").is_none()),
        "{shadow:?}"
    );
    assert!(
        !stdout.contains("legacy-secret"),
        "the token never appears in output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_storms_lose_nothing_and_resolved_alerts_arrive_again_as_new_rows() {
    use cas_sentinel::testing::cas::sim::Fault;
    let h = harness(
        "storms-and-updates",
        &[
            ("CAS_DATA_TYPES", "alerts,activities"),
            ("CAS_ALERT_UPDATE_INTERVAL", "PT0S"),
            ("CAS_SCAN_LIMIT", "500"),
        ],
        SimConfig::default(),
    )
    .await;
    let base = now_ms() - 1_800_000;
    let alerts = h.cas.add_alerts((0..300).map(|i| base + i / 10));
    let activities = h
        .cas
        .add_activities((0..2_000).map(|i| base + i / 40), |n| {
            (n as i64 % 9) * 60_000
        });
    h.cas.inject([
        Fault::RetryAfter(1),
        Fault::Status(502),
        Fault::Pass,
        Fault::RetryAfter(1),
        Fault::Status(503),
        Fault::Pass,
        Fault::Status(504),
        Fault::Pass,
        Fault::RetryAfter(1),
    ]);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &alerts);
    assert_exactly_once(&h.sink.rows("McasActivity_CL"), "ReportId", &activities);

    for id in &alerts[..5] {
        h.cas.set_alert_state(id, 2, 2);
    }
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(
        ok && logs.iter().any(|l| l.contains("5 changed alerts")),
        "{logs:?}"
    );
    h.host.drain(DRAIN).await.unwrap();
    let rows = h.sink.rows("McasAlerts_CL");
    assert_eq!(rows.len(), 305, "one new row per change");
    let resolved: Vec<_> = rows.iter().filter(|r| r["Status"] == "Resolved").collect();
    assert_eq!(resolved.len(), 5);
    assert!(
        resolved
            .iter()
            .all(|r| r["TimeGenerated"] != r["StartTime"]),
        "TimeGenerated is when the change was seen"
    );
    assert!(h.cas.stats().max_in_any_minute <= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_outlives_its_storage_sas_renews_it() {
    // The handler mints account SAS tokens from the connection string's key; with a
    // 10-second lifetime, a process still serving 12 seconds later must have renewed it
    // (Azurite refuses an expired SAS with 403).
    let h = harness(
        "sas-renewal",
        &[
            ("CAS_DATA_TYPES", "alerts"),
            ("CAS_STORAGE_SAS_LIFETIME", "PT10S"),
        ],
        SimConfig::default(),
    )
    .await;
    let mut expected = h.cas.add_alerts((0..20).map(|i| now_ms() - 60_000 + i));
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    assert_eq!(h.host.drain(DRAIN).await.unwrap().failed, 0);
    tokio::time::sleep(Duration::from_secs(12)).await;
    expected.extend(h.cas.add_alerts((0..20).map(|i| now_ms() - 5_000 + i)));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "PollCas after the first SAS expired: {logs:?}");
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(d.failed, 0, "{d:?}");
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_snapshot_cut_short_is_finished_by_the_next_run_and_written_once() {
    use cas_sentinel::testing::graph::sim::{app, GraphFault};
    let h = harness(
        "discovery-snapshot",
        &[("CAS_DATA_TYPES", "discovery")],
        SimConfig::default(),
    )
    .await;
    h.graph.add_report(
        "Global View",
        (0..7)
            .map(|n| app(n, "App", "cloudStorage", 5, 2))
            .collect(),
    );
    h.graph.add_report(
        "Marketing Department",
        (10..14).map(|n| app(n, "App", "crm", 1, 6)).collect(),
    );
    // Graph throttles half-way with a wait longer than the invocation has left: the run
    // stops there, as an ordinary incomplete run.
    h.graph
        .inject(std::iter::repeat_n(GraphFault::Pass, 12).chain([GraphFault::RetryAfter(3600)]));
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("discovery") && l.contains("incomplete")),
        "{logs:?}"
    );
    h.host.drain(DRAIN).await.unwrap();
    let part = h.sink.rows("McasShadowItReporting_CL").len();
    assert!(part > 0, "what was read before the stop is written");
    for _ in 0..2 {
        let (ok, logs) = h.host.tick(false).await.unwrap();
        assert!(ok, "{logs:?}");
        h.host.drain(DRAIN).await.unwrap();
    }
    let rows = h.sink.rows("McasShadowItReporting_CL");
    let expected = 7 * (1 + 5 + 2) + 4 * (1 + 1 + 6);
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["ReportId"].as_str().unwrap().to_string())
        .collect();
    assert_exactly_once(&rows, "ReportId", &ids);
    assert_eq!(rows.len(), expected, "{part} rows before the stop");
    let snapshots = common::counts(&rows, "TimeGenerated");
    assert_eq!(
        snapshots.len(),
        1,
        "one snapshot, finished with its own time: {snapshots:?}"
    );
}

/// A resolution reaches Sentinel on the next run, found by its `resolutionDate`, though
/// the full re-check of the watch window is an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_arrives_on_the_next_run_not_at_the_next_recheck() {
    let h = harness(
        "e2e-resolution-by-date",
        &[
            ("CAS_DATA_TYPES", "alerts"),
            ("CAS_ALERT_UPDATE_INTERVAL", "PT1H"),
        ],
        SimConfig::default(),
    )
    .await;
    let ids = h.cas.add_alerts((0..30).map(|i| now_ms() - 60_000 + i));
    assert!(h.host.tick(false).await.unwrap().0);
    h.host.drain(DRAIN).await.unwrap();
    assert!(
        h.cas.set_alert_state(&ids[7], 1, 2),
        "resolved in the portal"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(DRAIN).await.unwrap();
    let rows = h.sink.rows("McasAlerts_CL");
    let states: Vec<&str> = rows
        .iter()
        .filter(|r| r["VendorOriginalId"] == ids[7].as_str())
        .map(|r| r["Status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["New", "Resolved"], "{logs:?}");
    assert_eq!(rows.len(), 31, "only the resolved alert again");
}

/// On a busy tenant (1,500 alerts in the watch window, re-checked without pause, which at
/// 30 requests a minute keeps every run going to its budget) a resolution reaches Sentinel
/// within about half a minute: the `resolutionDate` window is read first in each run and
/// again every 30 s of a long one. Without the relisting a resolution waits for the run to
/// end (45 s here, minutes deployed); without the window, for a whole pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolutions_on_a_busy_tenant_arrive_within_two_runs() {
    use cas_sentinel::testing::config::ApiSource;
    use cas_sentinel::testing::local::{resolution_latency, Resolutions};
    let h = harness(
        "e2e-resolution-latency",
        &[
            ("CAS_DATA_TYPES", "alerts"),
            ("CAS_LOOKBACK", "P7D"),
            ("CAS_ALERT_UPDATE_INTERVAL", "PT1S"),
            ("CAS_INVOCATION_BUDGET", "PT45S"),
        ],
        SimConfig::default(),
    )
    .await;
    let tick = Duration::from_secs(15);
    let l = resolution_latency(
        &h,
        Resolutions {
            source: ApiSource::Cas,
            alerts: 1_500,
            run_for: Duration::from_secs(45),
            resolve_every: Duration::from_secs(3),
            tick_every: tick,
        },
    )
    .await
    .unwrap();
    eprintln!("{l}");
    assert_eq!(l.missing, 0, "{l}");
    assert!(l.records >= 12, "{l}");
    assert!(l.p95_ms < 35_000, "{l}");
}
