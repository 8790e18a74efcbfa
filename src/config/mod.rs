//! Settings, read once from the environment (Functions app settings) and checked as a
//! whole, so one start-up reports every problem at once and names the setting to change.
//! [`doc`] describes each setting once, for the README and the tests.

pub mod doc;

use crate::duration::parse_iso8601;
use crate::graph::DiscoverySettings;
use crate::model::DataType;
use crate::secret::Secret;
use crate::storage::{StorageConfigError, StorageSettings};
use serde_json::{Map, Value};
use std::time::Duration;
use url::Url;

/// Every setting the handler and the CLI use.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which data types a poll pulls.
    pub data_types: Vec<DataType>,
    /// The CAS tenant and how to read it.
    pub cas: CasSettings,
    /// Shadow IT discovery through Microsoft Graph.
    pub discovery: DiscoverySettings,
    /// Why discovery is off although `CAS_DATA_TYPES` did not leave it out, if it is.
    pub discovery_off: Option<&'static str>,
    /// The Logs Ingestion target.
    pub sentinel: SentinelSettings,
    /// The Entra identity used for CAS (when no legacy token) and for Logs Ingestion.
    pub identity: IdentitySettings,
    /// The storage account for the queue and the checkpoint blobs.
    pub storage: StorageSettings,
    /// The fan-out queue; its poison queue is `<name>-poison`.
    pub queue_name: String,
    /// How long one invocation may spend (keep it below functionTimeout); a poll stops
    /// there and leaves the rest to the next run, an ingest stops retrying.
    pub invocation_budget: Duration,
    /// The PollCas timer's NCRONTAB schedule (`CAS_SCHEDULE`): the host reads it from the
    /// app setting through `%CAS_SCHEDULE%` in `function.json`; it is checked here so a
    /// typo is named at start-up and by `validate`, not only in the host's own logs.
    pub schedule: String,
}

/// The default PollCas schedule: every 2 minutes. A poll that is caught up costs about one
/// CAS request per data type, so this uses about 1.5 of the tenant's 30 requests a minute
/// (leaving the rest for catching up, and for other tools that share the tenant), and a
/// record reaches Sentinel about `CAS_SETTLE_DELAY` plus 1 to 2 minutes after CAS stored it.
pub const DEFAULT_SCHEDULE: &str = "0 */2 * * * *";

/// Checks an NCRONTAB schedule (`second minute hour day month day-of-week`). The second
/// must be one fixed value: firing more than once a minute reads nothing new (windows end
/// `CAS_SETTLE_DELAY` before now) and only spends CAS's request budget.
fn check_schedule(value: String) -> Result<String, SettingError> {
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

/// The Entra identity: a client secret when given, else managed identity.
#[derive(Clone, Debug, Default)]
pub struct IdentitySettings {
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`: the app with a secret, or a user-assigned managed identity.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
}

/// One problem with one setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingError {
    /// A required setting is absent.
    #[error("{name} is not set: {hint}")]
    Missing {
        /// The setting.
        name: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// A setting is present but unusable.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The storage setting is unusable.
    #[error(transparent)]
    Storage(#[from] StorageConfigError),
}

/// Every problem found in the settings.
#[derive(Debug, thiserror::Error)]
#[error("{} setting problem(s): {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct SettingsErrors(pub Vec<SettingError>);

/// Default for `CAS_QUEUE_NAME`.
pub const DEFAULT_QUEUE: &str = "cas-batches";

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsErrors> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads settings from name/value pairs (a later pair overrides an earlier one), as
    /// the local harness, the benchmark and tests build them.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: &[(K, V)],
    ) -> Result<Self, SettingsErrors> {
        Self::from_lookup(&|name| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == name)
                .map(|(_, v)| v.as_ref().to_string())
        })
    }

    /// Reads settings through `get` (a map in tests, the environment in production).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsErrors> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut errs = Collector(Vec::new());
        let mut data_types = errs.take(parse_data_types(get("CAS_DATA_TYPES")), Vec::new());
        let discovery = DiscoverySettings::read(&get, &mut errs);
        // Discovery reads Graph with the Entra identity, never with CAS_API_TOKEN. A
        // deployment that chose the legacy token and did not ask for discovery by name has
        // most likely not granted that identity Graph's permission: leave discovery out
        // and say so, rather than fail every run with 403.
        let discovery_off = (get("CAS_API_TOKEN").is_some() && get("CAS_DATA_TYPES").is_none())
            .then_some(DISCOVERY_NEEDS_ENTRA);
        if discovery_off.is_some() {
            data_types.retain(|d| *d != DataType::Discovery);
        }
        let cas = CasSettings::from_lookup(&get, &mut errs);
        let sentinel = SentinelSettings::from_lookup(&get, &mut errs);
        let invocation_budget =
            errs.take(parse_budget(get("CAS_INVOCATION_BUDGET")), Duration::ZERO);
        let queue_name = errs.take(
            check_queue_name(get("CAS_QUEUE_NAME").unwrap_or_else(|| DEFAULT_QUEUE.into())),
            String::new(),
        );
        let schedule = errs.take(
            check_schedule(get("CAS_SCHEDULE").unwrap_or_else(|| DEFAULT_SCHEDULE.into())),
            String::new(),
        );
        let sas_lifetime = errs.take(
            parse_sas_lifetime(get("CAS_STORAGE_SAS_LIFETIME")),
            Duration::ZERO,
        );
        let storage = StorageSettings::from_lookup(&get)
            .map(|s| StorageSettings { sas_lifetime, ..s })
            .map_err(|e| errs.0.push(e.into()))
            .ok();

        // Placeholders stand in for failed settings only until here: any failure returns.
        let (Some(storage), true) = (storage, errs.0.is_empty()) else {
            return Err(SettingsErrors(errs.0));
        };
        Ok(Settings {
            data_types,
            discovery,
            discovery_off,
            cas,
            sentinel,
            identity: IdentitySettings {
                tenant_id: get("AZURE_TENANT_ID"),
                client_id: get("AZURE_CLIENT_ID"),
                client_secret: get("AZURE_CLIENT_SECRET").map(Secret::new),
            },
            storage,
            queue_name,
            invocation_budget,
            schedule,
        })
    }

    /// The poison queue the host moves failed messages to.
    pub fn poison_queue_name(&self) -> String {
        format!("{}-poison", self.queue_name)
    }
}

/// How long before host.json's `functionTimeout` an invocation's budget must end: the
/// handler answers, and a batch's claim lapses, while the host still waits for it.
pub const BUDGET_MARGIN: Duration = Duration::from_secs(60);

/// The shortest budget worth running with (one CAS page and one Logs Ingestion call).
pub const MIN_BUDGET: Duration = Duration::from_secs(5);

/// host.json's `functionTimeout` (`hh:mm:ss`, or `d.hh:mm:ss`); `None` when it is absent
/// or `-1` (no limit).
pub fn function_timeout(host_json: &str) -> Result<Option<Duration>, String> {
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

/// Why discovery is off when only a legacy CAS token is configured, and what to grant.
pub const DISCOVERY_NEEDS_ENTRA: &str = "discovery is off: it reads Microsoft Graph with the Entra identity (managed identity or AZURE_CLIENT_SECRET), not CAS_API_TOKEN. To turn it on, grant that identity the Microsoft Graph application permission CloudApp-Discovery.Read.All (docs/deploy.md) and list discovery in CAS_DATA_TYPES";

/// An on/off setting (`on`, `true`, `1`, `yes` / `off`, `false`, `0`, `no`).
pub(crate) fn parse_switch(
    name: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, SettingError> {
    match value.map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(other) => Err(SettingError::Invalid {
            name,
            reason: format!("{other:?}: expected on or off"),
        }),
    }
}

/// A placeholder URL for a setting that failed (never used: a failure returns).
pub(crate) fn placeholder_url() -> Url {
    Url::parse("http://127.0.0.1/").expect("a valid URL")
}

impl CasSettings {
    /// The CAS section; problems go to `errs` (and the value is then a placeholder).
    fn from_lookup(get: &dyn Fn(&str) -> Option<String>, errs: &mut Collector) -> CasSettings {
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
        }
    }
}

impl SentinelSettings {
    /// The Logs Ingestion section; problems go to `errs`.
    fn from_lookup(get: &dyn Fn(&str) -> Option<String>, errs: &mut Collector) -> SentinelSettings {
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
        }
    }
}

/// A duration setting (`default` when unset) that must lie in `range` (in seconds); the
/// error says `why` after the value.
pub(crate) fn parse_duration_within(
    name: &'static str,
    value: Option<String>,
    default: &str,
    range: std::ops::RangeInclusive<u64>,
    why: impl FnOnce(Duration) -> String,
) -> Result<Duration, SettingError> {
    let d = parse_duration(name, value, default)?;
    if range.contains(&d.as_secs()) {
        return Ok(d);
    }
    Err(SettingError::Invalid {
        name,
        reason: why(d),
    })
}

/// `CAS_INVOCATION_BUDGET`: at least [`MIN_BUDGET`]; the upper bound is host.json's
/// (see [`Settings::check_against_host`]).
fn parse_budget(value: Option<String>) -> Result<Duration, SettingError> {
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

/// `CAS_STORAGE_SAS_LIFETIME`: PT10S to P7D.
fn parse_sas_lifetime(value: Option<String>) -> Result<Duration, SettingError> {
    parse_duration_within(
        "CAS_STORAGE_SAS_LIFETIME",
        value,
        "P1D",
        10..=7 * 86_400,
        |_| "must be between PT10S and P7D".into(),
    )
}

/// Gathers every setting error instead of stopping at the first.
pub(crate) struct Collector(pub(crate) Vec<SettingError>);

impl Collector {
    /// The value, or `placeholder` with the error recorded.
    pub(crate) fn take<T>(&mut self, r: Result<T, SettingError>, placeholder: T) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            placeholder
        })
    }
}

fn required(
    get: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    hint: &'static str,
) -> Result<String, SettingError> {
    get(name).ok_or(SettingError::Missing { name, hint })
}

fn parse_data_types(value: Option<String>) -> Result<Vec<DataType>, SettingError> {
    let Some(value) = value else {
        return Ok(DataType::ALL.to_vec());
    };
    let mut out = Vec::new();
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let dt = part
            .parse::<DataType>()
            .map_err(|e| SettingError::Invalid {
                name: "CAS_DATA_TYPES",
                reason: e.to_string(),
            })?;
        if !out.contains(&dt) {
            out.push(dt);
        }
    }
    if out.is_empty() {
        return Err(SettingError::Invalid {
            name: "CAS_DATA_TYPES",
            reason: "names no data type".into(),
        });
    }
    Ok(out)
}

pub(crate) fn parse_duration(
    name: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, SettingError> {
    parse_iso8601(value.as_deref().unwrap_or(default)).map_err(|e| SettingError::Invalid {
        name,
        reason: e.to_string(),
    })
}

/// A whole number setting within `range`, `default` when unset; `explain` completes the
/// error, after the value given.
pub(crate) fn parse_count<T>(
    name: &'static str,
    value: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    explain: &str,
) -> Result<T, SettingError>
where
    T: std::str::FromStr + PartialOrd,
{
    let Some(v) = value else { return Ok(default) };
    match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(SettingError::Invalid {
            name,
            reason: format!("{v:?}: {explain}"),
        }),
    }
}

fn parse_call_limit(value: Option<String>) -> Result<usize, SettingError> {
    const MAX: usize = crate::sentinel::pack::MAX_CALL_BYTES;
    parse_count(
        "SENTINEL_MAX_CALL_BYTES",
        value,
        MAX,
        65_536..=MAX,
        &format!("give a byte count from 65536 to {MAX} (the service's limit)"),
    )
}

fn parse_rpm(value: Option<String>) -> Result<u32, SettingError> {
    parse_count(
        "CAS_REQUESTS_PER_MINUTE",
        value,
        30,
        1..=30,
        "CAS allows 30 requests per minute per tenant; give a whole number from 1 to 30",
    )
}

fn parse_scan_limit(value: Option<String>) -> Result<u32, SettingError> {
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
fn parse_filter(
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
fn parse_cas_url(text: &str) -> Result<Url, SettingError> {
    let known = |host: &str| {
        host.ends_with(".portal.cloudappsecurity.com")
            || host.ends_with(".portal.cloudappsecurity.us")
            || host == "portal.cloudappsecuritygov.com"
            || host.ends_with(".portal.cloudappsecuritygov.com")
    };
    parse_service_url("CAS_API_URL", text, known, "*.portal.cloudappsecurity.com, *.portal.cloudappsecurity.us or portal.cloudappsecuritygov.com")
}

/// A service's base URL: https on a host `known` accepts (a token for the service is sent
/// there), or http(s) on a loopback address for local work; `hosts` says which in the error.
pub(crate) fn parse_service_url(
    name: &'static str,
    text: &str,
    known: impl Fn(&str) -> bool,
    hosts: &str,
) -> Result<Url, SettingError> {
    let bad = |reason: String| SettingError::Invalid { name, reason };
    let url = Url::parse(text).map_err(|e| bad(format!("{text:?} is not a URL: {e}")))?;
    if is_loopback(&url) && matches!(url.scheme(), "http" | "https") {
        return Ok(url);
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if url.scheme() != "https" || !known(&host) {
        return Err(bad(format!(
            "{text:?} must be https on {hosts} (or http on a loopback address for local work)"
        )));
    }
    Ok(url)
}

fn parse_https_url(name: &'static str, text: &str) -> Result<Url, SettingError> {
    let url = Url::parse(text).map_err(|e| SettingError::Invalid {
        name,
        reason: format!("{text:?} is not a URL: {e}"),
    })?;
    check_https_or_loopback(&url).map_err(|reason| SettingError::Invalid { name, reason })?;
    Ok(url)
}

/// Outbound calls are https, except to loopback addresses (local development and tests).
pub fn check_https_or_loopback(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err(format!(
            "{url} must use https (plain http only for loopback addresses)"
        )),
    }
}

/// Whether the URL's host is a loopback address (127.0.0.0/8, ::1 or localhost).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn check_dcr_id(v: &str) -> Result<(), SettingError> {
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

fn check_stream(name: &'static str, v: &str) -> Result<(), SettingError> {
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

fn check_queue_name(v: String) -> Result<String, SettingError> {
    // Storage queue names: 3–63 lowercase letters, digits and single hyphens; the
    // poison queue adds 7 characters, so leave room for it.
    let ok = (3..=56).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if ok {
        Ok(v)
    } else {
        Err(SettingError::Invalid {
            name: "CAS_QUEUE_NAME",
            reason: format!("{v:?} is not a storage queue name (3–56 lowercase letters, digits and single hyphens, leaving room for the -poison suffix)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (
                "CAS_API_URL",
                "https://contoso.us2.portal.cloudappsecurity.com",
            ),
            (
                "SENTINEL_INGESTION_ENDPOINT",
                "https://dcr-x.westeurope-1.ingest.monitor.azure.com",
            ),
            (
                "SENTINEL_DCR_IMMUTABLE_ID",
                "dcr-0123456789abcdef0123456789abcdef",
            ),
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
        ])
    }

    fn read(map: &HashMap<&'static str, &'static str>) -> Result<Settings, SettingsErrors> {
        Settings::from_lookup(&|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn minimal_settings_get_documented_defaults() {
        let s = read(&base()).unwrap();
        assert_eq!(s.data_types, DataType::ALL.to_vec());
        assert_eq!(s.queue_name, "cas-batches");
        assert_eq!(s.poison_queue_name(), "cas-batches-poison");
        assert_eq!(s.cas.lookback, Duration::from_secs(86_400));
        assert_eq!(
            s.sentinel.stream(DataType::Discovery),
            "Custom-McasShadowItReporting"
        );
        assert!(s.cas.token.is_none());
        assert_eq!(s.schedule, DEFAULT_SCHEDULE);
        assert_eq!(s.storage.sas_lifetime, crate::storage::DEFAULT_SAS_LIFETIME);
    }

    #[test]
    fn the_budget_must_end_a_minute_before_the_hosts_function_timeout() {
        let host = |t: &str| format!(r#"{{"version": "2.0", "functionTimeout": "{t}"}}"#);
        assert_eq!(
            function_timeout(&host("00:10:00")),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(
            function_timeout(&host("1.02:00:00")),
            Ok(Some(Duration::from_secs(93_600)))
        );
        assert_eq!(function_timeout(&host("-1")), Ok(None));
        assert_eq!(function_timeout(r#"{"version": "2.0"}"#), Ok(None));
        assert!(function_timeout(&host("ten minutes")).is_err());
        let with = |budget: &'static str| {
            let mut m = base();
            m.insert("CAS_INVOCATION_BUDGET", budget);
            read(&m)
        };
        let ok = with("PT9M").unwrap();
        assert!(ok.check_against_host(&host("00:10:00")).is_ok());
        let e = with("PT9M30S")
            .unwrap()
            .check_against_host(&host("00:10:00"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CAS_INVOCATION_BUDGET") && e.contains("at most 540s"),
            "{e}"
        );
        assert!(
            with("PT2H")
                .unwrap()
                .check_against_host(&host("-1"))
                .is_ok(),
            "no limit"
        );
        assert!(
            with("PT0S").is_err() && with("PT4S").is_err(),
            "too short to do anything"
        );
        // The host.json we ship leaves the default budget its margin.
        assert!(read(&base())
            .unwrap()
            .check_against_host(crate::package::HOST_JSON)
            .is_ok());
    }

    #[test]
    fn a_legacy_token_alone_turns_discovery_off_and_says_what_to_grant() {
        let mut m = base();
        m.insert("CAS_API_TOKEN", "legacy");
        let s = read(&m).unwrap();
        assert_eq!(s.data_types, vec![DataType::Alerts, DataType::Activities]);
        let why = s.discovery_off.unwrap();
        assert!(
            why.contains("CloudApp-Discovery.Read.All") && why.contains("CAS_DATA_TYPES"),
            "{why}"
        );
        // Named explicitly, discovery reads Graph with the Entra identity.
        m.insert("CAS_DATA_TYPES", "alerts,discovery");
        let s = read(&m).unwrap();
        assert_eq!(s.data_types, vec![DataType::Alerts, DataType::Discovery]);
        assert!(s.discovery_off.is_none());
        // Without a legacy token discovery is on by default.
        assert!(read(&base()).unwrap().discovery_off.is_none());
    }

    #[test]
    fn schedules_and_sas_lifetimes_are_checked_and_the_fix_named() {
        for (value, why) in [
            ("*/5 * * * *", "has 5 fields"),
            ("* */2 * * * *", "more than once a minute"),
            ("*/10 * * * * *", "more than once a minute"),
            ("0 */2 * * * ?", "not NCRONTAB"),
        ] {
            let mut m = base();
            m.insert("CAS_SCHEDULE", value);
            let err = read(&m).unwrap_err().to_string();
            assert!(
                err.contains("CAS_SCHEDULE") && err.contains(why),
                "{value}: {err}"
            );
        }
        let mut m = base();
        m.insert("CAS_SCHEDULE", "30  */10 * * * Mon-Fri");
        assert_eq!(read(&m).unwrap().schedule, "30 */10 * * * Mon-Fri");
        for bad in ["PT5S", "P30D"] {
            let mut m = base();
            m.insert("CAS_STORAGE_SAS_LIFETIME", bad);
            let err = read(&m).unwrap_err().to_string();
            assert!(err.contains("CAS_STORAGE_SAS_LIFETIME"), "{err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_and_named() {
        let mut m = base();
        m.insert("CAS_API_URL", "http://evil.example.com");
        m.insert("CAS_DATA_TYPES", "alerts,files");
        m.insert("CAS_LOOKBACK", "1 day");
        m.remove("SENTINEL_DCR_IMMUTABLE_ID");
        let err = read(&m).unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        let text = err.to_string();
        for name in [
            "CAS_API_URL",
            "CAS_DATA_TYPES",
            "CAS_LOOKBACK",
            "SENTINEL_DCR_IMMUTABLE_ID",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    #[test]
    fn filters_must_be_objects_and_leave_window_fields_alone() {
        let mut m = base();
        m.insert("CAS_ALERTS_FILTER", r#"{"severity":{"eq":[2]}}"#);
        m.insert(
            "CAS_ACTIVITIES_FILTER",
            r#"{"filters":{"service":{"eq":[15600]}}}"#,
        );
        let s = read(&m).unwrap();
        assert!(s.cas.alerts_filter.contains_key("severity"));
        assert!(s.cas.activities_filter.contains_key("service"));

        m.insert("CAS_ALERTS_FILTER", r#"{"date":{"gte":0}}"#);
        assert!(read(&m).unwrap_err().to_string().contains("window"));
        m.insert("CAS_ALERTS_FILTER", "{not json");
        assert!(read(&m).unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn cas_url_must_be_a_known_domain_or_loopback() {
        assert!(parse_cas_url("https://x.eu2.portal.cloudappsecurity.com").is_ok());
        assert!(parse_cas_url("https://portal.cloudappsecuritygov.com").is_ok());
        assert!(parse_cas_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_cas_url("http://x.portal.cloudappsecurity.com").is_err());
        assert!(parse_cas_url("https://portal.cloudappsecurity.com.evil.example").is_err());
    }

    #[test]
    fn stream_and_queue_names_are_checked() {
        assert!(check_stream("S", "Custom-McasAlerts").is_ok());
        assert!(check_stream("S", "McasAlerts").is_err());
        assert!(check_stream("S", "Custom-").is_err());
        assert!(check_queue_name("cas-batches".into()).is_ok());
        assert!(check_queue_name("Cas_Batches".into()).is_err());
    }
}
