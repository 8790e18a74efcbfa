//! `cas-sentinel validate`: every setting, then each dependency proved end to end with the
//! configured identity (CAS, Microsoft Graph for discovery, each Logs Ingestion stream,
//! storage), each problem reported with what to change.

use crate::app::App;
use crate::auth::{self, CAS_SCOPE};
use crate::config::{Credential, Settings};
use crate::retry::Deadline;
use crate::sentinel::SentinelError;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// One check's outcome.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    /// What was checked.
    #[serde(rename = "check")]
    pub name: String,
    /// `Ok(detail)` or `Err(problem and fix)`.
    #[serde(flatten, serialize_with = "outcome")]
    pub outcome: Result<String, String>,
}

fn outcome<S: serde::Serializer>(o: &Result<String, String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(2))?;
    match o {
        Ok(d) => {
            m.serialize_entry("ok", &true)?;
            m.serialize_entry("detail", d)?;
        }
        Err(p) => {
            m.serialize_entry("ok", &false)?;
            m.serialize_entry("problem", p)?;
        }
    }
    m.end()
}

impl Check {
    fn new(name: impl Into<String>, outcome: Result<String, String>) -> Check {
        Check {
            name: name.into(),
            outcome,
        }
    }
}

/// The width of the check column: the longest name the default streams give
/// (`Logs Ingestion Custom-McasAsimAuthentication`), so lines printed one by one, as each
/// check completes, line up without knowing the others (a longer custom stream name only
/// pushes its own line's result along).
pub(crate) const NAME_WIDTH: usize = 44;

/// The table's heading line.
pub(crate) fn heading() -> String {
    format!("{:<NAME_WIDTH$}  result   detail", "check")
}

/// One check as a line of the table.
pub(crate) fn line(c: &Check) -> String {
    let (mark, text) = match &c.outcome {
        Ok(d) => ("ok", d),
        Err(p) => ("PROBLEM", p),
    };
    format!("{:<NAME_WIDTH$}  {mark:<7}  {text}", c.name)
}

/// The checks as a table a person reads in ten seconds.
#[cfg(test)]
fn render(checks: &[Check]) -> String {
    let mut out = heading() + "\n";
    for c in checks {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

/// The checks made so far, each also handed to `report` the moment it completes (a check
/// can wait seconds on a slow dependency; the operator sees the ones before it meanwhile).
struct Checks<'a> {
    done: Vec<Check>,
    report: &'a mut dyn FnMut(&Check),
    /// Before each check's name: `<tenant>: ` while a named tenant's are made.
    prefix: String,
}

impl Checks<'_> {
    fn push(&mut self, mut c: Check) {
        c.name.insert_str(0, &self.prefix);
        (self.report)(&c);
        self.done.push(c);
    }
}

/// Runs the checks of every tenant (or the one `tenant` names), handing each to `report`
/// as it completes; settings problems stop before any network call. A named tenant's
/// checks are named `<tenant>: <check>`, and storage, which the tenants share, is
/// checked once.
pub(crate) async fn validate(
    env: &[(String, String)],
    host_json: &str,
    tenant: Option<&str>,
    report: &mut dyn FnMut(&Check),
) -> Vec<Check> {
    let mut checks = Checks {
        done: Vec::new(),
        report,
        prefix: String::new(),
    };
    // From the whole list, so a misspelt name (a tenant's too) is named here as at start.
    let all = match Settings::all_from_pairs(env) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors.0 {
                checks.push(Check::new("settings", Err(e.to_string())));
            }
            return checks.done;
        }
    };
    if let Err(e) = all[0].check_against_host(host_json) {
        checks.push(Check::new("settings", Err(e.to_string())));
        return checks.done;
    }
    let deployment = match crate::app::Deployment::new(all) {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::new("clients", Err(e.to_string())));
            return checks.done;
        }
    };
    let selected = match deployment.select(tenant) {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check::new("settings", Err(e.to_string())));
            return checks.done;
        }
    };
    for app in &selected {
        checks.prefix = app.tenant().map(|t| format!("{t}: ")).unwrap_or_default();
        one_tenant(app, &mut checks).await;
    }
    checks.prefix.clear();
    checks.push(Check::new("storage", storage_check(selected[0]).await));
    checks.done
}

/// One tenant's checks: its settings, identity, sources and streams.
async fn one_tenant(app: &App, checks: &mut Checks<'_>) {
    let settings = &app.settings;
    let types: Vec<&str> = settings.data_types.iter().map(|d| d.as_str()).collect();
    checks.push(Check::new(
        "settings",
        Ok(format!("data types: {}", types.join(", "))),
    ));
    checks.push(Check::new(
        "identity",
        Ok(auth::describe(&settings.identity)),
    ));
    let deadline = || Deadline::after(Duration::from_secs(30));
    cas_checks(app, deadline(), checks).await;
    if let Some(c) = graph_alerts_check(app, deadline()).await {
        checks.push(c);
    }
    if let Some(c) = hunting_check(app, deadline()).await {
        checks.push(c);
    }
    checks.push(discovery_check(app, deadline()).await);
    for &dt in &app.settings.data_types {
        let stream = app.settings.sentinel.stream(dt).to_string();
        checks.push(stream_check(app, &stream, deadline()).await);
        if dt == crate::model::DataType::Activities && app.settings.sentinel.asim {
            for t in crate::schema::asim::AsimTable::ALL {
                checks.push(stream_check(app, t.stream(), deadline()).await);
            }
        }
    }
}

/// Storage: a connection first (named within seconds when there is none), then the queues
/// and the container made or found, which proves the roles.
async fn storage_check(app: &App) -> Result<String, String> {
    app.settings
        .storage
        .reachable()
        .await
        .map_err(|e| e.to_string())?;
    match app.ensure_resources().await {
        Ok(()) => Ok(format!("queue {}, {} and container {} reachable", app.queue.name(), app.poison.name(), crate::storage::blobs::CONTAINER)),
        Err(e) => Err(format!("{e}: the identity needs Storage Queue Data Contributor and Storage Blob Data Owner on the account (or a working AzureWebJobsStorage connection string)")),
    }
}

/// CAS: the Entra token when no legacy token is set, then one cheap list call.
async fn cas_checks(app: &App, deadline: Deadline, out: &mut Checks<'_>) {
    if app.settings.cas.token.is_none() {
        let outcome = match auth::credential(&app.settings.identity) {
            Ok(c) => auth::bearer(c.as_ref(), CAS_SCOPE).await.map(|_| "token obtained".to_string()).map_err(|e| {
                match app.settings.identity.without_secret {
                    // No token at all from the operator's login: the login is the fix.
                    Credential::AzureCli if app.settings.identity.client_secret.is_none() => format!("{e}: run `az login` (and `az account set` to the tenant), or give AZURE_CLIENT_SECRET"),
                    _ => format!("{e}: give the identity the Microsoft Cloud App Security API application permission Investigation.Read, with admin consent, or set CAS_API_TOKEN"),
                }
            }),
            Err(e) => Err(e.to_string()),
        };
        out.push(Check::new("CAS token (Entra)", outcome));
    }
    let body = json!({"filters": {}, "skip": 0, "limit": 1});
    let outcome = app
        .cas
        .list(
            crate::cas::pull::ALERTS_PATH,
            &body,
            crate::cas::ALERT_KEYS,
            deadline,
        )
        .await
        .map(|p| {
            format!(
                "reachable; alerts readable ({} on the first page)",
                p.records.len()
            )
        })
        .map_err(|e| e.to_string());
    out.push(Check::new("CAS API", outcome));
}

/// One Logs Ingestion stream, proved with an empty upload (`[]`): the service accepts it
/// only with the right endpoint, DCR, stream and role, and writes nothing.
async fn stream_check(app: &App, stream: &str, deadline: Deadline) -> Check {
    let name = format!("Logs Ingestion {stream}");
    let uncertain = std::sync::atomic::AtomicU32::new(0);
    let outcome = match app
        .sentinel
        .send_body(stream, b"[]", deadline, &uncertain)
        .await
    {
        Ok(()) => Ok(format!(
            "an empty upload was accepted (DCR {}, role in place)",
            app.settings.sentinel.dcr_immutable_id
        )),
        Err(SentinelError::Rejected { status, code, .. }) => {
            Err(format!("{status} {code}: {}", stream_fix(status, &code)))
        }
        Err(e) => Err(e.to_string()),
    };
    Check::new(name, outcome)
}

/// The fix for a refused empty upload.
fn stream_fix(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (401, _) => "the token was refused: the identity (AZURE_CLIENT_ID / managed identity) must be in the workspace's tenant",
        (403, _) => "grant the function app's identity Monitoring Metrics Publisher on the DCR (infra/ does; a new assignment can take 30 minutes to apply)",
        (404, _) => "no DCR with SENTINEL_DCR_IMMUTABLE_ID at SENTINEL_INGESTION_ENDPOINT: take both from the DCR's overview (infra/ outputs dcrImmutableId and logsIngestionEndpoint)",
        (400, c) if c.contains("Stream") => "the DCR declares no such stream: set SENTINEL_STREAM_* to its stream names (or SENTINEL_ASIM=off for a DCR without the ASIM streams), or redeploy the DCR from infra/",
        _ => "see the service's message above; redeploying the DCR from infra/ fixes a declaration that drifted",
    }
}

/// With `CAS_ALERTS_SOURCE=graph`: one page of Defender for Cloud Apps' alerts from
/// Graph, which proves `SecurityAlert.Read.All`.
async fn graph_alerts_check(app: &App, deadline: Deadline) -> Option<Check> {
    use crate::config::ApiSource;
    use crate::graph::alerts::{ALERTS_PATH, SERVICE_SOURCE};
    let alerts = app
        .settings
        .data_types
        .contains(&crate::model::DataType::Alerts);
    if !alerts || app.settings.cas.alerts_source != ApiSource::Graph {
        return None;
    }
    let outcome = match app.graph.url(ALERTS_PATH) {
        Ok(mut url) => {
            url.query_pairs_mut()
                .append_pair("$filter", &format!("serviceSource eq '{SERVICE_SOURCE}'"))
                .append_pair("$top", "1");
            app.graph
                .page(&url, deadline)
                .await
                .map(|p| format!("alerts readable ({} on the first page)", p.items.len()))
                .map_err(|e| match e {
                    crate::graph::GraphError::Denied { status: 403, .. } => format!("{e}: grant the identity the Microsoft Graph application permission SecurityAlert.Read.All, with admin consent (docs/deploy.md), or set CAS_ALERTS_SOURCE=cas"),
                    e => e.to_string(),
                })
        }
        Err(e) => Err(e.to_string()),
    };
    Some(Check::new("Microsoft Graph (alerts)", outcome))
}

/// With `CAS_ACTIVITIES_SOURCE=graph`: one advanced hunting query of a minute of
/// CloudAppEvents, which proves `ThreatHunting.Read.All`.
async fn hunting_check(app: &App, deadline: Deadline) -> Option<Check> {
    use crate::config::ApiSource;
    let on = app
        .settings
        .data_types
        .contains(&crate::model::DataType::Activities);
    if !on || app.settings.cas.activities_source != ApiSource::Graph {
        return None;
    }
    let now = crate::model::now_ms();
    let q = crate::graph::hunting::query(now - 60_000, now, 1);
    let outcome = app
        .graph
        .hunt(&q, deadline)
        .await
        .map(|rows| format!("advanced hunting answered ({} row(s) of the last minute)", rows.len()))
        .map_err(|e| match e {
            crate::graph::GraphError::Denied { status: 403, .. } => format!("{e}: grant the identity the Microsoft Graph application permission ThreatHunting.Read.All, with admin consent (docs/deploy.md), or set CAS_ACTIVITIES_SOURCE=cas"),
            e => e.to_string(),
        });
    Some(Check::new("Microsoft Graph (advanced hunting)", outcome))
}

/// Discovery: off (and why), or one page of Graph's continuous reports read with the
/// identity discovery uses.
async fn discovery_check(app: &App, deadline: Deadline) -> Check {
    let name = "Microsoft Graph (discovery)";
    if let Some(why) = app.settings.discovery_off {
        return Check::new(name, Ok(why.to_string()));
    }
    if !app
        .settings
        .data_types
        .contains(&crate::model::DataType::Discovery)
    {
        return Check::new(name, Ok("discovery is not in CAS_DATA_TYPES".into()));
    }
    let outcome = match app.graph.url(crate::graph::STREAMS_PATH) {
        Ok(url) => app.graph.page(&url, deadline).await.map(|p| {
            let names: Vec<&str> = p
                .items
                .iter()
                .filter_map(|r| r.get("displayName").and_then(|n| n.as_str()))
                .collect();
            format!(
                "continuous reports readable{}: {}",
                if p.next.is_some() {
                    " (first page)"
                } else {
                    ""
                },
                names.join(", ")
            )
        }),
        Err(e) => Err(e),
    };
    Check::new(name, outcome.map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_json_say_the_same() {
        let checks = vec![
            Check::new("settings", Ok("data types: alerts".into())),
            Check::new(
                "Logs Ingestion Custom-McasAlerts",
                Err("403 Forbidden: grant…".into()),
            ),
        ];
        let table = render(&checks);
        assert!(table.lines().nth(1).unwrap().contains("ok"), "{table}");
        let row: Vec<&str> = table.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(
            row[..5],
            ["Logs", "Ingestion", "Custom-McasAlerts", "PROBLEM", "403"],
            "{table}"
        );
        assert_eq!(
            table.lines().nth(2).unwrap().find("PROBLEM"),
            Some(NAME_WIDTH + 2)
        );
        let v = serde_json::to_value(&checks).unwrap();
        assert_eq!(
            v[0],
            json!({"check": "settings", "ok": true, "detail": "data types: alerts"})
        );
        assert_eq!(v[1]["ok"], false);
        assert_eq!(v[1]["problem"], "403 Forbidden: grant…");
    }

    #[test]
    fn each_refusal_of_an_empty_upload_names_its_fix() {
        assert!(stream_fix(403, "Forbidden").contains("Monitoring Metrics Publisher"));
        assert!(stream_fix(404, "DcrNotFound").contains("SENTINEL_DCR_IMMUTABLE_ID"));
        assert!(stream_fix(400, "InvalidStream").contains("SENTINEL_STREAM_"));
        assert!(stream_fix(401, "InvalidToken").contains("tenant"));
    }
}
