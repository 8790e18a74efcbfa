//! A simulated Microsoft Graph serving the discovery resources with their documented
//! shapes: `uploadedStreams`, `aggregatedAppsDetails(period=duration'…')` and each app's
//! `users` and `ipAddresses`, as `{"value": [...], "@odata.nextLink": "..."}` pages.
//!
//! Like the real service it wants a bearer token for `https://graph.microsoft.com` (401
//! otherwise), answers 403 when the permission is missing, 400 for a period other than
//! P7D, P30D or P90D, 404 for a report it does not have, and 400 for a skip token it no
//! longer honours; faults (429 with `Retry-After`, 5xx) can be injected.

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use url::Url;
use warp::http::StatusCode;
use warp::{Filter, Reply};

/// The resource (audience) of Graph tokens.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// An answer to force on an upcoming request.
#[derive(Clone, Debug)]
pub enum GraphFault {
    /// Answer this request normally (to place later faults after some good pages).
    Pass,
    /// Answer with this status and a Graph error body.
    Status(u16),
    /// Answer 429 with this `Retry-After` (seconds).
    RetryAfter(u64),
}

/// A discovered app with its users and IP addresses.
#[derive(Clone, Debug)]
pub struct SimApp {
    /// The `discoveredCloudAppDetail`.
    pub detail: Value,
    /// Its users' `userIdentifier`s.
    pub users: Vec<String>,
    /// Its IP addresses.
    pub ip_addresses: Vec<String>,
    /// The detail's text as served, when it holds what a `Value` cannot (a lone
    /// surrogate, a number beyond `f64`); `None`: `detail` serialized.
    pub text: Option<String>,
}

/// Requests seen, for assertions and the Graph call counts the docs quote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Every request received.
    pub requests: u64,
    /// Requests answered with an injected fault.
    pub faulted: u64,
    /// Requests refused for their token or permission.
    pub refused: u64,
}

struct Report {
    id: String,
    name: String,
    apps: Vec<SimApp>,
}

struct State {
    reports: Vec<Report>,
    /// Defender alerts, in the order they were raised.
    alerts: Vec<Value>,
    /// Changes to make to the alerts right after the next alerts page is served, as a
    /// tenant does while a client pages (index, new status, when).
    during_read: Vec<(usize, &'static str, i64)>,
    /// Alerts pages served.
    alert_pages: u64,
    /// CloudAppEvents rows and when each was (or will be) ingested, Unix ms.
    hunting: Vec<(Value, i64)>,
    /// When the hunting queries of the last minute were run, for the 45-a-minute limit.
    hunting_calls: VecDeque<std::time::Instant>,
    /// Hunting queries answered.
    hunting_queries: u64,
    /// Hunting queries allowed a minute (45, as Graph documents at least).
    hunting_per_minute: usize,
    faults: VecDeque<GraphFault>,
    stats: GraphStats,
    forbidden: bool,
    /// Skip tokens carry this; bumping it makes every issued one stale.
    generation: u64,
}

/// The simulated Graph.
pub struct GraphSim {
    /// Items per page of apps (and of reports).
    apps_per_page: usize,
    /// Items per page of users and IP addresses.
    items_per_page: usize,
    state: Mutex<State>,
}

impl GraphSim {
    /// Starts Graph on a free loopback port with the given page sizes; returns it and
    /// its base URL (for `GRAPH_API_URL`).
    pub async fn start(apps_per_page: usize, items_per_page: usize) -> (Arc<GraphSim>, Url) {
        let sim = Arc::new(GraphSim {
            apps_per_page: apps_per_page.max(1),
            items_per_page: items_per_page.max(1),
            state: Mutex::new(State {
                reports: Vec::new(),
                alerts: Vec::new(),
                during_read: Vec::new(),
                alert_pages: 0,
                hunting: Vec::new(),
                hunting_calls: VecDeque::new(),
                hunting_queries: 0,
                hunting_per_minute: 45,
                faults: VecDeque::new(),
                stats: GraphStats::default(),
                forbidden: false,
                generation: 1,
            }),
        });
        let s = sim.clone();
        let route = warp::get()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("host"))
            .map(
                move |p: warp::path::FullPath,
                      q: String,
                      auth: Option<String>,
                      host: Option<String>| {
                    // Next links are absolute, on the address the client used.
                    let base = format!("http://{}", host.unwrap_or_default());
                    s.handle(&base, p.as_str(), &q, auth.as_deref())
                },
            );
        let s = sim.clone();
        let hunt = warp::post()
            .and(warp::path!("v1.0" / "security" / "runHuntingQuery"))
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .map(move |auth: Option<String>, body: bytes::Bytes| s.hunt(auth.as_deref(), &body));
        let route = hunt.or(route);
        let addr = crate::loopback::serve(route, 0)
            .await
            .expect("bind a loopback port");
        let base = Url::parse(&format!("http://{addr}/")).expect("a loopback URL");
        (sim, base)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a continuous report with these apps; returns its id.
    pub fn add_report(&self, name: &str, apps: Vec<SimApp>) -> String {
        let mut st = self.lock();
        let id = format!("{}", 1000 + st.reports.len());
        st.reports.push(Report {
            id: id.clone(),
            name: name.into(),
            apps,
        });
        id
    }

    /// Replaces a report's apps (the aggregate moving between snapshots).
    pub fn set_apps(&self, report_id: &str, apps: Vec<SimApp>) {
        if let Some(r) = self.lock().reports.iter_mut().find(|r| r.id == report_id) {
            r.apps = apps;
        }
    }

    /// Forces the next requests' answers, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = GraphFault>) {
        self.lock().faults.extend(faults);
    }

    /// Answers 403 to everything (the permission not granted) while set.
    pub fn set_forbidden(&self, forbidden: bool) {
        self.lock().forbidden = forbidden;
    }

    /// Makes every skip token issued so far stale (400 when it is used).
    pub fn expire_skip_tokens(&self) {
        self.lock().generation += 1;
    }

    /// Raises `n` alerts of other Defender services and of Defender for Cloud Apps (every
    /// third is another service's, which the filter must leave out), created and last
    /// updated at `at_ms` + their index in ms; returns the indexes of the Cloud Apps ones.
    pub fn add_alerts(&self, n: usize, at_ms: i64) -> Vec<usize> {
        let mut st = self.lock();
        let mut ours = Vec::new();
        for i in 0..n {
            let k = st.alerts.len();
            let service = if k % 3 == 2 {
                "microsoftDefenderForEndpoint"
            } else {
                super::alerts::SERVICE_SOURCE
            };
            if service == super::alerts::SERVICE_SOURCE {
                ours.push(k);
            }
            st.alerts.push(graph_alert(k, service, at_ms + i as i64));
        }
        ours
    }

    /// Changes alert `index`'s status (and its `lastUpdateDateTime`) at `at_ms`.
    pub fn update_alert(&self, index: usize, status: &str, at_ms: i64) {
        let mut st = self.lock();
        set_status(&mut st.alerts[index], status, at_ms);
    }

    /// Touches alert `index` at `at_ms`: a comment, which moves `lastUpdateDateTime` and
    /// changes nothing that matters.
    pub fn touch_alert(&self, index: usize, at_ms: i64) {
        let mut st = self.lock();
        let a = &mut st.alerts[index];
        a["lastUpdateDateTime"] = json!(crate::model::format_ms(at_ms));
        if let Some(c) = a["comments"].as_array_mut() {
            c.push(json!({"comment": "looked at it", "createdByDisplayName": "SOC", "createdDateTime": crate::model::format_ms(at_ms)}));
        }
    }

    /// Changes these alerts' status right after the next alerts page is served.
    pub fn update_during_next_read(&self, changes: Vec<(usize, &'static str, i64)>) {
        self.lock().during_read = changes;
    }

    /// Alerts pages served so far.
    pub fn alert_pages(&self) -> u64 {
        self.lock().alert_pages
    }

    /// Drops the alerts and CloudAppEvents rows it holds (see `CasSim::forget_records`).
    pub fn forget_records(&self) {
        let mut st = self.lock();
        st.alerts = Vec::new();
        st.hunting = Vec::new();
    }

    /// Adds `n` CloudAppEvents rows that happened at `at_ms` (+ their index in ms) and are
    /// ingested at `ingested_ms` (+ the same): a row is invisible to queries until then.
    pub fn add_hunting_events(&self, n: usize, at_ms: i64, ingested_ms: i64) -> Vec<String> {
        let mut st = self.lock();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let k = st.hunting.len();
            let id = format!("{:040x}_{}", k, 20892 + k % 3);
            st.hunting.push((
                hunting_row(k, &id, at_ms + i as i64),
                ingested_ms + i as i64,
            ));
            ids.push(id);
        }
        ids
    }

    /// Raises (or lowers) the hunting queries allowed a minute, for a benchmark that should
    /// not wait out Graph's real budget.
    pub fn set_hunting_per_minute(&self, n: usize) {
        self.lock().hunting_per_minute = n.max(1);
    }

    /// Hunting queries answered so far.
    pub fn hunting_queries(&self) -> u64 {
        self.lock().hunting_queries
    }

    /// `POST security/runHuntingQuery`: the query shape this connector sends, evaluated over
    /// the rows ingested by now; any other query text is refused as Graph refuses a query it
    /// cannot parse. At most 45 queries a minute (429 after), at most 100,000 rows (cut
    /// without a word, as the service is reported to do).
    fn hunt(&self, auth: Option<&str>, body: &[u8]) -> warp::reply::Response {
        let mut st = self.lock();
        st.stats.requests += 1;
        if let Err(why) = crate::auth::sim::check_bearer(auth, GRAPH_RESOURCE) {
            st.stats.refused += 1;
            return error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", why);
        }
        if st.forbidden {
            st.stats.refused += 1;
            return error(StatusCode::FORBIDDEN, "Forbidden", "Missing role permissions on the request. API requires one of 'ThreatHunting.Read.All'.");
        }
        // Injected faults (429, 5xx) apply to hunting queries too.
        if let Some(fault) = Self::refusal(&mut st, auth) {
            return fault;
        }
        let now = std::time::Instant::now();
        while st
            .hunting_calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(60))
        {
            st.hunting_calls.pop_front();
        }
        if st.hunting_calls.len() >= st.hunting_per_minute {
            return error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "You have exceeded processing resources allocated to this tenant. You can run queries again in 00:01:00.");
        }
        st.hunting_calls.push_back(now);
        let q: Value = serde_json::from_slice(body).unwrap_or_default();
        let Some(text) = q
            .get("Query")
            .or_else(|| q.get("query"))
            .and_then(Value::as_str)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The Query property is required.",
            );
        };
        let Some(hunt) = parse_hunt(text) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Query operator expected.. Fix syntax errors in your query.",
            );
        };
        st.hunting_queries += 1;
        let visible_by = crate::model::now_ms();
        let (from, to, take) = match hunt {
            Hunt::Rows { from, to, take } => (from, to, take),
            Hunt::Count { from, to, bin } => {
                let bin = bin.max(1);
                let mut bins: BTreeMap<i64, u64> = BTreeMap::new();
                for (_, at) in st
                    .hunting
                    .iter()
                    .filter(|(_, at)| *at <= visible_by && *at >= from && *at < to)
                {
                    *bins.entry(at.div_euclid(bin) * bin).or_default() += 1;
                }
                let results: Vec<String> = bins
                    .iter()
                    .map(|(at, n)| {
                        json!({"At": seven_digits(*at), "Rows@odata.type": "#Int64", "Rows": n})
                            .to_string()
                    })
                    .collect();
                let body = format!(
                    r#"{{"schema":[{{"name":"At","type":"DateTime"}},{{"name":"Rows","type":"Int64"}}],"results":[{}]}}"#,
                    results.join(",")
                );
                let reply = warp::reply::with_header(body, "content-type", "application/json");
                return warp::reply::with_status(reply, StatusCode::OK).into_response();
            }
        };
        // No order is promised without `order by`: newest ingested first here.
        let mut rows: Vec<&(Value, i64)> = st
            .hunting
            .iter()
            .filter(|(_, at)| *at <= visible_by && *at >= from && *at < to)
            .collect();
        rows.reverse();
        let results: Vec<String> = rows
            .iter()
            .take(take.min(100_000))
            .map(|(row, at)| {
                let mut r = row.clone();
                r["IngestedAt"] = json!(seven_digits(*at));
                r.to_string()
            })
            .collect();
        let schema = r#"[{"name":"Timestamp","type":"DateTime"},{"name":"ActionType","type":"String"},{"name":"ReportId","type":"String"},{"name":"IngestedAt","type":"DateTime"}]"#;
        let body = format!(
            r#"{{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults","schema":{schema},"results":[{}]}}"#,
            results.join(",")
        );
        let reply = warp::reply::with_header(body, "content-type", "application/json");
        warp::reply::with_status(reply, StatusCode::OK).into_response()
    }

    /// Counters so far.
    pub fn stats(&self) -> GraphStats {
        self.lock().stats.clone()
    }

    fn handle(
        &self,
        base: &str,
        path: &str,
        query: &str,
        auth: Option<&str>,
    ) -> warp::reply::Response {
        let mut st = self.lock();
        st.stats.requests += 1;
        let decoded = super::percent_decode(path);
        let alerts = decoded == format!("/{}", super::alerts::ALERTS_PATH);
        // Each API names its own permission.
        if alerts && st.forbidden && crate::auth::sim::check_bearer(auth, GRAPH_RESOURCE).is_ok() {
            st.stats.refused += 1;
            return error(StatusCode::FORBIDDEN, "Forbidden", "Missing role permissions on the request. API requires one of 'SecurityAlert.Read.All, SecurityAlert.ReadWrite.All'.");
        }
        if let Some(refused) = Self::refusal(&mut st, auth) {
            return refused;
        }
        if alerts {
            return alerts_page(&mut st, base, path, query);
        }
        let offset = match skip_token(query, st.generation) {
            Ok(o) => o,
            Err(()) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The skip token is invalid or has expired.",
                )
            }
        };
        let Some(rest) = decoded.strip_prefix(&format!("/{}", super::STREAMS_PATH)) else {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Resource not found",
            );
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match self.resolve(&st, &parts) {
            Ok((items, size)) => self.page(base, path, items, offset, size, st.generation),
            Err(refused) => *refused,
        }
    }

    /// The collection a path names, and its page size, or the answer that says why not.
    fn resolve(
        &self,
        st: &State,
        parts: &[&str],
    ) -> Result<(Vec<String>, usize), Box<warp::reply::Response>> {
        let not_found =
            |what: &str| Box::new(error(StatusCode::NOT_FOUND, "ResourceNotFound", what));
        let [stream, function, rest @ ..] = parts else {
            if !parts.is_empty() {
                return Err(not_found("Resource not found"));
            }
            let items = st
                .reports
                .iter()
                .map(|r| json!({"@odata.type": "#microsoft.graph.security.cloudAppDiscoveryReport", "id": r.id, "displayName": r.name, "isSnapshotReport": false, "logDataProvider": "paloAlto", "receiverProtocol": "syslogUdp", "supportedEntityTypes": ["user", "ipAddress"], "supportedTrafficTypes": ["uploadedBytes", "downloadedBytes"]}).to_string())
                .collect();
            return Ok((items, self.apps_per_page));
        };
        let report = st
            .reports
            .iter()
            .find(|r| r.id == *stream)
            .ok_or_else(|| not_found("The continuous report does not exist"))?;
        let period = function
            .strip_prefix("microsoft.graph.security.aggregatedAppsDetails(period=duration'")
            .and_then(|p| p.strip_suffix("')"))
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Unknown function",
                ))
            })?;
        if !["P7D", "P30D", "P90D"].contains(&period) {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Invalid period: supported time frames are the last 7, 30 or 90 days",
            )));
        }
        match rest {
            [] => Ok((
                report
                    .apps
                    .iter()
                    .map(|a| a.text.clone().unwrap_or_else(|| a.detail.to_string()))
                    .collect(),
                self.apps_per_page,
            )),
            [app, list @ ("users" | "ipAddresses")] => {
                let a = report
                    .apps
                    .iter()
                    .find(|a| a.detail["id"] == *app)
                    .ok_or_else(|| not_found("The app was not discovered in this report"))?;
                let items = if *list == "users" {
                    a.users.iter().map(|u| json!({"@odata.type": "#microsoft.graph.security.discoveredCloudAppUser", "userIdentifier": u}).to_string()).collect()
                } else {
                    a.ip_addresses.iter().map(|i| json!({"@odata.type": "#microsoft.graph.security.discoveredCloudAppIPAddress", "ipAddress": i}).to_string()).collect()
                };
                Ok((items, self.items_per_page))
            }
            _ => Err(not_found("Resource not found")),
        }
    }

    /// The answer to a request refused before its path is looked at: no Graph token, no
    /// permission, or an injected fault.
    fn refusal(st: &mut State, auth: Option<&str>) -> Option<warp::reply::Response> {
        if let Err(why) = crate::auth::sim::check_bearer(auth, GRAPH_RESOURCE) {
            st.stats.refused += 1;
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                why,
            ));
        }
        if st.forbidden {
            st.stats.refused += 1;
            return Some(error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Missing role permissions on the request. API requires one of 'CloudApp-Discovery.Read.All'.",
            ));
        }
        let fault = match st.faults.pop_front()? {
            GraphFault::Pass => return None,
            GraphFault::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                error(status, "injected", "injected fault")
            }
            GraphFault::RetryAfter(secs) => {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests",
                );
                r.headers_mut().insert("retry-after", secs.into());
                r
            }
        };
        st.stats.faulted += 1;
        Some(fault)
    }

    fn page(
        &self,
        base: &str,
        path: &str,
        items: Vec<String>,
        offset: usize,
        size: usize,
        generation: u64,
    ) -> warp::reply::Response {
        // Written as text, so an item can hold what no `Value` can (see `SimApp::text`).
        let end = (offset + size).min(items.len());
        let context = json!(format!("{base}/beta/$metadata#Collection"));
        let value = items.get(offset..end).unwrap_or_default().join(",");
        let mut body = format!(r#"{{"@odata.context":{context},"value":[{value}]"#);
        if end < items.len() {
            let next = json!(format!("{base}{path}?$skiptoken=g{generation}o{end}"));
            body.push_str(&format!(r#","@odata.nextLink":{next}"#));
        }
        body.push('}');
        let reply = warp::reply::with_header(body, "content-type", "application/json");
        warp::reply::with_status(reply, StatusCode::OK).into_response()
    }
}

/// A Defender alert as alerts_v2 lists it (the documented properties, the shape of
/// Microsoft's published samples).
fn graph_alert(k: usize, service: &str, at_ms: i64) -> Value {
    let at = crate::model::format_ms(at_ms);
    let id = format!("ca{k:030x}");
    let severity = ["low", "medium", "high", "informational"][k % 4];
    let detector = [
        "MCAS_ALERT_ANUBIS_DETECTION_IMPOSSIBLE_TRAVEL",
        "MCAS_ALERT_ANUBIS_DETECTION_REPEATED_ACTIVITY_DELETE",
        "ALERT_CABINET_EVENT_MATCH_AUDIT",
    ][k % 3];
    let evidence = json!([
        {"@odata.type": "#microsoft.graph.security.userEvidence", "createdDateTime": at, "verdict": "suspicious", "remediationStatus": "none", "roles": ["compromised"], "detailedRoles": [], "tags": [],
         "userAccount": {"accountName": format!("user{}", k % 7), "domainName": null, "userSid": null, "azureAdUserId": null, "userPrincipalName": format!("user{}@contoso.com", k % 7), "displayName": null}},
        {"@odata.type": "#microsoft.graph.security.ipEvidence", "createdDateTime": at, "verdict": "unknown", "remediationStatus": "none", "roles": [], "detailedRoles": [], "tags": [],
         "ipAddress": format!("203.0.113.{}", k % 250), "countryLetterCode": "NL"},
        {"@odata.type": "#microsoft.graph.security.cloudApplicationEvidence", "createdDateTime": at, "verdict": "unknown", "remediationStatus": "none", "roles": [], "detailedRoles": [], "tags": [],
         "appId": 11161, "displayName": "Office 365", "instanceId": 0, "instanceName": "Office 365", "saasAppId": 11161}
    ]);
    let mut alert = json!({
        "@odata.type": "#microsoft.graph.security.alert",
        "id": id,
        "providerAlertId": format!("{k:024x}"),
        "incidentId": (1000 + k / 4).to_string(),
        "status": "new",
        "severity": severity,
        "classification": null,
        "determination": null,
        "serviceSource": service,
        "detectionSource": "cloudAppSecurity",
        "productName": "Microsoft Defender for Cloud Apps",
        "detectorId": detector,
        "tenantId": "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c",
        "title": format!("Simulated alert {k}"),
        "description": "Raised by the simulated tenant.",
        "recommendedActions": "",
        "category": "InitialAccess",
        "assignedTo": null,
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{id}?tid=b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c"),
        "incidentWebUrl": format!("https://security.microsoft.com/incidents/{}?tid=b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c", 1000 + k / 4),
    });
    let rest = json!({
        "actorDisplayName": null,
        "threatDisplayName": null,
        "threatFamilyName": null,
        "mitreTechniques": ["T1078", "T1078.004"],
        "createdDateTime": at,
        "lastUpdateDateTime": at,
        "resolvedDateTime": null,
        "firstActivityDateTime": at,
        "lastActivityDateTime": at,
        "comments": [],
        "systemTags": [],
        "evidence": evidence,
    });
    if let (Some(a), Value::Object(r)) = (alert.as_object_mut(), rest) {
        a.extend(r);
    }
    alert
}

fn set_status(a: &mut Value, status: &str, at_ms: i64) {
    let at = crate::model::format_ms(at_ms);
    a["status"] = json!(status);
    a["lastUpdateDateTime"] = json!(at);
    if status == "resolved" {
        a["resolvedDateTime"] = json!(at);
        a["classification"] = json!("truePositive");
        a["determination"] = json!("compromisedAccount");
    }
}

/// The two query shapes the connector sends (`graph::hunting`): a window's rows, or their
/// count per bin of ingestion time.
enum Hunt {
    Rows { from: i64, to: i64, take: usize },
    Count { from: i64, to: i64, bin: i64 },
}

fn parse_hunt(text: &str) -> Option<Hunt> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let (table, filter, last) = match lines[..] {
        [t, f, "| extend IngestedAt = ingestion_time()", l] => (t, f, l),
        [t, f, l] => (t, f, l),
        _ => return None,
    };
    if table != "CloudAppEvents" {
        return None;
    }
    let rest = filter.strip_prefix("| where ingestion_time() >= datetime(")?;
    let (from, rest) = rest.split_once(") and ingestion_time() < datetime(")?;
    let (from, to) = (
        crate::model::parse_rfc3339_ms(from)?,
        crate::model::parse_rfc3339_ms(rest.strip_suffix(')')?)?,
    );
    if lines.len() == 4 {
        let take = last.strip_prefix("| take ")?.parse().ok()?;
        return Some(Hunt::Rows { from, to, take });
    }
    let bin = last
        .strip_prefix("| summarize Rows = count() by At = bin(ingestion_time(), ")?
        .strip_suffix("ms)")?
        .parse()
        .ok()?;
    Some(Hunt::Count { from, to, bin })
}

/// A time as Kusto writes it: UTC with seven fractional digits.
fn seven_digits(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// A CloudAppEvents row as advanced hunting answers it: booleans as 0/1 with their
/// `#SByte` sidecars, dynamic columns as JSON, an empty string for an absent one.
pub(crate) fn hunting_row(k: usize, id: &str, at_ms: i64) -> Value {
    let user = format!("3a7e5d2b-1c4f-4e8a-9b6d-{:012x}", k % 9);
    let action = ["FileDownloaded", "UserLoggedIn", "FileDeleted"][k % 3];
    let mut row = json!({
        "Timestamp": seven_digits(at_ms),
        "ActionType": action,
        "Application": "Microsoft SharePoint Online",
        "ApplicationId": 20892 + k % 3,
        "AppInstanceId": 0,
        "AccountObjectId": user,
        "AccountId": user,
        "AccountDisplayName": format!("User {}", k % 9),
        "IsAdminOperation@odata.type": "#SByte",
        "IsAdminOperation": k.is_multiple_of(10) as u8,
        "DeviceType": "Desktop",
        "OSPlatform": "Windows 10",
        "IPAddress": format!("203.0.113.{}", k % 250),
        "IsAnonymousProxy@odata.type": "#SByte",
        "IsAnonymousProxy": 0,
        "CountryCode": "NL",
        "City": "Amsterdam",
        "Isp": "Contoso Telecom",
    });
    let rest = json!({
        "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        "ActivityType": "Basic",
        "ActivityObjects": [{"@odata.type": "#microsoft.graph.security.dynamicColumnValue", "Type": "File", "Role": "Target object", "Name": format!("file{k}.docx"), "Id": format!("https://contoso.sharepoint.com/file{k}.docx")}],
        "ObjectName": format!("file{k}.docx"),
        "ObjectType": "File",
        "ObjectId": format!("https://contoso.sharepoint.com/file{k}.docx"),
        "ReportId": id,
        "AccountType": "Regular",
        "IsExternalUser@odata.type": "#SByte",
        "IsExternalUser": 0,
        "IsImpersonated@odata.type": "#SByte",
        "IsImpersonated": 0,
        "IPTags@odata.type": "#Collection(String)",
        "IPTags": [],
        "IPCategory": "",
        "UserAgentTags": [],
        "RawEventData": {"@odata.type": "#microsoft.graph.security.dynamicColumnValue", "Operation": "FileDownloaded"},
        "AdditionalFields": {},
        "UncommonForUser": "",
        "AuditSource": "Defender for Cloud Apps app connector",
        "OAuthAppId": "",
    });
    if let (Some(r), Value::Object(more)) = (row.as_object_mut(), rest) {
        r.extend(more);
    }
    row
}

/// One clause of a `$filter`, as a test of an alert.
type Condition = Box<dyn Fn(&Value) -> bool>;

/// The largest `$top` the simulated alerts list accepts (Graph documents none; integrations
/// use up to 2000).
const MAX_ALERTS_TOP: usize = 2000;

/// One page of `security/alerts_v2`: newest first, filtered by the documented subset of
/// `$filter` (`serviceSource eq`, `lastUpdateDateTime ge|lt|gt|le`, joined by `and`),
/// paged by `$top`/`$skip` with a next link; `$orderby` is refused, as undocumented.
fn alerts_page(st: &mut State, base: &str, path: &str, query: &str) -> warp::reply::Response {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "BadRequest", m);
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("$orderby").is_some() {
        return bad("Invalid query option: $orderby is not supported.");
    }
    let top = match get("$top").map(|t| t.parse::<usize>()) {
        None => 50,
        Some(Ok(t)) if (1..=MAX_ALERTS_TOP).contains(&t) => t,
        _ => return bad("Invalid $top value."),
    };
    let skip = match get("$skip").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(s)) => s,
        _ => return bad("Invalid $skip value."),
    };
    let mut conditions: Vec<Condition> = Vec::new();
    if let Some(filter) = get("$filter") {
        for clause in filter.split(" and ") {
            let parts: Vec<&str> = clause.trim().splitn(3, ' ').collect();
            match parts[..] {
                ["serviceSource", "eq", v] => {
                    let v = v.trim_matches('\'').to_string();
                    conditions.push(Box::new(move |a| a["serviceSource"] == v.as_str()));
                }
                ["lastUpdateDateTime", op @ ("ge" | "gt" | "lt" | "le"), v] => {
                    let Some(t) = crate::model::parse_rfc3339_ms(v) else {
                        return bad(&format!("Invalid datetime in $filter: {v}"));
                    };
                    let op = op.to_string();
                    conditions.push(Box::new(move |a| {
                        let Some(u) = a["lastUpdateDateTime"]
                            .as_str()
                            .and_then(crate::model::parse_rfc3339_ms)
                        else {
                            return false;
                        };
                        match op.as_str() {
                            "ge" => u >= t,
                            "gt" => u > t,
                            "lt" => u < t,
                            _ => u <= t,
                        }
                    }));
                }
                _ => return bad(&format!("Invalid filter clause: {clause}")),
            }
        }
    }
    let mut matching: Vec<&Value> = st
        .alerts
        .iter()
        .filter(|a| conditions.iter().all(|c| c(a)))
        .collect();
    // Newest first, as documented.
    matching.sort_by(|a, b| {
        b["createdDateTime"]
            .as_str()
            .cmp(&a["createdDateTime"].as_str())
    });
    let end = (skip + top).min(matching.len());
    let value: Vec<String> = matching
        .get(skip..end)
        .unwrap_or_default()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut body = format!(
        r#"{{"@odata.context":"{base}/v1.0/$metadata#security/alerts_v2","value":[{}]"#,
        value.join(",")
    );
    if end < matching.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            if k != "$skip" {
                next.append_pair(k, v);
            }
        }
        next.append_pair("$skip", &end.to_string());
        body.push_str(&format!(
            r#","@odata.nextLink":{}"#,
            json!(format!("{base}{path}?{}", next.finish()))
        ));
    }
    body.push('}');
    st.alert_pages += 1;
    // The tenant goes on while the client pages.
    for (i, status, at) in std::mem::take(&mut st.during_read) {
        set_status(&mut st.alerts[i], status, at);
    }
    let reply = warp::reply::with_header(body, "content-type", "application/json");
    warp::reply::with_status(reply, StatusCode::OK).into_response()
}

/// Reads `$skiptoken=g<generation>o<offset>`; 0 without one, an error when stale.
fn skip_token(query: &str, generation: u64) -> Result<usize, ()> {
    let Some(token) = query.split('&').find_map(|kv| {
        kv.strip_prefix("$skiptoken=")
            .or_else(|| kv.strip_prefix("%24skiptoken="))
    }) else {
        return Ok(0);
    };
    let (g, o) = token
        .strip_prefix('g')
        .and_then(|t| t.split_once('o'))
        .ok_or(())?;
    if g.parse::<u64>() != Ok(generation) {
        return Err(());
    }
    o.parse().map_err(|_| ())
}

fn error(status: StatusCode, code: &str, message: &str) -> warp::reply::Response {
    let body = json!({"error": {"code": code, "message": message, "innerError": {"date": "2026-11-30T00:00:00", "request-id": "00000000-0000-0000-0000-000000000000"}}});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// A discovered app as Graph describes one (`discoveredCloudAppDetail`), with `users`
/// users and `ips` IP addresses; its numbers follow from `n`.
pub fn app(n: u64, name: &str, category: &str, users: usize, ips: usize) -> SimApp {
    let detail = json!({
        "@odata.type": "#microsoft.graph.security.discoveredCloudAppDetail",
        "id": format!("{}", 10_000 + n),
        "displayName": name,
        "tags": if n.is_multiple_of(3) { json!(["Unsanctioned"]) } else { json!(["Sanctioned"]) },
        "riskScore": (n % 10) + 1,
        "uploadNetworkTrafficInBytes": n * 400 + 1_000,
        "downloadNetworkTrafficInBytes": n * 600 + 4_000,
        "transactionCount": n % 500 + 10,
        "ipAddressCount": ips,
        "userCount": users,
        "lastSeenDateTime": "2026-11-29T17:04:11Z",
        "domains": [format!("app{n}.example.com")],
        "category": category,
    });
    SimApp {
        detail,
        users: (0..users).map(|u| format!("user{u}@contoso.com")).collect(),
        ip_addresses: (0..ips)
            .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
            .collect(),
        text: None,
    }
}

/// An app as real discovery data can hold one: a name with a lone UTF-16 surrogate (half
/// an emoji, cut by a log parser upstream), a risk score no `f64` holds, and a domain of
/// 100,000 bytes.
pub fn hostile_app(n: u64, users: usize, ips: usize) -> SimApp {
    let mut a = app(n, "HOSTILE_NAME", "cloudStorage", users, ips);
    a.detail["domains"] = json!([format!("{}.example.com", "x".repeat(100_000))]);
    let text = a
        .detail
        .to_string()
        .replacen("\"HOSTILE_NAME\"", "\"Shadow \\ud83d app\"", 1)
        .replacen(
            &format!("\"riskScore\":{}", n % 10 + 1),
            "\"riskScore\":1e400",
            1,
        );
    a.text = Some(text);
    a
}
