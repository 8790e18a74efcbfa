//! The Defender for Cloud Apps section: the tenant API, its filters, windows and
//! request budget, and the alert change watch.

use super::fields::{
    parse_count, parse_duration, parse_service_url, parse_switch, placeholder_url, required,
    Collector,
};
use super::SettingError;
use crate::secret::Secret;
use serde_json::{Map, Value};
use std::time::Duration;
use url::Url;

/// How to reach the Defender for Cloud Apps API.
#[derive(Clone, Debug)]
pub struct CasSettings {
    /// Tenant API base URL, e.g. `https://contoso.us2.portal.cloudappsecurity.com`.
    pub api_url: Url,
    /// The legacy API token; `None` means an Entra token is used.
    pub token: Option<Secret>,
    /// Extra filter ANDed into every alerts query.
    pub alerts_filter: Map<String, Value>,
    /// Extra filter ANDed into every activities query.
    pub activities_filter: Map<String, Value>,
    /// How far back the first run reaches.
    pub lookback: Duration,
    /// How long after `now` a record must be before it is pulled, so CAS has stored
    /// everything up to the window's end.
    pub settle: Duration,
    /// Activities per scan page (500–5000).
    pub scan_limit: u32,
    /// How far before the last position each pull re-reads, to catch records CAS made
    /// visible late; the ids already sent from that span are kept and skipped.
    pub overlap: Duration,
    /// Client-side request budget per minute (CAS allows 30 per tenant; lower it when
    /// other integrations share the tenant).
    pub requests_per_minute: u32,
    /// Re-forwarding of alerts whose status, resolution or severity changed (`None`: off).
    pub alert_updates: Option<AlertUpdates>,
    /// Leave out alerts Defender for Identity raised (`CAS_SKIP_IDENTITY_ALERTS`), for a
    /// workspace that gets them from Defender for Identity's own connector too.
    pub skip_identity_alerts: bool,
    /// Where alerts are read from (`CAS_ALERTS_SOURCE`).
    pub alerts_source: ApiSource,
    /// Where activities are read from (`CAS_ACTIVITIES_SOURCE`).
    pub activities_source: ApiSource,
}

/// Where a data type is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiSource {
    /// The Defender for Cloud Apps REST API (`/api/v1/alerts/`).
    Cas,
    /// Microsoft Graph's `security/alerts_v2`, Defender for Cloud Apps' alerts only.
    Graph,
}

impl ApiSource {
    /// The setting's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiSource::Cas => "cas",
            ApiSource::Graph => "graph",
        }
    }
}

/// `CAS_ALERTS_SOURCE` or `CAS_ACTIVITIES_SOURCE` (`name`): `cas` (the default) or `graph`
/// (`what` says which Graph API).
pub(super) fn parse_source(
    name: &'static str,
    value: Option<String>,
    what: &str,
) -> Result<ApiSource, SettingError> {
    match value.as_deref().map(str::trim) {
        None | Some("cas") => Ok(ApiSource::Cas),
        Some("graph") => Ok(ApiSource::Graph),
        Some(other) => Err(SettingError::Invalid {
            name,
            reason: format!("{other:?} is not a source: give `cas` (the Defender for Cloud Apps API) or `graph` ({what})"),
        }),
    }
}

/// How changed alerts are found: every `interval`, the alerts raised in the last
/// `window` are listed again and compared with what was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertUpdates {
    /// How far back alerts are watched for changes.
    pub window: Duration,
    /// How often they are re-listed.
    pub interval: Duration,
}

impl CasSettings {
    /// The CAS section; problems go to `errs` (and the value is then a placeholder).
    pub(super) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        errs: &mut Collector,
    ) -> CasSettings {
        let duration = |errs: &mut Collector, name: &'static str, default: &str| {
            errs.take(parse_duration(name, get(name), default), Duration::ZERO)
        };
        CasSettings {
            api_url: errs.take(
                required(
                    get,
                    "CAS_API_URL",
                    "the tenant API URL, e.g. https://contoso.us2.portal.cloudappsecurity.com",
                )
                .and_then(|v| parse_cas_url(&v)),
                placeholder_url(),
            ),
            token: get("CAS_API_TOKEN").map(Secret::new),
            alerts_filter: errs.take(
                parse_filter("CAS_ALERTS_FILTER", get("CAS_ALERTS_FILTER"), &["date"]),
                Map::new(),
            ),
            activities_filter: errs.take(
                parse_filter(
                    "CAS_ACTIVITIES_FILTER",
                    get("CAS_ACTIVITIES_FILTER"),
                    &["created", "isScan"],
                ),
                Map::new(),
            ),
            lookback: duration(errs, "CAS_LOOKBACK", "P1D"),
            settle: duration(errs, "CAS_SETTLE_DELAY", "PT1M"),
            scan_limit: errs.take(parse_scan_limit(get("CAS_SCAN_LIMIT")), 0),
            overlap: duration(errs, "CAS_OVERLAP", "PT2M"),
            requests_per_minute: errs.take(parse_rpm(get("CAS_REQUESTS_PER_MINUTE")), 0),
            alert_updates: errs
                .take(
                    parse_switch("CAS_ALERT_UPDATES", get("CAS_ALERT_UPDATES"), true),
                    false,
                )
                .then(|| AlertUpdates {
                    window: duration(errs, "CAS_ALERT_UPDATE_WINDOW", "P7D"),
                    interval: duration(errs, "CAS_ALERT_UPDATE_INTERVAL", "PT1H"),
                }),
            skip_identity_alerts: errs.take(
                parse_switch(
                    "CAS_SKIP_IDENTITY_ALERTS",
                    get("CAS_SKIP_IDENTITY_ALERTS"),
                    false,
                ),
                false,
            ),
            alerts_source: errs.take(
                parse_source(
                    "CAS_ALERTS_SOURCE",
                    get("CAS_ALERTS_SOURCE"),
                    "Microsoft Graph security/alerts_v2",
                ),
                ApiSource::Cas,
            ),
            activities_source: errs.take(
                parse_source(
                    "CAS_ACTIVITIES_SOURCE",
                    get("CAS_ACTIVITIES_SOURCE"),
                    "Microsoft Graph advanced hunting over CloudAppEvents",
                ),
                ApiSource::Cas,
            ),
        }
    }
}

pub(super) fn parse_rpm(value: Option<String>) -> Result<u32, SettingError> {
    parse_count(
        "CAS_REQUESTS_PER_MINUTE",
        value,
        30,
        1..=30,
        "CAS allows 30 requests per minute per tenant; give a whole number from 1 to 30",
    )
}

pub(super) fn parse_scan_limit(value: Option<String>) -> Result<u32, SettingError> {
    parse_count(
        "CAS_SCAN_LIMIT",
        value,
        5000,
        500..=5000,
        "the scan page size must be a whole number from 500 to 5000",
    )
}

/// Parses a CAS filter setting: a JSON object of `field: {op: value}` that must not set the
/// fields the window itself controls.
pub(super) fn parse_filter(
    name: &'static str,
    value: Option<String>,
    reserved: &[&str],
) -> Result<Map<String, Value>, SettingError> {
    let Some(v) = value else {
        return Ok(Map::new());
    };
    let parsed: Value = serde_json::from_str(&v).map_err(|e| SettingError::Invalid {
        name,
        reason: format!(
            "not valid JSON ({e}); expected an object such as {{\"severity\":{{\"eq\":[2]}}}}"
        ),
    })?;
    // Accept both the bare filter object and the request form `{"filters": {...}}`.
    let map = match parsed {
        Value::Object(mut m) if m.len() == 1 && m.contains_key("filters") => {
            match m.remove("filters") {
                Some(Value::Object(inner)) => inner,
                _ => {
                    return Err(SettingError::Invalid {
                        name,
                        reason: "\"filters\" must be an object".into(),
                    })
                }
            }
        }
        Value::Object(m) => m,
        _ => {
            return Err(SettingError::Invalid {
                name,
                reason: "must be a JSON object of field: {operator: value}".into(),
            })
        }
    };
    for (field, cond) in &map {
        if reserved.contains(&field.as_str()) {
            return Err(SettingError::Invalid {
                name,
                reason: format!("sets {field:?}, which the poll window controls; remove it (use CAS_LOOKBACK for the first window)"),
            });
        }
        if !cond.is_object() {
            return Err(SettingError::Invalid {
                name,
                reason: format!("field {field:?} must map to an object such as {{\"eq\": ...}}"),
            });
        }
    }
    Ok(map)
}

/// Accepts the CAS API on its known domains over https, or http on loopback for local work.
pub(super) fn parse_cas_url(text: &str) -> Result<Url, SettingError> {
    let known = |host: &str| {
        host.ends_with(".portal.cloudappsecurity.com")
            || host.ends_with(".portal.cloudappsecurity.us")
            || host == "portal.cloudappsecuritygov.com"
            || host.ends_with(".portal.cloudappsecuritygov.com")
    };
    parse_service_url("CAS_API_URL", text, known, "*.portal.cloudappsecurity.com, *.portal.cloudappsecurity.us or portal.cloudappsecuritygov.com")
}
