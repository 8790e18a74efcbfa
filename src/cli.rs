//! The command line: `serve` for the Functions host, the rest for people.

use crate::app::App;
use crate::config::Settings;
use crate::functions::{self, ingest, poll, Handler};
use crate::local::{self, host::MAX_DEQUEUE_COUNT, DemoOptions};
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
    /// Run the whole pipeline locally on a simulated tenant, with no Azure at all.
    Demo {
        /// Timer ticks to run.
        #[arg(long, default_value_t = 3)]
        ticks: u32,
        /// New alerts before each tick after the first.
        #[arg(long, default_value_t = 25)]
        alerts_per_tick: usize,
        /// New activities before each tick after the first.
        #[arg(long, default_value_t = 400)]
        activities_per_tick: usize,
        /// Folder for output files and scratch data.
        #[arg(long, default_value = ".local")]
        dir: PathBuf,
    },
    /// Do one real cycle against the settings in the environment: poll, then ingest the queue.
    Run {
        /// One cycle, then exit (the only mode; the timer does the rest in Azure).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Check the settings in the environment and report every problem.
    Validate,
    /// Write the DCR stream declarations, table definitions and docs/tables.md generated
    /// from the row types (or, with --check, fail if the files on disk differ).
    Schema {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Only compare; exit non-zero when a file is missing or different.
        #[arg(long)]
        check: bool,
    },
}

/// Entry point: parses arguments, sets up logging, runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
        Command::Demo {
            ticks,
            alerts_per_tick,
            activities_per_tick,
            dir,
        } => {
            let bin = std::env::current_exe().context("locating this binary")?;
            local::demo(
                bin,
                DemoOptions {
                    ticks,
                    alerts_per_tick,
                    activities_per_tick,
                    dir,
                },
            )
            .await?;
            Ok(())
        }
        Command::Run { .. } => run_once().await,
        Command::Schema { root, check } => schema(&root, check),
        Command::Validate => {
            let settings = Settings::from_env().map_err(|e| anyhow::anyhow!(e))?;
            App::new(settings).context("building clients")?;
            println!("settings are valid");
            Ok(())
        }
    }
}

fn schema(root: &std::path::Path, check: bool) -> Result<()> {
    let mut drifted = Vec::new();
    for f in crate::schema::generate::files() {
        let path = root.join(f.path);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(f.content.as_str()) {
                drifted.push(f.path);
            }
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, &f.content)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", f.path);
        }
    }
    if !drifted.is_empty() {
        bail!(
            "generated files differ from the code: {}; run `cas-sentinel schema`",
            drifted.join(", ")
        );
    }
    Ok(())
}

async fn serve(port: u16) -> Result<()> {
    // Bad settings must not crash the process into a restart loop: serve, and answer
    // every invocation with the reason.
    let handler = match Settings::from_env()
        .map_err(|e| e.to_string())
        .and_then(|s| App::new(s).map_err(|e| e.to_string()))
    {
        Ok(app) => Handler::Ready(Arc::new(app)),
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

async fn run_once() -> Result<()> {
    let settings = Settings::from_env().map_err(|e| anyhow::anyhow!(e))?;
    let app = App::new(settings)?;
    let deadline = Deadline::after(app.settings.invocation_budget);
    let mut failed = false;
    for r in poll::run(&app, deadline).await {
        match r {
            Ok(report) => println!("poll: {report}"),
            Err(e) => {
                failed = true;
                println!("poll: FAILED: {e}");
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
            let Some(text) = crate::queue::decode_stored(&m.raw_text) else {
                bail!(
                    "message {} in {} is not base64 text; leaving it for inspection",
                    m.id,
                    app.queue.name()
                );
            };
            match ingest::process(&app, &text, Deadline::after(app.settings.invocation_budget))
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
