//! Shared set-up for the integration tests: a [`Harness`] per test, with its own
//! Azurite, simulators and handler process on free loopback ports.

#![allow(dead_code)]

use cas_sentinel::testing::cas::sim::SimConfig;
use cas_sentinel::testing::local::{Harness, HarnessOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A scratch folder unique to this test.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts a harness with these handler settings and tenant behaviour.
pub async fn harness(name: &str, env: &[(&str, &str)], cas: SimConfig) -> Harness {
    harness_with(name, env, cas, false).await
}

/// [`harness`], the handler reaching storage through relays that can hang
/// (`Harness::freeze_storage`) when `relay_storage`.
pub async fn harness_with(
    name: &str,
    env: &[(&str, &str)],
    cas: SimConfig,
    relay_storage: bool,
) -> Harness {
    Harness::start(HarnessOptions {
        handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_cas-sentinel")),
        work_dir: scratch(name),
        out_dir: None,
        keep_rows: true,
        cas,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        relay_storage,
    })
    .await
    .expect("the harness starts (is Azurite installed? run `npm ci`)")
}

/// How many rows carry each value of `column`.
pub fn counts(rows: &[Value], column: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        let key = r
            .get(column)
            .and_then(Value::as_str)
            .unwrap_or("<missing>")
            .to_string();
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Asserts that every expected id arrived exactly once and nothing else arrived.
pub fn assert_exactly_once(rows: &[Value], column: &str, expected: &[String]) {
    let got = counts(rows, column);
    let dups: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} ids arrived more than once, e.g. {:?}",
        dups.len(),
        dups.iter().take(3).collect::<Vec<_>>()
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !got.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} ids never arrived, e.g. {:?}",
        missing.len(),
        expected.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        got.len(),
        expected.len(),
        "rows for ids that were never created"
    );
}

/// Runs a `cas-sentinel` command with the harness's settings; returns (success, stdout, stderr).
pub async fn run_cli(
    h: &Harness,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
        .args(args)
        .env_clear()
        .envs(h.handler_env())
        .envs(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
