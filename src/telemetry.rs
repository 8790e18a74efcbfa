//! What the handler tells the people and machines watching it: plain lines on a terminal,
//! one JSON object a line under the Functions host (which stores each stderr line in
//! Application Insights, where KQL reads the fields with `parse_json`), and per-invocation
//! counters (retries, bytes sent) that the summary line of each invocation reports.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Lines for people; colour only when `ansi`.
    Text {
        /// Whether to colour (stderr is a terminal and `NO_COLOR` is unset).
        ansi: bool,
    },
    /// One JSON object a line, with the span fields (function, invocation, data type).
    Json,
}

impl LogFormat {
    /// The format for this process: `CAS_LOG_FORMAT` (`json` or `text`) when set; else JSON
    /// when running under the Functions host (`FUNCTIONS_CUSTOMHANDLER_PORT` is set) and
    /// text otherwise. Colour only on a terminal, and never with `NO_COLOR`
    /// (<https://no-color.org>: any non-empty value).
    pub fn detect(get: &dyn Fn(&str) -> Option<String>, stderr_is_terminal: bool) -> LogFormat {
        let set = |k: &str| get(k).filter(|v| !v.is_empty());
        let json = match set("CAS_LOG_FORMAT")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Some("json") => true,
            Some(_) => false,
            None => set("FUNCTIONS_CUSTOMHANDLER_PORT").is_some(),
        };
        if json {
            LogFormat::Json
        } else {
            LogFormat::Text {
                ansi: stderr_is_terminal && set("NO_COLOR").is_none(),
            }
        }
    }
}

/// Sets up logging to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text { ansi } => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_ansi(false)
            .init(),
    }
}

/// The format for this process, from its environment and its stderr.
pub fn detect_from_env() -> LogFormat {
    LogFormat::detect(&|k| std::env::var(k).ok(), std::io::stderr().is_terminal())
}

/// Counters of one invocation, kept in a task-local so the clients add to them without
/// being passed them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    retries: AtomicU64,
    bytes_sent: AtomicU64,
}

/// What an invocation's counters came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counted {
    /// Calls retried (any service).
    pub retries: u64,
    /// Bytes sent to Logs Ingestion (gzip'd, as on the wire).
    pub bytes_sent: u64,
}

tokio::task_local! {
    static COUNTERS: Counters;
}

/// Runs `f` with fresh counters; returns its output and what was counted.
pub(crate) async fn counted<F: std::future::Future>(f: F) -> (F::Output, Counted) {
    COUNTERS
        .scope(Counters::default(), async {
            let out = f.await;
            let c = COUNTERS.with(|c| Counted {
                retries: c.retries.load(Ordering::Relaxed),
                bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            });
            (out, c)
        })
        .await
}

/// Counts one retry (outside [`counted`], nothing happens).
pub(crate) fn add_retry() {
    let _ = COUNTERS.try_with(|c| c.retries.fetch_add(1, Ordering::Relaxed));
}

/// Counts bytes sent to Logs Ingestion.
pub(crate) fn add_bytes_sent(n: usize) {
    let _ = COUNTERS.try_with(|c| c.bytes_sent.fetch_add(n as u64, Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color_and_json_under_the_host() {
        assert_eq!(
            LogFormat::detect(&env(&[]), true),
            LogFormat::Text { ansi: true }
        );
        assert_eq!(
            LogFormat::detect(&env(&[]), false),
            LogFormat::Text { ansi: false },
            "redirected: no escapes"
        );
        assert_eq!(
            LogFormat::detect(&env(&[("NO_COLOR", "1")]), true),
            LogFormat::Text { ansi: false }
        );
        assert_eq!(
            LogFormat::detect(&env(&[("NO_COLOR", "")]), true),
            LogFormat::Text { ansi: true },
            "empty means unset"
        );
        assert_eq!(
            LogFormat::detect(&env(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "7071")]), false),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::detect(
                &env(&[
                    ("FUNCTIONS_CUSTOMHANDLER_PORT", "7071"),
                    ("CAS_LOG_FORMAT", "text")
                ]),
                true
            ),
            LogFormat::Text { ansi: true }
        );
        assert_eq!(
            LogFormat::detect(&env(&[("CAS_LOG_FORMAT", "JSON")]), true),
            LogFormat::Json
        );
    }

    #[tokio::test]
    async fn counters_belong_to_their_invocation() {
        add_retry(); // outside: ignored
        let ((), c) = counted(async {
            add_retry();
            add_retry();
            add_bytes_sent(100);
        })
        .await;
        assert_eq!(
            c,
            Counted {
                retries: 2,
                bytes_sent: 100
            }
        );
        let ((), c) = counted(async {}).await;
        assert_eq!(c, Counted::default());
    }
}
