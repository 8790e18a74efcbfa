//! The custom handler: the HTTP server the Functions host talks to, and one handler per
//! function. `GET /` is the host's readiness probe; `POST /<FunctionName>` is an invocation.
//!
//! An invocation answers 200 when its work is done and 500 when it must be retried (a
//! queue message then returns to the queue, and after `maxDequeueCount` deliveries goes to
//! the poison queue). Because the host discards the body of a failed invocation, every
//! log line is also written to stderr through `tracing`.

pub(crate) mod protocol;

use crate::app::Deployment;
use crate::pipeline::ingest::IngestOutcome;
use crate::retry::Deadline;
use protocol::{InvocationRequest, InvocationResponse, QueueTrigger, TimerInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Filter;

/// The timer function's name (its folder in `function-definitions/`).
pub const POLL_FUNCTION: &str = "PollCas";
/// The queue function's name.
pub const INGEST_FUNCTION: &str = "IngestBatch";
/// The header the Functions host sends each custom-handler request's invocation id in.
pub(crate) const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// An invocation id of our own, for a request that came without the host's.
fn own_invocation_id() -> String {
    let r = crate::retry::random_u64();
    format!("cas-{r:016x}")
}

/// host.json's `maxDequeueCount`: deliveries of a queue message before the host moves it to
/// the poison queue (`run --once` and the local host stand-in do the same).
pub const MAX_DEQUEUE_COUNT: u32 = 5;

/// Largest invocation body accepted (queue messages are at most 64 KiB).
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// How far past its budget an invocation may run before it is cut: enough for a call that
/// gave up at the deadline to be reported, well short of the claim's 5 s margin.
const OVERRUN: std::time::Duration = std::time::Duration::from_secs(1);

/// What the handler serves with: a working context, or the reason there is none.
pub(crate) enum Handler {
    /// Settings were valid: every tenant's context.
    Ready(Arc<Deployment>),
    /// Settings were not; every invocation fails with this text instead of the process
    /// crashing in a restart loop.
    Misconfigured(String),
}

/// An invocation's result.
struct Outcome {
    ok: bool,
    logs: Vec<String>,
}

impl Outcome {
    fn log(&mut self, ok: bool, line: String) {
        if ok {
            tracing::info!("{line}");
        } else {
            tracing::error!("{line}");
        }
        self.logs.push(line);
    }

    fn into_reply(self) -> warp::reply::Response {
        use warp::Reply;
        let status = if self.ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let body = InvocationResponse {
            logs: self.logs,
            ..Default::default()
        };
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    }
}

/// The routes the host calls.
pub(crate) fn routes(
    handler: Arc<Handler>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    use warp::Reply;
    let ready = warp::get()
        .and(warp::path::end())
        .map(|| warp::reply::with_status("ready", StatusCode::OK).into_response());
    let invoke = warp::post()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::header::optional::<String>(INVOCATION_ID_HEADER))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(
            move |function: String, id: Option<String>, body: bytes::Bytes| {
                use tracing::Instrument;
                let handler = handler.clone();
                // Every line of the invocation carries the function and the invocation id
                // (the host's, else our own), and the data type once it is known.
                let id = id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(own_invocation_id);
                let span = tracing::info_span!(
                    "invocation",
                    function = %function,
                    invocation_id = %id,
                    data_type = tracing::field::Empty,
                );
                async move { invoke(&handler, &function, &body).await.into_reply() }
                    .instrument(span)
            },
        );
    // Anything else falls through to warp's own 404/405/413 answers.
    ready.or(invoke).unify()
}

async fn invoke(handler: &Handler, function: &str, body: &[u8]) -> Outcome {
    let mut out = Outcome {
        ok: false,
        logs: Vec::new(),
    };
    let app = match handler {
        Handler::Ready(app) => app,
        Handler::Misconfigured(why) => {
            out.log(
                false,
                format!("{function}: cas-sentinel is misconfigured: {why}"),
            );
            return out;
        }
    };
    let req: InvocationRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            out.log(
                false,
                format!("{function}: the invocation body is not the host's JSON ({e})"),
            );
            return out;
        }
    };
    let budget = app.first().settings.invocation_budget;
    let deadline = Deadline::after(budget);
    // The budget holds even when a dependency hangs (a storage account that never answers):
    // past it the work is dropped where it stands, as a crash would drop it, which every
    // step is made to survive (docs/reliability.md). The invocation then fails, so the host
    // delivers the message again, and this holder has stopped before its batch claim
    // (budget + 5 s) lapses.
    let work = async {
        match function {
            POLL_FUNCTION => invoke_poll(app, &req, deadline, &mut out).await,
            INGEST_FUNCTION => invoke_ingest(app, &req, deadline, &mut out).await,
            other => out.log(false, format!("no function named {other:?}: this handler serves {POLL_FUNCTION} and {INGEST_FUNCTION}")),
        }
    };
    if tokio::time::timeout(deadline.remaining() + OVERRUN, work)
        .await
        .is_err()
    {
        out.ok = false;
        out.log(
            false,
            format!(
                "{function}: stopped at the end of its {}s budget (CAS_INVOCATION_BUDGET) waiting on a call that did not answer (storage, CAS, Graph or Logs Ingestion); what it had finished is kept, the rest is retried",
                budget.as_secs()
            ),
        );
    }
    out
}

async fn invoke_poll(
    app: &Deployment,
    req: &InvocationRequest,
    deadline: Deadline,
    out: &mut Outcome,
) {
    match TimerInfo::from_request(req) {
        Ok(t) if t.is_past_due => out.log(
            true,
            "PollCas: timer is past due; the checkpoint decides the window, so nothing is skipped"
                .into(),
        ),
        Ok(_) => {}
        // The timer value is informational only; a malformed one does not stop the poll.
        Err(e) => out.log(
            true,
            format!("PollCas: ignoring unreadable timer info: {e}"),
        ),
    }
    let mut all_ok = true;
    let (tenants, counted) = crate::telemetry::counted(app.poll(deadline)).await;
    let (mut records, mut messages) = (0, 0);
    let mut failed_tenants = Vec::new();
    for (tenant, reports) in tenants {
        let (label, name) = (tenant.label(), tenant.tenant().map_or("", |t| t.as_str()));
        // What its rows' CasTenant holds (nothing for the unnamed tenant and its adopter),
        // for the alert that compares records pulled with rows landed.
        let rows_tenant = tenant.settings.message_tenant().map_or("", |t| t.as_str());
        let mut tenant_ok = true;
        for r in reports {
            match r {
                Ok(report) => {
                    let line = format!("PollCas: {label}{report}");
                    tracing::info!(
                        tenant = name,
                        rows_tenant,
                        data_type = %report.data_type,
                        records = report.records,
                        changed = report.changed,
                        messages = report.messages,
                        pages = report.pages,
                        repaired = report.repaired,
                        complete = report.complete,
                        lag_seconds = report.lag_seconds,
                        "{line}"
                    );
                    records += report.records + report.changed;
                    messages += report.messages;
                    out.logs.push(line);
                }
                Err(e) => {
                    (all_ok, tenant_ok) = (false, false);
                    let line = format!("PollCas: {label}{e}");
                    tracing::error!(tenant = name, error = %e, "{line}");
                    out.logs.push(line);
                }
            }
        }
        if !tenant_ok && !name.is_empty() {
            failed_tenants.push(name.to_string());
        }
    }
    // Which tenants failed, in one line, so the one tenant with a refused credential is
    // named without reading every tenant's lines; the others' work above is kept.
    if !failed_tenants.is_empty() {
        let line = format!(
            "PollCas: {} of {} tenants failed: {}",
            failed_tenants.len(),
            app.tenants().len(),
            failed_tenants.join(", ")
        );
        tracing::error!(failed_tenants = %failed_tenants.join(","), "{line}");
        out.logs.push(line);
    }
    // The poison queue's depth, every run: the one number that says batches need a person.
    let poison = app.first().poison.approximate_len().await.ok();
    tracing::info!(
        records,
        messages,
        retries = counted.retries,
        poison_messages = poison,
        ok = all_ok,
        "PollCas: done"
    );
    out.ok = all_ok;
}

async fn invoke_ingest(
    app: &Deployment,
    req: &InvocationRequest,
    deadline: Deadline,
    out: &mut Outcome,
) {
    let trigger = match QueueTrigger::from_request(req) {
        Ok(t) => t,
        Err(e) => return out.log(false, format!("IngestBatch: {e}")),
    };
    let id = trigger.id.as_deref().unwrap_or("?");
    let (result, counted) = crate::telemetry::counted(app.ingest(&trigger.text, deadline)).await;
    let delivery = trigger.dequeue_count;
    match result {
        Ok(outcome) => {
            out.ok = true;
            let line = format!("IngestBatch: message {id} (delivery {delivery}): {outcome}");
            let (rows, calls) = match &outcome {
                IngestOutcome::Sent { rows, calls, .. } => (*rows, *calls),
                IngestOutcome::AlreadySent(_) => (0, 0),
            };
            tracing::info!(
                message_id = id,
                delivery,
                rows,
                calls,
                retries = counted.retries,
                bytes_sent = counted.bytes_sent,
                "{line}"
            );
            out.logs.push(line);
        }
        Err(e) => {
            let line = format!("IngestBatch: message {id} (delivery {delivery}): {e}; the host retries it, then moves it to {}", app.first().poison.name());
            tracing::error!(
                message_id = id,
                delivery,
                retries = counted.retries,
                bytes_sent = counted.bytes_sent,
                error = %e,
                "{line}"
            );
            out.logs.push(line);
        }
    }
}

/// Serves the handler on `127.0.0.1:port` until the process ends.
pub(crate) async fn serve(handler: Handler, port: u16) -> std::io::Result<SocketAddr> {
    crate::loopback::serve(routes(Arc::new(handler)), port).await
}
