//! The host section: how long an invocation may run (checked against host.json's
//! `functionTimeout`) and the PollCas timer's schedule.

use super::fields::parse_duration_within;
use super::{SettingError, Settings};
use serde_json::Value;
use std::time::Duration;

/// The default PollCas schedule: every 2 minutes. A poll that is caught up costs about one
/// CAS request per data type, so this uses about 1.5 of the tenant's 30 requests a minute
/// (leaving the rest for catching up, and for other tools that share the tenant), and a
/// record reaches Sentinel about `CAS_SETTLE_DELAY` plus 1 to 2 minutes after CAS stored it.
pub(crate) const DEFAULT_SCHEDULE: &str = "0 */2 * * * *";

/// Checks an NCRONTAB schedule (`second minute hour day month day-of-week`). The second
/// must be one fixed value: firing more than once a minute reads nothing new (windows end
/// `CAS_SETTLE_DELAY` before now) and only spends CAS's request budget.
pub(super) fn check_schedule(value: String) -> Result<String, SettingError> {
    let bad = |reason: String| SettingError::Invalid {
        name: "CAS_SCHEDULE",
        reason,
    };
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(bad(format!(
            "{value:?} has {} fields; NCRONTAB takes six: second minute hour day month day-of-week, e.g. {DEFAULT_SCHEDULE:?}",
            fields.len()
        )));
    }
    if let Some(f) = fields.iter().find(|f| {
        !f.chars()
            .all(|c| c.is_ascii_alphanumeric() || "*/,-".contains(c))
    }) {
        return Err(bad(format!("{value:?}: field {f:?} is not NCRONTAB")));
    }
    if !fields[0].parse::<u8>().is_ok_and(|s| s < 60) {
        return Err(bad(format!(
            "{value:?} fires more than once a minute (the seconds field must be one number, 0-59); a poll cannot find anything newer than CAS_SETTLE_DELAY ago"
        )));
    }
    Ok(fields.join(" "))
}

/// How long before host.json's `functionTimeout` an invocation's budget must end: the
/// handler answers, and a batch's claim lapses, while the host still waits for it.
pub(crate) const BUDGET_MARGIN: Duration = Duration::from_secs(60);

/// The shortest budget worth running with (one CAS page and one Logs Ingestion call).
pub(crate) const MIN_BUDGET: Duration = Duration::from_secs(5);

/// host.json's `functionTimeout` (`hh:mm:ss`, or `d.hh:mm:ss`); `None` when it is absent
/// or `-1` (no limit).
pub(crate) fn function_timeout(host_json: &str) -> Result<Option<Duration>, String> {
    let v: Value =
        serde_json::from_str(host_json).map_err(|e| format!("host.json is not JSON: {e}"))?;
    let Some(t) = v.get("functionTimeout") else {
        return Ok(None);
    };
    let text = t
        .as_str()
        .ok_or("host.json's functionTimeout is not a string")?;
    if text.trim() == "-1" {
        return Ok(None);
    }
    let (days, rest) = match text.split_once('.') {
        Some((d, r)) if !d.contains(':') => (
            d.parse::<u64>()
                .map_err(|_| format!("functionTimeout {text:?}"))?,
            r,
        ),
        _ => (0, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(format!(
            "host.json's functionTimeout {text:?} is not hh:mm:ss"
        ));
    };
    let n = |x: &str| x.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    match (n(h), n(m), n(s)) {
        (Some(h), Some(m), Some(s)) => Ok(Some(Duration::from_secs_f64(
            days as f64 * 86_400.0 + h * 3600.0 + m * 60.0 + s,
        ))),
        _ => Err(format!(
            "host.json's functionTimeout {text:?} is not hh:mm:ss"
        )),
    }
}

impl Settings {
    /// Checks the settings against the host's own configuration (`host.json`): the
    /// invocation budget must end [`BUDGET_MARGIN`] before `functionTimeout`, or the host
    /// kills invocations mid-way and their claims outlive the redeliveries.
    pub fn check_against_host(&self, host_json: &str) -> Result<(), SettingError> {
        let bad = |reason: String| SettingError::Invalid {
            name: "CAS_INVOCATION_BUDGET",
            reason,
        };
        let timeout = function_timeout(host_json).map_err(bad)?;
        let budget = self.invocation_budget;
        match timeout {
            Some(t) if budget + BUDGET_MARGIN > t => Err(bad(format!(
                "{}s leaves less than {}s before host.json's functionTimeout ({}s): set it to at most {}s (e.g. PT{}S), or raise functionTimeout",
                budget.as_secs(),
                BUDGET_MARGIN.as_secs(),
                t.as_secs(),
                t.saturating_sub(BUDGET_MARGIN).as_secs(),
                t.saturating_sub(BUDGET_MARGIN).as_secs(),
            ))),
            _ => Ok(()),
        }
    }
}

/// `CAS_INVOCATION_BUDGET`: at least [`MIN_BUDGET`]; the upper bound is host.json's
/// (see [`Settings::check_against_host`]).
pub(super) fn parse_budget(value: Option<String>) -> Result<Duration, SettingError> {
    parse_duration_within(
        "CAS_INVOCATION_BUDGET",
        value,
        "PT4M",
        MIN_BUDGET.as_secs()..=u64::MAX,
        |d| {
            format!("{}s is too short to read one page and send one batch: at least PT5S (and below host.json's functionTimeout less PT1M)", d.as_secs())
        },
    )
}
