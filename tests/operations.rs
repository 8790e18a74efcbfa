//! The operator commands, run as a person would run them, against Azurite and the
//! simulators: replay (and export/import), backfill, status, validate.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::model::now_ms;
use cas_sentinel::testing::sentinel::sim::IngestFault;
use common::{assert_exactly_once, harness, run_cli};
use serde_json::Value;
use std::time::Duration;

const DRAIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_replayed_with_one_command_and_never_duplicate_rows() {
    let h = harness(
        "ops-replay",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let ids = h.cas.add_alerts((0..40).map(|i| now_ms() - 60_000 + i));
    h.sink
        .inject(std::iter::repeat_n(IngestFault::Status(403), 5));
    assert!(h.host.tick(false).await.unwrap().0);
    assert_eq!(h.host.drain(DRAIN).await.unwrap().poisoned, 1);

    let (ok, out, err) = run_cli(&h, &["replay", "--dry-run"], &[]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("would move 1 message(s)") && out.contains("alerts batch"),
        "{out}"
    );
    let (_, out, _) = run_cli(&h, &["replay", "--data-type", "activities"], &[]).await;
    assert!(
        out.contains("moved 0 message(s)") && out.contains("left 1"),
        "{out}"
    );
    assert_eq!(
        h.poison.approximate_len().await.unwrap(),
        1,
        "a dry run and a non-matching filter move nothing"
    );

    let export = common::scratch("ops-replay-export").with_extension("ndjson");
    let (ok, out, err) = run_cli(&h, &["replay", "--export", export.to_str().unwrap()], &[]).await;
    assert!(ok, "{out}{err}");
    let exported: Value = serde_json::from_str(
        std::fs::read_to_string(&export)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(exported["batch"]["count"], 40);
    assert_eq!(
        h.poison.approximate_len().await.unwrap(),
        1,
        "export leaves the message in place"
    );

    // The role is fixed; one command moves the batch back and the host sends it.
    let (ok, out, _) = run_cli(&h, &["replay"], &[]).await;
    assert!(ok && out.contains("moved 1 message(s)"), "{out}");
    h.host.drain(DRAIN).await.unwrap();
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &ids);
    assert_eq!(h.poison.approximate_len().await.unwrap(), 0);

    // Replaying a batch that was already sent (from the export file) adds no rows…
    let (ok, out, _) = run_cli(&h, &["replay", "--import", export.to_str().unwrap()], &[]).await;
    assert!(ok && out.contains("moved 1 message(s)"), "{out}");
    h.host.drain(DRAIN).await.unwrap();
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &ids);

    // …unless forced, which removes the sent markers first.
    h.poison
        .send_raw(exported["message"].as_str().unwrap().to_string())
        .await
        .unwrap();
    let (ok, out, _) = run_cli(&h, &["replay", "--force"], &[]).await;
    assert!(ok && out.contains("sent markers removed"), "{out}");
    h.host.drain(DRAIN).await.unwrap();
    assert_eq!(h.sink.rows("McasAlerts_CL").len(), 80, "forced: sent again");

    // An import reads the whole file before it enqueues anything: one unusable line, or
    // one message that is not ours, and nothing moves; the foreign one goes only when
    // asked for by name.
    let good = std::fs::read_to_string(&export).unwrap();
    let foreign =
        serde_json::json!({"id": "someone-elses", "inserted": null, "message": "aGVsbG8="});
    let mixed = common::scratch("ops-replay-mixed").with_extension("ndjson");
    let import = |lines: &[&str]| {
        std::fs::write(&mixed, lines.join("\n")).unwrap();
        mixed.to_str().unwrap().to_string()
    };
    let path = import(&[good.trim(), "{not json", good.trim()]);
    let (ok, _, err) = run_cli(&h, &["replay", "--import", &path], &[]).await;
    assert!(
        !ok && err.contains(":2: not an exported message") && err.contains("nothing was enqueued"),
        "{err}"
    );
    let path = import(&[good.trim(), &foreign.to_string()]);
    let (ok, _, err) = run_cli(&h, &["replay", "--import", &path], &[]).await;
    assert!(
        !ok && err.contains("someone-elses is not a cas-sentinel envelope"),
        "{err}"
    );
    assert_eq!(
        h.queue.approximate_len().await.unwrap(),
        0,
        "nothing enqueued"
    );
    let (ok, out, err) = run_cli(&h, &["replay", "--import", &path, "--allow-foreign"], &[]).await;
    assert!(ok && out.contains("moved 2 message(s)"), "{out}{err}");
    // A missing file is named once, with the OS's reason once.
    let (ok, _, err) = run_cli(
        &h,
        &["replay", "--import", "/nonexistent/poison.ndjson"],
        &[],
    )
    .await;
    assert!(!ok && err.matches("No such file").count() == 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reaches_past_the_lookback_without_moving_the_checkpoint() {
    let h = harness(
        "ops-backfill",
        &[("CAS_DATA_TYPES", "alerts,activities")],
        SimConfig::default(),
    )
    .await;
    let day = 86_400_000;
    let old_alerts = h
        .cas
        .add_alerts((0..250).map(|i| now_ms() - 3 * day + i * 1000));
    let old_acts = h
        .cas
        .add_activities((0..700).map(|i| now_ms() - 3 * day + i * 100), |_| 60_000);
    let recent = h.cas.add_alerts((0..5).map(|i| now_ms() - 60_000 + i));
    assert!(h.host.tick(false).await.unwrap().0);
    h.host.drain(DRAIN).await.unwrap();
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &recent);
    let (_, before, _) = run_cli(&h, &["status", "--json"], &[]).await;

    for dt in ["alerts", "activities"] {
        let (ok, out, err) = run_cli(
            &h,
            &[
                "backfill",
                "--data-type",
                dt,
                "--from",
                "P4D",
                "--to",
                "P2D",
            ],
            &[],
        )
        .await;
        assert!(ok, "{out}{err}");
        assert!(
            err.contains("backfill: 100%"),
            "plain progress lines when not a terminal: {err}"
        );
        assert!(
            !err.contains("warning"),
            "no overlap with forwarded data: {err}"
        );
        assert!(out.contains("records in"), "{out}");
    }
    h.host.drain(DRAIN).await.unwrap();
    let mut all = recent.clone();
    all.extend(old_alerts);
    assert_exactly_once(&h.sink.rows("McasAlerts_CL"), "VendorOriginalId", &all);
    assert_exactly_once(&h.sink.rows("McasActivity_CL"), "ReportId", &old_acts);

    let (_, after, _) = run_cli(&h, &["status", "--json"], &[]).await;
    let cp =
        |s: &str| serde_json::from_str::<Value>(s).unwrap()["data_types"][0]["checkpoint"].clone();
    assert_eq!(cp(&before), cp(&after), "the checkpoint did not move");

    let (ok, _, err) = run_cli(
        &h,
        &["backfill", "--data-type", "alerts", "--from", "PT1H"],
        &[],
    )
    .await;
    assert!(
        ok && err.contains("sent twice"),
        "overlapping ranges are warned about: {err}"
    );

    // A reversed or future range is refused in words and times, before anything is read.
    for (args, says) in [
        (["--from", "P1D", "--to", "P2D"], "is after --to"),
        (
            ["--from", "P1D", "--to", "2099-01-01T00:00:00Z"],
            "is in the future",
        ),
    ] {
        let mut cmd = vec!["backfill", "--data-type", "alerts"];
        cmd.extend(args);
        let (ok, _, err) = run_cli(&h, &cmd, &[]).await;
        assert!(!ok && err.contains(says) && err.contains("T"), "{err}");
    }

    // A backfill over a range backfilled before names the earlier one.
    let (ok, _, err) = run_cli(
        &h,
        &[
            "backfill",
            "--data-type",
            "activities",
            "--from",
            "P3D",
            "--to",
            "P2D",
        ],
        &[],
    )
    .await;
    assert!(
        ok && err.contains("overlaps an earlier backfill of") && !err.contains("poll has already"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_checkpoints_lag_queues_and_sent_batches() {
    let h = harness(
        "ops-status",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    h.cas.add_alerts((0..10).map(|i| now_ms() - 60_000 + i));
    let (ok, out, err) = run_cli(&h, &["status"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("never run"), "{out}");
    assert!(h.host.tick(false).await.unwrap().0);
    let (_, out, _) = run_cli(&h, &["status", "--json"], &[]).await;
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["queue_depth"], 1);
    assert!(s["data_types"][0]["lag_seconds"].as_i64().unwrap() < 60);
    assert_eq!(s["data_types"][1]["enabled"], false);
    h.host.drain(DRAIN).await.unwrap();
    let (_, out, _) = run_cli(&h, &["status"], &[]).await;
    assert!(
        out.contains("alerts      yes") && out.contains("cas-batches: 0 waiting"),
        "{out}"
    );
    let (_, out, _) = run_cli(&h, &["status", "--json"], &[]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["data_types"][0]["sent_batches"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_proves_each_dependency_and_names_the_fix_for_each_broken_one() {
    let h = harness("ops-validate", &[], SimConfig::default()).await;
    h.graph.add_report("Global View", vec![]);
    let (ok, out, err) = run_cli(&h, &["validate"], &[]).await;
    assert!(ok, "{out}{err}");
    for check in [
        "settings",
        "CAS token (Entra)",
        "CAS API",
        "Microsoft Graph (discovery)",
        "Logs Ingestion Custom-McasAlerts",
        "Logs Ingestion Custom-McasActivity",
        "Logs Ingestion Custom-McasShadowItReporting",
        "storage",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(check))
            .unwrap_or_else(|| panic!("{check}: {out}"));
        assert!(line[check.len()..].trim_start().starts_with("ok"), "{line}");
    }
    assert_eq!(
        h.sink.stats().rows.values().sum::<u64>(),
        0,
        "the empty uploads wrote nothing"
    );
    let (ok, json, _) = run_cli(&h, &["validate", "--json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        ok && v.as_array().unwrap().iter().all(|c| c["ok"] == true),
        "{json}"
    );

    // Each dependency broken in turn: its own check fails, naming its own fix.
    let problem = |out: &str, check: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(check) && l.contains("PROBLEM"))
            .unwrap_or_else(|| panic!("no problem for {check}: {out}"))
            .to_string()
    };
    let (ok, out, _) = run_cli(
        &h,
        &["validate"],
        &[
            ("CAS_API_TOKEN", "not-the-token"),
            ("CAS_DATA_TYPES", "alerts"),
        ],
    )
    .await;
    assert!(
        !ok && problem(&out, "CAS API").contains("CAS_API_TOKEN"),
        "{out}"
    );
    assert!(!out.contains("not-the-token"), "secrets are never printed");

    h.graph.set_forbidden(true);
    let (ok, out, _) = run_cli(&h, &["validate"], &[]).await;
    assert!(
        !ok && problem(&out, "Microsoft Graph").contains("CloudApp-Discovery.Read.All"),
        "{out}"
    );
    h.graph.set_forbidden(false);

    let (ok, out, _) = run_cli(
        &h,
        &["validate"],
        &[("SENTINEL_STREAM_ALERTS", "Custom-NotDeclared")],
    )
    .await;
    assert!(
        !ok && problem(&out, "Logs Ingestion Custom-NotDeclared").contains("SENTINEL_STREAM_"),
        "{out}"
    );
    let (ok, out, _) = run_cli(
        &h,
        &["validate"],
        &[(
            "SENTINEL_DCR_IMMUTABLE_ID",
            "dcr-00000000000000000000000000000bad",
        )],
    )
    .await;
    assert!(
        !ok && problem(&out, "Logs Ingestion Custom-McasAlerts")
            .contains("SENTINEL_DCR_IMMUTABLE_ID"),
        "{out}"
    );
    h.sink.set_denied(true);
    let (ok, out, _) = run_cli(&h, &["validate"], &[]).await;
    assert!(
        !ok && problem(&out, "Logs Ingestion Custom-McasActivity")
            .contains("Monitoring Metrics Publisher"),
        "{out}"
    );
    h.sink.set_denied(false);

    let (ok, out, _) = run_cli(&h, &["validate"], &[("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1")]).await;
    assert!(
        // Nothing listens there: the connection is named, not a role to grant.
        !ok && problem(&out, "storage").contains("connection refused")
            && !problem(&out, "storage").contains("Storage Queue Data Contributor"),
        "{out}"
    );

    // Settings, including the budget against host.json's functionTimeout (10 minutes).
    let (ok, out, _) = run_cli(
        &h,
        &["validate"],
        &[
            ("SENTINEL_DCR_IMMUTABLE_ID", "my-dcr"),
            ("CAS_LOOKBACK", "1d"),
        ],
    )
    .await;
    assert!(
        !ok && out.contains("SENTINEL_DCR_IMMUTABLE_ID") && out.contains("CAS_LOOKBACK"),
        "{out}"
    );
    let (ok, out, _) = run_cli(&h, &["validate"], &[("CAS_INVOCATION_BUDGET", "PT9M30S")]).await;
    assert!(
        !ok && problem(&out, "settings").contains("functionTimeout"),
        "{out}"
    );
}

/// A stand-in `az` that answers `az account get-access-token` as the Azure CLI does, with a
/// token the simulators accept for the scope asked, and notes each call in `$AZ_LOG`; with
/// `AZ_FAIL` set it fails as a CLI that is not logged in does.
const STAND_IN_AZ: &str = r#"#!/bin/sh
echo "$*" >> "$AZ_LOG"
if [ -n "$AZ_FAIL" ]; then echo "ERROR: Please run 'az login' to setup account." >&2; exit 1; fi
while [ $# -gt 0 ]; do if [ "$1" = "--scope" ]; then scope="$2"; fi; shift; done
res="${scope%/.default}"
exp=$(( $(date +%s) + 3600 ))
printf '{"accessToken":"sim|%s|%s","expires_on":%s,"tokenType":"Bearer"}\n' "$res" "$exp" "$exp"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_laptop_the_commands_sign_in_with_the_operators_azure_cli_login() {
    use std::os::unix::fs::PermissionsExt;
    let h = harness(
        "ops-laptop",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let bin = common::scratch("ops-laptop-az");
    std::fs::create_dir_all(&bin).unwrap();
    let az = bin.join("az");
    std::fs::write(&az, STAND_IN_AZ).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = bin.join("calls.log");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let env = [
        ("CAS_CREDENTIAL", "azure-cli"),
        ("PATH", path.as_str()),
        ("AZ_LOG", log.to_str().unwrap()),
    ];
    let (ok, out, err) = run_cli(&h, &["validate"], &env).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("your Azure CLI login"),
        "says which identity: {out}"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("account get-access-token")
            && calls.contains("--scope https://monitor.azure.com/.default"),
        "the CLI was asked for the tokens: {calls}"
    );
    // Not logged in: the fix named is the login, not a permission.
    let mut failing = env.to_vec();
    failing.push(("AZ_FAIL", "1"));
    let (ok, out, err) = run_cli(&h, &["validate"], &failing).await;
    assert!(!ok && out.contains("run `az login`"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_only_storage_settings_and_creates_nothing() {
    use cas_sentinel::testing::storage::queue::Queue;
    let h = harness("ops-status-storage", &[], SimConfig::default()).await;
    // Only the storage connection: no CAS, no Logs Ingestion settings.
    let storage: Vec<(String, String)> = h
        .handler_env()
        .into_iter()
        .filter(|(k, _)| k.starts_with("AzureWebJobsStorage"))
        .collect();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
        .args(["status"])
        .env_clear()
        .envs(storage)
        .env("CAS_QUEUE_NAME", "never-made")
        .env("CAS_CREDENTIAL", "managed-identity")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("queue never-made: not created yet"),
        "{stdout}"
    );
    let q = Queue::open(&h.azurite.storage(), "never-made", None).unwrap();
    assert_eq!(
        q.existing_len().await.unwrap(),
        None,
        "status looked and made nothing"
    );
}

/// A port nothing listens on: bound, then let go.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_endpoint_is_named_in_seconds_by_validate_status_and_run() {
    let h = harness(
        "ops-refused",
        &[("CAS_DATA_TYPES", "alerts")],
        SimConfig::default(),
    )
    .await;
    let port = closed_port();
    let dead_storage = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
        cas_sentinel::testing::config::storage::DEV_KEY
    );
    let env = [("AzureWebJobsStorage", dead_storage.as_str())];
    let named = format!("cannot connect to http://127.0.0.1:{port}: connection refused");
    for command in [&["validate"][..], &["status"], &["run", "--once"]] {
        let started = std::time::Instant::now();
        let (ok, out, err) = run_cli(&h, command, &env).await;
        let took = started.elapsed();
        eprintln!("{command:?} with storage refused: {took:?}");
        assert!(!ok, "{command:?} fails: {out}{err}");
        assert!(
            (out.clone() + &err).contains(&named)
                && (out.clone() + &err).contains("AzureWebJobsStorage"),
            "{command:?} names the endpoint, the cause and the setting: {out}{err}"
        );
        assert!(
            took < std::time::Duration::from_secs(10),
            "{command:?} took {took:?}"
        );
        if command == ["validate"] {
            // The checks that could be made were made, and the others were reported before.
            assert!(out.contains("CAS API") && out.contains("ok"), "{out}");
        }
    }

    // A refused CAS endpoint, with storage fine: named, not retried for the whole budget.
    let dead_cas = format!("http://127.0.0.1:{}/", closed_port());
    let started = std::time::Instant::now();
    let (ok, out, err) = run_cli(&h, &["run", "--once"], &[("CAS_API_URL", &dead_cas)]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("connection refused") && out.contains("CAS_API_URL"),
        "{out}{err}"
    );
    eprintln!("run --once with CAS refused: {:?}", started.elapsed());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
