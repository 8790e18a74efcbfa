//! The storage account as the pipeline uses it: queue and blob clients of the official SDK
//! made from [`StorageSettings`] (parsed in `config::storage`), the [`queue`] and the
//! [`blobs`] over them.
//!
//! The SDK crates authenticate with Entra tokens or a SAS, not with shared keys, so for a
//! key-based account (Azurite, or an account that still allows keys) we sign a short-lived
//! account SAS here, with the account key, and never send the key itself.

use crate::config::storage::{StorageAuth, StorageConfigError, StorageSettings};
use crate::secret::Secret;
use azure_core::credentials::TokenCredential;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use url::Url;

pub(crate) mod blobs;
pub(crate) mod queue;
#[cfg(feature = "sim")]
pub(crate) mod sim;

/// A queue or the container could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A queue.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// The container.
    #[error(transparent)]
    Blob(#[from] blobs::BlobError),
    /// No connection could be made to the account at all.
    #[error("storage: {0}: check AzureWebJobsStorage (the account name, or the endpoints in the connection string) and that the network reaches it")]
    Unreachable(#[from] crate::net::Unreachable),
}

/// The storage service version every call names (`x-ms-version`). The SDK's own default
/// (2026-04-06 in 1.1.0) is newer than any Azurite that runs on Node 20 knows (3.35:
/// 2025-11-05), and Azurite refuses an unknown version with `400 InvalidHeaderValue` unless
/// started with `--skipApiVersionCheck`; every call we make (queue messages, block blobs with
/// conditions, listing) is older than this version, and storage accounts accept every
/// version since 2009. Pinning it makes `npx azurite` work with its defaults.
pub(crate) const API_VERSION: &str = "2025-11-05";

/// How long the look before the first storage call may take: long enough for a slow
/// network, short enough that an operator hears of a dead endpoint in seconds, not after
/// the SDK's minute of retries.
pub(crate) const PROBE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

impl StorageSettings {
    /// Whether a connection can be made to the queue and the blob endpoints (the SDK retries
    /// a refused connection for a minute and then says only that its retry policy expired).
    pub async fn reachable(&self) -> Result<(), SetupError> {
        crate::net::probe(&self.queue_endpoint, PROBE_TIME).await?;
        if crate::net::endpoint(&self.blob_endpoint) != crate::net::endpoint(&self.queue_endpoint) {
            crate::net::probe(&self.blob_endpoint, PROBE_TIME).await?;
        }
        Ok(())
    }

    /// The SAS query to append to URLs, if this account is reached by SAS.
    fn sas_query(&self) -> Result<Option<String>, StorageConfigError> {
        match &self.auth {
            StorageAuth::AccountKey { account, key } => {
                let lifetime = time::Duration::try_from(self.sas_lifetime)
                    .map_err(|e| StorageConfigError::Invalid(format!("SAS lifetime: {e}")))?;
                let expiry = time::OffsetDateTime::now_utc() + lifetime;
                Ok(Some(account_sas(account, key, expiry)?))
            }
            StorageAuth::Sas(s) => Ok(Some(s.expose().to_string())),
            StorageAuth::Identity { .. } => Ok(None),
        }
    }

    /// The URL of a queue or container under `endpoint`, with the SAS when there is one.
    fn resource_url(&self, endpoint: &Url, path: &str) -> Result<Url, StorageConfigError> {
        let mut url = endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{path}"));
        url.set_query(self.sas_query()?.as_deref());
        Ok(url)
    }

    /// When a client built now must be built again: half-way through its SAS's life, for a
    /// SAS minted here; never otherwise (a given SAS is what it is; tokens renew themselves).
    fn renew_after(&self) -> Option<std::time::Duration> {
        matches!(self.auth, StorageAuth::AccountKey { .. }).then_some(self.sas_lifetime / 2)
    }

    /// A queue client for `name` that renews its SAS (see [`Fresh`]).
    pub fn fresh_queue_client(
        &self,
        name: &str,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Fresh<azure_storage_queue::QueueClient>, StorageConfigError> {
        self.fresh(name, credential, Self::queue_client)
    }

    /// A blob container client for `name` that renews its SAS (see [`Fresh`]).
    pub fn fresh_container_client(
        &self,
        name: &str,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Fresh<azure_storage_blob::BlobContainerClient>, StorageConfigError> {
        self.fresh(name, credential, Self::container_client)
    }

    /// A [`Fresh`] client for `name`, made (and made again) by `client`.
    fn fresh<T: 'static>(
        &self,
        name: &str,
        credential: Option<Arc<dyn TokenCredential>>,
        client: MakeClient<T>,
    ) -> Result<Fresh<T>, StorageConfigError> {
        let (settings, name) = (self.clone(), name.to_string());
        Fresh::new(self.renew_after(), move || {
            client(&settings, &name, credential.clone())
        })
    }

    /// A queue client for `name`.
    pub fn queue_client(
        &self,
        name: &str,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<azure_storage_queue::QueueClient, StorageConfigError> {
        let url = self.resource_url(&self.queue_endpoint, name)?;
        let cred = self.credential_for_sdk(credential)?;
        let options = azure_storage_queue::QueueClientOptions {
            version: API_VERSION.into(),
            ..Default::default()
        };
        azure_storage_queue::QueueClient::new(url, cred, Some(options))
            .map_err(|e| StorageConfigError::Invalid(format!("queue client: {e}")))
    }

    /// A blob container client for `name`.
    pub fn container_client(
        &self,
        name: &str,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<azure_storage_blob::BlobContainerClient, StorageConfigError> {
        let url = self.resource_url(&self.blob_endpoint, name)?;
        let cred = self.credential_for_sdk(credential)?;
        let options = azure_storage_blob::BlobContainerClientOptions {
            version: API_VERSION.into(),
            ..Default::default()
        };
        azure_storage_blob::BlobContainerClient::new(url, cred, Some(options))
            .map_err(|e| StorageConfigError::Invalid(format!("blob client: {e}")))
    }

    fn credential_for_sdk(
        &self,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Option<Arc<dyn TokenCredential>>, StorageConfigError> {
        match self.auth {
            StorageAuth::Identity { .. } => credential.map(Some).ok_or_else(|| {
                StorageConfigError::Invalid(
                    "identity-based storage needs a managed identity".into(),
                )
            }),
            _ => Ok(None),
        }
    }
}

/// Makes an SDK client for a queue or container name.
type MakeClient<T> =
    fn(&StorageSettings, &str, Option<Arc<dyn TokenCredential>>) -> Result<T, StorageConfigError>;

/// An SDK client that is built again, with a newly minted SAS, once `renew_after` has
/// passed since it was built. The SDK clients take their SAS in their URL, fixed for their
/// life; a handler process can live for days (Premium and Dedicated plans, `func start`),
/// and a SAS minted once at start-up would fail every storage call, and poison every
/// message, a day later.
pub struct Fresh<T> {
    build: Box<dyn Fn() -> Result<T, StorageConfigError> + Send + Sync>,
    renew_after: Option<std::time::Duration>,
    current: std::sync::Mutex<(Arc<T>, std::time::Instant)>,
}

impl<T> Fresh<T> {
    /// Builds the client now with `build`, and again after `renew_after` (never if `None`).
    pub fn new(
        renew_after: Option<std::time::Duration>,
        build: impl Fn() -> Result<T, StorageConfigError> + Send + Sync + 'static,
    ) -> Result<Self, StorageConfigError> {
        let first = build()?;
        Ok(Fresh {
            build: Box::new(build),
            renew_after,
            current: std::sync::Mutex::new((Arc::new(first), std::time::Instant::now())),
        })
    }

    #[cfg(feature = "sim")]
    /// A client that is never rebuilt.
    pub fn fixed(client: T) -> Self {
        Fresh {
            build: Box::new(|| {
                Err(StorageConfigError::Invalid(
                    "a fixed client is not rebuilt".into(),
                ))
            }),
            renew_after: None,
            current: std::sync::Mutex::new((Arc::new(client), std::time::Instant::now())),
        }
    }

    /// The client to use now.
    pub fn get(&self) -> Arc<T> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if self.renew_after.is_some_and(|r| cur.1.elapsed() >= r) {
            match (self.build)() {
                Ok(c) => *cur = (Arc::new(c), std::time::Instant::now()),
                // Signing is local and cannot fail once it has worked; were it to, the old
                // client serves until its SAS runs out.
                Err(e) => tracing::error!("could not renew the storage SAS: {e}"),
            }
        }
        cur.0.clone()
    }
}

/// Signs an account SAS (service version 2020-12-06 string-to-sign) for the queue and blob
/// services, valid until `expiry`.
pub(crate) fn account_sas(
    account: &str,
    key: &Secret,
    expiry: time::OffsetDateTime,
) -> Result<String, StorageConfigError> {
    const VERSION: &str = "2021-08-06";
    let permissions = "rwdlacup";
    let services = "bq";
    let resource_types = "sco";
    let expiry = expiry
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or_else(|| StorageConfigError::Invalid("cannot format SAS expiry".into()))?;
    let protocol = "https,http";
    let to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n\n{expiry}\n\n{protocol}\n{VERSION}\n\n"
    );
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(key.expose())
        .map_err(|_| StorageConfigError::Invalid("AccountKey is not base64".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes)
        .map_err(|_| StorageConfigError::Invalid("AccountKey cannot key an HMAC".into()))?;
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("sv", VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", permissions)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &sig);
    Ok(q.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::storage::DEV_KEY;

    #[test]
    fn sas_never_contains_the_key_and_urls_carry_it() {
        let s = StorageSettings::from_connection_string("UseDevelopmentStorage=true").unwrap();
        let url = s.resource_url(&s.queue_endpoint, "q").unwrap();
        assert_eq!(url.path(), "/devstoreaccount1/q");
        let q = url.query().unwrap();
        assert!(q.contains("sig=") && q.contains("sv=2021-08-06"));
        assert!(!q.contains(DEV_KEY));
    }
}
