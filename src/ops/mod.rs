//! The operator commands: `replay`, `backfill`, `status` and `validate`. Each returns a
//! report the CLI prints; none of them changes a checkpoint except as documented.

pub(crate) mod backfill;
pub(crate) mod replay;
pub(crate) mod status;
pub(crate) mod validate;

/// An operator command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpsError {
    /// A queue call failed.
    #[error(transparent)]
    Queue(#[from] crate::storage::queue::QueueError),
    /// A blob call failed.
    #[error(transparent)]
    Blob(#[from] crate::storage::blobs::BlobError),
    /// A checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// CAS failed.
    #[error(transparent)]
    Cas(#[from] crate::cas::CasError),
    /// The queues or container could not be set up.
    #[error(transparent)]
    Setup(#[from] crate::storage::SetupError),
    /// A message could not be enqueued.
    #[error(transparent)]
    Enqueue(#[from] crate::pipeline::poll::EnqueueError),
    /// A local file could not be read or written.
    // The OS error is written into the message and not chained as a source, so the CLI's
    // error chain does not print it twice.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// An input line or argument is not usable.
    #[error("{0}")]
    Input(String),
}
