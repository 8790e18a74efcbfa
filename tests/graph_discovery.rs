//! Discovery snapshots against the simulated Microsoft Graph, in process: reports and apps
//! across pages, users and IP addresses across pages, the caps and switches, 401, 403 and
//! 429, and snapshots interrupted part-way that finish on the next run without a row twice.

use cas_sentinel::testing::auth::sim::SimCredential;
use cas_sentinel::testing::config::DiscoverySettings;
use cas_sentinel::testing::graph::discovery::Snapshot;
use cas_sentinel::testing::graph::discovery::SnapshotCursor as Cursor;
use cas_sentinel::testing::graph::sim::{app, hostile_app, GraphFault, GraphSim, GRAPH_RESOURCE};
use cas_sentinel::testing::graph::{GraphClient, GraphError};
use cas_sentinel::testing::model::{now_ms, DataType};
use cas_sentinel::testing::retry::Deadline;
use cas_sentinel::testing::source::Source;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

fn client(url: &Url) -> GraphClient {
    GraphClient::new(reqwest::Client::new(), url.clone(), Arc::new(SimCredential))
}

fn settings(url: &Url, extra: &[(&str, &str)]) -> DiscoverySettings {
    let url = url.to_string();
    DiscoverySettings::from_lookup(&|k| {
        if k == "GRAPH_API_URL" {
            return Some(url.clone());
        }
        extra
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
}

fn minute() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

/// Reads `steps` steps at most (all when `None`) from `cursor`; the records, and the
/// cursor as the poll would have stored it after the last step.
async fn read(
    graph: &GraphClient,
    s: &DiscoverySettings,
    cursor: Option<&Cursor>,
    now: i64,
    steps: Option<usize>,
) -> Result<(Vec<Value>, Cursor), GraphError> {
    let mut snap = Snapshot::new(s, cursor, now);
    let mut stored = snap
        .intent()
        .or_else(|| cursor.cloned())
        .unwrap_or_default();
    let mut records = Vec::new();
    let mut n = 0;
    while steps.is_none_or(|max| n < max) {
        let Some(step) = snap.next(graph, minute()).await? else {
            break;
        };
        records.extend(
            step.new_records()
                .into_iter()
                .map(|t| serde_json::from_str::<Value>(t).unwrap()),
        );
        stored = snap.cursor().clone();
        n += 1;
    }
    Ok((records, stored))
}

fn kinds(records: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let key = (
            r["streamName"].as_str().unwrap().to_string(),
            r["kind"].as_str().unwrap().to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn key(r: &Value) -> String {
    let row = cas_sentinel::testing::schema::to_row(DataType::Discovery, r);
    assert!(row.get("MappingIssues").is_none(), "{row}");
    row["ReportId"].as_str().unwrap().to_string()
}

/// Two reports with apps over several pages (3 a page) and users and IPs over several
/// pages (4 a page); a third report not chosen.
async fn graph() -> (Arc<GraphSim>, Url) {
    let (sim, url) = GraphSim::start(3, 4).await;
    sim.add_report(
        "Global View",
        (0..8)
            .map(|n| app(n, &format!("App {n}"), "cloudStorage", 9, 5))
            .collect(),
    );
    sim.add_report(
        "Marketing Department",
        (20..24)
            .map(|n| app(n, &format!("App {n}"), "crm", 2, 10))
            .collect(),
    );
    sim.add_report(
        "Finance",
        vec![app(50, "Ledger", "accountingAndFinance", 1, 1)],
    );
    (sim, url)
}

#[tokio::test]
async fn a_snapshot_reads_every_chosen_report_app_user_and_ip_across_pages_once() {
    let (sim, url) = graph().await;
    let g = client(&url);
    let s = settings(
        &url,
        &[(
            "CAS_DISCOVERY_STREAMS",
            "Global View, Marketing Department, Sales",
        )],
    );
    let now = now_ms();
    let (records, cursor) = read(&g, &s, None, now, None).await.unwrap();
    let by = kinds(&records);
    let n = |r: &str, k: &str| {
        by.get(&(r.to_string(), k.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (
            n("Global View", "app"),
            n("Global View", "user"),
            n("Global View", "ipAddress")
        ),
        (8, 72, 40)
    );
    assert_eq!(
        (
            n("Marketing Department", "app"),
            n("Marketing Department", "user"),
            n("Marketing Department", "ipAddress")
        ),
        (4, 8, 40)
    );
    assert_eq!(n("Finance", "app"), 0, "not chosen");
    assert!(
        records.iter().all(|r| r["snapshotMs"] == now),
        "one TimeGenerated per snapshot"
    );
    let mut keys: Vec<String> = records.iter().map(key).collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "no row twice");

    // The Graph calls this cost: reports (1 page), apps (3 + 2 pages), and per app its
    // users and IPs (9 users = 3 pages, 5 IPs = 2 pages; 2 users = 1, 10 IPs = 3).
    assert_eq!(sim.stats().requests, 1 + 5 + 8 * (3 + 2) + 4 * (1 + 3));

    // Written once however often the timer fires: nothing until the next interval.
    let before = sim.stats().requests;
    for later in [now + 60_000, now + 3_600_000] {
        let (again, _) = read(&g, &s, Some(&cursor), later, None).await.unwrap();
        assert!(again.is_empty());
    }
    assert_eq!(
        sim.stats().requests,
        before,
        "a snapshot that is not due costs no call"
    );
    assert!(cursor.snapshot.is_none() && cursor.position_ms > now);
    let (next_day, _) = read(&g, &s, Some(&cursor), cursor.position_ms, None)
        .await
        .unwrap();
    assert_eq!(
        next_day.len(),
        records.len(),
        "the next interval takes a new snapshot"
    );
}

#[tokio::test]
async fn users_and_ips_can_be_capped_or_turned_off() {
    let (_sim, url) = graph().await;
    let g = client(&url);
    let capped = settings(
        &url,
        &[
            ("CAS_DISCOVERY_MAX_PER_APP", "6"),
            ("CAS_DISCOVERY_STREAMS", "Global View"),
        ],
    );
    let (records, _) = read(&g, &capped, None, now_ms(), None).await.unwrap();
    let by = kinds(&records);
    assert_eq!(
        by[&("Global View".into(), "user".into())],
        8 * 6,
        "9 users capped at 6 per app"
    );
    assert_eq!(by[&("Global View".into(), "ipAddress".into())], 8 * 5);
    let head = records.iter().find(|r| r["kind"] == "app").unwrap();
    assert_eq!(
        (
            head["usersListed"].as_u64(),
            head["app"]["userCount"].as_u64()
        ),
        (Some(6), Some(9))
    );

    let apps_only = settings(
        &url,
        &[
            ("CAS_DISCOVERY_USERS", "off"),
            ("CAS_DISCOVERY_IP_ADDRESSES", "off"),
        ],
    );
    let (records, _) = read(&g, &apps_only, None, now_ms(), None).await.unwrap();
    assert_eq!(records.len(), 8 + 4 + 1);
    assert!(records.iter().all(|r| r["kind"] == "app"));
}

#[tokio::test]
async fn a_snapshot_interrupted_part_way_finishes_next_run_without_a_row_twice() {
    let (sim, url) = graph().await;
    let g = client(&url);
    let s = settings(&url, &[]);
    let now = now_ms();
    let (whole, _) = read(&g, &s, None, now, None).await.unwrap();
    let mut expected: Vec<String> = whole.iter().map(key).collect();
    expected.sort();

    for stop_after in [1, 2, 3, 4, 5, 6] {
        // Run 1 stops after `stop_after` steps (a page of 3 apps each here: time ran out,
        // or the instance died after storing its cursor); run 2, later, finishes the same
        // snapshot.
        let (first, cursor) = read(&g, &s, None, now, Some(stop_after)).await.unwrap();
        assert!(cursor.snapshot.is_some());
        let (rest, done) = read(&g, &s, Some(&cursor), now + 600_000, None)
            .await
            .unwrap();
        assert!(done.snapshot.is_none());
        let mut got: Vec<String> = first.iter().chain(&rest).map(key).collect();
        got.sort();
        assert_eq!(got, expected, "stopped after {stop_after} apps");
    }

    // A stored page whose skip token Graph no longer honours: the report is read again
    // from its first page. Its first apps come again, as identical rows (which pack into
    // the batches already sent); nothing is lost.
    let (first, cursor) = read(&g, &s, None, now, Some(3)).await.unwrap();
    assert!(
        cursor.snapshot.as_ref().unwrap().page.is_some(),
        "part-way through a later page"
    );
    sim.expire_skip_tokens();
    let (rest, _) = read(&g, &s, Some(&cursor), now + 600_000, None)
        .await
        .unwrap();
    let mut got: Vec<String> = first.iter().chain(&rest).map(key).collect();
    got.sort();
    got.dedup();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn throttling_is_waited_out_and_refusals_name_their_fix() {
    let (sim, url) = graph().await;
    let g = client(&url);
    let s = settings(&url, &[("CAS_DISCOVERY_STREAMS", "Finance")]);
    sim.inject([
        GraphFault::Pass,
        GraphFault::RetryAfter(1),
        GraphFault::Status(503),
    ]);
    let start = std::time::Instant::now();
    let (records, _) = read(&g, &s, None, now_ms(), None).await.unwrap();
    assert_eq!(records.len(), 3, "Ledger, its user and its IP");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(sim.stats().faulted, 2);

    sim.set_forbidden(true);
    let err = read(&g, &s, None, now_ms(), None).await.unwrap_err();
    assert!(
        matches!(err, GraphError::Denied { status: 403, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("CloudApp-Discovery.Read.All"),
        "{err}"
    );
    sim.set_forbidden(false);

    sim.inject([GraphFault::Status(401)]);
    let err = read(&g, &s, None, now_ms(), None).await.unwrap_err();
    assert!(
        matches!(err, GraphError::Denied { status: 401, .. }),
        "{err}"
    );

    // Out of time while throttled: an ordinary stop, the snapshot continues next run.
    sim.inject([GraphFault::RetryAfter(30)]);
    let mut snap = Snapshot::new(&s, None, now_ms());
    let err = snap
        .next(&g, Deadline::after(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::OutOfTime { .. }), "{err}");
}

#[tokio::test]
async fn the_simulated_graph_refuses_what_graph_refuses() {
    let (_sim, url) = graph().await;
    let http = reqwest::Client::new();
    let apps = |period: &str| {
        url.join(&format!(
            "beta/security/dataDiscovery/cloudAppDiscovery/uploadedStreams/1000/microsoft.graph.security.aggregatedAppsDetails(period=duration'{period}')"
        ))
        .unwrap()
    };
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    let graph_token = format!("Bearer sim|{GRAPH_RESOURCE}|{expires}");
    let cas_token = format!("Bearer sim|05a65629-4c1b-48c1-a78b-804c4abdd4af|{expires}");
    let get = |u: Url, auth: Option<String>| {
        let mut r = http.get(u);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(get(apps("P7D"), None).await.unwrap()),
        401,
        "no token"
    );
    assert_eq!(
        status(get(apps("P7D"), Some(cas_token)).await.unwrap()),
        401,
        "a CAS token is not a Graph token"
    );
    assert_eq!(
        status(get(apps("P7D"), Some(graph_token.clone())).await.unwrap()),
        200
    );
    for period in ["P1D", "P14D", "PT24H"] {
        let r = get(apps(period), Some(graph_token.clone())).await.unwrap();
        assert_eq!(status(r), 400, "{period}");
    }
    let page: Value = get(apps("P30D"), Some(graph_token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 3);
    assert!(page["@odata.nextLink"]
        .as_str()
        .unwrap()
        .contains("$skiptoken="));
}

#[tokio::test]
async fn a_long_page_of_apps_is_read_a_few_apps_a_step_and_resumed_inside_the_page() {
    use cas_sentinel::testing::graph::discovery::APPS_PER_STEP;
    let (sim, url) = GraphSim::start(25, 50).await;
    sim.add_report(
        "Global View",
        (0..23).map(|n| app(n, "App", "crm", 1, 1)).collect(),
    );
    let g = client(&url);
    let s = settings(
        &url,
        &[
            ("CAS_DISCOVERY_USERS", "off"),
            ("CAS_DISCOVERY_IP_ADDRESSES", "off"),
        ],
    );
    let now = now_ms();
    let mut snap = Snapshot::new(&s, None, now);
    let mut sizes = Vec::new();
    while let Some(step) = snap.next(&g, minute()).await.unwrap() {
        sizes.push(step.new.len());
    }
    assert_eq!(
        sizes,
        vec![APPS_PER_STEP, APPS_PER_STEP, 3, 0],
        "the last step stores the finished snapshot"
    );

    let (first, cursor) = read(&g, &s, None, now, Some(1)).await.unwrap();
    assert_eq!(
        cursor.snapshot.as_ref().unwrap().apps_done.len(),
        APPS_PER_STEP
    );
    let (rest, _) = read(&g, &s, Some(&cursor), now + 60_000, None)
        .await
        .unwrap();
    let mut ids: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|r| r["app"]["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((first.len() + rest.len(), ids.len()), (23, 23));
}

#[tokio::test]
async fn an_app_graph_describes_in_text_no_json_reader_accepts_is_repaired_counted_and_written() {
    let (sim, url) = GraphSim::start(3, 4).await;
    sim.add_report(
        "Global View",
        vec![app(1, "Fine", "crm", 1, 1), hostile_app(2, 2, 1)],
    );
    let g = client(&url);
    let mut snap = Snapshot::new(&settings(&url, &[]), None, now_ms());
    let step = snap.next(&g, minute()).await.unwrap().unwrap();
    let repairs = step.page.repairs;
    assert!(repairs.escapes >= 1 && repairs.numbers >= 1, "{repairs:?}");
    let records: Vec<Value> = step
        .new_records()
        .into_iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        (1 + 1 + 1) + (1 + 2 + 1),
        "the app after it is not stalled"
    );
    let hostile = records
        .iter()
        .find(|r| r["kind"] == "app" && r["app"]["id"] == "10002")
        .unwrap();
    let row = cas_sentinel::testing::schema::to_row(DataType::Discovery, hostile);
    assert_eq!(row["AppName"], "Shadow \u{fffd} app");
    assert_eq!(
        row["Domains"][0].as_str().unwrap().len(),
        100_012,
        "a huge field passes whole (the sink cuts it to the service's limit)"
    );
    assert!(
        row["MappingIssues"].as_str().unwrap().contains("riskScore"),
        "{row}"
    );
}
