//! The handler's logs as the Functions host captures them: stderr redirected to a file.
//! No terminal escape codes, one JSON object a line with the function, the invocation,
//! the data type and the invocation's numbers, and no secret. One test in this binary: it
//! sets the environment the harness reads.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use cas_sentinel::testing::sentinel::sim::IngestFault;
use serde_json::{Map, Value};
use std::time::Duration;

/// A line's fields: its own, and those of the spans it was logged in.
fn fields(line: &Value) -> Map<String, Value> {
    let mut out = line.as_object().unwrap().clone();
    for span in line
        .get("spans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in span.as_object().unwrap() {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_under_the_host_are_json_lines_without_escapes_or_secrets() {
    let dir = common::scratch("handler-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stderr.log");
    // SAFETY of intent: the only test of this binary, set before anything reads them.
    std::env::set_var("CAS_SENTINEL_HANDLER_STDERR", &log);
    std::env::set_var("CAS_SENTINEL_HANDLER_LOG", "info");
    let cas = SimConfig {
        legacy_token: Some("legacy-log-secret".into()),
        accept_entra: false,
        ..SimConfig::default()
    };
    let h = common::harness(
        "handler-logs",
        &[
            ("CAS_API_TOKEN", "legacy-log-secret"),
            ("CAS_DATA_TYPES", "alerts,activities"),
        ],
        cas,
    )
    .await;
    h.cas.add_alerts((0..30).map(|i| now_ms() - 100_000 + i));
    h.cas
        .add_activities((0..50).map(|i| now_ms() - 100_000 + i), |_| 1_000);
    h.sink.inject([IngestFault::Status(503)]);
    let (ok, logs) = h.host.tick(false).await.unwrap();
    assert!(ok, "{logs:?}");
    h.host.drain(Duration::from_secs(60)).await.unwrap();
    h.kill_handler().await;

    let bytes = std::fs::read(&log).unwrap();
    assert!(
        !bytes.contains(&0x1b),
        "an escape byte in the handler's stderr"
    );
    let text = String::from_utf8(bytes).unwrap();
    for secret in [
        "legacy-log-secret",
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq",
        "sig=",
        "sim|",
    ] {
        assert!(!text.contains(secret), "{secret:?} in the logs");
    }
    let lines: Vec<Map<String, Value>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            fields(
                &serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")),
            )
        })
        .collect();
    assert!(lines.len() >= 4, "{text}");
    let find = |what: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(what)))
            .unwrap_or_else(|| panic!("no line starting {what:?} in:\n{text}"))
    };
    let poll = find("PollCas: alerts");
    assert_eq!(poll["function"], "PollCas");
    assert_eq!(poll["data_type"], "alerts");
    assert_eq!(poll["records"], 30);
    assert!(
        poll["messages"].as_u64().unwrap() >= 1 && poll["lag_seconds"].is_number(),
        "{poll:?}"
    );
    assert!(
        poll["invocation_id"].as_str().unwrap().len() >= 32,
        "the host's invocation id: {poll:?}"
    );
    let done = find("PollCas: done");
    assert_eq!(done["records"], 80);
    assert_eq!(done["poison_messages"], 0);
    let ingest: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.get("function").is_some_and(|f| f == "IngestBatch") && l.get("rows").is_some()
        })
        .collect();
    assert!(!ingest.is_empty(), "{text}");
    let rows: u64 = ingest.iter().map(|l| l["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 80);
    assert!(ingest.iter().all(|l| l["data_type"].is_string()
        && l["bytes_sent"].as_u64().unwrap() > 0
        && l["calls"].as_u64().unwrap() >= 1));
    assert_eq!(
        ingest
            .iter()
            .map(|l| l["retries"].as_u64().unwrap())
            .sum::<u64>(),
        1,
        "the 503 was retried once"
    );
    for l in &lines {
        assert!(
            l.contains_key("timestamp") && l.contains_key("level"),
            "{l:?}"
        );
    }
}
