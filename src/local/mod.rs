//! The whole pipeline on one machine, with no Azure account: Azurite for storage, the
//! simulated CAS tenant, Microsoft Graph, identity endpoint and Logs Ingestion endpoint, the real handler
//! binary started as the Functions host starts it, and [`host::HostEmulator`] driving it.
//!
//! [`Harness`] assembles these; the `demo` command and the end-to-end tests both use it.

pub(crate) mod azurite;
pub(crate) mod host;
mod relay;
mod resolution;

pub use resolution::{resolution_latency, Resolutions};

use crate::auth::sim::{IdentitySim, HEADER_SECRET};
use crate::cas::sim::{CasSim, SimConfig};
use crate::config::{Settings, StorageSettings};
use crate::graph::sim::GraphSim;
use crate::sentinel::sim::{IngestionSim, SIM_DCR};
use crate::storage::queue::{Queue, QueueError};
use azurite::{free_port, Azurite};
use host::HostEmulator;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use url::Url;

/// Something in the local set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Azurite could not be started or reached.
    #[error("Azurite: {0}")]
    Azurite(String),
    /// The handler process could not be started or answered wrongly.
    #[error("handler: {0}")]
    Handler(String),
    /// A queue call failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The generated settings were refused (a bug).
    #[error("settings: {0}")]
    Settings(String),
    /// The demo's folder holds files it did not make.
    #[error("{0}")]
    Folder(String),
    /// Local I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How to set the harness up.
pub struct HarnessOptions {
    /// The `cas-sentinel` binary to run as the handler.
    pub handler_bin: PathBuf,
    /// Scratch folder (Azurite data).
    pub work_dir: PathBuf,
    /// Where the ingestion simulator writes NDJSON (none: memory only).
    pub out_dir: Option<PathBuf>,
    /// Keep accepted rows in memory for inspection.
    pub keep_rows: bool,
    /// CAS tenant behaviour.
    pub cas: SimConfig,
    /// Extra settings for the handler (override the defaults).
    pub env: Vec<(String, String)>,
    /// Reach storage, from the handler only, through relays that [`Harness::freeze_storage`]
    /// can make hang.
    pub relay_storage: bool,
}

/// Marks a folder the demo made, so a later run may empty it.
const MADE_BY_DEMO: &str = ".made-by-cas-sentinel-demo";

/// Makes `dir` empty for a run: a folder an earlier run made (it holds the marker) is
/// emptied; a folder someone else made is used only if it is empty, and otherwise the run
/// stops, naming it, rather than delete what it did not create.
fn fresh_dir(dir: &Path) -> Result<(), LocalError> {
    if dir.join(MADE_BY_DEMO).exists() {
        std::fs::remove_dir_all(dir)?;
    } else if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(LocalError::Folder(format!(
            "{} exists and was not made by the demo; its files are left alone. Give --dir a folder of its own (or an empty one)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MADE_BY_DEMO), b"")?;
    Ok(())
}

/// Everything running.
pub struct Harness {
    /// Storage.
    pub azurite: Azurite,
    /// The simulated tenant.
    pub cas: Arc<CasSim>,
    /// The simulated Microsoft Graph (discovery); pages of 3 apps and of 4 users or IPs,
    /// so every snapshot pages.
    pub graph: Arc<GraphSim>,
    /// The simulated Logs Ingestion endpoint.
    pub sink: Arc<IngestionSim>,
    /// The simulated managed-identity endpoint.
    pub identity: Arc<IdentitySim>,
    /// The Functions host stand-in.
    pub host: HostEmulator,
    /// Whether the handler's storage relays hold everything (see [`HarnessOptions::relay_storage`]).
    storage_frozen: Arc<std::sync::atomic::AtomicBool>,
    /// The settings the handler runs with.
    pub settings: Settings,
    /// The fan-out queue.
    pub queue: Queue,
    /// The poison queue.
    pub poison: Queue,
    handler: std::sync::Mutex<Option<Child>>,
    handler_bin: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
}

impl Harness {
    /// Starts storage, the simulators and the handler, and waits until it is ready.
    pub async fn start(opts: HarnessOptions) -> Result<Harness, LocalError> {
        let azurite = Azurite::start(&opts.work_dir.join("azurite")).await?;
        let (identity, identity_url) = IdentitySim::start().await;
        let (cas, cas_url) = CasSim::start(opts.cas).await;
        let (graph, graph_url) = GraphSim::start(3, 4).await;
        let (sink, sink_url) = IngestionSim::start(opts.out_dir, opts.keep_rows).await;
        let storage = azurite.storage();
        let storage_frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler_storage = if opts.relay_storage {
            let relay = |port: u16| {
                relay::Relay::start(
                    (std::net::Ipv4Addr::LOCALHOST, port).into(),
                    storage_frozen.clone(),
                )
            };
            let (q, b) = (
                relay(azurite.queue_port).await?,
                relay(azurite.blob_port).await?,
            );
            StorageSettings::dev_storage(
                &format!("http://{}/devstoreaccount1", q.addr),
                &format!("http://{}/devstoreaccount1", b.addr),
            )
            .map_err(|e| LocalError::Settings(e.to_string()))?
        } else {
            storage.clone()
        };
        let mut env: Vec<(String, String)> = vec![
            ("CAS_API_URL".into(), cas_url.to_string()),
            ("GRAPH_API_URL".into(), graph_url.to_string()),
            ("SENTINEL_INGESTION_ENDPOINT".into(), sink_url.to_string()),
            ("SENTINEL_DCR_IMMUTABLE_ID".into(), SIM_DCR.into()),
            (
                "AzureWebJobsStorage".into(),
                handler_storage
                    .connection_string()
                    .expect("Azurite is key-based"),
            ),
            ("IDENTITY_ENDPOINT".into(), identity_url),
            ("IDENTITY_HEADER".into(), HEADER_SECRET.into()),
            ("CAS_SETTLE_DELAY".into(), "PT1S".into()),
            ("CAS_INVOCATION_BUDGET".into(), "PT60S".into()),
        ];
        // Overrides come last; both Settings::from_pairs and the child's environment
        // take the last value of a name.
        env.extend(opts.env);
        let settings =
            Settings::from_pairs(&env).map_err(|e| LocalError::Settings(e.to_string()))?;
        let open = |name: &str| {
            Queue::open(&storage, name, None).map_err(|e| LocalError::Settings(e.to_string()))
        };
        let queue = open(&settings.queue_name)?;
        let poison = open(&settings.poison_queue_name())?;
        queue.ensure().await?;
        let port = free_port()?;
        let handler_url = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("a loopback URL");
        let h = Harness {
            azurite,
            cas,
            graph,
            sink,
            identity,
            host: HostEmulator::new(handler_url, queue.clone(), poison.clone()),
            queue,
            poison,
            storage_frozen,
            settings,
            handler: Default::default(),
            handler_bin: opts.handler_bin,
            env,
            port,
        };
        h.start_handler().await?;
        Ok(h)
    }

    /// Makes the handler's storage hang (every call waits, no answer) or answer again; the
    /// harness must have been started with [`HarnessOptions::relay_storage`].
    pub fn freeze_storage(&self, frozen: bool) {
        self.storage_frozen
            .store(frozen, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the handler process the way the host does (port in
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`, settings in the environment) and waits for `GET /`.
    pub async fn start_handler(&self) -> Result<Duration, LocalError> {
        *self.child() = Some(self.spawn_handler()?);
        self.host.wait_ready(Duration::from_secs(30)).await
    }

    fn spawn_handler(&self) -> Result<Child, LocalError> {
        let mut cmd = Command::new(&self.handler_bin);
        cmd.arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", self.port.to_string())
            .env(
                "RUST_LOG",
                std::env::var("CAS_SENTINEL_HANDLER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        // As the host does: stderr into a file (a test reads it as App Insights would).
        if let Some(file) = std::env::var_os("CAS_SENTINEL_HANDLER_STDERR") {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)?;
            cmd.stderr(f);
        }
        cmd.spawn().map_err(|e| {
            LocalError::Handler(format!(
                "could not start {}: {e}",
                self.handler_bin.display()
            ))
        })
    }

    /// Kills the handler with SIGKILL (no chance to clean up), as a crashed instance.
    pub async fn kill_handler(&self) {
        let child = self.child().take();
        if let Some(mut c) = child {
            let _ = c.kill().await;
        }
    }

    /// The handler process's id, while it runs (the benchmark reads its CPU and memory).
    pub fn handler_pid(&self) -> Option<u32> {
        self.child().as_ref().and_then(|c| c.id())
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.handler.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills the handler with SIGKILL without waiting for it to exit (usable while another
    /// future borrows the harness).
    pub fn kill_handler_now(&self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.start_kill();
        }
    }

    /// Starts a new handler process in the background, as the host restarts a crashed
    /// worker; deliveries fail until it answers.
    pub fn restart_handler_later(&self) {
        match self.spawn_handler() {
            Ok(child) => *self.child() = Some(child),
            Err(e) => tracing::error!("could not restart the handler: {e}"),
        }
    }

    /// Restarts the handler with these settings changed, as a redeploy with new app
    /// settings would; waits until it answers.
    pub async fn restart_handler_with(
        &mut self,
        changes: &[(&str, &str)],
    ) -> Result<Duration, LocalError> {
        self.kill_handler().await;
        self.env
            .extend(changes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.start_handler().await
    }

    /// The settings the handler runs with, as environment variables.
    pub fn handler_env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// The handler's base URL.
    pub fn handler_url(&self) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}/", self.port)).expect("a loopback URL")
    }
}

/// What the demo does.
pub struct DemoOptions {
    /// Timer ticks to run.
    pub ticks: u32,
    /// New alerts raised before each tick.
    pub alerts_per_tick: usize,
    /// New activities stored before each tick.
    pub activities_per_tick: usize,
    /// Where output and scratch data go.
    pub dir: PathBuf,
}

/// A day of history for the first run's lookback, and two continuous reports.
fn seed(h: &Harness) {
    let now = crate::model::now_ms();
    h.cas
        .add_alerts((0..40).map(|i| now - 20 * 3_600_000 + i * 1_700_000));
    h.cas
        .add_activities((0..300).map(|i| now - 20 * 3_600_000 + i * 230_000), |n| {
            (n as i64 % 7) * 60_000
        });
    // One of each kind the ASIM tables tell apart (sign-outs, renames, role changes…).
    h.cas.add_activity_kinds(now - 10 * 3_600_000);
    let apps = |first: u64, n: u64| {
        (first..first + n)
            .map(|i| {
                crate::graph::sim::app(
                    i,
                    &format!("App {i}"),
                    "cloudStorage",
                    (i % 6) as usize + 1,
                    (i % 4) as usize + 1,
                )
            })
            .collect()
    };
    h.graph.add_report("Global View", apps(1, 7));
    h.graph.add_report("Marketing Department", apps(40, 4));
}

/// The timer ticks, each followed by draining the queue as the host does; their totals.
async fn ticks(h: &Harness, opts: &DemoOptions) -> Result<host::DrainStats, LocalError> {
    let mut totals = host::DrainStats::default();
    for tick in 1..=opts.ticks {
        if tick > 1 {
            let now = crate::model::now_ms();
            h.cas
                .add_alerts((0..opts.alerts_per_tick as i64).map(|i| now - 500 + i % 3));
            h.cas.add_activities(
                (0..opts.activities_per_tick as i64).map(|i| now - 500 + i % 5),
                |n| (n as i64 % 5) * 45_000,
            );
            tokio::time::sleep(Duration::from_millis(1600)).await; // let the settle delay pass
        }
        let (ok, logs) = h.host.tick(false).await?;
        println!(
            "\ntick {tick}: PollCas {}",
            if ok { "succeeded" } else { "FAILED" }
        );
        for l in logs {
            println!("  {l}");
        }
        let d = h.host.drain(Duration::from_secs(120)).await?;
        println!(
            "  IngestBatch: {} invocations, {} succeeded, {} failed, {} to poison",
            d.invocations, d.succeeded, d.failed, d.poisoned
        );
        totals += d;
    }
    Ok(totals)
}

/// Runs the pipeline for a few ticks on the simulated tenant and prints what happened.
pub async fn demo(handler_bin: PathBuf, opts: DemoOptions) -> Result<(), LocalError> {
    let out_dir = opts.dir.join("out");
    let work_dir = opts.dir.join("work");
    for d in [&out_dir, &work_dir] {
        fresh_dir(d)?;
    }
    println!("cas-sentinel local run: simulated CAS tenant → handler (driven as the Functions host drives it) → local Logs Ingestion endpoint");
    println!("starting Azurite, the simulators and the handler…");
    let h = Harness::start(HarnessOptions {
        handler_bin,
        work_dir,
        out_dir: Some(out_dir.clone()),
        keep_rows: false,
        cas: SimConfig::default(),
        // As infra/ deploys it: activities into the ASIM tables too.
        env: vec![("SENTINEL_ASIM".into(), "on".into())],
        relay_storage: false,
    })
    .await?;
    seed(&h);
    let totals = ticks(&h, &opts).await?;
    // The two phases are summed up apart: what the ticks did, then what the live run
    // added, so no line mixes the counts of one with the other.
    let (cas, sink) = (h.cas.stats(), h.sink.stats());
    let graph_requests = h.graph.stats().requests;
    println!("\nafter {} ticks", opts.ticks);
    println!(
        "  CAS tenant holds:     {} alerts, {} activities, 2 continuous reports",
        h.cas.alert_ids().len(),
        h.cas.activity_ids().len()
    );
    println!(
        "  queue messages:       {} ingested, {} failed deliveries, {} in poison",
        totals.succeeded, totals.failed, totals.poisoned
    );
    for (table, rows) in &sink.rows {
        println!("  rows ingested:        {table:<28} {rows}");
    }
    println!("  API calls:            CAS {} (at most {} in any minute, limit 30), Microsoft Graph {graph_requests}, Logs Ingestion {} ({} accepted, {} KiB)", cas.requests, cas.max_in_any_minute, sink.calls, sink.accepted_calls, sink.bytes / 1024);
    for line in discovery_summary(&out_dir.join(format!(
        "{}.ndjson",
        crate::model::DataType::Discovery.table()
    ))) {
        println!("  discovery rows:       {line}");
    }
    let (alerts_before, activities_before) = (h.cas.alert_ids().len(), h.cas.activity_ids().len());
    println!(
        "\nlive: records created every 200 ms for 20 s, PollCas every 5 s (settle delay 1 s)…"
    );
    let live = live_latency(&h, Duration::from_secs(20), Duration::from_secs(5)).await?;
    let (cas_live, sink_live) = (h.cas.stats(), h.sink.stats());
    println!("\nlive phase");
    println!(
        "  records created:      {} alerts, {} activities",
        h.cas.alert_ids().len() - alerts_before,
        h.cas.activity_ids().len() - activities_before
    );
    println!(
        "  queue messages:       {} ingested, {} failed deliveries, {} in poison",
        live.drained.succeeded, live.drained.failed, live.drained.poisoned
    );
    for (table, rows) in &sink_live.rows {
        let before = sink.rows.get(table).copied().unwrap_or(0);
        println!("  rows ingested:        {table:<28} {}", rows - before);
    }
    println!(
        "  API calls:            CAS {}, Logs Ingestion {}",
        cas_live.requests - cas.requests,
        sink_live.calls - sink.calls
    );
    let (median, p95) = live.deployed(Duration::from_secs(60), Duration::from_secs(120));
    println!("  end-to-end latency:   {live}");
    println!("                        deployed with the defaults (settle 1 min, a tick every 2 min): about {median:.0} s at the median, {p95:.0} s at p95");
    println!();
    println!("  output files:");
    // The rows' files, not the demo's own marker (a dot file).
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    for f in files {
        println!("    {}", display(&f));
    }
    h.kill_handler().await;
    Ok(())
}

/// Per continuous report, the discovery rows written: apps, users and IP addresses, and
/// the snapshots they belong to.
fn discovery_summary(ndjson: &Path) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let text = std::fs::read_to_string(ndjson).unwrap_or_default();
    let mut per: BTreeMap<String, (BTreeMap<String, usize>, BTreeSet<String>)> = BTreeMap::new();
    for row in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let field = |k: &str| row[k].as_str().unwrap_or("?").to_string();
        let e = per.entry(field("StreamName")).or_default();
        *e.0.entry(field("RowType")).or_default() += 1;
        e.1.insert(field("TimeGenerated"));
    }
    per.into_iter()
        .map(|(report, (kinds, snapshots))| {
            let n = |k: &str| kinds.get(k).copied().unwrap_or(0);
            format!(
                "{report}: {} apps, {} users, {} IP addresses, in {} snapshot(s)",
                n("App"),
                n("User"),
                n("IpAddress"),
                snapshots.len()
            )
        })
        .collect()
}

/// Latency from a record's being stored by CAS to its row being accepted by Logs Ingestion.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// Records measured.
    pub records: usize,
    /// Records stored in the run whose row never arrived (should be none).
    pub missing: usize,
    /// Median, in milliseconds.
    pub median_ms: i64,
    /// 95th percentile, in milliseconds.
    pub p95_ms: i64,
    /// How often PollCas ran.
    pub tick_every: Duration,
    /// What draining the queue after each run did.
    pub drained: host::DrainStats,
}

impl Latency {
    /// The latency of these delays (ms), out of `expected` that should have arrived.
    fn of(
        mut delays: Vec<i64>,
        expected: usize,
        tick_every: Duration,
        drained: host::DrainStats,
    ) -> Latency {
        delays.sort_unstable();
        let pick = |q: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        Latency {
            missing: expected.saturating_sub(delays.len()),
            records: delays.len(),
            median_ms: pick(0.5),
            p95_ms: pick(0.95),
            tick_every,
            drained,
        }
    }

    /// The latency to expect deployed with a `settle` delay and a tick every `schedule`,
    /// as (median, p95) seconds: the pipeline's own part (what was measured, less the wait
    /// for the next tick) plus the settle delay and the wait for the next tick there.
    pub fn deployed(&self, settle: Duration, schedule: Duration) -> (f64, f64) {
        let own = |measured_ms: i64, q: f64| {
            (measured_ms as f64 / 1000.0 - self.tick_every.as_secs_f64() * q).max(0.0)
        };
        (
            settle.as_secs_f64() + schedule.as_secs_f64() * 0.5 + own(self.median_ms, 0.5),
            settle.as_secs_f64() + schedule.as_secs_f64() * 0.95 + own(self.p95_ms, 0.95),
        )
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.1} s, p95 {:.1} s over {} records (PollCas every {} s)",
            self.median_ms as f64 / 1000.0,
            self.p95_ms as f64 / 1000.0,
            self.records,
            self.tick_every.as_secs()
        )?;
        if self.missing > 0 {
            write!(f, "; {} records never arrived", self.missing)?;
        }
        Ok(())
    }
}

/// Runs the pipeline live for `run_for`: the tenant stores an alert and two activities
/// every 200 ms while PollCas runs every `tick_every` and the queue is drained after each
/// run, as the host would; then measures, for every record stored in that time, the delay
/// from CAS's `created` (an alert's date) to its first row accepted by Logs Ingestion.
pub async fn live_latency(
    h: &Harness,
    run_for: Duration,
    tick_every: Duration,
) -> Result<Latency, LocalError> {
    let started = crate::model::now_ms();
    let generator = {
        let cas = h.cas.clone();
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + run_for;
            while tokio::time::Instant::now() < until {
                let now = crate::model::now_ms();
                cas.add_alerts([now]);
                cas.add_activities([now, now], |_| 30_000);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut next = tokio::time::Instant::now() + tick_every;
    // Ticks until everything stored in the run has been polled (a settle delay past its end).
    let last = tokio::time::Instant::now() + run_for + tick_every + Duration::from_secs(2);
    let mut drained = host::DrainStats::default();
    while next <= last {
        tokio::time::sleep_until(next).await;
        next += tick_every;
        h.host.tick(false).await?;
        drained += h.host.drain(Duration::from_secs(120)).await?;
    }
    generator
        .await
        .map_err(|e| LocalError::Handler(e.to_string()))?;
    let accepted = h.sink.first_accepted();
    let stored: Vec<(String, i64)> = h
        .cas
        .stored_at()
        .into_iter()
        .filter(|(_, at)| *at >= started)
        .collect();
    let delays: Vec<i64> = stored
        .iter()
        .filter_map(|(id, at)| Some(accepted.get(id)? - at))
        .collect();
    Ok(Latency::of(delays, stored.len(), tick_every, drained))
}

fn display(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|d| p.strip_prefix(d).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_empties_only_the_folders_it_made() {
        let root = std::env::temp_dir().join(format!("cas-demo-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mine = root.join("out");
        fresh_dir(&mine).unwrap();
        std::fs::write(mine.join("rows.ndjson"), b"{}").unwrap();
        fresh_dir(&mine).unwrap();
        assert!(
            !mine.join("rows.ndjson").exists(),
            "its own output is replaced"
        );
        let theirs = root.join("work");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("thesis.tex"), b"years of work").unwrap();
        let err = fresh_dir(&theirs).unwrap_err().to_string();
        assert!(err.contains("was not made by the demo"), "{err}");
        assert_eq!(
            std::fs::read(theirs.join("thesis.tex")).unwrap(),
            b"years of work"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
