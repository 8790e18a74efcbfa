//! A batch of records on its way from the poll to the sink: its queue message format
//! ([`envelope`]).

pub mod envelope;
