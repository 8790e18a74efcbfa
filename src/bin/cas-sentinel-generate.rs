//! Writes (or, with `--check`, checks) the files generated from the code: the DCR stream
//! declarations and table definitions in `infra/generated/`, `docs/tables.md`, and the
//! README's settings table. A development tool: built with the `sim` feature, never
//! packaged, and run from the repository (`scripts/generate`).

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The files generated from the row types and the settings' descriptions.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The repository's root (where Cargo.toml names cas-sentinel).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Only compare; exit non-zero when a file is missing or different.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args.root, args.check) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(root: &Path, check: bool) -> Result<(), String> {
    // Outside the repository there is nothing to compare with or write into.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"cas-sentinel\"") {
        return Err(format!(
            "{} is not the cas-sentinel repository (no Cargo.toml naming it); give --root",
            root.display()
        ));
    }
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .map_err(|e| format!("{}: {e}", readme_path.display()))?;
    let mut drifted = Vec::new();
    for f in cas_sentinel::testing::schema::generate::files(&readme) {
        let path = root.join(f.path);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(f.content.as_str()) {
                drifted.push(f.path);
            }
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, &f.content).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", f.path);
    }
    if !drifted.is_empty() {
        return Err(format!(
            "generated files differ from the code: {}; run scripts/generate",
            drifted.join(", ")
        ));
    }
    Ok(())
}
