//! Resolution latency on a busy tenant: how long an analyst's resolution takes to reach
//! Sentinel as a new row when thousands of alerts sit in the change-watch window.
//!
//! The REST source once found resolutions only by re-listing the whole window, which at
//! CAS's 30 requests a minute takes minutes per pass; it now asks for `resolutionDate`
//! windows each run. Graph's `alerts_v2` windows follow `lastUpdateDateTime`. Both are
//! measured here the same way, through the real handler.

use super::{host, Harness, Latency, LocalError};
use crate::config::ApiSource;
use std::collections::HashMap;
use std::time::Duration;

/// What a resolution-latency run does.
#[derive(Clone, Copy, Debug)]
pub struct Resolutions {
    /// Where alerts come from (the handler must run with the same `CAS_ALERTS_SOURCE`).
    pub source: ApiSource,
    /// Defender for Cloud Apps alerts in the window before the run starts.
    pub alerts: usize,
    /// How long analysts keep resolving.
    pub run_for: Duration,
    /// One resolution this often.
    pub resolve_every: Duration,
    /// How often PollCas runs.
    pub tick_every: Duration,
}

/// Seeds the tenant with `r.alerts` alerts and forwards them all (CAS's limit lifted for
/// that part only), then, at the real limit, resolves one alert every `resolve_every` for
/// `run_for` while PollCas runs every `tick_every` with the queue drained after each run;
/// measures, per resolution, the delay from the analyst's click to the first row saying
/// Resolved accepted by Logs Ingestion. Resolutions not forwarded by the end (two ticks
/// and 2 s after the last, and the run then going) are counted as missing. A run longer
/// than `tick_every` makes the host skip the ticks it missed, as the timer does: the next
/// run starts when the last one ends.
pub async fn resolution_latency(h: &Harness, r: Resolutions) -> Result<Latency, LocalError> {
    let now = crate::model::now_ms();
    // Spread over the last six days: inside the default seven-day watch window.
    let span = 6 * 86_400_000 / r.alerts.max(1) as i64;
    let ids: Vec<Resolvable> = match r.source {
        ApiSource::Cas => h
            .cas
            .add_alerts((0..r.alerts as i64).map(|i| now - 6 * 86_400_000 + i * span))
            .into_iter()
            .map(Resolvable::Cas)
            .collect(),
        ApiSource::Graph => {
            // One alert in three is another Defender service's; the total is set so that
            // `r.alerts` are Defender for Cloud Apps'.
            let total = r.alerts * 3 / 2;
            h.graph
                .add_alerts(total, now - 3_600_000)
                .into_iter()
                .map(|k| Resolvable::Graph(k, format!("{k:024x}")))
                .collect()
        }
    };
    h.cas.set_per_minute(Some(100_000));
    let table = crate::model::DataType::Alerts.table();
    for _ in 0..20 {
        h.host.tick(false).await?;
        h.host.drain(Duration::from_secs(300)).await?;
        if h.sink.stats().rows.get(table).copied().unwrap_or(0) >= ids.len() as u64 {
            break;
        }
    }
    h.cas.set_per_minute(None);

    let resolver = {
        let (cas, graph) = (h.cas.clone(), h.graph.clone());
        let picks: Vec<Resolvable> = spread(&ids, r.run_for, r.resolve_every);
        let every = r.resolve_every;
        tokio::spawn(async move {
            let mut at = HashMap::new();
            for pick in picks {
                let t = crate::model::now_ms();
                match &pick {
                    Resolvable::Cas(id) => {
                        cas.set_alert_state(id, 1, 2);
                    }
                    Resolvable::Graph(k, _) => graph.update_alert(*k, "resolved", t),
                }
                at.insert(pick.vendor_id().to_string(), t);
                tokio::time::sleep(every).await;
            }
            at
        })
    };
    // The queue is drained while PollCas runs, as the host runs the two functions side by
    // side: a row sent mid-run is ingested then, not when the run ends.
    let running = std::sync::atomic::AtomicBool::new(true);
    let ticks = async {
        let mut next = tokio::time::Instant::now() + r.tick_every;
        let last =
            tokio::time::Instant::now() + r.run_for + r.tick_every * 2 + Duration::from_secs(2);
        let mut result = Ok(());
        while next <= last && result.is_ok() {
            tokio::time::sleep_until(next).await;
            result = h.host.tick(false).await.map(|_| ());
            next = (next + r.tick_every).max(tokio::time::Instant::now());
        }
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        result
    };
    let drains = async {
        let mut drained = host::DrainStats::default();
        while running.load(std::sync::atomic::Ordering::Relaxed) {
            drained += h.host.drain_once().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drained += h.host.drain(Duration::from_secs(120)).await?;
        Ok::<_, LocalError>(drained)
    };
    let (ticked, drained) = tokio::join!(ticks, drains);
    ticked?;
    let drained = drained?;
    let resolved_at = resolver
        .await
        .map_err(|e| LocalError::Handler(e.to_string()))?;
    let accepted = h.sink.first_resolved();
    let delays = resolved_at
        .iter()
        .filter_map(|(id, at)| Some(accepted.get(id)? - at))
        .collect();
    Ok(Latency::of(
        delays,
        resolved_at.len(),
        r.tick_every,
        drained,
    ))
}

/// An alert an analyst can resolve, in the source's terms.
#[derive(Clone, Debug)]
enum Resolvable {
    /// A CAS alert id (also its rows' `VendorOriginalId`).
    Cas(String),
    /// A simulated Graph alert's index and its `providerAlertId`.
    Graph(usize, String),
}

impl Resolvable {
    fn vendor_id(&self) -> &str {
        match self {
            Resolvable::Cas(id) | Resolvable::Graph(_, id) => id,
        }
    }
}

/// As many alerts as the run resolves, spread over the whole window (old and new alike).
fn spread(ids: &[Resolvable], run_for: Duration, every: Duration) -> Vec<Resolvable> {
    let n = (run_for.as_millis() / every.as_millis().max(1)).max(1) as usize;
    let step = (ids.len() / n).max(1);
    ids.iter().step_by(step).take(n).cloned().collect()
}
