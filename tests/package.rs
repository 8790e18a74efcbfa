//! The publish folder: layout, parseable definitions, and a binary that serves from it.

use std::time::Duration;

#[tokio::test]
async fn the_package_has_the_layout_func_expects_and_its_binary_serves() {
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("package-{}", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
        .args([
            "package",
            "--binary",
            env!("CARGO_BIN_EXE_cas-sentinel"),
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    for f in [
        "host.json",
        "PollCas/function.json",
        "IngestBatch/function.json",
        ".funcignore",
        "local.settings.json",
        "cas-sentinel",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let host: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("host.json")).unwrap()).unwrap();
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "cas-sentinel"
    );
    for f in ["PollCas", "IngestBatch"] {
        let def: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(f).join("function.json")).unwrap(),
        )
        .unwrap();
        assert!(def["bindings"][0]["type"].is_string(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("cas-sentinel"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0o111,
        "executable"
    );
    // Core Tools' `func azure functionapp publish` takes the worker runtime from
    // FUNCTIONS_WORKER_RUNTIME in the environment or local.settings.json's Values, or stops
    // with "Can't determine project language from files"; .funcignore keeps the file out of
    // the upload (its lines are globs matched against paths from the folder's root).
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("local.settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings["IsEncrypted"], false);
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert!(
        settings["Values"]["CAS_SCHEDULE"].is_string(),
        "func start indexes PollCas here too"
    );
    let funcignore = std::fs::read_to_string(out.join(".funcignore")).unwrap();
    let ignored: Vec<&str> = funcignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(ignored.contains(&"local.settings.json"), "{ignored:?}");
    for kept in [
        "host.json",
        "cas-sentinel",
        "PollCas/function.json",
        "IngestBatch/function.json",
    ] {
        assert!(
            !ignored
                .iter()
                .any(|g| *g == kept || kept.starts_with(&g.replace('*', ""))),
            "{kept} would not be uploaded"
        );
    }

    // The shipped binary is the handler and the operator commands: no demo, and none of the
    // simulators (their code stays out even of this test build, which has them in the
    // library: nothing the binary runs reaches them).
    let help = std::process::Command::new(out.join("cas-sentinel"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("serve") && help.contains("validate"),
        "{help}"
    );
    assert!(!help.contains("demo"), "{help}");
    let bytes = std::fs::read(out.join("cas-sentinel")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for marker in [
        cas_sentinel::testing::auth::sim::HEADER_SECRET,
        "injected failure",
        "TOO MANY REQUESTS",
        "The continuous report does not exist",
    ] {
        assert!(
            !text.contains(marker),
            "simulator code ({marker:?}) in the packaged binary"
        );
    }

    // Start it as the host does: from the package folder, with the port in the environment.
    let port = cas_sentinel::testing::local::azurite::free_port().unwrap();
    let mut child = tokio::process::Command::new(out.join("cas-sentinel"))
        .args(
            host["customHandler"]["description"]["arguments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap()),
        )
        .current_dir(&out)
        .env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let mut up = false;
    for _ in 0..200 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().await.unwrap();
    assert!(
        up,
        "the packaged binary answers GET / when started as the host starts it"
    );
}

/// The release artifact: the zip a zip deploy takes, with the files the host needs (and not
/// Core Tools' local files), the binary still executable once extracted, and a checksum
/// `sha256sum -c` accepts; the same binary gives the same zip.
#[test]
fn the_release_zip_holds_what_a_zip_deploy_needs_with_a_checksum() {
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("package-zip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let package = |zip: &str| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
            .args([
                "package",
                "--binary",
                env!("CARGO_BIN_EXE_cas-sentinel"),
                "--out",
            ])
            .arg(root.join("functionapp"))
            .arg("--zip")
            .arg(root.join(zip))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(root.join(zip)).unwrap()
    };
    let first = package("app.zip");
    assert_eq!(package("again.zip"), first, "reproducible");

    let listing = std::process::Command::new("unzip")
        .arg("-Z1")
        .arg(root.join("app.zip"))
        .output()
        .expect("unzip is installed");
    let mut names: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "IngestBatch/function.json",
            "PollCas/function.json",
            "cas-sentinel",
            "host.json"
        ]
    );
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "app.zip.sha256"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let out = root.join("extracted");
    let status = std::process::Command::new("unzip")
        .args(["-q", "-d"])
        .arg(&out)
        .arg(root.join("app.zip"))
        .status()
        .unwrap();
    assert!(status.success());
    let version = std::process::Command::new(out.join("cas-sentinel"))
        .arg("--version")
        .output()
        .expect("the extracted binary runs");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("cas-sentinel {}", env!("CARGO_PKG_VERSION"))
    );
}
