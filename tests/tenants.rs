//! Several tenants from one deployment (`CAS_TENANTS`), end to end: three simulated
//! Defender for Cloud Apps tenants behind one handler process, one Azurite and one Logs
//! Ingestion simulator, one of them with a credential its tenant refuses.

mod common;

use cas_sentinel::testing::cas::sim::{CasSim, SimConfig};
use cas_sentinel::testing::model::now_ms;
use cas_sentinel::testing::sentinel::sim::IngestionSim;
use common::{assert_exactly_once, harness, run_cli};
use serde_json::Value;
use std::time::{Duration, Instant};

const DRAIN: Duration = Duration::from_secs(120);
const CONTOSO_ID: &str = "11111111-1111-4111-8111-111111111111";
const FABRIKAM_ID: &str = "22222222-2222-4222-8222-222222222222";

/// The rows of `table` that came from `tenant`.
fn of(rows: &[Value], tenant: &str) -> Vec<Value> {
    rows.iter()
        .filter(|r| r["CasTenant"] == tenant)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_one_refused_the_healthy_ones_arrive_exactly_once_and_the_broken_one_is_named(
) {
    // fabrikam: a tenant of its own. broken: a tenant that takes only its own legacy token,
    // which the deployment holds wrong (a rotated secret no one updated).
    let (contoso, contoso_url) = CasSim::start(SimConfig::default()).await;
    let (fabrikam, fabrikam_url) = CasSim::start(SimConfig::default()).await;
    // fabrikam's rows go to a workspace of its own (its own Logs Ingestion endpoint).
    let (fabrikam_sink, fabrikam_sink_url) = IngestionSim::start(None, true).await;
    let (broken, broken_url) = CasSim::start(SimConfig {
        legacy_token: Some("the-current-token".into()),
        accept_entra: false,
        ..SimConfig::default()
    })
    .await;
    let mut h = harness(
        "three-tenants",
        &[
            ("CAS_TENANTS", "contoso,fabrikam,broken"),
            ("CAS_DATA_TYPES", "alerts,activities"),
            ("contoso__CAS_API_URL", contoso_url.as_str()),
            ("contoso__AZURE_TENANT_ID", CONTOSO_ID),
            ("fabrikam__CAS_API_URL", fabrikam_url.as_str()),
            ("fabrikam__AZURE_TENANT_ID", FABRIKAM_ID),
            (
                "fabrikam__SENTINEL_INGESTION_ENDPOINT",
                fabrikam_sink_url.as_str(),
            ),
            ("broken__CAS_API_URL", broken_url.as_str()),
            ("broken__CAS_API_TOKEN", "a-revoked-token"),
        ],
        SimConfig::default(),
    )
    .await;
    // The simulators number their records alike, so the two healthy tenants hold alerts
    // and activities with the same ids and, some, the same bytes: each tenant's must
    // still arrive, once.
    let base = now_ms() - 3_600_000;
    let mut alerts = [Vec::new(), Vec::new()];
    let mut activities = [Vec::new(), Vec::new()];
    for (i, sim) in [&contoso, &fabrikam].into_iter().enumerate() {
        alerts[i].extend(sim.add_alerts((0..150).map(|n| base + n * 7)));
        activities[i].extend(sim.add_activities((0..400).map(|n| base + n * 3), |_| 0));
    }
    broken.add_alerts((0..20).map(|n| base + n));
    for tick in 0..3 {
        if tick > 0 {
            for (i, sim) in [&contoso, &fabrikam].into_iter().enumerate() {
                let now = now_ms();
                alerts[i].extend(sim.add_alerts((0..11).map(|n| now - 400 + n)));
                activities[i].extend(sim.add_activities((0..23).map(|n| now - 400 + n), |_| 0));
            }
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        h.host.duplicate_deliveries = tick == 1;
        let started = Instant::now();
        let (ok, logs) = h.host.tick(false).await.unwrap();
        // The poll fails, for the broken tenant alone, and names it.
        assert!(!ok, "a refused tenant fails the invocation: {logs:?}");
        let failed: Vec<&String> = logs
            .iter()
            .filter(|l| l.contains("FAILED") || l.contains("tenant broken: "))
            .collect();
        assert!(
            logs.iter()
                .any(|l| l == "PollCas: 1 of 3 tenants failed: broken"),
            "{logs:?}"
        );
        assert!(
            failed.iter().all(|l| l.contains("broken")),
            "only the broken tenant fails: {logs:?}"
        );
        // Nothing waits for it: a refused token fails at its first request, and the
        // others' runs take what their own records take.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tick {tick} took {:?}",
            started.elapsed()
        );
        let d = h.host.drain(DRAIN).await.unwrap();
        assert_eq!(d.failed, 0, "tick {tick}: {d:?}");
    }
    // Each tenant's rows went to its own endpoint, and only there.
    let both = |table: &str| -> Vec<Value> {
        let mut rows = h.sink.rows(table);
        assert!(
            of(&rows, "fabrikam").is_empty(),
            "fabrikam's {table} rows reached contoso's endpoint"
        );
        let theirs = fabrikam_sink.rows(table);
        assert!(
            theirs.iter().all(|r| r["CasTenant"] == "fabrikam"),
            "only fabrikam's rows reach its endpoint"
        );
        rows.extend(theirs);
        rows
    };
    let alert_rows = both("McasAlerts_CL");
    let activity_rows = both("McasActivity_CL");
    for (i, (name, entra)) in [("contoso", CONTOSO_ID), ("fabrikam", FABRIKAM_ID)]
        .into_iter()
        .enumerate()
    {
        let a = of(&alert_rows, name);
        assert_exactly_once(&a, "VendorOriginalId", &alerts[i]);
        let v = of(&activity_rows, name);
        assert_exactly_once(&v, "ReportId", &activities[i]);
        assert!(
            a.iter().chain(&v).all(|r| r["CasTenantId"] == entra),
            "{name}'s rows carry its Entra tenant id"
        );
    }
    assert_eq!(
        alert_rows.len() + activity_rows.len(),
        alerts
            .iter()
            .chain(&activities)
            .map(Vec::len)
            .sum::<usize>(),
        "no row without a tenant, none of the broken tenant's"
    );
    assert_eq!(
        broken.stats().requests,
        6,
        "one refused request per data type and run"
    );

    // status names the broken tenant, with the reason, and shows the others' progress.
    h.kill_handler().await;
    let (ok, out, err) = run_cli(&h, &["status"], &[]).await;
    assert!(ok, "{out}{err}");
    let broken_part = out
        .split("tenant broken")
        .nth(1)
        .expect("a part per tenant");
    assert!(
        broken_part.contains("FAILED") && broken_part.contains("401"),
        "{out}"
    );
    assert!(
        !out.split("tenant broken")
            .next()
            .unwrap()
            .contains("FAILED"),
        "{out}"
    );
    let (_, json, _) = run_cli(&h, &["status", "--json", "--tenant", "fabrikam"], &[]).await;
    let s: Value = serde_json::from_str(&json).unwrap();
    let tenants = s["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0]["tenant"], "fabrikam");
    assert_eq!(tenants[0]["last_poll"]["ok"], true);
    assert!(tenants[0]["data_types"][0]["lag_seconds"].as_i64().unwrap() < 120);

    // validate names the broken tenant's CAS check, and passes the others'.
    let (ok, out, _) = run_cli(&h, &["validate", "--json"], &[]).await;
    assert!(!ok, "{out}");
    let checks: Vec<Value> = serde_json::from_str(&out).unwrap();
    let problems: Vec<&str> = checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert!(
        !problems.is_empty() && problems.iter().all(|c| c.starts_with("broken: ")),
        "{problems:?}"
    );
    for t in ["contoso", "fabrikam"] {
        assert!(
            checks
                .iter()
                .any(|c| c["check"] == format!("{t}: CAS API") && c["ok"] == true),
            "{checks:?}"
        );
    }
    let (ok, out, err) = run_cli(&h, &["validate", "--tenant", "fabrikam"], &[]).await;
    assert!(ok, "fabrikam alone validates: {out}{err}");
    let (ok, _, err) = run_cli(&h, &["status", "--tenant", "nobody"], &[]).await;
    assert!(
        !ok && err.contains("CAS_TENANTS lists contoso,fabrikam,broken"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misnamed_tenant_setting_is_refused_at_start_naming_it() {
    let h = harness(
        "tenant-typo",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let (ok, _, err) = run_cli(
        &h,
        &["run", "--once"],
        &[
            ("CAS_TENANTS", "contoso"),
            (
                "contosso__CAS_API_URL",
                "https://x.us2.portal.cloudappsecurity.com",
            ),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("contosso__CAS_API_URL: is for tenant \"contosso\", which CAS_TENANTS does not list (contoso)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_tenants_on_keeps_the_unnamed_tenants_place_and_its_queued_messages() {
    let (fabrikam, fabrikam_url) = CasSim::start(SimConfig::default()).await;
    let mut h = harness(
        "tenants-adopt",
        &[("CAS_DATA_TYPES", "alerts,activities")],
        SimConfig::default(),
    )
    .await;
    let base = now_ms() - 3_600_000;
    let mut alerts = h.cas.add_alerts((0..120).map(|n| base + n * 5));
    let mut activities = h.cas.add_activities((0..300).map(|n| base + n * 2), |_| 0);
    // A run of the single-tenant deployment whose messages are still queued when the
    // operator turns CAS_TENANTS on.
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    assert!(h.queue.approximate_len().await.unwrap() > 0);
    h.restart_handler_with(&[
        ("CAS_TENANTS", "main,fabrikam"),
        ("CAS_UNNAMED_TENANT", "main"),
        ("fabrikam__CAS_API_URL", fabrikam_url.as_str()),
    ])
    .await
    .unwrap();
    let fab_alerts = fabrikam.add_alerts((0..40).map(|n| base + n));
    for tick in 0..2 {
        let now = now_ms();
        alerts.extend(h.cas.add_alerts((0..9).map(|n| now - 400 + n)));
        activities.extend(h.cas.add_activities((0..17).map(|n| now - 400 + n), |_| 0));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (ok, logs) = h.host.tick(false).await.unwrap();
        assert!(ok, "tick {tick}: {logs:?}");
        let d = h.host.drain(DRAIN).await.unwrap();
        assert_eq!(
            d.failed, 0,
            "tick {tick}: the old messages go to main: {d:?}"
        );
    }
    let not_fabrikam = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .filter(|r| r["CasTenant"] != "fabrikam")
            .collect()
    };
    let a = not_fabrikam(h.sink.rows("McasAlerts_CL"));
    let v = not_fabrikam(h.sink.rows("McasActivity_CL"));
    // Nothing of the unnamed tenant's is sent again, nothing after the switch is skipped.
    assert_exactly_once(&a, "VendorOriginalId", &alerts);
    assert_exactly_once(&v, "ReportId", &activities);
    // main stays the unnamed tenant in the data: its rows, before and after, carry no
    // tenant, so no query sees its alerts change tenant across the switch.
    assert!(
        a.iter().chain(&v).all(|r| r.get("CasTenant").is_none()),
        "main's rows are as before"
    );
    assert_exactly_once(
        &of(&h.sink.rows("McasAlerts_CL"), "fabrikam"),
        "VendorOriginalId",
        &fab_alerts,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_catching_up_a_backlog_does_not_hold_back_the_others_new_records() {
    // The backlog tenant answers each page in 3 s: its catch-up of 40 pages outlasts the
    // whole invocation, which the host does not start again until it ends.
    let (backlog, backlog_url) = CasSim::start(SimConfig::default()).await;
    backlog
        .hang_ms
        .store(3_000, std::sync::atomic::Ordering::Relaxed);
    let base = now_ms() - 3_600_000;
    backlog.add_activities((0..20_000).map(|n| base + n / 10), |_| 0);
    let (healthy, healthy_url) = CasSim::start(SimConfig::default()).await;
    let h = harness(
        "tenants-backlog",
        &[
            ("CAS_TENANTS", "healthy,backlog"),
            ("CAS_DATA_TYPES", "activities"),
            ("CAS_INVOCATION_BUDGET", "PT55S"),
            ("CAS_SCAN_LIMIT", "500"),
            ("backlog__CAS_API_URL", backlog_url.as_str()),
            ("healthy__CAS_API_URL", healthy_url.as_str()),
        ],
        SimConfig::default(),
    )
    .await;
    let mut expected = healthy.add_activities((0..50).map(|n| base + n), |_| 0);
    let cas = healthy.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let now = now_ms();
        cas.add_activities((0..30).map(|n| now - 200 + n), |_| 0)
    });
    let started = Instant::now();
    let (_, logs) = h.host.tick(false).await.unwrap();
    let took = started.elapsed();
    expected.extend(later.await.unwrap());
    let healthy: Vec<&String> = logs
        .iter()
        .filter(|l| l.starts_with("PollCas: tenant healthy: activities"))
        .collect();
    assert!(
        took >= Duration::from_secs(40),
        "the backlog held the run: {took:?}"
    );
    assert!(
        healthy.len() >= 2 && healthy.iter().skip(1).any(|l| l.contains(", 30 records")),
        "the healthy tenant polled again within the run and read what arrived meanwhile: {logs:?}"
    );
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(d.failed, 0, "{d:?}");
    assert_exactly_once(
        &of(&h.sink.rows("McasActivity_CL"), "healthy"),
        "ReportId",
        &expected,
    );
}
