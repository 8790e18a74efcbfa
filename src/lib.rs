//! cas-sentinel: Microsoft Defender for Cloud Apps alerts, activities and discovery data
//! into Microsoft Sentinel, as an Azure Functions custom handler.
//!
//! ```text
//! timer PollCas ──► CAS API ──► storage queue ──► queue IngestBatch ──► Logs Ingestion API
//!   checkpoint per data type (blob)      failures retry, then <queue>-poison
//! ```
//!
//! A newcomer's reading order: [`model`] (the shared vocabulary), [`functions`] (the host
//! protocol and the two functions), then each concern they call: [`cas`], [`queue`],
//! [`checkpoint`], [`schema`], [`sentinel`]. `local` (with the `sim` feature) runs the whole
//! thing on one machine against the simulated services.
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod batch;
pub mod cas;
pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod config;
pub mod duration;
pub mod functions;
#[cfg(test)]
mod fuzz;
pub mod graph;
pub mod json;
#[cfg(feature = "sim")]
pub mod local;
pub mod loopback;
pub mod model;
pub mod ops;
pub mod package;
pub mod pipeline;
pub mod retry;
pub mod schema;
pub mod secret;
pub mod sentinel;
pub mod source;
pub mod storage;
pub mod telemetry;
