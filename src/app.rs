//! The composition root: everything an invocation needs, built once from the settings and
//! shared by all concurrent invocations (the CAS, Graph and Logs Ingestion clients, the
//! queues and blobs), and the pipeline's ports implemented over them.

use crate::auth::Renewable;
use crate::batch::envelope::{spill_blob_name, Outgoing};
use crate::cas::{CasAuth, CasClient};
use crate::checkpoint::CheckpointStore;
use crate::config::{Settings, StorageAuth, StorageConfigError};
use crate::graph::GraphClient;
use crate::pipeline::ingest::{self, IngestError, IngestOutcome, Sink};
use crate::pipeline::poll::{self, EnqueueError, Outbox, PollError, PollReport, Sources};
use crate::retry::Deadline;
use crate::sentinel::LogsIngestion;
use crate::storage::blobs::{Blobs, WriteCondition, CONTAINER};
use crate::storage::queue::Queue;
use crate::storage::SetupError;
use azure_core::credentials::TokenCredential;
use std::sync::Arc;
use std::time::Duration;

/// The shared context.
pub struct App {
    /// The settings it was built from.
    pub settings: Settings,
    /// The CAS API client (shares one rate limiter across all invocations).
    pub cas: CasClient,
    /// The Microsoft Graph client, for discovery (with the Entra identity, never the
    /// legacy CAS token).
    pub graph: GraphClient,
    /// The Logs Ingestion client.
    pub sentinel: LogsIngestion,
    /// The fan-out queue.
    pub queue: Queue,
    /// The poison queue.
    pub poison: Queue,
    /// The cas-sentinel blob container.
    pub blobs: Blobs,
    /// Checkpoints, in `blobs`.
    pub checkpoints: CheckpointStore,
    /// Set once the queues and the container are known to exist.
    resources_ready: tokio::sync::OnceCell<()>,
}

/// The context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An Entra credential could not be made.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The storage clients could not be made.
    #[error(transparent)]
    Storage(#[from] StorageConfigError),
    /// The HTTP client could not be made.
    #[error("HTTP client: {0}")]
    Http(String),
}

impl App {
    /// Builds the clients. Makes no network call: tokens are fetched on first use.
    pub fn new(settings: Settings) -> Result<App, AppError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cas-sentinel/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| AppError::Http(e.to_string()))?;
        // Logs Ingestion always takes an Entra token, so the credential always exists; CAS
        // and storage share it unless they are given their own. It can drop a token a
        // service refuses (see `auth::Renewable`).
        let identity = settings.identity.clone();
        let renewable = Arc::new(Renewable::new(move || crate::auth::credential(&identity))?);
        let credential: Arc<dyn TokenCredential> = renewable.clone();
        let cas_auth = match &settings.cas.token {
            Some(t) => CasAuth::LegacyToken(t.clone()),
            None => CasAuth::Entra(credential.clone()),
        };
        let storage_cred = match &settings.storage.auth {
            StorageAuth::Identity { client_id } if client_id != &settings.identity.client_id => {
                // The storage identity may differ from the app's (AzureWebJobsStorage__clientId).
                let identity = crate::config::IdentitySettings {
                    client_id: client_id.clone(),
                    without_secret: settings.identity.without_secret,
                    ..Default::default()
                };
                Some(crate::auth::credential(&identity)?)
            }
            _ => Some(credential.clone()),
        };
        let cas = CasClient::new(http.clone(), settings.cas.api_url.clone(), cas_auth)
            .with_rate_limit(
                settings.cas.requests_per_minute as usize,
                Duration::from_secs(60),
            );
        let graph = GraphClient::new(
            http.clone(),
            settings.discovery.graph_url.clone(),
            credential.clone(),
        );
        let sentinel = LogsIngestion::new(
            http,
            settings.sentinel.endpoint.clone(),
            settings.sentinel.dcr_immutable_id.clone(),
            renewable,
        )
        .with_max_call_bytes(settings.sentinel.max_call_bytes)
        .with_call_timeout(settings.sentinel.call_timeout);
        let queue = Queue::open(
            &settings.storage,
            &settings.queue_name,
            storage_cred.clone(),
        )?;
        let poison = Queue::open(
            &settings.storage,
            &settings.poison_queue_name(),
            storage_cred.clone(),
        )?;
        let blobs = Blobs::fresh(
            settings
                .storage
                .fresh_container_client(CONTAINER, storage_cred)?,
        );
        Ok(App {
            checkpoints: CheckpointStore::new(blobs.clone()),
            settings,
            cas,
            graph,
            sentinel,
            queue,
            poison,
            blobs,
            resources_ready: Default::default(),
        })
    }

    /// What an ingest uses of the app (see [`ingest::process`]).
    pub fn sink(&self) -> Sink<'_> {
        Sink {
            blobs: &self.blobs,
            sentinel: &self.sentinel,
            streams: &self.settings.sentinel,
        }
    }

    /// What a poll reads from, of the app (see [`poll::run`]).
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            settings: &self.settings,
            cas: &self.cas,
            graph: &self.graph,
            checkpoints: &self.checkpoints,
        }
    }

    /// Polls every enabled data type into the fan-out queue (see [`poll::run`]).
    pub async fn poll(&self, deadline: Deadline) -> Vec<Result<PollReport, PollError>> {
        if let Err(e) = self.ensure_resources().await {
            return vec![Err(PollError::Setup(e))];
        }
        poll::run(self.sources(), self, deadline).await
    }

    /// Sends one queue message's batch (see [`ingest::process`]).
    pub async fn ingest(
        &self,
        text: &str,
        deadline: Deadline,
    ) -> Result<IngestOutcome, IngestError> {
        self.ensure_resources().await.map_err(IngestError::Setup)?;
        ingest::process(self.sink(), text, deadline).await
    }

    /// Creates the queues and the container if they are missing: once per process when
    /// it succeeds, again on the next invocation when it does not.
    pub async fn ensure_resources(&self) -> Result<(), SetupError> {
        self.resources_ready
            .get_or_try_init(|| async {
                self.queue.ensure().await?;
                self.poison.ensure().await?;
                self.blobs.ensure_container().await?;
                Ok::<(), SetupError>(())
            })
            .await
            .map(|_| ())
    }
}

/// The fan-out queue, a spilled payload going to its blob first, so no message ever
/// points at a blob that is not there.
impl Outbox for App {
    async fn enqueue(&self, m: &Outgoing) -> Result<(), EnqueueError> {
        if let Some(gz) = &m.spill {
            self.blobs
                .put(
                    &spill_blob_name(&m.envelope.batch),
                    gz.clone(),
                    WriteCondition::Always,
                )
                .await
                .map_err(EnqueueError::Spill)?;
        }
        self.queue.send_text(&m.text).await?;
        Ok(())
    }
}
