//! The Logs Ingestion API client: packing rows into calls under the 1 MiB limit, gzip,
//! Entra tokens, and retries within the invocation's time budget.

pub(crate) mod pack;
#[cfg(feature = "sim")]
pub(crate) mod sim;

use crate::auth::{AuthError, Renewable};
use crate::codec::gzip_fast;
use crate::retry::{drive, error_parts, read_answer, Attempt, Deadline, Policy};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The API version the client speaks.
pub(crate) const API_VERSION: &str = "2023-01-01";

/// A call to Logs Ingestion that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// The service refused the data or the caller; retrying will not help.
    #[error("Logs Ingestion refused stream {stream} with {status} ({code}): {message}; {hint}")]
    Rejected {
        /// The stream.
        stream: String,
        /// HTTP status.
        status: u16,
        /// The service's error code.
        code: String,
        /// The service's message.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// No connection could be made to the ingestion endpoint (only `validate` stops at
    /// this: a batch keeps trying until its deadline, as the queue would only retry it).
    #[error("{0}: check SENTINEL_INGESTION_ENDPOINT and that the network reaches it")]
    Unreachable(#[from] crate::net::Unreachable),
    /// Transient failures went on past the invocation's budget.
    #[error("Logs Ingestion still failing ({last}) when the invocation's time budget ran out")]
    OutOfTime {
        /// The last failure.
        last: String,
    },
    /// A row cannot fit any call.
    #[error(transparent)]
    RowTooLarge(#[from] pack::RowTooLarge),
    /// No token.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Where and how to send.
#[derive(Clone)]
pub struct LogsIngestion {
    http: reqwest::Client,
    endpoint: Url,
    dcr_immutable_id: String,
    credential: Arc<Renewable>,
    scope: String,
    max_call_bytes: usize,
    call_timeout: Duration,
    calls: Arc<AtomicU64>,
}

/// How long one try of a call waits for the service's answer by default
/// (`SENTINEL_CALL_TIMEOUT`).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a try after an unanswered one leaves of the budget for the sink to record its
/// answer (or release the batch with its progress) before the invocation is cut.
const LEDGER_RESERVE: Duration = Duration::from_secs(5);

impl LogsIngestion {
    /// A client for the DCR `dcr_immutable_id` at `endpoint`.
    pub fn new(
        http: reqwest::Client,
        endpoint: Url,
        dcr_immutable_id: String,
        credential: Arc<Renewable>,
    ) -> Self {
        let scope = scope_for(&endpoint).to_string();
        LogsIngestion {
            http,
            endpoint,
            dcr_immutable_id,
            credential,
            scope,
            max_call_bytes: crate::config::MAX_CALL_BYTES,
            call_timeout: CALL_TIMEOUT,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How long a first try waits for an answer (a try after one that went unanswered
    /// waits for as long as the budget allows).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Lowers the per-call limit (never above the service's 1 MiB).
    pub fn with_max_call_bytes(mut self, limit: usize) -> Self {
        self.max_call_bytes = limit.min(crate::config::MAX_CALL_BYTES);
        self
    }

    /// The per-call limit in force.
    pub fn max_call_bytes(&self) -> usize {
        self.max_call_bytes
    }

    #[cfg(feature = "sim")]
    /// HTTP calls made so far.
    pub fn calls_made(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sends one body (already a JSON array within the limit), retrying transient
    /// failures within the budget.
    ///
    /// A try that the service took but did not answer in time (the rows may be stored)
    /// is counted in `uncertain`, and the tries after it wait for an answer for as long as
    /// the budget allows, so a service that is merely slow is waited for rather than sent
    /// the rows again and again: each uncertain try costs at most one copy of the rows. A
    /// 401 drops the cached token once and tries again with a new one.
    pub async fn send_body(
        &self,
        stream: &str,
        body: &[u8],
        deadline: Deadline,
        uncertain: &AtomicU32,
    ) -> Result<(), SentinelError> {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/dataCollectionRules/{}/streams/{stream}",
            self.dcr_immutable_id
        ));
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        let compressed = gzip_fast(body);
        let renewed = AtomicBool::new(false);
        let call = |_| {
            let call = Call {
                stream,
                url: &url,
                gzipped: &compressed,
                deadline,
                uncertain,
                renewed: &renewed,
            };
            self.attempt(call)
        };
        let out_of_time = |last| SentinelError::OutOfTime { last };
        drive(POLICY, stream, deadline, call, out_of_time).await
    }

    /// One try of one call, and what its answer means.
    async fn attempt(&self, c: Call<'_>) -> Attempt<(), SentinelError> {
        let token = match self.credential.token(&self.scope).await {
            Ok(t) => t,
            Err(e) => return Attempt::Fail(e.into()),
        };
        // After a try that went unanswered, wait for as long as the budget allows, less
        // the time the sink needs to record the answer in the ledger (else a late answer
        // would be cut off with the invocation, unrecorded).
        let timeout = match c.uncertain.load(Ordering::Relaxed) {
            0 => c.deadline.remaining().min(self.call_timeout),
            _ => c
                .deadline
                .remaining()
                .saturating_sub(LEDGER_RESERVE)
                .max(self.call_timeout.min(c.deadline.remaining())),
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .http
            .post(c.url.clone())
            .bearer_auth(&token.secret)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .timeout(timeout)
            .body(c.gzipped.to_vec())
            .send()
            .await;
        // Any success means the rows are stored: its body (204 has none) is not read, so
        // nothing about it can turn an accepted call into one sent again.
        if sent.as_ref().is_ok_and(|r| r.status().is_success()) {
            crate::telemetry::add_bytes_sent(c.gzipped.len());
            return Attempt::Done(());
        }
        if let Err(e) = &sent {
            // Connected and sent, but no answer: the service may have stored the rows.
            if e.is_timeout() && !e.is_connect() {
                let n = c.uncertain.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    stream = c.stream,
                    uncertain = n,
                    timeout_ms = timeout.as_millis() as u64,
                    "Logs Ingestion did not answer in time; the rows may have been stored, so trying again may add one copy of them"
                );
            }
        }
        let refused_token = AtomicBool::new(false);
        // Only a failure reaches here (a success returned above), and read_answer reads a
        // failure's body only up to its own small cap: this is never called, and says what
        // went wrong should that change.
        let too_large = |max: usize| SentinelError::OutOfTime {
            last: format!("an error answer over {max} bytes, which is not Logs Ingestion's"),
        };
        let answer = read_answer(sent, 1 << 20, too_large, |status, wait, body| {
            if status == 401 && !c.renewed.swap(true, Ordering::Relaxed) {
                refused_token.store(true, Ordering::Relaxed);
                return Attempt::retry(Some(Duration::ZERO), "401: token refused");
            }
            classify(c.stream, status, wait, body)
        })
        .await;
        if refused_token.load(Ordering::Relaxed) {
            tracing::warn!(
                stream = c.stream,
                "Logs Ingestion refused the cached token; getting a new one"
            );
            self.credential.forget(token.generation);
        }
        match answer {
            Attempt::Done(_) => {
                crate::telemetry::add_bytes_sent(c.gzipped.len());
                Attempt::Done(())
            }
            Attempt::Retry { wait, reason } => Attempt::Retry { wait, reason },
            Attempt::Unreachable(u) => Attempt::Unreachable(u),
            Attempt::OutOfTime(r) => Attempt::OutOfTime(r),
            Attempt::Fail(e) => Attempt::Fail(e),
        }
    }
}

/// One call's fixed parts, and what its tries have learnt.
#[derive(Clone, Copy)]
struct Call<'a> {
    stream: &'a str,
    url: &'a Url,
    gzipped: &'a [u8],
    deadline: Deadline,
    /// Tries the service took and did not answer.
    uncertain: &'a AtomicU32,
    /// Whether a refused token was dropped already (once per call).
    renewed: &'a AtomicBool,
}

/// How Logs Ingestion calls back off: from 0.5 s up to 30 s between tries.
const POLICY: Policy = Policy {
    service: "Logs Ingestion",
    base: Duration::from_millis(500),
    max: Duration::from_secs(30),
    connect_tries: None,
};

/// What a Logs Ingestion answer that is not a success means, from its status,
/// `Retry-After` and `{"error":{"code","message"}}` body: 429 waits (`Retry-After`, else
/// 5 s: the limits are per minute but clear gradually), 408 and 5xx back off, and every
/// other status is a refusal that names its fix.
pub(crate) fn classify<T>(
    stream: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Attempt<T, SentinelError> {
    let (code, message) = error_parts(body);
    match status {
        429 => Attempt::retry(
            Some(retry_after.unwrap_or(Duration::from_secs(5))),
            format!("429 {code}"),
        ),
        500..=599 | 408 => Attempt::retry(retry_after, format!("{status} {code}")),
        _ => Attempt::Fail(SentinelError::Rejected {
            stream: stream.into(),
            status,
            hint: hint_for(status, &code),
            code,
            message,
        }),
    }
}

/// The token scope for the endpoint's cloud.
pub(crate) fn scope_for(endpoint: &Url) -> &'static str {
    let host = endpoint.host_str().unwrap_or_default();
    if host.ends_with(".azure.us") {
        "https://monitor.azure.us/.default"
    } else if host.ends_with(".azure.cn") {
        "https://monitor.azure.cn/.default"
    } else {
        "https://monitor.azure.com/.default"
    }
}

fn hint_for(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (413, _) => "the call was over the 1 MiB limit",
        (401, _) => "the token was not accepted: check the identity's tenant and the token scope for this cloud",
        (403, _) => "the identity lacks the Monitoring Metrics Publisher role on the DCR (role assignments can take up to 30 minutes to apply)",
        (404, _) => "check SENTINEL_DCR_IMMUTABLE_ID and the stream name: the DCR or stream was not found at this endpoint",
        (400, c) if c.contains("Stream") => "the stream name is not declared in the DCR",
        (400, _) => "the rows do not match the DCR stream declaration (column names or types); regenerate the DCR from this version",
        _ => "see the service's message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_follows_the_cloud() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            scope_for(&u("https://x.westeurope-1.ingest.monitor.azure.com")),
            "https://monitor.azure.com/.default"
        );
        assert_eq!(
            scope_for(&u("https://x.usgovvirginia-1.ingest.monitor.azure.us")),
            "https://monitor.azure.us/.default"
        );
        assert_eq!(
            scope_for(&u("https://x.chinaeast2-1.ingest.monitor.azure.cn")),
            "https://monitor.azure.cn/.default"
        );
    }

    #[test]
    fn classify_reads_status_headers_and_body_alone() {
        let s = "Custom-McasAlerts";
        let wait = |a: Attempt<(), SentinelError>| match a {
            Attempt::Retry { wait, .. } => Some(wait),
            _ => None,
        };
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(wait(classify(s, 429, secs(12), "")), Some(secs(12)));
        assert_eq!(wait(classify(s, 429, None, "")), Some(secs(5)));
        assert_eq!(wait(classify(s, 503, None, "")), Some(None));
        assert_eq!(wait(classify(s, 408, secs(2), "")), Some(secs(2)));
        let body = r#"{"error":{"code":"InvalidStream","message":"no such stream"}}"#;
        match classify::<()>(s, 400, None, body) {
            Attempt::Fail(e @ SentinelError::Rejected { status: 400, .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("InvalidStream") && text.contains("not declared in the DCR"),
                    "{text}"
                );
            }
            other => panic!("400 is a refusal: {other:?}"),
        }
        match classify::<()>(s, 403, None, "") {
            Attempt::Fail(e) => assert!(e.to_string().contains("Monitoring Metrics Publisher")),
            other => panic!("403 is a refusal: {other:?}"),
        }
        assert!(matches!(
            classify::<()>(s, 413, None, ""),
            Attempt::Fail(SentinelError::Rejected { status: 413, .. })
        ));
    }

    #[test]
    fn service_errors_are_read_and_explained() {
        let (code, msg) =
            error_parts(r#"{"error":{"code":"InvalidStream","message":"no such stream"}}"#);
        assert_eq!(
            (code.as_str(), msg.as_str()),
            ("InvalidStream", "no such stream")
        );
        assert!(hint_for(403, "").contains("Monitoring Metrics Publisher"));
    }
}
