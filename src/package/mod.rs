//! The folder `func azure functionapp publish` expects: `host.json`, one folder per
//! function with its `function.json`, and the binary named as in `host.json`. The host
//! files are compiled in, so a package always matches the binary it carries.

use sha2::{Digest, Sha256};
use std::path::Path;

mod zip;

/// `host.json`, as committed.
pub(crate) const HOST_JSON: &str = include_str!("../../host.json");
/// The function definitions, as committed: (function name, function.json).
pub(crate) const FUNCTIONS: [(&str, &str); 2] = [
    (
        "PollCas",
        include_str!("../../function-definitions/PollCas/function.json"),
    ),
    (
        "IngestBatch",
        include_str!("../../function-definitions/IngestBatch/function.json"),
    ),
];
/// `local.settings.json` for the package folder. `func azure functionapp publish` takes
/// the worker runtime from `FUNCTIONS_WORKER_RUNTIME` (in the environment or this file) or
/// stops with "Can't determine project language from files"; `.funcignore` keeps the file
/// itself out of the upload. The schedule and queue name let `func start` index the
/// functions in this folder too (their function.json read them as app settings).
pub(crate) const LOCAL_SETTINGS: &str = "{\n  \"IsEncrypted\": false,\n  \"Values\": {\n    \"FUNCTIONS_WORKER_RUNTIME\": \"custom\",\n    \"CAS_SCHEDULE\": \"0 */2 * * * *\",\n    \"CAS_QUEUE_NAME\": \"cas-batches\"\n  }\n}\n";

/// The `host.json` the handler runs under: the one in the working directory (the function
/// app's root, where the host starts the handler), else the one compiled in (which
/// `assemble` packages).
pub(crate) fn host_json() -> String {
    std::fs::read_to_string("host.json").unwrap_or_else(|_| HOST_JSON.to_string())
}

/// What `func` must not upload.
pub(crate) const FUNCIGNORE: &str = "# Only host.json, the function folders and the binary are published.\n.git*\n.vscode\nlocal.settings.json\nlocal.settings.json.example\n*.md\n*.ndjson\n";

/// Assembles the package in `out` around `binary`; returns the files written.
pub(crate) fn assemble(binary: &Path, out: &Path) -> std::io::Result<Vec<String>> {
    let exe = serde_json::from_str::<serde_json::Value>(HOST_JSON)
        .ok()
        .and_then(|h| {
            h["customHandler"]["description"]["defaultExecutablePath"]
                .as_str()
                .map(str::to_string)
        })
        .ok_or_else(|| {
            std::io::Error::other(
                "host.json names no customHandler.description.defaultExecutablePath",
            )
        })?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut write = |rel: &str, content: &[u8]| -> std::io::Result<()> {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, content)?;
        written.push(rel.to_string());
        Ok(())
    };
    write("host.json", HOST_JSON.as_bytes())?;
    for (name, json) in FUNCTIONS {
        write(&format!("{name}/function.json"), json.as_bytes())?;
    }
    write(".funcignore", FUNCIGNORE.as_bytes())?;
    write("local.settings.json", LOCAL_SETTINGS.as_bytes())?;
    let target = out.join(&exe);
    std::fs::copy(binary, &target)?;
    // `func publish` sets the exec bit on this file; set it here too for local runs.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    }
    written.push(exe);
    Ok(written)
}

/// What a zip deploy needs of an assembled folder `dir`: host.json, the function folders and
/// the binary (`local.settings.json` and `.funcignore` are for Core Tools only).
const NOT_DEPLOYED: [&str; 2] = [".funcignore", "local.settings.json"];

/// Writes the folder `dir` (as [`assemble`] made it, its files listed in `files`) as the
/// zip at `zip`, and its SHA-256 next to it as `<zip>.sha256` in `sha256sum`'s format (so
/// `sha256sum -c` checks a download); returns the checksum.
pub(crate) fn archive(dir: &Path, files: &[String], zip: &Path) -> std::io::Result<String> {
    if let Some(parent) = zip.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut sorted: Vec<&String> = files
        .iter()
        .filter(|f| !NOT_DEPLOYED.contains(&f.as_str()))
        .collect();
    sorted.sort();
    let mut w = zip::ZipWriter::new(std::io::BufWriter::new(std::fs::File::create(zip)?));
    for f in sorted {
        let path = dir.join(f);
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)?.permissions().mode()
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        w.add(f, &std::fs::read(&path)?, mode)?;
    }
    w.finish()?;
    let digest = Sha256::digest(std::fs::read(zip)?);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let name = zip
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut sum = zip.as_os_str().to_owned();
    sum.push(".sha256");
    std::fs::write(sum, format!("{hex}  {name}\n"))?;
    Ok(hex)
}
