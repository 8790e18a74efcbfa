//! The CAS side against the simulated tenant, in process: paging, windows, overlap,
//! scan resumption, filters, alert changes, errors and throttling (discovery, which
//! reads Microsoft Graph, is in graph_discovery.rs).

use cas_sentinel::testing::cas::pull::{pull, Pull};
use cas_sentinel::testing::cas::sim::{client_settings, CasSim, Fault, SimConfig};
use cas_sentinel::testing::cas::Cursor;
use cas_sentinel::testing::cas::{CasAuth, CasClient, CasError};
use cas_sentinel::testing::config::CasSettings;
use cas_sentinel::testing::model::{now_ms, DataType};
use cas_sentinel::testing::retry::Deadline;
use cas_sentinel::testing::secret::Secret;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

const TOKEN: &str = "sim-legacy-token";

async fn tenant(config: SimConfig) -> (Arc<CasSim>, Url) {
    CasSim::start(SimConfig {
        legacy_token: Some(TOKEN.into()),
        ..config
    })
    .await
}

/// Settings as the handler would read them, with these overrides.
fn settings(url: &Url, extra: &[(&str, &str)]) -> CasSettings {
    client_settings(url, extra)
}

/// A client without the 30/min pacing, for volume tests against a tenant that allows more.
fn fast_client(url: &Url) -> CasClient {
    CasClient::new(
        reqwest::Client::new(),
        url.clone(),
        CasAuth::LegacyToken(Secret::new(TOKEN)),
    )
    .with_rate_limit(100_000, Duration::from_secs(60))
}

fn client(url: &Url) -> CasClient {
    CasClient::new(
        reqwest::Client::new(),
        url.clone(),
        CasAuth::LegacyToken(Secret::new(TOKEN)),
    )
}

fn minute() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["_id"].as_str().unwrap().to_string())
        .collect()
}

/// Pulls until the cursor stops moving; returns every record and the pulls made.
async fn pull_all(
    c: &CasClient,
    cas: &CasSettings,
    dt: DataType,
    mut cursor: Option<Cursor>,
) -> (Vec<Value>, Cursor) {
    let mut all = Vec::new();
    for _ in 0..20 {
        let p: Pull = pull(c, cas, dt, cursor.as_ref(), now_ms(), minute())
            .await
            .unwrap();
        all.extend(p.records);
        let done = p.complete && p.error.is_none();
        cursor = Some(p.cursor);
        if done {
            break;
        }
    }
    (all, cursor.unwrap())
}

fn assert_once(got: &[String], expected: &[String]) {
    let mut g = got.to_vec();
    g.sort();
    let before = g.len();
    g.dedup();
    assert_eq!(before, g.len(), "{} duplicates", before - g.len());
    let mut e = expected.to_vec();
    e.sort();
    let missing = e.iter().filter(|id| g.binary_search(id).is_err()).count();
    assert_eq!(missing, 0, "{missing} of {} missing", e.len());
    assert_eq!(g.len(), e.len());
}

#[tokio::test]
async fn ten_thousand_alerts_sharing_milliseconds_across_pages_arrive_once() {
    let (sim, url) = tenant(SimConfig {
        per_minute: 100_000,
        ..Default::default()
    })
    .await;
    let base = now_ms() - 3_600_000;
    // 10,000 alerts; 2,500 of them in one millisecond, which spans 25 pages, and the
    // whole set needs the lower bound moved past the 5,000-record skip limit.
    let mut expected = sim.add_alerts((0..7_500).map(|i| base + i / 3));
    expected.extend(sim.add_alerts((0..2_500).map(|_| base + 1_000)));
    let cas = settings(&url, &[("CAS_ALERT_UPDATES", "off")]);
    let c = fast_client(&url);
    let (got, _) = pull_all(&c, &cas, DataType::Alerts, None).await;
    assert_once(&ids(&got), &expected);
    // Moving the lower bound re-reads the millisecond it lands in (the tie order of
    // records in one millisecond is not promised, so skipping into it could lose some).
    eprintln!(
        "CAS requests for 10,000 alerts, 2,503 in one millisecond: {}",
        c.requests_sent()
    );
    assert!(c.requests_sent() <= 130, "{} requests", c.requests_sent());

    let (sim, url) = tenant(SimConfig {
        per_minute: 100_000,
        ..Default::default()
    })
    .await;
    let expected = sim.add_alerts((0..10_000).map(|i| base + i));
    let c = fast_client(&url);
    let (got, _) = pull_all(&c, &cas_for(&url), DataType::Alerts, None).await;
    assert_once(&ids(&got), &expected);
    eprintln!(
        "CAS requests for 10,000 alerts, distinct times: {}",
        c.requests_sent()
    );
    assert!(c.requests_sent() <= 101, "{} requests", c.requests_sent());
}

fn cas_for(url: &Url) -> CasSettings {
    settings(url, &[("CAS_ALERT_UPDATES", "off")])
}

#[tokio::test]
async fn twenty_thousand_activities_with_late_events_and_shared_created_arrive_once() {
    let (sim, url) = tenant(SimConfig {
        per_minute: 100_000,
        ..Default::default()
    })
    .await;
    let base = now_ms() - 3_600_000;
    // Every 1,500 activities share a `created` millisecond (scan pages hold back the
    // trailing ones), each happened up to 20 minutes before CAS stored it.
    let expected = sim.add_activities((0..20_000).map(|i| base + (i / 1_500) * 7), |n| {
        (n as i64 % 20) * 60_000
    });
    let cas = settings(&url, &[]);
    let c = fast_client(&url);
    let (got, _) = pull_all(&c, &cas, DataType::Activities, None).await;
    assert_once(&ids(&got), &expected);
    eprintln!(
        "CAS requests for 20,000 activities (scan limit 5000): {}",
        c.requests_sent()
    );

    let (sim, url) = tenant(SimConfig {
        per_minute: 100_000,
        ..Default::default()
    })
    .await;
    let expected = sim.add_activities((0..10_000).map(|i| base + i), |_| 0);
    let c = fast_client(&url);
    let (got, _) = pull_all(&c, &settings(&url, &[]), DataType::Activities, None).await;
    assert_once(&ids(&got), &expected);
    eprintln!(
        "CAS requests for 10,000 activities (scan limit 5000): {}",
        c.requests_sent()
    );
    assert!(c.requests_sent() <= 3);
}

#[tokio::test]
async fn records_made_visible_late_within_the_overlap_are_caught_and_nothing_repeats() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let now = now_ms();
    let mut expected = sim.add_alerts((0..30).map(|i| now - 10_000 + i));
    expected.extend(sim.add_activities((0..30).map(|i| now - 10_000 + i), |_| 1000));
    let cas = settings(
        &url,
        &[("CAS_OVERLAP", "PT1M"), ("CAS_ALERT_UPDATES", "off")],
    );
    let c = client(&url);
    let (mut got, a_cur) = pull_all(&c, &cas, DataType::Alerts, None).await;
    let (more, b_cur) = pull_all(&c, &cas, DataType::Activities, None).await;
    got.extend(more);
    // Records that CAS shows only now, with positions 30 s before the last pull's end.
    expected.extend(sim.add_alerts((0..5).map(|_| now - 30_000)));
    expected.extend(sim.add_activities((0..5).map(|_| now - 30_000), |_| 0));
    let (more, _) = pull_all(&c, &cas, DataType::Alerts, Some(a_cur)).await;
    got.extend(more);
    let (more, _) = pull_all(&c, &cas, DataType::Activities, Some(b_cur)).await;
    got.extend(more);
    assert_once(&ids(&got), &expected);
}

#[tokio::test]
async fn an_interrupted_scan_resumes_where_cas_said_and_loses_nothing() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let expected = sim.add_activities((0..4_000).map(|i| now_ms() - 600_000 + i / 2), |_| 0);
    let cas = settings(&url, &[("CAS_SCAN_LIMIT", "500")]);
    let c = client(&url);
    sim.inject([Fault::Pass, Fault::Pass, Fault::Status(400)]);
    let first = pull(&c, &cas, DataType::Activities, None, now_ms(), minute())
        .await
        .unwrap();
    assert!(!first.complete && first.error.is_some());
    assert!(
        first.cursor.scan.is_some(),
        "the scan's next filters are kept"
    );
    assert!(
        first.records.len() >= 900,
        "two pages kept: {}",
        first.records.len()
    );
    let (rest, cursor) = pull_all(&c, &cas, DataType::Activities, Some(first.cursor)).await;
    let mut got = ids(&first.records);
    got.extend(ids(&rest));
    assert_once(&got, &expected);
    assert!(cursor.scan.is_none());
}

#[tokio::test]
async fn an_interrupted_scan_of_sixty_thousand_and_an_overlap_holding_them_all_repeat_nothing() {
    // Earlier releases kept at most 50,000 overlap ids in a cursor and dropped the oldest:
    // a window re-reading an overlap that held more sent those records again.
    let (sim, url) = tenant(SimConfig {
        per_minute: 1_000_000,
        ..Default::default()
    })
    .await;
    let now = now_ms();
    let expected = sim.add_activities((0..60_000).map(|i| now - 1_200_000 + i / 60), |_| 0);
    let cas = settings(&url, &[("CAS_SCAN_LIMIT", "5000"), ("CAS_OVERLAP", "PT1H")]);
    let c = fast_client(&url);
    // The first scan stops after six pages (30,000 records).
    sim.inject((0..6).map(|_| Fault::Pass).chain([Fault::Status(400)]));
    let first = pull(&c, &cas, DataType::Activities, None, now_ms(), minute())
        .await
        .unwrap();
    assert!(!first.complete && first.cursor.scan.is_some());
    // Scan pages hold back the records sharing their last `created`: a little under 5,000 each.
    assert!(
        (29_000..=30_000).contains(&first.records.len()),
        "{}",
        first.records.len()
    );
    let (rest, cursor) = pull_all(&c, &cas, DataType::Activities, Some(first.cursor)).await;
    assert_eq!(
        cursor.recent.len(),
        60_000,
        "every id in the overlap is kept"
    );
    // The next window re-reads the whole hour: all 60,000 are listed again, none is new.
    let again = pull(
        &c,
        &cas,
        DataType::Activities,
        Some(&cursor),
        now_ms(),
        minute(),
    )
    .await
    .unwrap();
    assert!(again.complete && again.error.is_none());
    assert_eq!(
        again.records.len(),
        0,
        "nothing from the overlap is sent twice"
    );
    let mut got = ids(&first.records);
    got.extend(ids(&rest));
    assert_once(&got, &expected);
}

#[tokio::test]
async fn throttling_and_server_errors_are_waited_out_and_nothing_is_lost() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let expected = sim.add_alerts((0..450).map(|i| now_ms() - 600_000 + i / 7));
    sim.inject([
        Fault::RetryAfter(1),
        Fault::RetryAfter(1),
        Fault::Pass,
        Fault::Status(502),
        Fault::Status(503),
        Fault::Pass,
        Fault::Status(504),
        Fault::RetryAfter(1),
    ]);
    let cas = settings(&url, &[("CAS_ALERT_UPDATES", "off")]);
    let c = client(&url);
    let (got, _) = pull_all(&c, &cas, DataType::Alerts, None).await;
    assert_once(&ids(&got), &expected);
    let stats = sim.stats();
    assert_eq!(stats.faulted, 6);
    assert!(stats.max_in_any_minute <= 30, "{stats:?}");
}

#[tokio::test]
async fn a_throttled_error_text_is_treated_as_throttling_not_as_a_bad_request() {
    let (sim, url) = tenant(SimConfig::default()).await;
    sim.add_alerts([now_ms() - 5_000]);
    sim.inject([Fault::ThrottledText]);
    let cas = settings(&url, &[("CAS_ALERT_UPDATES", "off")]);
    let p = pull(
        &client(&url),
        &cas,
        DataType::Alerts,
        None,
        now_ms(),
        Deadline::after(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    let err = p
        .error
        .expect("the run's budget ends during the minute-long back-off");
    assert!(matches!(err, CasError::OutOfTime { .. }), "{err}");
    assert!(err.to_string().contains("throttled"), "{err}");
}

#[tokio::test]
async fn refused_credentials_name_the_likely_cause() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let wrong = CasClient::new(
        reqwest::Client::new(),
        url.clone(),
        CasAuth::LegacyToken(Secret::new("wrong")),
    );
    let cas = settings(&url, &[("CAS_ALERT_UPDATES", "off")]);
    let err = pull(&wrong, &cas, DataType::Alerts, None, now_ms(), minute())
        .await
        .unwrap()
        .error
        .unwrap();
    assert!(
        err.to_string().contains("401") && err.to_string().contains("CAS_API_TOKEN"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the token is not echoed"
    );
    sim.inject([Fault::Status(403)]);
    let err = pull(
        &client(&url),
        &cas,
        DataType::Alerts,
        None,
        now_ms(),
        minute(),
    )
    .await
    .unwrap()
    .error
    .unwrap();
    assert!(err.to_string().contains("Investigation.Read"), "{err}");
}

#[tokio::test]
async fn extra_filters_are_anded_with_the_window_on_every_page() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let all = sim.add_alerts((0..400).map(|i| now_ms() - 600_000 + i));
    let cas = settings(
        &url,
        &[
            ("CAS_ALERTS_FILTER", r#"{"severity":{"eq":[2]}}"#),
            ("CAS_ALERT_UPDATES", "off"),
        ],
    );
    let (got, _) = pull_all(&client(&url), &cas, DataType::Alerts, None).await;
    assert_eq!(got.len(), 100, "one alert in four is high severity");
    assert!(got.iter().all(|a| a["severityValue"] == 2));
    assert!(all.len() == 400);

    let acts = sim.add_activities((0..1_200).map(|i| now_ms() - 600_000 + i), |_| 0);
    let cas = settings(
        &url,
        &[
            ("CAS_SCAN_LIMIT", "500"),
            (
                "CAS_ACTIVITIES_FILTER",
                r#"{"user.username":{"eq":["ada@contoso.example"]}}"#,
            ),
        ],
    );
    let (got, _) = pull_all(&client(&url), &cas, DataType::Activities, None).await;
    assert_eq!(
        got.len(),
        acts.len() / 5,
        "the filter holds on every scan page"
    );
}

#[tokio::test]
async fn alerts_that_change_after_forwarding_are_forwarded_again_unless_turned_off() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let ids_ = sim.add_alerts((0..20).map(|i| now_ms() - 60_000 + i));
    let on = settings(&url, &[("CAS_ALERT_UPDATE_INTERVAL", "PT0S")]);
    let off = settings(&url, &[("CAS_ALERT_UPDATES", "off")]);
    let c = client(&url);
    let first = pull(&c, &on, DataType::Alerts, None, now_ms(), minute())
        .await
        .unwrap();
    let first_off = pull(&c, &off, DataType::Alerts, None, now_ms(), minute())
        .await
        .unwrap();
    assert_eq!(first.records.len(), 20);
    assert!(first.updates.is_empty());
    // An analyst resolves three alerts.
    for id in &ids_[..3] {
        assert!(sim.set_alert_state(id, 2, 2));
    }
    let second = pull(
        &c,
        &on,
        DataType::Alerts,
        Some(&first.cursor),
        now_ms(),
        minute(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&second.updates), ids_[..3].to_vec());
    assert!(second.records.is_empty());
    // Others are merely opened (statusValue 0 → 1, read) or archived: not a change of the
    // alert's state, so nothing is forwarded again.
    for id in &ids_[5..9] {
        assert!(sim.set_alert_state(id, 1, 0));
    }
    assert!(sim.set_alert_state(&ids_[9], 2, 0));
    let third = pull(
        &c,
        &on,
        DataType::Alerts,
        Some(&second.cursor),
        now_ms(),
        minute(),
    )
    .await
    .unwrap();
    assert!(
        third.updates.is_empty(),
        "a change is forwarded once, and reading an alert is no change: {:?}",
        ids(&third.updates)
    );
    let second_off = pull(
        &c,
        &off,
        DataType::Alerts,
        Some(&first_off.cursor),
        now_ms(),
        minute(),
    )
    .await
    .unwrap();
    assert!(second_off.updates.is_empty() && second_off.records.is_empty());
}

#[tokio::test]
async fn identity_alerts_are_left_out_only_when_asked() {
    let (sim, url) = tenant(SimConfig::default()).await;
    let base = now_ms() - 60_000;
    let plain = sim.add_alerts((0..5).map(|i| base + i));
    let identity = sim.add_alerts_with((0..3).map(|i| base + 10 + i), |a| {
        a["title"] = serde_json::json!("Honeytoken activity");
        a["entities"] = serde_json::json!([
            {"type": "account", "id": "u1", "label": "ada", "pa": "ada@contoso.example"},
            {"type": "service", "id": 20940, "label": "Active Directory"}
        ]);
    });
    let c = client(&url);
    let all = pull(
        &c,
        &settings(&url, &[]),
        DataType::Alerts,
        None,
        now_ms(),
        minute(),
    )
    .await
    .unwrap();
    assert_eq!(all.records.len(), 8, "forwarded by default");
    let skip = settings(&url, &[("CAS_SKIP_IDENTITY_ALERTS", "on")]);
    let some = pull(&c, &skip, DataType::Alerts, None, now_ms(), minute())
        .await
        .unwrap();
    assert_eq!(ids(&some.records), plain);
    assert!(identity.iter().all(|id| !ids(&some.records).contains(id)));
    assert!(some.complete, "the window still completes past them");
}
