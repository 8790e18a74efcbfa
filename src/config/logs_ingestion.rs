//! The Logs Ingestion section: the DCR, its endpoint and stream names, and the call size.

use super::fields::{
    parse_count, parse_duration_within, parse_https_url, parse_switch, placeholder_url, required,
    Collector,
};
use super::SettingError;
use crate::model::DataType;
use std::time::Duration;
use url::Url;

/// The Logs Ingestion API's per-call limit (1 MiB, compressed and uncompressed alike).
pub(crate) const MAX_CALL_BYTES: usize = 1024 * 1024;

/// Where rows are written.
#[derive(Clone, Debug)]
pub struct SentinelSettings {
    /// The DCR's logs ingestion endpoint (or a DCE).
    pub endpoint: Url,
    /// The DCR immutable id (`dcr-…`).
    pub dcr_immutable_id: String,
    /// Stream name for alerts.
    pub stream_alerts: String,
    /// Stream name for activities.
    pub stream_activities: String,
    /// Stream name for discovery.
    pub stream_discovery: String,
    /// Largest request body (uncompressed) sent in one call; at most the service's 1 MiB.
    pub max_call_bytes: usize,
    /// How long a first try of a call waits for an answer (`SENTINEL_CALL_TIMEOUT`); a
    /// try after an unanswered one waits as long as the budget allows.
    pub call_timeout: Duration,
    /// Whether activities are also written to the native ASIM tables (`SENTINEL_ASIM`).
    pub asim: bool,
}

impl SentinelSettings {
    /// The stream a data type is written to.
    pub fn stream(&self, data_type: DataType) -> &str {
        match data_type {
            DataType::Alerts => &self.stream_alerts,
            DataType::Activities => &self.stream_activities,
            DataType::Discovery => &self.stream_discovery,
        }
    }
}

impl SentinelSettings {
    /// The Logs Ingestion section; problems go to `errs`.
    pub(super) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        errs: &mut Collector,
    ) -> SentinelSettings {
        let mut stream = |name: &'static str, dt: DataType| {
            let value = get(name).unwrap_or_else(|| dt.default_stream().to_string());
            errs.take(check_stream(name, &value).map(|_| value), String::new())
        };
        let stream_alerts = stream("SENTINEL_STREAM_ALERTS", DataType::Alerts);
        let stream_activities = stream("SENTINEL_STREAM_ACTIVITIES", DataType::Activities);
        let stream_discovery = stream("SENTINEL_STREAM_DISCOVERY", DataType::Discovery);
        SentinelSettings {
            endpoint: errs.take(
                required(
                    get,
                    "SENTINEL_INGESTION_ENDPOINT",
                    "the DCR's logs ingestion endpoint (or a DCE URL)",
                )
                .and_then(|v| parse_https_url("SENTINEL_INGESTION_ENDPOINT", &v)),
                placeholder_url(),
            ),
            dcr_immutable_id: errs.take(
                required(
                    get,
                    "SENTINEL_DCR_IMMUTABLE_ID",
                    "the DCR immutable id, dcr-<32 hex digits>",
                )
                .and_then(|v| check_dcr_id(&v).map(|_| v)),
                String::new(),
            ),
            stream_alerts,
            stream_activities,
            stream_discovery,
            max_call_bytes: errs.take(parse_call_limit(get("SENTINEL_MAX_CALL_BYTES")), 0),
            call_timeout: errs.take(
                parse_duration_within(
                    "SENTINEL_CALL_TIMEOUT",
                    get("SENTINEL_CALL_TIMEOUT"),
                    "PT60S",
                    1..=600,
                    |_| "must be between PT1S and PT10M".into(),
                ),
                Duration::ZERO,
            ),
            asim: errs.take(
                parse_switch("SENTINEL_ASIM", get("SENTINEL_ASIM"), false),
                false,
            ),
        }
    }
}

pub(super) fn parse_call_limit(value: Option<String>) -> Result<usize, SettingError> {
    const MAX: usize = crate::config::MAX_CALL_BYTES;
    parse_count(
        "SENTINEL_MAX_CALL_BYTES",
        value,
        MAX,
        65_536..=MAX,
        &format!("give a byte count from 65536 to {MAX} (the service's limit)"),
    )
}

pub(super) fn check_dcr_id(v: &str) -> Result<(), SettingError> {
    let ok = v
        .strip_prefix("dcr-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(SettingError::Invalid {
            name: "SENTINEL_DCR_IMMUTABLE_ID",
            reason: format!("{v:?} is not a DCR immutable id (dcr- followed by 32 hex digits; the DCR's JSON view shows it as immutableId)"),
        })
    }
}

pub(super) fn check_stream(name: &'static str, v: &str) -> Result<(), SettingError> {
    let ok = v.starts_with("Custom-")
        && v.len() <= 7 + 45
        && v[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && v.len() > 7;
    if ok {
        Ok(())
    } else {
        Err(SettingError::Invalid {
            name,
            reason: format!("{v:?} is not a custom stream name (Custom- followed by up to 45 letters, digits or underscores)"),
        })
    }
}
