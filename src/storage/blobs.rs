//! Small JSON/bytes blobs in one container: checkpoints, sent-batch markers and the
//! rare oversized payload. A thin layer over `azure_storage_blob` that turns its errors
//! into the three outcomes we act on: not there, someone else wrote first, or a failure.

use azure_core::http::{Etag, RequestContent, StatusCode};
use azure_storage_blob::models::{BlobClientDownloadOptions, BlockBlobClientUploadOptions};
use azure_storage_blob::BlobContainerClient;

/// The container that holds everything cas-sentinel keeps in blob storage.
pub const CONTAINER: &str = "cas-sentinel";

/// A blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A conditional write lost: the blob changed (or appeared) since it was read.
    #[error("blob {0} was changed by another writer")]
    Conflict(String),
    /// Storage could not be reached or refused the request.
    #[error("blob storage {op} {name}: {message}")]
    Storage {
        /// What we tried.
        op: &'static str,
        /// The blob name.
        name: String,
        /// The SDK's description (no credentials: SAS signatures are not in it).
        message: String,
    },
}

/// Whether a write replaces, creates, or updates a known version.
#[derive(Clone, Debug)]
pub enum WriteCondition {
    /// Write whatever is there.
    Always,
    /// Create only; fail with [`BlobError::Conflict`] if the blob exists.
    IfAbsent,
    /// Replace only the version with this ETag.
    IfMatch(String),
}

/// Access to the cas-sentinel container.
#[derive(Clone)]
pub struct Blobs {
    container: std::sync::Arc<crate::storage::Fresh<BlobContainerClient>>,
}

impl Blobs {
    /// Wraps a container client that renews its SAS.
    pub fn fresh(container: crate::storage::Fresh<BlobContainerClient>) -> Self {
        Blobs {
            container: std::sync::Arc::new(container),
        }
    }

    #[cfg(feature = "sim")]
    /// Wraps a container client (used as it is for its whole life).
    pub fn new(container: BlobContainerClient) -> Self {
        Blobs {
            container: std::sync::Arc::new(crate::storage::Fresh::fixed(container)),
        }
    }

    /// Creates the container if it does not exist.
    pub async fn ensure_container(&self) -> Result<(), BlobError> {
        match self.container.get().create(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(storage_err("create container", CONTAINER, e)),
        }
    }

    /// Reads a blob and its ETag; `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, BlobError> {
        let client = self.container.get().blob_client(name);
        let opts = BlobClientDownloadOptions {
            parallel: std::num::NonZero::new(1),
            ..Default::default()
        };
        match client.download(Some(opts)).await {
            Ok(rsp) => {
                let etag = rsp
                    .properties
                    .etag
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let body = rsp
                    .body
                    .collect()
                    .await
                    .map_err(|e| storage_err("read", name, e))?;
                Ok(Some((body.to_vec(), etag)))
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(storage_err("read", name, e)),
        }
    }

    #[cfg(feature = "sim")]
    /// Whether a blob exists.
    pub async fn exists(&self, name: &str) -> Result<bool, BlobError> {
        self.container
            .get()
            .blob_client(name)
            .exists()
            .await
            .map_err(|e| storage_err("check", name, e))
    }

    /// The names of the blobs under `prefix`.
    pub async fn names(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut out = Vec::new();
        self.each_name(prefix, |n| out.push(n)).await?;
        Ok(out)
    }

    /// How many blobs under `prefix` `keep` accepts, read a listing page at a time: the
    /// batch states of a busy tenant run to millions, and are never all in memory.
    pub async fn count(&self, prefix: &str, keep: impl Fn(&str) -> bool) -> Result<u64, BlobError> {
        let mut n = 0;
        self.each_name(prefix, |name| n += u64::from(keep(&name)))
            .await?;
        Ok(n)
    }

    /// Calls `each` with every blob name under `prefix`, a listing page at a time.
    async fn each_name(&self, prefix: &str, mut each: impl FnMut(String)) -> Result<(), BlobError> {
        use futures::TryStreamExt;
        let opts = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_string()),
            ..Default::default()
        };
        let mut pages = self
            .container
            .get()
            .list_blobs(Some(opts))
            .map_err(|e| storage_err("list", prefix, e))?
            .into_pages();
        loop {
            let page = match pages.try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                // No container yet: no blobs.
                Err(e) if e.http_status() == Some(StatusCode::NotFound) => break,
                Err(e) => return Err(storage_err("list", prefix, e)),
            };
            let model = page
                .into_model()
                .map_err(|e| storage_err("list", prefix, e))?;
            model
                .blob_items
                .into_iter()
                .filter_map(|b| b.name)
                .for_each(&mut each);
        }
        Ok(())
    }

    /// Deletes a blob; a blob that is already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), BlobError> {
        match self.container.get().blob_client(name).delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(()),
            Err(e) => Err(storage_err("delete", name, e)),
        }
    }

    /// Writes a blob under `condition`; returns the new ETag.
    pub async fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        condition: WriteCondition,
    ) -> Result<String, BlobError> {
        // One part: these blobs are small, and without it the SDK works out a default
        // concurrency (reading the CPU count from the OS) on every call.
        let mut opts = BlockBlobClientUploadOptions {
            parallel: std::num::NonZero::new(1),
            ..Default::default()
        };
        match &condition {
            WriteCondition::Always => {}
            WriteCondition::IfAbsent => opts = opts.if_not_exists(),
            WriteCondition::IfMatch(etag) => opts.if_match = Some(Etag::from(etag.clone())),
        }
        let client = self.container.get().blob_client(name);
        match client.upload(RequestContent::from(bytes), Some(opts)).await {
            Ok(r) => Ok(r.etag.map(|e| e.to_string()).unwrap_or_default()),
            Err(e)
                if matches!(
                    e.http_status(),
                    Some(StatusCode::Conflict) | Some(StatusCode::PreconditionFailed)
                ) =>
            {
                Err(BlobError::Conflict(name.to_string()))
            }
            Err(e) => Err(storage_err("write", name, e)),
        }
    }
}

fn storage_err(op: &'static str, name: &str, e: azure_core::Error) -> BlobError {
    BlobError::Storage {
        op,
        name: name.to_string(),
        message: describe(&e),
    }
}

/// A one-line description of a storage SDK error: the status and the service's error
/// code when there is one (not the whole XML body), with any SAS signature removed.
pub(crate) fn describe(e: &azure_core::Error) -> String {
    use azure_core::error::ErrorKind;
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code: Some(code),
            ..
        } => format!("{status} {code}"),
        _ => scrub(e.to_string().lines().next().unwrap_or_default()),
    }
}

/// Removes a SAS signature from text that may quote a request URL.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        rest = &rest[i + 4..];
        let end = rest.find(['&', ' ', '"', '\'', ')']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn scrub_removes_signatures() {
        assert_eq!(
            super::scrub("GET http://x/q?sv=1&sig=abc%2Fdef&se=2 failed"),
            "GET http://x/q?sv=1&sig=REDACTED&se=2 failed"
        );
        assert_eq!(super::scrub("no secret here"), "no secret here");
    }
}
