//! The composition root: everything an invocation needs, built once from the settings and
//! shared by all concurrent invocations (the CAS, Graph and Logs Ingestion clients, the
//! queues and blobs), and the pipeline's ports implemented over them.
//!
//! An [`App`] is one tenant's: its own credential, CAS limiter, Graph client, checkpoints
//! and streams. A [`Deployment`] is every tenant's, sharing one storage account, queue and
//! HTTP connection pool; without `CAS_TENANTS` it holds one unnamed tenant.

use crate::auth::Renewable;
use crate::batch::envelope::{spill_blob_name, Envelope, Outgoing};
use crate::cas::{CasAuth, CasClient};
use crate::checkpoint::CheckpointStore;
use crate::config::{Settings, StorageAuth, StorageConfigError};
use crate::graph::GraphClient;
use crate::model::TenantName;
use crate::pipeline::ingest::{self, IngestError, IngestOutcome, Sink};
use crate::pipeline::poll::{self, EnqueueError, Outbox, PollError, PollReport, Sources};
use crate::retry::Deadline;
use crate::schema::TenantColumns;
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
    /// The tenant's checkpoints, in `blobs`.
    pub checkpoints: CheckpointStore,
    /// The columns the tenant's rows carry.
    tenant_columns: TenantColumns,
    /// Set once the queues and the container are known to exist (shared by the tenants).
    resources_ready: Arc<tokio::sync::OnceCell<()>>,
    /// The deployment's own credential (Logs Ingestion, storage), shared by the tenants.
    home: Arc<Renewable>,
    /// Pages in hand at once across the tenants (see [`crate::pages`]).
    pages: Arc<tokio::sync::Semaphore>,
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

/// The HTTP client every tenant's clients share (one connection pool).
///
/// Every tenant's Graph calls share one HTTP/2 connection to Graph. An answer whose lane
/// waits for the page bound (see `pages`) is left unread, and what the server has sent of
/// it counts against the connection's flow-control window until it is read. With hyper's
/// default window (5 MB for the connection, 2 MB a stream) three such answers would stop
/// the answers being read, whose lanes hold the permits the waiters need, until their
/// timeouts. So a stream may buffer little (256 KiB) and the connection a thousand of them:
/// unread data stays small, and what waits never stops what is being read.
fn http_client() -> Result<reqwest::Client, AppError> {
    reqwest::Client::builder()
        .user_agent(concat!("cas-sentinel/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(32)
        .http2_initial_stream_window_size(256 << 10)
        .http2_initial_connection_window_size(256 << 20)
        .build()
        .map_err(|e| AppError::Http(e.to_string()))
}

impl App {
    /// Builds the clients. Makes no network call: tokens are fetched on first use.
    #[cfg(any(test, feature = "sim"))]
    pub fn new(settings: Settings) -> Result<App, AppError> {
        App::build(settings, http_client()?, None)
    }

    /// Builds one tenant's clients over `http`, sharing the storage clients of `storage`
    /// when given (another tenant of the same deployment).
    fn build(
        settings: Settings,
        http: reqwest::Client,
        storage: Option<&App>,
    ) -> Result<App, AppError> {
        // Logs Ingestion always takes an Entra token, so the deployment's credential always
        // exists; storage shares it unless given its own. It can drop a token a service
        // refuses (see `auth::Renewable`).
        // One deployment identity for all its tenants: one token cache, not one a tenant.
        let renewable = match storage {
            Some(other) => other.home.clone(),
            None => {
                let home = settings.home_identity.clone();
                Arc::new(Renewable::new(move || crate::auth::credential(&home))?)
            }
        };
        let credential: Arc<dyn TokenCredential> = renewable.clone();
        // A named tenant reads CAS and Graph as itself, in its own Entra tenant.
        let reader: Arc<dyn TokenCredential> = match settings.tenant {
            None => credential.clone(),
            Some(_) => {
                let identity = settings.identity.clone();
                Arc::new(Renewable::new(move || crate::auth::credential(&identity))?)
            }
        };
        let cas_auth = match &settings.cas.token {
            Some(t) => CasAuth::LegacyToken(t.clone()),
            None => CasAuth::Entra(reader.clone()),
        };
        let cas = CasClient::new(http.clone(), settings.cas.api_url.clone(), cas_auth)
            .with_rate_limit(
                settings.cas.requests_per_minute as usize,
                Duration::from_secs(60),
            );
        let graph = GraphClient::new(http.clone(), settings.discovery.graph_url.clone(), reader);
        let sentinel = LogsIngestion::new(
            http,
            settings.sentinel.endpoint.clone(),
            settings.sentinel.dcr_immutable_id.clone(),
            renewable.clone(),
        )
        .with_max_call_bytes(settings.sentinel.max_call_bytes)
        .with_call_timeout(settings.sentinel.call_timeout);
        let (queue, poison, blobs, resources_ready) = match storage {
            Some(other) => (
                other.queue.clone(),
                other.poison.clone(),
                other.blobs.clone(),
                other.resources_ready.clone(),
            ),
            None => {
                let storage_cred = match &settings.storage.auth {
                    StorageAuth::Identity { client_id }
                        if client_id != &settings.home_identity.client_id =>
                    {
                        // The storage identity may differ from the app's (AzureWebJobsStorage__clientId).
                        let identity = crate::config::IdentitySettings {
                            client_id: client_id.clone(),
                            without_secret: settings.home_identity.without_secret,
                            ..Default::default()
                        };
                        Some(crate::auth::credential(&identity)?)
                    }
                    _ => Some(credential.clone()),
                };
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
                (queue, poison, blobs, Default::default())
            }
        };
        Ok(App {
            // The former unnamed tenant goes on from where the unnamed one stood.
            checkpoints: CheckpointStore::for_tenant(blobs.clone(), settings.message_tenant()),
            tenant_columns: TenantColumns::new(
                settings.message_tenant(),
                settings.identity.tenant_id.as_deref(),
            ),
            settings,
            cas,
            graph,
            sentinel,
            queue,
            poison,
            blobs,
            resources_ready,
            home: renewable,
            pages: match storage {
                Some(other) => other.pages.clone(),
                None => Arc::new(tokio::sync::Semaphore::new(crate::pages::PAGES_AT_ONCE)),
            },
        })
    }

    /// The tenant's name in `CAS_TENANTS` (`None`: the one unnamed tenant).
    pub fn tenant(&self) -> Option<&TenantName> {
        self.settings.tenant.as_ref()
    }

    /// How the tenant is named in an operator's report: `tenant contoso: `, or nothing.
    pub fn label(&self) -> String {
        match self.tenant() {
            Some(t) => format!("tenant {t}: "),
            None => String::new(),
        }
    }

    /// What an ingest uses of the app (see [`ingest::process`]).
    pub fn sink(&self) -> Sink<'_> {
        Sink {
            blobs: &self.blobs,
            sentinel: &self.sentinel,
            streams: &self.settings.sentinel,
            tenant: &self.tenant_columns,
        }
    }

    /// What a poll reads from, of the app (see [`poll::run`]).
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            settings: &self.settings,
            cas: &self.cas,
            graph: &self.graph,
            checkpoints: &self.checkpoints,
            pages: &self.pages,
        }
    }

    /// Polls every enabled data type into the fan-out queue (see [`poll::run`]), and
    /// notes how it ended for `status`.
    pub async fn poll(&self, deadline: Deadline) -> Vec<Result<PollReport, PollError>> {
        if let Err(e) = self.ensure_resources().await {
            return vec![Err(PollError::Setup(e))];
        }
        let reports = poll::run(self.sources(), self, deadline).await;
        self.note_poll(&reports).await;
        reports
    }

    /// The blob holding how the tenant's last poll ended.
    fn last_poll_blob(&self) -> String {
        format!(
            "{}health/last-poll.json",
            TenantName::blob_root(self.tenant())
        )
    }

    /// Records how a poll ended. A failure to record is logged only: the poll's own work
    /// is done and its reports go to the log either way.
    async fn note_poll(&self, reports: &[Result<PollReport, PollError>]) {
        let failures: Vec<String> = reports
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        let note = LastPoll {
            at: crate::model::format_ms(crate::model::now_ms()),
            ok: failures.is_empty(),
            failures,
        };
        let bytes = serde_json::to_vec(&note).expect("a note serializes");
        if let Err(e) = self
            .blobs
            .put(&self.last_poll_blob(), bytes, WriteCondition::Always)
            .await
        {
            tracing::warn!("{}could not record how the poll ended: {e}", self.label());
        }
    }

    /// How the tenant's last poll ended, if one has been recorded.
    pub async fn last_poll(&self) -> Result<Option<LastPoll>, crate::storage::blobs::BlobError> {
        let Some((bytes, _)) = self.blobs.get(&self.last_poll_blob()).await? else {
            return Ok(None);
        };
        // A note we cannot read is no note: it is rewritten by the next poll.
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Sends one queue message's batch (see [`ingest::process`]).
    async fn ingest(
        &self,
        env: Envelope,
        deadline: Deadline,
    ) -> Result<IngestOutcome, IngestError> {
        self.ensure_resources().await.map_err(IngestError::Setup)?;
        ingest::process(self.sink(), env, deadline).await
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

/// How a tenant's last poll ended, for `status` (a tenant whose credential is refused
/// says so here, not only in the logs).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LastPoll {
    /// When it ended (RFC 3339).
    pub at: String,
    /// Whether every data type succeeded.
    pub ok: bool,
    /// Each data type's failure.
    pub failures: Vec<String>,
}

/// How often a tenant that has read everything polls again while another tenant's backlog
/// keeps the invocation going.
pub(crate) const REPOLL_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The least time left for such a poll to start: enough for one page of each data type.
const REPOLL_MARGIN: std::time::Duration = std::time::Duration::from_secs(20);

/// Every tenant of one deployment, in `CAS_TENANTS`' order, over one storage account.
pub struct Deployment {
    /// Never empty: the first holds the deployment-wide settings too.
    tenants: Vec<App>,
}

/// A tenant no `CAS_TENANTS` entry names.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// An operator asked for a tenant the deployment does not have.
    #[error("no tenant named {asked} here; CAS_TENANTS lists {known}")]
    Unknown {
        /// The name asked for.
        asked: String,
        /// The names there are.
        known: String,
    },
    /// `--tenant` on a deployment without `CAS_TENANTS`.
    #[error("--tenant {0}: this deployment has one unnamed tenant (CAS_TENANTS is not set); leave --tenant out")]
    NotNamed(String),
}

impl Deployment {
    /// Builds every tenant's clients. Makes no network call.
    pub fn new(all: Vec<Settings>) -> Result<Deployment, AppError> {
        let http = http_client()?;
        let mut tenants: Vec<App> = Vec::with_capacity(all.len());
        for settings in all {
            let app = App::build(settings, http.clone(), tenants.first())?;
            tenants.push(app);
        }
        assert!(!tenants.is_empty(), "settings always name a tenant");
        Ok(Deployment { tenants })
    }

    /// Every tenant.
    pub fn tenants(&self) -> &[App] {
        &self.tenants
    }

    /// The first tenant: its settings hold the deployment-wide ones, its clients the
    /// shared queues and container.
    pub fn first(&self) -> &App {
        &self.tenants[0]
    }

    /// The tenants an operator's `--tenant` names: that one, or all without it.
    pub fn select(&self, name: Option<&str>) -> Result<Vec<&App>, TenantError> {
        let Some(name) = name else {
            return Ok(self.tenants.iter().collect());
        };
        if self.first().tenant().is_none() {
            return Err(TenantError::NotNamed(name.to_string()));
        }
        self.tenants
            .iter()
            .find(|a| a.tenant().map(TenantName::as_str) == Some(name))
            .map(|a| vec![a])
            .ok_or_else(|| TenantError::Unknown {
                asked: name.to_string(),
                known: self.names(),
            })
    }

    fn names(&self) -> String {
        self.tenants
            .iter()
            .map(|a| a.tenant().map_or("(unnamed)", TenantName::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Polls every tenant at once, each its data types at once, within one deadline.
    /// Each tenant waits only on its own CAS and Graph budgets: one whose credential is
    /// refused fails at once, and one with a backlog spends its own requests, not the
    /// others'. The tenants' reports come in their order.
    ///
    /// A tenant with a backlog keeps the invocation going to its budget, and the host
    /// starts no new one meanwhile; so a tenant that has read everything polls again
    /// every [`REPOLL_EVERY`] while another is still at work, and its new records do not
    /// wait for the end of the other's catch-up.
    pub async fn poll(
        &self,
        deadline: Deadline,
    ) -> Vec<(&App, Vec<Result<PollReport, PollError>>)> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing::Instrument;
        // Tenants in a pass now. A pass that reads to its end leaves its tenant waiting to
        // poll again while any other is in one (a backlog's lasts to the deadline, and a
        // waiting tenant's next pass may meet a burst of its own); when none is, the
        // invocation is done.
        let running = AtomicUsize::new(self.tenants.len());
        let running = &running;
        let polls = self.tenants.iter().map(|app| async move {
            let span = tracing::info_span!(
                "tenant",
                tenant = app.tenant().map_or("", TenantName::as_str)
            );
            let mut reports = Vec::new();
            loop {
                let started = std::time::Instant::now();
                let pass = app.poll(deadline).instrument(span.clone()).await;
                running.fetch_sub(1, Ordering::AcqRel);
                // Read to the end: anything else (out of time, a failure) is this tenant's
                // own trouble, and it is done for this invocation.
                let caught_up = pass.iter().all(|r| matches!(r, Ok(p) if p.complete));
                reports.extend(pass);
                if !caught_up {
                    break;
                }
                let again = loop {
                    if running.load(Ordering::Acquire) == 0 || deadline.remaining() < REPOLL_MARGIN
                    {
                        break false;
                    }
                    if started.elapsed() >= REPOLL_EVERY {
                        break true;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                };
                if !again {
                    break;
                }
                running.fetch_add(1, Ordering::AcqRel);
            }
            (app, reports)
        });
        futures::future::join_all(polls).await
    }

    /// Sends one queue message's batch through the tenant it names.
    pub async fn ingest(
        &self,
        text: &str,
        deadline: Deadline,
    ) -> Result<IngestOutcome, IngestError> {
        let env = Envelope::parse(text)?;
        let tenant = env.tenant.as_ref();
        // A message queued before CAS_TENANTS names no tenant: it is the former unnamed
        // tenant's (CAS_UNNAMED_TENANT), and its ledger entries are where they were.
        let owner = self
            .tenants
            .iter()
            .find(|a| a.tenant() == tenant || (tenant.is_none() && a.settings.adopts_unnamed));
        match owner {
            Some(app) => app.ingest(env, deadline).await,
            None => Err(IngestError::NoSuchTenant {
                tenant: env.tenant.map(String::from),
                known: self.names(),
            }),
        }
    }
}
