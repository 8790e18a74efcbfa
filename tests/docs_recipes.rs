//! The shell recipes of docs/deploy.md and docs/operations.md, run as written: every
//! ```sh block, in order, in one shell per document (as an operator pastes them), with its
//! `<placeholders>` filled in, against stand-ins for what this machine has no account for
//! (`az`, `func`, `npx`, the build scripts) and the real binary for `cargo run --`, which
//! reaches the simulated deployment. A recipe that exports into a subshell, names a flag the
//! binary lacks or a file that is not there fails here.

mod common;

use cas_sentinel::testing::cas::sim::SimConfig;
use common::harness;
use std::path::Path;

/// `az`: answers the calls the docs make (service principal and app role lookups, the
/// function app's settings as TSV) and logs every call, one per line.
const AZ: &str = r#"#!/usr/bin/env bash
printf '%s\n' "$*" >> "$STAND_IN_LOG.az"
case "$*" in
  "ad sp show --id "*" --query id -o tsv") echo "sp-$4" ;;
  "ad sp show --id "*"--query appRoles"*) q="$*"; q="${q#*value==\'}"; echo "role-${q%%\'*}" ;;
  "functionapp config appsettings list "*) cat "$STAND_IN_SETTINGS" ;;
  "functionapp config appsettings set "*)
    after=; for a in "$@"; do
      if [ -n "$after" ]; then printf '%s\t%s\n' "${a%%=*}" "${a#*=}" >> "$STAND_IN_SETTINGS"; fi
      if [ "$a" = --settings ]; then after=1; fi
    done ;;
  "ad app create "*"--query appId -o tsv") echo "00000000-aaaa-4bbb-8ccc-000000000001" ;;
  "ad sp create --id "*" --query id -o tsv") echo "sp-of-$5-in-customer" ;;
  "ad app federated-credential create "*|"login --tenant "*) ;;
  "functionapp deployment source config-zip "*)
    all="$*"; src="${all##*--src }"; [ -f "$src" ] || { echo "az: no such file: $src" >&2; exit 1; } ;;
  "group create "*|"deployment group create "*|"rest --method POST "*) ;;
  *) echo "az stand-in: unexpected call: $*" >&2; exit 2 ;;
esac
"#;

/// `cargo`: `cargo run -- ARGS` runs the handler binary with ARGS, as in the repository.
const CARGO: &str = r#"#!/usr/bin/env bash
[ "$1" = run ] && [ "$2" = -- ] || { echo "cargo stand-in: only 'cargo run --' is expected: $*" >&2; exit 2; }
shift 2
exec "$STAND_IN_BIN" "$@"
"#;

/// Tools that only need to be called: they log their arguments.
const LOGGED: &str = r#"#!/usr/bin/env bash
printf '%s\n' "$*" >> "$STAND_IN_LOG.$(basename "$0")"
"#;

/// `scripts/package` as far as the docs rely on it: dist/functionapp exists afterwards.
const PACKAGE: &str = r#"#!/usr/bin/env bash
mkdir -p dist/functionapp
printf 'package\n' >> "$STAND_IN_LOG.scripts"
"#;

/// Every ```sh block of `doc`, in order.
fn blocks(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh" | "```bash") => current = Some(String::new()),
            (Some(b), "```") => {
                out.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// The script with its `<placeholders>` filled in; an unknown one fails the test by name.
fn filled(script: &str, values: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = script;
    while let Some(start) = rest.find('<') {
        // `< <(`, `<<` and `< file` are shell, not placeholders.
        let tail = &rest[start + 1..];
        let end = tail.find('>').filter(|&e| {
            e > 0 && !tail[..e].contains(['\n', '(', '<', '$']) && !tail.starts_with(' ')
        });
        let Some(end) = end else {
            out.push_str(&rest[..=start]);
            rest = tail;
            continue;
        };
        let name = &tail[..end];
        let value = values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| {
                panic!("the docs use a placeholder this test does not know: <{name}>")
            });
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

fn install(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn log(work: &Path, tool: &str) -> String {
    std::fs::read_to_string(work.join(format!("calls.{tool}"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_and_operations_recipes_run_as_written() {
    let h = harness(
        "docs-recipes",
        &[("CAS_DATA_TYPES", "alerts,activities")],
        SimConfig::default(),
    )
    .await;
    let work = common::scratch("docs-recipes-work");
    let _ = std::fs::remove_dir_all(&work);
    let bin = work.join("bin");
    install(&bin, "az", AZ);
    install(&bin, "cargo", CARGO);
    for tool in ["func", "npx"] {
        install(&bin, tool, LOGGED);
    }
    install(&work, "scripts/package", PACKAGE);
    install(&work, "scripts/demo", LOGGED);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "infra/main.parameters.example.json",
        "local.settings.json.example",
    ] {
        std::fs::create_dir_all(work.join(f).parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), work.join(f)).unwrap();
    }
    // A release zip and its checksum, as scripts/package writes them.
    let version = env!("CARGO_PKG_VERSION");
    let zip = work.join(format!("cas-sentinel-{version}-functionapp.zip"));
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_cas-sentinel"))
        .args([
            "package",
            "--binary",
            env!("CARGO_BIN_EXE_cas-sentinel"),
            "--out",
        ])
        .arg(work.join("pkg"))
        .arg("--zip")
        .arg(&zip)
        .output()
        .unwrap();
    assert!(made.status.success());
    // The function app's settings, as `az functionapp config appsettings list -o tsv` prints
    // them: the simulated deployment's.
    let settings = work.join("appsettings.tsv");
    let tsv: String = h
        .handler_env()
        .into_iter()
        .map(|(k, v)| format!("{k}\t{v}\n"))
        .collect();
    std::fs::write(&settings, tsv).unwrap();

    let principal = "11111111-2222-3333-4444-555555555555".to_string();
    let values = [
        ("functionAppName", "func-cas-sentinel-test".to_string()),
        (
            "managedIdentityPrincipalId from the deployment outputs",
            principal.clone(),
        ),
        ("version", version.to_string()),
        (
            "your Entra tenant id",
            "33333333-3333-4333-8333-333333333333".to_string(),
        ),
        ("customer name", "fabrikam".to_string()),
        (
            "customer tenant id",
            "44444444-4444-4444-8444-444444444444".to_string(),
        ),
        // A CAS of its own (status makes no call to it).
        ("customer CAS API URL", "http://127.0.0.1:9/".to_string()),
    ];
    let run = |doc: &str, inherit: bool| {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let script: String = blocks(&text)
            .iter()
            .map(|b| format!("cd \"$WORK\"\n{}", filled(b, &values)))
            .collect();
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &script])
            .current_dir(&work)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("HOME", &work)
            .env("WORK", &work)
            .env("STAND_IN_BIN", env!("CARGO_BIN_EXE_cas-sentinel"))
            .env("STAND_IN_LOG", work.join("calls"))
            .env("STAND_IN_SETTINGS", &settings)
            .env("RUST_LOG", "warn");
        if inherit {
            // docs/operations.md assumes the settings are already in the shell.
            cmd.envs(h.handler_env());
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "{doc} did not run as written:\n{stdout}\n{stderr}"
        );
        (stdout, stderr)
    };

    // docs/deploy.md, from the first command to the last. Its settings come from the export
    // recipe alone: the shell starts without them.
    let (out, err) = run("docs/deploy.md", false);
    let az = log(&work, "az");
    assert!(
        az.contains("deployment group create -g rg-cas-sentinel -f infra/main.bicep"),
        "{az}"
    );
    assert!(work.join("infra/main.parameters.json").is_file());
    // The app role assignments carry the principal and the role looked up.
    for role in ["Investigation.Read", "CloudApp-Discovery.Read.All"] {
        let line = az
            .lines()
            .find(|l| l.starts_with("rest --method POST") && l.contains(&format!("role-{role}")))
            .unwrap_or_else(|| panic!("no assignment of {role}: {az}"));
        assert!(
            line.contains(&format!("servicePrincipals/{principal}/appRoleAssignments"))
                && line.contains(&format!("\"principalId\":\"{principal}\"")),
            "{line}"
        );
    }
    assert!(
        az.contains("config-zip -g rg-cas-sentinel -n func-cas-sentinel-test --src cas-sentinel-")
    );
    assert!(log(&work, "func").contains("azure functionapp publish func-cas-sentinel-test"));
    assert!(log(&work, "npx").contains("azurite --silent --location .local/azurite"));
    // The exported settings reached the real commands: validate proved every dependency.
    assert!(
        out.contains("storage") && !out.contains("PROBLEM"),
        "validate with the exported settings:\n{out}\n{err}"
    );
    assert!(out.contains("would move 0 message(s)"), "{out}");
    assert!(out.contains("backfill alerts"), "{out}");
    // Several tenants: the app trusts the managed identity, the customer's service
    // principal gets the roles, and the new tenant's status reads from its settings.
    let fed = az
        .lines()
        .find(|l| l.starts_with("ad app federated-credential create"))
        .unwrap_or_else(|| panic!("no federated credential: {az}"));
    assert!(
        fed.contains("\"issuer\":\"https://login.microsoftonline.com/33333333-3333-4333-8333-333333333333/v2.0\"")
            && fed.contains(&format!("\"subject\":\"{principal}\""))
            && fed.contains("\"audiences\":[\"api://AzureADTokenExchange\"]"),
        "{fed}"
    );
    assert!(
        az.contains("servicePrincipals/sp-of-00000000-aaaa-4bbb-8ccc-000000000001-in-customer/appRoleAssignments"),
        "{az}"
    );
    assert!(
        out.contains("tenant fabrikam") && out.contains("never run"),
        "{out}"
    );

    // docs/operations.md, with the settings in the shell as it says.
    let (out, _) = run("docs/operations.md", true);
    assert!(out.contains("alerts") && out.contains("CAS API"), "{out}");
}

#[test]
fn placeholders_are_filled_and_shell_redirections_are_left_alone() {
    let values = [("app", "func-x".to_string())];
    assert_eq!(
        filled("a <app> b < <(c) d <<EOF\n", &values),
        "a func-x b < <(c) d <<EOF\n"
    );
}
