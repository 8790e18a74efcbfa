//! The Defender for Cloud Apps API client: authentication, the tenant-wide rate limit,
//! retries, and typed pages. What to ask for lives in [`pull`]; the simulated tenant
//! used by the local run and the tests lives in [`sim`].

pub mod pull;
pub mod sim;

use crate::auth::{self, AuthError, CAS_SCOPE};
use crate::retry::{backoff, retry_after, Deadline};
use crate::secret::Secret;
use azure_core::credentials::TokenCredential;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// CAS allows 30 requests per minute per tenant, across all endpoints.
pub const REQUESTS_PER_MINUTE: usize = 30;

/// How the client proves who it is.
#[derive(Clone)]
pub enum CasAuth {
    /// `Authorization: Token <token>` (legacy API token).
    LegacyToken(Secret),
    /// `Authorization: Bearer <Entra token>` for the CAS application scope.
    Entra(Arc<dyn TokenCredential>),
}

/// A CAS call that did not produce a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// 401 or 403: the credential or its permissions are wrong.
    #[error("CAS refused {path} with {status}: {hint}")]
    Denied {
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The likely cause and fix.
        hint: &'static str,
    },
    /// Any other non-success answer that retrying will not fix.
    #[error("CAS answered {path} with {status}: {body}")]
    Status {
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Throttling or server errors went on until the run's time budget ran out.
    #[error("CAS {path} still failing ({last}) when the run's time budget ran out; the rest is left for the next run")]
    OutOfTime {
        /// The API path.
        path: String,
        /// The last failure seen.
        last: String,
    },
    /// The answer was not the documented shape.
    #[error("CAS {path} answered with an unexpected shape: {detail}")]
    Shape {
        /// The API path.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// No token could be had.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// One page of records, as CAS lists them.
#[derive(Debug)]
pub struct Page {
    /// The records, kept whole: unknown fields travel on to Sentinel.
    pub data: Vec<Value>,
    /// Whether more records match.
    pub has_next: bool,
    /// Scan mode: the filters that fetch the next page.
    pub next_query_filters: Option<Map<String, Value>>,
}

/// The API client. Cheap to clone; clones share the rate limiter and counters.
#[derive(Clone)]
pub struct CasClient {
    http: reqwest::Client,
    base: Url,
    auth: CasAuth,
    limiter: Arc<RateLimiter>,
    requests: Arc<AtomicU64>,
}

impl CasClient {
    /// A client for the tenant at `base`.
    pub fn new(http: reqwest::Client, base: Url, auth: CasAuth) -> Self {
        CasClient {
            http,
            base,
            auth,
            limiter: Arc::new(RateLimiter::new(
                REQUESTS_PER_MINUTE,
                Duration::from_secs(60),
            )),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Limits the client to `max` requests per `per` (the default is CAS's 30 per minute).
    pub fn with_rate_limit(mut self, max: usize, per: Duration) -> Self {
        self.limiter = Arc::new(RateLimiter::new(max, per));
        self
    }

    /// How many HTTP requests this client (and its clones) has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// POSTs a list query and returns the page.
    pub async fn list(
        &self,
        path: &str,
        body: &Value,
        deadline: Deadline,
    ) -> Result<Page, CasError> {
        let v = self
            .call(reqwest::Method::POST, path, Some(body), deadline)
            .await?;
        parse_page(path, v)
    }

    /// Sends one request with throttling, retries and error mapping.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        deadline: Deadline,
    ) -> Result<Value, CasError> {
        let url = self.base.join(path).map_err(|e| CasError::Shape {
            path: path.into(),
            detail: e.to_string(),
        })?;
        let mut attempt = 0u32;
        loop {
            let out_of_time = |last: String| CasError::OutOfTime {
                path: path.into(),
                last,
            };
            if !self.limiter.acquire(deadline).await {
                return Err(out_of_time(
                    "client-side rate limit: 30 requests per minute".into(),
                ));
            }
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .timeout(deadline.remaining().min(Duration::from_secs(60)));
            req = match &self.auth {
                CasAuth::LegacyToken(t) => {
                    req.header("Authorization", format!("Token {}", t.expose()))
                }
                CasAuth::Entra(c) => req.bearer_auth(auth::bearer(c.as_ref(), CAS_SCOPE).await?),
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (wait, last) = match req.send().await {
                Err(e) => (
                    backoff(attempt, Duration::from_secs(1), Duration::from_secs(30)),
                    format!("transport: {e}"),
                ),
                Ok(rsp) => {
                    let status = rsp.status().as_u16();
                    let hinted = retry_after(rsp.headers());
                    let text = rsp.text().await.unwrap_or_default();
                    match status {
                        200..=299 => {
                            return serde_json::from_str(&text).map_err(|e| CasError::Shape { path: path.into(), detail: format!("not JSON: {e}") });
                        }
                        429 => (hinted.unwrap_or(Duration::from_secs(60)), "429 throttled".into()),
                        _ if text.to_ascii_lowercase().contains("throttl") => (hinted.unwrap_or(Duration::from_secs(60)), format!("{status} throttled")),
                        500 | 502 | 503 | 504 => (hinted.unwrap_or_else(|| backoff(attempt, Duration::from_secs(1), Duration::from_secs(30))), format!("{status}")),
                        401 => return Err(CasError::Denied { path: path.into(), status, hint: "the token was not accepted: check CAS_API_TOKEN (legacy tokens can be revoked or expire) or that the Entra app/managed identity token is for this tenant" }),
                        403 => return Err(CasError::Denied { path: path.into(), status, hint: "the identity lacks permission: grant the Microsoft Cloud App Security API application permission Investigation.Read (and Discovery.read for discovery) with admin consent" }),
                        _ => return Err(CasError::Status { path: path.into(), status, body: text.chars().take(300).collect() }),
                    }
                }
            };
            tracing::warn!(path, attempt, wait_ms = wait.as_millis() as u64, %last, "CAS call failed; retrying");
            if !deadline.sleep_within(wait).await {
                return Err(out_of_time(last));
            }
            attempt += 1;
        }
    }
}

fn parse_page(path: &str, v: Value) -> Result<Page, CasError> {
    let shape = |detail: &str| CasError::Shape {
        path: path.into(),
        detail: detail.into(),
    };
    let Value::Object(mut m) = v else {
        return Err(shape("the body is not a JSON object"));
    };
    let data = match m.remove("data") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(shape("\"data\" is not an array")),
        None => return Err(shape("no \"data\" field")),
    };
    let has_next = match m.remove("hasNext") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(shape("\"hasNext\" is not a boolean")),
    };
    let next_query_filters = match m.remove("nextQueryFilters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(f)) => Some(f),
        Some(_) => return Err(shape("\"nextQueryFilters\" is not an object")),
    };
    Ok(Page {
        data,
        has_next,
        next_query_filters,
    })
}

/// A sliding-window limiter: at most `max` permits in any `per`.
pub struct RateLimiter {
    max: usize,
    per: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// A limiter of `max` per `per`.
    pub fn new(max: usize, per: Duration) -> Self {
        RateLimiter {
            max,
            per,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits for a permit; false when none frees up before the deadline.
    pub async fn acquire(&self, deadline: Deadline) -> bool {
        loop {
            let wait = {
                let mut sent = self.sent.lock().await;
                let now = Instant::now();
                while sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.per)
                {
                    sent.pop_front();
                }
                if sent.len() < self.max {
                    sent.push_back(now);
                    return true;
                }
                self.per - now.duration_since(sent[0])
            };
            if !deadline.sleep_within(wait).await {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_from_the_documented_fixtures() {
        let alerts: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/cas-alerts-page.json"))
                .unwrap();
        let p = parse_page("/api/v1/alerts/", alerts).unwrap();
        assert_eq!(p.data.len(), 1);
        assert!(p.has_next);
        let scan: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/cas-activities-scan-page.json"
        ))
        .unwrap();
        let p = parse_page("/api/v1/activities/", scan).unwrap();
        assert!(p.next_query_filters.unwrap().contains_key("created"));
    }

    #[test]
    fn wrong_shapes_are_named() {
        let err = parse_page("/x", serde_json::json!({"data": {}})).unwrap_err();
        assert!(err.to_string().contains("\"data\" is not an array"));
        let err = parse_page("/x", serde_json::json!([])).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_never_allows_more_than_max_per_window() {
        let l = RateLimiter::new(3, Duration::from_secs(60));
        let d = Deadline::after(Duration::from_secs(600));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire(d).await);
        }
        assert!(Instant::now() - start < Duration::from_secs(1));
        assert!(l.acquire(d).await);
        assert!(Instant::now() - start >= Duration::from_secs(60));
        let short = Deadline::after(Duration::from_secs(1));
        for _ in 0..2 {
            assert!(l.acquire(short).await);
        }
        assert!(
            !l.acquire(short).await,
            "a permit past the deadline is refused"
        );
    }
}
