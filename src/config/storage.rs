//! The storage section: `AzureWebJobsStorage`, as a connection string (Azurite's
//! `UseDevelopmentStorage=true` included) or its identity-based `AzureWebJobsStorage__*`
//! form. The clients it makes are in `storage`.

use super::fields::parse_duration_within;
use super::SettingError;
use crate::loopback::{check_https_or_loopback, is_loopback};
use crate::secret::Secret;
use base64::Engine;
use std::time::Duration;
use url::Url;

/// Azurite's well-known development account, published in its documentation.
pub(crate) const DEV_ACCOUNT: &str = "devstoreaccount1";
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
pub(crate) const DEFAULT_SAS_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

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

    #[cfg(feature = "sim")]
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
}

fn parse_endpoint(name: &str, text: &str, https_only: bool) -> Result<Url, StorageConfigError> {
    let url = Url::parse(text.trim())
        .map_err(|e| StorageConfigError::Invalid(format!("{name} {text:?} is not a URL: {e}")))?;
    check_https_or_loopback(&url)
        .map_err(|e| StorageConfigError::Invalid(format!("{name}: {e}")))?;
    if https_only && url.scheme() != "https" && !is_loopback(&url) {
        return Err(StorageConfigError::Invalid(format!("{name} must be https")));
    }
    Ok(url)
}

/// `CAS_STORAGE_SAS_LIFETIME`: PT10S to P7D.
pub(super) fn parse_sas_lifetime(value: Option<String>) -> Result<Duration, SettingError> {
    parse_duration_within(
        "CAS_STORAGE_SAS_LIFETIME",
        value,
        "P1D",
        10..=7 * 86_400,
        |_| "must be between PT10S and P7D".into(),
    )
}

pub(super) fn check_queue_name(v: String) -> Result<String, SettingError> {
    // Storage queue names: 3–63 lowercase letters, digits and single hyphens; the
    // poison queue adds 7 characters, so leave room for it.
    let ok = (3..=56).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if ok {
        Ok(v)
    } else {
        Err(SettingError::Invalid {
            name: "CAS_QUEUE_NAME",
            reason: format!("{v:?} is not a storage queue name (3–56 lowercase letters, digits and single hyphens, leaving room for the -poison suffix)"),
        })
    }
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
}
