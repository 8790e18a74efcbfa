//! Deadlines, back-off and the one retry loop the HTTP clients share.
//!
//! Each client decides what an answer means ([`Attempt`]: done, retry after a wait, or
//! fail) from the status, headers and body alone; [`drive`] does the waiting, the jitter,
//! the logging and the deadline for all of them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use tokio::time::Instant;

/// The moment by which an invocation must be done; retries never sleep past it.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Deadline(Instant::now() + budget)
    }

    /// The moment itself.
    pub(crate) fn at(&self) -> Instant {
        self.0
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Sleeps for `wait` if that ends before the deadline; returns false (without
    /// sleeping) when it would not.
    pub async fn sleep_within(&self, wait: Duration) -> bool {
        if wait >= self.remaining() {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

/// Exponential back-off with full jitter: a random wait in `[base/2, base * 2^attempt]`,
/// capped at `max`, so that many workers failing together do not retry in lock step.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let floor = (base / 2).min(ceiling);
    let span = ceiling.saturating_sub(floor).as_millis() as u64;
    let r = random_u64();
    floor + Duration::from_millis(if span == 0 { 0 } else { r % (span + 1) })
}

/// A random number from the standard library's per-process random hasher keys: enough for
/// jitter and for ids that only need to differ, with no random-number crate.
pub(crate) fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// The code and message of an Azure error body, `{"error":{"code","message"}}` (Logs
/// Ingestion and Microsoft Graph both answer so): `unknown` and the body's start when it is
/// not that shape.
pub(crate) fn error_parts(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let code = v
        .pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or("unknown")
        .to_string();
    let message = v
        .pointer("/error/message")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(300).collect());
    (code, message)
}

/// The longest wait a `Retry-After` may ask for; a larger value (or `1e20`) is read as
/// this. Waits never outlast an invocation's deadline anyway: this only keeps the number
/// a `Duration` can hold.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` header value in seconds (the HTTP-date form is rare on these
/// APIs and falls back to `None`), at most [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// What one try of a call came to.
#[derive(Debug)]
pub(crate) enum Attempt<T, E> {
    /// The call succeeded.
    Done(T),
    /// A failure that waiting may cure: wait `wait` (the service's `Retry-After`), or
    /// back off when it gave none.
    Retry {
        /// The service's own wait, if it named one.
        wait: Option<Duration>,
        /// What went wrong, for the log and for the error if time runs out.
        reason: String,
    },
    /// No connection could be made: retried like [`Attempt::Retry`], but only as often as
    /// the policy's `connect_tries` allows, so a wrong or dead endpoint is named in
    /// seconds rather than after the whole budget.
    Unreachable(crate::net::Unreachable),
    /// The run's time ran out before the call could go on (not the service's failure).
    OutOfTime(String),
    /// A failure that retrying will not fix.
    Fail(E),
}

impl<T, E> Attempt<T, E> {
    /// A retry with the service's wait (or back-off when `None`).
    pub(crate) fn retry(wait: Option<Duration>, reason: impl Into<String>) -> Self {
        Attempt::Retry {
            wait,
            reason: reason.into(),
        }
    }
}

/// What an HTTP answer means: the body of a success; a retry for a failed connection or a
/// body cut off; otherwise what the client's `classify` makes of the status, the
/// `Retry-After` header and the body. A body over `max_body` bytes is not read further
/// (memory stays bounded whatever a service sends): `too_large` makes the error.
pub(crate) async fn read_answer<E>(
    sent: Result<reqwest::Response, reqwest::Error>,
    max_body: usize,
    too_large: impl FnOnce(usize) -> E,
    classify: impl FnOnce(u16, Option<Duration>, &str) -> Attempt<bytes::Bytes, E>,
) -> Attempt<bytes::Bytes, E> {
    let rsp = match sent {
        Ok(rsp) => rsp,
        Err(e) => {
            return match (crate::net::connect_cause(&e), e.url()) {
                (Some(cause), Some(url)) => Attempt::Unreachable(crate::net::Unreachable {
                    endpoint: crate::net::endpoint(url),
                    cause,
                }),
                _ => Attempt::retry(None, format!("transport: {e}")),
            };
        }
    };
    let status = rsp.status().as_u16();
    if rsp.status().is_success() {
        // The body is a page in memory from here to its enqueue: it counts against the
        // bound on pages in hand (a poll's; anything else is not bounded).
        if !crate::pages::take().await {
            return Attempt::OutOfTime(format!(
                "waiting for the deployment's bound on pages in memory ({} at once, shared by every tenant's lanes)",
                crate::pages::PAGES_AT_ONCE
            ));
        }
        return match read_capped(rsp, max_body).await {
            Ok(b) => Attempt::Done(b),
            Err(Capped::Over) => Attempt::Fail(too_large(max_body)),
            // The body was cut off: as retryable as a failed connection.
            Err(Capped::Failed(e)) => Attempt::retry(None, format!("reading the body: {e}")),
        };
    }
    let hinted = retry_after(rsp.headers());
    // An error's body is read for its code and message; only its start matters.
    let text = match read_capped(rsp, MAX_ERROR_BODY).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    classify(status, hinted, &text)
}

/// The most of an error answer's body that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why a body was not read whole.
enum Capped {
    /// It is longer than the cap.
    Over,
    /// The connection failed part-way.
    Failed(reqwest::Error),
}

/// Reads a body of at most `max` bytes, a chunk at a time, reserving what the service
/// announced (when within the cap) so a large page is not copied as the buffer grows.
async fn read_capped(mut rsp: reqwest::Response, max: usize) -> Result<bytes::Bytes, Capped> {
    let announced = rsp.content_length().unwrap_or(0);
    if announced > max as u64 {
        return Err(Capped::Over);
    }
    let mut body = Vec::with_capacity(announced as usize);
    while let Some(chunk) = rsp.chunk().await.map_err(Capped::Failed)? {
        if body.len() + chunk.len() > max {
            return Err(Capped::Over);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// How one service is retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// The service's name, for the log.
    pub service: &'static str,
    /// The first back-off step.
    pub base: Duration,
    /// The longest back-off step.
    pub max: Duration,
    /// How many tries in a row may fail to connect before the call gives up with
    /// [`crate::net::Unreachable`]; `None` keeps trying until the deadline (for calls whose
    /// failure costs more than the wait, like a batch that would go to the poison queue).
    pub connect_tries: Option<u32>,
}

/// Runs `attempt` until it is done or fails, waiting between tries as it asks (or with
/// jittered back-off), but never past `deadline`: then `out_of_time` makes the error from
/// the last reason. `attempt` is given the number of the try, from 0.
pub(crate) async fn drive<T, E: From<crate::net::Unreachable>, F, Fut>(
    policy: Policy,
    what: &str,
    deadline: Deadline,
    mut attempt: F,
    out_of_time: impl FnOnce(String) -> E,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<T, E>>,
{
    let mut n = 0u32;
    let mut unconnected = 0u32;
    loop {
        let (wait, reason) = match attempt(n).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(e),
            Attempt::OutOfTime(reason) => return Err(out_of_time(reason)),
            Attempt::Retry { wait, reason } => {
                unconnected = 0;
                (
                    wait.unwrap_or_else(|| backoff(n, policy.base, policy.max)),
                    reason,
                )
            }
            Attempt::Unreachable(u) => {
                unconnected += 1;
                if policy.connect_tries.is_some_and(|max| unconnected >= max) {
                    return Err(u.into());
                }
                (backoff(n, policy.base, policy.max), u.to_string())
            }
        };
        tracing::warn!(
            service = policy.service,
            what,
            attempt = n,
            wait_ms = wait.as_millis() as u64,
            %reason,
            "call failed; retrying"
        );
        // A lane that sleeps holds no share of the page bound: the answer that failed is
        // gone, and a sleeper must not keep other tenants waiting (see `pages`).
        crate::pages::release();
        if !deadline.sleep_within(wait).await {
            return Err(out_of_time(reason));
        }
        crate::telemetry::add_retry();
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error for the tests: its text, and whether it came from [`Unreachable`].
    #[derive(Debug, PartialEq)]
    struct E(String);

    impl From<crate::net::Unreachable> for E {
        fn from(u: crate::net::Unreachable) -> Self {
            E(format!("unreachable: {u}"))
        }
    }

    fn e(s: &str) -> E {
        E(s.to_string())
    }

    const POLICY: Policy = Policy {
        service: "test",
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
        connect_tries: Some(3),
    };

    /// A lane whose answer failed after it took a page permit (a body cut off) gives the
    /// permit back for its back-off, and a page-bound wait that outlasts the run ends it at
    /// once, named, with no retry.
    #[tokio::test(start_paused = true)]
    async fn a_lane_sleeping_on_a_retry_holds_no_page_and_a_page_wait_is_out_of_time() {
        use crate::pages::{take, Hold};
        let pages = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let hold = Hold::new(pages.clone(), Instant::now() + Duration::from_secs(60));
        let deadline = Deadline::after(Duration::from_secs(60));
        let lane = hold.scope(drive(
            POLICY,
            "page",
            deadline,
            |n| async move {
                assert!(take().await);
                if n == 0 {
                    Attempt::retry(Some(Duration::from_secs(5)), "the body was cut off")
                } else {
                    Attempt::Done(n)
                }
            },
            |why| e(&why),
        ));
        let watch = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            pages.available_permits()
        };
        let (got, free_while_sleeping) = tokio::join!(lane, watch);
        assert_eq!(got, Ok(1));
        assert_eq!(free_while_sleeping, 1, "the sleeper gave its permit back");
        assert!(hold.held(), "the answer that came took one again");

        let waiter = Hold::new(pages.clone(), Instant::now() + Duration::from_secs(1));
        let got: Result<u32, E> = waiter
            .scope(drive(
                POLICY,
                "page",
                Deadline::after(Duration::from_secs(1)),
                |_| async {
                    if take().await {
                        Attempt::Done(0)
                    } else {
                        Attempt::OutOfTime("waiting for the page bound".into())
                    }
                },
                |why| e(&why),
            ))
            .await;
        assert_eq!(got, Err(e("waiting for the page bound")));
    }

    #[tokio::test(start_paused = true)]
    async fn drive_waits_as_asked_and_gives_up_at_the_deadline() {
        let start = Instant::now();
        let got: Result<u32, E> = drive(
            POLICY,
            "x",
            Deadline::after(Duration::from_secs(60)),
            |n| async move {
                match n {
                    0 => Attempt::retry(Some(Duration::from_secs(7)), "429"),
                    1 => Attempt::retry(None, "503"),
                    _ => Attempt::Done(n),
                }
            },
            E,
        )
        .await;
        assert_eq!(got, Ok(2));
        let waited = Instant::now() - start;
        assert!(
            waited >= Duration::from_millis(7050) && waited <= Duration::from_millis(7200),
            "{waited:?}"
        );

        let failed: Result<(), E> = drive(
            POLICY,
            "x",
            Deadline::after(Duration::from_secs(5)),
            |_| async { Attempt::retry(Some(Duration::from_secs(10)), "429 throttled") },
            |last| E(format!("out of time: {last}")),
        )
        .await;
        assert_eq!(failed, Err(e("out of time: 429 throttled")));

        let fatal: Result<(), E> = drive(
            POLICY,
            "x",
            Deadline::after(Duration::from_secs(5)),
            |_| async { Attempt::Fail(e("403")) },
            |_| e("late"),
        )
        .await;
        assert_eq!(fatal, Err(e("403")));
    }

    fn refused() -> crate::net::Unreachable {
        crate::net::Unreachable {
            endpoint: "https://cas.example:443".into(),
            cause: crate::net::Cause::Refused,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_cannot_be_reached_is_named_after_a_few_tries_not_at_the_deadline() {
        let start = Instant::now();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let got: Result<(), E> = drive(
            POLICY,
            "x",
            Deadline::after(Duration::from_secs(600)),
            |_| {
                tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Attempt::Unreachable(refused()) }
            },
            |_| e("late"),
        )
        .await;
        assert_eq!(
            got,
            Err(e(
                "unreachable: cannot connect to https://cas.example:443: connection refused"
            ))
        );
        assert_eq!(tries.into_inner(), 3);
        assert!(Instant::now() - start < Duration::from_secs(3));

        // Without a limit the deadline rules.
        let patient = Policy {
            connect_tries: None,
            ..POLICY
        };
        let got: Result<(), E> = drive(
            patient,
            "x",
            Deadline::after(Duration::from_secs(20)),
            |_| async { Attempt::Unreachable(refused()) },
            |last| E(format!("out of time: {last}")),
        )
        .await;
        assert_eq!(
            got,
            Err(e(
                "out of time: cannot connect to https://cas.example:443: connection refused"
            ))
        );
        assert!(Instant::now() - start >= Duration::from_secs(19));
    }

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..20 {
            let d = backoff(attempt, base, max);
            assert!(
                d >= Duration::from_millis(50) && d <= max,
                "attempt {attempt}: {d:?}"
            );
        }
        assert!(backoff(0, base, max) <= base);
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        for huge in ["1e20", "1e308", "18446744073709551616"] {
            h.insert(reqwest::header::RETRY_AFTER, huge.parse().unwrap());
            assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for bad in ["-1", "NaN", "inf"] {
            h.insert(reqwest::header::RETRY_AFTER, bad.parse().unwrap());
            assert_eq!(retry_after(&h), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_whether_announced_or_streamed() {
        use warp::Filter;
        use warp::Reply;
        let announced = warp::path("announced").map(|| "x".repeat(300_000).into_response());
        // No Content-Length: the body arrives in chunks and is counted as it comes.
        let streamed = warp::path("streamed").map(|| {
            let chunks = (0..30).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 10_000]));
            warp::reply::stream(futures::stream::iter(chunks)).into_response()
        });
        let addr = crate::loopback::serve(announced.or(streamed).unify(), 0)
            .await
            .unwrap();
        for path in ["announced", "streamed"] {
            let get = || reqwest::get(format!("http://{addr}/{path}"));
            let over: Attempt<bytes::Bytes, usize> =
                read_answer(get().await, 100_000, |max| max, |_, _, _| Attempt::Fail(0)).await;
            assert!(matches!(over, Attempt::Fail(100_000)), "{path}");
            let within: Attempt<bytes::Bytes, usize> = read_answer(
                get().await,
                1_000_000,
                |max| max,
                |_, _, _| Attempt::Fail(0),
            )
            .await;
            assert!(
                matches!(within, Attempt::Done(ref b) if b.len() == 300_000),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn sleep_within_refuses_to_overrun_the_deadline() {
        let d = Deadline::after(Duration::from_millis(50));
        assert!(!d.sleep_within(Duration::from_secs(1)).await);
        assert!(d.sleep_within(Duration::from_millis(1)).await);
    }
}
