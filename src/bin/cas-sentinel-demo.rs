//! `cas-sentinel-demo`: the whole pipeline on one machine, with no Azure account. Azurite
//! for storage, the simulated CAS tenant, Microsoft Graph, identity and Logs Ingestion
//! endpoints, and the real `cas-sentinel` handler binary (next to this one) started and
//! driven as the Functions host does. `scripts/demo` builds both and runs this.

use anyhow::{Context, Result};
use cas_sentinel::testing::local::{demo, DemoOptions};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the pipeline for a few timer ticks on the simulated tenant and prints what happened.
#[derive(Parser)]
#[command(name = "cas-sentinel-demo", version, about)]
struct Args {
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
    /// The handler binary to run (default: `cas-sentinel` beside this binary).
    #[arg(long)]
    handler: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cas_sentinel::testing::telemetry::init(cas_sentinel::testing::telemetry::detect_from_env());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let handler = match args.handler {
        Some(h) => h,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("cas-sentinel"),
    };
    anyhow::ensure!(
        handler.is_file(),
        "no handler binary at {} (build it: cargo build --bins --features sim)",
        handler.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(demo(
        handler,
        DemoOptions {
            ticks: args.ticks,
            alerts_per_tick: args.alerts_per_tick,
            activities_per_tick: args.activities_per_tick,
            dir: args.dir,
        },
    ))?;
    Ok(())
}
