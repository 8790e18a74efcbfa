//! A batch of records on its way from the poll to the sink: its queue message format
//! ([`envelope`]) and its ledger ([`ledger`]): the state blob that makes it sent once.

pub(crate) mod envelope;
pub(crate) mod ledger;
