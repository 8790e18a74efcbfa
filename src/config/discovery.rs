//! The discovery settings: where Microsoft Graph is, which continuous reports to read,
//! over what rolling period, how often, and how many user and IP rows per app.

use super::fields::{
    parse_count, parse_duration_within, parse_service_url, parse_switch, placeholder_url, Collector,
};
use super::SettingError;
use std::time::Duration;
use url::Url;

/// The rolling period Graph aggregates discovered apps over. Graph accepts these three
/// and answers 400 for any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryPeriod {
    /// The last 7 days.
    P7D,
    /// The last 30 days.
    P30D,
    /// The last 90 days.
    P90D,
}

impl DiscoveryPeriod {
    /// The ISO 8601 form Graph's `period=duration'…'` parameter takes.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryPeriod::P7D => "P7D",
            DiscoveryPeriod::P30D => "P30D",
            DiscoveryPeriod::P90D => "P90D",
        }
    }

    /// The period's length in days.
    pub fn days(self) -> i64 {
        match self {
            DiscoveryPeriod::P7D => 7,
            DiscoveryPeriod::P30D => 30,
            DiscoveryPeriod::P90D => 90,
        }
    }
}

/// How discovery snapshots are taken.
#[derive(Clone, Debug)]
pub struct DiscoverySettings {
    /// Microsoft Graph's base URL (`GRAPH_API_URL`).
    pub graph_url: Url,
    /// Continuous reports to read, by display name (`None`: all of them).
    pub streams: Option<Vec<String>>,
    /// The rolling period each snapshot covers.
    pub period: DiscoveryPeriod,
    /// How often a snapshot is taken.
    pub interval: Duration,
    /// Whether each app's users are written as rows of their own.
    pub users: bool,
    /// Whether each app's IP addresses are written as rows of their own.
    pub ip_addresses: bool,
    /// At most this many user rows, and as many IP rows, per app and snapshot.
    pub max_per_app: usize,
}

/// The public Graph endpoint (national clouds have their own).
pub(crate) const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";

/// The Graph hosts a token may be sent to: the public and national clouds.
const GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

impl DiscoverySettings {
    #[cfg(feature = "sim")]
    /// Reads the discovery section through `get`, gathering every problem.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<SettingError>> {
        let mut errs = Collector(Vec::new());
        let s = Self::read(get, &mut errs);
        if errs.0.is_empty() {
            Ok(s)
        } else {
            Err(errs.0)
        }
    }

    /// The discovery section; problems go to `errs` (and the value is then a placeholder).
    pub(crate) fn read(get: &dyn Fn(&str) -> Option<String>, errs: &mut Collector) -> Self {
        let interval = parse_duration_within(
            "CAS_DISCOVERY_INTERVAL",
            get("CAS_DISCOVERY_INTERVAL"),
            "P1D",
            3600..=30 * 86_400,
            |_| {
                "must be between PT1H and P30D (Graph's aggregates move slowly; a snapshot costs two Graph calls per app)".into()
            },
        );
        let max_per_app = parse_count(
            "CAS_DISCOVERY_MAX_PER_APP",
            get("CAS_DISCOVERY_MAX_PER_APP"),
            1000,
            1..=10_000,
            "expected a whole number from 1 to 10000 (user rows, and IP rows, per app and snapshot)",
        );
        let switch = |name| parse_switch(name, get(name), true);
        DiscoverySettings {
            graph_url: errs.take(
                parse_graph_url(&get("GRAPH_API_URL").unwrap_or_else(|| DEFAULT_GRAPH_URL.into())),
                placeholder_url(),
            ),
            streams: get("CAS_DISCOVERY_STREAMS").map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            period: errs.take(
                parse_period(get("CAS_DISCOVERY_PERIOD")),
                DiscoveryPeriod::P7D,
            ),
            interval: errs.take(interval, Duration::ZERO),
            users: errs.take(switch("CAS_DISCOVERY_USERS"), false),
            ip_addresses: errs.take(switch("CAS_DISCOVERY_IP_ADDRESSES"), false),
            max_per_app: errs.take(max_per_app, 0),
        }
    }
}

fn parse_period(value: Option<String>) -> Result<DiscoveryPeriod, SettingError> {
    match value.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("P7D") => Ok(DiscoveryPeriod::P7D),
        Some("P30D") => Ok(DiscoveryPeriod::P30D),
        Some("P90D") => Ok(DiscoveryPeriod::P90D),
        Some(other) => Err(SettingError::Invalid {
            name: "CAS_DISCOVERY_PERIOD",
            reason: format!(
                "{other:?}: Graph aggregates discovered apps over P7D, P30D or P90D only"
            ),
        }),
    }
}

/// Graph's URL: https on a Graph host (a token for Graph is sent there), or http on a
/// loopback address for local work.
fn parse_graph_url(text: &str) -> Result<Url, SettingError> {
    let known = |host: &str| GRAPH_HOSTS.contains(&host);
    parse_service_url("GRAPH_API_URL", text, known, &GRAPH_HOSTS.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<DiscoverySettings, Vec<SettingError>> {
        DiscoverySettings::from_lookup(&|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_are_a_daily_seven_day_snapshot_of_every_report() {
        let s = read(&[]).unwrap();
        assert_eq!(s.graph_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(s.period, DiscoveryPeriod::P7D);
        assert_eq!(s.interval, Duration::from_secs(86_400));
        assert!(s.users && s.ip_addresses);
        assert_eq!((s.max_per_app, s.streams), (1000, None));
    }

    #[test]
    fn each_bad_value_is_named() {
        let errs = read(&[
            ("GRAPH_API_URL", "http://graph.microsoft.com"),
            ("CAS_DISCOVERY_PERIOD", "P1D"),
            ("CAS_DISCOVERY_INTERVAL", "PT5M"),
            ("CAS_DISCOVERY_USERS", "maybe"),
            ("CAS_DISCOVERY_MAX_PER_APP", "0"),
        ])
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for name in [
            "GRAPH_API_URL",
            "CAS_DISCOVERY_PERIOD",
            "CAS_DISCOVERY_INTERVAL",
            "CAS_DISCOVERY_USERS",
            "CAS_DISCOVERY_MAX_PER_APP",
        ] {
            assert!(text.iter().any(|t| t.starts_with(name)), "{name}: {text:?}");
        }
        assert!(read(&[("GRAPH_API_URL", "https://evil.example.com")]).is_err());
        assert!(read(&[("GRAPH_API_URL", "https://graph.microsoft.us")]).is_ok());
        assert!(read(&[("GRAPH_API_URL", "http://127.0.0.1:9000/")]).is_ok());
        assert_eq!(
            read(&[("CAS_DISCOVERY_PERIOD", "p90d")]).unwrap().period,
            DiscoveryPeriod::P90D
        );
    }
}
