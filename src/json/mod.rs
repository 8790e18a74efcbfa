//! Reading JSON as real services send it: [`lenient`] repairs text strict readers refuse,
//! [`record`] reads a record's fields without building a tree of the whole record.

pub mod lenient;
pub mod record;

pub use record::Record;
