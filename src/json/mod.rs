//! Reading JSON as real services send it: [`lenient`] repairs text strict readers refuse,
//! [`record`] reads a record's fields without building a tree of the whole record.

pub(crate) mod lenient;
pub(crate) mod record;

pub use record::Record;
