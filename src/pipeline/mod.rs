//! The two halves of the pipeline, each written against the ports it uses, so that it runs
//! against the real clients (`app`) or stand-ins (its tests): the poll reads [`Source`]s
//! into an [`poll::Outbox`], the ingest sends a queue message's rows through a
//! [`ingest::Sink`].
//!
//! [`Source`]: crate::source::Source

pub(crate) mod ingest;
pub(crate) mod poll;
