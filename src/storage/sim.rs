//! A storage account on loopback that keeps everything in memory and costs next to no
//! CPU: the Blob operations cas-sentinel makes (create a container; put a block blob,
//! with `If-None-Match: *` or `If-Match`; get, with ranges; exists; delete) and the
//! Queue service's create-queue, with the status codes, error codes and ETags the
//! service documents.
//!
//! It exists for the benchmark. Azurite is the emulator the tests trust, but it is a
//! Node process that spends about 3 ms of CPU per call on the same two cores as the
//! handler, which a real storage account (remote) never does; this stand-in lets the
//! benchmark measure the handler with storage off its CPU budget. The storage SDK is
//! still used for real, over HTTP. It checks that each request carries a SAS signature
//! that has not expired; it does not verify the signature (Azurite does, in the tests).
//! Anything else is answered 501 naming what was asked, never silently accepted.

use crate::config::StorageSettings;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

/// The account name in the stand-in's URLs (path-style, as with Azurite).
const ACCOUNT: &str = "devstoreaccount1";

#[derive(Default)]
struct State {
    containers: HashSet<String>,
    queues: HashSet<String>,
    blobs: HashMap<(String, String), Blob>,
    next_etag: u64,
}

struct Blob {
    data: Bytes,
    etag: String,
}

/// The stand-in storage account.
#[derive(Default)]
pub struct StorageSim {
    state: Mutex<State>,
    calls: AtomicU64,
}

impl StorageSim {
    /// Starts the Blob and Queue endpoints on loopback; returns the settings that reach
    /// them (the development account, so the handler signs an account SAS as it would
    /// for any key-based account).
    pub async fn start() -> (Arc<StorageSim>, StorageSettings) {
        let sim = Arc::new(StorageSim::default());
        let blob = crate::loopback::serve(sim.clone().route(Service::Blob), 0)
            .await
            .expect("bind a loopback port");
        let queue = crate::loopback::serve(sim.clone().route(Service::Queue), 0)
            .await
            .expect("bind a loopback port");
        let settings = StorageSettings::dev_storage(
            &format!("http://{queue}/{ACCOUNT}"),
            &format!("http://{blob}/{ACCOUNT}"),
        )
        .expect("loopback URLs are valid endpoints");
        (sim, settings)
    }

    /// Requests received, of every kind.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn route(
        self: Arc<Self>,
        service: Service,
    ) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static
    {
        warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      body: Bytes| {
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    let req = Request {
                        method,
                        path: path.as_str(),
                        query: parse_query(&query),
                        headers,
                        body,
                    };
                    match service {
                        Service::Blob => self.blob(&req),
                        Service::Queue => self.queue(&req),
                    }
                },
            )
    }

    fn blob(&self, req: &Request) -> Response {
        if let Some(refused) = req.check_sas() {
            return refused;
        }
        let Some((container, blob)) = req.segments() else {
            return error(StatusCode::BAD_REQUEST, "InvalidUri", "no container named");
        };
        let mut st = self.state.lock().expect("storage stand-in state");
        let Some(blob) = blob else {
            return match (&req.method, req.query.get("restype").map(String::as_str)) {
                (&Method::PUT, Some("container")) => {
                    if st.containers.insert(container) {
                        reply(StatusCode::CREATED, Bytes::new(), Some("\"0x1\""))
                    } else {
                        error(
                            StatusCode::CONFLICT,
                            "ContainerAlreadyExists",
                            "The specified container already exists.",
                        )
                    }
                }
                _ => req.unsupported(),
            };
        };
        if !st.containers.contains(&container) {
            return error(
                StatusCode::NOT_FOUND,
                "ContainerNotFound",
                "The specified container does not exist.",
            );
        }
        if req.query.contains_key("comp") {
            // Put Block, metadata, tags, leases...: not something cas-sentinel's blobs need.
            return req.unsupported();
        }
        let key = (container, blob);
        let existing = st.blobs.get(&key);
        match req.method {
            Method::GET | Method::HEAD => match existing {
                None => blob_not_found(),
                Some(b) if req.method == Method::HEAD => {
                    let mut r = reply(StatusCode::OK, Bytes::new(), Some(&b.etag));
                    r.headers_mut()
                        .insert("content-length", b.data.len().into());
                    r
                }
                Some(b) => read(req, b),
            },
            Method::PUT => {
                if req.header("x-ms-blob-type") != Some("BlockBlob") {
                    return req.unsupported();
                }
                if let Some(refused) = preconditions(req, existing) {
                    return refused;
                }
                st.next_etag += 1;
                let etag = format!("\"0x{:X}\"", 0x8DE_0000_0000_0000u64 + st.next_etag);
                st.blobs.insert(
                    key,
                    Blob {
                        data: req.body.clone(),
                        etag: etag.clone(),
                    },
                );
                reply(StatusCode::CREATED, Bytes::new(), Some(&etag))
            }
            Method::DELETE => {
                if let Some(refused) = preconditions(req, existing) {
                    return refused;
                }
                match st.blobs.remove(&key) {
                    Some(_) => reply(StatusCode::ACCEPTED, Bytes::new(), None),
                    None => blob_not_found(),
                }
            }
            _ => req.unsupported(),
        }
    }

    fn queue(&self, req: &Request) -> Response {
        if let Some(refused) = req.check_sas() {
            return refused;
        }
        match (req.segments(), &req.method) {
            (Some((queue, None)), &Method::PUT) if req.query.is_empty_but_sas() => {
                let mut st = self.state.lock().expect("storage stand-in state");
                // The service answers 204 when the queue already exists with the same metadata.
                if st.queues.insert(queue) {
                    reply(StatusCode::CREATED, Bytes::new(), None)
                } else {
                    reply(StatusCode::NO_CONTENT, Bytes::new(), None)
                }
            }
            _ => req.unsupported(),
        }
    }
}

#[derive(Clone, Copy)]
enum Service {
    Blob,
    Queue,
}

struct Request<'a> {
    method: Method,
    path: &'a str,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
}

/// Query parameters, decoded.
struct Query(HashMap<String, String>);

impl Query {
    fn get(&self, k: &str) -> Option<&String> {
        self.0.get(k)
    }
    fn contains_key(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
    /// True when the only parameters are the SAS's own.
    fn is_empty_but_sas(&self) -> bool {
        const SAS: &[&str] = &[
            "sv", "ss", "srt", "sp", "se", "st", "spr", "sip", "sig", "timeout",
        ];
        self.0.keys().all(|k| SAS.contains(&k.as_str()))
    }
}

fn parse_query(raw: &str) -> Query {
    Query(
        url::form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect(),
    )
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(container or queue, blob name)` from `/<account>/<container>[/<blob...>]`.
    fn segments(&self) -> Option<(String, Option<String>)> {
        let rest = self.path.strip_prefix('/')?.strip_prefix(ACCOUNT)?;
        let rest = rest.strip_prefix('/')?;
        match rest.split_once('/') {
            None if !rest.is_empty() => Some((percent_decode(rest), None)),
            Some((c, b)) if !c.is_empty() && !b.is_empty() => {
                Some((percent_decode(c), Some(percent_decode(b))))
            }
            _ => None,
        }
    }

    /// 403 unless the request carries a SAS that has not expired.
    fn check_sas(&self) -> Option<Response> {
        if self.query.get("sig").is_none_or(|s| s.is_empty()) {
            return Some(error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "The request carries no SAS signature.",
            ));
        }
        let expired = self.query.get("se").is_none_or(|se| {
            time::OffsetDateTime::parse(se, &time::format_description::well_known::Rfc3339)
                .map_or(true, |t| t < time::OffsetDateTime::now_utc())
        });
        expired.then(|| {
            error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "The SAS has no valid expiry or has expired.",
            )
        })
    }

    fn unsupported(&self) -> Response {
        let query: Vec<&str> = self
            .query
            .0
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "sig")
            .collect();
        error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplementedByStandIn",
            &format!(
                "the storage stand-in does not implement {} {} (parameters: {})",
                self.method,
                self.path,
                query.join(",")
            ),
        )
    }
}

/// `If-None-Match: *` and `If-Match` as the service applies them to a write or delete.
fn preconditions(req: &Request, existing: Option<&Blob>) -> Option<Response> {
    if req.header("if-none-match") == Some("*") && existing.is_some() {
        return Some(error(
            StatusCode::CONFLICT,
            "BlobAlreadyExists",
            "The specified blob already exists.",
        ));
    }
    match (req.header("if-match"), existing) {
        (Some("*"), Some(_)) | (None, _) => None,
        (Some(want), Some(b)) if want == b.etag => None,
        (Some(_), Some(_)) => Some(error(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )),
        (Some(_), None) => Some(blob_not_found()),
    }
}

/// Get Blob, whole or the range asked for (`x-ms-range` wins over `Range`).
fn read(req: &Request, b: &Blob) -> Response {
    let asked = req.header("x-ms-range").or_else(|| req.header("range"));
    let Some(spec) = asked else {
        return reply(StatusCode::OK, b.data.clone(), Some(&b.etag));
    };
    let len = b.data.len();
    let range = spec.strip_prefix("bytes=").and_then(|r| {
        let (start, end) = r.split_once('-')?;
        let start: usize = start.parse().ok()?;
        let end: usize = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            end.parse().ok()?
        };
        Some((start, end.min(len.saturating_sub(1))))
    });
    match range {
        Some((start, end)) if start < len && start <= end => {
            let mut r = reply(
                StatusCode::PARTIAL_CONTENT,
                b.data.slice(start..=end),
                Some(&b.etag),
            );
            r.headers_mut().insert(
                "content-range",
                format!("bytes {start}-{end}/{len}")
                    .parse()
                    .expect("an ASCII header"),
            );
            r
        }
        Some(_) => error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
        ),
        None => error(StatusCode::BAD_REQUEST, "InvalidHeaderValue", "bad range"),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn blob_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
    )
}

fn reply(status: StatusCode, body: Bytes, etag: Option<&str>) -> Response {
    let mut r = warp::http::Response::builder()
        .status(status)
        .header("x-ms-request-id", "00000000-0000-0000-0000-000000000000")
        .header("x-ms-version", "2025-11-05");
    if let Some(etag) = etag {
        r = r.header("etag", etag);
    }
    r.body(body.into()).expect("a valid response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = reply(status, Bytes::from(body), None);
    r.headers_mut()
        .insert("x-ms-error-code", code.parse().expect("an ASCII code"));
    r.headers_mut()
        .insert("content-type", "application/xml".parse().expect("ASCII"));
    r
}
