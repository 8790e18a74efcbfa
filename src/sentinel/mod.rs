//! The Logs Ingestion API client: packing rows into calls under the 1 MiB limit, gzip,
//! Entra tokens, and retries within the invocation's time budget.

pub mod pack;
pub mod sim;

use crate::auth::{self, AuthError};
use crate::queue::envelope::gzip_fast;
use crate::retry::{backoff, retry_after, Deadline};
use azure_core::credentials::TokenCredential;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The API version the client speaks.
pub const API_VERSION: &str = "2023-01-01";

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

impl SentinelError {
    /// Whether a later attempt (a redelivery of the message) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SentinelError::OutOfTime { .. } | SentinelError::Auth(_)
        )
    }
}

/// Where and how to send.
#[derive(Clone)]
pub struct LogsIngestion {
    http: reqwest::Client,
    endpoint: Url,
    dcr_immutable_id: String,
    credential: Arc<dyn TokenCredential>,
    scope: String,
    max_call_bytes: usize,
    calls: Arc<AtomicU64>,
}

impl LogsIngestion {
    /// A client for the DCR `dcr_immutable_id` at `endpoint`.
    pub fn new(
        http: reqwest::Client,
        endpoint: Url,
        dcr_immutable_id: String,
        credential: Arc<dyn TokenCredential>,
    ) -> Self {
        let scope = scope_for(&endpoint).to_string();
        LogsIngestion {
            http,
            endpoint,
            dcr_immutable_id,
            credential,
            scope,
            max_call_bytes: pack::MAX_CALL_BYTES,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Lowers the per-call limit (never above the service's 1 MiB).
    pub fn with_max_call_bytes(mut self, limit: usize) -> Self {
        self.max_call_bytes = limit.min(pack::MAX_CALL_BYTES);
        self
    }

    /// The per-call limit in force.
    pub fn max_call_bytes(&self) -> usize {
        self.max_call_bytes
    }

    /// HTTP calls made so far.
    pub fn calls_made(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sends rows (serialized JSON objects) as one call, splitting in two and sending
    /// each half when the service answers 413; returns the calls that succeeded.
    pub async fn send_rows(
        &self,
        stream: &str,
        rows: &[Vec<u8>],
        deadline: Deadline,
    ) -> Result<usize, SentinelError> {
        let mut pending = Vec::new();
        pending.push(0..rows.len());
        let mut calls = 0;
        // Depth-first, front half first, so rows keep their order.
        while let Some(range) = pending.pop() {
            match self
                .send_body(stream, &pack::body(&rows[range.clone()]), deadline)
                .await
            {
                Ok(()) => calls += 1,
                Err(SentinelError::Rejected { status: 413, .. }) if range.len() > 1 => {
                    let mid = range.start + range.len() / 2;
                    tracing::warn!(
                        stream,
                        rows = range.len(),
                        "413 from Logs Ingestion; splitting the call"
                    );
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(calls)
    }

    /// Sends one body (already a JSON array within the limit), retrying transient failures.
    pub async fn send_body(
        &self,
        stream: &str,
        body: &[u8],
        deadline: Deadline,
    ) -> Result<(), SentinelError> {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/dataCollectionRules/{}/streams/{stream}",
            self.dcr_immutable_id
        ));
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        let compressed = gzip_fast(body);
        let mut attempt = 0u32;
        loop {
            let token = auth::bearer(self.credential.as_ref(), &self.scope).await?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .http
                .post(url.clone())
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .timeout(deadline.remaining().min(Duration::from_secs(60)))
                .body(compressed.clone())
                .send()
                .await;
            let (wait, last) = match sent {
                Err(e) => (
                    backoff(attempt, Duration::from_millis(500), Duration::from_secs(30)),
                    format!("transport: {e}"),
                ),
                Ok(rsp) if rsp.status().is_success() => return Ok(()),
                Ok(rsp) => {
                    let status = rsp.status().as_u16();
                    let hinted = retry_after(rsp.headers());
                    let text = rsp.text().await.unwrap_or_default();
                    let (code, message) = error_parts(&text);
                    match status {
                        429 => (
                            hinted.unwrap_or(Duration::from_secs(5)),
                            format!("429 {code}"),
                        ),
                        500..=599 | 408 => (
                            hinted.unwrap_or_else(|| {
                                backoff(
                                    attempt,
                                    Duration::from_millis(500),
                                    Duration::from_secs(30),
                                )
                            }),
                            format!("{status} {code}"),
                        ),
                        _ => {
                            return Err(SentinelError::Rejected {
                                stream: stream.into(),
                                status,
                                hint: hint_for(status, &code),
                                code,
                                message,
                            });
                        }
                    }
                }
            };
            tracing::warn!(stream, attempt, wait_ms = wait.as_millis() as u64, %last, "Logs Ingestion call failed; retrying");
            if !deadline.sleep_within(wait).await {
                return Err(SentinelError::OutOfTime { last });
            }
            attempt += 1;
        }
    }
}

/// The token scope for the endpoint's cloud.
pub fn scope_for(endpoint: &Url) -> &'static str {
    let host = endpoint.host_str().unwrap_or_default();
    if host.ends_with(".azure.us") {
        "https://monitor.azure.us/.default"
    } else if host.ends_with(".azure.cn") {
        "https://monitor.azure.cn/.default"
    } else {
        "https://monitor.azure.com/.default"
    }
}

fn error_parts(text: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let code = v
        .pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or("unknown")
        .to_string();
    let message = v
        .pointer("/error/message")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(300).collect());
    (code, message)
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
