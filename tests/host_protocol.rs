//! Contract tests for the custom-handler protocol, over real HTTP against the handler
//! process, with the payload shapes real Functions hosts send (DESIGN §4).

mod common;

use cas_sentinel::testing::batch::envelope::pack;
use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::local::azurite::free_port;
use cas_sentinel::testing::model::{now_ms, DataType, Window};
use common::{assert_exactly_once, harness};
use serde_json::{json, Value};
use std::time::Duration;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn post(
    url: &url::Url,
    function: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, Value) {
    let rsp = reqwest::Client::new()
        .post(url.join(function).unwrap())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let ctype = rsp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = rsp.json().await.unwrap_or(Value::Null);
    (status, ctype, body)
}

fn logs(body: &Value) -> String {
    body["Logs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_timer_payload_shape_is_accepted_and_answered_as_json() {
    let h = harness(
        "timer-shapes",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let url = h.handler_url();
    let ready = reqwest::get(url.clone()).await.unwrap();
    assert_eq!(ready.status(), 200, "GET / answers at once");
    for name in [
        "host-timer-monitor-off.json",
        "host-timer-first-run.json",
        "host-timer-past-due.json",
    ] {
        let (status, ctype, body) = post(&url, "PollCas", fixture(name).to_string()).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(ctype.as_deref(), Some("application/json"), "{name}");
        assert_eq!(body["Outputs"], json!({}), "{name}");
        assert!(logs(&body).contains("alerts: window"), "{name}: {body}");
    }
    // A timer value of the wrong shape is noted, and the poll still runs from the checkpoint.
    let (status, _, body) = post(
        &url,
        "PollCas",
        r#"{"Data":{"timer":{"IsPastDue":"yes"}},"Metadata":{}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(logs(&body).contains("IsPastDue"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_payloads_are_decoded_in_every_encoding_the_host_uses() {
    let h = harness(
        "queue-shapes",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let url = h.handler_url();
    let w = Window::new(now_ms() - 1000, now_ms()).unwrap();
    let records: Vec<Value> = (0..3)
        .map(|i| json!({"_id": format!("a{i}"), "timestamp": now_ms(), "title": "t"}))
        .collect();
    let text = pack(
        DataType::Alerts,
        w,
        &records.iter().map(Value::to_string).collect::<Vec<_>>(),
    )
    .remove(0)
    .envelope
    .to_text();

    // As real hosts send it: text JSON-encoded once more, DequeueCount a string, quoted Id.
    let mut real = fixture("host-queue.json");
    real["Data"]["batch"] = Value::String(serde_json::to_string(&text).unwrap());
    let (status, ctype, body) = post(&url, "IngestBatch", real.to_string()).await;
    assert_eq!(
        (status, ctype.as_deref()),
        (200, Some("application/json")),
        "{body}"
    );
    let l = logs(&body);
    assert!(
        l.contains("3c9f1e2a-7b64-4d0e-9a51-6e2f8b7c1d09") && !l.contains("\"3c9f"),
        "Id unquoted: {l}"
    );
    assert!(
        l.contains("delivery 2"),
        "DequeueCount read from a string: {l}"
    );
    assert!(l.contains("3 rows sent"), "{l}");

    // As the documentation's idealized sample shows it: encoded once, numeric count.
    let docs = json!({"Data": {"batch": text}, "Metadata": {"DequeueCount": 1, "Id": "plain"}});
    let (status, _, body) = post(&url, "IngestBatch", docs.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        logs(&body).contains("already sent"),
        "same batch id, skipped: {body}"
    );
    assert_exactly_once(
        &h.sink.rows("McasAlerts_CL"),
        "VendorOriginalId",
        &["a0".into(), "a1".into(), "a2".into()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_invocations_fail_with_a_reason_and_the_handler_keeps_serving() {
    let h = harness(
        "bad-input",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let url = h.handler_url();
    // The fixture's message is JSON, but not our envelope.
    let (status, _, body) = post(&url, "IngestBatch", fixture("host-queue.json").to_string()).await;
    assert_eq!(status, 500);
    assert!(
        logs(&body).contains("not a cas-sentinel envelope"),
        "{body}"
    );
    let cases: [(&str, &str, &str); 5] = [
        ("IngestBatch", "not json at all", "not the host's JSON"),
        (
            "IngestBatch",
            r#"{"Data":{},"Metadata":{}}"#,
            "no Data.batch",
        ),
        (
            "IngestBatch",
            r#"{"Data":{"batch":"\"{\\\"v\\\":7}\""},"Metadata":{}}"#,
            "version 7",
        ),
        (
            "IngestBatch",
            r#"{"Data":{"batch":[1,2]},"Metadata":{}}"#,
            "Data.batch is malformed",
        ),
        ("PollCas", r#"{"Data":{},"Metadata":{}}"#, "alerts: window"),
    ];
    for (function, body, expect) in cases {
        let (status, ctype, answer) = post(&url, function, body).await;
        assert_eq!(ctype.as_deref(), Some("application/json"), "{body}");
        assert!(logs(&answer).contains(expect), "{body} → {status} {answer}");
        // A poll with no timer value still polls; everything else must fail (non-2xx),
        // so the host retries and finally poisons the message instead of deleting it.
        assert_eq!(status == 200, function == "PollCas", "{body} → {status}");
    }
    let rsp = reqwest::Client::new()
        .post(url.join("NoSuchFunction").unwrap())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 500);
    assert_eq!(
        reqwest::get(url).await.unwrap().status(),
        200,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_four_concurrent_invocations_each_send_their_batch_once() {
    let h = harness(
        "concurrent",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let url = h.handler_url();
    let w = Window::new(0, now_ms()).unwrap();
    let mut expected = Vec::new();
    let mut texts = Vec::new();
    for b in 0..12 {
        let records: Vec<Value> = (0..20)
            .map(|i| json!({"_id": format!("b{b}-{i}"), "timestamp": now_ms(), "title": "t"}))
            .collect();
        expected.extend(
            records
                .iter()
                .map(|r| r["_id"].as_str().unwrap().to_string()),
        );
        texts.push(
            pack(
                DataType::Alerts,
                w,
                &records.iter().map(Value::to_string).collect::<Vec<_>>(),
            )
            .remove(0)
            .envelope
            .to_text(),
        );
    }
    // 12 batches, each delivered twice at once: 24 invocations in flight.
    let calls = texts.iter().chain(texts.iter()).map(|t| {
        let body = json!({"Data": {"batch": serde_json::to_string(t).unwrap()}, "Metadata": {"DequeueCount": "1"}}).to_string();
        let url = url.clone();
        async move { post(&url, "IngestBatch", body).await }
    });
    for (status, _, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_do_not_crash_the_handler_every_invocation_says_what_to_fix() {
    let port = free_port().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
        .arg("serve")
        .env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("CAS_API_URL", "http://cas.example.com")
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if reqwest::get(url.clone())
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        ready,
        "GET / answers even when misconfigured, so the host does not restart it in a loop"
    );
    let (status, _, body) = post(
        &url,
        "PollCas",
        fixture("host-timer-monitor-off.json").to_string(),
    )
    .await;
    assert_eq!(status, 500);
    let l = logs(&body);
    for name in [
        "CAS_API_URL",
        "SENTINEL_INGESTION_ENDPOINT",
        "SENTINEL_DCR_IMMUTABLE_ID",
        "AzureWebJobsStorage",
    ] {
        assert!(l.contains(name), "{name} not named in: {l}");
    }
    child.kill().await.unwrap();
}
