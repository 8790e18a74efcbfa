//! The Defender for Cloud Apps API client: authentication, the tenant-wide rate limit,
//! retries, and typed pages. What to ask for lives in [`pull`]; the simulated tenant
//! used by the local run and the tests lives in [`sim`].

mod cursor;
pub(crate) mod page;
pub(crate) mod pull;
#[cfg(feature = "sim")]
pub(crate) mod sim;

pub use cursor::Cursor;
pub(crate) use cursor::{AlertWatch, PageResume, ScanResume, WatchPass};
pub(crate) use page::{Keys, ACTIVITY_KEYS, ALERT_KEYS};

use crate::auth::{self, AuthError, CAS_SCOPE};
use crate::retry::{drive, read_answer, Attempt, Deadline, Policy};
use crate::secret::Secret;
use crate::source::Page;
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
pub(crate) const REQUESTS_PER_MINUTE: usize = 30;

/// How the client proves who it is.
#[derive(Clone)]
pub enum CasAuth {
    /// `Authorization: Token <token>` (legacy API token).
    LegacyToken(Secret),
    /// `Authorization: Bearer <Entra token>` for the CAS application scope.
    Entra(Arc<dyn TokenCredential>),
}

/// The largest CAS answer read: a scan page of 5,000 activities of 1 to 4 KiB each is
/// 5 to 20 MiB, so this leaves room for pages of unusually large records while a service
/// that sends without end cannot take the handler's memory with it.
pub(crate) const MAX_ANSWER: usize = 64 << 20;

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
    /// No connection could be made to the API.
    #[error("{0}: check CAS_API_URL (the portal's About page shows the API URL) and that the network reaches it")]
    Unreachable(#[from] crate::net::Unreachable),
    /// Throttling or server errors went on until the run's time budget ran out.
    #[error(
        "CAS {path}: the run's time budget ran out ({last}); the rest is left for the next run"
    )]
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
    /// Whether this handle's requests are background work (see [`CasClient::background`]).
    background: bool,
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
            background: false,
        }
    }

    /// A handle for background work (the change watch's re-check): its requests leave a
    /// share of each minute's permits to the others, so that after a burst of re-check
    /// pages a run still finds permits for the listings that carry new alerts and
    /// resolutions, instead of waiting out the minute.
    pub(crate) fn background(&self) -> CasClient {
        CasClient {
            background: true,
            ..self.clone()
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

    #[cfg(feature = "sim")]
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
        crate::json::lenient::value_of(bytes)
            .map(|(v, _)| v)
            .map_err(shape)
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
        let call = |_| self.attempt(&method, path, &url, body, deadline);
        let out_of_time = |last| CasError::OutOfTime {
            path: path.into(),
            last,
        };
        drive(POLICY, path, deadline, call, out_of_time).await
    }

    /// One try: a permit from the rate limiter, the request, and what its answer means.
    async fn attempt(
        &self,
        method: &reqwest::Method,
        path: &str,
        url: &Url,
        body: Option<&Value>,
        deadline: Deadline,
    ) -> Attempt<bytes::Bytes, CasError> {
        let mut req = self.http.request(method.clone(), url.clone());
        req = match &self.auth {
            CasAuth::LegacyToken(t) => req.header("Authorization", format!("Token {}", t.expose())),
            CasAuth::Entra(c) => match auth::bearer(c.as_ref(), CAS_SCOPE).await {
                Ok(token) => req.bearer_auth(token),
                Err(e) => return Attempt::Fail(e.into()),
            },
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        // The permit is taken last, with the request ready: time spent getting a token
        // after it would move the request's arrival later than the limiter counts it.
        if !self.limiter.acquire(deadline, self.background).await {
            return Attempt::Fail(CasError::OutOfTime {
                path: path.into(),
                last: format!(
                    "client-side rate limit (CAS_REQUESTS_PER_MINUTE): {} requests per {} s",
                    self.limiter.max,
                    self.limiter.per.as_secs()
                ),
            });
        }
        // After the wait for a permit: the answer gets what is left of the deadline.
        let req = req.timeout(deadline.remaining().min(Duration::from_secs(60)));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let too_large = |max: usize| {
            CasError::Shape {
            path: path.into(),
            detail: format!(
                "the answer is over {} MiB; lower CAS_SCAN_LIMIT (records this large are rare: the page holds some very large ones)",
                max >> 20
            ),
        }
        };
        read_answer(
            req.send().await,
            MAX_ANSWER,
            too_large,
            |status, wait, body| classify(path, status, wait, body),
        )
        .await
    }
}

/// How CAS calls back off: from 1 s up to 30 s between tries.
const POLICY: Policy = Policy {
    service: "CAS",
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
    connect_tries: Some(3),
};

/// How long to wait after a throttled answer that names no wait: CAS counts requests per
/// minute, so a minute always clears it.
const THROTTLED_WAIT: Duration = Duration::from_secs(60);

/// What a CAS answer that is not a success means, from its status, `Retry-After` and body.
///
/// CAS answers throttling with 429, and sometimes with another status whose text says
/// "throttled"; both wait for `Retry-After` or a minute. 5xx backs off. 401 and 403 name
/// their fix. Anything else is the request's own fault and is not retried.
pub(crate) fn classify<T>(
    path: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Attempt<T, CasError> {
    let throttled = status == 429 || body.to_ascii_lowercase().contains("throttl");
    let denied = |hint| {
        Attempt::Fail(CasError::Denied {
            path: path.into(),
            status,
            hint,
        })
    };
    match status {
        _ if throttled => Attempt::retry(
            Some(retry_after.unwrap_or(THROTTLED_WAIT)),
            format!("{status} throttled"),
        ),
        500 | 502 | 503 | 504 => Attempt::retry(retry_after, format!("{status}")),
        401 => denied("the token was not accepted: check CAS_API_TOKEN (legacy tokens can be revoked or expire) or that the Entra app/managed identity token is for this tenant"),
        403 => denied("the identity lacks permission: grant the Microsoft Cloud App Security API application permission Investigation.Read with admin consent"),
        _ => Attempt::Fail(CasError::Status {
            path: path.into(),
            status,
            body: body.chars().take(300).collect(),
        }),
    }
}

/// How much longer than its window the limiter waits, so that two requests a window
/// apart by the client's clock are not one request inside the service's window by its
/// own: at 30 a minute, a margin of 2 s costs one request in thirty.
const ARRIVAL_MARGIN: Duration = Duration::from_secs(2);

/// Permits of each window that background requests leave to the others (5 of CAS's 30).
const FOREGROUND_SHARE: usize = 5;

/// How long a background caller waits for the window to drop below its share before it
/// queues like any other caller. Another data type reading as fast as it may (a catch-up of
/// activities) keeps the window full: without this the re-check, and the alerts listings
/// that take turns with it, would wait for the end of that catch-up.
const BACKGROUND_PATIENCE: Duration = Duration::from_secs(10);

/// A sliding-window limiter: at most `max` permits in any `per`, handed out in the order
/// they were asked for; background permits only while the window holds fewer than `max`
/// less [`FOREGROUND_SHARE`].
///
/// Each caller reserves the earliest free slot under the lock and then sleeps until it,
/// so callers waiting together are served first come, first served. That is what shares
/// CAS's 30 requests a minute fairly between the data types a poll reads at once: a lane
/// that asks again only after its previous answer always finds the others queued ahead.
/// A background caller reserves nothing ahead: it takes a permit now or waits and looks
/// again, so it never holds a slot a later foreground caller needs.
pub(crate) struct RateLimiter {
    max: usize,
    per: Duration,
    /// The start times of the last `max` permits, in order (some possibly in the future:
    /// reserved).
    slots: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// A limiter of `max` per `per`.
    pub(crate) fn new(max: usize, per: Duration) -> Self {
        RateLimiter {
            max: max.max(1),
            per,
            slots: Mutex::new(VecDeque::new()),
        }
    }

    /// How long before a permit's time it still counts: the window, and a little more,
    /// because the service counts arrivals and a request reaches it some milliseconds
    /// after its permit, each by a different amount.
    fn span(&self) -> Duration {
        self.per + ARRIVAL_MARGIN
    }

    /// Waits for a permit (a background one when `background`); false (and no permit
    /// taken) when none is free before the deadline.
    pub(crate) async fn acquire(&self, deadline: Deadline, background: bool) -> bool {
        if background {
            self.acquire_background(deadline).await
        } else {
            self.acquire_foreground(deadline).await
        }
    }

    /// A permit in turn: the earliest free slot, reserved now.
    async fn acquire_foreground(&self, deadline: Deadline) -> bool {
        let at = {
            let mut slots = self.slots.lock().await;
            let now = Instant::now();
            let at = if slots.len() < self.max {
                now
            } else {
                // The permit `max` back must be a span old before another may start.
                (slots[slots.len() - self.max] + self.span()).max(now)
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

    async fn acquire_background(&self, deadline: Deadline) -> bool {
        let allowed = self.max.saturating_sub(FOREGROUND_SHARE).max(1);
        let patience = Instant::now() + BACKGROUND_PATIENCE;
        loop {
            if Instant::now() >= patience {
                return self.acquire_foreground(deadline).await;
            }
            let wait = {
                let mut slots = self.slots.lock().await;
                let now = Instant::now();
                // Permits that still count now, reservations ahead included.
                let counted = slots
                    .iter()
                    .filter(|t| now.saturating_duration_since(**t) < self.span())
                    .count();
                if counted < allowed {
                    // In order: before any foreground reservation still ahead.
                    let at = slots.iter().position(|t| *t > now).unwrap_or(slots.len());
                    slots.insert(at, now);
                    while slots.len() > self.max {
                        slots.pop_front();
                    }
                    return true;
                }
                // When enough of them stop counting to leave one below `allowed` (they
                // are the last `counted`, in order).
                let free_at = slots[slots.len() - allowed] + self.span();
                free_at
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(50))
            };
            if wait >= deadline.remaining() {
                return false;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_of(a: Attempt<(), CasError>) -> Option<Option<Duration>> {
        match a {
            Attempt::Retry { wait, .. } => Some(wait),
            _ => None,
        }
    }

    #[test]
    fn classify_reads_status_headers_and_body_alone() {
        let p = "api/v1/alerts/";
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(wait_of(classify(p, 429, secs(7), "")), Some(secs(7)));
        assert_eq!(
            wait_of(classify(p, 429, None, "")),
            Some(secs(60)),
            "a minute when CAS names no wait"
        );
        assert_eq!(
            wait_of(classify(
                p,
                400,
                None,
                "{\"detail\":\"Request was throttled\"}"
            )),
            Some(secs(60)),
            "a throttled text under another status"
        );
        assert_eq!(
            wait_of(classify(p, 503, None, "")),
            Some(None),
            "5xx backs off"
        );
        assert_eq!(wait_of(classify(p, 502, secs(3), "")), Some(secs(3)));
        assert!(matches!(
            classify::<()>(p, 401, None, ""),
            Attempt::Fail(CasError::Denied { status: 401, .. })
        ));
        match classify::<()>(p, 403, None, "") {
            Attempt::Fail(e) => assert!(e.to_string().contains("Investigation.Read"), "{e}"),
            _ => panic!("403 is not retried"),
        }
        match classify::<()>(p, 400, None, "{\"detail\":\"bad filter\"}") {
            Attempt::Fail(e @ CasError::Status { status: 400, .. }) => {
                assert!(e.to_string().contains("bad filter"))
            }
            _ => panic!("400 is not retried"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_never_allows_more_than_max_per_window() {
        let l = RateLimiter::new(3, Duration::from_secs(60));
        let d = Deadline::after(Duration::from_secs(600));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire(d, false).await);
        }
        assert!(Instant::now() - start < Duration::from_secs(1));
        assert!(l.acquire(d, false).await);
        assert!(
            Instant::now() - start >= Duration::from_secs(60) + ARRIVAL_MARGIN,
            "a window and the margin for arrival jitter"
        );
        let short = Deadline::after(Duration::from_secs(1));
        for _ in 0..2 {
            assert!(l.acquire(short, false).await);
        }
        assert!(
            !l.acquire(short, false).await,
            "a permit past the deadline is refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_leaves_permits_for_the_rest() {
        let l = Arc::new(RateLimiter::new(30, Duration::from_secs(60)));
        let d = Deadline::after(Duration::from_secs(600));
        let start = Instant::now();
        // A re-check asking as fast as it can takes 25 permits at once, then waits.
        for _ in 0..25 {
            assert!(l.acquire(d, true).await);
        }
        assert!(Instant::now() - start < Duration::from_secs(1));
        let bg = {
            let l = l.clone();
            tokio::spawn(async move {
                assert!(l.acquire(d, true).await);
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        // A resolutions listing ten seconds later finds its permits at once.
        for _ in 0..5 {
            assert!(l.acquire(d, false).await);
        }
        assert!(Instant::now() - start < Duration::from_secs(11));
        let bg_at = bg.await.unwrap();
        assert!(
            bg_at - start >= Duration::from_secs(60) + ARRIVAL_MARGIN,
            "the 26th background permit waits for the window: {:?}",
            bg_at - start
        );
        // And the window's limit holds for both kinds together.
        assert!(l.acquire(d, false).await);
        assert!(Instant::now() - start >= Duration::from_secs(60) + ARRIVAL_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_queues_like_the_rest_when_the_window_stays_full() {
        // Another lane keeps the window full; the re-check still gets its turn.
        let l = Arc::new(RateLimiter::new(30, Duration::from_secs(60)));
        let d = Deadline::after(Duration::from_secs(600));
        let busy = {
            let l = l.clone();
            tokio::spawn(async move { while l.acquire(d, false).await {} })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let mut got = 0;
        while Instant::now() - start < Duration::from_secs(300) && l.acquire(d, true).await {
            got += 1;
        }
        busy.abort();
        assert!(got >= 30, "about half the permits over five minutes: {got}");
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
                    while l.acquire(d, false).await {
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
