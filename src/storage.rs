//! Where the storage account is and how to reach it: the `AzureWebJobsStorage`
//! connection string (or its identity-based `AzureWebJobsStorage__*` form), turned into
//! queue and blob clients of the official SDK.
//!
//! The SDK crates authenticate with Entra tokens or a SAS, not with shared keys, so for a
//! key-based account (Azurite, or an account that still allows keys) we sign a short-lived
//! account SAS here, with the account key, and never send the key itself.

use crate::secret::Secret;
use azure_core::credentials::TokenCredential;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use url::Url;

/// Azurite's well-known development account, published in its documentation.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, not a secret).
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests to the storage account are authorised.
#[derive(Clone, Debug)]
pub enum StorageAuth {
    /// Shared key: we sign account SAS tokens with it.
    AccountKey {
        /// The storage account name.
        account: String,
        /// The base64 account key.
        key: Secret,
    },
    /// A SAS given in the connection string (`SharedAccessSignature=`).
    Sas(Secret),
    /// Entra ID: managed identity (system-assigned, or the user-assigned one with this client id).
    Identity {
        /// Client id of a user-assigned identity, from `AzureWebJobsStorage__clientId`.
        client_id: Option<String>,
    },
}

/// The storage account the Functions host uses, where our queue and blobs live.
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// Queue service endpoint, e.g. `https://acct.queue.core.windows.net/`.
    pub queue_endpoint: Url,
    /// Blob service endpoint, e.g. `https://acct.blob.core.windows.net/`.
    pub blob_endpoint: Url,
    /// How to authorise.
    pub auth: StorageAuth,
    /// How long each account SAS minted from an account key is valid; clients mint a new
    /// one when half of it has passed (`CAS_STORAGE_SAS_LIFETIME`).
    pub sas_lifetime: std::time::Duration,
}

/// The default lifetime of a minted account SAS.
pub const DEFAULT_SAS_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A storage setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorageConfigError {
    /// Neither form of the setting is present.
    #[error("AzureWebJobsStorage is not set: give a connection string, or AzureWebJobsStorage__queueServiceUri and AzureWebJobsStorage__blobServiceUri for identity-based access")]
    Missing,
    /// The connection string lacks a part it needs.
    #[error("AzureWebJobsStorage connection string has no {0}")]
    MissingPart(&'static str),
    /// A part of the setting is malformed.
    #[error("AzureWebJobsStorage: {0}")]
    Invalid(String),
}

impl StorageSettings {
    /// Reads `AzureWebJobsStorage` or its identity-based `AzureWebJobsStorage__*` form.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, StorageConfigError> {
        if let Some(conn) = get("AzureWebJobsStorage").filter(|s| !s.trim().is_empty()) {
            return Self::from_connection_string(&conn);
        }
        let queue = get("AzureWebJobsStorage__queueServiceUri");
        let blob = get("AzureWebJobsStorage__blobServiceUri");
        let account = get("AzureWebJobsStorage__accountName");
        let (queue, blob) = match (queue, blob, account) {
            (Some(q), Some(b), _) => (q, b),
            (_, _, Some(a)) => (
                format!("https://{a}.queue.core.windows.net/"),
                format!("https://{a}.blob.core.windows.net/"),
            ),
            _ => return Err(StorageConfigError::Missing),
        };
        if let Some(cred) = get("AzureWebJobsStorage__credential") {
            if !cred.eq_ignore_ascii_case("managedidentity") {
                return Err(StorageConfigError::Invalid(format!(
                    "AzureWebJobsStorage__credential is {cred:?}; only \"managedidentity\" is supported"
                )));
            }
        }
        Ok(StorageSettings {
            queue_endpoint: parse_endpoint("AzureWebJobsStorage__queueServiceUri", &queue, true)?,
            blob_endpoint: parse_endpoint("AzureWebJobsStorage__blobServiceUri", &blob, true)?,
            auth: StorageAuth::Identity {
                client_id: get("AzureWebJobsStorage__clientId"),
            },
            sas_lifetime: DEFAULT_SAS_LIFETIME,
        })
    }

    /// Parses a storage connection string, including `UseDevelopmentStorage=true`.
    pub fn from_connection_string(conn: &str) -> Result<Self, StorageConfigError> {
        let mut parts = std::collections::HashMap::new();
        for part in conn.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                StorageConfigError::Invalid("connection string part without '='".into())
            })?;
            parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if parts
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Self::dev_storage(
                "http://127.0.0.1:10001/devstoreaccount1",
                "http://127.0.0.1:10000/devstoreaccount1",
            );
        }
        let account = parts.get("accountname").cloned();
        let protocol = parts
            .get("defaultendpointsprotocol")
            .map(String::as_str)
            .unwrap_or("https");
        let suffix = parts
            .get("endpointsuffix")
            .map(String::as_str)
            .unwrap_or("core.windows.net");
        let endpoint = |key: &str, service: &str| -> Result<Url, StorageConfigError> {
            match (parts.get(key), &account) {
                (Some(e), _) => parse_endpoint(key, e, false),
                (None, Some(a)) => {
                    parse_endpoint(key, &format!("{protocol}://{a}.{service}.{suffix}/"), false)
                }
                (None, None) => Err(StorageConfigError::MissingPart("AccountName")),
            }
        };
        let queue_endpoint = endpoint("queueendpoint", "queue")?;
        let blob_endpoint = endpoint("blobendpoint", "blob")?;
        let auth = if let Some(sas) = parts.get("sharedaccesssignature") {
            StorageAuth::Sas(Secret::new(sas.trim_start_matches('?')))
        } else {
            let key = parts
                .get("accountkey")
                .ok_or(StorageConfigError::MissingPart("AccountKey"))?;
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| StorageConfigError::Invalid("AccountKey is not base64".into()))?;
            StorageAuth::AccountKey {
                account: account.ok_or(StorageConfigError::MissingPart("AccountName"))?,
                key: Secret::new(key.clone()),
            }
        };
        Ok(StorageSettings {
            queue_endpoint,
            blob_endpoint,
            auth,
            sas_lifetime: DEFAULT_SAS_LIFETIME,
        })
    }

    /// Settings for an Azurite instance at these service URLs (path-style, with the account).
    pub fn dev_storage(queue: &str, blob: &str) -> Result<Self, StorageConfigError> {
        Ok(StorageSettings {
            queue_endpoint: parse_endpoint("QueueEndpoint", queue, false)?,
            blob_endpoint: parse_endpoint("BlobEndpoint", blob, false)?,
            auth: StorageAuth::AccountKey {
                account: DEV_ACCOUNT.into(),
                key: Secret::new(DEV_KEY),
            },
            sas_lifetime: DEFAULT_SAS_LIFETIME,
        })
    }

    /// The connection string a Functions host (or a child `serve`) would be given for these settings.
    /// Only key-based settings have one.
    pub fn connection_string(&self) -> Option<String> {
        match &self.auth {
            StorageAuth::AccountKey { account, key } => Some(format!(
                "DefaultEndpointsProtocol={};AccountName={account};AccountKey={};QueueEndpoint={};BlobEndpoint={}",
                self.queue_endpoint.scheme(),
                key.expose(),
                self.queue_endpoint.as_str().trim_end_matches('/'),
                self.blob_endpoint.as_str().trim_end_matches('/'),
            )),
            _ => None,
        }
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
        azure_storage_queue::QueueClient::new(url, cred, None)
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
        azure_storage_blob::BlobContainerClient::new(url, cred, None)
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

fn parse_endpoint(name: &str, text: &str, https_only: bool) -> Result<Url, StorageConfigError> {
    let url = Url::parse(text.trim())
        .map_err(|e| StorageConfigError::Invalid(format!("{name} {text:?} is not a URL: {e}")))?;
    crate::config::check_https_or_loopback(&url)
        .map_err(|e| StorageConfigError::Invalid(format!("{name}: {e}")))?;
    if https_only && url.scheme() != "https" && !crate::config::is_loopback(&url) {
        return Err(StorageConfigError::Invalid(format!("{name} must be https")));
    }
    Ok(url)
}

/// Signs an account SAS (service version 2020-12-06 string-to-sign) for the queue and blob
/// services, valid until `expiry`.
pub fn account_sas(
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

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn development_storage_points_at_azurite_defaults() {
        let s = StorageSettings::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            s.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert!(
            matches!(s.auth, StorageAuth::AccountKey { ref account, .. } if account == DEV_ACCOUNT)
        );
    }

    #[test]
    fn account_connection_string_derives_endpoints() {
        let s = StorageSettings::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            s.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert_eq!(
            s.queue_endpoint.as_str(),
            "https://acct.queue.core.windows.net/"
        );
    }

    #[test]
    fn remote_plain_http_endpoints_are_refused() {
        let err = StorageSettings::from_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5",
        )
        .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = StorageSettings::from_connection_string("AccountName=acct").unwrap_err();
        assert_eq!(err, StorageConfigError::MissingPart("AccountKey"));
    }

    #[test]
    fn identity_based_form_is_read() {
        let s = StorageSettings::from_lookup(&lookup(&[
            ("AzureWebJobsStorage__accountName", "acct"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            ("AzureWebJobsStorage__clientId", "abc"),
        ]))
        .unwrap();
        assert!(matches!(s.auth, StorageAuth::Identity { client_id: Some(ref c) } if c == "abc"));
        assert_eq!(
            StorageSettings::from_lookup(&lookup(&[])).unwrap_err(),
            StorageConfigError::Missing
        );
    }

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
