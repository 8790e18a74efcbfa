//! Every setting described once: its name, its default and what it means. The README's
//! settings table is generated from this list (`scripts/generate`, checked in CI), and
//! the tests hold the parsers to it: every setting the parsers read is here, and each
//! default here is the value a parser uses when the setting is unset.

/// What a setting is when it is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unset {
    /// The setting must be set.
    Required,
    /// Unset is a choice (no legacy token, no extra filter).
    Nothing,
    /// Unset means this value, exactly as if it were set to it.
    Value(&'static str),
    /// Unset means what this says (not a value one could set).
    Described(&'static str),
}

/// One setting. The shipped handler reads only the names (to name a misspelt setting);
/// the rest is for the README's table, which the generator writes.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
pub(crate) struct Setting {
    /// The app setting's (environment variable's) name.
    pub name: &'static str,
    /// What unset means.
    pub unset: Unset,
    /// What it does, with its range.
    pub meaning: &'static str,
}

/// Every setting, in the README's order.
pub(crate) const SETTINGS: &[Setting] = &[
    Setting {
        name: "CAS_TENANTS",
        unset: Unset::Described("one unnamed tenant"),
        meaning: "comma list of tenant names (1 to 40 lowercase letters, digits and `-`) for one deployment serving several Defender for Cloud Apps tenants: each reads every setting below as `<name>__<SETTING>` (`contoso__CAS_API_URL`, `contoso__AZURE_TENANT_ID`), else the unprefixed one, but `CAS_API_URL` is each tenant's own, and the credential settings (`CAS_API_TOKEN`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `CAS_CREDENTIAL`) are read as one: a tenant that sets any of them sets all it uses, one that sets none signs in as the deployment; `CAS_QUEUE_NAME`, `CAS_INVOCATION_BUDGET`, `CAS_SCHEDULE`, `CAS_LOG_FORMAT`, `CAS_STORAGE_SAS_LIFETIME`, `CAS_FEDERATED_IDENTITY_CLIENT_ID` and storage are the deployment's. Rows carry `CasTenant` and `CasTenantId`. docs/deploy.md, \"Several tenants\"",
    },
    Setting {
        name: "CAS_UNNAMED_TENANT",
        unset: Unset::Nothing,
        meaning: "with `CAS_TENANTS`, on a deployment that ran without it: the tenant (one of `CAS_TENANTS`) that was its one unnamed tenant. It goes on from the unnamed tenant's checkpoints and takes the messages queued before, so turning `CAS_TENANTS` on sends nothing again",
    },
    Setting {
        name: "CAS_API_URL",
        unset: Unset::Required,
        meaning: "tenant API URL: https on `*.portal.cloudappsecurity.com`, `*.portal.cloudappsecurity.us` or `portal.cloudappsecuritygov.com` (http only on loopback)",
    },
    Setting {
        name: "CAS_API_TOKEN",
        unset: Unset::Nothing,
        meaning: "legacy API token; when absent an Entra token is used",
    },
    Setting {
        name: "AZURE_TENANT_ID",
        unset: Unset::Nothing,
        meaning: "the tenant of the Entra app below",
    },
    Setting {
        name: "AZURE_CLIENT_ID",
        unset: Unset::Described("managed identity"),
        meaning: "Entra app with `AZURE_CLIENT_SECRET`; without a secret, the user-assigned managed identity to use",
    },
    Setting {
        name: "AZURE_CLIENT_SECRET",
        unset: Unset::Nothing,
        meaning: "the Entra app's client secret; without it, managed identity",
    },
    Setting {
        name: "CAS_CREDENTIAL",
        unset: Unset::Value("auto"),
        meaning: "without `AZURE_CLIENT_SECRET`: `managed-identity`, `azure-cli` (your own `az login`, for `validate`, `status`, `replay` and `backfill` from a laptop), `federated` (the multi-tenant Entra app `AZURE_CLIENT_ID` in `AZURE_TENANT_ID`, signed in with the deployment's managed identity as its federated credential: no secret; for a tenant's CAS and Graph reads), or `auto`: managed identity where the platform offers one (`IDENTITY_ENDPOINT` is set, as in Functions), the Azure CLI login elsewhere",
    },
    Setting {
        name: "CAS_FEDERATED_IDENTITY_CLIENT_ID",
        unset: Unset::Described("the deployment's own"),
        meaning: "with `CAS_CREDENTIAL=federated`: the managed identity whose token signs the app in; unset, the deployment's own (its user-assigned identity `AZURE_CLIENT_ID`, as infra/ deploys it, else the system-assigned one)",
    },
    Setting {
        name: "CAS_DATA_TYPES",
        unset: Unset::Described("all"),
        meaning: "comma list of `alerts`, `activities`, `discovery`. Discovery reads Microsoft Graph with the Entra identity, never `CAS_API_TOKEN`: with a legacy token and this setting unset, discovery is off (start-up, `validate` and `status` say so)",
    },
    Setting {
        name: "CAS_ALERTS_SOURCE",
        unset: Unset::Value("cas"),
        meaning: "where alerts come from: `cas`, the Defender for Cloud Apps API, or `graph`, Microsoft Graph `security/alerts_v2` (Defender for Cloud Apps' alerts only, with incident, classification, determination and MITRE techniques; needs `SecurityAlert.Read.All`; `CAS_ALERTS_FILTER`, `CAS_SKIP_IDENTITY_ALERTS` and the `CAS_ALERT_UPDATE_*` settings are for `cas`). Switching keeps one alert one alert: both sources' rows carry the CAS alert id in `VendorOriginalId`",
    },
    Setting {
        name: "CAS_ACTIVITIES_SOURCE",
        unset: Unset::Value("cas"),
        meaning: "where activities come from: `cas`, the Defender for Cloud Apps API, or `graph`, Microsoft Graph advanced hunting over `CloudAppEvents` (rows in CloudAppEvents' own values; needs `ThreatHunting.Read.All`; windows follow `ingestion_time()`, so set `CAS_SETTLE_DELAY` to a few minutes, PT5M, for rows Defender is still ingesting; `CAS_ACTIVITIES_FILTER` and `CAS_SCAN_LIMIT` are for `cas`)",
    },
    Setting {
        name: "CAS_ALERTS_FILTER",
        unset: Unset::Nothing,
        meaning: "extra CAS filter JSON ANDed into every alerts query, e.g. `{\"severity\":{\"eq\":[2]}}`; may not set `date`",
    },
    Setting {
        name: "CAS_ACTIVITIES_FILTER",
        unset: Unset::Nothing,
        meaning: "the same for activities; may not set `created` or `isScan`",
    },
    Setting {
        name: "CAS_DISCOVERY_STREAMS",
        unset: Unset::Described("all"),
        meaning: "comma list of continuous report names (Graph's `displayName`); a name the tenant lacks is logged",
    },
    Setting {
        name: "GRAPH_API_URL",
        unset: Unset::Value("https://graph.microsoft.com"),
        meaning: "Microsoft Graph for discovery: https on `graph.microsoft.com`, `graph.microsoft.us`, `dod-graph.microsoft.us` or `microsoftgraph.chinacloudapi.cn` (http only on loopback); needs the application permission `CloudApp-Discovery.Read.All`",
    },
    Setting {
        name: "CAS_DISCOVERY_PERIOD",
        unset: Unset::Value("P7D"),
        meaning: "the rolling period each snapshot covers: `P7D`, `P30D` or `P90D` (Graph offers no other)",
    },
    Setting {
        name: "CAS_DISCOVERY_INTERVAL",
        unset: Unset::Value("P1D"),
        meaning: "how often a snapshot is taken, `PT1H`–`P30D`, on a fixed UTC grid (daily: the first run after 00:00 UTC)",
    },
    Setting {
        name: "CAS_DISCOVERY_USERS",
        unset: Unset::Value("on"),
        meaning: "a row per user of each app (`on`/`off`); costs a Graph call per app and per page of users",
    },
    Setting {
        name: "CAS_DISCOVERY_IP_ADDRESSES",
        unset: Unset::Value("on"),
        meaning: "a row per IP address of each app (`on`/`off`); the same cost",
    },
    Setting {
        name: "CAS_DISCOVERY_MAX_PER_APP",
        unset: Unset::Value("1000"),
        meaning: "at most this many user rows, and IP rows, per app and snapshot, 1–10000 (`UsersCount`/`IpAddressesCount` keep the true counts)",
    },
    Setting {
        name: "CAS_LOOKBACK",
        unset: Unset::Value("P1D"),
        meaning: "first-run window, ISO 8601 duration",
    },
    Setting {
        name: "CAS_SETTLE_DELAY",
        unset: Unset::Value("PT1M"),
        meaning: "how far behind now a window ends, so CAS has stored everything in it",
    },
    Setting {
        name: "CAS_OVERLAP",
        unset: Unset::Value("PT2M"),
        meaning: "how far before the last position each pull re-reads, to catch records CAS made visible late (ids already sent from that span are skipped)",
    },
    Setting {
        name: "CAS_SCAN_LIMIT",
        unset: Unset::Value("5000"),
        meaning: "activities per scan page, 500–5000",
    },
    Setting {
        name: "CAS_REQUESTS_PER_MINUTE",
        unset: Unset::Value("30"),
        meaning: "client-side CAS request budget, 1–30 (CAS allows 30 per tenant; lower it when other tools share the tenant)",
    },
    Setting {
        name: "CAS_ALERT_UPDATES",
        unset: Unset::Value("on"),
        meaning: "forward an alert again, as a new row, when its resolution or severity changes (`on`/`off`)",
    },
    Setting {
        name: "CAS_ALERT_UPDATE_WINDOW",
        unset: Unset::Value("P7D"),
        meaning: "how far back alerts are watched for changes (costs one request per 100 alerts in the window at each re-listing)",
    },
    Setting {
        name: "CAS_ALERT_UPDATE_INTERVAL",
        unset: Unset::Value("PT1H"),
        meaning: "how often those alerts are re-listed",
    },
    Setting {
        name: "CAS_SKIP_IDENTITY_ALERTS",
        unset: Unset::Value("off"),
        meaning: "leave out alerts Defender for Identity raised (their app is Active Directory, 20940), for a workspace that also gets them from Defender for Identity's own connector (`on`/`off`; docs/content.md)",
    },
    Setting {
        name: "CAS_INVOCATION_BUDGET",
        unset: Unset::Value("PT4M"),
        meaning: "time one invocation may use: at least `PT5S`, and at most host.json's `functionTimeout` less one minute (checked at start-up and by `validate`)",
    },
    Setting {
        name: "CAS_SCHEDULE",
        unset: Unset::Value("0 */2 * * * *"),
        meaning: "PollCas timer, NCRONTAB (`second minute hour day month day-of-week`), read by `PollCas/function.json` as `%CAS_SCHEDULE%`, so it must be set in the app settings (`infra/` does); the second is one fixed value. Every 2 minutes costs about 1.5 of the tenant's 30 CAS requests a minute when caught up",
    },
    Setting {
        name: "CAS_STORAGE_SAS_LIFETIME",
        unset: Unset::Value("P1D"),
        meaning: "with a key-based `AzureWebJobsStorage`, how long each account SAS the handler mints is valid (a new one is minted half-way), `PT10S`–`P7D`",
    },
    Setting {
        name: "SENTINEL_INGESTION_ENDPOINT",
        unset: Unset::Required,
        meaning: "the Logs Ingestion endpoint: the DCR's own or a DCE",
    },
    Setting {
        name: "SENTINEL_DCR_IMMUTABLE_ID",
        unset: Unset::Required,
        meaning: "the DCR immutable id, `dcr-` and 32 hex digits",
    },
    Setting {
        name: "SENTINEL_MAX_CALL_BYTES",
        unset: Unset::Value("1048576"),
        meaning: "largest call body, uncompressed, 65536–1048576",
    },
    Setting {
        name: "SENTINEL_ASIM",
        unset: Unset::Value("off"),
        meaning: "`on` also writes activities into Sentinel's native ASIM tables (sign-ins into `ASimAuthenticationEventLogs`, file activity into `ASimFileEventLogs`, administrative, permission and sharing changes into `ASimAuditEventLogs`; docs/tables.md), one more row for each such activity; the DCR must declare the ASIM streams, as infra/ deploys it (and turns this on). Off when unset so that a DCR made before them does not refuse every activity batch",
    },
    Setting {
        name: "SENTINEL_CALL_TIMEOUT",
        unset: Unset::Value("PT60S"),
        meaning: "how long a call's first try waits for Logs Ingestion's answer, PT1S–PT10M; a try after an unanswered one (the rows may be stored: at most one copy each) waits as long as the invocation's budget allows",
    },
    Setting {
        name: "SENTINEL_STREAM_ALERTS",
        unset: Unset::Value("Custom-McasAlerts"),
        meaning: "the DCR stream for alerts",
    },
    Setting {
        name: "SENTINEL_STREAM_ACTIVITIES",
        unset: Unset::Value("Custom-McasActivity"),
        meaning: "the DCR stream for activities",
    },
    Setting {
        name: "SENTINEL_STREAM_DISCOVERY",
        unset: Unset::Value("Custom-McasShadowItReporting"),
        meaning: "the DCR stream for discovery",
    },
    Setting {
        name: "AzureWebJobsStorage",
        unset: Unset::Required,
        meaning: "the storage account for the queue, checkpoints and batch state: a connection string, or the identity-based `AzureWebJobsStorage__queueServiceUri` / `__blobServiceUri` / `__accountName` / `__credential` / `__clientId`",
    },
    Setting {
        name: "CAS_QUEUE_NAME",
        unset: Unset::Value("cas-batches"),
        meaning: "fan-out queue; the poison queue is `<name>-poison`; also read by `IngestBatch/function.json`",
    },
    Setting {
        name: "CAS_LOG_FORMAT",
        unset: Unset::Described("`json` under the Functions host, else `text`"),
        meaning: "`json` (one object a line) or `text`; colour only when stderr is a terminal and `NO_COLOR` is unset",
    },
];

/// The README's settings table.
#[cfg(feature = "sim")]
pub(crate) fn markdown_table() -> String {
    let mut md = String::from("| setting | meaning | when unset |\n| --- | --- | --- |\n");
    for s in SETTINGS {
        let unset = match s.unset {
            Unset::Required => "required".to_string(),
            Unset::Nothing => String::new(),
            Unset::Value(v) => format!("`{v}`"),
            Unset::Described(d) => d.to_string(),
        };
        md.push_str(&format!("| `{}` | {} | {unset} |\n", s.name, s.meaning));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};

    /// The least a valid configuration sets.
    fn base() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (
                "CAS_API_URL",
                "https://contoso.us2.portal.cloudappsecurity.com".to_string(),
            ),
            (
                "SENTINEL_INGESTION_ENDPOINT",
                "https://x.westeurope-1.ingest.monitor.azure.com".into(),
            ),
            (
                "SENTINEL_DCR_IMMUTABLE_ID",
                "dcr-00000000000000000000000000000001".into(),
            ),
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true".into()),
        ])
    }

    fn parse(m: &BTreeMap<&'static str, String>) -> String {
        let s = super::super::Settings::from_lookup(&|k| m.get(k).cloned()).expect("valid");
        format!("{s:?}")
    }

    #[test]
    fn every_default_written_here_is_the_one_the_parsers_use() {
        let unset = parse(&base());
        for s in SETTINGS {
            if let Unset::Value(v) = s.unset {
                let mut m = base();
                m.insert(s.name, v.to_string());
                assert_eq!(
                    parse(&m),
                    unset,
                    "{}: unset is not the same as {v:?}",
                    s.name
                );
            }
        }
    }

    #[test]
    fn every_setting_the_parsers_read_is_described_and_every_one_described_is_read() {
        let read = RefCell::new(BTreeSet::new());
        // Once as one unnamed tenant, once as a named one (whose own names, `t1__…`, are
        // the same settings).
        let mut named = base();
        named.insert("CAS_TENANTS", "t1".into());
        named.insert(
            "t1__CAS_API_URL",
            "https://t1.us2.portal.cloudappsecurity.com".into(),
        );
        for m in [base(), named] {
            super::super::Settings::all_from_lookup(&|k| {
                read.borrow_mut()
                    .insert(k.strip_prefix("t1__").unwrap_or(k).to_string());
                m.get(k).cloned()
            })
            .unwrap();
        }
        let described: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
        for name in read.borrow().iter() {
            let storage_form = name.starts_with("AzureWebJobsStorage__");
            // Set by the platform, read to tell Azure from a laptop.
            let platform = ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"].contains(&name.as_str());
            assert!(
                described.contains(name.as_str()) || storage_form || platform,
                "{name} is read but not described"
            );
        }
        for name in described.iter() {
            assert!(
                read.borrow().contains(*name),
                "{name} is described but never read"
            );
        }
    }
}
