//! What a poll reads from. A [`Source`] reads one data type from its own cursor, a
//! [`Page`] at a time, and hands out [`Step`]s: the records of the page to enqueue, and the
//! cursor that follows them, which the poll stores once they are enqueued. The poll's
//! enqueue-then-store loop (`pipeline::poll`) is written once against this trait; the MDA
//! REST puller (`cas::pull`) and the Graph discovery snapshot (`graph::discovery`) are two
//! implementations, each with its own cursor type.

mod page;

pub(crate) use page::{Page, RecordKey};

use crate::model::Window;
use crate::retry::Deadline;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;

/// One page read: what of it to enqueue, and the cursor to store once it is enqueued.
#[derive(Debug)]
pub struct Step {
    /// The page, which holds the records' text.
    pub page: Page,
    /// The window the records belong to (it names their batches).
    pub window: Window,
    /// Records to forward as new: indexes into `page.records`.
    pub new: Vec<usize>,
    /// Records forwarded before that have changed since (alerts whose resolution or
    /// severity changed).
    pub changed: Vec<usize>,
    /// When the changes were seen: their rows' `TimeGenerated`. Fixed for a whole
    /// re-check, so a page read again packs the same batches.
    pub observed: Option<i64>,
    /// Whether [`Source::cursor`] must be stored once the records are enqueued, before the
    /// next page is read. False for a re-check page that found nothing: storing the alert
    /// watch (which can hold tens of thousands of alerts) after each such page would cost
    /// more than reading a few pages again after a crash; the poll stores it from time to
    /// time and when it stops.
    pub commit: bool,
}

impl Step {
    /// The text of the records to forward as new.
    pub fn new_records(&self) -> Vec<&str> {
        self.texts(&self.new)
    }

    /// The text of the changed records.
    pub fn changed_records(&self) -> Vec<&str> {
        self.texts(&self.changed)
    }

    fn texts(&self, indexes: &[usize]) -> Vec<&str> {
        indexes
            .iter()
            .map(|&i| self.page.text(&self.page.records[i]))
            .collect()
    }
}

/// A read that did not produce a step.
#[derive(Debug)]
pub enum ReadError {
    /// The invocation's time ran out mid-request: an ordinary end for a run with a
    /// backlog; the next run goes on from the stored cursor.
    OutOfTime(String),
    /// The service failed or answered what cannot be read; the source's own error.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl ReadError {
    /// A source's own error: an ordinary end of the run when `out_of_time`, else a failure.
    pub(crate) fn of<E: std::error::Error + Send + Sync + 'static>(
        e: E,
        out_of_time: bool,
    ) -> Self {
        if out_of_time {
            ReadError::OutOfTime(e.to_string())
        } else {
            ReadError::Failed(Box::new(e))
        }
    }
}

/// One data type's reader, from a stored cursor (or none, on a first run).
pub trait Source: Send {
    /// The client the reads go through (shared by every invocation).
    type Client: Sync;
    /// What the checkpoint holds for this source: stored after each step's records are
    /// enqueued, and read back by the next run.
    type Cursor: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync;

    /// The window being read (a point when there is nothing to read).
    fn window(&self) -> Window;

    /// The cursor to store before enqueueing anything: the window being enqueued, so a
    /// run that dies part-way reads exactly it again and packs the same batches. `None`
    /// when it is stored already.
    fn intent(&self) -> Option<Self::Cursor>;

    /// The cursor after the last step: what to store once its records are enqueued.
    fn cursor(&self) -> &Self::Cursor;

    /// Whether the window has been read to its end (else the next run continues it).
    fn complete(&self) -> bool;

    /// How far the stored position is behind `now_ms`, in seconds; `None` for a source
    /// whose cursor is not a position in the data (discovery's is when the next snapshot
    /// is due).
    fn lag_seconds(&self, now_ms: i64) -> Option<i64>;

    /// Reads the next page; `None` when there is nothing more to read in this run or the
    /// deadline has passed.
    fn read(
        &mut self,
        client: &Self::Client,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Option<Step>, ReadError>> + Send;
}
