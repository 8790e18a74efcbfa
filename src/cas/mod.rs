//! The Defender for Cloud Apps API client: authentication, the tenant-wide rate limit,
//! retries, and typed pages. What to ask for lives in [`pull`]; the simulated tenant
//! used by the local run and the tests lives in [`sim`].

pub mod page;
pub mod pull;
pub mod sim;

pub use page::{Keys, Page, RecordKey, ACTIVITY_KEYS, ALERT_KEYS};

use crate::auth::{self, AuthError, CAS_SCOPE};
use crate::retry::{backoff, retry_after, Deadline};
use crate::secret::Secret;
use azure_core::credentials::TokenCredential;
use serde_json::Value;
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

    /// POSTs a list query and returns the page, its records keyed by `keys`.
    pub async fn list(
        &self,
        path: &str,
        body: &Value,
        keys: Keys,
        deadline: Deadline,
    ) -> Result<Page, CasError> {
        let bytes = self
            .request(reqwest::Method::POST, path, Some(body), deadline)
            .await?;
        page::parse(path, bytes, keys)
    }

    /// Sends one request and reads the answer as a JSON value (repaired if need be).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        deadline: Deadline,
    ) -> Result<Value, CasError> {
        let bytes = self.request(method, path, body, deadline).await?;
        let shape = |detail: String| CasError::Shape {
            path: path.into(),
            detail,
        };
        let (text, _) =
            crate::lenient::repair_bytes(bytes).map_err(|e| shape(format!("not JSON: {e}")))?;
        serde_json::from_str(&text).map_err(|e| shape(format!("not JSON: {e}")))
    }

    /// Sends one request with throttling, retries and error mapping; the body of the
    /// successful answer.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        deadline: Deadline,
    ) -> Result<bytes::Bytes, CasError> {
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
                return Err(out_of_time(format!(
                    "client-side rate limit: {} requests per {} s",
                    self.limiter.max,
                    self.limiter.per.as_secs()
                )));
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
                    if (200..=299).contains(&status) {
                        match rsp.bytes().await {
                            Ok(b) => return Ok(b),
                            // The body was cut off: as retryable as a failed connection.
                            Err(e) => (
                                backoff(attempt, Duration::from_secs(1), Duration::from_secs(30)),
                                format!("reading the body: {e}"),
                            ),
                        }
                    } else {
                        let text = rsp.text().await.unwrap_or_default();
                        match status {
                        429 => (hinted.unwrap_or(Duration::from_secs(60)), "429 throttled".into()),
                        _ if text.to_ascii_lowercase().contains("throttl") => (hinted.unwrap_or(Duration::from_secs(60)), format!("{status} throttled")),
                        500 | 502 | 503 | 504 => (hinted.unwrap_or_else(|| backoff(attempt, Duration::from_secs(1), Duration::from_secs(30))), format!("{status}")),
                        401 => return Err(CasError::Denied { path: path.into(), status, hint: "the token was not accepted: check CAS_API_TOKEN (legacy tokens can be revoked or expire) or that the Entra app/managed identity token is for this tenant" }),
                        403 => return Err(CasError::Denied { path: path.into(), status, hint: "the identity lacks permission: grant the Microsoft Cloud App Security API application permission Investigation.Read (and Discovery.read for discovery) with admin consent" }),
                        _ => return Err(CasError::Status { path: path.into(), status, body: text.chars().take(300).collect() }),
                    }
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

/// A sliding-window limiter: at most `max` permits in any `per`, handed out in the order
/// they were asked for.
///
/// Each caller reserves the earliest free slot under the lock and then sleeps until it,
/// so callers waiting together are served first come, first served. That is what shares
/// CAS's 30 requests a minute fairly between the data types a poll reads at once: a lane
/// that asks again only after its previous answer always finds the others queued ahead.
pub struct RateLimiter {
    max: usize,
    per: Duration,
    /// The start times of the last `max` permits (some possibly in the future: reserved).
    slots: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// A limiter of `max` per `per`.
    pub fn new(max: usize, per: Duration) -> Self {
        RateLimiter {
            max: max.max(1),
            per,
            slots: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits for a permit; false (and no permit taken) when none is free before the deadline.
    pub async fn acquire(&self, deadline: Deadline) -> bool {
        let at = {
            let mut slots = self.slots.lock().await;
            let now = Instant::now();
            let at = if slots.len() < self.max {
                now
            } else {
                // The permit `max` back must be `per` old before another may start.
                (slots[slots.len() - self.max] + self.per).max(now)
            };
            if at.saturating_duration_since(now) >= deadline.remaining() {
                return false;
            }
            slots.push_back(at);
            while slots.len() > self.max {
                slots.pop_front();
            }
            at
        };
        tokio::time::sleep_until(at).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn waiting_lanes_are_served_in_turn() {
        // Three lanes asking as fast as they can through a 30-a-minute limiter, as the
        // poll's data types do: over ten minutes each gets a third of the permits.
        let l = Arc::new(RateLimiter::new(30, Duration::from_secs(60)));
        let d = Deadline::after(Duration::from_secs(600));
        let lanes: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    let mut got = 0;
                    while l.acquire(d).await {
                        got += 1;
                        // The page's work, between two requests.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    got
                })
            })
            .collect();
        let mut counts = Vec::new();
        for lane in lanes {
            counts.push(lane.await.unwrap());
        }
        let total: i32 = counts.iter().sum();
        assert!((290..=300).contains(&total), "{counts:?}");
        assert!(
            counts.iter().all(|c| (c - total / 3).abs() <= 2),
            "shares {counts:?}"
        );
    }
}
