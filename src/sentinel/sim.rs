//! A simulated Logs Ingestion endpoint that behaves like the documented service: bearer
//! tokens for the monitor audience, gzip or plain JSON arrays, the 1 MiB limit (413),
//! rows checked against the stream declaration (400), and 429 with `Retry-After` or 5xx
//! when asked. Accepted rows are counted and, when a folder is given, appended to one
//! NDJSON file per table.

use crate::model::DataType;
use crate::schema::asim::AsimTable;

/// Where a declared stream's rows go: a custom table of ours, or a native ASIM table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Destination {
    Table(DataType),
    Asim(AsimTable),
}

impl Destination {
    fn table(self) -> &'static str {
        match self {
            Destination::Table(d) => d.table(),
            Destination::Asim(t) => t.table(),
        }
    }

    /// Checks a row against the stream's declaration. For the ASIM streams that is stricter
    /// than the service, which drops a column the declaration lacks without a word: here a
    /// mapping that writes one fails its test instead.
    fn validate(self, row: &Value) -> Result<(), String> {
        match self {
            Destination::Table(d) => crate::schema::validate_row(d, row),
            Destination::Asim(t) => {
                crate::schema::validate_columns(&crate::schema::asim::columns::of(t), row)
            }
        }
    }
}
use flate2::read::GzDecoder;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use url::Url;
use warp::http::StatusCode;
use warp::Filter;

/// An answer to force on an upcoming call.
#[derive(Clone, Debug)]
pub enum IngestFault {
    /// Answer this call normally (to place later faults after some good calls).
    Pass,
    /// 429 with this `Retry-After` (seconds).
    Throttle(u64),
    /// This status (5xx, or 403 to model a missing role).
    Status(u16),
}

/// Counters, for assertions and summaries.
#[derive(Clone, Debug, Default)]
pub struct IngestStats {
    /// Calls received.
    pub calls: u64,
    /// Calls accepted (204).
    pub accepted_calls: u64,
    /// Rows accepted, by table.
    pub rows: BTreeMap<String, u64>,
    /// Uncompressed bytes accepted.
    pub bytes: u64,
    /// Largest uncompressed body received.
    pub max_body: usize,
    /// Calls refused with 413.
    pub too_large: u64,
    /// Calls answered with an injected fault.
    pub faulted: u64,
}

#[derive(Default)]
struct State {
    faults: VecDeque<IngestFault>,
    stats: IngestStats,
    /// Accepted rows per table, kept when `keep_rows` is on.
    kept: HashMap<String, Vec<Value>>,
    /// When each CAS id's first row was accepted (Unix ms), for end-to-end latency.
    first_accepted: HashMap<String, i64>,
    /// When each alert's first row with Status Resolved was accepted (Unix ms), for
    /// resolution latency.
    first_resolved: HashMap<String, i64>,
    /// The caller lacks Monitoring Metrics Publisher on the DCR: every call is 403.
    denied: bool,
    /// The largest body (either form) accepted; the service's documented limit is 1 MiB,
    /// and a test can set it lower to model a service that refuses less.
    limit: usize,
    /// Bearer tokens seen so far (their text), and those refused from now on with 401.
    seen: HashSet<String>,
    revoked: HashSet<String>,
}

/// The simulated endpoint.
pub struct IngestionSim {
    dcr: String,
    streams: HashMap<String, Destination>,
    out_dir: Option<PathBuf>,
    keep_rows: bool,
    state: Mutex<State>,
    /// Milliseconds to wait after accepting rows before answering: a reply that a crashed
    /// client never reads, while the rows are already in.
    pub reply_delay_ms: std::sync::atomic::AtomicU64,
}

/// The DCR immutable id the simulator serves.
pub(crate) const SIM_DCR: &str = "dcr-00000000000000000000000000000001";
const LIMIT: usize = 1024 * 1024;

impl IngestionSim {
    /// Starts an endpoint with the default stream names; rows are written under
    /// `out_dir` when given, and kept in memory when `keep_rows`.
    pub async fn start(out_dir: Option<PathBuf>, keep_rows: bool) -> (Arc<IngestionSim>, Url) {
        let streams = DataType::ALL
            .iter()
            .map(|d| (d.default_stream().to_string(), Destination::Table(*d)))
            .chain(
                AsimTable::ALL
                    .iter()
                    .map(|t| (t.stream().to_string(), Destination::Asim(*t))),
            )
            .collect();
        let sim = Arc::new(IngestionSim {
            dcr: SIM_DCR.into(),
            streams,
            out_dir,
            keep_rows,
            state: Mutex::new(State {
                limit: LIMIT,
                ..State::default()
            }),
            reply_delay_ms: Default::default(),
        });
        let s = sim.clone();
        let route = warp::post()
            .and(warp::path!(
                "dataCollectionRules" / String / "streams" / String
            ))
            .and(warp::query::<HashMap<String, String>>())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("content-encoding"))
            .and(warp::body::bytes())
            .then(
                move |dcr: String,
                      stream: String,
                      q: HashMap<String, String>,
                      auth: Option<String>,
                      enc: Option<String>,
                      body: bytes::Bytes| {
                    let s = s.clone();
                    async move {
                        let reply =
                            s.handle(&dcr, &stream, &q, auth.as_deref(), enc.as_deref(), &body);
                        let delay = s.reply_delay_ms.load(std::sync::atomic::Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        }
                        reply
                    }
                },
            );
        let addr = crate::loopback::serve(route, 0)
            .await
            .expect("bind a loopback port");
        (
            sim,
            Url::parse(&format!("http://{addr}/")).expect("a loopback URL"),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forces the next calls' answers, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = IngestFault>) {
        self.lock().faults.extend(faults);
    }

    /// Counters so far.
    pub fn stats(&self) -> IngestStats {
        self.lock().stats.clone()
    }

    /// When the first row of each CAS id (alert or activity) was accepted (Unix ms); a
    /// named tenant's ids are `<tenant>/<id>`.
    pub fn first_accepted(&self) -> HashMap<String, i64> {
        self.lock().first_accepted.clone()
    }

    /// When the first row saying Status Resolved of each alert was accepted (Unix ms).
    pub fn first_resolved(&self) -> HashMap<String, i64> {
        self.lock().first_resolved.clone()
    }

    /// Accepted rows of a table (when started with `keep_rows`).
    pub fn rows(&self, table: &str) -> Vec<Value> {
        self.lock().kept.get(table).cloned().unwrap_or_default()
    }

    /// Refuses bodies over `bytes` with 413 (in either form), as a service whose real
    /// limit is below the documented 1 MiB would.
    pub fn set_limit(&self, bytes: usize) {
        self.lock().limit = bytes.min(LIMIT);
    }

    /// Refuses every token seen so far with 401 (revoked, or expired early through the
    /// caller's clock skew); tokens issued later are accepted.
    pub fn revoke_tokens_seen(&self) {
        let mut st = self.lock();
        let seen: Vec<String> = st.seen.iter().cloned().collect();
        st.revoked.extend(seen);
    }

    #[allow(clippy::too_many_arguments)]
    /// Refuses every call with 403 while set, as the service does for an identity without
    /// Monitoring Metrics Publisher on the DCR.
    pub fn set_denied(&self, denied: bool) {
        self.lock().denied = denied;
    }

    /// Checks what the service checks before it reads a body: the token, the role, the
    /// api-version, the DCR and the stream (and injects a fault when one is due). The
    /// stream's data type, or the refusal.
    fn admit(
        &self,
        st: &mut State,
        dcr: &str,
        stream: &str,
        q: &HashMap<String, String>,
        auth: Option<&str>,
    ) -> Result<Destination, Box<warp::reply::Response>> {
        if let Err(why) = crate::auth::sim::check_bearer(auth, "https://monitor.azure.com") {
            return Err(refuse(StatusCode::UNAUTHORIZED, "InvalidToken", why));
        }
        let token = auth.unwrap_or_default().to_string();
        if st.revoked.contains(&token) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                "the token was revoked",
            ));
        }
        st.seen.insert(token);
        if st.denied {
            // The service's own answer for an identity without the role on the DCR (as the
            // Azure SDKs' troubleshooting guides quote it): code OperationFailed, not Forbidden.
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "OperationFailed",
                "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id 'dcr-…' PipelineAccessResult: AccessGranted: False, IsRbacPresent: False",
            ));
        }
        if q.get("api-version").map(String::as_str) != Some("2023-01-01") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersion",
                "api-version must be 2023-01-01",
            ));
        }
        if dcr != self.dcr {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "DcrNotFound",
                "no data collection rule with this immutable id",
            ));
        }
        let Some(&data_type) = self.streams.get(stream) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "InvalidStream",
                "the stream is not declared in the data collection rule",
            ));
        };
        if let Some(f) = st
            .faults
            .pop_front()
            .filter(|f| !matches!(f, IngestFault::Pass))
        {
            st.stats.faulted += 1;
            return Err(Box::new(match f {
                IngestFault::Pass => unreachable!("filtered out above"),
                IngestFault::Throttle(secs) => {
                    let mut r = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "request rate exceeded",
                    );
                    r.headers_mut().insert("retry-after", secs.into());
                    r
                }
                IngestFault::Status(s) => error(
                    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "Injected",
                    "injected failure",
                ),
            }));
        }
        Ok(data_type)
    }

    fn handle(
        &self,
        dcr: &str,
        stream: &str,
        q: &HashMap<String, String>,
        auth: Option<&str>,
        enc: Option<&str>,
        body: &[u8],
    ) -> warp::reply::Response {
        let mut st = self.lock();
        st.stats.calls += 1;
        let data_type = match self.admit(&mut st, dcr, stream, q, auth) {
            Ok(dt) => dt,
            Err(refused) => return *refused,
        };
        let rows = match read_rows(&mut st, data_type, enc, body) {
            Ok(rows) => rows,
            Err(refused) => return *refused,
        };
        let table = data_type.table().to_string();
        if let Some(dir) = &self.out_dir {
            if let Err(e) = append(dir, &table, &rows) {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SinkWrite",
                    &e.to_string(),
                );
            }
        }
        let at = crate::model::now_ms();
        // Latency counts the first row of each CAS id: an alert's, or an activity's (ASIM
        // rows carry neither column, and arrive with their activity's).
        for row in &rows {
            let id = row
                .get("VendorOriginalId")
                .or_else(|| row.get("ReportId"))
                .and_then(Value::as_str);
            if let Some(id) = id {
                // Two tenants can hold the same id: a named tenant's is `<tenant>/<id>`.
                let id = match row.get("CasTenant").and_then(Value::as_str) {
                    Some(t) => format!("{t}/{id}"),
                    None => id.to_string(),
                };
                if row.get("Status").and_then(Value::as_str) == Some("Resolved") {
                    st.first_resolved.entry(id.clone()).or_insert(at);
                }
                st.first_accepted.entry(id).or_insert(at);
            }
        }
        st.stats.accepted_calls += 1;
        *st.stats.rows.entry(table.clone()).or_default() += rows.len() as u64;
        if self.keep_rows {
            st.kept.entry(table).or_default().extend(rows);
        }
        warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response()
    }
}

/// A call's rows, as the service reads them: the body (gzip'd or not) within 1 MiB both
/// ways, a JSON array, each row matching the stream's declaration; else the refusal.
fn read_rows(
    st: &mut State,
    data_type: Destination,
    enc: Option<&str>,
    body: &[u8],
) -> Result<Vec<Value>, Box<warp::reply::Response>> {
    let too_large = |st: &mut State, what: &str| {
        st.stats.too_large += 1;
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ContentLengthLimitExceeded",
            what,
        )
    };
    let limit = st.limit;
    if body.len() > limit {
        return Err(too_large(st, "the request body exceeds 1 MiB"));
    }
    let raw = if enc.is_some_and(|e| e.eq_ignore_ascii_case("gzip")) {
        let mut out = Vec::new();
        if GzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .is_err()
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "InvalidContent",
                "the body is not valid gzip",
            ));
        }
        out
    } else {
        body.to_vec()
    };
    st.stats.max_body = st.stats.max_body.max(raw.len());
    if raw.len() > limit {
        return Err(too_large(st, "the uncompressed body exceeds 1 MiB"));
    }
    let Ok(Value::Array(rows)) = serde_json::from_slice(&raw) else {
        // Stricter than the service, on purpose: it answers a JSON object with 204 and
        // writes nothing (reported against its docs and SDKs). Refusing it here means a
        // packing bug of ours fails a test instead of losing rows silently.
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "InvalidContent",
            "the body must be a JSON array",
        ));
    };
    for (i, row) in rows.iter().enumerate() {
        if let Err(why) = data_type.validate(row) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "InvalidContent",
                &format!("row {i}: {why}"),
            ));
        }
    }
    st.stats.bytes += raw.len() as u64;
    Ok(rows)
}

use warp::Reply;

/// [`error`], boxed: a refusal travels as an `Err` and a response is large.
fn refuse(status: StatusCode, code: &str, message: &str) -> Box<warp::reply::Response> {
    Box::new(error(status, code, message))
}

fn error(status: StatusCode, code: &str, message: &str) -> warp::reply::Response {
    warp::reply::with_status(
        warp::reply::json(&json!({"error": {"code": code, "message": message}})),
        status,
    )
    .into_response()
}

fn append(dir: &std::path::Path, table: &str, rows: &[Value]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{table}.ndjson")))?;
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)
}
