//! The custom-handler protocol: what the Functions host POSTs to `/<FunctionName>` and
//! what it expects back, with the quirks real hosts have (the shapes are in
//! `tests/fixtures/host-*.json`, checked by `tests/host_protocol.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of every invocation.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct InvocationRequest {
    /// Trigger and input bindings, by binding name.
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    /// Trigger metadata (queue message id, dequeue count, `sys`, ...).
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// The body of every answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct InvocationResponse {
    /// Output bindings by name (none: the poll enqueues through the storage SDK itself, so a
    /// page's messages are written before its checkpoint moves).
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Lines the host adds to the invocation's log.
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// The function's return value (unused).
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

/// A payload that does not have the shape of its trigger.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    /// The binding the function.json declares is absent.
    #[error("the invocation has no Data.{0} binding")]
    MissingBinding(&'static str),
    /// The binding is there but not usable.
    #[error("Data.{binding} is malformed: {detail}")]
    BadBinding {
        /// The binding name.
        binding: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// The timer trigger's binding name in `PollCas/function.json`.
pub const TIMER_BINDING: &str = "timer";
/// The queue trigger's binding name in `IngestBatch/function.json`.
pub const QUEUE_BINDING: &str = "batch";

/// The timer trigger's value. Read for logging only: the data window comes from the
/// checkpoint, never from the schedule, which is null when the monitor is off and
/// `0001-01-01T00:00:00` (no offset) before the first run.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TimerInfo {
    /// The host fired this run late (the app was down, or a run overran).
    pub is_past_due: bool,
    /// `ScheduleStatus.Last`, as sent (no offset is normal).
    pub last: Option<String>,
    /// `ScheduleStatus.Next`, as sent.
    pub next: Option<String>,
}

impl TimerInfo {
    /// Reads the timer binding leniently: missing parts are defaults, wrong types are errors.
    pub(crate) fn from_request(req: &InvocationRequest) -> Result<TimerInfo, ProtocolError> {
        match req.data.get(TIMER_BINDING) {
            None | Some(Value::Null) => Err(ProtocolError::MissingBinding(TIMER_BINDING)),
            // Some hosts pass binding values as JSON text.
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => Self::from_object(&m),
                _ => Err(ProtocolError::BadBinding {
                    binding: TIMER_BINDING,
                    detail: "a string that is not a JSON object".into(),
                }),
            },
            Some(Value::Object(m)) => Self::from_object(m),
            Some(other) => Err(ProtocolError::BadBinding {
                binding: TIMER_BINDING,
                detail: format!("expected an object, got {other}"),
            }),
        }
    }

    fn from_object(timer: &Map<String, Value>) -> Result<TimerInfo, ProtocolError> {
        let bad = |detail: String| ProtocolError::BadBinding {
            binding: TIMER_BINDING,
            detail,
        };
        let is_past_due = match timer.get("IsPastDue") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(bad(format!("IsPastDue is {other}, not a boolean"))),
        };
        let (last, next) = match timer.get("ScheduleStatus") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(s)) => {
                let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
                (text("Last"), text("Next"))
            }
            Some(other) => return Err(bad(format!("ScheduleStatus is {other}, not an object"))),
        };
        Ok(TimerInfo {
            is_past_due,
            last,
            next,
        })
    }
}

/// The queue trigger's value and metadata.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct QueueTrigger {
    /// The message text, as stored before base64 (our envelope).
    pub text: String,
    /// How many times the message has been delivered, this time included.
    pub dequeue_count: u32,
    /// The message id (quotes removed).
    pub id: Option<String>,
}

impl QueueTrigger {
    /// Decodes the binding. Real hosts JSON-encode the message text once more, so
    /// `{"a":1}` arrives as the JSON string `"\"{\\\"a\\\":1}\""`; the documented sample
    /// sends it once-encoded. Both are accepted: the doubly-encoded form is unwrapped
    /// when the inner text is itself a JSON string.
    pub(crate) fn from_request(req: &InvocationRequest) -> Result<QueueTrigger, ProtocolError> {
        let text = match req.data.get(QUEUE_BINDING) {
            None | Some(Value::Null) => return Err(ProtocolError::MissingBinding(QUEUE_BINDING)),
            Some(Value::String(outer)) => match serde_json::from_str::<Value>(outer) {
                Ok(Value::String(inner)) => inner,
                _ => outer.clone(),
            },
            // A host that parsed the JSON message for us: put the text back together.
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(other) => {
                return Err(ProtocolError::BadBinding {
                    binding: QUEUE_BINDING,
                    detail: format!("expected the message text, got {other}"),
                })
            }
        };
        let dequeue_count = match req.metadata.get("DequeueCount") {
            Some(Value::String(s)) => unquote(s).parse().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .unwrap_or(1);
        let id = req
            .metadata
            .get("Id")
            .and_then(Value::as_str)
            .map(|s| unquote(s).to_string());
        Ok(QueueTrigger {
            text,
            dequeue_count,
            id,
        })
    }
}

/// Removes the extra quotes the host puts around some metadata strings.
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> InvocationRequest {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn timer_with_the_monitor_off_has_no_schedule_status() {
        let t = TimerInfo::from_request(&fixture("host-timer-monitor-off.json")).unwrap();
        assert_eq!(t, TimerInfo::default());
    }

    #[test]
    fn timer_first_run_keeps_the_offsetless_year_one_last() {
        let t = TimerInfo::from_request(&fixture("host-timer-first-run.json")).unwrap();
        assert_eq!(t.last.as_deref(), Some("0001-01-01T00:00:00"));
        assert!(!t.is_past_due);
    }

    #[test]
    fn timer_past_due_is_read() {
        assert!(
            TimerInfo::from_request(&fixture("host-timer-past-due.json"))
                .unwrap()
                .is_past_due
        );
    }

    #[test]
    fn timer_with_wrong_types_is_an_error_that_names_the_field() {
        let req: InvocationRequest =
            serde_json::from_str(r#"{"Data":{"timer":{"IsPastDue":"yes"}}}"#).unwrap();
        assert!(TimerInfo::from_request(&req)
            .unwrap_err()
            .to_string()
            .contains("IsPastDue"));
        assert_eq!(
            TimerInfo::from_request(&InvocationRequest::default()),
            Err(ProtocolError::MissingBinding("timer"))
        );
    }

    #[test]
    fn queue_text_is_decoded_twice_and_metadata_unquoted() {
        let q = QueueTrigger::from_request(&fixture("host-queue.json")).unwrap();
        assert_eq!(
            q.text,
            r#"{"v": 1, "example": "any message text; this one happens to be JSON"}"#
        );
        assert_eq!(q.dequeue_count, 2);
        assert_eq!(
            q.id.as_deref(),
            Some("3c9f1e2a-7b64-4d0e-9a51-6e2f8b7c1d09")
        );
    }

    #[test]
    fn queue_text_in_the_documented_single_encoding_is_accepted() {
        let req: InvocationRequest =
            serde_json::from_str(r#"{"Data":{"batch":"{\"v\":1}"},"Metadata":{"DequeueCount":1}}"#)
                .unwrap();
        let q = QueueTrigger::from_request(&req).unwrap();
        assert_eq!((q.text.as_str(), q.dequeue_count), (r#"{"v":1}"#, 1));
    }

    #[test]
    fn queue_binding_of_the_wrong_type_is_refused() {
        let req: InvocationRequest = serde_json::from_str(r#"{"Data":{"batch":42}}"#).unwrap();
        assert!(matches!(
            QueueTrigger::from_request(&req),
            Err(ProtocolError::BadBinding { .. })
        ));
    }

    #[test]
    fn response_has_the_field_names_the_host_reads() {
        let r = InvocationResponse {
            logs: vec!["x".into()],
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        let expected: Value =
            serde_json::from_str(r#"{"Outputs":{},"Logs":["x"],"ReturnValue":null}"#).unwrap();
        assert_eq!(v, expected);
        let fixture: InvocationResponse =
            serde_json::from_str(include_str!("../../tests/fixtures/host-response.json")).unwrap();
        assert_eq!(fixture.logs.len(), 1);
    }
}
