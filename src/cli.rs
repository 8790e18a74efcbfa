//! The command line: `serve` for the Functions host, the rest for people.

use crate::app::Deployment;
use crate::config::Settings;
use crate::functions::{self, Handler, MAX_DEQUEUE_COUNT};
use crate::model::{unix_ms, DataType};
use crate::pipeline::ingest;
use crate::retry::Deadline;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Forwards Defender for Cloud Apps data to Microsoft Sentinel.
#[derive(Parser)]
#[command(name = "cas-sentinel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the Azure Functions custom handler (the host starts this).
    Serve {
        /// Port to listen on (127.0.0.1 only).
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT", default_value_t = 7071)]
        port: u16,
    },
    /// Do one real cycle against the settings in the environment: poll, then ingest the queue.
    Run {
        /// One cycle, then exit (the only mode; the timer does the rest in Azure).
        #[arg(long, required = true)]
        once: bool,
        /// Poll only this tenant of `CAS_TENANTS` (default: every tenant); the queue is
        /// drained whichever tenant's its messages are.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Check every setting, then prove each dependency (CAS, Graph, each Logs Ingestion stream, storage); report each problem and its fix.
    Validate {
        /// Print JSON (a list of {check, ok, detail | problem}) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this tenant of `CAS_TENANTS` (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Move poison messages back to the fan-out queue (or export/import them through a file).
    Replay {
        /// Only batches of this data type.
        #[arg(long)]
        data_type: Option<DataType>,
        /// Only batches of this tenant of `CAS_TENANTS`.
        #[arg(long)]
        tenant: Option<String>,
        /// Only messages enqueued since this time (RFC 3339, or an ISO 8601 duration ago, e.g. PT6H).
        #[arg(long, value_parser = parse_time)]
        since: Option<time::OffsetDateTime>,
        /// At most this many messages.
        #[arg(long)]
        max: Option<usize>,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove the batches' sent markers first, so rows are sent again even if they were sent before.
        #[arg(long)]
        force: bool,
        /// Write the matching poison messages to this file (NDJSON) and leave them in the queue.
        #[arg(long, conflicts_with_all = ["import", "force"])]
        export: Option<PathBuf>,
        /// Enqueue the messages of an export file onto the fan-out queue (the whole file is
        /// checked first; nothing is enqueued if a line is unusable).
        #[arg(long)]
        import: Option<PathBuf>,
        /// With --import: also enqueue messages that are not cas-sentinel envelopes.
        #[arg(long, requires = "import")]
        allow_foreign: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull a historic window and enqueue it, without touching the checkpoint.
    Backfill {
        /// The data type (alerts or activities).
        #[arg(long)]
        data_type: DataType,
        /// Start (RFC 3339, or an ISO 8601 duration ago, e.g. P7D).
        #[arg(long, value_parser = parse_time)]
        from: time::OffsetDateTime,
        /// End (RFC 3339, or a duration ago); default now.
        #[arg(long, value_parser = parse_time)]
        to: Option<time::OffsetDateTime>,
        /// Only this tenant of `CAS_TENANTS` (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Assemble the folder `func azure functionapp publish` expects around a built binary.
    Package {
        /// The binary to ship (scripts/package builds a static musl one).
        #[arg(long)]
        binary: PathBuf,
        /// The folder to create (replaced if it exists).
        #[arg(long, default_value = "dist/functionapp")]
        out: PathBuf,
        /// Also write the folder as this zip (what a zip deploy takes), with its SHA-256 in
        /// `<zip>.sha256`.
        #[arg(long)]
        zip: Option<PathBuf>,
    },
    /// Show checkpoints and their lag, queue depth, poison count and sent batches.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this tenant of `CAS_TENANTS` (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Entry point: parses arguments, sets up logging, runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init(crate::telemetry::detect_from_env());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve { port } => serve(port).await,
        Command::Run { tenant, .. } => run_once(tenant.as_deref()).await,
        Command::Validate { json, tenant } => validate(json, tenant.as_deref()).await,
        Command::Replay {
            data_type,
            tenant,
            since,
            max,
            dry_run,
            force,
            export,
            import,
            allow_foreign,
            json,
        } => {
            let sel = crate::ops::replay::Selection {
                data_type,
                tenant: None,
                since,
                max,
            };
            let import = import.map(|path| (path, allow_foreign));
            replay(sel, tenant.as_deref(), dry_run, force, export, import, json).await
        }
        Command::Backfill {
            data_type,
            from,
            to,
            tenant,
        } => backfill(data_type, from, to, tenant.as_deref()).await,
        Command::Package { binary, out, zip } => package(&binary, &out, zip.as_deref()),
        Command::Status { json, tenant } => {
            let deployment = storage_deployment_from_env().await?;
            let selected = deployment.select(tenant.as_deref())?;
            let adopted = deployment
                .tenants()
                .iter()
                .any(|a| a.settings.adopts_unnamed);
            let status = crate::ops::status::status(&selected, adopted).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
    }
}

async fn validate(json: bool, tenant: Option<&str>) -> Result<()> {
    let host = crate::package::host_json();
    use crate::ops::validate::{heading, line, validate};
    if !json {
        println!("{}", heading());
    }
    // Each check is printed as it completes, so a slow dependency never hides the others.
    let mut print = |c: &crate::ops::validate::Check| {
        if !json {
            println!("{}", line(c));
        }
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let checks = validate(&env, &host, tenant, &mut print).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    }
    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    if failed > 0 {
        bail!("{failed} problem(s) found");
    }
    Ok(())
}

async fn replay(
    mut sel: crate::ops::replay::Selection,
    tenant: Option<&str>,
    dry_run: bool,
    force: bool,
    export: Option<PathBuf>,
    import: Option<(PathBuf, bool)>,
    json: bool,
) -> Result<()> {
    let deployment = storage_deployment_from_env().await?;
    let app = deployment.first();
    if let Some(name) = tenant {
        // The messages name the tenant as it packs them (none for the unnamed tenant's
        // adopter).
        let owner = deployment.select(Some(name))?[0];
        sel.tenant = Some(owner.settings.message_tenant().cloned());
    }
    if let Some(path) = export {
        let n = crate::ops::replay::export(app, &sel, &path).await?;
        println!(
            "exported {n} poison message(s) to {}; they stay in {}",
            path.display(),
            app.poison.name()
        );
        return Ok(());
    }
    let report = match import {
        Some((path, allow_foreign)) => {
            crate::ops::replay::import(app, &sel, &path, dry_run, allow_foreign).await?
        }
        None => crate::ops::replay::replay(app, &sel, dry_run, force).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if dry_run { "would move" } else { "moved" };
    for l in &report.lines {
        println!("{verb} {l}");
    }
    let mut tail = String::new();
    if report.not_envelope > 0 {
        tail.push_str(&format!(
            ", {} not cas-sentinel envelopes",
            report.not_envelope
        ));
    }
    if report.markers_removed > 0 {
        tail.push_str(&format!(
            ", {} sent markers removed",
            report.markers_removed
        ));
    }
    println!(
        "{verb} {} message(s) to {}, left {}{tail}",
        report.moved,
        app.queue.name(),
        report.left,
    );
    Ok(())
}

async fn backfill(
    data_type: DataType,
    from: time::OffsetDateTime,
    to: Option<time::OffsetDateTime>,
    tenant: Option<&str>,
) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let to = to.unwrap_or(now);
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if to > now {
        bail!(
            "--to {} is in the future: a backfill reads what CAS already stored (leave --to out to mean now)",
            rfc3339(to)
        );
    }
    if from > to {
        bail!(
            "--from {} is after --to {}: give the earlier time as --from",
            rfc3339(from),
            rfc3339(to)
        );
    }
    let deployment = deployment_from_env().await?;
    let window = crate::model::Window::new(unix_ms(from), unix_ms(to))
        .map_err(|e| anyhow::anyhow!("--from/--to: {e}"))?;
    // One tenant after another: each reads its own CAS at its own request budget.
    for app in deployment.select(tenant)? {
        let label = app.label();
        let report = crate::ops::backfill::backfill(app, data_type, window)
            .await
            .with_context(|| format!("{label}backfill"))?;
        if let Some(w) = &report.overlap_warning {
            eprintln!("warning: {label}{w}");
        }
        println!(
            "{label}backfill {data_type} {window}: {} records in {} messages, {} CAS requests",
            report.records, report.messages, report.cas_requests
        );
    }
    Ok(())
}

fn package(
    binary: &std::path::Path,
    out: &std::path::Path,
    zip: Option<&std::path::Path>,
) -> Result<()> {
    let files = crate::package::assemble(binary, out)
        .with_context(|| format!("assembling {}", out.display()))?;
    for f in &files {
        println!("{}/{f}", out.display());
    }
    println!(
        "publish with: cd {} && func azure functionapp publish <function-app-name>",
        out.display()
    );
    if let Some(zip) = zip {
        let sum = crate::package::archive(out, &files, zip)
            .with_context(|| format!("writing {}", zip.display()))?;
        println!("{} (sha256 {sum})", zip.display());
        println!(
            "or deploy it with: az functionapp deployment source config-zip -g <resource-group> -n <function-app-name> --src {}",
            zip.display()
        );
    }
    Ok(())
}

async fn deployment_from_env() -> Result<Deployment> {
    deployment_from(Settings::all_from_env()).await
}

/// The deployment for a command that touches storage alone: only storage settings are demanded.
async fn storage_deployment_from_env() -> Result<Deployment> {
    deployment_from(Settings::all_from_env_for_storage()).await
}

/// Every tenant's context, once the storage account is known to answer: an operator's
/// command that cannot connect says so, naming the endpoint, in seconds.
async fn deployment_from(
    settings: Result<Vec<Settings>, crate::config::SettingsErrors>,
) -> Result<Deployment> {
    let settings = settings.map_err(|e| anyhow::anyhow!(e))?;
    let first = &settings[0];
    eprintln!(
        "signed in as {}",
        crate::auth::describe(&first.home_identity)
    );
    first.storage.reachable().await?;
    Ok(Deployment::new(settings)?)
}

/// RFC 3339, or an ISO 8601 duration meaning that long before now.
fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    crate::duration::parse_iso8601(s)
        .map(|d| time::OffsetDateTime::now_utc() - d)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor an ISO 8601 duration ago (P7D)"))
}

async fn serve(port: u16) -> Result<()> {
    // Bad settings must not crash the process into a restart loop: serve, and answer
    // every invocation with the reason.
    let handler = match Settings::all_from_env()
        .map_err(|e| e.to_string())
        .and_then(|s| {
            s[0].check_against_host(&crate::package::host_json())
                .map_err(|e| e.to_string())?;
            Deployment::new(s).map_err(|e| e.to_string())
        }) {
        Ok(deployment) => {
            for app in deployment.tenants() {
                if let Some(why) = app.settings.discovery_off {
                    tracing::warn!("{}{why}", app.label());
                }
            }
            Handler::Ready(Arc::new(deployment))
        }
        Err(why) => {
            tracing::error!("cas-sentinel is misconfigured: {why}");
            Handler::Misconfigured(why)
        }
    };
    let addr = functions::serve(handler, port)
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    tracing::info!(%addr, "custom handler ready");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for a shutdown signal")?;
    Ok(())
}

async fn run_once(tenant: Option<&str>) -> Result<()> {
    let deployment = deployment_from_env().await?;
    let selected = deployment.select(tenant)?;
    let app = deployment.first();
    let deadline = Deadline::after(app.settings.invocation_budget);
    let mut failed = false;
    let polls = selected
        .iter()
        .map(|t| async move { (t, t.poll(deadline).await) });
    for (t, reports) in futures::future::join_all(polls).await {
        let label = t.label();
        if let Some(why) = t.settings.discovery_off {
            println!("note: {label}{why}");
        }
        for r in reports {
            match r {
                Ok(report) => println!("poll: {label}{report}"),
                Err(e) => {
                    failed = true;
                    println!("poll: {label}FAILED: {e}");
                }
            }
        }
    }
    let (mut sent, mut skipped, mut errors) = (0, 0, 0);
    loop {
        let batch = app.queue.receive(32, 300).await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let Some(text) = crate::storage::queue::decode_stored(&m.raw_text) else {
                bail!(
                    "message {} in {} is not base64 text; leaving it for inspection",
                    m.id,
                    app.queue.name()
                );
            };
            match deployment
                .ingest(&text, Deadline::after(app.settings.invocation_budget))
                .await
            {
                Ok(o @ ingest::IngestOutcome::Sent { .. }) => {
                    sent += 1;
                    println!("ingest: {o}");
                    app.queue.delete(&m).await?;
                }
                Ok(o) => {
                    skipped += 1;
                    println!("ingest: {o}");
                    app.queue.delete(&m).await?;
                }
                Err(e) => {
                    errors += 1;
                    println!("ingest: FAILED message {}: {e}", m.id);
                    if m.dequeue_count >= MAX_DEQUEUE_COUNT {
                        app.poison.send_raw(m.raw_text.clone()).await?;
                        app.queue.delete(&m).await?;
                    } else {
                        app.queue.update_visibility(&m, 0).await?;
                    }
                }
            }
        }
        if errors > 0 {
            break;
        }
    }
    println!("run: {sent} batches sent, {skipped} already sent, {errors} failed");
    if failed || errors > 0 {
        bail!("the cycle had failures (see above)");
    }
    Ok(())
}
