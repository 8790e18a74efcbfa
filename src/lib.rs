//! cas-sentinel: Microsoft Defender for Cloud Apps alerts, activities and discovery data
//! into Microsoft Sentinel, as an Azure Functions custom handler.
//!
//! ```text
//! timer PollCas ──► source (CAS, Graph) ──► storage queue ──► queue IngestBatch ──► Logs Ingestion
//!   checkpoint per data type (blob)             failures retry, then <queue>-poison
//! ```
//!
//! The modules, bottom-up: no module imports one listed after it (`tests/module_graph.rs`
//! holds the tree to that).
//! - Leaves: `model` (the shared vocabulary: `DataType`, `Window`, `BatchId`), `duration`,
//!   `secret`, `loopback` (the URL policy and the loopback listener), `codec` (gzip, JSON
//!   arrays), `json` (the lenient reader and the borrowed record reader), `telemetry`,
//!   `net` (a connection failure told from a refusal, and named), `retry` (deadlines,
//!   backoff, reading an HTTP answer).
//! - `config`: every settings section, parsed and checked as a whole.
//! - Clients and stores: `auth` (Entra credentials), `storage` (queue and blob clients),
//!   `checkpoint` (a source's cursor in a blob), `sentinel` (the Logs Ingestion client).
//! - Records: `source` (the `Source` trait, `Step`, `Page`), `cas` (the MDA REST client and
//!   its puller), `graph` (the Graph client and its discovery snapshot), `batch` (the queue
//!   message format and the batch ledger), `schema` (records to table rows).
//! - `pipeline` (the poll and the sink, written against their ports), `app` (the
//!   composition root that implements them), `functions` (the host protocol), `ops` (the
//!   operator commands), `cli`.
//!
//! The library's public face is [`main`], the command line. With the `sim` feature the
//! [`testing`] module also opens what the tests, the benchmark, the demo and the generator
//! reach, with the simulated services; the shipped handler is built without it.
#![warn(missing_docs)]
#![cfg_attr(feature = "sim", warn(unreachable_pub))]

mod app;
mod auth;
mod batch;
mod cas;
mod checkpoint;
mod cli;
mod codec;
mod config;
mod duration;
mod functions;
#[cfg(test)]
mod fuzz;
mod graph;
mod json;
#[cfg(feature = "sim")]
mod local;
mod loopback;
mod model;
mod net;
mod ops;
mod package;
mod pages;
mod pipeline;
mod retry;
mod schema;
mod secret;
mod sentinel;
mod source;
mod storage;
mod telemetry;

pub use cli::main;

/// What the tests, the benchmark, the demo and the generator reach inside the crate, by the
/// modules' own paths, and the simulated services. Only with the `sim` feature.
#[cfg(feature = "sim")]
pub mod testing {
    #![allow(missing_docs)]
    pub mod app {
        pub use crate::app::{App, Deployment, LastPoll, TenantError};
    }
    pub mod auth {
        pub use crate::auth::{bearer, credential};
        pub mod sim {
            pub use crate::auth::sim::{IdentitySim, SimCredential, HEADER_SECRET};
        }
    }
    pub mod batch {
        pub mod envelope {
            pub use crate::batch::envelope::{decode_text, pack, Envelope, Payload};
        }
    }
    pub mod cas {
        pub use crate::cas::{CasAuth, CasClient, CasError, Cursor};
        pub mod pull {
            pub use crate::cas::pull::{pull, Pull};
        }
        pub mod sim {
            pub use crate::cas::sim::{activity_record, client_settings, CasSim, Fault, SimConfig};
        }
    }
    pub mod checkpoint {
        pub use crate::checkpoint::{CheckpointError, CheckpointStore};
    }
    pub mod codec {
        pub use crate::codec::{gzip, gzip_fast, json_array};
    }
    pub mod config {
        pub use crate::config::{
            ApiSource, CasSettings, DiscoverySettings, IdentitySettings, StorageSettings,
        };
        pub mod storage {
            pub use crate::config::storage::DEV_KEY;
        }
    }
    pub mod functions {
        pub use crate::functions::{INGEST_FUNCTION, POLL_FUNCTION};
        pub mod protocol {
            pub use crate::functions::protocol::{QUEUE_BINDING, TIMER_BINDING};
        }
    }
    pub mod graph {
        pub use crate::graph::{GraphClient, GraphError};
        pub mod discovery {
            pub use crate::graph::discovery::{Snapshot, SnapshotCursor, APPS_PER_STEP};
        }
        pub mod hunting {
            pub use crate::graph::hunting::{count_query, query, ROWS};
        }
        pub mod sim {
            pub use crate::graph::sim::{app, hostile_app, GraphFault, GraphSim, GRAPH_RESOURCE};
        }
    }
    pub mod json {
        pub use crate::json::Record;
    }
    pub mod local {
        pub use crate::local::{
            demo, live_latency, resolution_latency, DemoOptions, Harness, HarnessOptions,
            Resolutions,
        };
        pub mod azurite {
            pub use crate::local::azurite::{free_port, Azurite};
        }
        pub mod host {
            pub use crate::local::host::{BATCH_SIZE, MAX_DEQUEUE_COUNT};
        }
    }
    pub mod loopback {
        pub use crate::loopback::serve;
    }
    pub mod model {
        pub use crate::model::{now_ms, DataType, Window};
    }
    pub mod retry {
        pub use crate::retry::Deadline;
    }
    pub mod schema {
        pub use crate::schema::{row_bytes, to_row};
        pub mod asim {
            pub use crate::schema::asim::columns::native_tables;
        }
        pub mod entities {
            pub use crate::schema::entities::is_guid;
        }
        pub mod generate {
            pub use crate::schema::generate::{dcr_streams, files, tables};
        }
    }
    pub mod secret {
        pub use crate::secret::Secret;
    }
    pub mod sentinel {
        pub mod sim {
            pub use crate::sentinel::sim::{IngestFault, IngestionSim};
        }
    }
    pub mod source {
        pub use crate::source::Source;
    }
    pub mod storage {
        pub mod blobs {
            pub use crate::storage::blobs::{BlobError, Blobs, WriteCondition, CONTAINER};
        }
        pub mod queue {
            pub use crate::storage::queue::{decode_stored, Queue};
        }
        pub mod sim {
            pub use crate::storage::sim::StorageSim;
        }
    }
    pub mod telemetry {
        pub use crate::telemetry::{detect_from_env, init};
    }
}
