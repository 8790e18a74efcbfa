//! Several tenants from one deployment (`CAS_TENANTS`), through the handler binary as the
//! host runs it: one poll's memory and CPU as the tenants grow, and the healthy tenants'
//! lag, end to end, while another catches up a backlog.

use super::{cpu_seconds, metric, number_before, rss_kib, Metric};
use cas_sentinel::testing::cas::sim::{CasSim, SimConfig};
use cas_sentinel::testing::local::{Harness, HarnessOptions};
use cas_sentinel::testing::model::now_ms;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// New records per tenant and poll: two minutes (the default schedule) of a busy tenant.
const ALERTS: i64 = 50;
const ACTIVITIES: i64 = 500;
/// The backlog of one tenant while the others' lag is measured.
const BACKLOG: u64 = 500_000;

/// The rows: poll cost at 1, 20 and 100 tenants; healthy tenants' lag with and without a
/// tenant catching up `BACKLOG` activities.
pub(super) async fn tenant_rows(bin: &Path, report: &mut Vec<Metric>, notes: &mut Vec<String>) {
    let mut costs = Vec::new();
    for n in [1, 20, 100] {
        let c = poll_cost(bin, n).await;
        let expected = n as u64 * (ALERTS + ACTIVITIES) as u64;
        report.push(metric(
            &format!("one PollCas of {n} tenant(s), {ALERTS} alerts and {ACTIVITIES} activities each: peak RSS, CPU, wall"),
            format!(
                "{:.1} MB, {:.2} CPU-s ({:.1} ms a tenant), {:.1} s; {} of {expected} records enqueued",
                c.peak_mb,
                c.cpu_s,
                c.cpu_s * 1000.0 / n as f64,
                c.wall_s,
                c.records
            ),
            "< 128 MB at 100 tenants, every record",
            Some(c.records == expected && (n < 100 || c.peak_mb < 128.0)),
        ));
        costs.push((n, c));
    }
    if let (Some((_, one)), Some((n, many))) = (costs.first(), costs.last()) {
        let per_tenant_mb = (many.peak_mb - one.peak_mb) / (*n as f64 - 1.0);
        let per_tenant_cpu = many.cpu_s / *n as f64;
        // A Flex Consumption instance of 2 GB runs PollCas every 2 minutes: memory allows
        // (2048 - base) / per-tenant MB tenants; CPU, one core's 120 s per run spent at
        // half its time, 60 / per-tenant CPU-s.
        let by_memory = ((2048.0 - one.peak_mb) / per_tenant_mb.max(0.01)) as u64;
        let by_cpu = (60.0 / per_tenant_cpu.max(1e-6)) as u64;
        notes.push(format!(
            "Tenants per instance, from the rows above: each tenant adds {per_tenant_mb:.2} MB to a poll's peak and {:.1} ms of CPU. A 2 GB Flex Consumption instance polling every 2 minutes (CAS_SCHEDULE), spending at most half of one core on PollCas, would serve about {} tenants by memory and {} by CPU: about {} tenants. The wall time of a poll is CAS's to set (30 requests a minute per tenant, which the tenants do not share), not the instance's. Beyond that, scale out by deployment: split the tenants across two function apps, each with its own CAS_TENANTS (the same workspace and DCR can serve both).",
            per_tenant_cpu * 1000.0,
            by_memory,
            by_cpu,
            by_memory.min(by_cpu),
        ));
    }
    let quiet = backlog_lag(bin, false).await;
    let busy = backlog_lag(bin, true).await;
    for (what, l) in [
        ("no backlog", &quiet),
        ("one tenant catching up 500,000 activities", &busy),
    ] {
        report.push(metric(
            &format!("slowest healthy tenant's lag, activity stored in CAS to row accepted, 3 healthy tenants, {what}"),
            format!(
                "p95 {:.1} s, max {:.1} s ({} of {} records; the slowest tenant's p50 {:.1} s){}",
                l.p95_s,
                l.max_s,
                l.arrived,
                l.created,
                l.p50_s,
                if l.backlog_records > 0 {
                    format!("; the backlog tenant forwarded {} records meanwhile", l.backlog_records)
                } else {
                    String::new()
                }
            ),
            "every record; with a backlog, p95 within 60 s of the run without",
            Some(l.arrived == l.created && (l.backlog_records == 0 || l.p95_s <= quiet.p95_s + 60.0)),
        ));
    }
    notes.push(format!(
        "Tenant rows: each tenant is a simulated CAS of its own (legacy token, CAS's 30 requests a minute), behind one handler, one Azurite and one Logs Ingestion simulator. Poll cost: one PollCas invocation posted as the host posts it, {ALERTS} alerts and {ACTIVITIES} activities of about 1.5 KiB per tenant in the last five minutes; RSS is VmHWM, CPU user+system. Lag: PollCas every 60 s and the queue drained beside it, as the host runs both functions; each healthy tenant gets 10 activities every 5 s for 5 minutes; a record's lag is from when CAS stored it to when its row was accepted. The backlog tenant holds {BACKLOG} activities over the last 23 hours, read in scan pages of 5,000."
    ));
}

/// What one poll of many tenants cost.
struct PollCost {
    records: u64,
    peak_mb: f64,
    cpu_s: f64,
    wall_s: f64,
}

/// A simulated CAS that takes the legacy token `t` alone, at CAS's own limit.
fn token_only() -> SimConfig {
    SimConfig {
        legacy_token: Some("t".into()),
        accept_entra: false,
        ..SimConfig::default()
    }
}

/// A tenant's own simulated CAS (see [`token_only`]).
async fn tenant_cas() -> (Arc<CasSim>, url::Url) {
    let (sim, url) = CasSim::start(token_only()).await;
    sim.pad_activities(600);
    (sim, url)
}

async fn harness(bin: &Path, name: &str, env: Vec<(String, String)>) -> Harness {
    let dir = std::env::temp_dir().join(format!("cas-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Harness::start(HarnessOptions {
        handler_bin: bin.to_path_buf(),
        work_dir: dir,
        out_dir: None,
        keep_rows: false,
        cas: token_only(),
        env,
        relay_storage: false,
    })
    .await
    .expect("the harness starts")
}

fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn poll_cost(bin: &Path, n: usize) -> PollCost {
    let now = now_ms();
    let mut env = settings(&[
        ("CAS_DATA_TYPES", "alerts,activities"),
        ("CAS_API_TOKEN", "t"),
        ("CAS_LOOKBACK", "PT10M"),
    ]);
    let mut names = Vec::new();
    let mut sims = Vec::new();
    for i in 0..n {
        let (sim, url) = tenant_cas().await;
        sim.add_alerts((0..ALERTS).map(|k| now - 300_000 + k * 1000));
        sim.add_activities((0..ACTIVITIES).map(|k| now - 300_000 + k * 400), |_| 0);
        let name = format!("t{i:03}");
        env.push((format!("{name}__CAS_API_URL"), url.to_string()));
        names.push(name);
        sims.push(sim);
    }
    env.push(("CAS_TENANTS".into(), names.join(",")));
    let h = harness(bin, &format!("tenants-{n}"), env).await;
    let pid = h.handler_pid().expect("the handler runs");
    let (cpu0, t) = (cpu_seconds(pid), Instant::now());
    let (_, logs) = h.host.tick(false).await.unwrap();
    let (wall_s, cpu_s) = (t.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0);
    let (_, hwm) = rss_kib(pid);
    let records = logs
        .iter()
        .filter(|l| l.starts_with("PollCas: tenant "))
        .map(|l| number_before(l, " records"))
        .sum();
    h.kill_handler().await;
    for sim in &sims {
        sim.forget_records();
    }
    PollCost {
        records,
        peak_mb: hwm as f64 / 1024.0,
        cpu_s,
        wall_s,
    }
}

/// The healthy tenants' end-to-end lag over a few minutes of steady records.
struct Lag {
    created: usize,
    arrived: usize,
    /// The slowest healthy tenant's percentiles (seconds).
    p50_s: f64,
    p95_s: f64,
    max_s: f64,
    backlog_records: u64,
}

async fn backlog_lag(bin: &Path, backlog: bool) -> Lag {
    const HEALTHY: [&str; 3] = ["h1", "h2", "h3"];
    let mut env = settings(&[
        ("CAS_DATA_TYPES", "activities"),
        ("CAS_API_TOKEN", "t"),
        ("CAS_LOOKBACK", "P1D"),
        ("CAS_SCAN_LIMIT", "5000"),
    ]);
    let mut sims = Vec::new();
    for name in HEALTHY {
        let (sim, url) = tenant_cas().await;
        env.push((format!("{name}__CAS_API_URL"), url.to_string()));
        sims.push((name, sim));
    }
    let mut tenants: Vec<&str> = HEALTHY.to_vec();
    let mut keep_backlog = None;
    if backlog {
        let (sim, url) = tenant_cas().await;
        let span = 23 * 3_600_000i64;
        let start = now_ms() - span - 60_000;
        sim.add_activities(
            (0..BACKLOG).map(|i| start + i as i64 * span / BACKLOG as i64),
            |_| 0,
        );
        env.push(("backlog__CAS_API_URL".into(), url.to_string()));
        tenants.push("backlog");
        keep_backlog = Some(sim);
    }
    env.push(("CAS_TENANTS".into(), tenants.join(",")));
    let h = harness(
        bin,
        &format!("tenants-lag-{}", if backlog { "busy" } else { "quiet" }),
        env,
    )
    .await;
    let run_for = Duration::from_secs(300);
    let running = AtomicBool::new(true);
    let writing = AtomicBool::new(true);
    let backlog_records = std::sync::atomic::AtomicU64::new(0);
    let created = std::sync::Mutex::new(Vec::<(String, i64)>::new());
    let writer = async {
        let until = Instant::now() + run_for;
        while Instant::now() < until {
            let now = now_ms();
            for (name, sim) in &sims {
                for id in sim.add_activities((0..10).map(|_| now), |_| 0) {
                    created.lock().unwrap().push((format!("{name}/{id}"), now));
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        writing.store(false, Ordering::Relaxed);
    };
    let ticks = async {
        let every = Duration::from_secs(60);
        let mut next = tokio::time::Instant::now();
        // Until the writer stops, then two more runs for its last records.
        let mut after = 0;
        while after < 2 {
            tokio::time::sleep_until(next).await;
            let (_, logs) = h.host.tick(false).await.unwrap();
            let n: u64 = logs
                .iter()
                .filter(|l| l.starts_with("PollCas: tenant backlog: "))
                .map(|l| number_before(l, " records"))
                .sum();
            backlog_records.fetch_add(n, Ordering::Relaxed);
            if !writing.load(Ordering::Relaxed) {
                after += 1;
            }
            next = (next + every).max(tokio::time::Instant::now());
        }
        running.store(false, Ordering::Relaxed);
    };
    let drains = async {
        while running.load(Ordering::Relaxed) {
            let _ = h.host.drain_once().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = h.host.drain(Duration::from_secs(600)).await;
    };
    tokio::join!(writer, ticks, drains);
    h.kill_handler().await;
    // The simulators' servers outlive this function: free their records for what follows.
    if let Some(b) = keep_backlog {
        b.forget_records();
    }
    for (_, sim) in &sims {
        sim.forget_records();
    }
    let accepted = h.sink.first_accepted();
    let created = created.into_inner().unwrap();
    let mut slowest = (0.0, 0.0, 0.0);
    let mut arrived = 0;
    for name in HEALTHY {
        let mut lags: Vec<f64> = created
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("{name}/")))
            .filter_map(|(id, at)| Some((accepted.get(id)? - at) as f64 / 1000.0))
            .collect();
        arrived += lags.len();
        lags.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| {
            lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let (p50, p95, max) = (at(0.5), at(0.95), at(1.0));
        if p95 > slowest.1 || slowest.1.is_nan() {
            slowest = (p50, p95, max);
        }
    }
    Lag {
        created: created.len(),
        arrived,
        p50_s: slowest.0,
        p95_s: slowest.1,
        max_s: slowest.2,
        backlog_records: backlog_records.into_inner(),
    }
}
