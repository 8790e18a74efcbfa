//! Shadow IT discovery through Microsoft Graph (beta), the supported API for discovered
//! apps: the client ([`GraphClient`]), the snapshot reader ([`discovery`]) and the simulated
//! Graph the local run and the tests use (`sim`). Its settings are in `config::discovery`.
//!
//! The Defender for Cloud Apps API itself has no supported discovered-apps call: Graph
//! lists each continuous report (`uploadedStreams`), the apps discovered in it over a
//! rolling 7, 30 or 90 days (`aggregatedAppsDetails`), and each app's users and IP
//! addresses, all paged with `@odata.nextLink`.

pub(crate) mod alerts;
pub(crate) mod discovery;
pub(crate) mod hunting;
#[cfg(feature = "sim")]
pub(crate) mod sim;

use crate::auth::{self, AuthError};
use crate::retry::{drive, error_parts, read_answer, Attempt, Deadline, Policy};
use azure_core::credentials::TokenCredential;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The largest Graph answer read: a page of discovered apps, users or IP addresses is a
/// few hundred KiB (Graph pages hold up to 999 items of well under 1 KiB).
pub(crate) const MAX_ANSWER: usize = 16 << 20;

/// The largest advanced hunting answer read: Graph caps a query's results at 50 MB.
pub(crate) const MAX_HUNTING_ANSWER: usize = 56 << 20;

/// Where advanced hunting queries are run.
pub(crate) const HUNTING_PATH: &str = "v1.0/security/runHuntingQuery";

/// Where Graph keeps the continuous reports.
pub(crate) const STREAMS_PATH: &str =
    "beta/security/dataDiscovery/cloudAppDiscovery/uploadedStreams";

/// A Graph call that did not produce a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// 401 or 403: the token or its permission is wrong.
    #[error("Microsoft Graph refused {what} with {status} ({code}): {hint}")]
    Denied {
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
        /// Graph's error code.
        code: String,
        /// The likely cause and fix.
        hint: &'static str,
    },
    /// Any other answer that retrying will not fix.
    #[error("Microsoft Graph answered {what} with {status} ({code}): {message}")]
    Status {
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// No connection could be made to Graph.
    #[error("{0}: check GRAPH_API_URL and that the network reaches it")]
    Unreachable(#[from] crate::net::Unreachable),
    /// Throttling or server errors went on until the run's time budget ran out.
    #[error("Microsoft Graph {what}: the run's time budget ran out ({last}); the snapshot continues next run")]
    OutOfTime {
        /// What was asked for.
        what: String,
        /// The last failure seen.
        last: String,
    },
    /// The answer was not the documented shape.
    #[error("Microsoft Graph {what} answered with an unexpected shape: {detail}")]
    Shape {
        /// What was asked for.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// No token could be had.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// One page of a Graph collection.
#[derive(Debug)]
pub struct GraphPage {
    /// The page's items, in Graph's order.
    pub items: Vec<Value>,
    /// The next page, when there is one.
    pub next: Option<Url>,
    /// What was repaired so the page could be read (see [`crate::json::lenient`]).
    pub repairs: crate::json::lenient::Repairs,
}

/// The Graph client. Cheap to clone; clones share the request counter.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    credential: Arc<dyn TokenCredential>,
    scope: String,
    requests: Arc<AtomicU64>,
}

impl GraphClient {
    /// A client for Graph at `base`, authenticated with `credential`.
    pub fn new(http: reqwest::Client, base: Url, credential: Arc<dyn TokenCredential>) -> Self {
        GraphClient {
            scope: scope_for(&base),
            http,
            base,
            credential,
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    #[cfg(feature = "sim")]
    /// How many HTTP requests this client (and its clones) has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The URL of `path` (relative, already percent-encoded) under Graph's base.
    pub fn url(&self, path: &str) -> Result<Url, GraphError> {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(path).map_err(|e| GraphError::Shape {
            what: path.into(),
            detail: e.to_string(),
        })
    }

    /// GETs one page of a collection.
    pub async fn page(&self, url: &Url, deadline: Deadline) -> Result<GraphPage, GraphError> {
        let what = describe(url);
        let call = |_| self.attempt(url, &what, None, MAX_ANSWER, deadline);
        let out_of_time = |last| GraphError::OutOfTime {
            what: what.clone(),
            last,
        };
        let body = drive(POLICY, &what, deadline, call, out_of_time).await?;
        self.read_page(&what, body)
    }

    /// Runs an advanced hunting query (`POST security/runHuntingQuery`); returns its rows,
    /// without the `@odata.type` sidecar keys Graph puts beside some values.
    pub async fn hunt(&self, query: &str, deadline: Deadline) -> Result<Vec<Value>, GraphError> {
        let url = self.url(HUNTING_PATH)?;
        let what = describe(&url);
        let body = serde_json::json!({ "Query": query });
        let call = |_| self.attempt(&url, &what, Some(&body), MAX_HUNTING_ANSWER, deadline);
        let out_of_time = |last| GraphError::OutOfTime {
            what: what.clone(),
            last,
        };
        let answer = drive(POLICY, &what, deadline, call, out_of_time).await?;
        let shape = |detail: String| GraphError::Shape {
            what: what.clone(),
            detail,
        };
        let (mut v, _) = crate::json::lenient::value_of(answer).map_err(shape)?;
        let Some(Value::Array(rows)) = v.get_mut("results").map(Value::take) else {
            return Err(shape("no \"results\" array".into()));
        };
        Ok(rows
            .into_iter()
            .map(|mut r| {
                drop_sidecars(&mut r);
                r
            })
            .collect())
    }

    /// GETs every page of a small collection (the continuous reports).
    pub async fn all(&self, url: Url, deadline: Deadline) -> Result<Vec<Value>, GraphError> {
        let mut items = Vec::new();
        let mut next = Some(url);
        while let Some(u) = next {
            let page = self.page(&u, deadline).await?;
            items.extend(page.items);
            next = page.next;
        }
        Ok(items)
    }

    async fn attempt(
        &self,
        url: &Url,
        what: &str,
        body: Option<&Value>,
        max_answer: usize,
        deadline: Deadline,
    ) -> Attempt<bytes::Bytes, GraphError> {
        let token = match auth::bearer(self.credential.as_ref(), &self.scope).await {
            Ok(t) => t,
            Err(e) => return Attempt::Fail(e.into()),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request = match body {
            // A hunting query may run for 3 minutes before Graph gives up on it.
            Some(b) => self
                .http
                .post(url.clone())
                .json(b)
                .timeout(deadline.remaining().min(Duration::from_secs(200))),
            None => self
                .http
                .get(url.clone())
                .timeout(deadline.remaining().min(Duration::from_secs(60))),
        };
        let sent = request
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await;
        let too_large = |max: usize| GraphError::Shape {
            what: what.into(),
            detail: format!("the answer is over {} MiB", max >> 20),
        };
        read_answer(sent, max_answer, too_large, |status, wait, body| {
            classify(what, status, wait, body)
        })
        .await
    }

    /// Reads `{"value": [...], "@odata.nextLink": "..."}`, repairing what a strict JSON
    /// reader refuses, and checks that the next link stays on Graph: it is followed with
    /// our token, which must never go anywhere else.
    fn read_page(&self, what: &str, body: bytes::Bytes) -> Result<GraphPage, GraphError> {
        let shape = |detail: String| GraphError::Shape {
            what: what.into(),
            detail,
        };
        let (mut v, repairs) = crate::json::lenient::value_of(body).map_err(shape)?;
        let items = match v.get_mut("value").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => return Err(shape("no \"value\" array".into())),
        };
        let next = match v.get("@odata.nextLink") {
            None | Some(Value::Null) => None,
            Some(Value::String(link)) => {
                let url = Url::parse(link)
                    .map_err(|e| shape(format!("@odata.nextLink {link:?}: {e}")))?;
                if url.origin() != self.base.origin() {
                    return Err(shape(format!(
                        "@odata.nextLink {link:?} leaves GRAPH_API_URL; it is not followed (the token would go with it)"
                    )));
                }
                Some(url)
            }
            Some(other) => return Err(shape(format!("@odata.nextLink is not a string: {other}"))),
        };
        Ok(GraphPage {
            items,
            next,
            repairs,
        })
    }
}

/// The widest window a Graph source asks for in one go (alerts and hunting alike).
pub(crate) const MAX_WINDOW_MS: i64 = 86_400_000;

/// The window width a cursor asks for next: the span it stored (`0`, from an older
/// cursor or a fresh one: the widest), at most [`MAX_WINDOW_MS`].
pub(crate) fn next_span(stored_ms: i64) -> i64 {
    match stored_ms {
        s if s <= 0 => MAX_WINDOW_MS,
        s => s.min(MAX_WINDOW_MS),
    }
}

/// Removes the `@odata.type` keys Graph puts beside hunting values and inside dynamic
/// ones (`{"@odata.type":"#microsoft.graph.security.dynamicColumnValue", ...}`): they are
/// Graph's envelope, not the table's data, and CloudAppEvents rows in Sentinel have none.
pub(crate) fn drop_sidecars(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|k, _| !k.contains('@'));
            o.values_mut().for_each(drop_sidecars);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_sidecars),
        _ => {}
    }
}

impl From<GraphError> for crate::source::ReadError {
    /// Running out of the invocation's time is an ordinary end of a run; anything else
    /// failed the read. Every Graph source reads so.
    fn from(e: GraphError) -> Self {
        let out_of_time = matches!(e, GraphError::OutOfTime { .. });
        crate::source::ReadError::of(e, out_of_time)
    }
}

/// How Graph calls back off: from 1 s up to 60 s between tries.
const POLICY: Policy = Policy {
    service: "Microsoft Graph",
    base: Duration::from_secs(1),
    max: Duration::from_secs(60),
    connect_tries: Some(3),
};

/// What a Graph answer that is not a success means, from its status, `Retry-After` and
/// `{"error":{"code","message"}}` body.
///
/// Graph throttles per app and tenant with 429 and a `Retry-After` it expects to be
/// honoured (its limits are not CAS's 30 a minute; without the header, back off). 503 and
/// 504 may carry `Retry-After` too. 401 and 403 name their fix; anything else (400 for a
/// period Graph does not offer, 404 for a report that is gone) is not retried.
pub(crate) fn classify<T>(
    what: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Attempt<T, GraphError> {
    let (code, message) = error_parts(body);
    let denied = |hint| {
        Attempt::Fail(GraphError::Denied {
            what: what.into(),
            status,
            code: code.clone(),
            hint,
        })
    };
    match status {
        429 | 500 | 502 | 503 | 504 => Attempt::retry(retry_after, format!("{status} {code}")),
        401 => denied("the token was not accepted: check that the managed identity or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET belongs to this tenant"),
        403 => denied("the identity lacks the Microsoft Graph application permission CloudApp-Discovery.Read.All (grant it with admin consent: docs/deploy.md)"),
        _ => Attempt::Fail(GraphError::Status {
            what: what.into(),
            status,
            message,
            code,
        }),
    }
}

/// The token scope for Graph at `base`: the national clouds have their own Graph hosts;
/// a loopback Graph (the simulator) stands in for the public one.
pub(crate) fn scope_for(base: &Url) -> String {
    match base.host_str() {
        Some(host) if base.scheme() == "https" && !crate::loopback::is_loopback(base) => {
            format!("https://{host}/.default")
        }
        _ => "https://graph.microsoft.com/.default".into(),
    }
}

/// A URL as the logs and errors name it: its path without the base, never its query
/// (a skip token is long and says nothing to a reader).
fn describe(url: &Url) -> String {
    let path = url.path();
    let path = percent_decode(path);
    match path.find("uploadedStreams") {
        Some(i) => path[i..].to_string(),
        None => path,
    }
}

/// Decodes `%xx` escapes (Graph ids and the `'` of `duration'P7D'` travel escaped).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// What a path segment escapes: all but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes one path segment (a report or app id) for a Graph URL.
pub(crate) fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The application permission every discovery call needs.
    const PERMISSION: &str = "CloudApp-Discovery.Read.All";

    fn wait_of(a: Attempt<(), GraphError>) -> Option<Option<Duration>> {
        match a {
            Attempt::Retry { wait, .. } => Some(wait),
            _ => None,
        }
    }

    #[test]
    fn classify_reads_status_headers_and_body_alone() {
        let w = "uploadedStreams";
        let secs = |n| Some(Duration::from_secs(n));
        let throttled = r#"{"error":{"code":"TooManyRequests","message":"Too many requests"}}"#;
        assert_eq!(
            wait_of(classify(w, 429, secs(17), throttled)),
            Some(secs(17))
        );
        assert_eq!(
            wait_of(classify(w, 429, None, throttled)),
            Some(None),
            "no header: back off"
        );
        assert_eq!(wait_of(classify(w, 503, secs(4), "")), Some(secs(4)));
        assert_eq!(wait_of(classify(w, 504, None, "")), Some(None));
        match classify::<()>(
            w,
            403,
            None,
            r#"{"error":{"code":"Forbidden","message":"Missing role permissions"}}"#,
        ) {
            Attempt::Fail(e @ GraphError::Denied { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(PERMISSION) && text.contains("Forbidden"),
                    "{text}"
                );
            }
            other => panic!("403 is not retried: {other:?}"),
        }
        assert!(matches!(
            classify::<()>(
                w,
                401,
                None,
                r#"{"error":{"code":"InvalidAuthenticationToken"}}"#
            ),
            Attempt::Fail(GraphError::Denied { status: 401, .. })
        ));
        match classify::<()>(
            w,
            400,
            None,
            r#"{"error":{"code":"BadRequest","message":"Invalid period"}}"#,
        ) {
            Attempt::Fail(e @ GraphError::Status { .. }) => {
                assert!(e.to_string().contains("Invalid period"))
            }
            other => panic!("400 is not retried: {other:?}"),
        }
    }

    #[test]
    fn scope_follows_the_graph_cloud() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            scope_for(&u("https://graph.microsoft.com")),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            scope_for(&u("https://graph.microsoft.us/")),
            "https://graph.microsoft.us/.default"
        );
        assert_eq!(
            scope_for(&u("http://127.0.0.1:8080/")),
            "https://graph.microsoft.com/.default"
        );
    }

    #[test]
    fn ids_are_escaped_and_unescaped() {
        assert_eq!(segment("a b/c'd"), "a%20b%2Fc%27d");
        assert_eq!(percent_decode("a%20b%2Fc%27d"), "a b/c'd");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
