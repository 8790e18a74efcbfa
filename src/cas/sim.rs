//! A simulated Defender for Cloud Apps tenant: the documented list APIs with their
//! paging, filters, authentication and throttling, over real HTTP on loopback.
//!
//! It models the quirks that make pulling hard: 30 requests per minute per tenant (429
//! past that), scan pages that hold back the trailing records sharing the boundary
//! `created` value, activities stored (`created`) minutes after they happened
//! (`timestamp`), many records in one millisecond, and injected 429/5xx/"throttled"
//! answers. Requests are counted so tests can check the client's manners.

use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;
use warp::http::StatusCode;
use warp::Filter;

/// The resource (audience) of CAS Entra tokens.
pub(crate) const CAS_RESOURCE: &str = "05a65629-4c1b-48c1-a78b-804c4abdd4af";

/// An answer to force on an upcoming request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this request normally (to place later faults after some good pages).
    Pass,
    /// Answer with this status (429 carries no Retry-After, as CAS's does not promise one).
    Status(u16),
    /// Answer 429 with this `Retry-After` (seconds).
    RetryAfter(u64),
    /// Answer 400 with an error text that says the tenant is throttled.
    ThrottledText,
}

/// How the tenant authenticates and limits.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The legacy API token it accepts (`Authorization: Token …`), if any.
    pub legacy_token: Option<String>,
    /// Whether it accepts simulated Entra tokens for the CAS audience.
    pub accept_entra: bool,
    /// Requests allowed per 60 s before 429 (CAS: 30).
    pub per_minute: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            legacy_token: None,
            accept_entra: true,
            per_minute: 30,
        }
    }
}

/// Request counts, for assertions and summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every request received.
    pub requests: u64,
    /// Requests answered 429 by the limiter.
    pub throttled: u64,
    /// Requests answered with an injected fault.
    pub faulted: u64,
    /// The most requests seen in any 60-second span.
    pub max_in_any_minute: usize,
}

#[derive(Default)]
struct State {
    alerts: Vec<Value>,
    activities: Vec<Value>,
    arrivals: VecDeque<Instant>,
    /// Replaces `SimConfig::per_minute` while set (a benchmark's catch-up phase).
    per_minute: Option<usize>,
    faults: VecDeque<Fault>,
    stats: SimStats,
    next_id: u64,
    activity_padding: usize,
    /// Records served as this text instead of their value (which still drives filters):
    /// the text real records hold that no strict JSON reader accepts.
    raw: std::collections::HashMap<String, String>,
}

/// The simulated tenant.
pub struct CasSim {
    config: SimConfig,
    state: Mutex<State>,
    /// Milliseconds every answer waits before it is sent: a tenant that hangs (or
    /// trickles) while the connection stays open.
    pub hang_ms: std::sync::atomic::AtomicU64,
}

impl CasSim {
    /// Starts a tenant on a free loopback port; returns it and its API base URL.
    pub async fn start(config: SimConfig) -> (Arc<CasSim>, Url) {
        let sim = Arc::new(CasSim {
            config,
            state: Mutex::new(State::default()),
            hang_ms: Default::default(),
        });
        let s = sim.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .then(
                move |m: warp::http::Method,
                      p: warp::path::FullPath,
                      auth: Option<String>,
                      body: bytes::Bytes| {
                    let s = s.clone();
                    async move {
                        let hang = s.hang_ms.load(std::sync::atomic::Ordering::Relaxed);
                        if hang > 0 {
                            tokio::time::sleep(Duration::from_millis(hang)).await;
                        }
                        s.handle(&m, p.as_str(), auth.as_deref(), &body)
                    }
                },
            );
        let addr = crate::loopback::serve(route, 0)
            .await
            .expect("bind a loopback port");
        let url = Url::parse(&format!("http://{addr}/")).expect("a loopback URL");
        (sim, url)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the simulator itself; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// Forces the next requests' answers, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Adds alerts raised at these times (Unix ms); returns their ids.
    pub fn add_alerts(&self, times: impl IntoIterator<Item = i64>) -> Vec<String> {
        self.add_alerts_with(times, |_| {})
    }

    /// [`CasSim::add_alerts`], letting `edit` change each generated alert first.
    pub fn add_alerts_with(
        &self,
        times: impl IntoIterator<Item = i64>,
        edit: impl Fn(&mut Value),
    ) -> Vec<String> {
        let mut st = self.lock();
        let mut ids = Vec::new();
        for ts in times {
            st.next_id += 1;
            let n = st.next_id;
            let id = format!("{:024x}", 0x6a1f_0000_0000_u64 + n);
            let mut a = alert(&id, n, ts);
            edit(&mut a);
            st.alerts.push(a);
            ids.push(id);
        }
        st.alerts.sort_by_key(|a| key(a, "timestamp"));
        ids
    }

    /// Adds activities stored by CAS at `created` (Unix ms), each having happened
    /// `lag_ms(i)` before; returns their ids.
    pub fn add_activities(
        &self,
        created: impl IntoIterator<Item = i64>,
        lag_ms: impl Fn(u64) -> i64,
    ) -> Vec<String> {
        let mut st = self.lock();
        let mut ids = Vec::new();
        for c in created {
            st.next_id += 1;
            let n = st.next_id;
            let id = format!("97134000_15600_{n:08x}-0000-4000-8000-{n:012x}");
            let mut a = activity(&id, n, c - lag_ms(n), c);
            if st.activity_padding > 0 {
                a["rawDataJson"]["ExtendedProperties"] = padding(n, st.activity_padding);
            }
            st.activities.push(a);
            ids.push(id);
        }
        st.activities.sort_by_key(|a| key(a, "created"));
        ids
    }

    /// Adds activities whose text is hostile as real records are (see [`hostile_text`]),
    /// stored at `created`; returns their ids.
    pub fn add_hostile_activities(&self, created: impl IntoIterator<Item = i64>) -> Vec<String> {
        let ids = self.add_activities(created, |_| 1_000);
        let mut st = self.lock();
        for (k, id) in ids.iter().enumerate() {
            let Some(a) = st.activities.iter().find(|a| a["_id"] == id.as_str()) else {
                continue;
            };
            let text = hostile_text(a, k);
            st.raw.insert(id.clone(), text);
        }
        ids
    }

    /// Adds one activity of each of [`ACTIVITY_KINDS`] and a failed sign-in, stored at
    /// `created`; returns their ids.
    pub fn add_activity_kinds(&self, created: i64) -> Vec<String> {
        let mut st = self.lock();
        let ids = (0..=ACTIVITY_KINDS.len())
            .map(|k| {
                let mut a = activity_of_kind(k, created - 30_000, created + k as i64);
                st.next_id += 1;
                let id = format!("{}_{}", a["_id"].as_str().unwrap_or("kind"), st.next_id);
                a["_id"] = json!(id.clone());
                st.activities.push(a);
                id
            })
            .collect();
        st.activities.sort_by_key(|a| key(a, "created"));
        ids
    }

    /// Makes activities added from now on carry about `bytes` more of nested raw event
    /// data, for realistic 1–4 KiB records.
    pub fn pad_activities(&self, bytes: usize) {
        self.lock().activity_padding = bytes;
    }

    /// Drops every record the tenant holds. Its server lives as long as the process, and
    /// with it the sim: a benchmark that seeded hundreds of thousands of records frees them
    /// here before the next measurement, rather than carrying them to the end.
    pub fn forget_records(&self) {
        let mut st = self.lock();
        st.alerts = Vec::new();
        st.activities = Vec::new();
        st.raw = Default::default();
    }

    /// Allows `n` requests a minute from now on (`None`: the configured limit again), so a
    /// benchmark can seed its starting state quickly and then measure at CAS's real limit.
    /// The requests made so far stop counting against the new limit.
    pub fn set_per_minute(&self, n: Option<usize>) {
        let mut st = self.lock();
        st.per_minute = n;
        st.arrivals.clear();
    }

    /// Changes an alert's status and resolution, as an analyst would in the portal.
    pub fn set_alert_state(&self, id: &str, status: u64, resolution: u64) -> bool {
        let mut st = self.lock();
        let Some(a) = st.alerts.iter_mut().find(|a| a["_id"] == id) else {
            return false;
        };
        a["statusValue"] = json!(status);
        a["resolutionStatusValue"] = json!(resolution);
        // CAS stamps when an alert was resolved or dismissed; reopened, it has none.
        if resolution == 0 {
            a.as_object_mut().map(|o| o.remove("resolutionDate"));
        } else {
            a["resolutionDate"] = json!(crate::model::now_ms());
        }
        true
    }

    /// Every alert id the tenant holds.
    pub fn alert_ids(&self) -> Vec<String> {
        self.lock()
            .alerts
            .iter()
            .map(|a| a["_id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// When CAS stored each record (Unix ms), by id: an alert's `timestamp`, an
    /// activity's `created`.
    pub fn stored_at(&self) -> std::collections::HashMap<String, i64> {
        let st = self.lock();
        let of = |records: &[Value], field: &str| {
            records
                .iter()
                .filter_map(|r| Some((r["_id"].as_str()?.to_string(), r[field].as_i64()?)))
                .collect::<Vec<_>>()
        };
        of(&st.alerts, "timestamp")
            .into_iter()
            .chain(of(&st.activities, "created"))
            .collect()
    }

    /// Every activity id the tenant holds.
    pub fn activity_ids(&self) -> Vec<String> {
        self.lock()
            .activities
            .iter()
            .map(|a| a["_id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn handle(
        &self,
        method: &warp::http::Method,
        path: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> warp::reply::Response {
        let mut st = self.lock();
        let now = Instant::now();
        st.arrivals.push_back(now);
        while st
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            st.arrivals.pop_front();
        }
        st.stats.requests += 1;
        st.stats.max_in_any_minute = st.stats.max_in_any_minute.max(st.arrivals.len());
        if !self.authorized(auth) {
            return reply(StatusCode::UNAUTHORIZED, json!({"detail": "Invalid token"}));
        }
        if st.arrivals.len() > st.per_minute.unwrap_or(self.config.per_minute) {
            st.stats.throttled += 1;
            return reply(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"detail": "TOO MANY REQUESTS"}),
            );
        }
        if let Some(f) = st.faults.pop_front() {
            st.stats.faulted += 1;
            return match f {
                Fault::Pass => {
                    st.stats.faulted -= 1;
                    drop(st);
                    self.answer(method, path, body)
                }
                Fault::Status(s) => reply(
                    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    json!({"detail": "injected"}),
                ),
                Fault::RetryAfter(secs) => {
                    let mut r = reply(
                        StatusCode::TOO_MANY_REQUESTS,
                        json!({"detail": "TOO MANY REQUESTS"}),
                    );
                    r.headers_mut().insert("retry-after", secs.into());
                    r
                }
                Fault::ThrottledText => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"detail": "Request was throttled, try again later"}),
                ),
            };
        }
        drop(st);
        self.answer(method, path, body)
    }

    fn answer(
        &self,
        method: &warp::http::Method,
        path: &str,
        body: &[u8],
    ) -> warp::reply::Response {
        let st = self.lock();
        let body: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({"detail": format!("invalid JSON: {e}")}),
                    )
                }
            }
        };
        match (method.as_str(), path) {
            ("POST", "/api/v1/alerts/") => list_alerts(&st.alerts, &body, &st.raw),
            ("POST", "/api/v1/activities/") => list_activities(&st.activities, &body, &st.raw),
            _ => reply(StatusCode::NOT_FOUND, json!({"detail": "Not found"})),
        }
    }

    fn authorized(&self, auth: Option<&str>) -> bool {
        let Some(h) = auth else { return false };
        if let (Some(t), Some(expected)) = (h.strip_prefix("Token "), &self.config.legacy_token) {
            return t == expected;
        }
        self.config.accept_entra && crate::auth::sim::check_bearer(Some(h), CAS_RESOURCE).is_ok()
    }
}

fn reply(status: StatusCode, body: Value) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// A list page: `records` (each as its raw text when it has one) and the other members.
fn page(records: &[&Value], raw: &Raw, rest: Value) -> warp::reply::Response {
    use warp::Reply;
    let mut body = String::from("{\"data\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        match r["_id"].as_str().and_then(|id| raw.get(id)) {
            Some(text) => body.push_str(text),
            None => body.push_str(&r.to_string()),
        }
    }
    body.push(']');
    for (k, v) in rest.as_object().into_iter().flatten() {
        body.push_str(&format!(",{}:{v}", Value::from(k.as_str())));
    }
    body.push('}');
    warp::reply::with_header(body, "content-type", "application/json").into_response()
}

type Raw = std::collections::HashMap<String, String>;

fn key(v: &Value, field: &str) -> (i64, String) {
    (
        v[field].as_i64().unwrap_or_default(),
        v["_id"].as_str().unwrap_or_default().to_string(),
    )
}

/// One skip/limit page (at most 100) of `matching`.
fn paged(matching: &[&Value], body: &Value, raw: &Raw) -> warp::reply::Response {
    let (skip, limit) = skip_limit(body, 100);
    let data: Vec<&Value> = matching.iter().skip(skip).take(limit).copied().collect();
    let rest = json!({"hasNext": skip + limit < matching.len(), "total": matching.len(), "moreThanTotal": false});
    page(&data, raw, rest)
}

fn skip_limit(body: &Value, max: usize) -> (usize, usize) {
    let skip = body.get("skip").and_then(Value::as_u64).unwrap_or(0) as usize;
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(max as u64) as usize;
    (skip, limit.clamp(1, max))
}

/// The filter fields the simulated endpoints understand, and where each reads the record
/// (the first of `|`-separated pointers the record has).
const ALERT_FIELDS: &[(&str, &str)] = &[
    ("date", "/timestamp"),
    ("id", "/_id"),
    ("severity", "/severityValue"),
    ("resolutionStatus", "/resolutionStatusValue"),
    ("resolutionDate", "/resolutionDate"),
    ("entity.service", "/entities/2/id"),
];
const ACTIVITY_FIELDS: &[(&str, &str)] = &[
    ("created", "/created"),
    ("date", "/timestamp"),
    ("service", "/appId"),
    // A failed sign-in's user is in failedUserData.
    ("user.username", "/user/userName|/failedUserData/userName"),
];

/// Whether a record satisfies every filter (ANDed), as CAS evaluates them; an unknown
/// field or operator is an error, as on the real API.
fn matches(
    rec: &Value,
    filters: &Map<String, Value>,
    fields: &[(&str, &str)],
) -> Result<bool, String> {
    for (field, cond) in filters {
        let pointer = fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("unknown filter field {field:?}"))?;
        let value = pointer
            .split('|')
            .find_map(|p| rec.pointer(p))
            .unwrap_or(&Value::Null);
        let Value::Object(ops) = cond else {
            return Err(format!("filter {field:?} must be an object"));
        };
        for (op, arg) in ops {
            let ok = match op.as_str() {
                "eq" => as_list(arg).iter().any(|a| a == value),
                "neq" => !as_list(arg).iter().any(|a| a == value),
                "gte" | "gt" | "lte" | "lt" => {
                    let (Some(v), Some(b)) = (value.as_i64(), arg.as_i64()) else {
                        return Ok(false);
                    };
                    match op.as_str() {
                        "gte" => v >= b,
                        "gt" => v > b,
                        "lte" => v <= b,
                        _ => v < b,
                    }
                }
                "range" => {
                    let v = value.as_i64().unwrap_or(i64::MIN);
                    let s = arg.get("start").and_then(Value::as_i64).unwrap_or(i64::MIN);
                    let e = arg.get("end").and_then(Value::as_i64).unwrap_or(i64::MAX);
                    v >= s && v <= e
                }
                other => return Err(format!("unknown operator {other:?} for {field:?}")),
            };
            if !ok {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn filters(body: &Value) -> Map<String, Value> {
    body.get("filters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn select<'a>(
    records: impl Iterator<Item = &'a Value>,
    f: &Map<String, Value>,
    fields: &[(&str, &str)],
) -> Result<Vec<&'a Value>, String> {
    let mut out = Vec::new();
    for r in records {
        if matches(r, f, fields)? {
            out.push(r);
        }
    }
    Ok(out)
}

fn list_alerts(alerts: &[Value], body: &Value, raw: &Raw) -> warp::reply::Response {
    let mut matching = match select(alerts.iter(), &filters(body), ALERT_FIELDS) {
        Ok(m) => m,
        Err(why) => return reply(StatusCode::BAD_REQUEST, json!({ "detail": why })),
    };
    if body.get("sortDirection").and_then(Value::as_str) == Some("desc") {
        matching.reverse();
    }
    if skip_limit(body, 100).0 > 5000 {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"detail": "skip may not exceed 5000"}),
        );
    }
    paged(&matching, body, raw)
}

fn list_activities(activities: &[Value], body: &Value, raw: &Raw) -> warp::reply::Response {
    let f = filters(body);
    // Newest first, as scans walk back from the upper bound.
    let matching = match select(activities.iter().rev(), &f, ACTIVITY_FIELDS) {
        Ok(m) => m,
        Err(why) => return reply(StatusCode::BAD_REQUEST, json!({ "detail": why })),
    };
    if body.get("isScan").and_then(Value::as_bool) != Some(true) {
        return paged(&matching, body, raw);
    }
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(500);
    if !(500..=5000).contains(&limit) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"detail": "limit must be between 500 and 5000 in scan mode"}),
        );
    }
    let limit = limit as usize;
    if matching.len() <= limit {
        return page(
            &matching,
            raw,
            json!({"hasNext": false, "total": matching.len()}),
        );
    }
    // Hold back the trailing records that share the boundary value, so each record is
    // listed once; if the whole page shares it, list every record at that value instead.
    let boundary = matching[limit - 1]["created"].as_i64().unwrap_or(0);
    let mut end = limit;
    while end > 0 && matching[end - 1]["created"].as_i64() == Some(boundary) {
        end -= 1;
    }
    let next_lte = if end == 0 {
        end = matching
            .iter()
            .take_while(|a| a["created"].as_i64() == Some(boundary))
            .count();
        boundary - 1
    } else {
        boundary
    };
    let data = &matching[..end];
    let mut next = f.clone();
    let mut created = f
        .get("created")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    created.insert("lte".into(), json!(next_lte));
    next.insert("created".into(), Value::Object(created));
    page(
        data,
        raw,
        json!({"hasNext": end < matching.len(), "total": matching.len(), "nextQueryFilters": next}),
    )
}

fn alert(id: &str, n: u64, ts: i64) -> Value {
    let users = ["ada", "grace", "alan", "edsger", "barbara"];
    let user = users[(n % users.len() as u64) as usize];
    let titles = [
        "Mass download by a single user",
        "Impossible travel activity",
        "Activity from infrequent country",
        "Suspicious inbox forwarding",
    ];
    let title = titles[(n % 4) as usize];
    json!({
        "_id": id,
        "timestamp": ts,
        "title": title,
        // HTML with CAS's site-icon markers, as real descriptions are.
        "description": format!("<p>The user {user} (<b>{user}@contoso.example</b>) __siteIcon__ took part in alert {n}. MITRE Technique used Data from Cloud Storage (T1530) &amp; more.</p>"),
        // A person twice, as an account and as a user, as real alerts list them.
        "entities": [
            {"entityRole": "Source", "entityType": 2, "id": format!("{n:08x}-1e2f-4a3b-8c4d-5e6f7a8b9c0d"), "inst": 0, "label": user, "pa": format!("{user}@contoso.example"), "saas": 11161, "type": "account"},
            {"id": format!("{user}@contoso.example"), "label": format!("{user}@contoso.example"), "type": "user"},
            {"id": 15600, "label": "Microsoft OneDrive for Business", "type": "service"},
            {"id": "5bfd18bfab73c36ba10d38cb", "label": "Mass download", "policyType": "ANOMALY_DETECTION", "type": "policyRule"},
            {"id": format!("198.51.100.{}", n % 250), "label": format!("198.51.100.{}", n % 250), "type": "ip"}
        ],
        "intent": [10, 11],
        "evidence": [format!("{user} downloaded {} files", 100 + n % 400)],
        "idValue": 15_795_999 + n,
        "isSystemAlert": false,
        "resolutionStatusValue": 0,
        "severityValue": n % 4,
        "statusValue": 0,
        "stories": [0],
        "threatScore": (n * 7) % 100,
        "URL": format!("https://contoso.us2.portal.cloudappsecurity.com/#/alerts/{id}"),
    })
}

fn activity(id: &str, n: u64, timestamp: i64, created: i64) -> Value {
    let users = ["ada", "grace", "alan", "edsger", "barbara"];
    let user = users[(n % users.len() as u64) as usize];
    let upn = format!("{user}@contoso.example");
    let object_id = format!("{n:08x}-1e2f-4a3b-8c4d-5e6f7a8b9c0d");
    // Every seventh is a failed sign-in, shaped as real ones are: the user only in
    // `failedUserData`, `user` holding tags alone, a cloud provider's address with its tag.
    if n % 7 == 3 {
        return json!({
            "_id": id, "tenantId": 97134000, "aadTenantId": "cafe1a16-0000-4000-8000-000000000001",
            "appId": 11161, "saasId": 11161, "srcAppId": 11161, "appName": "Office 365",
            "timestamp": timestamp, "created": created,
            "eventType": 2293761, "eventTypeName": "EVENT_CATEGORY_FAILED_LOGIN", "eventTypeValue": "EVENT_AAD_LOGIN_FAILED",
            "genericEventType": "ENUM_ACTIVITY_GENERIC_TYPE_FAILED_LOGIN",
            "description": "Failed log on (Failure message: Error validating credentials due to invalid username or password.)",
            "device": {"clientIP": format!("198.51.100.{}", n % 250), "countryCode": "DE", "userAgent": ";;Python Requests 2.25;"},
            "location": {"anonymousProxy": false, "carrier": "amazon.com%2C inc", "category": 5, "categoryValue": "CLOUD_PROXY_NETWORK_IP", "city": "frankfurt am main", "countryCode": "DE", "ipTags": ["000000290000000000000000"], "isSatelliteProvider": false, "organizationSearchable": "Amazon Web Services", "region": "hessen"},
            "userAgent": {"deviceType": "OTHER", "type": "Unknown", "typeName": "Unknown", "tags": ["0000002b0000000000000000"]},
            "failedUserData": {"userName": upn},
            "user": {"userTags": []},
            "resolvedActor": {"governable": true, "id": object_id, "instanceId": "0", "name": user, "objType": "23", "resolved": true, "role": "2", "saasId": "11161", "tags": []},
            "adminEvent": null,
            "impersonated": null,
            "mainInfo": {
                "activityResult": {"isSuccess": false, "message": "Error validating credentials due to invalid username or password."},
                "eventObjects": [
                    {"id": "00000002-0000-0ff1-ce00-000000000000", "name": "Office 365 Exchange Online", "objType": 6, "role": 1, "tags": []},
                    {"id": format!("{n:08x}-9138-a065-43a0-db0000000000"), "name": "Request ID", "objType": 7, "role": 3, "tags": []},
                    {"id": object_id, "name": upn, "objType": 2, "resolved": true, "role": 2, "tags": []},
                ],
                "rawOperationName": "OAuth2:Token", "prettyOperationName": "OAuth2:Token", "type": "failedLogin"
            },
            "rawDataJson": {"LoginStatus": "Failure", "LoginErrorCode": 50126, "Upn": upn, "UserName": "null"},
            "severity": "INFO",
        });
    }
    let ops = [
        "FileDownloaded",
        "FileUploaded",
        "UserLoggedIn",
        "FileAccessed",
        "MailItemsAccessed",
    ];
    let op = ops[(n % ops.len() as u64) as usize];
    json!({
        "_id": id,
        "tenantId": 97134000,
        "appId": 15600,
        "saasId": 15600,
        "appName": "Microsoft OneDrive for Business",
        "timestamp": timestamp,
        "created": created,
        "eventType": 233580,
        "eventTypeValue": "EVENT_O365_ONEDRIVE_GENERIC",
        "eventTypeName": "EVENT_CATEGORY_DOWNLOAD_FILE",
        "genericEventType": "ENUM_ACTIVITY_GENERIC_TYPE_BASIC",
        "device": {"clientIP": format!("203.0.113.{}", n % 250), "userAgent": "Mozilla/5.0", "countryCode": "NL"},
        "location": {"countryCode": "NL", "city": "utrecht", "category": 1, "categoryValue": "CORPORATE", "carrier": "contoso telecom", "organizationSearchable": "Contoso Telecom", "anonymousProxy": false, "isSatelliteProvider": false},
        "userAgent": {"browser": "EDGE", "deviceType": "DESKTOP", "operatingSystem": {"family": "Windows", "name": "Windows 11", "version": "11"}, "type": "Browser", "typeName": "Browser", "nativeBrowser": false, "tags": []},
        "user": {"userName": upn, "userTags": []},
        "resolvedActor": {"governable": true, "id": object_id, "instanceId": "0", "name": user, "objType": "23", "resolved": true, "role": "2", "saasId": "11161", "tags": []},
        "adminEvent": if n.is_multiple_of(17) { json!(true) } else { Value::Null },
        "impersonated": false,
        "mainInfo": {
            "eventObjects": [
                {"objType": 1, "role": 1, "name": format!("https://contoso-my.sharepoint.com/personal/{user}/Documents/file{n}.docx"), "id": format!("{n:08x}")},
                {"id": object_id, "name": upn, "objType": 2, "resolved": true, "role": 2, "tags": []},
            ],
            "rawOperationName": op, "prettyOperationName": op, "type": "basic"
        },
        "rawDataJson": {"CreationTime": crate::model::format_ms(timestamp), "Operation": op, "UserId": upn, "Workload": "OneDrive", "Level": 1, "level": "info"},
        "description": op,
        "severity": "INFO",
    })
}

/// The record's text with one hostile member added, by `k % 6`: a lone surrogate (half
/// an emoji), numbers no `f64` holds and Python's `NaN`/`-Infinity`, nesting deeper than
/// `serde_json` reads, a 100,000-byte field, a raw control character, and invalid UTF-8
/// is left to the HTTP layer (a `String` cannot hold it), so a sixth kind repeats a key.
pub(crate) fn hostile_text(record: &Value, k: usize) -> String {
    let text = record.to_string();
    let extra = match k % 6 {
        0 => r#","note":"half an emoji: \udc00 and \ud83d""#.to_string(),
        1 => r#","ratio":1e400,"score":NaN,"delta":-Infinity"#.to_string(),
        2 => format!(r#","nested":{}1{}"#, "[".repeat(300), "]".repeat(300)),
        3 => format!(r#","blob":"{}""#, "x".repeat(100_000)),
        4 => ",\"ctl\":\"tab\there\"".to_string(),
        _ => r#","description":"first","description":"second""#.to_string(),
    };
    format!("{}{extra}}}", &text[..text.len() - 1])
}

/// One realistic activity record (as the tenant would list it) with about `padding` bytes
/// of extra nested raw event data; for benchmarks and tests that need records without a
/// running tenant.
pub fn activity_record(n: u64, timestamp: i64, created: i64, padding_bytes: usize) -> Value {
    let id = format!("97134000_15600_{n:08x}-0000-4000-8000-{n:012x}");
    let mut a = activity(&id, n, timestamp, created);
    if padding_bytes > 0 {
        a["rawDataJson"]["ExtendedProperties"] = padding(n, padding_bytes);
    }
    a
}

/// Operations of every kind the ASIM mapping distinguishes, as Microsoft 365 and Entra name
/// them in CAS's activity records (`rawDataJson.Operation`), with whether CAS marks each
/// administrative: sign-ins and sign-outs, file transfers and changes, administrative,
/// permission and sharing changes, and activities no ASIM schema describes.
pub(crate) const ACTIVITY_KINDS: &[(&str, bool)] = &[
    ("UserLoggedIn", false),
    ("UserLoggedOut", false),
    ("FileDownloaded", false),
    ("FileUploaded", false),
    ("FileAccessed", false),
    ("FileDeleted", false),
    ("FileRenamed", false),
    ("FileMoved", false),
    ("FileModified", false),
    ("FileCopied", false),
    ("SharingSet", false),
    ("AnonymousLinkCreated", false),
    ("AddedToGroup", false),
    ("Add member to role.", true),
    ("Update user.", true),
    ("Set-Mailbox", true),
    ("New-InboxRule", true),
    ("Remove-MailboxPermission", true),
    ("Update policy.", true),
    ("MailItemsAccessed", false),
    ("PageViewed", false),
];

/// An activity record of the `k`th of [`ACTIVITY_KINDS`] (a failed sign-in when `k` is
/// their number).
pub(crate) fn activity_of_kind(k: usize, timestamp: i64, created: i64) -> Value {
    let n = (k as u64) * 7 + 1; // never the failed-sign-in shape (n % 7 == 3)
    if k >= ACTIVITY_KINDS.len() {
        return activity_record(3, timestamp, created, 0);
    }
    let (op, admin) = ACTIVITY_KINDS[k];
    let mut a = activity_record(n, timestamp, created, 0);
    a["_id"] = json!(format!("97134000_15600_kind{k:04}-0000-4000-8000-{n:012x}"));
    a["rawDataJson"]["Operation"] = json!(op);
    a["mainInfo"]["rawOperationName"] = json!(op);
    a["mainInfo"]["prettyOperationName"] = json!(op);
    a["description"] = json!(op);
    a["adminEvent"] = if admin { json!(true) } else { Value::Null };
    a
}

/// Nested name/value pairs of about `bytes`, varied enough not to compress to nothing.
fn padding(n: u64, bytes: usize) -> Value {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let items: Vec<Value> = (0..bytes / 48)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            json!({"Name": format!("Property{i}"), "Value": format!("{:016x}", x)})
        })
        .collect();
    Value::Array(items)
}

/// All the settings of a client of the simulated tenant at `url` (see [`client_settings`]).
pub(crate) fn client_settings_full(url: &Url, extra: &[(&str, &str)]) -> crate::config::Settings {
    let mut pairs = vec![
        ("CAS_API_URL", url.to_string()),
        ("CAS_SETTLE_DELAY", "PT0S".into()),
        (
            "SENTINEL_INGESTION_ENDPOINT",
            "https://x.ingest.monitor.azure.com".into(),
        ),
        (
            "SENTINEL_DCR_IMMUTABLE_ID",
            "dcr-00000000000000000000000000000001".into(),
        ),
        ("AzureWebJobsStorage", "UseDevelopmentStorage=true".into()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    crate::config::Settings::from_pairs(&pairs).expect("simulator client settings are valid")
}

/// CAS settings for a client of the simulated tenant at `url`: no settle delay, and
/// placeholder Sentinel and storage settings (the CAS side does not use them); `extra`
/// overrides or adds settings.
pub fn client_settings(url: &Url, extra: &[(&str, &str)]) -> crate::config::CasSettings {
    client_settings_full(url, extra).cas
}
