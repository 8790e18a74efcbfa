//! Telling "the service cannot be reached" apart from "the service said no", and naming
//! why: an operator who reads "retry policy expired" after 80 silent seconds goes looking
//! at role assignments, when the endpoint was simply refused, unresolvable or wrong.

use std::fmt;
use std::time::Duration;

/// Why a connection to an endpoint was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Nothing listens there (or a firewall answers for it).
    Refused,
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol, or not TLS at all).
    Tls,
    /// No answer within the time allowed.
    Timeout,
    /// Anything else the transport reported.
    Other(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused => f.write_str("connection refused"),
            Cause::Dns => f.write_str("the host name does not resolve (DNS)"),
            Cause::Tls => f.write_str("the TLS handshake failed"),
            Cause::Timeout => f.write_str("no answer in time"),
            Cause::Other(s) => f.write_str(s),
        }
    }
}

/// An endpoint that could not be connected to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to {endpoint}: {cause}")]
pub struct Unreachable {
    /// `scheme://host:port` of the endpoint.
    pub(crate) endpoint: String,
    /// Why.
    pub(crate) cause: Cause,
}

/// `scheme://host:port`, the part of a URL a connection failure is about (never its path
/// or query, where a SAS would be).
pub(crate) fn endpoint(url: &url::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Whether `e` is a failure to connect (as opposed to a failure after the request was
/// answered, or while its body was read), and if so why.
pub(crate) fn connect_cause(e: &reqwest::Error) -> Option<Cause> {
    e.is_connect().then(|| cause_of(e))
}

/// The cause, read from the error and its sources (the transport's words differ between
/// resolver, socket and TLS layers; the socket's `io::ErrorKind` is the one exact signal).
fn cause_of(e: &reqwest::Error) -> Cause {
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Cause::Refused,
                std::io::ErrorKind::TimedOut => return Cause::Timeout,
                _ => {}
            }
        }
        text.push_str(&s.to_string().to_lowercase());
        text.push(' ');
        source = s.source();
    }
    if text.contains("dns") || text.contains("lookup address") || text.contains("resolve") {
        Cause::Dns
    } else if text.contains("refused") {
        Cause::Refused
    } else if text.contains("certificate")
        || text.contains("tls")
        || text.contains("handshake")
        // rustls's own words for a peer that does not speak TLS or speaks it wrongly.
        || text.contains("corrupt message")
        || text.contains("peer ")
        || text.contains("fatal alert")
    {
        Cause::Tls
    } else if e.is_timeout() || text.contains("timed out") {
        Cause::Timeout
    } else {
        Cause::Other(text.trim().chars().take(200).collect())
    }
}

/// Makes one request to `url` and reports whether a connection could be made at all,
/// within `within`. Any HTTP answer, even 400 or 403, means the endpoint is reachable: what
/// it thinks of us is for the real call to find out.
pub(crate) async fn probe(url: &url::Url, within: Duration) -> Result<(), Unreachable> {
    let unreachable = |cause| Unreachable {
        endpoint: endpoint(url),
        cause,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(within)
        .timeout(within)
        .build()
        .map_err(|e| unreachable(Cause::Other(e.to_string())))?;
    // The root of the endpoint, without the path or query (a SAS stays out of any log).
    let mut root = url.clone();
    root.set_path("/");
    root.set_query(None);
    match client.get(root).send().await {
        Ok(_) => Ok(()),
        Err(e) => Err(unreachable(cause_of(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_named_refused_within_a_second() {
        // Bind then drop: the port is closed for the rest of the test.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url: url::Url = format!("http://127.0.0.1:{port}/devstoreaccount1?sig=secret")
            .parse()
            .unwrap();
        let started = std::time::Instant::now();
        let e = probe(&url, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.cause, Cause::Refused);
        assert!(started.elapsed() < Duration::from_secs(1));
        let text = e.to_string();
        assert_eq!(
            text,
            format!("cannot connect to http://127.0.0.1:{port}: connection refused")
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_named_dns() {
        // `.invalid` never resolves (RFC 6761), and the resolver answers that locally.
        let url: url::Url = "https://account.queue.core.invalid/".parse().unwrap();
        let e = probe(&url, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.cause, Cause::Dns, "{e}");
    }

    #[tokio::test]
    async fn tls_to_a_plain_http_listener_is_named_tls_and_any_answer_is_reachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        let plain: url::Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        probe(&plain, Duration::from_secs(5)).await.unwrap();
        let tls: url::Url = format!("https://127.0.0.1:{port}/").parse().unwrap();
        let e = probe(&tls, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.cause, Cause::Tls, "{e}");
    }

    #[tokio::test]
    async fn silence_is_named_a_timeout() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let url: url::Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let e = probe(&url, Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(e.cause, Cause::Timeout, "{e}");
    }
}
