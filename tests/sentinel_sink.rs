//! The Sentinel side end to end against the Logs Ingestion simulator: stream
//! declarations, the 1 MiB limit, 413 splitting, 429/5xx, field truncation.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use cas_sentinel::testing::sentinel::sim::IngestFault;
use common::{assert_exactly_once, harness};
use serde_json::json;
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_arrives_once_in_calls_filled_close_to_the_limit() {
    let h = harness(
        "sink-backlog",
        &[("CAS_DATA_TYPES", "activities")],
        SimConfig::default(),
    )
    .await;
    h.cas.pad_activities(2_000);
    let base = now_ms() - 3_600_000;
    let ids = h
        .cas
        .add_activities((0..15_000).map(|i| base + i / 3), |n| {
            (n as i64 % 4) * 30_000
        });
    // Throttling and server errors on the way in.
    h.sink.inject([
        IngestFault::Throttle(1),
        IngestFault::Status(500),
        IngestFault::Status(503),
        IngestFault::Throttle(1),
        IngestFault::Status(502),
    ]);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(
        d.failed, 0,
        "429 and 5xx are retried inside the invocation: {d:?}"
    );
    assert_exactly_once(&h.sink.rows("McasActivity_CL"), "ReportId", &ids);
    let s = h.sink.stats();
    assert!(
        s.max_body <= 1024 * 1024,
        "largest call {} bytes",
        s.max_body
    );
    assert_eq!(s.too_large, 0);
    eprintln!(
        "backlog of 15,000 activities (~2 KiB each): {} messages, {} accepted calls, average call {} KiB uncompressed, largest {} KiB",
        d.succeeded,
        s.accepted_calls,
        s.bytes / s.accepted_calls.max(1) / 1024,
        s.max_body / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_call_limit_is_honoured_and_a_413_splits_the_call() {
    let h = harness(
        "sink-413",
        &[
            ("CAS_DATA_TYPES", "activities"),
            ("SENTINEL_MAX_CALL_BYTES", "100000"),
        ],
        SimConfig::default(),
    )
    .await;
    h.cas.pad_activities(1_500);
    let ids = h
        .cas
        .add_activities((0..1_500).map(|i| now_ms() - 600_000 + i), |_| 0);
    h.sink
        .inject([IngestFault::Status(413), IngestFault::Status(413)]);
    assert!(h.host.tick(false).await.unwrap().0);
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(d.failed, 0, "{d:?}");
    assert_exactly_once(&h.sink.rows("McasActivity_CL"), "ReportId", &ids);
    assert!(
        h.sink.stats().max_body <= 100_000,
        "{}",
        h.sink.stats().max_body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_truncated_and_marked_not_lost() {
    let h = harness(
        "sink-oversize",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let mut ids = h.cas.add_alerts((0..5).map(|i| now_ms() - 60_000 + i));
    // 1.2 MB of description and 400 KB of entities: larger than a queue message and a call.
    let big = h.cas.add_alerts_with([now_ms() - 50_000], |a| {
        a["description"] = json!("Z".repeat(1_200_000));
        a["entities"] = json!((0..8_000).map(|i| json!({"type": "ip", "id": format!("198.51.100.{}", i % 250), "label": format!("host-{i}")})).collect::<Vec<_>>());
    });
    ids.extend(big.iter().cloned());
    assert!(h.host.tick(false).await.unwrap().0);
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(d.failed, 0, "{d:?}");
    let rows = h.sink.rows("McasAlerts_CL");
    assert_exactly_once(&rows, "VendorOriginalId", &ids);
    let row = rows
        .iter()
        .find(|r| r["VendorOriginalId"] == big[0].as_str())
        .unwrap();
    assert_eq!(row["Description"].as_str().unwrap().len(), 32_766);
    let cut = row["TruncatedFields"].as_str().unwrap();
    for col in ["Description", "Entities", "SourceRecord"] {
        assert!(cut.contains(col), "{col} not named in {cut}");
    }
    assert!(
        rows.iter()
            .filter(|r| r.get("TruncatedFields").is_some())
            .count()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_mismatch_is_not_retried_in_the_invocation_and_says_so() {
    let h = harness(
        "sink-400",
        &[
            ("CAS_DATA_TYPES", "alerts"),
            ("SENTINEL_STREAM_ALERTS", "Custom-NotDeclared"),
        ],
        SimConfig::default(),
    )
    .await;
    h.cas.add_alerts((0..3).map(|i| now_ms() - 60_000 + i));
    assert!(h.host.tick(false).await.unwrap().0);
    let started = std::time::Instant::now();
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!((d.failed, d.poisoned), (5, 1), "{d:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no retries inside each invocation"
    );
    assert_eq!(h.sink.stats().calls, 5, "one call per delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_part_way_sends_only_the_rest_even_after_the_call_size_changes() {
    use cas_sentinel::testing::batch::envelope::pack;
    use cas_sentinel::testing::model::{DataType, Window};
    let mut h = harness(
        "sink-parts",
        &[
            ("CAS_DATA_TYPES", "alerts"),
            ("SENTINEL_MAX_CALL_BYTES", "65536"),
        ],
        SimConfig::default(),
    )
    .await;
    // One message of 300 alerts whose rows need several 64 KiB calls (they compress well,
    // so one queue message holds them all).
    let now = now_ms();
    let ids: Vec<String> = (0..300).map(|i| format!("part-{i:04}")).collect();
    let records: Vec<String> = ids
        .iter()
        .map(|id| {
            json!({"_id": id, "timestamp": now, "title": "t", "description": "d".repeat(900)})
                .to_string()
        })
        .collect();
    let msgs = pack(
        DataType::Alerts,
        Window::new(now - 1, now).unwrap(),
        &records,
    );
    assert_eq!(msgs.len(), 1, "one message");
    h.queue
        .send_text(&msgs[0].envelope.to_text())
        .await
        .unwrap();
    // The first delivery: two calls accepted, then a refusal that fails the invocation.
    h.sink.inject([
        IngestFault::Pass,
        IngestFault::Pass,
        IngestFault::Status(403),
    ]);
    let first = h.host.drain_once().await.unwrap();
    assert_eq!(first.failed, 1, "the first delivery fails part-way");
    let sent_first = h.sink.stats().accepted_calls;
    assert_eq!(sent_first, 2);
    // A redeploy raises the call size: the rest now fits one call, and the rows already
    // sent must not be sent again.
    h.restart_handler_with(&[("SENTINEL_MAX_CALL_BYTES", "1048576")])
        .await
        .unwrap();
    let d = h.host.drain(DRAIN).await.unwrap();
    assert_eq!(d.poisoned, 0);
    assert_eq!(
        h.sink.stats().accepted_calls,
        sent_first + 1,
        "the rest in one call"
    );
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &ids);
}
